// npm run diff -- 03 04      (or: npm run diff -- 04, against the step before)
//
// Show what one step adds to the step before: `diff -u` of their index.ts.

import chalk from 'chalk'
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { checkNodeVersion } from '../shared/cli.ts'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { repoDir } from '../shared/settings.ts'

exitOnClosedPipe()

try {
  checkNodeVersion()
  const steps = readdirSync(join(repoDir, 'steps')).filter((name) => /^\d\d-/.test(name)).sort()
  const find = (n: string) => {
    const step = steps.find((name) => name.startsWith(n.padStart(2, '0')) || name === n)
    if (!step) throw new UsageError(`no step \`${n}\`: the steps are ${steps.join(', ')}`)
    return step
  }
  const args = process.argv.slice(2)
  if (args.length < 1 || args.length > 2) throw new UsageError('usage: npm run diff -- [FROM] TO   (e.g. npm run diff -- 03 04)')
  const to = find(args[args.length - 1])
  const from = args.length === 2 ? find(args[0]) : steps[steps.indexOf(to) - 1]
  if (!from) throw new UsageError(`${to} is the first step: nothing comes before it`)
  const result = spawnSync('diff', ['-u', `steps/${from}/index.ts`, `steps/${to}/index.ts`], { cwd: repoDir, encoding: 'utf8' })
  for (const line of result.stdout.split('\n')) {
    if (line.startsWith('+') && !line.startsWith('+++')) console.log(chalk.green(line))
    else if (line.startsWith('-') && !line.startsWith('---')) console.log(chalk.red(line))
    else if (line.startsWith('@@')) console.log(chalk.cyan(line))
    else console.log(line)
  }
  const changed = result.stdout.split('\n').filter((l) => /^[+-](?![+-]{2})/.test(l)).length
  console.log(chalk.dim(`${changed} changed lines from ${from} to ${to}`))
  // A step may bring a file of its own beside index.ts (10's policy.ts): part of its one idea.
  const files = (step: string) => readdirSync(join(repoDir, 'steps', step)).filter((name) => name !== 'verify.ts')
  const added = files(to).filter((name) => !files(from).includes(name))
  if (added.length) console.log(chalk.dim(`new in ${to}: ${added.map((name) => `steps/${to}/${name}`).join(', ')} (read it beside the diff)`))
} catch (err) {
  exitWithError(err)
}
