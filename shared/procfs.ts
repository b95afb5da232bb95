// Reading processes from the host's /proc (proc(5)): what `ps` does.

import { readdirSync, readFileSync } from 'node:fs'

/** A process's command line as its argv. Empty if it is gone. */
export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1)
  } catch {
    return []
  }
}

/** A process's parent PID (from /proc/PID/stat), or 0 if it is gone. */
export function parentPid(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
  } catch {
    return 0
  }
}

/** PIDs of all processes whose argv matches `test`. */
export function findProcesses(test: (argv: string[]) => boolean): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((pid) => test(cmdline(pid)))
}

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
export async function waitFor<T>(find: () => T | undefined, timeoutMs = 10_000): Promise<T | undefined> {
  const deadline = Date.now() + scaled(timeoutMs)
  for (;;) {
    const found = find()
    if (found !== undefined || Date.now() > deadline) return found
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Whether a process is running: it exists and is not a zombie (state Z in /proc/PID/stat). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

/** A process's PID in each PID namespace it is in, the host's first (NSpid in /proc/PID/status). */
export function nsPids(pid: number): number[] {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^NSpid:\s*(.*)$/m)
    return line ? line[1].trim().split(/\s+/).map(Number) : []
  } catch {
    return []
  }
}

/** PIDs of every process below `root` (children, their children, ...), from the PPid of each process in /proc. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const parent = parentPid(Number(name))
    children.set(parent, [...(children.get(parent) ?? []), Number(name)])
  }
  const found: number[] = []
  for (let queue = [root]; queue.length; ) {
    for (const pid of children.get(queue.shift()!) ?? []) {
      found.push(pid)
      queue.push(pid)
    }
  }
  return found
}
