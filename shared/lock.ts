// A lock shared by all the project's processes (the address leases, the
// container names): a directory, since mkdir(2) either creates it or fails.
// One older than 10 s is left over from a crash, and is taken over; npm run
// clean removes it too.

import { mkdirSync, rmdirSync, statSync } from 'node:fs'
import { UsageError } from './errors.ts'

/** How old a lock must be to count as left over from a crash. */
export const STALE_LOCK_MS = 10_000

/** Whether a lock is there and left over from a crash (one checked while its holder lets go is not). */
export function isStaleLock(dir: string): boolean {
  const stat = statSync(dir, { throwIfNoEntry: false })
  return stat !== undefined && Date.now() - stat.mtimeMs > STALE_LOCK_MS
}

// Take the lock at `dir` (its parent must exist), waiting 5 ms at a time, 15 s at most.
function acquire(dir: string): void {
  const deadline = Date.now() + 15_000
  for (;;) {
    try {
      mkdirSync(dir)
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      try {
        if (isStaleLock(dir)) rmdirSync(dir)
      } catch {}
      if (Date.now() > deadline) throw new UsageError(`timed out waiting for ${dir} (npm run clean removes a stale one)`)
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5) // sleep 5 ms: the holder is another process
    }
  }
}

/** Run `fn` holding the lock at `dir`. */
export function withLockSync<T>(dir: string, fn: () => T): T {
  acquire(dir)
  try {
    return fn()
  } finally {
    rmdirSync(dir)
  }
}

/** Run `fn`, which may wait on other programs, holding the lock at `dir`. */
export async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  acquire(dir)
  try {
    return await fn()
  } finally {
    rmdirSync(dir)
  }
}
