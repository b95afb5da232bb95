// Containers started in the background for a test, as a learner starts
// them from a shell (`tsx steps/<step> run …`), each with a `sleep` whose
// argument marks it, so the test can find its host PID and kill what a
// failed check left running. Used by the ps and exec tests.

import { spawn, type ChildProcess } from 'node:child_process'
import { findProcesses } from '../scripts/lib/procfs.ts'
import { tsx } from '../scripts/lib/verify.ts'
import { waitFor } from '../scripts/lib/wait.ts'
import { repoDir } from '../shared/settings.ts'

/** A container started in the background: its launcher (tsx), its sleep's host PID, and its end. */
export interface Started {
  child: ChildProcess
  sleep: number
  ended: Promise<number | null>
  output: () => string
}

/** The marks given out so far (see marker). */
export const markers: string[] = []
let n = 0

/** A marker sleep's argument: a number sleep takes, unique to this test file and run. */
export function marker(): string {
  const mark = `1000.${process.pid}${n++}`
  markers.push(mark)
  return mark
}

/** SIGKILL every marked sleep still running (for t.teardown). */
export function killMarked(): void {
  for (const pid of findProcesses((argv) => argv[0] === 'sleep' && markers.includes(argv[1]))) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {}
  }
}

/**
 * `tsx steps/<step> run <args>`, as a learner would start it (without tap's
 * preloads), in a process group of its own, as root or as `asUser`;
 * resolves once the sleep marked `mark` runs.
 */
export async function start(step: string, args: string[], mark: string, options: { env?: NodeJS.ProcessEnv; asUser?: number } = {}): Promise<Started> {
  const command = ['env', '-u', 'NODE_OPTIONS', tsx, `steps/${step}`, 'run', ...args]
  const argv = options.asUser === undefined ? command : ['setpriv', `--reuid=${options.asUser}`, `--regid=${options.asUser}`, '--clear-groups', ...command]
  const child = spawn(argv[0], argv.slice(1), { cwd: repoDir, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0', ...options.env } })
  let output = ''
  child.stdout!.on('data', (chunk) => (output += chunk))
  child.stderr!.on('data', (chunk) => (output += chunk))
  // 'exit', not 'close': a PID 1 that outlives its step holds the pipes open.
  const ended = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const sleep = await Promise.race([ended.then(() => undefined), waitFor(() => findProcesses((a) => a[0] === 'sleep' && a[1] === mark)[0], 30_000)])
  if (sleep === undefined) {
    stopGroup(child, 'SIGKILL')
    throw new Error(`${step} run ${args.join(' ')} did not start its sleep: ${output.trim()}`)
  }
  return { child, sleep, ended, output: () => output }
}

/** Send `signal` to the container's launcher and everything in its process group. */
export function stopGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal)
  } catch {}
}

/** `tsx <args…>` from the repository root, as another user (setpriv), without tap's preloads. */
export function asUser(uid: number, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ stdout: string; stderr: string; exitCode: number | null }> {
  const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'env', '-u', 'NODE_OPTIONS', tsx, ...args], {
    cwd: repoDir, env: { ...process.env, FORCE_COLOR: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => (stdout += chunk))
  child.stderr.on('data', (chunk) => (stderr += chunk))
  return new Promise((resolve) => child.on('close', (exitCode) => resolve({ stdout, stderr, exitCode })))
}
