// The isolation matrix: every probe at every step, compared cell by cell with
// the table in notes/isolation-matrix.md, and nothing of the probes left on
// the host afterwards.

import t from 'tap'
import { existsSync, readdirSync } from 'node:fs'
import { hostname } from 'node:os'
import { findHierarchies } from '../shared/cgroups.ts'
import { readMountInfo } from '../shared/mounts.ts'
import { PROBES } from '../scripts/matrix/probes.ts'
import { allSteps, runMatrix } from '../scripts/matrix/runner.ts'
import { readExpected, reason, renderMarkdown, same, word } from '../scripts/matrix/table.ts'
import { rootOnly } from './helpers.ts'

t.test('isolation matrix', rootOnly(), async (t) => {
  const expected = readExpected()
  t.same(expected.columns, allSteps(), 'notes/isolation-matrix.md has a column for every step, in order')
  t.same(Object.keys(expected.cells), PROBES.map((p) => p.id), 'notes/isolation-matrix.md has a row for every probe, in order')

  const before = hostname()
  const { cells } = await runMatrix(allSteps())
  t.comment(`\n${renderMarkdown(cells, allSteps())}`)
  for (const probe of PROBES) {
    for (const step of allSteps()) {
      const got = cells[probe.id][step]
      const want = expected.cells[probe.id]?.[step]
      const show = (cell: typeof got | undefined) => (word(cell) === 'n/a' ? `n/a (${reason(cell)})` : word(cell))
      t.ok(same(got, want), `${probe.id} at ${step}: ${probe.title}: expected ${show(want)}, got ${show(got)}`, {
        detail: word(got) === 'error' ? reason(got) : undefined,
      })
    }
  }

  t.equal(hostname(), before, 'the host\'s hostname is what it was before')
  t.notOk(existsSync(`/tmp/cfs-matrix-${process.pid}`), `/tmp/cfs-matrix-${process.pid} is removed`)
  const mounts = readMountInfo().filter((m) => m.mountPoint.includes('cfs-matrix-') || m.source.startsWith('cfsm-'))
  t.same(mounts.map((m) => `${m.source} on ${m.mountPoint}`), [], 'no probe mount is left on the host')
  const cgroups = findHierarchies().flatMap((h) => readdirSync(h.mountPoint).filter((n) => n.startsWith(`cfs-matrix-${process.pid}-`)))
  t.same(cgroups, [], 'no throwaway cfs-matrix-* cgroup is left')
})
