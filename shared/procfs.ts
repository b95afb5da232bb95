// Reading processes from the host's /proc (proc(5)): what `ps` does.
// What only the verify scripts, tests and tools need is in scripts/lib/procfs.ts.

import { readFileSync } from 'node:fs'

/** Whether a process is running: it exists and is not a zombie (state Z in /proc/PID/stat). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
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

/**
 * When a process started, in clock ticks after boot (field 22 of
 * /proc/PID/stat), or undefined if it is gone. With its PID, it names one
 * process for good: a PID is reused once its process is gone, and the
 * new process has a later start.
 */
export function startTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command, which is in parentheses and may hold spaces: state is field 3, starttime 22.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19])
  } catch {
    return undefined
  }
}
