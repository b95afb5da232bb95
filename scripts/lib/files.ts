// Reading the host's files where a missing one is an answer, not an error:
// /proc entries of processes that may be gone, cgroup files, the state
// files a container removes as it ends; and whether a program is installed.

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

/** A file's text without the whitespace around it; `fallback` if it cannot be read (gone, never there). */
export function readText(path: string, fallback = ''): string {
  try {
    return readFileSync(path, 'utf8').trim()
  } catch {
    return fallback
  }
}

/** The names in a directory; none if it cannot be read. */
export function listDir(dir: string): string[] {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

/** Whether `command` is a file in one of PATH's directories (installed, as far as a shell would find it). */
export function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, command)))
}
