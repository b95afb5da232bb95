// The homework, both ways: every problem as shipped fails its checker, and
// its model solution (exercises/solutions/<slug>) passes it. Each run must
// leave nothing behind on the host.

import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { homework } from '../exercises/hints.ts'
import { repoDir } from '../shared/settings.ts'
import { rootOnly, runWithResults } from './helpers.ts'
import { leftoversSince, snapshotLeftovers, watchRun } from './leftovers.ts'

for (const [key, problem] of Object.entries(homework)) {
  const shipped = `exercises/homework/${problem.slug}`
  const solution = `exercises/solutions/${problem.slug}`

  t.test(`homework ${key}: its files`, async (t) => {
    const readme = existsSync(join(repoDir, shipped, 'README.md')) ? readFileSync(join(repoDir, shipped, 'README.md'), 'utf8') : ''
    t.match(readme, /## How to check your work/, `${shipped}/README.md states the problem and how to check it`)
    t.match(readme, new RegExp(`npm run homework -- ${key}\\b`), '…with the command')
    if (problem.person) t.match(readme, /a person/i, '…and says what a person has to judge')
    t.ok(existsSync(join(repoDir, shipped, 'check.ts')), `${shipped}/check.ts exists`)
    const file = existsSync(join(repoDir, shipped, problem.file)) ? readFileSync(join(repoDir, shipped, problem.file), 'utf8') : ''
    t.match(file, problem.file.endsWith('.ts') ? /\/\/ TODO:/ : /\?/, `${shipped}/${problem.file} has what the learner fills in`)
    t.ok(existsSync(join(repoDir, solution, problem.file)), `the model solution ${solution}/${problem.file} exists`)
  })

  t.test(`homework ${key} as shipped fails its checker`, { ...rootOnly(), timeout: 180_000 }, async (t) => {
    const { result, left } = await check(key)
    const failed = result.claims.filter((claim) => !claim.pass)
    t.not(result.exitCode, 0, `npm run homework -- ${key} exits non-zero (stderr: ${result.stderr.trim().slice(0, 300)})`)
    t.ok(failed.length > 0, `at least one check fails: ${failed[0]?.claim ?? 'none'}`)
    t.match(result.stdout, new RegExp(`✘ homework ${key}: \\d+ of \\d+ checks pass`), 'the verdict says how many pass')
    t.same(left, [], 'the run left nothing behind')
  })

  t.test(`homework ${key}: the model solution passes its checker`, { ...rootOnly(), timeout: 180_000 }, async (t) => {
    const { result, left } = await check(key, solution)
    const failed = result.claims.filter((claim) => !claim.pass).map((claim) => claim.claim)
    t.same(failed, [], `no check fails (stderr: ${result.stderr.trim().slice(0, 300)})`)
    t.equal(result.exitCode, 0, `npm run homework -- ${key} --target ${solution} exits 0`)
    t.match(result.stdout, new RegExp(`✔ homework ${key}: all \\d+ checks pass`), 'the verdict says all pass')
    if (problem.person) t.ok(result.person.length > 0, 'and says what a person still has to read')
    t.same(left, [], 'the run left nothing behind')
  })
}

// Run the checker as a learner would (minus tap's preloads, see verify.test.ts); what it printed, and what it left.
async function check(key: string, target?: string) {
  const before = snapshotLeftovers()
  const run = watchRun()
  const result = await runWithResults('scripts/homework.ts', [key, ...(target ? ['--target', target] : [])])
  run.stop()
  return { result, left: await leftoversSince(before, run) }
}
