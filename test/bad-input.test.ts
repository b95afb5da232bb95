// Bad input, table-driven: every case ends with a one-line error on stderr
// and the documented exit code (README.md: 125 when the container could not
// be set up, 126 when the command cannot be executed, 127 when it is not in
// the image), and leaves nothing behind (scripts/lib/clean.ts findLeftovers(),
// narrowed to what the test's own runs made: others may be running too).

import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { findLeftovers, leftoversOf } from '../scripts/lib/clean.ts'
import { UsageError } from '../shared/errors.ts'
import { allocateNetwork, BRIDGE, readLease, releaseNetwork, vethName } from '../shared/net.ts'
import { listDir, readText } from '../scripts/lib/files.ts'
import { cmdline, descendants, findProcesses } from '../scripts/lib/procfs.ts'
import { waitFor } from '../scripts/lib/wait.ts'
import { readMountInfo } from '../shared/mounts.ts'
import { ensureImage } from '../shared/rootfs.ts'
import { containersDir, repoDir, stateDir } from '../shared/settings.ts'
import { readStates } from '../shared/state.ts'
import { shown, tsx } from '../scripts/lib/verify.ts'
import { rootOnly } from './helpers.ts'

const ALL = readdirSync(join(repoDir, 'steps')).filter((name) => /^\d\d-/.test(name)).sort()
const from = (first: string) => ALL.slice(ALL.indexOf(first))
// From 09 on, a user without sudo runs the step rootless: no "needs root".
const needRoot = ALL.filter((step) => step >= '02' && step < '09')

interface Case {
  name: string
  steps: string[]
  args: string[]
  exitCode: number
  stderr: RegExp // what the one line must say
  env?: NodeJS.ProcessEnv
  asNobody?: boolean
  hideNft?: boolean // run in a mount namespace of its own with an empty /usr/sbin: no nft(8), as on a host without nftables
  makesContainer?: boolean // it gets as far as a container id (from step 02 on): the leftover check has ids to look for
  mounts?: boolean // a -v: the host's mount table must be the same after it
}

interface Result {
  exitCode: number | null
  stderr: string
  ids: string[] // the container ids the run made, as far as it got
  pids: number[] // the run's processes
}

// Run a step as a learner would (without tap's NODE_OPTIONS preloads), maybe as `nobody`.
function runStep(step: string, args: string[], options: { env?: NodeJS.ProcessEnv; asNobody?: boolean; hideNft?: boolean } = {}): Promise<Result> {
  const command = ['env', '-u', 'NODE_OPTIONS', tsx, `steps/${step}`, 'run', ...args]
  const hidden = options.hideNft ? ['unshare', '--mount', 'sh', '-c', 'mount -t tmpfs cfs-no-nft /usr/sbin && exec "$@"', 'sh', ...command] : command
  const argv = options.asNobody ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...hidden] : hidden
  const child = spawn(argv[0], argv.slice(1), { cwd: repoDir, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, FORCE_COLOR: '0', ...options.env } })
  let stderr = ''
  child.stderr!.on('data', (chunk) => (stderr += chunk))
  const ids = new Set<string>()
  const pids = new Set<number>([child.pid!])
  const watch = setInterval(() => watchRun(child.pid!, pids, ids), 10)
  return new Promise((resolve) => child.on('close', (code) => {
    clearInterval(watch)
    for (const [id] of stderr.matchAll(/\b[0-9a-f]{12}\b/g)) ids.add(id)
    resolve({ exitCode: code, stderr, ids: [...ids], pids: [...pids] })
  }))
}

// Other runs on this host make and leave things too: the test looks only at
// what carries the ids of its own runs. An id shows in the child's argv (its
// JSON config), and in parent.pid of a container dir or a lease while the
// parent, one of the run's processes, has them.
function watchRun(root: number, pids: Set<number>, ids: Set<string>): void {
  for (const pid of root > 0 ? descendants(root) : []) {
    pids.add(pid)
    const config = cmdline(pid).join(' ').match(/"id":"([0-9a-f]{12})"/)
    if (config) ids.add(config[1])
  }
  for (const id of listDir(containersDir)) if (pids.has(Number(readText(join(containersDir, id, 'parent.pid'))))) ids.add(id)
  for (const address of listDir(leasesDir)) {
    const lease = readLease(join(leasesDir, address))
    if (lease && pids.has(lease.pid)) ids.add(lease.id)
  }
  // The run's state file (shared/state.ts), there from its child's start to
  // its clean-up: on a busy machine the child may come and go between polls.
  for (const { state } of readStates()) if (pids.has(state.parent.pid)) ids.add(state.id)
}

// Left by the run: what carries its ids, and any new mount under the state
// dir that is no container's (step 04's /proc on the image), once others'
// runs had 3 s to remove theirs.
async function leftBy(result: Result, before: Set<string>): Promise<string[]> {
  // A run that fails within milliseconds may show its id only in what it leaves.
  const pids = new Set(result.pids)
  const ids = new Set(result.ids)
  watchRun(-1, pids, ids)
  const fresh = () => [
    ...leftoversOf([...ids], undefined, []),
    ...findLeftovers().filter((l) => l.kind === 'mount' && !l.name.includes(containersDir) && !before.has(`${l.kind}: ${l.name}`)).map((l) => `${l.kind}: ${l.name}`),
  ]
  return (await waitFor(() => (fresh().length ? undefined : []), 3000)) ?? fresh()
}


const leasesDir = join(stateDir, 'net', 'leases')
// The host's mount table, one line per mount: what a -v case must leave as it was.
const hostMounts = () => readMountInfo().map((m) => `${m.mountPoint} <- ${m.source}:${m.root} (${m.fstype})`).sort()
const snapshot = () => new Set(findLeftovers().map((l) => `${l.kind}: ${l.name}`))

t.test('bad input: one line, the documented exit code, nothing left', rootOnly(), async (t) => {
  const image = await ensureImage()
  const scratch = mkdtempSync('/tmp/cfs-bad-input-')
  const corrupt = join(scratch, 'no-shell')
  mkdirSync(join(corrupt, 'bin'), { recursive: true })
  const aFile = join(scratch, 'a-file')
  writeFileSync(aFile, 'not a directory\n')
  // An image with symlinks to its root and to its /proc, for -v targets that resolve there.
  const linked = join(scratch, 'linked')
  cpSync(image, linked, { recursive: true, verbatimSymlinks: true })
  symlinkSync('/', join(linked, 'x'))
  symlinkSync('/proc', join(linked, 'p'))
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  // A home of nobody's own, for a rootless run's state dir.
  const nobodyHome = mkdtempSync('/tmp/cfs-bad-input-nobody-')
  chownSync(nobodyHome, 65534, 65534)
  t.teardown(() => rmSync(nobodyHome, { recursive: true, force: true }))

  const cases: Case[] = [
    { name: 'unknown option', steps: ALL, args: ['--bogus', 'true'], exitCode: 125, stderr: /Unknown option '--bogus'/ },
    { name: 'missing command', steps: ALL, args: [], exitCode: 125, stderr: /missing command/ },
    { name: 'command not in the image', steps: ALL, args: ['no-such-command'], exitCode: 127, stderr: /no-such-command: command not found/, makesContainer: true },
    { name: 'not executable', steps: ALL, args: ['/etc/passwd'], exitCode: 126, stderr: /\/etc\/passwd: permission denied/, makesContainer: true },
    { name: '--memory abc', steps: from('06-cgroups'), args: ['--memory', 'abc', 'true'], exitCode: 125, stderr: /--memory `abc`: expected a size/ },
    { name: '--memory 0', steps: from('06-cgroups'), args: ['--memory', '0', 'true'], exitCode: 125, stderr: /--memory `0`: the smallest limit is 6M/ },
    { name: '--pids-limit -2', steps: from('06-cgroups'), args: ['--pids-limit', '-2', 'true'], exitCode: 125, stderr: /--pids-limit `-2`: expected a whole number/ },
    { name: 'missing image', steps: from('03-chroot'), args: ['--image', 'nope', 'true'], exitCode: 125, stderr: /no image `nope`/ },
    { name: 'missing image path', steps: from('03-chroot'), args: ['--image', join(scratch, 'nowhere'), 'true'], exitCode: 125, stderr: /--image \S+\/nowhere: no such directory \(a path with a \/ names a root filesystem/ },
    {
      name: 'missing image, rootless', steps: from('09-userns'), args: ['--image', 'nope', 'true'], asNobody: true, env: { HOME: nobodyHome, XDG_DATA_HOME: nobodyHome },
      exitCode: 125, stderr: /no image `nope` in \S+: rootless, your store has only the busybox image made on first use; import one with `npm run rootfs` \(root's store\), then run the step with sudo/,
    },
    { name: 'corrupt image (no /bin/sh)', steps: from('03-chroot'), args: ['--image', corrupt, 'true'], exitCode: 125, stderr: /looks broken \(no \/bin\/sh\)/ },
    {
      name: 'state dir unwritable (CFS_HOME below a file)', steps: ['07-overlay', '08-net'], args: ['--image', image, 'true'],
      env: { CFS_HOME: join(aFile, 'x') }, exitCode: 125, stderr: /ENOTDIR/, makesContainer: true,
    },
    { name: '-p 99999:80', steps: from('08-net'), args: ['-p', '99999:80', 'true'], exitCode: 125, stderr: /-p 99999:80: expected HOSTPORT:CONTAINERPORT\[\/tcp\|udp\], ports from 1 to 65535/ },
    { name: '-p 80', steps: ['08-net', '10-security'], args: ['-p', '80', 'true'], exitCode: 125, stderr: /-p 80: expected HOSTPORT:CONTAINERPORT/ },
    { name: '-p with --network none', steps: from('08-net'), args: ['--network', 'none', '-p', '8080:80', 'true'], exitCode: 125, stderr: /-p publishes a port of a container on the bridge, not with --network none/ },
    { name: '--network bogus', steps: ['08-net'], args: ['--network', 'bogus', 'true'], exitCode: 125, stderr: /--network bogus: expected bridge, none or host\s*$/ },
    { name: '--network bogus in a user namespace', steps: from('09-userns'), args: ['--network', 'bogus', 'true'], exitCode: 125, stderr: /--network bogus: expected bridge or none\s*$/ },
    { name: '--network-isolation with --network host', steps: ['08-net'], args: ['--network', 'host', '--network-isolation', 'off', 'true'], exitCode: 125, stderr: /--network-isolation is the firewall between the bridge and the host, which --network host has none of/ },
    { name: '--network-isolation with --network none', steps: from('08-net'), args: ['--network', 'none', '--network-isolation', 'on', 'true'], exitCode: 125, stderr: /--network-isolation is the firewall between the bridge and the host, which --network none has none of/ },
    { name: '--network host in a user namespace', steps: from('09-userns'), args: ['--network', 'host', 'true'], exitCode: 125, stderr: /--network host: a user namespace may not mount sysfs/ },
    { name: '--network-isolation maybe', steps: from('08-net'), args: ['--network-isolation', 'maybe', 'true'], exitCode: 125, stderr: /--network-isolation maybe: expected on or off/ },
    { name: '--dns ::1', steps: ['08-net', '10-security'], args: ['--dns', '::1', 'true'], exitCode: 125, stderr: /--dns ::1: expected an IPv4 address/ },
    { name: 'nft missing', steps: ['08-net', '09-userns'], args: ['true'], hideNft: true, exitCode: 125, stderr: /the `nft` command is missing \(it sets up NAT and the firewall\): apt-get install nftables/, makesContainer: true },
    { name: '--cap-add BOGUS', steps: from('10-security'), args: ['--cap-add', 'BOGUS', 'true'], exitCode: 125, stderr: /--cap-add BOGUS: no such capability/ },
    { name: '--security-opt label=x', steps: from('10-security'), args: ['--security-opt', 'label=x', 'true'], exitCode: 125, stderr: /--security-opt label=x: expected seccomp=unconfined/ },
    { name: 'not root', steps: needRoot, args: ['true'], asNobody: true, exitCode: 125, stderr: /needs root/ },
    { name: '-h at 01 (no --hostname there)', steps: ['01-exec'], args: ['-h', 'box', 'true'], exitCode: 125, stderr: /Unknown option '-h'/ },
    { name: '--hostname no_underscore', steps: from('02-uts'), args: ['--hostname', 'no_underscore', 'true'], exitCode: 125, stderr: /--hostname `no_underscore`: expected letters, digits/ },
    { name: '-h of 65 characters', steps: ['02-uts', '10-security'], args: ['-h', 'a'.repeat(65), 'true'], exitCode: 125, stderr: /at most 64 characters/ },
    { name: 'relative -w', steps: from('03-chroot'), args: ['-w', 'tmp', 'true'], exitCode: 125, stderr: /--workdir `tmp`: expected an absolute path/ },
    { name: '-w missing in the image, no overlay', steps: ['03-chroot', '04-pid-proc', '05-mount-ns', '06-cgroups'], args: ['-w', '/no-such-dir', 'true'], exitCode: 125, stderr: /--workdir `\/no-such-dir`: no such directory in the image, and this step has no overlay/, makesContainer: true },
    { name: '-v without a container path', steps: from('05-mount-ns'), args: ['-v', scratch, 'true'], exitCode: 125, stderr: /--volume `[^`]+`: expected HOST:CONTAINER/, mounts: true },
    { name: '-v with a bad mode', steps: from('05-mount-ns'), args: ['-v', `${scratch}:/mnt:rx`, 'true'], exitCode: 125, stderr: /expected HOST:CONTAINER, or HOST:CONTAINER:ro/, mounts: true },
    { name: '-v relative host path', steps: from('05-mount-ns'), args: ['-v', 'data:/mnt', 'true'], exitCode: 125, stderr: /the host path `data` must be absolute/, mounts: true },
    { name: '-v missing host path', steps: from('05-mount-ns'), args: ['-v', `${scratch}/no-such:/mnt`, 'true'], exitCode: 125, stderr: /`[^`]+\/no-such` does not exist on this host/, mounts: true },
    { name: '-v relative container path', steps: from('05-mount-ns'), args: ['-v', `${scratch}:mnt`, 'true'], exitCode: 125, stderr: /the container path `mnt` must be absolute/, mounts: true },
    { name: '-v onto /', steps: from('05-mount-ns'), args: ['-v', `${scratch}:/`, 'true'], exitCode: 125, stderr: /the container path cannot be \//, mounts: true },
    { name: '-v onto /.', steps: ['05-mount-ns', '10-security'], args: ['-v', `${scratch}:/.`, 'true'], exitCode: 125, stderr: /the container path cannot be \//, mounts: true },
    {
      name: '-v onto a symlink to / in the image', steps: ['05-mount-ns', '07-overlay', '09-userns', '10-security'], args: ['--image', linked, '-v', `${scratch}:/x`, 'true'],
      exitCode: 125, stderr: /--volume `[^:]+:\/x`: `\/x` is the container's root itself/, makesContainer: true, mounts: true,
    },
    {
      name: '-v into /proc', steps: from('05-mount-ns'), args: ['-v', `${scratch}:/proc/sys`, 'true'],
      exitCode: 125, stderr: /--volume `[^:]+:\/proc\/sys`: `\/proc\/sys` is under \/proc, where the step mounts the kernel's filesystems/, makesContainer: true, mounts: true,
    },
    {
      name: '-v onto a symlink to /proc in the image', steps: ['05-mount-ns', '07-overlay', '09-userns', '10-security'], args: ['--image', linked, '-v', `${scratch}:/p`, 'true'],
      exitCode: 125, stderr: /--volume `[^:]+:\/p`: `\/p` is \/proc \(through a symlink in the image\)/, makesContainer: true, mounts: true,
    },
    {
      name: '-v target missing in the image, no overlay', steps: ['05-mount-ns', '06-cgroups'], args: ['-v', `${scratch}:/no-such-target`, 'true'],
      exitCode: 125, stderr: /--volume `[^:]+:\/no-such-target`: `\/no-such-target` is not in the image, and this step has no overlay/, makesContainer: true, mounts: true,
    },
    { name: '--name -bad (a value like an option)', steps: ['02-uts', '05-mount-ns', '10-security'], args: ['--name', '-bad', 'true'], exitCode: 125, stderr: /--name needs a value, and the next word starts with a dash, as an option does/ },
    { name: '--name no/slash', steps: ALL, args: ['--name', 'no/slash', 'true'], exitCode: 125, stderr: /--name `no\/slash`: expected letters, digits/ },
  ]

  // Two runs at a time, the machine's cores: each is mostly Node starting.
  // The -v cases compare the host's whole mount table before and after, so
  // they run beside each other only (from step 05 on, a run mounts only in
  // namespaces of its own), not beside the others (step 04 mounts /proc on
  // the image in the host's).
  const rows: string[][] = []
  const jobs = cases.flatMap((c) => c.steps.map((step) => ({ c, step, row: rows.push([]) - 1 })))
  const check = async ({ c, step, row }: (typeof jobs)[number]) => {
    const before = snapshot()
    const mountsBefore = c.mounts ? hostMounts() : []
    const result = await runStep(step, c.args, c)
    const { exitCode, stderr } = result
    const lines = stderr.trim().split('\n')
    const left = await leftBy(result, before)
    const what = `${c.name} at ${step}`
    const ran = `${c.asNobody ? 'setpriv --reuid=65534 … ' : ''}${c.env?.CFS_HOME ? `CFS_HOME=${c.env.CFS_HOME} ` : ''}${shown(step, c.args)}`
    t.equal(exitCode, c.exitCode, `${what}: exit ${c.exitCode}`, { ran, stderr })
    t.equal(lines.length, 1, `${what}: one line on stderr`, { ran, stderr })
    t.match(lines[0], /^cfs: /, `${what}: the line starts with \`cfs: \``, { ran })
    t.match(stderr, c.stderr, `${what}: it says ${c.stderr}`, { ran })
    if (c.makesContainer && step !== '01-exec') t.ok(result.ids.length > 0, `${what}: the test saw the run's container id`, { ran })
    t.same(left, [], `${what}: nothing left behind`, { ran })
    if (c.mounts) t.same(hostMounts(), mountsBefore, `${what}: the host's /proc/self/mountinfo is as it was`, { ran })
    rows[row] = [c.name, step, `${c.exitCode}`, `${exitCode}`, lines.join(' / ')]
  }
  await twoAtATime(jobs.filter((job) => !job.c.mounts), check)
  await twoAtATime(jobs.filter((job) => job.c.mounts), check)

  // Docker's "unlimited": accepted, and the container runs.
  for (const step of from('06-cgroups')) {
    const result = await runStep(step, ['--pids-limit', '-1', 'true'])
    t.equal(result.exitCode, 0, `--pids-limit -1 at ${step}: accepted as no limit, exit 0`, { ran: shown(step, ['--pids-limit', '-1', 'true']), stderr: result.stderr })
    t.equal(result.stderr, '', `--pids-limit -1 at ${step}: nothing on stderr`)
    rows.push(['--pids-limit -1', step, '0', String(result.exitCode), result.stderr.trim()])
  }

  // Name clash: a running container (step 01, sleeping) has the name first.
  {
    const name = `clash-${process.pid}`
    const marker = `100.${process.pid}9`
    const holder = spawn('env', ['-u', 'NODE_OPTIONS', tsx, 'steps/01-exec', 'run', '--name', name, 'sleep', marker], { cwd: repoDir, stdio: 'ignore' })
    const ended = new Promise<void>((resolve) => holder.on('exit', () => resolve()))
    const id = await waitFor(() => readStates().find(({ state }) => state.name === name)?.state.id, 20_000)
    t.ok(id, `name clash: the first container, named ${name}, is running`)
    for (const step of ALL) {
      const before = snapshot()
      const result = await runStep(step, ['--name', name, 'true'])
      const lines = result.stderr.trim().split('\n')
      const what = `--name ${name} while container ${id} has it, at ${step}`
      const ran = shown(step, ['--name', name, 'true'])
      t.equal(result.exitCode, 125, `${what}: exit 125`, { ran, stderr: result.stderr })
      t.equal(lines.length, 1, `${what}: one line on stderr`, { ran, stderr: result.stderr })
      t.match(result.stderr, `cfs: the name \`${name}\` is already in use by container ${id}`, `${what}: it says which container has it`, { ran })
      // The line names the first container's id: that one is not this run's.
      t.same(await leftBy({ ...result, ids: result.ids.filter((other) => other !== id) }, before), [], `${what}: nothing left behind`, { ran })
      rows.push([`--name clash`, step, '125', String(result.exitCode), lines.join(' / ')])
    }
    holder.kill('SIGTERM')
    await ended
    t.same(leftoversOf(id ? [id] : [], undefined, [marker]), [], 'name clash: nothing of the first container is left once it is stopped')
  }

  // Interface name collision: an interface named like this id's veth is there first.
  {
    const id = `b${process.pid.toString(16).padStart(11, '0')}`.slice(0, 12)
    const name = vethName(id)
    // dummy, as the name says; a bridge where the kernel has no dummy driver.
    try {
      execFileSync('ip', ['link', 'add', name, 'type', 'dummy'], { stdio: 'ignore' })
    } catch {
      execFileSync('ip', ['link', 'add', name, 'type', 'bridge'])
    }
    let error: unknown
    try {
      const network = await allocateNetwork(id)
      await releaseNetwork(network)
    } catch (err) {
      error = err
    } finally {
      execFileSync('ip', ['link', 'del', name])
    }
    const what = `interface name collision (${name} exists)`
    t.ok(error instanceof UsageError, `${what}: allocateNetwork throws a UsageError`, { got: String(error) })
    t.equal((error as UsageError)?.exitCode, 125, `${what}: …whose exit code is 125`)
    t.match(String((error as Error)?.message), `an interface named ${name} already exists`, `${what}: …saying which interface is in the way`)
    t.notMatch(String((error as Error)?.message), /\n/, `${what}: …in one line`)
    t.same(leftoversOf([id], undefined, []), [], `${what}: nothing left behind (no lease taken)`)
    rows.push(['interface name collision', 'shared/net.ts', '125', String((error as UsageError)?.exitCode), String((error as Error)?.message)])
  }

  // Address range exhausted: a /30 has room for one container.
  {
    const env = { CFS_SUBNET: '10.77.9.8/30' }
    const what = `address range exhausted (CFS_SUBNET=${env.CFS_SUBNET}, one container running)`
    const before = snapshot()
    const first = await startOnSubnet(env)
    if (!first) {
      // The bridge belongs to other containers, on another subnet, the whole time: there is no /30 to fill.
      const why = `${BRIDGE} stayed up for other runs' containers on another subnet for 60 s`
      if (process.env.CI === 'true') t.fail(`${what}: ${why}`)
      else t.pass(what, { skip: why })
    } else {
      const second = await runStep('08-net', ['true'], { env })
      const left = await leftBy(second, before)
      const lines = second.stderr.trim().split('\n')
      t.equal(second.exitCode, 125, `${what}: a second container exits 125`, { stderr: second.stderr })
      t.equal(lines.length, 1, `${what}: one line on stderr`, { stderr: second.stderr })
      t.match(second.stderr, /no free address left in 10\.77\.9\.8\/30/, `${what}: it says no address is free`)
      rows.push(['address range exhausted', '08-net', '125', String(second.exitCode), lines.join(' / ')])
      await first.stop()
        t.same(left, [], `${what}: the second one left nothing behind`)
      t.same(leftoversOf([first.id], undefined, [first.marker]), [], `${what}: nothing of the first is left once it is stopped`)
    }
  }

  t.comment(`\n${table(['case', 'step', 'want', 'got', 'stderr'], rows)}`)
})

// Run `work` on every item, two at a time.
async function twoAtATime<T>(items: T[], work: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items]
  const worker = async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) await work(item)
  }
  await Promise.all([worker(), worker()])
}

function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows]
  const widths = header.map((_, i) => Math.max(...all.map((row) => row[i].length)))
  return all.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n')
}

/**
 * Start a container of step 08 that sleeps, on its own CFS_SUBNET. The
 * bridge takes the subnet of the first container up, so this waits until
 * other runs' containers are gone (up to 60 s); undefined if it never got
 * its turn.
 */
async function startOnSubnet(env: NodeJS.ProcessEnv): Promise<{ id: string; marker: string; stop: () => Promise<void> } | undefined> {
  const deadline = Date.now() + 60_000
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    await waitFor(() => (existsSync(`/sys/class/net/${BRIDGE}`) ? undefined : true), Math.max(0, deadline - Date.now()))
    const marker = `100.${process.pid}7${attempt}`
    const child = spawn('env', ['-u', 'NODE_OPTIONS', tsx, 'steps/08-net', 'run', 'sh', '-c', 'hostname; exec sleep "$0"', marker], {
      cwd: repoDir, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
    })
    let output = ''
    child.stdout!.on('data', (chunk) => (output += chunk))
    child.stderr!.on('data', (chunk) => (output += chunk))
    const ended = new Promise<void>((resolve) => child.on('close', () => resolve()))
    const up = await Promise.race([ended.then(() => false), waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker)[0], 20_000)])
    if (up) {
      return {
        id: output.split('\n')[0].trim(),
        marker,
        stop: async () => {
          process.kill(-child.pid!, 'SIGTERM')
          await ended
        },
      }
    }
    try {
      process.kill(-child.pid!, 'SIGKILL')
    } catch {}
    await ended
    // Only a bridge brought up meanwhile by another run is a reason to try again.
    if (!output.includes(`${BRIDGE} is up with`)) throw new Error(`step 08 on CFS_SUBNET=${env.CFS_SUBNET} did not start: ${output.trim()}`)
  }
  return undefined
}
