// npm run homework                   list the homework problems and who checks what
// npm run homework -- p1a       check exercises/homework/p1a-proc with its check.ts
// npm run homework -- p1a --hint     the next hint for it
// npm run homework -- p2 --show after checking, what the kernel did (P2 only)
// npm run homework -- p1a --target exercises/solutions/p1a-proc
//                                    check another directory with the same files (CI: the model solutions)

import chalk from 'chalk'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { homework } from '../exercises/hints.ts'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { checkNodeVersion, requireRoot } from '../shared/cli.ts'
import { repoDir } from '../shared/settings.ts'
import { printNextHint, printVerdict, runChecks } from './checker.ts'

exitOnClosedPipe()

const usage = `Usage: npm run homework [-- NAME [--hint | --show] [--target DIR]]

  (nothing)      list the problems, and what a person has to judge in each
  NAME           check exercises/homework/<problem> (needs root: re-runs itself under sudo); NAME is p1a, p1b, p1b-userns, p2, p3, p4, p5, p6a, p6b or p6c
  NAME --hint    show the next hint
  NAME --show    (p2) also print what the kernel did
  --target DIR   check DIR instead (same file names), e.g. exercises/solutions/p1a-proc`

try {
  checkNodeVersion()
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { hint: { type: 'boolean' }, show: { type: 'boolean' }, target: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) {
    console.log(usage)
  } else if (positionals.length === 0) {
    list()
  } else {
    if (positionals.length > 1) throw new UsageError(`one problem at a time, not ${positionals.join(' ')} (see --help)`)
    const name = positionals[0].toLowerCase()
    const problem = homework[name] ?? Object.values(homework).find((p) => p.slug === name)
    if (!problem) throw new UsageError(`no homework \`${positionals[0]}\`: they are ${Object.keys(homework).join(', ')}`)
    const key = Object.keys(homework).find((k) => homework[k] === problem)!
    if (values.hint) printNextHint(key, problem)
    else await check(key, values.target, values.show === true)
  }
} catch (err) {
  exitWithError(err)
}

async function check(key: string, targetDir: string | undefined, show: boolean): Promise<void> {
  const problem = homework[key]
  const target = targetDir?.replace(/\/+$/, '') ?? `exercises/homework/${problem.slug}`
  if (!existsSync(join(repoDir, target, problem.file))) throw new UsageError(`${target}/${problem.file} does not exist`)
  requireRoot()
  console.log(chalk.dim(`Checking ${target} (the problem: exercises/homework/${problem.slug}/README.md):\n`))
  const tally = await runChecks(`exercises/homework/${problem.slug}/check.ts`, {
    CFS_HOMEWORK_TARGET: target,
    ...(show ? { CFS_HOMEWORK_SHOW: '1' } : {}),
  })
  printVerdict(`homework ${key}`, tally, problem.person
    ? `The machine is done; a person still has to read: ${problem.person}.`
    : 'The machine decides all of this one: done.')
  process.exitCode = tally.failed === 0 && tally.passed > 0 && tally.exitCode === 0 && !tally.timedOut ? 0 : 1
}

function list(): void {
  const width = Math.max(...Object.keys(homework).map((key) => key.length))
  for (const [key, problem] of Object.entries(homework)) {
    const who = problem.person ? chalk.yellow(`machine + a person (${problem.person.split(':')[0]})`) : chalk.green('machine')
    console.log(`${key.padEnd(width)} ${problem.title.padEnd(80)} ${who}`)
  }
  console.log(chalk.dim('\nnpm run homework -- NAME checks one; --hint shows a hint. See exercises/homework/README.md.'))
}
