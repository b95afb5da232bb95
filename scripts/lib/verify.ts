// What every step's verify.ts uses: run the step as a learner would, and
// print one line per claim, a green check or a red cross with what was
// expected and what came back; with CFS_VERIFY_JSON set, also record each
// claim as data (see results.ts).

import chalk from 'chalk'
import { $, type ProcessPromise } from 'zx'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { exitOnClosedPipe } from '../../shared/errors.ts'
import { isRunning } from '../../shared/procfs.ts'
import { repoDir } from '../../shared/settings.ts'
import { readStates, statusOf } from '../../shared/state.ts'
import { descendants, findProcesses, parentPid } from './procfs.ts'
import { recordResult, type ClaimResult } from './results.ts'
import { scaled, waitFor } from './wait.ts'

/** The project's own tsx, so verify runs steps as `npx tsx` would, minus npx. */
export const tsx = join(repoDir, 'node_modules/.bin/tsx')

/**
 * The program a verify script checks: `steps/<step>`, or the learner's file
 * when the exercise checker sets CFS_VERIFY_TARGET (e.g. exercises/04-pid-proc).
 */
export function stepPath(step: string): string {
  return process.env.CFS_VERIFY_TARGET || `steps/${step}`
}

/**
 * The command that starts a step: `tsx <stepPath>`, as a learner types it.
 *
 * CFS_VERIFY_LAUNCHER=node starts it as `node <stepPath>/index.ts` instead:
 * the same code without tsx's loader, which costs seconds per start under
 * emulation. Only the cgroup v2 VM test (scripts/vm/initramfs.ts) sets it,
 * for steps 06's and 09's verify; a verify that looks for tsx's launcher
 * process (step 08's) needs the default.
 */
export function stepCommand(step: string): string[] {
  const launcher = process.env.CFS_VERIFY_LAUNCHER || 'tsx'
  if (launcher === 'tsx') return [tsx, stepPath(step)]
  if (launcher !== 'node') throw new Error(`CFS_VERIFY_LAUNCHER=${launcher}: expected tsx (the default) or node`)
  return [process.execPath, join(stepPath(step), 'index.ts')]
}

/** `tsx <stepPath> run <args...>` (see stepCommand) from the repo root; never throws on a non-zero exit. */
export function runStep(step: string, args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): ProcessPromise {
  const shell = $({ cwd: repoDir, nothrow: true, quiet: true, input: options.input, env: { ...process.env, ...options.env } })
  return shell`${stepCommand(step)} run ${args}`
}

/** The command line a learner would type for the same run, for the report. */
export function shown(step: string, args: string[], as: 'root' | 'user' = process.getuid?.() === 0 ? 'root' : 'user'): string {
  // From 09 on a step typed as yourself runs rootless: a root run, typed, needs sudo (with your PATH, for your Node).
  const sudo = step >= '09' && as === 'root' ? 'sudo env "PATH=$PATH" ' : ''
  return `${sudo}npx tsx ${stepPath(step)} run ${args.map((a) => (/^[\w./=:-]+$/.test(a) ? a : `'${a}'`)).join(' ')}`
}

/** PID of the step's own node process in the run whose argv includes `marker` (not tsx's launcher, its parent). */
export function findStepProcess(step: string, marker: string): number | undefined {
  const runs = findProcesses((argv) => argv.some((arg) => arg.endsWith(stepPath(step)) || arg.endsWith(`${stepPath(step)}/index.ts`) || arg.endsWith(`${stepPath(step)}/index.js`)) && argv.includes('run') && argv.includes(marker))
  return runs.find((pid) => !runs.some((other) => parentPid(other) === pid))
}

/** A run of `sleep <marker>` in the container; the marker is unique, so /proc can find the sleep and the step. */
export interface Sleeper {
  run: ProcessPromise
  marker: string
  sleep?: number // host PID of the sleep, once it is up
  step?: number // the step's own node process
}

let sleepers = 0

/** Start `run sleep <marker>` (about 100 s) and wait (up to 10 s × CFS_WAIT_SCALE) until the sleep is up, or the run has ended. */
export async function runSleeper(step: string): Promise<Sleeper> {
  const marker = `100.${process.pid}${++sleepers}`
  const run = runStep(step, ['sleep', marker])
  // A run that ends first (an exercise that stops before the command) has no sleep to wait for.
  let ended = false
  void run.then(() => (ended = true), () => (ended = true))
  const found = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker)[0] ?? (ended ? -1 : undefined))
  const sleep = found === -1 ? undefined : found
  return { run, marker, sleep, step: findStepProcess(step, marker) }
}

/** Send `signal` to the step's own process; how long the run took to end (Infinity after `timeoutMs` × CFS_WAIT_SCALE), and its exit code. */
export async function signalStep(s: Sleeper, signal: NodeJS.Signals, timeoutMs = 10_000): Promise<{ ms: number; exitCode: number | null }> {
  const started = Date.now()
  if (s.step) process.kill(s.step, signal)
  const ended = await Promise.race([s.run, delay(scaled(timeoutMs), undefined, { ref: false })])
  return { ms: ended ? Date.now() - started : Infinity, exitCode: ended ? ended.exitCode : null }
}

/** End a sleeper run: SIGKILL the sleep, let the step end by itself (5 s at most), then SIGKILL what is left; wait for the run to end. */
export async function killSleeper(s: Sleeper): Promise<void> {
  // Its container's PID 1 first: the step sees its container end and cleans up
  // (state file, cgroup, overlay), as after any exit; whatever is left after 5 s, SIGKILL.
  if (s.sleep && isRunning(s.sleep)) process.kill(s.sleep, 'SIGKILL')
  await Promise.race([s.run, delay(scaled(5000), undefined, { ref: false })])
  for (const pid of [s.step, s.run.pid]) if (pid && isRunning(pid)) process.kill(pid, 'SIGKILL')
  await s.run
}

// The claims every step from 02 on makes in its verify, each as the step's
// own verify would make it: one helper each, so they read the same everywhere.

/** "exit code 7 comes back" and "a missing command exits 127". */
export async function checkExitCodes(c: Checks, step: string): Promise<void> {
  const exit7 = ['sh', '-c', 'exit 7']
  c.equal('exit code 7 comes back', (await runStep(step, exit7)).exitCode, 7, shown(step, exit7))
  c.equal('a missing command exits 127', (await runStep(step, ['no-such-command'])).exitCode, 127, shown(step, ['no-such-command']))
}

/**
 * Ctrl-C or kill: `signal` to the step ends it, and its container, within
 * 6 s (it passes the signal on, and SIGKILLs a PID 1 that ignores it after
 * 2 s). `during` is the run, as the report shows it. What else must be
 * gone afterwards the caller checks; then it calls killSleeper(s).
 */
export async function checkSignalEnds(c: Checks, step: string, s: Sleeper, signal: NodeJS.Signals, during = shown(step, ['sleep', s.marker])): Promise<void> {
  const stopped = await signalStep(s, signal)
  c.ok(`${signal} to the step ends it within 6 s`, s.sleep !== undefined && stopped.ms < 6000 && !isRunning(s.sleep), {
    ran: `kill -${signal.slice(3)} <step>  # during ${during}`,
    expected: 'the step and its sleep gone in < 6000 ms',
    got: s.sleep && s.step ? `${stopped.ms < Infinity ? `ended in ${stopped.ms} ms, exit ${stopped.exitCode}` : 'still running after 10 s'}, sleep ${isRunning(s.sleep) ? 'running' : 'gone'}` : 'no sleep or no step process found',
  })
}

/**
 * PR_SET_PDEATHSIG: when the step dies, even by SIGKILL, the kernel kills
 * `what` it runs (the container; at step 01, the command) within 5 s.
 */
export async function checkDeathSignal(c: Checks, step: string, what = 'the container'): Promise<void> {
  const orphan = await runSleeper(step)
  if (orphan.step) process.kill(orphan.step, 'SIGKILL')
  const gone = orphan.sleep && (await waitFor(() => (isRunning(orphan.sleep!) ? undefined : true), 5000))
  c.ok(`SIGKILL to the step takes ${what} with it (PR_SET_PDEATHSIG)`, orphan.step !== undefined && gone === true, {
    ran: `kill -KILL <step>  # during ${shown(step, ['sleep', orphan.marker])}`,
    expected: 'the sleep gone within 5 s',
    got: orphan.sleep && orphan.step ? `sleep ${orphan.sleep} still running` : 'no sleep or no step process found',
  })
  await killSleeper(orphan)
  // A step killed outright cannot remove its state file: a known leftover, as after any crash.
  for (const { file, state } of readStates()) {
    if (state.parent.pid === orphan.step && statusOf(state) === 'stale') {
      rmSync(file, { force: true })
      console.log(chalk.dim(`    left behind: its state file, ${file}; removed it, as \`npm run clean\` would`))
    }
  }
}

/** Collects claims, prints them and records them (CFS_VERIFY_JSON); `finish()` sets the exit code. */
export class Checks {
  failed = 0
  passed = 0

  constructor(title: string) {
    exitOnClosedPipe()
    console.log(chalk.bold(title))
  }

  /** One claim: `pass` says whether it holds; `ran`, `expected` and `got` explain it. */
  ok(claim: string, pass: boolean, detail: { ran?: string; expected?: unknown; got?: unknown } = {}): boolean {
    if (pass) {
      this.passed++
      console.log(`${chalk.green('✔')} ${claim}`)
      if (detail.ran) console.log(chalk.dim(`    $ ${detail.ran}`))
    } else {
      this.failed++
      console.log(`${chalk.red('✘')} ${claim}`)
      if (detail.ran) console.log(`    ran:      ${detail.ran}`)
      if ('expected' in detail) console.log(`    expected: ${show(detail.expected)}`)
      if ('got' in detail) console.log(`    got:      ${show(detail.got)}`)
    }
    recordResult({ claim, pass, ...detail })
    if (!pass && process.env.CFS_VERIFY_FAIL_FAST === '1') this.stopAtFirstFailure()
    return pass
  }

  /** A claim another check script made and printed already (the VM runs step 06's verify): count it and record it. */
  add(result: ClaimResult): void {
    if (result.pass) this.passed++
    else this.failed++
    recordResult(result)
  }

  /** A claim that `got` equals `expected`. */
  equal(claim: string, got: unknown, expected: unknown, ran?: string): boolean {
    return this.ok(claim, JSON.stringify(got) === JSON.stringify(expected), { ran, expected, got })
  }

  /** Print the tally and set the exit code: non-zero if any claim failed. */
  finish(): void {
    const line = this.failed ? `${this.failed} of ${this.passed + this.failed} checks failed` : `all ${this.passed} checks passed`
    console.log(this.failed ? chalk.red(line) : chalk.green(line))
    recordResult({ passed: this.passed, failed: this.failed })
    process.exitCode = this.failed ? 1 : 0
  }

  /**
   * CFS_VERIFY_FAIL_FAST=1: stop a verify at its first failed claim, with exit
   * code 1. Used where only "does it fail?" matters (the exercise tests), to
   * save the time of the remaining runs. Whatever the verify still has running
   * is stopped first, as Ctrl-C would (see stopDescendants), and the verify's
   * own `exit` handlers (a hostname to put back, an image to repair) still run.
   */
  private stopAtFirstFailure(): never {
    console.log(chalk.red('stopped at the first failed check (CFS_VERIFY_FAIL_FAST=1)'))
    recordResult({ passed: this.passed, failed: this.failed })
    stopDescendants(process.pid)
    process.exit(1)
  }
}

function show(value: unknown): string {
  const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value))
  return text.length > 400 ? `${text.slice(0, 400)}…` : text
}

/**
 * Stop every process started under `root` (not `root` itself): SIGTERM
 * first, so a step cleans up as after Ctrl-C (it SIGKILLs its container
 * after 2 s), then SIGKILL whatever is still there after `graceMs`.
 * Synchronous: nothing else of the caller runs meanwhile.
 */
export function stopDescendants(root: number, graceMs = 6000): void {
  const tree = new Set<number>()
  // Children of anything in the tree, found again while they exit: a step's
  // clean-up may start processes of its own (ip, umount).
  const grow = () => {
    for (const pid of descendants([root, ...tree])) tree.add(pid)
  }
  const signal = (sig: NodeJS.Signals) => {
    for (const pid of [...tree].filter(isRunning)) {
      try {
        process.kill(pid, sig)
      } catch {} // gone meanwhile
    }
  }
  const waitUntilGone = (ms: number) => {
    for (const deadline = Date.now() + ms; Date.now() < deadline && [...tree].some(isRunning);) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50)
      grow()
    }
  }
  grow()
  signal('SIGTERM')
  waitUntilGone(graceMs)
  signal('SIGKILL')
  waitUntilGone(2000)
}
