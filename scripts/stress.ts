// npm run stress [-- --count N] [--concurrency N]
//
// Start N containers (default 200) of steps 04-10, a few at a time, and end
// them every way a container can end: exit 0, exit 3, Ctrl-C, SIGTERM, and
// SIGKILL followed by `npm run clean`. Then look for anything left behind.
// Prints, per exit path, how many ran, how many ended as expected, and what
// was left; the exit code is 1 if anything was unexpected or left.

import chalk from 'chalk'
import { parseArgs } from 'node:util'
import { parseCount } from '../shared/cgroups.ts'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { requireRoot } from '../shared/cli.ts'
import { CONCURRENCY, EXIT_PATHS, runStress, STRESS_STEPS } from './stress/stress.ts'
import { summary } from './stress/summary.ts'

exitOnClosedPipe()

try {
  const { values } = parseArgs({
    options: {
      count: { type: 'string' },
      concurrency: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(`Usage: npm run stress [-- --count N] [--concurrency N] [--verbose]

Run N containers (default 200) of ${STRESS_STEPS.join(', ')}, ${CONCURRENCY} at a time,
ended by: ${EXIT_PATHS.join(', ')}.
Then check that nothing is left: mounts, cgroups, container dirs, veths,
leases, the bridge, processes.`)
    process.exit(0)
  }
  requireRoot()
  const count = parseCount(values.count ?? '200', '--count')!
  const concurrency = parseCount(values.concurrency ?? String(CONCURRENCY), '--concurrency')!
  const report = await runStress({ count, concurrency, log: values.verbose ? (line) => console.error(chalk.dim(line)) : undefined })
  console.log(summary(report))
  const bad = report.outcomes.filter((o) => !o.expected || o.leftovers.length).length + report.final.length
  process.exitCode = bad ? 1 : 0
} catch (err) {
  exitWithError(err)
}
