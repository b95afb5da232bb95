// What `npm run exercise` and `npm run homework` share: finding an item by a
// short name, running its checks as a learner would see them, the verdict
// line, and showing hints one at a time.

import chalk from 'chalk'
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Exercise } from '../exercises/hints.ts'
import { repoDir } from '../shared/settings.ts'
import { handBack, userStateDir } from './lib/owner.ts'
import { forwardResults, readResults, resultsFile, sortResults } from './lib/results.ts'
import { stopDescendants, tsx } from './lib/verify.ts'

/** How a run of checks came out. */
export interface Tally {
  passed: number
  failed: number
  /** What only a person can judge (the lines marked ☛). */
  person: number
  exitCode: number | null
  timedOut: boolean
}

/**
 * Run a check script (a verify.ts or a homework check.ts) from the repo root
 * with tsx, its output passed through as it comes, and count its claims and
 * what it leaves to a person, from the results it records (CFS_VERIFY_JSON,
 * see lib/results.ts; passed on to this process's own, if set). Ctrl-C or
 * the time limit stops it and all it started, as Ctrl-C on a step would, so
 * nothing is left behind.
 */
export async function runChecks(script: string, env: NodeJS.ProcessEnv, timeoutMs = 10 * 60_000): Promise<Tally> {
  const tally: Tally = { passed: 0, failed: 0, person: 0, exitCode: null, timedOut: false }
  const results = resultsFile()
  const child = spawn(tsx, [script], {
    cwd: repoDir,
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, FORCE_COLOR: process.env.FORCE_COLOR ?? (process.stdout.isTTY ? '1' : '0'), ...env, CFS_VERIFY_JSON: results.file },
  })
  const stop = () => {
    stopDescendants(child.pid!)
    child.kill('SIGKILL')
  }
  const timer = setTimeout(() => {
    tally.timedOut = true
    stop()
  }, timeoutMs)
  const interrupt = () => stop()
  process.on('SIGINT', interrupt)
  process.on('SIGTERM', interrupt)
  tally.exitCode = await new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
  clearTimeout(timer)
  process.off('SIGINT', interrupt)
  process.off('SIGTERM', interrupt)
  const { claims, person } = sortResults(readResults(results.file))
  forwardResults(results.file)
  results.remove()
  return { ...tally, passed: claims.filter((c) => c.pass).length, failed: claims.filter((c) => !c.pass).length, person: person.length }
}

/** True if the checks prove the work done: some checks, none failed, exit 0. */
export function done(tally: Tally): boolean {
  return tally.passed > 0 && tally.failed === 0 && tally.exitCode === 0 && !tally.timedOut
}

/** The one-line verdict after the checks, and what to do next. */
export function printVerdict(what: string, tally: Tally, next: string): void {
  const total = tally.passed + tally.failed
  console.log()
  if (tally.timedOut) {
    console.log(chalk.red(`✘ ${what}: the checks took too long and were stopped (${tally.passed} of ${total} passed so far).`))
  } else if (done(tally)) {
    console.log(chalk.green(`✔ ${what}: all ${total} checks pass.`) + (tally.person ? chalk.yellow(` ${tally.person} thing(s) marked ☛ need a person to read.`) : ''))
  } else if (total === 0) {
    console.log(chalk.red(`✘ ${what}: the checks did not run (exit ${tally.exitCode}); see the error above.`))
  } else {
    console.log(chalk.red(`✘ ${what}: ${tally.passed} of ${total} checks pass${tally.exitCode !== 0 && tally.failed === 0 ? `, but the checker exited ${tally.exitCode}` : ''}.`))
  }
  console.log(done(tally) ? next : 'Run with --hint for a hint.')
}

/**
 * Print the next hint for `key` (the first one the first time), with the
 * title and man pages; remembers how far the learner got in their own
 * state directory (see userStateDir), never in the checkout.
 */
export function printNextHint(key: string, item: Exercise): void {
  const hintState = join(userStateDir(), 'hints.json')
  let seen: Record<string, number> = {}
  try {
    seen = JSON.parse(readFileSync(hintState, 'utf8')) as Record<string, number>
  } catch {}
  const index = Math.min(seen[key] ?? 0, item.hints.length - 1)
  console.log(chalk.bold(`${key}: ${item.title}`))
  console.log(chalk.dim(`man pages: ${item.man.join(', ')}`))
  console.log(`hint ${index + 1} of ${item.hints.length}: ${item.hints[index]}`)
  if (index === item.hints.length - 1) console.log(chalk.dim('That was the last hint.'))
  else console.log(chalk.dim('Run --hint again for the next one.'))
  seen[key] = index + 1
  try {
    mkdirSync(join(hintState, '..'), { recursive: true })
    writeFileSync(hintState, `${JSON.stringify(seen, null, 2)}\n`)
    handBack(join(hintState, '..'))
  } catch (err) {
    console.log(chalk.yellow(`(could not save how far you got, so the next --hint shows this one again: ${(err as Error).message})`))
  }
}
