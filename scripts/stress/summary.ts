// The stress run's report as text: a table per exit path, then the details
// of anything unexpected or left behind.

import chalk from 'chalk'
import { EXIT_PATHS, type Report } from './stress.ts'

/** The report as a table per exit path, then the details of anything unexpected. */
export function summary(report: Report): string {
  const lines = [
    `${'exit path'.padEnd(26)} ${'containers'.padStart(10)} ${'as expected'.padStart(12)} ${'leftovers'.padStart(10)}`,
  ]
  for (const path of EXIT_PATHS) {
    const runs = report.outcomes.filter((o) => o.path === path)
    const ok = runs.filter((o) => o.expected).length
    const left = runs.reduce((sum, o) => sum + o.leftovers.length, 0)
    const row = `${path.padEnd(26)} ${String(runs.length).padStart(10)} ${String(ok).padStart(12)} ${String(left).padStart(10)}`
    lines.push(ok === runs.length && left === 0 ? row : chalk.red(row))
  }
  const total = report.outcomes.length
  const ok = report.outcomes.filter((o) => o.expected).length
  lines.push(`${'all'.padEnd(26)} ${String(total).padStart(10)} ${String(ok).padStart(12)} ${String(report.outcomes.reduce((s, o) => s + o.leftovers.length, 0)).padStart(10)}`)
  for (const o of report.outcomes.filter((o) => !o.expected || o.leftovers.length)) {
    lines.push(chalk.red(`#${o.n} ${o.step} ${o.path}${o.traps ? ' (PID 1 traps it)' : ''}: ${o.why ?? ''}${o.leftovers.length ? ` left: ${o.leftovers.join(', ')}` : ''}`))
  }
  lines.push(report.final.length ? chalk.red(`left once all had ended: ${report.final.join(', ')}`) : chalk.green('once all had ended: nothing of this run left (mounts, cgroups, dirs, veths, leases, bridge, processes)'))
  if (report.finalClean.length) lines.push(`a last npm run clean removed: ${report.finalClean.join(', ')}`)
  if (report.others.length) lines.push(chalk.dim(`not this run's (other runs in progress): ${report.others.length} items`))
  const stops = report.outcomes.flatMap((o) => (o.stopMs !== undefined && o.path !== 'SIGKILL + npm run clean' ? [o.stopMs] : []))
  if (stops.length) lines.push(chalk.dim(`stop after a signal: median ${median(stops)} ms, max ${Math.max(...stops)} ms`))
  lines.push(chalk.dim(`${total} containers in ${report.seconds.toFixed(1)} s`))
  return lines.join('\n')
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}
