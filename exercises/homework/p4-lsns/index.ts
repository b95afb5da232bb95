// Homework P4: a small lsns for one PID
//
// Goal: list the namespaces a process is in, with the inode number that
// names each one, the way `lsns -p PID` does. The kernel shows them as
// symbolic links in /proc/PID/ns: two processes are in the same namespace
// when their links read the same.
//
// Usage: npx tsx exercises/homework/p4-lsns <PID>
//
// Homework: fill in the TODO, then check with `npm run homework -- p4`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { readdirSync, readlinkSync } from 'node:fs'
import { exitWithError, UsageError } from '../../../shared/errors.ts'

/** One namespace of a process: its type (uts, pid…) and its inode number. */
interface Namespace {
  type: string
  inode: number
}

function main(argv: string[]): void {
  if (argv.length !== 1 || !/^[1-9]\d*$/.test(argv[0])) throw new UsageError('usage: npx tsx exercises/homework/p4-lsns <PID>')
  const pid = Number(argv[0])
  for (const ns of namespacesOf(pid)) console.log(`${ns.type.padEnd(7)} ${ns.inode}`)
}

/** The namespaces of `pid`, from the links in /proc/PID/ns (namespaces(7)). */
function namespacesOf(pid: number): Namespace[] {
  // TODO: list /proc/PID/ns and read each link: it reads `type:[inode]`.
  // Two of the links are not this process's own namespaces but its future
  // children's: which, and should they be listed? A PID that does not
  // exist: one line on stderr and a non-zero exit (throw a UsageError).
  return []
}

try {
  main(process.argv.slice(2))
} catch (err) {
  exitWithError(err, 'p4-lsns')
}
