// Reading the host's files where a missing one is an answer, not an error:
// /proc entries of processes that may be gone, cgroup files, the state
// files a container removes as it ends.

import { readdirSync, readFileSync } from 'node:fs'

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
