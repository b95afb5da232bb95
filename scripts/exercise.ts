// npm run exercise                  list the exercises and how many TODOs each has left
// npm run exercise -- 04       check exercises/04-pid-proc with the step's own verify.ts
// npm run exercise -- 04 --hint     the next hint for it
//
// The check is the step's verify.ts, pointed at the learner's file through
// CFS_VERIFY_TARGET (see stepPath() in scripts/lib/verify.ts): the same claims
// the workshop's own step has to pass.

import chalk from 'chalk'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { exercises } from '../exercises/hints.ts'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { checkNodeVersion, requireRoot } from '../shared/cli.ts'
import { repoDir } from '../shared/settings.ts'
import { printNextHint, printVerdict, runChecks } from './checker.ts'

exitOnClosedPipe()

const usage = `Usage: npm run exercise [-- NN [--hint]]

  (nothing)   list the exercises and how many TODOs are left in each
  NN          check exercises/NN-name with steps/NN-name/verify.ts (needs root: re-runs itself under sudo)
  NN --hint   show the next hint for exercise NN`

try {
  checkNodeVersion()
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { hint: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } })
  const slugs = readdirSync(join(repoDir, 'exercises')).filter((name) => /^\d\d-/.test(name)).sort()
  if (values.help) {
    console.log(usage)
  } else if (positionals.length === 0) {
    list(slugs)
  } else {
    if (positionals.length > 1) throw new UsageError(`one exercise at a time, not ${positionals.join(' ')} (see --help)`)
    const slug = slugs.find((name) => name.startsWith(positionals[0].padStart(2, '0')) || name === positionals[0])
    if (!slug || !exercises[slug]) throw new UsageError(`no exercise \`${positionals[0]}\`: they are ${slugs.join(', ')}`)
    if (values.hint) printNextHint(slug, exercises[slug])
    else await check(slug, slugs)
  }
} catch (err) {
  exitWithError(err)
}

async function check(slug: string, slugs: string[]): Promise<void> {
  const verify = `steps/${slug}/verify.ts`
  if (!existsSync(join(repoDir, verify))) {
    throw new UsageError(`${verify} does not exist yet, so exercise ${slug} has no automatic check: compare your file with steps/${slug}/index.ts`)
  }
  if (readFileSync(join(repoDir, 'steps', slug, 'index.ts'), 'utf8').includes('requireRoot()')) requireRoot()
  console.log(chalk.dim(`Checking exercises/${slug}/index.ts with ${verify}:\n`))
  const tally = await runChecks(verify, { CFS_VERIFY_TARGET: `exercises/${slug}` })
  const next = slugs[slugs.indexOf(slug) + 1]
  printVerdict(`exercise ${slug}`, tally, `Compare with the workshop's version: npm run diff -- ${slug.slice(0, 2)} shows what the step adds, ` +
    `diff exercises/${slug}/index.ts steps/${slug}/index.ts what you wrote differently.${next ? ` Next: npm run exercise -- ${next.slice(0, 2)}` : ''}`)
  process.exitCode = tally.failed === 0 && tally.passed > 0 && tally.exitCode === 0 && !tally.timedOut ? 0 : 1
}

function list(slugs: string[]): void {
  for (const slug of slugs) {
    const todos = readFileSync(join(repoDir, 'exercises', slug, 'index.ts'), 'utf8').split('\n').filter((line) => line.includes('// TODO:')).length
    const state = todos ? chalk.yellow(`${todos} TODO${todos > 1 ? 's' : ''} left`) : chalk.green('no TODO left: check it')
    console.log(`${slug.padEnd(12)} ${(exercises[slug]?.title ?? '').padEnd(50)} ${state}`)
  }
  console.log(chalk.dim('\nnpm run exercise -- NN checks one; --hint shows a hint. See exercises/README.md.'))
}
