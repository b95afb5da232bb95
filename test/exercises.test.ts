// The exercises, both ways (as rustlings does): every exercise as shipped
// fails its step's verify.ts, and every step, the solution, passes it. The
// second half is test/verify.test.ts, which runs each steps/NN/verify.ts;
// here we only make sure there is one to run. Also: an exercise is its step
// with the step's new lines taken out, and nothing else changed, so the
// exercises cannot drift from the steps unnoticed.

import t from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { exercises } from '../exercises/hints.ts'
import { repoDir } from '../shared/settings.ts'
import { rootOnly, runWithResults } from './helpers.ts'
import { leftoversSince, snapshotLeftovers, watchRun } from './leftovers.ts'

const slugs = readdirSync(join(repoDir, 'exercises')).filter((name) => /^\d\d-/.test(name)).sort()
const steps = readdirSync(join(repoDir, 'steps')).filter((name) => /^\d\d-/.test(name)).sort()
const lines = (path: string) => readFileSync(join(repoDir, path), 'utf8').split('\n')

t.same(slugs, steps, 'one exercise per step, with the step\'s slug')

for (const slug of slugs) {
  t.test(`exercises/${slug}: the step with its new lines taken out`, async (t) => {
    const exercise = lines(`exercises/${slug}/index.ts`)
    t.ok(exercises[slug], `exercises/hints.ts has ${slug}`)
    t.ok(exercise.some((line) => line.includes('// TODO:')), 'at least one TODO')
    t.ok(exercise.some((line) => line.includes(`exercises/${slug} run`)), `its Usage says exercises/${slug}`)
    t.ok(exercise.some((line) => line.includes(`npm run exercise -- ${slug.slice(0, 2)}`)), 'its header says how to check it')
    const previous = steps[steps.indexOf(slug) - 1]
    t.same(driftFrom(lines(`steps/${slug}/index.ts`), previous ? lines(`steps/${previous}/index.ts`) : [], exercise), [],
      `exercises/${slug}/index.ts differs from steps/${slug}/index.ts only where the step is new: TODOs, the lines they replace, guards`)
  })
}

for (const slug of slugs) {
  const verify = `steps/${slug}/verify.ts`
  const missing = !existsSync(join(repoDir, verify))
  t.test(`exercises/${slug} as shipped fails ${verify}`, { ...rootOnly(), todo: missing ? `${verify} is not written yet` : false, timeout: 180_000 }, async (t) => {
    const before = snapshotLeftovers()
    const run = watchRun()
    // As a learner runs it, minus tap's NODE_OPTIONS preloads (see verify.test.ts);
    // fail-fast: one failed check is all this needs, and saves the rest of the runs.
    const result = await runWithResults('scripts/exercise.ts', [slug.slice(0, 2)], { CFS_VERIFY_FAIL_FAST: '1' })
    run.stop()
    const failed = result.claims.filter((claim) => !claim.pass)
    t.not(result.exitCode, 0, `npm run exercise -- ${slug.slice(0, 2)} exits non-zero (stderr: ${result.stderr.trim().slice(0, 300)})`)
    t.ok(failed.length > 0, `at least one check fails: ${failed[0]?.claim ?? 'none'}`)
    t.match(result.stdout, new RegExp(`✘ exercise ${slug}: \\d+ of \\d+ checks pass`), 'the verdict line says how many checks pass')
    t.match(result.stdout, /Run with --hint for a hint\./, 'and points at --hint')
    t.same(await leftoversSince(before, run), [], 'the run left nothing behind (mounts, cgroups, cfs* interfaces, container dirs)')
    t.ok(existsSync(join(repoDir, verify)), `the solution, steps/${slug}, is checked by ${verify} in test/verify.test.ts`)
  })
}

// Problems found comparing exercise E with step S and the step before, P
// (line by line, as `diff` pairs them): E may lack only lines S added to P,
// and any line E adds must be a comment, a guard, or the line right under a
// TODO (the placeholder the learner changes).
function driftFrom(step: string[], previous: string[], exercise: string[]): string[] {
  // An exercise imports its step's other files (policy.ts) from the step's folder.
  const norm = (line: string) => line.replace(/'\.\.\/\.\.\/steps\/\d\d-[\w-]+\//, "'./").replaceAll('exercises/', 'steps/').trim()
  const [s, p, e] = [step.map(norm), previous.map(norm), exercise.map(norm)]
  const isCode = (line: string) => line !== '' && !line.startsWith('//')
  const newInStep = unmatched(s, p)
  const problems: string[] = []
  for (const i of unmatched(s, e)) {
    if (isCode(s[i]) && !newInStep.has(i)) problems.push(`steps line ${i + 1} is missing, though the step before has it: ${s[i]}`)
  }
  for (const i of unmatched(e, s)) {
    if (!isCode(e[i]) || e[i].includes(`from '../guard.ts'`) || /^refuseHost\w*\(/.test(e[i])) continue
    let above = i - 1
    while (above >= 0 && e[above].startsWith('//') && !e[above].startsWith('// TODO:')) above--
    if (above >= 0 && e[above].startsWith('// TODO:')) continue
    problems.push(`exercise line ${i + 1} is not in the step, nor a comment, a guard or under a TODO: ${e[i]}`)
  }
  return problems
}

// Indices of the lines of `a` that a longest common subsequence with `b` leaves out (what `diff a b` marks -).
function unmatched(a: string[], b: string[]): Set<number> {
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0))
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1])
  }
  const left = new Set<number>()
  for (let i = 0, j = 0; i < a.length;) {
    if (j < b.length && a[i] === b[j]) (i++, j++)
    else if (j < b.length && lcs[i][j + 1] >= lcs[i + 1][j]) j++
    else left.add(i++)
  }
  return left
}
