// What every step's verify.ts uses: run the step as a learner would, and
// print one line per claim, a green check or a red cross with what was
// expected and what came back.

import chalk from 'chalk'
import { $, type ProcessPromise } from 'zx'
import { join } from 'node:path'
import { repoDir } from './settings.ts'

/** The project's own tsx, so verify runs steps as `npx tsx` would, minus npx. */
export const tsx = join(repoDir, 'node_modules/.bin/tsx')

/** `tsx steps/<step> run <args...>` from the repo root; never throws on a non-zero exit. */
export function runStep(step: string, args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): ProcessPromise {
  const shell = $({ cwd: repoDir, nothrow: true, quiet: true, input: options.input, env: { ...process.env, ...options.env } })
  return shell`${tsx} ${'steps/' + step} run ${args}`
}

/** The command line a learner would type for the same run, for the report. */
export function shown(step: string, args: string[]): string {
  return `npx tsx steps/${step} run ${args.map((a) => (/^[\w./=:-]+$/.test(a) ? a : `'${a}'`)).join(' ')}`
}

/** Collects claims and reports them; `finish()` sets the exit code. */
export class Checks {
  failed = 0
  passed = 0

  constructor(title: string) {
    console.log(chalk.bold(title))
  }

  /** One claim: `pass` says whether it holds; `ran`, `expected` and `got` explain it. */
  ok(claim: string, pass: boolean, detail: { ran?: string; expected?: unknown; got?: unknown } = {}): boolean {
    if (pass) {
      this.passed++
      console.log(`${chalk.green('✔')} ${claim}`)
      if (detail.ran) console.log(chalk.dim(`    $ ${detail.ran}`))
    } else {
      this.failed++
      console.log(`${chalk.red('✘')} ${claim}`)
      if (detail.ran) console.log(`    ran:      ${detail.ran}`)
      if ('expected' in detail) console.log(`    expected: ${show(detail.expected)}`)
      if ('got' in detail) console.log(`    got:      ${show(detail.got)}`)
    }
    return pass
  }

  /** A claim that `got` equals `expected`. */
  equal(claim: string, got: unknown, expected: unknown, ran?: string): boolean {
    return this.ok(claim, JSON.stringify(got) === JSON.stringify(expected), { ran, expected, got })
  }

  /** Print the tally and set the exit code: non-zero if any claim failed. */
  finish(): void {
    const line = this.failed ? `${this.failed} of ${this.passed + this.failed} checks failed` : `all ${this.passed} checks passed`
    console.log(this.failed ? chalk.red(line) : chalk.green(line))
    process.exitCode = this.failed ? 1 : 0
  }
}

function show(value: unknown): string {
  const text = typeof value === 'string' ? value : JSON.stringify(value)
  return text.length > 400 ? `${text.slice(0, 400)}…` : text
}
