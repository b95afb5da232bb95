// Finding processes in the host's /proc (proc(5)), for the verify scripts,
// tests and tools: by their argv, their parent, their PID namespaces.
// Whether one is running is shared/procfs.ts's isRunning, which steps use.

import { readdirSync, readFileSync } from 'node:fs'
import { parentPid } from '../../shared/procfs.ts'

/** A process's command line as its argv. Empty if it is gone. */
export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1)
  } catch {
    return []
  }
}

export { parentPid } from '../../shared/procfs.ts'

/** PIDs of all processes whose argv matches `test`. */
export function findProcesses(test: (argv: string[]) => boolean): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((pid) => test(cmdline(pid)))
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

/**
 * PIDs of every process below `roots` (children, their children, ...), from
 * the PPid of each process in /proc; not the roots themselves. More than
 * one root: a process already found keeps its children in the tree after
 * its parent is gone and it was reparented (to init, or a subreaper).
 */
export function descendants(roots: number | Iterable<number>): number[] {
  const children = new Map<number, number[]>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const parent = parentPid(Number(name))
    children.set(parent, [...(children.get(parent) ?? []), Number(name)])
  }
  const start = new Set(typeof roots === 'number' ? [roots] : roots)
  const found = new Set<number>()
  for (const queue = [...start]; queue.length;) {
    for (const pid of children.get(queue.shift()!) ?? []) {
      if (found.has(pid) || start.has(pid)) continue
      found.add(pid)
      queue.push(pid)
    }
  }
  return [...found]
}
