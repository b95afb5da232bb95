// The isolation matrix: what a process inside each step's container can
// still do to, or see of, the host. One container run per step executes every
// probe (a shell script plus a static C helper, probe.c); the host prepares
// the targets before the run and judges most results itself, from outside.
//
// Everything the matrix makes on the host is under one directory,
// /tmp/cfs-matrix-<pid>, or carries the name cfsm-*-<pid>/cfs-matrix-<pid>-*,
// and is removed in a `finally`: a private copy of the image (so chroot steps
// write nothing into the shared one), the helper, a secret file, a tmpfs only
// the host has mounted, two `sleep`s, TCP listeners on 127.0.0.1 and on all
// addresses, and per run
// a throwaway cgroup that bounds the PID and memory probes before step 06.

import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo, type Server } from 'node:net'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { cgroupProcs, createCgroup, removeCgroup, type Cgroup } from '../../shared/cgroups.ts'
import { mount, readMountInfo } from '../../shared/mounts.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { repoDir } from '../../shared/settings.ts'
import { sethostname } from '../../shared/uts.ts'
import { tsx } from '../lib/verify.ts'
import { copyImage, removeTree } from '../lib/private-image.ts'

/** A cell of the matrix: the probe could not do it, it could, or the probe itself failed (why). */
export type Cell = 'isolated' | 'leaks' | { error: string }

/** What one container run of the probe script produced, with what the host saw meanwhile. */
export interface StepRun {
  step: string
  u: string // unique name part of this run: <pid>-<step number>
  out: Record<string, string> // KEY=VALUE lines the script printed
  stdout: string
  stderr: string
  exitCode: number | null
  timedOut: boolean
  ready: boolean // the script reached the handshake
  hostnameLeaked: boolean // at the handshake, the host's hostname was the one set inside
  mountLeaked: boolean // at the handshake, the host's mount table had the tmpfs mounted inside
  killedHostSleep: boolean // the host's target sleep died of SIGTERM
  reachedListener: boolean // the host's 127.0.0.1 listener got this run's token
  reachedAnyListener: boolean // the host's 0.0.0.0 listener got this run's token
  limited: boolean // the run asked for --pids-limit and --memory (the step accepts them)
}

/** One probe: a row of the matrix. */
export interface Probe {
  id: string
  title: string
  judge: (run: StepRun, host: Host) => Cell
}

/** The container-level limits the exhaustion probes ask for (steps 06+), and what they try to use. */
export const LIMITS = { pids: 50, memoryMiB: 50, forks: 100, allocMiB: 200 }

/** Limits of the throwaway cgroup that bounds each run, the step's own Node processes included. */
const THROWAWAY = { pids: 400, memory: 1024 ** 3 }

/** What the host exports to every step (as a cloud token would be): the container must not see it. */
const ENV_SECRET = `cfsm-env-secret-${process.pid}`

/** How long one container run may take before the watchdog kills it. */
const RUN_TIMEOUT_MS = 60_000

const value = (run: StepRun, key: string): string | undefined => run.out[key]
const missing = (run: StepRun, key: string): Cell => ({
  error: `the probe printed no ${key}= line (exit ${run.exitCode}${run.timedOut ? ', timed out' : ''}; stderr: ${run.stderr.trim().slice(-300) || 'empty'})`,
})
const flag = (run: StepRun, key: string): Cell => {
  const v = value(run, key)
  return v === undefined ? missing(run, key) : v === '1' ? 'leaks' : 'isolated'
}
const atHandshake = (run: StepRun, leaked: boolean): Cell =>
  run.ready ? (leaked ? 'leaks' : 'isolated') : { error: `the probe never reached its handshake (exit ${run.exitCode}; stderr: ${run.stderr.trim().slice(-300) || 'empty'})` }

/** The rows, in the order the steps fix them. */
export const PROBES: Probe[] = [
  {
    id: 'env',
    title: "read a secret from the host's environment (a token the step was started with)",
    judge: (run) => flag(run, 'env_secret'),
  },
  {
    id: 'hostname',
    title: "change the host's hostname",
    judge: (run) => atHandshake(run, run.hostnameLeaked),
  },
  {
    id: 'see-process',
    title: 'see a host process (a `sleep` in ps/proc)',
    judge: (run) => flag(run, 'see_process'),
  },
  {
    id: 'signal-process',
    title: 'kill a host process (SIGTERM to that sleep)',
    judge: (run) => (value(run, 'kill_rc') === undefined ? missing(run, 'kill_rc') : run.killedHostSleep ? 'leaks' : 'isolated'),
  },
  {
    id: 'see-mounts',
    title: "see a host-only mount in /proc/*/mountinfo",
    judge: (run) => flag(run, 'see_mount'),
  },
  {
    id: 'make-mount',
    title: 'mount a tmpfs that shows in the host\'s mount table',
    judge: (run) => atHandshake(run, run.mountLeaked),
  },
  {
    id: 'read-file',
    title: 'read a host file by its path (/tmp/…)',
    judge: (run, host) => (value(run, 'read_file') === undefined ? missing(run, 'read_file') : value(run, 'read_file') === host.secret ? 'leaks' : 'isolated'),
  },
  {
    id: 'chroot-escape',
    title: 'chroot escape (fchdir out, `..`, chroot .), then read that file',
    judge: (run, host) => (value(run, 'escape') === undefined ? missing(run, 'escape') : value(run, 'escape') === host.secret ? 'leaks' : 'isolated'),
  },
  {
    id: 'see-disk',
    title: "see the host's disk in /dev",
    judge: (run) => flag(run, 'see_disk'),
  },
  {
    id: 'read-disk',
    title: 'mknod a host block device (a loop device) and read it',
    judge: (run, host) => (value(run, 'read_disk') === undefined ? missing(run, 'read_disk') : value(run, 'read_disk') === host.loop.token ? 'leaks' : 'isolated'),
  },
  {
    id: 'see-interfaces',
    title: "see the host's network interface (its MAC in `ip link`)",
    judge: (run, host) => (value(run, 'links') === undefined ? missing(run, 'links') : value(run, 'links')!.toLowerCase().includes(host.mac) ? 'leaks' : 'isolated'),
  },
  {
    id: 'host-loopback',
    title: 'connect to a listener on the host\'s 127.0.0.1',
    judge: (run) => (value(run, 'nc_rc') === undefined ? missing(run, 'nc_rc') : run.reachedListener ? 'leaks' : 'isolated'),
  },
  {
    id: 'host-any-address',
    title: 'connect to a host service on all addresses (0.0.0.0)',
    judge: (run) => (value(run, 'any_rc') === undefined ? missing(run, 'any_rc') : run.reachedAnyListener ? 'leaks' : 'isolated'),
  },
  {
    id: 'pids',
    title: `fork ${LIMITS.forks} processes (limit asked for: ${LIMITS.pids})`,
    judge: (run) => {
      const forked = value(run, 'forked')
      if (forked === undefined) return missing(run, 'forked')
      return Number(forked) >= LIMITS.forks ? 'leaks' : 'isolated'
    },
  },
  {
    id: 'memory',
    title: `allocate ${LIMITS.allocMiB} MiB (limit asked for: ${LIMITS.memoryMiB} MiB)`,
    judge: (run) => {
      const rc = value(run, 'alloc_rc')
      if (rc === undefined) return missing(run, 'alloc_rc')
      // OOM-killed (137) or malloc gave up: the container stayed within its limit.
      return Number(value(run, 'allocated') ?? 0) >= LIMITS.allocMiB ? 'leaks' : 'isolated'
    },
  },
]

/** The targets the host prepares once for all runs. */
export interface Host {
  dir: string // /tmp/cfs-matrix-<pid>
  rootfs: string // the private copy of the image
  helper: string // the compiled probe.c, in the image as /cfs-probe
  secret: string // what the secret file holds
  secretFile: string
  hostMount: string // a tmpfs only the host has, source cfsm-host-<pid>
  hostMountSource: string
  seeMarker: string // `sleep <marker>` runs on the host
  see: ReturnType<typeof spawn>
  disk: string // a real disk of the host, e.g. vda
  loop: { device: string; major: number; minor: number; token: string } // a loop device over a file that holds `token`
  mac: string // of the host's default-route interface
  listener: Server // on 127.0.0.1
  port: number
  anyListener: Server // on 0.0.0.0, as many services listen
  anyPort: number
  tokens: Set<string> // what the listeners received
  hostname: string // the host's hostname before any run
}

/** All step directories, in order. */
export function allSteps(): string[] {
  return readdirSync(join(repoDir, 'steps')).filter((name) => /^\d\d-/.test(name)).sort()
}

/**
 * Run every probe at each step and return the cells, probes down, steps
 * across. `signal` (Ctrl-C in npm run matrix) stops the run in progress and
 * skips the rest; the host is cleaned up either way.
 */
export async function runMatrix(
  steps = allSteps(),
  log: (line: string) => void = () => {},
  signal?: AbortSignal,
): Promise<{ cells: Record<string, Record<string, Cell>>; runs: StepRun[] }> {
  const host = await prepareHost()
  const runs: StepRun[] = []
  try {
    const options = await Promise.all(steps.map(stepOptions))
    for (const [i, step] of steps.entries()) {
      if (signal?.aborted) break
      const started = Date.now()
      runs.push(await probeStep(host, step, options[i], signal))
      log(`${step}: probed in ${((Date.now() - started) / 1000).toFixed(1)} s`)
    }
  } finally {
    await disposeHost(host)
  }
  const cells: Record<string, Record<string, Cell>> = {}
  for (const probe of PROBES) cells[probe.id] = Object.fromEntries(runs.map((run) => [run.step, probe.judge(run, host)]))
  return { cells, runs }
}

/** Build probe.c with `gcc -static` (static: it must run inside any image). */
export function buildHelper(out: string): void {
  const result = spawnSync('gcc', ['-static', '-O1', '-o', out, join(repoDir, 'scripts/matrix/probe.c')], { encoding: 'utf8' })
  if (result.error || result.status !== 0) {
    throw new Error(`gcc -static scripts/matrix/probe.c failed: ${result.error?.message ?? result.stderr.trim()} (apt-get install gcc libc6-dev)`)
  }
}

// Everything the runs aim at, made before the first one.
async function prepareHost(): Promise<Host> {
  const dir = `/tmp/cfs-matrix-${process.pid}`
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { mode: 0o700 })
  const host = { dir, tokens: new Set<string>(), hostname: hostname() } as Host
  try {
    host.rootfs = join(dir, 'image', 'rootfs')
    copyImage(await ensureImage(), host.rootfs)
    host.helper = join(host.rootfs, 'cfs-probe')
    buildHelper(host.helper)
    host.secret = `cfsm-secret-${process.pid}-${Math.random().toString(36).slice(2)}`
    host.secretFile = join(dir, 'secret')
    writeFileSync(host.secretFile, `${host.secret}\n`)
    host.hostMount = join(dir, 'host-mount')
    host.hostMountSource = `cfsm-host-${process.pid}`
    mkdirSync(host.hostMount)
    mount(host.hostMountSource, host.hostMount, 'tmpfs', 0, 'size=64k')
    host.seeMarker = `300.${process.pid}0731`
    host.see = spawn('sleep', [host.seeMarker], { stdio: 'ignore' })
    host.disk = findDisk()
    host.loop = attachLoop(join(dir, 'loop.img'))
    host.mac = findMac()
    host.listener = await listen(host.tokens, '127.0.0.1')
    host.port = (host.listener.address() as AddressInfo).port
    host.anyListener = await listen(host.tokens, '0.0.0.0')
    host.anyPort = (host.anyListener.address() as AddressInfo).port
    return host
  } catch (err) {
    await disposeHost(host)
    throw err
  }
}

// Undo prepareHost and whatever a run left under its directory.
async function disposeHost(host: Partial<Host> & { dir: string }): Promise<void> {
  host.see?.kill('SIGKILL')
  if (host.loop) spawnSync('losetup', ['--detach', host.loop.device])
  for (const server of [host.listener, host.anyListener]) {
    await new Promise<void>((resolve) => (server?.listening ? server.close(() => resolve()) : resolve()))
  }
  restoreHostname(host as Host)
  removeTree(host.dir)
}

// The host's hostname back, if a run changed it (only to one of ours: never undo someone else's).
function restoreHostname(host: Host): void {
  if (host.hostname && hostname().startsWith(`cfsm-h-${process.pid}-`)) sethostname(host.hostname)
}

// A TCP listener that notes the tokens containers send it.
async function listen(tokens: Set<string>, address: string): Promise<Server> {
  const server = createServer((socket) => {
    let data = ''
    socket.on('data', (chunk) => {
      data += chunk
      for (const token of data.match(/cfsm-(tcp|any)-[\w-]+/g) ?? []) tokens.add(token)
      socket.end()
    })
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, address, resolve))
  return server
}

// A real disk of the host (not loop, ram, zram), as /sys/block names it.
function findDisk(): string {
  const disk = readdirSync('/sys/block').sort().find((name) =>
    !/^(loop|ram|zram|nbd|dm-|md|sr)/.test(name) && Number(readFileSync(`/sys/block/${name}/size`, 'utf8')) > 0)
  if (!disk) throw new Error('no disk in /sys/block (only loop, ram or zram devices): the disk probe needs one')
  return disk
}

// A block device the host itself can read (some hosts refuse even root a
// read of their own disk): a read-only loop device over a file holding a token.
function attachLoop(file: string): Host['loop'] {
  const token = `cfsm-loop-${process.pid}`
  writeFileSync(file, `${token}\n`.padEnd(4096, '\0'))
  const result = spawnSync('losetup', ['--find', '--show', '--read-only', file], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`losetup --find --show ${file}: ${result.error?.message ?? result.stderr.trim()}`)
  const device = result.stdout.trim()
  const [major, minor] = readFileSync(`/sys/block/${device.slice('/dev/'.length)}/dev`, 'utf8').trim().split(':').map(Number)
  return { device, major, minor, token }
}

// The MAC address of the interface the default route uses (/proc/net/route: destination 00000000).
function findMac(): string {
  const route = readFileSync('/proc/net/route', 'utf8').split('\n').slice(1).map((line) => line.split('\t'))
  const name = route.find((fields) => fields[1] === '00000000')?.[0]
    ?? readdirSync('/sys/class/net').find((n) => n !== 'lo' && !n.startsWith('cfs'))
  if (!name) throw new Error('the host has no network interface but lo: the interface probe needs one')
  return readFileSync(`/sys/class/net/${name}/address`, 'utf8').trim().toLowerCase()
}

/** Which options a step takes, from its --help: the limits (06+) and --image (03+). */
async function stepOptions(step: string): Promise<{ limits: boolean; image: boolean }> {
  const help = await collect(spawn('env', ['-u', 'NODE_OPTIONS', tsx, `steps/${step}`, '--help'], { cwd: repoDir, env: stepEnv() }))
  return { limits: help.stdout.includes('--pids-limit') && help.stdout.includes('--memory'), image: help.stdout.includes('--image') }
}

/**
 * The environment a step runs in: as a learner's, without a test runner's
 * NODE_OPTIONS preloads (tap adds them back to every spawn from Node, so
 * commands also go through `env -u NODE_OPTIONS` or `unset NODE_OPTIONS`).
 */
export function stepEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, FORCE_COLOR: '0', ...extra }
  delete env.NODE_OPTIONS
  return env
}

// One container run at `step` that executes every probe.
async function probeStep(host: Host, step: string, options: { limits: boolean; image: boolean }, signal?: AbortSignal): Promise<StepRun> {
  const u = `${process.pid}-${step.slice(0, 2)}`
  const run: StepRun = {
    step, u, out: {}, stdout: '', stderr: '', exitCode: null, timedOut: false, ready: false,
    hostnameLeaked: false, mountLeaked: false, killedHostSleep: false, reachedListener: false, reachedAnyListener: false,
    limited: options.limits,
  }
  // A sleep only this run may kill; SIGTERM is what the probe sends.
  const target = spawn('sleep', [`301.${process.pid}${step.slice(0, 2)}`], { stdio: 'ignore' })
  const targetEnded = new Promise<NodeJS.Signals | null>((resolve) => target.on('exit', (_, signal) => resolve(signal)))
  const script = `cfs-probe-${step.slice(0, 2)}.sh`
  writeFileSync(join(host.rootfs, script), probeScript(host, u, target.pid!))
  // From 03 on the image is `/`; before, the script is found by its host path.
  const command = `[ -f /${script} ] && exec sh /${script} / || exec sh ${host.rootfs}/${script} ${host.rootfs}`
  const args = [
    ...(options.image ? ['--image', host.rootfs] : []),
    ...(options.limits ? ['--pids-limit', String(LIMITS.pids), '--memory', `${LIMITS.memoryMiB}M`] : []),
    'sh', '-c', command,
  ]
  let throwaway: Cgroup | undefined
  try {
    throwaway = createCgroup(`matrix-${u}`, { pids: THROWAWAY.pids, memory: THROWAWAY.memory })
    // The wrapper joins the throwaway cgroup, then becomes the step: all of
    // the step's processes, and the container before step 06, are bounded by it.
    const join = throwaway.dirs.map((d) => `echo $$ > ${d.dir}/cgroup.procs`).join(' && ')
    const child = spawn('sh', ['-c', `${join} && unset NODE_OPTIONS && exec "$@"`, 'sh', tsx, `steps/${step}`, 'run', ...args], {
      cwd: repoDir, env: stepEnv({ CFS_MATRIX_SECRET: ENV_SECRET, MATRIX_TOKEN: ENV_SECRET }), detached: true, stdio: ['pipe', 'pipe', 'pipe'],
    })
    const stop = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {}
      // Before step 06 the container's processes are in the throwaway cgroup, maybe in a group of their own.
      for (const d of throwaway!.dirs) for (const pid of cgroupProcs(d.dir)) process.kill(pid, 'SIGKILL')
    }
    const watchdog = setTimeout(() => {
      run.timedOut = true
      stop()
    }, RUN_TIMEOUT_MS)
    signal?.addEventListener('abort', stop)
    child.stderr!.on('data', (chunk) => (run.stderr += chunk))
    child.stdout!.on('data', (chunk) => {
      run.stdout += chunk
      if (!run.ready && run.stdout.includes('CFS_MATRIX_READY\n')) {
        run.ready = true
        // Judged while the container still runs: its hostname and its mount.
        run.hostnameLeaked = hostname() === `cfsm-h-${u}`
        if (run.hostnameLeaked) restoreHostname(host)
        run.mountLeaked = readMountInfo().some((m) => m.source === `cfsm-in-${u}`)
        child.stdin!.write('go on\n')
      }
    })
    child.stdin!.on('error', () => {})
    const ended = await collect(child)
    clearTimeout(watchdog)
    signal?.removeEventListener('abort', stop)
    run.exitCode = ended.exitCode
  } finally {
    restoreHostname(host)
    if (throwaway) await removeCgroup(throwaway)
    if (target.exitCode === null && target.signalCode === null) target.kill('SIGKILL')
  }
  run.killedHostSleep = (await targetEnded) === 'SIGTERM'
  run.reachedListener = host.tokens.has(`cfsm-tcp-${u}`)
  run.reachedAnyListener = host.tokens.has(`cfsm-any-${u}`)
  for (const line of run.stdout.split('\n')) {
    const match = /^([a-z_]+)=(.*)$/.exec(line)
    if (match) run.out[match[1]] = match[2]
  }
  return run
}

// The probes, as the container runs them. $B is the script's directory as the
// container sees it: `/` from step 03 on, the private image's host path before.
// Values that must not show in any process's argv (the marker of the host's
// sleep) are only in this file, never on a command line.
function probeScript(host: Host, u: string, targetPid: number): string {
  const { disk, loop } = host
  return `# The isolation matrix's probes (scripts/matrix/probes.ts), run ${u}.
B=$1
# hostname: the host judges it at the handshake below.
busybox hostname cfsm-h-${u} 2>/dev/null
# A mount of our own: does the host see it? Judged at the handshake.
busybox mkdir -p $B/cfsm-in-${u} && busybox mount -t tmpfs -o size=16k cfsm-in-${u} $B/cfsm-in-${u}
echo CFS_MATRIX_READY
read _
busybox umount $B/cfsm-in-${u} 2>/dev/null; busybox rmdir $B/cfsm-in-${u} 2>/dev/null
# A /proc: the container's, or a fresh one (root may mount proc when there is none).
P=/proc
if [ ! -e /proc/self/mountinfo ]; then
  busybox mkdir -p $B/cfsm-proc-${u} && busybox mount -t proc proc $B/cfsm-proc-${u} && P=$B/cfsm-proc-${u}
fi
all=$(busybox cat $P/[0-9]*/cmdline 2>/dev/null | busybox tr '\\0' ' ')
case "$all" in *"${host.seeMarker}"*) echo see_process=1 ;; *) echo see_process=0 ;; esac
mi=$(busybox cat $P/self/mountinfo $P/1/mountinfo 2>/dev/null)
case "$mi" in *" ${host.hostMountSource} "*) echo see_mount=1 ;; *) echo see_mount=0 ;; esac
busybox kill -TERM ${targetPid} 2>/dev/null; echo kill_rc=$?
echo "read_file=$(busybox cat ${host.secretFile} 2>/dev/null)"
case "$(busybox env)" in *"${ENV_SECRET}"*) echo env_secret=1 ;; *) echo env_secret=0 ;; esac
$B/cfs-probe escape $B cfsm-jail-${u} ${host.secretFile}
[ -b /dev/${disk} ] && echo see_disk=1 || echo see_disk=0
if busybox mknod $B/cfsm-blk-${u} b ${loop.major} ${loop.minor} 2>/dev/null; then
  echo "read_disk=$(busybox head -n 1 $B/cfsm-blk-${u} 2>/dev/null)"
  busybox rm -f $B/cfsm-blk-${u}
else
  echo read_disk=mknod-failed
fi
echo "links=$(busybox ip -o link 2>&1 | busybox tr '\\n' ' ')"
echo cfsm-tcp-${u} | busybox nc -w 3 127.0.0.1 ${host.port} >/dev/null 2>&1; echo nc_rc=$?
# A service on all of the host's addresses: by loopback, or else by the default gateway (step 08: the bridge).
echo cfsm-any-${u} | busybox nc -w 3 127.0.0.1 ${host.anyPort} >/dev/null 2>&1; any_rc=$?
gw=$(busybox ip route 2>/dev/null | busybox awk '/^default/ { print $3 }')
if [ $any_rc != 0 ] && [ -n "$gw" ]; then echo cfsm-any-${u} | busybox nc -w 3 $gw ${host.anyPort} >/dev/null 2>&1; any_rc=$?; fi
echo any_rc=$any_rc
if [ "$P" != /proc ]; then busybox umount $P; busybox rmdir $P; fi
# Last, as they may get the container killed: PIDs, then memory.
$B/cfs-probe fork ${LIMITS.forks}
$B/cfs-probe alloc ${LIMITS.allocMiB}; echo alloc_rc=$?
echo done=1
`
}

// Wait for a process to end; its output and exit code.
function collect(child: ReturnType<typeof spawn>): Promise<{ stdout: string; stderr: string; exitCode: number | null }> {
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (chunk) => (stdout += chunk))
  child.stderr?.on('data', (chunk) => (stderr += chunk))
  return new Promise((resolve) => {
    child.on('error', (err) => resolve({ stdout, stderr: `${stderr}${err.message}`, exitCode: null }))
    child.on('close', (code) => resolve({ stdout, stderr, exitCode: code }))
  })
}
