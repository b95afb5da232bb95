// A short stress run (npm run stress does 200): containers of steps 04-10
// ended every way there is, a few at a time, and nothing left behind.

import t from 'tap'
import { EXIT_PATHS, runStress, STRESS_STEPS } from '../scripts/stress/stress.ts'
import { summary } from '../scripts/stress/summary.ts'
import { rootOnly } from './helpers.ts'

// One container per (step, exit path): 6 steps × 5 paths.
const COUNT = STRESS_STEPS.length * EXIT_PATHS.length

// Ctrl-C reaches tsx's launcher too, which SIGKILLs the step unless it
// acknowledges the signal within about 60 ms: a step whose clean-up blocked
// its event loop was killed half-way through it (see Cleanup in
// shared/container.ts). Every run here must end clean, that one included.

t.test(`stress: ${COUNT} containers`, rootOnly(), async (t) => {
  const report = await runStress({ count: COUNT })
  t.comment(`\n${summary(report)}`)
  t.equal(report.outcomes.length, COUNT, `all ${COUNT} containers ran`)
  for (const o of report.outcomes) {
    const name = `#${o.n} ${o.step}, ${o.path}${o.traps ? ' (PID 1 traps it)' : ''}`
    t.ok(o.expected, `${name}: ended as expected (exit ${o.exitCode})`, { why: o.why })
    t.same(o.leftovers, [], `${name}: nothing of it left`)
  }
  t.same(report.final, [], 'once all had ended: no mount, cgroup, container dir, veth, lease, bridge or process of this run is left')
})
