// npm run matrix [-- --steps 03,05] [--write]
//
// The isolation matrix: run every probe inside every step's container and
// print what still leaks, probes down, steps across. Compared with the table
// in notes/isolation-matrix.md (what each step is expected to fix); a cell
// that differs is marked `!` and the exit code is 1. --write puts the new
// table into that note instead.

import chalk from 'chalk'
import { parseArgs } from 'node:util'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { requireRoot } from '../shared/cli.ts'
import { PROBES } from './matrix/probes.ts'
import { allSteps, runMatrix } from './matrix/runner.ts'
import { readExpected, reason, renderTerminal, same, word, writeExpected } from './matrix/table.ts'

exitOnClosedPipe()

try {
  const { values } = parseArgs({
    options: { steps: { type: 'string' }, write: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) {
    console.log(`Usage: npm run matrix [-- --steps 03,05] [--write]

Run ${PROBES.length} probes in a container of every step and print which still leak.
  --steps LIST  only these steps (numbers or names, comma-separated)
  --write       write the table into notes/isolation-matrix.md (all steps only)`)
    process.exit(0)
  }
  requireRoot()
  const steps = values.steps ? values.steps.split(',').map(findStep) : allSteps()
  if (values.write && steps.length !== allSteps().length) throw new UsageError('--write needs every step: drop --steps')
  const started = Date.now()
  // Ctrl-C: stop the container in progress, then clean up as usual.
  const interrupted = new AbortController()
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => interrupted.abort())
  const { cells, runs } = await runMatrix(steps, (line) => console.error(chalk.dim(line)), interrupted.signal)
  if (interrupted.signal.aborted) throw new UsageError('interrupted: stopped the probes and cleaned up', 130)
  const expected = readExpected().cells
  console.log(renderTerminal(cells, steps, values.write ? undefined : expected))
  console.log(chalk.dim(`${runs.length} container runs in ${((Date.now() - started) / 1000).toFixed(1)} s`))
  for (const probe of PROBES) {
    for (const step of steps) {
      const cell = cells[probe.id][step]
      if (word(cell) === 'error') console.log(`${chalk.yellow('error')} ${probe.id} at ${step}: ${reason(cell)}`)
    }
  }
  if (values.write) {
    writeExpected(cells, steps)
    console.log('wrote the table into notes/isolation-matrix.md')
  } else {
    const show = (cell: Parameters<typeof word>[0]) => (word(cell) === 'n/a' ? `n/a (${reason(cell)})` : word(cell))
    const differ = PROBES.flatMap((p) => steps.filter((s) => !same(cells[p.id][s], expected[p.id]?.[s]))
      .map((s) => `${p.id} at ${s}: expected ${show(expected[p.id]?.[s])}, got ${show(cells[p.id][s])}`))
    for (const line of differ) console.log(`${chalk.red('!')} ${line}`)
    console.log(differ.length ? chalk.red(`${differ.length} cells differ from notes/isolation-matrix.md`) : chalk.green('as expected (notes/isolation-matrix.md)'))
    process.exitCode = differ.length ? 1 : 0
  }
} catch (err) {
  exitWithError(err)
}

function findStep(n: string): string {
  const step = allSteps().find((name) => name.startsWith(n.padStart(2, '0')) || name === n)
  if (!step) throw new UsageError(`no step \`${n}\`: the steps are ${allSteps().join(', ')}`)
  return step
}
