// A short stress run (npm run stress does 200): containers of steps 04-08
// ended every way there is, a few at a time, and nothing left behind.

import t from 'tap'
import { EXIT_PATHS, runStress, STRESS_STEPS } from '../scripts/stress/stress.ts'
import { summary } from '../scripts/stress/summary.ts'
import { rootOnly } from './helpers.ts'

// One container per (step, exit path): 5 steps × 5 paths.
const COUNT = STRESS_STEPS.length * EXIT_PATHS.length

// Ctrl-C reaches tsx's launcher too. tsx waits 2 × 30 ms for the step to
// acknowledge the signal, then SIGKILLs it; a step that is busy removing
// its container at that moment (PID 1 trapped SIGINT and exited at once)
// is killed half-way and leaves its cgroup or directory behind. A bug in
// how `npx tsx` and the steps' clean-up meet, reported, not yet fixed:
// such a failure shows as a todo, any other as a failure.
const TSX_RELAY = 'tsx SIGKILLs a step that takes > 60 ms to acknowledge Ctrl-C, cutting its clean-up short'

t.test(`stress: ${COUNT} containers`, rootOnly(), async (t) => {
  const report = await runStress({ count: COUNT })
  t.comment(`\n${summary(report)}`)
  t.equal(report.outcomes.length, COUNT, `all ${COUNT} containers ran`)
  for (const o of report.outcomes) {
    const name = `#${o.n} ${o.step}, ${o.path}${o.traps ? ' (PID 1 traps it)' : ''}`
    const racy = o.path === 'SIGINT to the group' && o.traps
    t.ok(o.expected, `${name}: ended as expected (exit ${o.exitCode})`, { why: o.why, ...(racy && !o.expected ? { todo: TSX_RELAY } : {}) })
    t.same(o.leftovers, [], `${name}: nothing of it left`, racy && o.leftovers.length ? { todo: TSX_RELAY } : {})
  }
  t.same(report.final, [], 'once all had ended: no mount, cgroup, container dir, veth, lease, bridge or process of this run is left')
})
