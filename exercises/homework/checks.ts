// What the homework checkers (exercises/homework/*/check.ts) share: where
// the learner's files are, running the learner's program as a learner
// would, temporary directories that go away, and lines for a person.

import chalk from 'chalk'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { $, type ProcessPromise } from 'zx'
import { PREFIX, repoDir } from '../../shared/settings.ts'
import { recordResult } from '../../scripts/lib/results.ts'
import { tsx } from '../../scripts/lib/verify.ts'

/**
 * The directory with the files to check: exercises/homework/<slug>, or
 * another with the same files when CFS_HOMEWORK_TARGET says so (CI points
 * it at exercises/solutions/<slug>). Relative to the repo root.
 */
export function target(slug: string): string {
  return process.env.CFS_HOMEWORK_TARGET || `exercises/homework/${slug}`
}

/** A file of the target, read as text ('' if it is missing). */
export function readTarget(slug: string, file: string): string {
  try {
    return readFileSync(join(repoDir, target(slug), file), 'utf8')
  } catch {
    return ''
  }
}

/** Run the learner's program, `tsx <dir> <args…>`, from the repo root; never throws on a non-zero exit. */
export function runProgram(dir: string, args: string[], options: { input?: string; prefix?: string[]; timeoutMs?: number } = {}): ProcessPromise {
  const shell = $({ cwd: repoDir, nothrow: true, quiet: true, input: options.input, timeout: options.timeoutMs ?? 60_000 })
  return shell`${options.prefix ?? []} ${tsx} ${dir} ${args}`
}

/** The command line for the report. */
export function shownProgram(dir: string, args: string[]): string {
  return `npx tsx ${dir} ${args.map((a) => (/^[\w./=:@%+-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ')}`
}

/** A directory under /tmp with the project's prefix, removed when the checker exits. */
export function tempDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `${PREFIX}-${name}-`))
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A line for what only a person can judge: marked ☛, recorded (CFS_VERIFY_JSON) for the checker to count, never a pass or a failure. */
export function forAPerson(what: string): void {
  console.log(`${chalk.yellow('☛')} for a person to read: ${what}`)
  recordResult({ person: what })
}

/** The text under a `## heading` of a markdown answers file, up to the next heading; '' if none. */
export function answerUnder(markdown: string, heading: string): string {
  const lines = markdown.split('\n')
  const start = lines.findIndex((line) => line.startsWith('## ') && line.toLowerCase().includes(heading.toLowerCase()))
  if (start < 0) return ''
  const end = lines.findIndex((line, i) => i > start && line.startsWith('## '))
  // Comments (<!-- … -->) are the question's instructions, not the answer.
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n').replace(/<!--[\s\S]*?-->/g, '').trim()
}
