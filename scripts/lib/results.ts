// Check results as data. With CFS_VERIFY_JSON=<file>, a verify script (its
// Checks) and a homework checker (forAPerson too) append to <file> one JSON
// line per claim, {claim, pass, ran, expected, got}, one per thing only a
// person can judge, {person}, and their tally last, {passed, failed}. What
// they print stays as it is, for people; the tools and tests that need the
// results read this file, never the ✔ and ✘ of the printed lines.

import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PREFIX } from '../../shared/settings.ts'

/** One claim: whether it holds, and what ran, what was expected and what came back. */
export interface ClaimResult {
  claim: string
  pass: boolean
  ran?: string
  expected?: unknown
  got?: unknown
}

/** What only a person can judge (homework): never a pass or a failure. */
export interface PersonResult {
  person: string
}

/** The tally a check script ends with. */
export interface TallyResult {
  passed: number
  failed: number
}

export type CheckResult = ClaimResult | PersonResult | TallyResult

/** Append one result to the file CFS_VERIFY_JSON names, if it names one. */
export function recordResult(result: CheckResult): void {
  const file = process.env.CFS_VERIFY_JSON
  if (file) appendFileSync(file, `${JSON.stringify(result)}\n`)
}

/** The results in a file, in the order they were recorded; none if there is no file. */
export function readResults(file: string): CheckResult[] {
  let text = ''
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return []
  }
  return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as CheckResult)
}

/** The claims, the things for a person and the last tally among `results`. */
export function sortResults(results: CheckResult[]): { claims: ClaimResult[]; person: string[]; tally?: TallyResult } {
  return {
    claims: results.filter((r): r is ClaimResult => 'claim' in r),
    person: results.filter((r): r is PersonResult => 'person' in r).map((r) => r.person),
    tally: results.filter((r): r is TallyResult => 'passed' in r).at(-1),
  }
}

/** A new, empty results file under the temporary directory, for a check script's CFS_VERIFY_JSON; `remove` deletes it. */
export function resultsFile(): { file: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `${PREFIX}-results-`))
  return { file: join(dir, 'results.jsonl'), remove: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Pass on the results a nested check script recorded in `file` to this process's own CFS_VERIFY_JSON, if set. */
export function forwardResults(file: string): void {
  for (const result of readResults(file)) recordResult(result)
}
