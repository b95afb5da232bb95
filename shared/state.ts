// The state file of each running container, <state dir>/run/<id>.json, for
// `npm run ps`: what only the step knows about its container (the id, the
// --name, the step, the command, its own PID and PID 1's, when it started),
// and for `npm run exec`, what the container was given (its hostname,
// working directory and volumes, from the steps that have them).
// What the kernel can say live, the container's cgroup and address, ps
// reads from /proc. The parent writes the file once the container's
// process has started and removes it when the container ends, in the
// clean-up (steps 04-10: Cleanup) or at its exit (steps 01-03); a parent
// killed by SIGKILL leaves it, stale, for `npm run clean`.
//
// A --name is claimed before anything of the container is made, in
// run/names/<name>: one file per name, taken under a lock, so two
// containers started at once cannot both have it.

import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { UsageError } from './errors.ts'
import { withLockSync } from './lock.ts'
import { isRunning, startTime } from './procfs.ts'
import { stateDir } from './settings.ts'
import type { Volume } from './volumes.ts'

/** One process for good: its PID and when it started (see startTime in procfs.ts). */
export interface ProcessRef {
  pid: number
  since: number
}

/** What a state file holds. */
export interface ContainerState {
  id: string
  name?: string
  step: string // the step's directory, e.g. 04-pid-proc
  command: string[]
  parent: ProcessRef // the step's own process: it waits for the container and cleans up
  pid1: ProcessRef // the container's PID 1, by the host's numbering
  started: string // ISO 8601
  hostname?: string // -h, or the id (steps 02 on)
  workdir?: string // -w, or / (steps 03 on): where exec's command starts too
  volumes?: Volume[] // -v (steps 05 on)
  config?: Record<string, unknown> // all the parent handed its child (the step's Container): exec reads -e and step 10's settings there
}

/** What a --name claim holds: who took it, and, once it started, their container's id. */
interface Claim extends ProcessRef {
  id?: string
}

/** A container's state as `npm run ps` shows it, from whether its two processes still run. */
export type Status = 'running' | 'parent gone' | 'stopping' | 'stale'

/** Docker's rule for container names. */
export const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/

/** The directory of state files under a state dir: root's, or a user's for the rootless steps 09-10. */
export function runDir(dir = stateDir): string {
  return join(dir, 'run')
}

// This process's container (a step runs one): its --name, claim and state file.
let name: string | undefined
let claimFile: string | undefined
let stateFile: string | undefined
let state: ContainerState | undefined

/** Parent, from parseRunArgs: the container's --name, checked against Docker's rule; claimed later (claimName). */
export function setName(value: string): void {
  if (!NAME_PATTERN.test(value)) {
    throw new UsageError(`--name \`${value}\`: expected letters, digits, \`_\`, \`.\` and \`-\`, starting with a letter or digit (see --help)`)
  }
  name = value
}

/**
 * Parent, before anything of the container is made (new Cleanup, or
 * reexecChild at steps 01-03): take the --name, if one was given, or stop
 * with one line if a running container has it, or one that is starting.
 */
export function claimName(): void {
  if (name === undefined || claimFile) return
  const file = join(runDir(), 'names', name)
  mkdirSync(dirname(file), { recursive: true })
  withLockSync(join(runDir(), 'lock'), () => {
    const holder = readJson<Claim>(file)
    if (holder && claimAlive(holder)) {
      const who = holder.id ? `container ${holder.id}` : `a container that is starting (process ${holder.pid})`
      throw new UsageError(`the name \`${name}\` is already in use by ${who}: choose another, or stop that one (see npm run ps)`)
    }
    // None, or one whose container is gone (its parent was killed): ours now.
    writeJson(file, self())
  })
  claimFile = file
  forgetAtExit()
}

/**
 * Parent, just before the container's process starts: its name claimed
 * (steps 01-03 have no Cleanup, which claims it first) and the directory
 * of state files there, so that what can fail here fails before it runs.
 */
export function prepareRecord(): void {
  claimName()
  mkdirSync(runDir(), { recursive: true })
}

/**
 * Parent, once the container's process `pid` has started: write its state
 * file (steps 09-10: `pid` is the launcher's until recordPid1). A failure
 * to write is a line on stderr, not the container's end: only ps misses it.
 */
export function recordStart(config: object, pid: number): void {
  const { id, command, hostname, workdir, volumes } = config as { id?: unknown; command?: unknown; hostname?: unknown; workdir?: unknown; volumes?: unknown }
  state = {
    id: typeof id === 'string' ? id : randomBytes(6).toString('hex'), // step 01 has none: one as newContainerId makes
    ...(name === undefined ? {} : { name }),
    step: stepName(),
    command: Array.isArray(command) ? command.map(String) : [],
    parent: self(),
    pid1: { pid, since: startTime(pid) ?? 0 },
    started: new Date().toISOString(),
    // What the step's Container has of these, as the child got it.
    ...(typeof hostname === 'string' ? { hostname } : {}),
    ...(typeof workdir === 'string' ? { workdir } : {}),
    ...(Array.isArray(volumes) ? { volumes: volumes as Volume[] } : {}),
    config: config as Record<string, unknown>,
  }
  stateFile = join(runDir(), `${state.id}.json`)
  forgetAtExit()
  write(stateFile, state)
  if (claimFile) write(claimFile, { ...self(), id: state.id })
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

/** Parent, when the container has ended: remove its state file and give its name back. Safe to call again. */
export function forgetContainer(): void {
  for (const file of [stateFile, claimFile]) if (file) rmSync(file, { force: true })
  stateFile = claimFile = state = undefined
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

/** The --name claims in `dir` (see runDir): the name, its file, its container's id once known, and whether it still holds. */
export function readClaims(dir = runDir()): { name: string; file: string; id?: string; inUse: boolean }[] {
  return listNames(join(dir, 'names'))
    .filter((file) => !file.startsWith('.'))
    .map((file) => {
      const claim = readJson<Claim>(join(dir, 'names', file))
      return { name: file, file: join(dir, 'names', file), id: claim?.id, inUse: claim !== undefined && claimAlive(claim, dir) }
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

// A claim holds while its parent lives, or, once it has an id, while that container does.
function claimAlive(claim: Claim, dir = runDir()): boolean {
  if (alive(claim)) return true
  const state = claim.id ? readJson<ContainerState>(join(dir, `${claim.id}.json`)) : undefined
  return state !== undefined && statusOf(state) !== 'stale'
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

