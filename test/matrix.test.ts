// The isolation matrix: every probe at every step, compared cell by cell
// with the table in notes/isolation-matrix.md; the claims the note makes
// in words, checked on their own (a table rewritten with --write cannot
// quietly drop them); and nothing of the probes left on the host
// afterwards.

import t from 'tap'
import { existsSync, readdirSync } from 'node:fs'
import { hostname } from 'node:os'
import { findHierarchies } from '../shared/cgroups.ts'
import { readMountInfo } from '../shared/mounts.ts'
import { findKeys, findSegments } from '../scripts/lib/kernel-objects.ts'
import { PROBES } from '../scripts/matrix/probes.ts'
import { allSteps, runMatrix } from '../scripts/matrix/runner.ts'
import { readExpected, reason, renderMarkdown, same, word } from '../scripts/matrix/table.ts'
import { rootOnly } from './helpers.ts'

// What the note says in words, as measured on a kernel that has the probes' targets.
// Columns by step number.
const CLAIMS: [probe: string, column: string, expected: 'leaks' | 'isolated'][] = [
  // Container root is host root up to 08; from 09 it is uid 100000, and the host's root-owned file is nobody's.
  ['host-file', '08', 'leaks'], ['host-file', '09', 'isolated'],
  // Capabilities the user namespace makes count for its own namespaces only: not the clock, nor global settings, nor root's keys.
  ['clock', '08', 'leaks'], ['clock', '09', 'isolated'],
  ['sysctl', '08', 'leaks'], ['sysctl', '09', 'isolated'],
  ['proc-keys', '08', 'leaks'], ['proc-keys', '09', 'isolated'],
  // Root of a user namespace may mount a tmpfs in its own mount namespace.
  ['mount-tmpfs', '09', 'leaks'],
  // The kernel refuses a user namespace to a chrooted process (03, 04); after pivot_root it makes one.
  ['nested-userns', '03', 'isolated'], ['nested-userns', '05', 'leaks'],
  // Not namespaced, and no capability asked for: only seccomp would stop it.
  ['keyctl', '09', 'leaks'],
  // Before step 05 no step has an IPC namespace.
  ['ipc', '04', 'leaks'],
]

// The probes whose target the kernel may not have at all, and how the host tells.
const KERNEL_HAS: Record<string, () => boolean> = {
  kcore: () => existsSync('/proc/kcore'),
  sysrq: () => existsSync('/proc/sysrq-trigger'),
  module: () => existsSync('/proc/modules'),
}

t.test('isolation matrix', rootOnly(), async (t) => {
  const expected = readExpected()
  t.same(expected.columns, allSteps(), 'notes/isolation-matrix.md has a column for every step, in order')
  t.same(Object.keys(expected.cells), PROBES.map((p) => p.id), 'notes/isolation-matrix.md has a row for every probe, in order')

  const before = hostname()
  const started = Date.now()
  const { cells, runs } = await runMatrix(allSteps())
  t.comment(`\n${renderMarkdown(cells, allSteps())}\n(${((Date.now() - started) / 1000).toFixed(1)} s)`)
  for (const probe of PROBES) {
    for (const column of allSteps()) {
      const got = cells[probe.id][column]
      const want = expected.cells[probe.id]?.[column]
      const show = (cell: typeof got | undefined) => (word(cell) === 'n/a' ? `n/a (${reason(cell)})` : word(cell))
      t.ok(same(got, want), `${probe.id} at ${column}: ${probe.title}: expected ${show(want)}, got ${show(got)}`, {
        detail: word(got) === 'error' ? reason(got) : undefined,
      })
    }
  }

  const column = (name: string) => allSteps().find((s) => s.startsWith(name))!
  for (const [probe, name, want] of CLAIMS) {
    const got = cells[probe][column(name)]
    t.equal(word(got), want, `${probe} at ${column(name)}: ${want}, as notes/isolation-matrix.md says`, {
      detail: reason(got) || undefined,
    })
  }
  // The IPC probe agrees with the host's view of each container: isolated exactly where it has an IPC namespace of its own.
  for (const run of runs) {
    if (run.ownIpcNamespace === undefined) {
      t.fail(`ipc at ${run.step}: the host found no probe script to compare IPC namespaces with`)
      continue
    }
    const want = run.ownIpcNamespace ? 'isolated' : 'leaks'
    t.equal(word(cells.ipc[run.step]), want, `ipc at ${run.step}: ${want}: ${run.ownIpcNamespace ? 'its IPC namespace is its own' : 'it shares the host\'s IPC namespace'} (/proc/PID/ns/ipc)`)
  }
  // n/a only where the kernel itself lacks the target, and then with the reason; never for a kernel that has it.
  for (const [probe, has] of Object.entries(KERNEL_HAS)) {
    const measured = allSteps()
    if (has()) {
      t.same(measured.filter((c) => word(cells[probe][c]) === 'n/a'), [], `${probe}: this kernel has its target, so no cell is n/a`)
    } else {
      const notNa = measured.filter((c) => word(cells[probe][c]) !== 'n/a' || !reason(cells[probe][c]))
      t.same(notNa, [], `${probe}: this kernel lacks its target, so every cell is n/a with the reason (${reason(cells[probe][measured[0]])})`)
    }
  }

  t.equal(hostname(), before, 'the host\'s hostname is what it was before')
  t.notOk(existsSync(`/tmp/cfs-matrix-${process.pid}`), `/tmp/cfs-matrix-${process.pid} is removed`)
  const mounts = readMountInfo().filter((m) => m.mountPoint.includes('cfs-matrix-') || m.source.startsWith('cfsm-'))
  t.same(mounts.map((m) => `${m.source} on ${m.mountPoint}`), [], 'no probe mount is left on the host')
  const cgroups = findHierarchies().flatMap((h) => readdirSync(h.mountPoint).filter((n) => n.startsWith(`cfs-matrix-${process.pid}-`)))
  t.same(cgroups, [], 'no throwaway cfs-matrix-* cgroup is left')
  t.same(findKeys(`cfsm-`).filter((k) => k.description.includes(`-${process.pid}`)).map((k) => k.description), [], 'no cfsm-* key of this run is left')
  t.same(findSegments().filter((s) => s.creator === process.pid).map((s) => s.key.toString(16)), [], 'no shared memory segment of this run is left')
})
