// The everyday Docker flags, by their effects in the kernel: -h/--hostname
// (02 on) is the UTS namespace's hostname; -w/--workdir (03 on) is the
// command's working directory, made in the container's upper dir from 07 on
// and never in the image; -v/--volume (05 on) is a bind the command can
// read and write, whose writes land on the host, read-only with :ro down to
// its submounts (EROFS), resolved inside the image even through a symlink
// that points out of it, never onto the root itself nor into /proc, /sys or
// /dev, and never mounted on the host. Rootless at 09 too.
// Also: every step's --help has the same layout.

import t from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tsx } from '../scripts/lib/verify.ts'
import { waitFor } from '../scripts/lib/wait.ts'
import { mount, readMountInfo, umount2 } from '../shared/mounts.ts'
import { ensureImage } from '../shared/rootfs.ts'
import { repoDir } from '../shared/settings.ts'
import { usernsForbidden } from '../shared/userns.ts'
import { rootOnly, runTool } from './helpers.ts'

const ALL = ['01-exec', '02-uts', '03-chroot', '04-pid-proc', '05-mount-ns', '06-cgroups', '07-overlay', '08-net', '09-userns', '10-security']
const from = (first: string) => ALL.slice(ALL.indexOf(first))

interface Ran {
  stdout: string
  stderr: string
  exitCode: number | null
  ran: string
}

// `tsx steps/<step> run <args>`, as a learner types it (without tap's preloads), maybe as another user.
function runStep(step: string, args: string[], options: { asUser?: number; env?: NodeJS.ProcessEnv } = {}): Promise<Ran> {
  const command = ['env', '-u', 'NODE_OPTIONS', tsx, `steps/${step}`, 'run', ...args]
  const argv = options.asUser === undefined ? command : ['setpriv', `--reuid=${options.asUser}`, `--regid=${options.asUser}`, '--clear-groups', ...command]
  const child = spawn(argv[0], argv.slice(1), { cwd: repoDir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0', ...options.env } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => (stdout += chunk))
  child.stderr.on('data', (chunk) => (stderr += chunk))
  return new Promise((resolve) => child.on('close', (exitCode) => resolve({ stdout, stderr, exitCode, ran: `npx tsx steps/${step} run ${args.join(' ')}` })))
}

// The host's mount table, as `mount point <- source` lines: what a test compares before and after.
const hostMounts = () => readMountInfo().map((m) => `${m.mountPoint} <- ${m.root} (${m.fstype})`).sort()

t.test('--help: the same layout at every step, -h is --hostname from 02', async (t) => {
  for (const step of ALL) {
    const { stdout, exitCode } = await runTool(`steps/${step}`, ['--help'])
    t.equal(exitCode, 0, `${step} --help exits 0`)
    const at = ['Usage: ', '\nOptions:\n', '  -e, --env KEY[=VALUE]', '  --name NAME', '  --help ', '\nExamples:\n', '\nExit codes']
      .map((mark) => stdout.indexOf(mark))
    t.ok(at.every((i, n) => i >= 0 && (n === 0 || i > at[n - 1])), `${step}: usage, options (its own, then -e, --name, --help), examples, exit codes, in that order`, { stdout })
    const examples = stdout.slice(stdout.indexOf('\nExamples:\n')).split('\n').slice(2, 4)
    t.ok(examples.every((line) => line.startsWith(`  npx tsx steps/${step} run `)), `${step}: two examples, each a command line of this step`, { examples })
    for (const code of ['125', '126', '127', '128+N']) t.match(stdout, new RegExp(`\\n  ${code.replace('+', '\\+')} `), `${step}: exit code ${code} is explained`)
    const options = stdout.slice(stdout.indexOf('\nOptions:\n'), stdout.indexOf('\nExamples:\n')).split('\n').filter((line) => line.startsWith('  '))
    const column = new Set(options.map((line) => /^  \S.*?  (?=\S)/.exec(line)?.[0].length))
    t.equal(column.size, 1, `${step}: every option's text starts in one column`, { options })
    if (step === '01-exec') t.notMatch(stdout, /-h, --hostname/, '01: no -h')
    else t.match(stdout, /\n  -h, --hostname NAME /, `${step}: -h is --hostname`)
  }
})

t.test('-h, -w, -v: hostname, working directory and a volume, as the command sees them', rootOnly(), async (t) => {
  const image = await ensureImage()
  const scratch = mkdtempSync('/tmp/cfs-flags-')
  chmodSync(scratch, 0o755) // steps 09-10 as root: container root is host uid 100000, and must get through
  const source = join(scratch, 'volume')
  mkdirSync(source, { mode: 0o777 })
  chmodSync(source, 0o777)
  writeFileSync(join(source, 'from-host'), 'hello from the host\n')
  const file = join(scratch, 'a-file')
  writeFileSync(file, 'a file volume\n')
  // A submount under the volume's source, to show :ro reaches it too.
  const sub = join(source, 'sub')
  mkdirSync(sub)
  mount('tmpfs', sub, 'tmpfs', 0, 'mode=0777,size=1m')
  t.teardown(() => {
    try {
      umount2(sub)
    } catch {}
    rmSync(scratch, { recursive: true, force: true })
  })
  const before = hostMounts()

  for (const step of from('02-uts')) {
    const n = Number(step.slice(0, 2))
    const name = `cfs-box-${n}`
    // 03-06 have no overlay: -w and -v targets that the image has; 07 on, new ones, made in the upper dir.
    const workdir = n < 7 ? '/etc' : `/cfs-made-${process.pid}/here`
    const target = n < 7 ? '/mnt' : `/cfs-made-${process.pid}/volume`
    const args = ['-h', name]
    if (n >= 3) args.push('-w', workdir)
    if (n >= 5) args.push('-v', `${source}:${target}`, '-v', `${file}:${n < 7 ? '/etc/os-release' : `/cfs-made-${process.pid}/file`}`)
    const script = [
      // Step 03 has no /proc: its chroot has none mounted.
      'hostname', n === 3 ? 'hostname' : 'cat /proc/sys/kernel/hostname', 'pwd',
      ...(n >= 5 ? [`cat ${target}/from-host`, `echo written at ${step} > ${target}/from-${step}`, `cat ${n < 7 ? '/etc/os-release' : `/cfs-made-${process.pid}/file`}`] : []),
    ].join('; ')
    const r = await runStep(step, [...args, 'sh', '-c', script])
    const lines = r.stdout.split('\n')
    t.equal(r.exitCode, 0, `${step}: exits 0`, { ran: r.ran, stderr: r.stderr })
    t.equal(lines[0], name, `${step}: \`hostname\` says ${name}`, { ran: r.ran })
    if (n !== 3) t.equal(lines[1], name, `${step}: /proc/sys/kernel/hostname, the UTS namespace's, says ${name}`, { ran: r.ran })
    if (n >= 3) t.equal(lines[2], workdir, `${step}: \`pwd\` is -w's ${workdir}`, { ran: r.ran })
    if (n >= 7) t.notOk(existsSync(join(image, `cfs-made-${process.pid}`)), `${step}: -w and -v targets were made in the container's upper dir, not in the image`)
    if (n < 5) continue
    t.equal(lines[3], 'hello from the host', `${step}: the volume shows the host's file at ${target}`, { ran: r.ran })
    t.equal(readFileSync(join(source, `from-${step}`), 'utf8'), `written at ${step}\n`, `${step}: a file written in the volume is on the host`)
    t.equal(lines[4], 'a file volume', `${step}: a file bound onto a file`, { ran: r.ran })
  }
  t.notMatch(readFileSync(join(image, 'etc/os-release'), 'utf8'), /a file volume/, 'the image\'s /etc/os-release is as it was: the file was bound over it, not written into')

  for (const step of from('05-mount-ns')) {
    const r = await runStep(step, ['-v', `${source}:/mnt:ro`, 'sh', '-c', `cat /mnt/from-host; echo x > /mnt/ro-${step}; echo x > /mnt/sub/ro-${step}; echo done`])
    t.match(r.stdout, /^hello from the host\n/, `${step}: a :ro volume can be read`, { ran: r.ran, stderr: r.stderr })
    t.match(r.stderr, new RegExp(`/mnt/ro-${step}: Read-only file system`), `${step}: a write to it is refused: EROFS`, { ran: r.ran })
    t.match(r.stderr, new RegExp(`/mnt/sub/ro-${step}: Read-only file system`), `${step}: …in its submount too (mount_setattr, AT_RECURSIVE)`, { ran: r.ran })
    t.notOk(existsSync(join(source, `ro-${step}`)) || existsSync(join(sub, `ro-${step}`)), `${step}: nothing was written on the host`)
  }

  // While one runs: its bind is in its own mount namespace, not in the host's.
  const stop = join(source, 'stop')
  const running = runStep('05-mount-ns', ['-v', `${source}:/mnt`, 'sh', '-c', 'touch /mnt/ready; while [ ! -e /mnt/stop ]; do sleep 1; done'])
  const ready = await waitFor(() => (existsSync(join(source, 'ready')) ? true : undefined), 30_000)
  t.ok(ready, 'a container with a volume is running')
  t.same(hostMounts(), before, 'while it runs, the host\'s /proc/self/mountinfo has no mount of it')
  writeFileSync(stop, '')
  t.equal((await running).exitCode, 0, 'and it ends when told')
  t.same(hostMounts(), before, 'after all those runs, the host\'s mount table is as it was')
})

t.test('a symlink in the image that points out of it: the volume lands inside the root, not on the host path', rootOnly(), async (t) => {
  const scratch = mkdtempSync('/tmp/cfs-flags-escape-')
  chmodSync(scratch, 0o755)
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  const source = join(scratch, 'volume')
  mkdirSync(source)
  chmodSync(source, 0o777)
  // On the host, the symlink's target: a directory a bind must never cover.
  const hostTarget = join(scratch, 'host-target')
  mkdirSync(hostTarget)
  writeFileSync(join(hostTarget, 'host-file'), 'the host\'s\n')
  // A throwaway image: the prepared one, with /escape -> the host directory's absolute path.
  const image = join(scratch, 'image')
  cpSync(await ensureImage(), image, { recursive: true, verbatimSymlinks: true })
  symlinkSync(hostTarget, join(image, 'escape'))
  const before = hostMounts()

  const script = `echo through > /escape/through; ls /escape; grep -c " ${hostTarget} " /proc/self/mountinfo`
  const steps = ['05-mount-ns', '07-overlay', '09-userns']
  // The symlink's target, read inside the image, is not there: not made, whether the step could make it (07 on) or not.
  for (const step of steps) {
    const refused = await runStep(step, ['--image', image, '-v', `${source}:/escape`, 'sh', '-c', script])
    t.equal(refused.exitCode, 125, `${step}: with no such path in the image, refused: exit 125`, { ran: refused.ran, stderr: refused.stderr })
    t.match(refused.stderr, /^cfs: --volume `\S+`: `\/escape` is [^\n]*\n$/, `${step}: …in one line`, { ran: refused.ran })
  }
  // Now the image has that path itself: the bind goes there, inside the root.
  mkdirSync(join(image, hostTarget), { recursive: true })
  for (const step of steps) {
    const r = await runStep(step, ['--image', image, '-v', `${source}:/escape`, 'sh', '-c', script])
    t.equal(r.exitCode, 0, `${step}: -v ${source}:/escape runs`, { ran: r.ran, stderr: r.stderr })
    t.equal(existsSync(join(source, 'through')) && readFileSync(join(source, 'through'), 'utf8'), 'through\n', `${step}: what the container writes through /escape lands in the volume`)
    t.notOk(existsSync(join(hostTarget, 'through')), `${step}: …not in the host directory the symlink names`)
    t.equal(r.stdout.split('\n').at(-2), '1', `${step}: the bind is at ${hostTarget} inside the root (the container's mountinfo)`, { stdout: r.stdout })
    t.notMatch(r.stdout, /host-file/, `${step}: the container does not see the host directory's file`)
    rmSync(join(source, 'through'), { force: true })
  }
  t.same(readFileSync(join(hostTarget, 'host-file'), 'utf8'), 'the host\'s\n', 'the host directory is untouched')
  t.same(hostMounts(), before, 'the host\'s mount table is as it was')
})

t.test('a volume onto the root itself, or into /proc, /sys or /dev, even through a symlink: refused in one line, nothing mounted', rootOnly(), async (t) => {
  const scratch = mkdtempSync('/tmp/cfs-flags-places-')
  chmodSync(scratch, 0o755)
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  const source = join(scratch, 'volume')
  mkdirSync(source)
  chmodSync(source, 0o777)
  // A throwaway image with symlinks to the root (absolute, and `..`, which stops at the root) and to /proc.
  const image = join(scratch, 'image')
  cpSync(await ensureImage(), image, { recursive: true, verbatimSymlinks: true })
  symlinkSync('/', join(image, 'x'))
  symlinkSync('..', join(image, 'up'))
  symlinkSync('/proc', join(image, 'p'))
  const before = hostMounts()

  const root = /`\/(x|up)` is the container's root itself \(through a symlink in the image\): a volume there would cover the whole image/
  const kernel = (at: string) => new RegExp(`is ${at.replace(/[()/]/g, '\\$&')}, where the step mounts the kernel's filesystems`)
  const cases: [target: string, says: RegExp][] = [
    ['/x', root], ['/x/.', root], ['/up', root],
    ['/p', kernel('/proc (through a symlink in the image)')], ['/p/sys/new', kernel('under /proc (through a symlink in the image)')],
    ['/proc/sys', kernel('under /proc')], ['/sys/fs', kernel('under /sys')], ['/dev', kernel('/dev')],
  ]
  // 05: no overlay; 07: one, where missing targets are made; 09 and 10: /proc, /sys and /dev are mounted before the volumes.
  for (const step of ['05-mount-ns', '07-overlay', '09-userns', '10-security']) {
    for (const [target, says] of cases) {
      const r = await runStep(step, ['--image', image, '-v', `${source}:${target}`, 'ls', '/'])
      t.equal(r.exitCode, 125, `${step}: -v …:${target} is refused: exit 125`, { ran: r.ran, stderr: r.stderr, stdout: r.stdout })
      t.match(r.stderr, /^cfs: --volume `[^`]+`: [^\n]*\n$/, `${step}: -v …:${target}: in one line that names the volume`, { ran: r.ran })
      t.match(r.stderr, says, `${step}: -v …:${target}: it says ${says}`, { ran: r.ran })
      t.equal(r.stdout, '', `${step}: -v …:${target}: the command did not run`, { ran: r.ran })
    }
  }
  t.same(readdirSync(source), [], 'nothing was written into the volume\'s source')
  t.notOk(existsSync(join(image, 'proc/sys')), 'nothing was made in the image\'s /proc')
  // A name that only starts like one of them is not one of them.
  for (const step of ['07-overlay', '10-security']) {
    const r = await runStep(step, ['--image', image, '-v', `${source}:/devices`, 'sh', '-c', `echo ${step} > /devices/${step}`])
    t.equal(r.exitCode, 0, `${step}: -v …:/devices (not /dev) runs`, { ran: r.ran, stderr: r.stderr })
    t.equal(existsSync(join(source, step)) && readFileSync(join(source, step), 'utf8'), `${step}\n`, `${step}: …and what it writes in /devices is on the host`)
  }
  t.same(hostMounts(), before, 'the host\'s mount table is as it was')
})

t.test('step 09 rootless: hostname, workdir and a volume owned by the user, root inside', rootOnly(), async (t) => {
  const forbidden = usernsForbidden()
  if (forbidden) {
    if (process.env.CI === 'true') t.fail(`rootless step 09 needs user namespaces: ${forbidden}`)
    else t.pass('rootless', { skip: forbidden })
    return
  }
  const user = 65534
  const home = mkdtempSync('/tmp/cfs-flags-rootless-')
  chownSync(home, user, user)
  chmodSync(home, 0o755) // the root run below, as host uid 100000, must get through
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const source = join(home, 'volume')
  mkdirSync(source)
  writeFileSync(join(source, 'mine'), 'the user\'s\n')
  chownSync(source, user, user)
  chownSync(join(source, 'mine'), user, user)
  const env = { HOME: home, CFS_HOME: join(home, 'state'), XDG_CACHE_HOME: join(home, 'cache') }
  const r = await runStep('09-userns', ['-h', 'rootless-box', '-w', '/made/here', '-v', `${source}:/data`, 'sh', '-c', 'hostname; pwd; stat -c "%u %n" /data/mine; echo r > /data/written'], { asUser: user, env })
  t.equal(r.exitCode, 0, 'runs rootless', { ran: r.ran, stderr: r.stderr })
  t.same(r.stdout.split('\n').slice(0, 3), ['rootless-box', '/made/here', '0 /data/mine'], 'its hostname, its -w made in its upper dir, and the user\'s file owned by root inside (uid 0 is the user)', { ran: r.ran })
  t.equal(statSync(join(source, 'written')).uid, user, 'what root inside wrote is the user\'s on the host')
  const rootMapped = await runStep('09-userns', ['-v', `${source}:/data`, 'stat', '-c', '%u', '/data/mine'])
  t.equal(rootMapped.stdout.trim(), '65534', 'as root, whose container root is host uid 100000, the same file is nobody\'s inside (uid outside the map)', { ran: rootMapped.ran, stderr: rootMapped.stderr })
})
