// The parent's side of a container's life: re-running the step as `child`,
// waiting for it, passing signals on, and turning its end into an exit code.

import type { ChildProcess, StdioOptions } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, readSync, statSync, writeSync } from 'node:fs'
import * as nodeModule from 'node:module'
import { constants } from 'node:os'
import { join, resolve } from 'node:path'
import { UsageError } from './errors.ts'
import { spawnInNamespaces } from './namespaces.ts'
import { compileCacheDir } from './settings.ts'
import { claimName, forgetContainer, prepareRecord, recordStart } from './state.ts'
import { fcntl, F_GETFL, F_SETFL, O_NONBLOCK, reclaimTerminal } from './process.ts'
import type { TerminalRelay } from './terminal.ts'

// The child (see reexecChild) never exits: it execs. Node writes its compile
// cache at exit, so a child writes it here, while the cache's directory is
// still in view (before chroot or pivot_root). ES modules are all compiled
// before any of them runs, so by now the whole step is. (A namespace
// import: a Node too old to have it must get to checkNodeVersion's one line,
// not fail to link this module.)
if (process.argv[2] === 'child') nodeModule.flushCompileCache?.()

/** A short random id, as Docker's: 12 hex digits. Also the hostname. */
export function newContainerId(): string {
  return randomBytes(6).toString('hex')
}

/**
 * Re-run this very step as `<step> child <config>` in new namespaces, the
 * way Liz Rice's main.go re-runs /proc/self/exe: same Node binary, same
 * script. The config travels as one JSON argument. The child is plain
 * `node` on the step's .ts file, which Node runs by stripping its types:
 * started through tsx again, it would pay about 170 ms for the loader.
 * Once it has started, its state file says so (shared/state.ts).
 */
export function reexecChild(config: object, cloneFlags = 0, stdio: StdioOptions = 'inherit'): ChildProcess {
  prepareRecord()
  // Node's compile cache keeps the stripped and compiled modules between
  // runs: the child starts in about half the time (see README, What it costs).
  const env = { ...process.env, NODE_COMPILE_CACHE: compileCacheDir }
  const child = spawnInNamespaces(cloneFlags, process.execPath, [scriptFile(), 'child', JSON.stringify(config)], { stdio, env })
  // From now until it ends, `npm run ps` lists it (see shared/state.ts).
  if (child.pid) recordStart(config, child.pid)
  return child
}

// The file this program runs from: `npx tsx steps/04-pid-proc` names a
// directory, which tsx resolves to its index.ts, and node would not.
function scriptFile(script = resolve(process.argv[1])): string {
  return statSync(script).isDirectory() ? join(script, 'index.ts') : script
}

/** How long a container gets to stop after SIGINT/SIGTERM before SIGKILL. */
export const STOP_TIMEOUT_MS = 2000

/**
 * After SIGHUP, a terminal hung up (its window closed): 0.5 s. sudo, which
 * runs the step when the learner typed it without, sees its terminal go
 * too and SIGKILLs the step 2 s later (sudo's terminate_command): the
 * clean-up after the container must fit before that.
 */
export const HANGUP_TIMEOUT_MS = 500

/** The signals that ask a container to stop: Ctrl-C, kill's default, a closed terminal, Ctrl-\. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const

/** A stop signal that came while the parent was still setting up (see Cleanup). */
let stopRequested: NodeJS.Signals | undefined

/**
 * Wait for the container and return its exit code: its own code, or 128+N
 * if signal N killed it (as a shell reports it).
 *
 * SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to this process are passed on
 * (one that came during setup, at once). A PID 1 ignores signals it has no
 * handler for, so passing them on is not enough: if the container is still
 * there after STOP_TIMEOUT_MS (HANGUP_TIMEOUT_MS after SIGHUP), SIGKILL.
 * Afterwards the terminal, if any, comes back to us (see reclaimTerminal).
 *
 * With a `terminal` (steps 05 on, shared/terminal.ts), its relay runs
 * meanwhile, and the exit code comes once the container's last output is
 * written and our terminal is restored.
 */
export function waitForExit(child: ChildProcess, terminal?: TerminalRelay): Promise<number> {
  let killTimer: NodeJS.Timeout | undefined
  const forward = (signal: NodeJS.Signals) => {
    child.kill(signal)
    killTimer ??= setTimeout(() => child.kill('SIGKILL'), signal === 'SIGHUP' ? HANGUP_TIMEOUT_MS : STOP_TIMEOUT_MS)
  }
  for (const signal of STOP_SIGNALS) process.on(signal, forward)
  if (stopRequested) forward(stopRequested)
  const relayed = terminal?.relay(child)
  relayed?.catch(() => {}) // reported at the exit, below
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('exit', async (code, signal) => {
      clearTimeout(killTimer)
      for (const s of STOP_SIGNALS) process.off(s, forward)
      try {
        await relayed
      } catch (err) {
        return reject(err)
      }
      reclaimTerminal()
      resolve(code ?? 128 + constants.signals[signal!])
    })
  })
}

/** The child's end of the sync pipe: fd 3, given as the fourth stdio entry. */
export const SYNC_FD = 3

/** Stdio for a child that waits for the parent: the user's terminal, plus the sync pipe. */
export const STDIO_WITH_SYNC: StdioOptions = ['inherit', 'inherit', 'inherit', 'pipe']

/**
 * Parent: wait until the child's Node has started and loaded the step (it
 * says so on the sync pipe, in waitForParent). Memory is charged to the
 * cgroup a process is in when it allocates it, and Node's own start-up,
 * type stripping included, takes some 30 MB: moved in earlier, the child
 * would spend the container's --memory on Node, not on the command.
 */
export function childStarted(child: ChildProcess): Promise<void> {
  const pipe = child.stdio[SYNC_FD] as NodeJS.ReadableStream
  return new Promise((resolve, reject) => {
    const gone = () => reject(new UsageError('the container\'s process ended before it started (see its error above)'))
    child.once('exit', gone)
    pipe.once('data', () => {
      child.off('exit', gone)
      resolve()
    })
  })
}

/**
 * Parent: tell a child blocked in waitForParent() that it may go on, and
 * hand it what it could not know at its start (step 08: its address), as
 * one line of JSON; the pipe is closed after it.
 */
export function tellChild(child: ChildProcess, message: object = {}): void {
  const pipe = child.stdio[SYNC_FD] as NodeJS.WritableStream
  // If the child died first, the write fails; waitForExit reports how it ended.
  pipe.on('error', () => {})
  pipe.end(`${JSON.stringify(message)}\n`)
}

/**
 * Child: say that we have started, block until the parent has had its say
 * on the sync pipe (runc does the same), then close it so the command never inherits it, and return
 * what the parent said. If the parent went away first, stop: there is no
 * container to finish setting up.
 */
export function waitForParent<T = object>(): T {
  fcntl(SYNC_FD, F_SETFL, fcntl(SYNC_FD, F_GETFL) & ~O_NONBLOCK)
  writeSync(SYNC_FD, 'started\n') // see childStarted
  // Read until the parent closes its end (a read of 0 bytes).
  const buffer = Buffer.alloc(4096)
  let said = ''
  for (let n = readSync(SYNC_FD, buffer); n > 0; n = readSync(SYNC_FD, buffer)) said += buffer.toString('utf8', 0, n)
  closeSync(SYNC_FD)
  if (!said.endsWith('\n')) throw new UsageError('the parent went away while setting up the container')
  return JSON.parse(said) as T
}

/**
 * Clean-up actions for the parent, like Go's `defer`: each one registered
 * right after the thing it undoes is made, all run last-in first-out in
 * run()'s `finally`, every one even if another fails.
 *
 * From `new Cleanup()` until run() is done, a stop signal cannot end this
 * process half-way (Node's default for SIGINT and SIGTERM is to exit at
 * once): one that comes during setup is kept for waitForExit, one that
 * comes during the clean-up is ignored. And run() waits without blocking,
 * so the process still answers signals meanwhile: `npx tsx` SIGKILLs a
 * program that does not acknowledge Ctrl-C within about 60 ms, which would
 * cut a clean-up short.
 */
export class Cleanup {
  private actions: (() => unknown)[] = []
  private onSignal = (signal: NodeJS.Signals) => {
    stopRequested ??= signal
  }

  constructor() {
    // The container's --name is taken before anything of it is made, and
    // given back last, with its state file (shared/state.ts).
    claimName()
    this.defer(forgetContainer)
    for (const signal of STOP_SIGNALS) process.on(signal, this.onSignal)
  }

  /** Undo something at the end, however the container ends (an action may return a promise). */
  defer(action: () => unknown): void {
    this.actions.push(action)
  }

  /** Run the actions, newest first, each to its end; rethrow the first error after all ran. */
  async run(): Promise<void> {
    const errors: unknown[] = []
    for (const action of this.actions.reverse()) {
      try {
        await action()
      } catch (err) {
        errors.push(err)
      }
    }
    this.actions = []
    for (const signal of STOP_SIGNALS) process.off(signal, this.onSignal)
    if (errors.length) throw errors[0]
  }
}
