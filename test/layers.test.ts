// Images as layers, by their effects in the kernel. An image of three
// layers is written by hand in the store's layout (shared/image-config.ts)
// in a throwaway CFS_HOME: busybox with /opaque-dir/from-base; a layer that
// adds /a and /opaque-dir/from-a; a top layer with a whiteout for the
// base's /etc/os-release, an opaque /opaque-dir holding only from-top, and /b.
// Steps 07, 08, 09 (as root, and rootless) and 10 run it: inside, the
// whiteout's file is gone, the opaque directory shows the top layer's file
// alone, and / is an overlay of the three, top first. Its config:
// Entrypoint and Cmd run when no command is given, Env and WorkingDir are
// the command's, -e and -w win; no command at all, or a User, is one line.
// Then `diff` and `export` (scripts/lib/image-changes.ts) of a running
// container and of kept ones (--keep). After each run the host's mount
// table is as it was and the container's directory is gone. Also, without
// the kernel: withImageConfig's merge, and mount() refusing options longer
// than the page mount(2) reads. And an image of 80 layers, more than their
// full paths fit in that page, at 07 and 09: mounted by their short links.

import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tsx } from '../scripts/lib/verify.ts'
import { makedev, mknod, S_IFCHR } from '../shared/devices.ts'
import { withImageConfig } from '../shared/image-config.ts'
import { mount, readMountInfo } from '../shared/mounts.ts'
import { removeContainerDir } from '../shared/overlay.ts'
import { ensureImage } from '../shared/rootfs.ts'
import { repoDir } from '../shared/settings.ts'
import { usernsForbidden } from '../shared/userns.ts'
import { lsetxattr } from '../shared/xattr.ts'
import { killMarked, marker, start, stopGroup } from './background.ts'
import { rootOnly, type Test } from './helpers.ts'
import { leftoversSince, snapshotLeftovers, watchRun } from './leftovers.ts'

interface Ran {
  stdout: string
  stderr: string
  exitCode: number | null
  ran: string
}

// `tsx <script> <args>` from the repository root, without tap's preloads, maybe as another user.
function runTsx(script: string, args: string[], env: NodeJS.ProcessEnv, asUser?: number): Promise<Ran> {
  const command = ['env', '-u', 'NODE_OPTIONS', tsx, script, ...args]
  const argv = asUser === undefined ? command : ['setpriv', `--reuid=${asUser}`, `--regid=${asUser}`, '--clear-groups', ...command]
  const child = spawn(argv[0], argv.slice(1), { cwd: repoDir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0', ...env } })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => (stdout += chunk))
  child.stderr.on('data', (chunk) => (stderr += chunk))
  const ran = `${env.CFS_HOME ? `CFS_HOME=${env.CFS_HOME} ` : ''}npx tsx ${script} ${args.map((a) => (/^[\w./=:@-]+$/.test(a) ? a : `'${a}'`)).join(' ')}`
  return new Promise((resolve) => child.on('close', (exitCode) => resolve({ stdout, stderr, exitCode, ran })))
}

const runStep = (step: string, args: string[], env: NodeJS.ProcessEnv, asUser?: number) => runTsx(`steps/${step}`, ['run', ...args], env, asUser)
// `npm run images -- diff|export …`, through the test's stand-in for scripts/images.ts.
const images = (args: string[], env: NodeJS.ProcessEnv) => runTsx('scripts/images.ts', args, env)

// The host's mount table, as `mount point <- root (type)` lines: what each run must leave as it was.
const hostMounts = () => readMountInfo().map((m) => `${m.mountPoint} <- ${m.root} (${m.fstype})`).sort()
// A container's directories in a state dir, but the kept ones.
const liveDirs = (home: string) => (existsSync(join(home, 'containers')) ? readdirSync(join(home, 'containers')) : []).filter((id) => !existsSync(join(home, 'containers', id, 'kept')))

/** A store in `home` with the three layers and the images `layered` (with a config), `plain` (none) and `as-nobody` (User nobody). */
function makeStore(home: string, base: string, opaqueXattr: string): { layers: string[] } {
  const layer = (label: string, fill: (dir: string) => void) => {
    // The store names a layer by the sha256 of its tar; made by hand, any unique hex will do.
    const hex = createHash('sha256').update(`${label} ${process.pid} ${home}`).digest('hex')
    const dir = join(home, 'layers', hex)
    mkdirSync(join(home, 'layers'), { recursive: true })
    fill(dir)
    return { id: `sha256:${hex}`, dir }
  }
  const bottom = layer('busybox', (dir) => {
    spawnSync('cp', ['-a', base, dir], { stdio: 'inherit' })
    mkdirSync(join(dir, 'opaque-dir'))
    writeFileSync(join(dir, 'opaque-dir/from-base'), 'base\n')
  })
  const middle = layer('adds-a', (dir) => {
    mkdirSync(join(dir, 'opaque-dir'), { recursive: true })
    writeFileSync(join(dir, 'a'), 'a\n')
    writeFileSync(join(dir, 'opaque-dir/from-a'), 'a\n')
  })
  const top = layer('whiteout-and-opaque', (dir) => {
    mkdirSync(join(dir, 'etc'), { recursive: true })
    // A whiteout: a character device 0,0, "this name is gone" for the layers below.
    mknod(join(dir, 'etc/os-release'), S_IFCHR, makedev(0, 0))
    mkdirSync(join(dir, 'opaque-dir'))
    writeFileSync(join(dir, 'opaque-dir/from-top'), 'top\n')
    lsetxattr(join(dir, 'opaque-dir'), opaqueXattr, 'y')
    writeFileSync(join(dir, 'b'), 'b\n')
  })
  const layers = [bottom.id, middle.id, top.id] // bottom first, as image.json lists them
  const image = (name: string, config?: object) => {
    mkdirSync(join(home, 'images', name), { recursive: true })
    writeFileSync(join(home, 'images', name, 'image.json'), `${JSON.stringify({ name, layers, ...(config ? { config } : {}) }, null, 2)}\n`)
  }
  image('layered', { Entrypoint: ['/bin/sh', '-c'], Cmd: ['echo cmd ran; pwd; echo "FROM_IMAGE=$FROM_IMAGE"'], Env: ['FROM_IMAGE=image', 'PATH=/usr/bin:/bin'], WorkingDir: '/work' })
  image('plain')
  image('as-nobody', { Cmd: ['true'], User: 'nobody' })
  return { layers: [top.dir, middle.dir, bottom.dir] }
}

// What the container reports, one fact a line (the image's Entrypoint is sh -c: this is its one argument).
const FACTS = 'test -e /etc/os-release && echo whited-out-present || echo whited-out-gone; ls /opaque-dir | tr "\\n" " "; echo; cat /a /b; grep " / / " /proc/self/mountinfo; pwd; echo "FROM_IMAGE=$FROM_IMAGE PATH=$PATH"'
// What a container changes, for diff and export: a new file, a copy-up, a deletion, a directory made anew.
const CHANGES = 'echo new > /new; echo more >> /a; rm /etc/passwd; rm -r /opaque-dir; mkdir /opaque-dir; echo fresh > /opaque-dir/fresh'
const EXPECTED_DIFF = ['C /a', 'C /etc', 'D /etc/passwd', 'A /new', 'C /opaque-dir', 'A /opaque-dir/fresh', 'D /opaque-dir/from-top', 'A /work']

t.test('withImageConfig: the command line over the image\'s config, as Docker merges them', async (t) => {
  const config = { Entrypoint: ['/bin/echo', 'entry'], Cmd: ['cmd'], Env: ['A=image', 'B=image'], WorkingDir: 'srv' }
  t.same(withImageConfig(config, { command: [], env: [] }), { command: ['/bin/echo', 'entry', 'cmd'], env: ['A=image', 'B=image'], workdir: '/srv' },
    'no command: Entrypoint + Cmd; Env as it is; a relative WorkingDir from /')
  t.same(withImageConfig(config, { command: ['given'], env: ['B=cli'], workdir: '/tmp' }), { command: ['/bin/echo', 'entry', 'given'], env: ['A=image', 'B=image', 'B=cli'], workdir: '/tmp' },
    'the words given replace Cmd, not Entrypoint; -e comes after Env (containerEnv lets the later one win); -w wins')
  t.same(withImageConfig({ User: '0:0' }, { command: ['true'], env: [] }).command, ['true'], 'User 0:0 is root: no refusal')
  t.throws(() => withImageConfig({}, { command: [], env: [] }), /^missing command/, 'neither a command nor Entrypoint/Cmd: missing command')
  t.throws(() => withImageConfig({ User: '1000' }, { command: ['true'], env: [] }), /User `1000`/, 'a User other than root: refused')
  t.throws(() => withImageConfig({ Env: ['NOVALUE'] }, { command: ['true'], env: [] }), /Env `NOVALUE`: expected KEY=VALUE/, 'an Env entry without =: refused')
})

t.test('mount(): options longer than mount(2)\'s one page are refused before the kernel cuts them off', async (t) => {
  const layers = Array.from({ length: 40 }, (_, i) => `/var/lib/containers-from-scratch/layers/${String(i).padStart(64, '0')}`)
  t.throws(() => mount('overlay', '/nonexistent', 'overlay', 0, `lowerdir=${layers.join(':')},upperdir=/u,workdir=/w`), /options are \d+ bytes, and mount\(2\) reads 4095, one page: an image of this many layers does not fit/, '40 layers of full paths: one line that says so')
})

t.test('an image of 80 layers, more than their full paths fit in mount(2)\'s page: mounted by their short links at 07 and 09', rootOnly(), async (t) => {
  const base = await ensureImage('busybox')
  const home = mkdtempSync('/tmp/cfs-layers-many-')
  chmodSync(home, 0o755) // step 09 as root: container root, host uid 100000, must get through to the layers
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const env = { CFS_HOME: home }
  const ids: string[] = []
  mkdirSync(join(home, 'layers'))
  for (let i = 0; i < 80; i++) {
    const hex = createHash('sha256').update(`many ${i} ${process.pid} ${home}`).digest('hex')
    const dir = join(home, 'layers', hex)
    if (i === 0) spawnSync('cp', ['-a', base, dir], { stdio: 'inherit' })
    else mkdirSync(dir)
    writeFileSync(join(dir, `layer-${i}`), `${i}\n`)
    ids.push(`sha256:${hex}`)
  }
  mkdirSync(join(home, 'images', 'many'), { recursive: true })
  writeFileSync(join(home, 'images', 'many', 'image.json'), `${JSON.stringify({ name: 'many', layers: ids })}\n`)
  t.ok(ids.length * (join(home, 'layers').length + 66) > 4095, 'by their full paths, the 80 layers would not fit in one page')
  const mountsBefore = hostMounts()
  for (const step of ['07-overlay', '09-userns']) {
    const r = await runStep(step, ['--image', 'many', 'sh', '-c', 'cat /layer-0 /layer-79; ls / | grep -c "^layer-"; grep " / / " /proc/self/mountinfo'], env)
    const lines = r.stdout.split('\n')
    t.equal(r.exitCode, 0, `${step}: runs the image of 80 layers`, { ran: r.ran, stderr: r.stderr })
    t.same(lines.slice(0, 3), ['0', '79', '80'], `${step}: the bottom layer's file and the top one's are there, and one from each of the 80`, { ran: r.ran, stdout: r.stdout })
    const lowerdirs = / - overlay overlay rw,lowerdir=([^,]*),upperdir=/.exec(lines[3] ?? '')?.[1].split(':') ?? []
    t.equal(lowerdirs.length, 80, `${step}: / is an overlay of 80 lowerdirs`, { got: lines[3] })
    const shifted = step >= '09' ? '@100000' : ''
    t.ok(lowerdirs.every((dir, i) => dir === `l/${ids[79 - i].slice(7, 23)}${shifted}`), `${step}: each by its short link, l/<16 digits>${shifted}, top first`, { got: lowerdirs.slice(0, 2) })
    t.same(hostMounts(), mountsBefore, `${step}: the host's mount table is as it was`)
    t.same(liveDirs(home), [], `${step}: the container's directory is gone`)
  }
})

t.test('an image of three layers, and its config, at steps 07-10', rootOnly(), async (t) => {
  const base = await ensureImage('busybox')
  const home = mkdtempSync('/tmp/cfs-layers-')
  chmodSync(home, 0o755) // steps 09-10 as root: container root, host uid 100000, must get through to the layers
  const env = { CFS_HOME: home }
  const { layers } = makeStore(home, base, 'trusted.overlay.opaque')
  const before = snapshotLeftovers()
  const run = watchRun()
  const mountsBefore = hostMounts()
  t.teardown(() => {
    run.stop()
    killMarked()
    rmSync(home, { recursive: true, force: true })
  })

  for (const step of ['07-overlay', '08-net', '09-userns', '10-security']) {
    // As root, steps 09-10 run on copies of the layers owned by the mapped ids, made once (shiftedLayers).
    const lowerdirs = step >= '09' ? layers.map((dir) => `${dir}@100000`) : layers
    const r = await runStep(step, ['--image', 'layered', FACTS], env)
    const lines = r.stdout.split('\n')
    t.equal(r.exitCode, 0, `${step}: runs the layered image`, { ran: r.ran, stderr: r.stderr })
    t.equal(lines[0], 'whited-out-gone', `${step}: /etc/os-release, whited out by the top layer, is gone`, { ran: r.ran })
    t.equal(lines[1], 'from-top ', `${step}: the opaque /opaque-dir shows only the top layer's file, not the base's or the middle layer's`, { ran: r.ran })
    t.same(lines.slice(2, 4), ['a', 'b'], `${step}: /a from the middle layer and /b from the top one are there`, { ran: r.ran })
    t.match(lines[4], ` - overlay overlay rw,lowerdir=${lowerdirs.join(':')},upperdir=`, `${step}: / is an overlay of the three layers, the top one first`, { ran: r.ran, got: lines[4] })
    t.equal(lines[5], '/work', `${step}: the image's WorkingDir is the command's, made in the upper dir`, { ran: r.ran })
    t.equal(lines[6], 'FROM_IMAGE=image PATH=/usr/bin:/bin', `${step}: the image's Env is the command's, its PATH over the default one`, { ran: r.ran })
    const cmd = await runStep(step, ['--image', 'layered'], env)
    t.same(cmd.stdout.split('\n').slice(0, 3), ['cmd ran', '/work', 'FROM_IMAGE=image'], `${step}: no command: the image's Entrypoint and Cmd run`, { ran: cmd.ran, stderr: cmd.stderr })
    const given = await runStep(step, ['--image', 'layered', '-e', 'FROM_IMAGE=cli', '-w', '/tmp', 'pwd; echo $FROM_IMAGE'], env)
    t.same(given.stdout.split('\n').slice(0, 2), ['/tmp', 'cli'], `${step}: -w and -e win over WorkingDir and Env; the words given replace Cmd, after Entrypoint`, { ran: given.ran, stderr: given.stderr })
    t.same(hostMounts(), mountsBefore, `${step}: the host's mount table is as it was`)
    t.same(liveDirs(home), [], `${step}: the containers' directories are gone`)
  }
  t.ok(layers.every((dir) => statSync(`${dir}@100000`).uid === 100000), 'steps 09-10 as root made each layer\'s copy, owned by container root')

  for (const [image, said] of [['plain', /^cfs: missing command: .*no Entrypoint or Cmd/], ['as-nobody', /^cfs: the image's config says User `nobody`/]] as const) {
    const r = await runStep('07-overlay', ['--image', image], env)
    t.equal(r.exitCode, 125, `--image ${image}: exit 125`, { ran: r.ran, stderr: r.stderr })
    t.match(r.stderr, said, `--image ${image}: it says why, in one line`, { ran: r.ran })
    t.equal(r.stderr.trim().split('\n').length, 1, `--image ${image}: one line`)
  }

  t.test('diff and export of a running container (07) and of kept ones (07, 10)', async (t) => {
    const mark = marker()
    const name = `cfs-layers-${process.pid}`
    const running = await start('07-overlay', ['--image', 'layered', '--name', name, `${CHANGES}; exec sleep ${mark}`], mark, { env })
    const diff = await images(['diff', name], env)
    t.equal(diff.exitCode, 0, 'diff of the running container, by --name: exit 0', { ran: diff.ran, stderr: diff.stderr })
    t.same(diff.stdout.trim().split('\n'), EXPECTED_DIFF, 'its changes, as docker diff prints them: the copied-up /a, the whiteout of /etc/passwd, the opaque /opaque-dir and the top layer\'s file it hides, the new files', { ran: diff.ran })
    await checkExport(t, name, env, 'running')
    stopGroup(running.child, 'SIGTERM')
    t.not(await running.ended, undefined, 'the running container ends on SIGTERM')

    for (const step of ['07-overlay', '10-security']) {
      const kept = await runStep(step, ['--image', 'layered', '--keep', CHANGES], env)
      const id = /containers\/([0-9a-f]{12})\/upper/.exec(kept.stderr)?.[1]
      t.ok(kept.exitCode === 0 && id, `${step} --keep: runs, and says where it kept the container`, { ran: kept.ran, stderr: kept.stderr })
      if (!id) continue
      const keptDiff = await images(['diff', id], env)
      t.same(keptDiff.stdout.trim().split('\n'), EXPECTED_DIFF, `${step}: diff of the kept container, by id: the same changes`, { ran: keptDiff.ran, stderr: keptDiff.stderr })
      const before = hostMounts()
      await checkExport(t, id, env, `kept ${step}`)
      t.same(hostMounts(), before, `${step}: export mounted the kept container's overlay in a namespace of its own: the host's mount table is as it was`)
      removeContainerDir(join(home, 'containers', id))
    }

    const bad = await images(['diff', 'no-such-container'], env)
    t.equal(bad.exitCode, 125, 'diff of no such container: exit 125', { ran: bad.ran, stderr: bad.stderr })
    t.match(bad.stderr, /^cfs: no such container: `no-such-container`[^\n]*\n$/, '…and one line that says so')
    const badExport = await images(['export', 'no-such-container', join(home, 'x.tar')], env)
    t.equal(badExport.exitCode, 125, 'export of no such container: exit 125, one line', { ran: badExport.ran, stderr: badExport.stderr })
  })

  t.test('step 09 rootless: the layers of the user\'s own store', async (t) => {
    const forbidden = usernsForbidden()
    if (forbidden) {
      if (process.env.CI === 'true') t.fail(`rootless step 09 needs user namespaces: ${forbidden}`)
      else t.pass('rootless', { skip: forbidden })
      return
    }
    const user = 65534
    const userHome = mkdtempSync('/tmp/cfs-layers-rootless-')
    t.teardown(() => rmSync(userHome, { recursive: true, force: true }))
    const state = join(userHome, 'state')
    // Rootless, overlay reads user.* xattrs (userxattr): the user's layers mark their opaque directory so.
    const { layers: own } = makeStore(state, base, 'user.overlay.opaque')
    spawnSync('chown', ['-R', `${user}:${user}`, userHome])
    const userEnv = { HOME: userHome, CFS_HOME: state, XDG_CACHE_HOME: join(userHome, 'cache') }
    const r = await runStep('09-userns', ['--image', 'layered', FACTS], userEnv, user)
    const lines = r.stdout.split('\n')
    t.equal(r.exitCode, 0, 'runs rootless', { ran: r.ran, stderr: r.stderr })
    t.same(lines.slice(0, 4), ['whited-out-gone', 'from-top ', 'a', 'b'], 'the whiteout and the opaque directory hold, rootless too', { ran: r.ran })
    t.match(lines[4], ` - overlay overlay rw,lowerdir=${own.join(':')},upperdir=`, '/ is an overlay of the user\'s layers, as they are (the user\'s files are root\'s inside)', { got: lines[4] })
    t.same(lines.slice(5, 7), ['/work', 'FROM_IMAGE=image PATH=/usr/bin:/bin'], 'WorkingDir and Env', { ran: r.ran })
    const kept = await runStep('09-userns', ['--image', 'layered', '--keep', CHANGES], userEnv, user)
    const id = /containers\/([0-9a-f]{12})\/upper/.exec(kept.stderr)?.[1]
    t.ok(kept.exitCode === 0 && id, 'rootless --keep: runs, and says where it kept the container', { ran: kept.ran, stderr: kept.stderr })
    if (id) {
      const diff = await images(['diff', id], { CFS_HOME: state })
      t.same(diff.stdout.trim().split('\n'), EXPECTED_DIFF, 'diff of the rootless kept container: user.overlay.opaque read as opaque', { ran: diff.ran, stderr: diff.stderr })
      await checkExport(t, id, { CFS_HOME: state }, 'kept rootless 09')
    }
    t.same(liveDirs(state), [], 'the rootless runs\' directories are gone, but the kept one')
  })

  t.same(hostMounts(), mountsBefore, 'after all the runs, the host\'s mount table is as it was')
  run.stop()
  t.same(await leftoversSince(before, run), [], 'the runs left nothing behind (cgroups, cfs* interfaces, leases)')
})

// export ID FILE: the merged view, as the container saw it at the end of CHANGES.
async function checkExport(t: Test, id: string, env: NodeJS.ProcessEnv, what: string): Promise<void> {
  const file = join(env.CFS_HOME!, `export-${id}.tar`)
  const r = await images(['export', id, file], env)
  t.equal(r.exitCode, 0, `${what}: export exits 0`, { ran: r.ran, stderr: r.stderr })
  const listed = spawnSync('tar', ['-tvf', file, '--numeric-owner'], { encoding: 'utf8' }).stdout.trim().split('\n')
  const names = listed.map((line) => line.split(/\s+/).slice(5).join(' ').replace(/ -> .*$/, ''))
  const reported = /: (\d+) files, (\d+) bytes/.exec(r.stdout)
  t.same(reported && [Number(reported[1]), Number(reported[2])], [listed.length, existsSync(file) ? statSync(file).size : -1], `${what}: it reports the tar's entries and bytes`, { stdout: r.stdout })
  for (const name of ['./a', './b', './new', './opaque-dir/fresh', './bin/busybox', './proc/']) t.ok(names.includes(name), `${what}: the tar has ${name}`)
  for (const name of ['./etc/os-release', './etc/passwd', './opaque-dir/from-top', './opaque-dir/from-base', './opaque-dir/from-a']) t.notOk(names.includes(name), `${what}: the tar has no ${name}: not in the container's view`)
  t.notOk(names.some((name) => name.startsWith('./proc/') && name !== './proc/'), `${what}: nothing of /proc: what is mounted inside is left out`)
  const a = spawnSync('tar', ['-xOf', file, './a'], { encoding: 'utf8' }).stdout
  t.equal(a, 'a\nmore\n', `${what}: /a is the container's copy, changed`)
  const owner = listed.find((line) => line.endsWith(' ./new'))?.split(/\s+/)[1]
  t.equal(owner, '0/0', `${what}: /new, made by the container's root, is 0/0 in the tar`)
  rmSync(file, { force: true })
}
