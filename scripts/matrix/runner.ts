// Running the isolation matrix: one container run per column that executes
// every probe (a run of each step, bounded by a throwaway cgroup, for the
// PID and memory probes before step 06 has limits of its own; then one by
// runc), each under a watchdog, then every cell judged. The rows are
// probes.ts's; the targets, host.ts's; the runc container, runc.ts's.

import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { cgroupProcs, createCgroup, removeCgroup, type Cgroup } from '../../shared/cgroups.ts'
import { MNT_DETACH, readMountInfo, umount2 } from '../../shared/mounts.ts'
import { repoDir } from '../../shared/settings.ts'
import { cmdline, descendants } from '../lib/procfs.ts'
import { tsx } from '../lib/verify.ts'
import { disposeHost, prepareHost, restoreHostname, type Host } from './host.ts'
import { ENV_SECRET, HOST_FILE_TARGET, hostFileToken, LIMITS, PROBES, probeScript, type Cell, type StepRun } from './probes.ts'
import { prepareRunc, RUNC, runcMissing, type RuncContainer } from './runc.ts'
import { probeTiocsti, tmuxMissing } from './tty.ts'

/** Limits of the throwaway cgroup that bounds each run, the step's own Node processes included. */
const THROWAWAY = { pids: 400, memory: 1024 ** 3 }

/** How long one container run may take before the watchdog kills it. */
const RUN_TIMEOUT_MS = 60_000

/** All step directories, in order. */
export function allSteps(): string[] {
  return readdirSync(join(repoDir, 'steps')).filter((name) => /^\d\d-/.test(name)).sort()
}

/** The matrix's columns: every step, in order, then runc. */
export function allColumns(): string[] {
  return [...allSteps(), RUNC]
}

/**
 * Run every probe in each column and return the cells, probes down,
 * columns across. Where runc is missing its column is skipped, every cell
 * saying why. `signal` (Ctrl-C in npm run matrix) stops the run in
 * progress and skips the rest; the host is cleaned up either way.
 */
export async function runMatrix(
  columns = allColumns(),
  log: (line: string) => void = () => {},
  signal?: AbortSignal,
): Promise<{ cells: Record<string, Record<string, Cell>>; runs: StepRun[] }> {
  const host = await prepareHost()
  const runs: StepRun[] = []
  const skipped: Record<string, Cell> = {}
  try {
    const steps = columns.filter((column) => column !== RUNC)
    const options = new Map(await Promise.all(steps.map(async (step) => [step, await stepOptions(step)] as const)))
    for (const column of columns) {
      if (signal?.aborted) break
      const missing = column === RUNC ? runcMissing() : undefined
      if (missing) {
        skipped[column] = { skipped: missing }
        log(`${column}: skipped: ${missing}`)
        continue
      }
      const started = Date.now()
      runs.push(await probeColumn(host, column, options.get(column), signal))
      log(`${column}: probed in ${((Date.now() - started) / 1000).toFixed(1)} s`)
    }
  } finally {
    await disposeHost(host)
  }
  const cells: Record<string, Record<string, Cell>> = {}
  for (const probe of PROBES) cells[probe.id] = { ...skipped, ...Object.fromEntries(runs.map((run) => [run.step, probe.judge(run, host)])) }
  return { cells, runs }
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

// One container run in `column` (a step, or runc) that executes every probe.
async function probeColumn(host: Host, column: string, options = { limits: false, image: false }, signal?: AbortSignal): Promise<StepRun> {
  // Names of this run's things: the step's number, or runc (its sleep, 00: no step has that number).
  const tag = column === RUNC ? RUNC : column.slice(0, 2)
  const u = `${process.pid}-${tag}`
  const run: StepRun = {
    step: column, u, out: {}, stdout: '', stderr: '', exitCode: null, timedOut: false, ready: false,
    hostnameLeaked: false, mountLeaked: false, killedHostSleep: false, reachedListener: false, reachedAnyListener: false,
    limited: column === RUNC || options.limits, injected: '', hostFileChanged: false,
  }
  // A sleep only this run may kill; SIGTERM is what the probe sends.
  const target = spawn('sleep', [`301.${process.pid}${column === RUNC ? '00' : tag}`], { stdio: 'ignore' })
  const targetEnded = new Promise<NodeJS.Signals | null>((resolve) => target.on('exit', (_, signal) => resolve(signal)))
  const script = `cfs-probe-${tag}.sh`
  writeFileSync(join(host.rootfs, script), probeScript(host, u, target.pid!))
  // The host's file for the host-file probe: root's, 0644, a token in it.
  const hostFile = join(host.dir, `host-file-${u}`)
  writeFileSync(hostFile, `${hostFileToken(u)}\n`)
  chmodSync(hostFile, 0o644)
  let throwaway: Cgroup | undefined
  let runc: RuncContainer | undefined
  try {
    let argv: string[]
    if (column === RUNC) {
      runc = await prepareRunc(host, u, script)
      argv = runc.command
    } else {
      // From 03 on the image is `/`; before, the script is found by its host path.
      const command = `[ -f /${script} ] && exec sh /${script} / || exec sh ${host.rootfs}/${script} ${host.rootfs}`
      const args = [
        ...(options.image ? ['--image', host.rootfs] : []),
        ...(options.limits ? ['--pids-limit', String(LIMITS.pids), '--memory', `${LIMITS.memoryMiB}M`] : []),
        'sh', '-c', command,
      ]
      throwaway = createCgroup(`matrix-${u}`, { pids: THROWAWAY.pids, memory: THROWAWAY.memory })
      // The wrapper joins the throwaway cgroup, then becomes the step: all of
      // the step's processes, and the container before step 06, are bounded by it.
      const join = throwaway.dirs.map((d) => `echo $$ > ${d.dir}/cgroup.procs`).join(' && ')
      argv = ['sh', '-c', `${join} && unset NODE_OPTIONS && exec "$@"`, 'sh', tsx, `steps/${column}`, 'run', ...args]
    }
    const child = spawn(argv[0], argv.slice(1), {
      cwd: repoDir, env: stepEnv({ CFS_MATRIX_SECRET: ENV_SECRET, MATRIX_TOKEN: ENV_SECRET }), detached: true, stdio: ['pipe', 'pipe', 'pipe'],
    })
    const stop = () => {
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {}
      // Before step 06 the container's processes are in the throwaway cgroup, maybe in a group of their own.
      for (const d of throwaway?.dirs ?? []) for (const pid of cgroupProcs(d.dir)) process.kill(pid, 'SIGKILL')
      // runc's are in its cgroup: runc kills them.
      runc?.kill()
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
        const pid = scriptPid(child.pid!, script)
        run.ownIpcNamespace = pid ? ownNamespace(pid, 'ipc') : undefined
        run.injected = pid ? injectHostFile(host, pid, hostFile, u) : `no process of the run runs ${script}`
        child.stdin!.write('go on\n')
      }
    })
    child.stdin!.on('error', () => {})
    const ended = await collect(child)
    clearTimeout(watchdog)
    signal?.removeEventListener('abort', stop)
    run.exitCode = ended.exitCode
  } catch (err) {
    // Setting up runc's container failed: every cell of the column says why.
    if (column !== RUNC) throw err
    run.stderr += (err as Error).message
  } finally {
    restoreHostname(host)
    if (throwaway) await removeCgroup(throwaway)
    if (runc) await runc.remove()
    if (target.exitCode === null && target.signalCode === null) target.kill('SIGKILL')
    // The container is gone: what it did to the host's file is final.
    run.hostFileChanged = hostFileChanged(hostFile, u)
    removeHostFile(host, hostFile, u)
  }
  // The tiocsti row needs a terminal: a second run, in a tmux pane (tty.ts).
  if (column === RUNC) run.tiocsti = { na: 'runc runs here with pipes, for the handshake; with terminal: true it gives a pty of its own, as Docker\'s -t does' }
  else if (tmuxMissing()) run.tiocsti = { skipped: tmuxMissing()! }
  else if (!signal?.aborted) run.tiocsti = await probeTiocsti(host, column, u, options.image)
  run.killedHostSleep = (await targetEnded) === 'SIGTERM'
  run.reachedListener = host.tokens.has(`cfsm-tcp-${u}`)
  run.reachedAnyListener = host.tokens.has(`cfsm-any-${u}`)
  for (const line of run.stdout.split('\n')) {
    const match = /^([a-z_]+)=(.*)$/.exec(line)
    if (match) run.out[match[1]] = match[2]
  }
  return run
}

// The host PID of the probe script, under the run's process `root`: found
// by its argv, `sh <dir>/<script> <dir>`.
function scriptPid(root: number, script: string): number | undefined {
  return descendants(root).find((pid) => {
    const argv = cmdline(pid)
    return argv[0] === 'sh' && argv[1]?.endsWith(`/${script}`)
  })
}

// Whether process `pid` is in a namespace of its own of that type (not
// ours: /proc/PID/ns/<type> names another one); undefined if it is gone.
function ownNamespace(pid: number, type: string): boolean | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/${type}`) !== readlinkSync(`/proc/self/ns/${type}`)
  } catch {
    return undefined
  }
}

// At the handshake, bind-mount the host's file onto the one the script
// (process `pid`) made in its root, from outside (probe.c's inject), in the
// container's mount namespace. <dir>, the script's last argument, is its
// root as it sees it. Returns `ok`, or why not.
function injectHostFile(host: Host, pid: number, file: string, u: string): string {
  const target = join(cmdline(pid)[2] ?? '/', `${HOST_FILE_TARGET}-${u}`)
  const result = spawnSync(host.helper, ['inject', String(pid), file, target], { encoding: 'utf8' })
  return /^inject=(.*)$/m.exec(result.stdout)?.[1] ?? `cfs-probe inject: exit ${result.status}: ${result.error?.message ?? result.stderr.trim()}`
}

// Whether the host's file holds anything but its token, or changed its mode.
function hostFileChanged(file: string, u: string): boolean {
  try {
    return readFileSync(file, 'utf8') !== `${hostFileToken(u)}\n` || (statSync(file).mode & 0o7777) !== 0o644
  } catch {
    return true // gone: the container removed it
  }
}

// The host's file, and the container's target: before step 05 the bind
// mount is in the host's mount namespace, under the image.
function removeHostFile(host: Host, file: string, u: string): void {
  const target = join(host.rootfs, `${HOST_FILE_TARGET}-${u}`)
  for (const m of readMountInfo().filter((m) => m.mountPoint === target)) umount2(m.mountPoint, MNT_DETACH)
  rmSync(target, { force: true })
  rmSync(file, { force: true })
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
