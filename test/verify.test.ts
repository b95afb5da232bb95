// Runs every step's verify.ts as a learner would and turns each claim it
// records (CFS_VERIFY_JSON, see scripts/lib/results.ts) into a tap assertion.

import t from 'tap'
import { readdirSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { repoDir } from '../shared/settings.ts'
import { readStates, statusOf } from '../shared/state.ts'
import { detailOf, rootOnly, runWithResults } from './helpers.ts'

const steps = readdirSync(join(repoDir, 'steps')).filter((name) => existsSync(join(repoDir, 'steps', name, 'verify.ts'))).sort()

for (const step of steps) {
  t.test(`steps/${step}/verify.ts`, rootOnly(), async (t) => {
    // `env -u NODE_OPTIONS`: run steps as a learner does, without tap's
    // preloads. tap puts them back on every spawn from Node, and its
    // processinfo would write .tap/ files inside the image when a step's
    // child exits after chroot (a missing command, say).
    const started = new Date().toISOString()
    const result = await runWithResults(`steps/${step}/verify.ts`)
    // A failed claim comes with what ran, what was expected and what came back.
    for (const claim of result.claims) t.ok(claim.pass, claim.claim, { diagnostic: !claim.pass, detail: detailOf(claim) })
    t.ok(result.claims.length > 0, `verify recorded its checks (stderr: ${result.stderr.trim().slice(0, 500)})`)
    t.equal(result.exitCode, 0, `verify exits 0 (stderr: ${result.stderr.trim().slice(0, 500)})`)
    // Its runs leave nothing for npm run ps to show as stale (tap runs one file at a time: no one else's).
    const stale = readStates().filter(({ state }) => state.step === step && state.started >= started && statusOf(state) === 'stale')
    t.same(stale.map(({ file }) => file), [], 'verify leaves no stale state file in npm run ps')
  })
}
