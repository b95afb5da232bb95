// Homework P6B: a FIFO between two containers
//
// Goal: an IPC channel between two containers of step 07, neither of which
// can see the other's files: a FIFO (a named pipe) made on the host, opened
// there, and handed to each container as an open file: to A as its stdin,
// to B as its stdout. Namespaces hide names (paths); an open file
// descriptor goes through fork, exec and into any namespace. B writes the
// message, A reads it and prints it.
//
// Usage: npx tsx exercises/homework/p6b-fifo <dir> <message>
//
// Makes the FIFO in <dir>, prints `A got: <message>`, removes the FIFO.
//
// Homework: fill in the TODO, then check with `npm run homework -- p6b`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { $ } from 'zx'
import { requireRoot } from '../../../shared/cli.ts'
import { exitWithError, UsageError } from '../../../shared/errors.ts'
import { repoDir } from '../../../shared/settings.ts'
import { tsx } from '../../../scripts/lib/verify.ts'

const step = 'steps/07-overlay'

async function main(argv: string[]): Promise<void> {
  if (argv.length !== 2) throw new UsageError('usage: npx tsx exercises/homework/p6b-fifo <dir> <message>')
  requireRoot()
  const [dir, message] = argv
  const fifo = join(dir, 'queue')
  const shell = $({ cwd: repoDir, quiet: true, nothrow: true, timeout: 30_000 })
  // TODO: make the FIFO (mkfifo). Then run two containers (`shell` runs
  // `${tsx} ${step} run …`): A reads one line from its stdin and prints
  // `A got: <line>`; B writes the message to its stdout. A's stdin and B's
  // stdout are the FIFO, which neither container can see. Opening one
  // end blocks until the other end is open, so do not await A before B has
  // started. Print what A printed; exit non-zero if either failed; remove
  // the FIFO however it ends.
  throw new UsageError('not written yet: see the TODO in main()')
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
