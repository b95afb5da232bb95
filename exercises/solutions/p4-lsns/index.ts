// Homework P4: a small lsns for one PID
//
// Goal: list the namespaces a process is in, with the inode number that
// names each one, the way `lsns -p PID` does. The kernel shows them as
// symbolic links in /proc/PID/ns: two processes are in the same namespace
// when their links read the same.
//
// Usage: npx tsx exercises/homework/p4-lsns <PID>

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
  let files: string[]
  try {
    files = readdirSync(`/proc/${pid}/ns`)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new UsageError(code === 'ENOENT' ? `no process ${pid}` : `/proc/${pid}/ns: ${code}`)
  }
  // pid_for_children and time_for_children are the namespaces of the
  // process's future children, not its own: lsns leaves them out too.
  return files.filter((file) => !file.endsWith('_for_children')).map((file) => {
    // The link reads `type:[inode]`, e.g. uts:[4026531838].
    const [, type, inode] = /^(\w+):\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/${file}`))!
    return { type, inode: Number(inode) }
  })
}

try {
  main(process.argv.slice(2))
} catch (err) {
  exitWithError(err, 'p4-lsns')
}
