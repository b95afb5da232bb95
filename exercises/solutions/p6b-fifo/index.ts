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
  await shell`mkfifo ${fifo}`
  try {
    // The shell opens the FIFO (`<` and `>`) before it runs the step. Opening
    // one end blocks until the other end is opened too, so both start at once.
    const reader = shell`${tsx} ${step} run sh -c ${'read line; echo "A got: $line"'} < ${fifo}`
    const writer = shell`${tsx} ${step} run echo ${message} > ${fifo}`
    const [a, b] = await Promise.all([reader, writer])
    process.stdout.write(a.stdout)
    process.exitCode = a.exitCode === 0 && b.exitCode === 0 ? 0 : 1
  } finally {
    rmSync(fifo, { force: true })
  }
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
