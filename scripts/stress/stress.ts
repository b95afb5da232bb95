// Many containers of steps 04-10, ended every way a container can end, a few
// at a time, and then a look for anything left behind: mounts, cgroups,
// container directories, interfaces, leases, processes. Steps 09 and 10 run
// as root here (their root is host uid 100000), on the shifted copy of the image.
//
// Exit paths: a normal exit, a non-zero exit, Ctrl-C (SIGINT to the step's
// process group), SIGTERM to the step's own process, and SIGKILL to it
// followed by `npm run clean`. For the signals, half of the containers run a
// PID 1 that traps them (so it exits 128+N at once) and half one that does
// not (a PID 1 ignores them: the step SIGKILLs it after 2 s, exit 137).
//
// The containers run on a private copy of the image, in the state dir (so
// `npm run clean` looks at its mounts): step 04's /proc mounts then cannot
// mix with those of other runs on the shared image.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { constants } from 'node:os'
import { join } from 'node:path'
import { BRIDGE, liveLeases } from '../../shared/net.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { imagesDir, repoDir } from '../../shared/settings.ts'
import { ROOT_MAP } from '../../shared/userns.ts'
import { clean, findLeftovers, leftoversOf } from '../lib/clean.ts'
import { copyImage, removeTree } from '../lib/private-image.ts'
import { findProcesses } from '../lib/procfs.ts'
import { findStepProcess, tsx } from '../lib/verify.ts'
import { waitFor } from '../lib/wait.ts'

/** How a container is made to end. */
export type ExitPath = 'exit 0' | 'exit 3' | 'SIGINT to the group' | 'SIGTERM to the step' | 'SIGKILL + npm run clean'
export const EXIT_PATHS: ExitPath[] = ['exit 0', 'exit 3', 'SIGINT to the group', 'SIGTERM to the step', 'SIGKILL + npm run clean']

/** The steps that make mounts, cgroups, overlays and veths (and, at 09, a user namespace and its launcher). */
export const STRESS_STEPS = ['04-pid-proc', '05-mount-ns', '06-cgroups', '07-overlay', '08-net', '09-userns', '10-security']

/** One container's story. */
export interface Outcome {
  n: number
  step: string
  path: ExitPath
  traps: boolean // PID 1 traps SIGINT/SIGTERM
  id?: string // the container's id (its hostname)
  exitCode: number | null
  stopMs?: number // from the signal to the end of the run
  expected: boolean
  why?: string // what was not as expected
  leftovers: string[] // what was still there after it ended (and after clean, for SIGKILL)
  stderr: string
}

/** The whole run. */
export interface Report {
  outcomes: Outcome[]
  final: string[] // leftovers of this run found once every container had ended
  finalClean: string[] // what a last `npm run clean` had to remove (left in use by the SIGKILL path's own clean)
  others: string[] // project things on the host that are not this run's (other runs in progress)
  seconds: number
}

/** How many containers run at once by default. */
export const CONCURRENCY = 4

const RUN_TIMEOUT_MS = 30_000

/** Run `count` containers, `concurrency` at a time, and report how each ended and what was left. */
export async function runStress(
  { count = 200, concurrency = CONCURRENCY, steps = STRESS_STEPS, log = () => {} }:
  { count?: number; concurrency?: number; steps?: string[]; log?: (line: string) => void } = {},
): Promise<Report> {
  const started = Date.now()
  const image = `cfs-stress-${process.pid}`
  const imageDir = join(imagesDir, image)
  copyImage(await ensureImage(), join(imageDir, 'rootfs'))
  // A shell puts a background job's stdin on /dev/null, and at step 04 the
  // image's own /dev is all there is (from 05 a tmpfs covers it).
  if (!existsSync(join(imageDir, 'rootfs/dev/null'))) execFileSync('mknod', ['-m', '666', join(imageDir, 'rootfs/dev/null'), 'c', '1', '3'])
  const gate = new StartGate()
  const outcomes: Outcome[] = []
  try {
    let next = 0
    const worker = async () => {
      while (next < count) {
        const n = next++
        // A round is one container per exit path. Rounds go through the steps
        // and alternate PID 1s that trap signals with ones that do not, and
        // each pass through the steps swaps the two (with an even number of
        // steps, `round % 2` alone would tie each step to one kind): with 7
        // steps, every (step, path, traps) comes round once in 70 containers.
        const round = Math.floor(n / EXIT_PATHS.length)
        const path = EXIT_PATHS[n % EXIT_PATHS.length]
        const step = steps[round % steps.length]
        const traps = (round + Math.floor(round / steps.length)) % 2 === 1
        const outcome = await runOne({ n, step, path, traps, image, imageDir, gate })
        outcomes.push(outcome)
        log(`${String(n + 1).padStart(4)}/${count} ${step} ${path}${traps ? ' (traps)' : ''}: exit ${outcome.exitCode}${outcome.expected ? '' : ` UNEXPECTED: ${outcome.why}`}${outcome.leftovers.length ? ` LEFT: ${outcome.leftovers.join(', ')}` : ''}`)
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
    const ids = outcomes.flatMap((o) => (o.id ? [o.id] : []))
    // The bridge goes with the last container out; one being set up or released elsewhere may hold it a moment.
    const final = leftoversOf(ids, imageDir, outcomes.map((o) => marker(o.n)))
    const bridge = await waitFor(() => (orphanBridge() ? undefined : true), 3000)
    if (!bridge) final.push(`bridge ${BRIDGE} with no container on it`)
    // So do the nftables table and the forwarding settings (shared/firewall.ts).
    if (liveLeases().length === 0) final.push(...findLeftovers(['nftables table', 'forwarding']).map((item) => `${item.kind}: ${item.name} with no container left`))
    // What the SIGKILL path's own clean had to leave (in use by a container still running then).
    const finalClean = final.length ? (await clean()).removed.map((item) => `${item.kind}: ${item.name}`) : []
    return {
      outcomes: outcomes.sort((a, b) => a.n - b.n),
      final,
      finalClean,
      others: othersLeftovers(ids, imageDir),
      seconds: (Date.now() - started) / 1000,
    }
  } finally {
    removeTree(imageDir)
    // Steps 09 and 10 as root run on a copy of the image owned by uid 100000 (shiftedLayers), made once and kept in the store.
    removeTree(`${imageDir}@${ROOT_MAP.outside}`)
  }
}

// Unique per container: the argument of its sleep, so /proc finds the sleep and the step.
function marker(n: number): string {
  return `1000.${process.pid}${String(n).padStart(4, '0')}`
}

// One container, from start to the check of what it left.
async function runOne(c: { n: number; step: string; path: ExitPath; traps: boolean; image: string; imageDir: string; gate: StartGate }): Promise<Outcome> {
  const mark = marker(c.n)
  const outcome: Outcome = { n: c.n, step: c.step, path: c.path, traps: c.traps, exitCode: null, expected: false, leftovers: [], stderr: '' }
  const signalled = c.path.startsWith('SIG')
  // $0 is the marker: the step's argv then holds it as a word of its own.
  const script = c.path === 'exit 0' ? 'hostname; exit 0'
    : c.path === 'exit 3' ? 'hostname; exit 3'
    : c.traps ? 'trap "exit 130" INT; trap "exit 143" TERM; hostname; sleep "$0" & wait'
    : 'hostname; exec sleep "$0"'
  const release = await c.gate.starting()
  let child: ChildProcess
  try {
    child = spawn('env', ['-u', 'NODE_OPTIONS', tsx, `steps/${c.step}`, 'run', '--image', c.image, 'sh', '-c', script, mark], {
      cwd: repoDir, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' },
    })
  } catch (err) {
    release()
    throw err
  }
  let stdout = ''
  child.stdout!.on('data', (chunk) => (stdout += chunk))
  child.stderr!.on('data', (chunk) => (outcome.stderr += chunk))
  const ended = new Promise<number | null>((resolve) => child.on('close', (code, signal) => resolve(code ?? (signal ? 128 + constants.signals[signal] : null))))
  const watchdog = setTimeout(() => killGroup(child), RUN_TIMEOUT_MS)
  // Started: the container printed its id (so its child has joined its cgroup), or the run ended.
  await Promise.race([ended, waitFor(() => (/^[0-9a-f]{12}$/m.test(stdout) ? true : undefined), RUN_TIMEOUT_MS)])
  release()
  outcome.id = /^([0-9a-f]{12})$/m.exec(stdout)?.[1]
  let signalledAt = 0
  if (signalled && outcome.id) {
    const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === mark)[0], 10_000)
    const step = findStepProcess(c.step, mark)
    if (sleep === undefined || step === undefined) {
      outcome.why = `no ${sleep === undefined ? 'sleep' : 'step process'} found to signal`
    } else {
      signalledAt = Date.now()
      if (c.path === 'SIGINT to the group') process.kill(-child.pid!, 'SIGINT') // what Ctrl-C in a terminal does
      else process.kill(step, c.path === 'SIGTERM to the step' ? 'SIGTERM' : 'SIGKILL')
    }
  }
  outcome.exitCode = await ended
  clearTimeout(watchdog)
  if (signalledAt) outcome.stopMs = Date.now() - signalledAt
  if (c.path === 'SIGKILL + npm run clean') {
    // The kernel kills the container (PR_SET_PDEATHSIG); once it is gone, clean up as README.md says.
    await waitFor(() => (findProcesses((argv) => argv.includes(mark)).length === 0 ? true : undefined), 5000)
    const cleaned = await c.gate.exclusive(() => runClean())
    if (cleaned.exitCode !== 0) outcome.why = `npm run clean exited ${cleaned.exitCode}: ${cleaned.output.trim().split('\n').slice(-3).join(' / ')}`
  }
  outcome.leftovers = outcome.id ? leftoversOf([outcome.id], undefined, [mark]) : findProcesses((argv) => argv.includes(mark)).map((pid) => `process: ${pid}`)
  judge(outcome)
  return outcome
}

// Whether the run ended the way its exit path should.
function judge(o: Outcome): void {
  const want = o.path === 'exit 0' ? [0]
    : o.path === 'exit 3' ? [3]
    : o.path === 'SIGKILL + npm run clean' ? [137]
    : o.traps ? [o.path.startsWith('SIGINT') ? 130 : 143]
    : [137] // PID 1 ignored the signal; the step SIGKILLed it after 2 s
  if (o.why) o.expected = false
  else if (!o.id) o.why = `it never printed its id (stderr: ${o.stderr.trim().slice(-300) || 'empty'})`
  else if (o.exitCode === null || !want.includes(o.exitCode)) o.why = `exit ${o.exitCode}, expected ${want.join(' or ')} (stderr: ${o.stderr.trim().slice(-300) || 'empty'})`
  else if (o.stopMs !== undefined && o.stopMs > 6000) o.why = `took ${o.stopMs} ms to stop after the signal (expected < 6000)`
  o.expected = !o.why
}

// `npm run clean`, as a learner runs it after a SIGKILL.
function runClean(): Promise<{ exitCode: number | null; output: string }> {
  const child = spawn('env', ['-u', 'NODE_OPTIONS', tsx, 'scripts/clean.ts'], { cwd: repoDir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } })
  let output = ''
  child.stdout!.on('data', (chunk) => (output += chunk))
  child.stderr!.on('data', (chunk) => (output += chunk))
  return new Promise((resolve) => child.on('close', (code) => resolve({ exitCode: code, output })))
}

function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL')
  } catch {}
}

// The bridge is there, but no container holds a lease on it.
function orphanBridge(): boolean {
  return existsSync(`/sys/class/net/${BRIDGE}`) && liveLeases().length === 0
}

// The project's things on the host that belong to others (their runs in progress), for the report only.
function othersLeftovers(ids: string[], imageDir: string): string[] {
  const mine = new Set(ids)
  return findLeftovers(['cgroup', 'interface', 'netns', 'mount'])
    .filter((item) => !(item.id && mine.has(item.id)) && !(item.kind === 'mount' && item.name.includes(` on ${imageDir}/`)))
    .map((item) => `${item.kind}: ${item.name}`)
}

/**
 * Containers starting (between spawn and their first output) share the
 * gate; `npm run clean` needs it alone. clean takes any cgroup without a
 * process for a leftover, and a starting container's cgroup has none until
 * its child joins it, so a clean at that moment would break the start.
 */
class StartGate {
  private startingCount = 0
  private cleaning: Promise<unknown> | undefined
  private idle: (() => void)[] = []

  /** Wait until no clean runs, then count this start in; call the result once started. */
  async starting(): Promise<() => void> {
    while (this.cleaning) await this.cleaning
    this.startingCount++
    let released = false
    return () => {
      if (released) return
      released = true
      if (--this.startingCount === 0) for (const wake of this.idle.splice(0)) wake()
    }
  }

  /** Run `fn` when no container is starting; none starts meanwhile. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.cleaning) await this.cleaning
    const run = (async () => {
      while (this.startingCount > 0) await new Promise<void>((resolve) => this.idle.push(resolve))
      return fn()
    })()
    this.cleaning = run.finally(() => (this.cleaning = undefined))
    return run
  }
}
