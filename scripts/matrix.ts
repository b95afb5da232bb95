// npm run matrix [-- --steps 03,05,runc] [--write]
//
// The isolation matrix: run every probe inside every step's container, and
// in one of runc's for comparison, and print what still leaks, probes down,
// columns across. Compared with the table in notes/isolation-matrix.md (what
// each step is expected to fix); a cell that differs is marked `!` and the
// exit code is 1. --write puts the new table into that note instead.

import chalk from 'chalk'
import { parseArgs } from 'node:util'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { requireRoot } from '../shared/cli.ts'
import { PROBES } from './matrix/probes.ts'
import { RUNC } from './matrix/runc.ts'
import { allColumns, runMatrix } from './matrix/runner.ts'
import { readExpected, reason, renderTerminal, same, word, writeExpected } from './matrix/table.ts'

exitOnClosedPipe()

try {
  const { values } = parseArgs({
    options: { steps: { type: 'string' }, write: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) {
    console.log(`Usage: npm run matrix [-- --steps 03,05,runc] [--write]

Run ${PROBES.length} probes in a container of every step, and of runc, and print which still leak.
  --steps LIST  only these columns (step numbers or names, runc; comma-separated)
  --write       write the table into notes/isolation-matrix.md (all columns only)`)
    process.exit(0)
  }
  requireRoot()
  const columns = values.steps ? values.steps.split(',').map(findColumn) : allColumns()
  if (values.write && columns.length !== allColumns().length) throw new UsageError('--write needs every column: drop --steps')
  const started = Date.now()
  // Ctrl-C: stop the container in progress, then clean up as usual.
  const interrupted = new AbortController()
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort())
  const { cells, runs } = await runMatrix(columns, (line) => console.error(chalk.dim(line)), interrupted.signal)
  if (interrupted.signal.aborted) throw new UsageError('interrupted: stopped the probes and cleaned up', 130)
  const expected = readExpected().cells
  console.log(renderTerminal(cells, columns, values.write ? undefined : expected))
  console.log(chalk.dim(`${runs.length} container runs in ${((Date.now() - started) / 1000).toFixed(1)} s`))
  for (const probe of PROBES) {
    for (const column of columns) {
      const cell = cells[probe.id][column]
      if (word(cell) === 'error') console.log(`${chalk.yellow('error')} ${probe.id} at ${column}: ${reason(cell)}`)
    }
  }
  // A skipped column (no runc) is not compared: the table says why.
  const compared = columns.filter((column) => word(cells[PROBES[0].id][column]) !== 'skipped')
  if (values.write) {
    if (compared.length !== columns.length) throw new UsageError(`--write needs every column measured: ${reason(cells[PROBES[0].id][RUNC])}`)
    writeExpected(cells, columns)
    console.log('wrote the table into notes/isolation-matrix.md')
  } else {
    const show = (cell: Parameters<typeof word>[0]) => (word(cell) === 'n/a' ? `n/a (${reason(cell)})` : word(cell))
    const differ = PROBES.flatMap((p) => compared.filter((c) => !same(cells[p.id][c], expected[p.id]?.[c]))
      .map((c) => `${p.id} at ${c}: expected ${show(expected[p.id]?.[c])}, got ${show(cells[p.id][c])}`))
    for (const line of differ) console.log(`${chalk.red('!')} ${line}`)
    console.log(differ.length ? chalk.red(`${differ.length} cells differ from notes/isolation-matrix.md`) : chalk.green('as expected (notes/isolation-matrix.md)'))
    process.exitCode = differ.length ? 1 : 0
  }
} catch (err) {
  exitWithError(err)
}

function findColumn(n: string): string {
  const column = allColumns().find((name) => name.startsWith(n.padStart(2, '0')) || name === n)
  if (!column) throw new UsageError(`no column \`${n}\`: the columns are ${allColumns().join(', ')}`)
  return column
}
