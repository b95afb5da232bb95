// How long the verify scripts and tests wait for something to happen.

/**
 * CFS_WAIT_SCALE=N (a number, default 1) multiplies how long checks wait
 * for something to happen: every waitFor, and the deadlines verify scripts
 * pass through scaled(). For a machine far slower than the one the times
 * were chosen on: the cgroup v2 VM test sets it under qemu's emulation.
 * Only the waiting changes; what a check asserts does not.
 */
export const waitScale = (() => {
  const value = process.env.CFS_WAIT_SCALE
  if (value === undefined || value === '') return 1
  const n = Number(value)
  if (!Number.isFinite(n) || n < 1) throw new Error(`CFS_WAIT_SCALE=${value}: expected a number of at least 1`)
  return n
})()

/** `ms` times CFS_WAIT_SCALE. */
export function scaled(ms: number): number {
  return ms * waitScale
}

/** Wait until `find` returns something (or `timeoutMs` × CFS_WAIT_SCALE passes); returns the last result. */
export function waitFor<T>(find: () => T | undefined, timeoutMs = 10_000): Promise<T | undefined> {
  return pollFor(find, scaled(timeoutMs))
}

/** As waitFor, for exactly `timeoutMs`: a deadline a user gave (npm run stop -t), not a check's. */
export async function pollFor<T>(find: () => T | undefined, timeoutMs: number): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const found = find()
    if (found !== undefined || Date.now() > deadline) return found
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
