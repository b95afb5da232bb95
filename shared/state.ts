// The state file of each running container, <state dir>/run/<id>.json, for
// `npm run ps`: what only the step knows about its container (the id, the
// step, the command, its own PID and PID 1's, when it started).
// What the kernel can say live, the container's cgroup and address, ps
// reads from /proc. The parent writes the file once the container's
// process has started and removes it when the container ends, in the
// clean-up (steps 04-10: Cleanup) or at its exit (steps 01-03); a parent
// killed by SIGKILL leaves it, stale, for `npm run clean`.

import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { isRunning, startTime } from './procfs.ts'
import { stateDir } from './settings.ts'

/** One process for good: its PID and when it started (see startTime in procfs.ts). */
export interface ProcessRef {
  pid: number
  since: number
}

/** What a state file holds. */
export interface ContainerState {
  id: string
  step: string // the step's directory, e.g. 04-pid-proc
  command: string[]
  parent: ProcessRef // the step's own process: it waits for the container and cleans up
  pid1: ProcessRef // the container's PID 1, by the host's numbering
  started: string // ISO 8601
}

/** A container's state as `npm run ps` shows it, from whether its two processes still run. */
export type Status = 'running' | 'parent gone' | 'stopping' | 'stale'

/** The directory of state files under a state dir: root's, or a user's for the rootless steps 09-10. */
export function runDir(dir = stateDir): string {
  return join(dir, 'run')
}

// This process's container (a step runs one): its state file.
let stateFile: string | undefined
let state: ContainerState | undefined

/**
 * Parent, just before the container's process starts: the directory of
 * state files there, so that what can fail here fails before it runs.
 */
export function prepareRecord(): void {
  mkdirSync(runDir(), { recursive: true })
}

/**
 * Parent, once the container's process `pid` has started: write its state
 * file (steps 09-10: `pid` is the launcher's until recordPid1). A failure
 * to write is a line on stderr, not the container's end: only ps misses it.
 */
export function recordStart(config: object, pid: number): void {
  const { id, command } = config as { id?: unknown; command?: unknown }
  state = {
    id: typeof id === 'string' ? id : randomBytes(6).toString('hex'), // step 01 has none: one as newContainerId makes
    step: stepName(),
    command: Array.isArray(command) ? command.map(String) : [],
    parent: self(),
    pid1: { pid, since: startTime(pid) ?? 0 },
    started: new Date().toISOString(),
  }
  stateFile = join(runDir(), `${state.id}.json`)
  forgetAtExit()
  write(stateFile, state)
}

/** Parent, steps 09-10: the container's PID 1 is `pid`, the launcher's child, from now on. */
export function recordPid1(pid: number): void {
  if (!state || !stateFile) return
  state.pid1 = { pid, since: startTime(pid) ?? 0 }
  write(stateFile, state)
}

// writeJson for a running container: a failure is said, and ps goes without.
function write(file: string, value: object): void {
  try {
    writeJson(file, value)
  } catch (err) {
    process.stderr.write(`cfs: cannot write ${file} (${(err as Error).message}): npm run ps will not show this container right\n`)
  }
}

/** Parent, when the container has ended: remove its state file. Safe to call again. */
export function forgetContainer(): void {
  if (stateFile) rmSync(stateFile, { force: true })
  stateFile = state = undefined
  process.off('exit', forgetContainer)
}

// However this process ends, but by a signal it has no handler for (SIGKILL):
// process.exit() after a setup error, or at steps 01-03, which have no Cleanup.
function forgetAtExit(): void {
  if (!process.listeners('exit').includes(forgetContainer)) process.on('exit', forgetContainer)
}

/** The state files in `dir` (see runDir), each with what it says. */
export function readStates(dir = runDir()): { file: string; state: ContainerState }[] {
  return listNames(dir)
    .filter((file) => file.endsWith('.json') && !file.startsWith('.'))
    .flatMap((file) => {
      const state = readJson<ContainerState>(join(dir, file))
      return state?.id && state.parent && state.pid1 ? [{ file: join(dir, file), state }] : []
    })
}

/** Whether the container still runs, and its parent with it; stale: both are gone, only `npm run clean` removes the file. */
export function statusOf(state: ContainerState): Status {
  const parent = alive(state.parent)
  const pid1 = alive(state.pid1)
  return parent && pid1 ? 'running' : pid1 ? 'parent gone' : parent ? 'stopping' : 'stale'
}

/** Whether this very process still runs: the PID is there, not a zombie, and started when it did (not a reuse). */
export function alive(ref: ProcessRef): boolean {
  return isRunning(ref.pid) && startTime(ref.pid) === ref.since
}

// This process, as a ProcessRef.
function self(): ProcessRef {
  return { pid: process.pid, since: startTime(process.pid) ?? 0 }
}

// The step's directory: `npx tsx steps/04-pid-proc` names it, `node steps/04-pid-proc/index.ts` a file in it.
function stepName(): string {
  const script = resolve(process.argv[1])
  return basename(statSync(script).isDirectory() ? script : dirname(script))
}

// Write through a temporary file and rename(2): a reader sees the old file or the new, never half of one.
function writeJson(file: string, value: object): void {
  const temporary = join(dirname(file), `.${basename(file)}.${process.pid}`)
  writeFileSync(temporary, `${JSON.stringify(value)}\n`)
  renameSync(temporary, file)
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T
  } catch {
    return undefined
  }
}

function listNames(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}
