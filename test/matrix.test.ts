// The isolation matrix: every probe at every step and in runc, compared cell
// by cell with the table in notes/isolation-matrix.md; the claims the note
// makes in words, checked on their own (a table rewritten with --write
// cannot quietly drop them); and nothing of the probes left on the host
// afterwards.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { hostname } from 'node:os'
import { findHierarchies } from '../shared/cgroups.ts'
import { readMountInfo } from '../shared/mounts.ts'
import { liveLeases } from '../shared/net.ts'
import { findKeys, findSegments } from '../scripts/lib/kernel-objects.ts'
import { listDir } from '../scripts/lib/files.ts'
import { PROBES } from '../scripts/matrix/probes.ts'
import { RUNC, RUNC_ROOT, runcMissing } from '../scripts/matrix/runc.ts'
import { allColumns, allSteps, runMatrix } from '../scripts/matrix/runner.ts'
import { readExpected, reason, renderMarkdown, same, word } from '../scripts/matrix/table.ts'
import { rootOnly } from './helpers.ts'

// What the note says in words, as measured on a kernel that has the probes' targets.
// Columns by step number, or runc.
const CLAIMS: [probe: string, column: string, expected: 'leaks' | 'isolated'][] = [
  // Container root is host root up to 08; from 09 it is uid 100000, and the host's root-owned file is nobody's.
  ['host-file', '08', 'leaks'], ['host-file', '09', 'isolated'],
  // Docker keeps CAP_DAC_OVERRIDE and CAP_FOWNER, and runc adds no user namespace: root's file is root's.
  ['host-file', RUNC, 'leaks'],
  // Capabilities the user namespace makes count for its own namespaces only: not the clock, nor global settings, nor root's keys.
  ['clock', '08', 'leaks'], ['clock', '09', 'isolated'], ['clock', RUNC, 'isolated'],
  ['sysctl', '08', 'leaks'], ['sysctl', '09', 'isolated'], ['sysctl', RUNC, 'isolated'],
  ['proc-keys', '08', 'leaks'], ['proc-keys', '09', 'isolated'], ['proc-keys', RUNC, 'isolated'],
  // Root of a user namespace may mount a tmpfs in its own mount namespace; Docker's capabilities lack CAP_SYS_ADMIN.
  ['mount-tmpfs', '09', 'leaks'], ['mount-tmpfs', RUNC, 'isolated'],
  // The kernel refuses a user namespace to a chrooted process (03, 04); after pivot_root, and in runc without seccomp, it makes one.
  ['nested-userns', '03', 'isolated'], ['nested-userns', '05', 'leaks'], ['nested-userns', RUNC, 'leaks'],
  // Not namespaced, and no capability asked for, or one Docker keeps: only seccomp (which neither has) would stop them.
  ['keyctl', '09', 'leaks'], ['keyctl', RUNC, 'leaks'], ['raw-socket', RUNC, 'leaks'], ['chown', RUNC, 'leaks'], ['ptrace', RUNC, 'leaks'],
  // The learner's terminal, shared up to 04, takes what a container pushes into it; from 05 the container has a pty of its own.
  ['tiocsti', '04', 'leaks'], ['tiocsti', '05', 'isolated'],
  // runc makes an IPC namespace; before step 05 no step has one.
  ['ipc', '04', 'leaks'], ['ipc', RUNC, 'isolated'],
]

// The probes whose target the kernel may not have at all, and how the host tells.
const KERNEL_HAS: Record<string, () => boolean> = {
  kcore: () => existsSync('/proc/kcore'),
  sysrq: () => existsSync('/proc/sysrq-trigger'),
  module: () => existsSync('/proc/modules'),
}

t.test('isolation matrix', rootOnly(), async (t) => {
  const expected = readExpected()
  t.same(expected.columns, allColumns(), 'notes/isolation-matrix.md has a column for every step, in order, then runc')
  t.same(Object.keys(expected.cells), PROBES.map((p) => p.id), 'notes/isolation-matrix.md has a row for every probe, in order')

  const before = hostname()
  const started = Date.now()
  const { cells, runs } = await runMatrix(allColumns())
  t.comment(`\n${renderMarkdown(cells, allColumns())}\n(${((Date.now() - started) / 1000).toFixed(1)} s)`)
  const noRunc = runcMissing()
  if (noRunc && process.env.CI === 'true') t.fail(`CI=true but ${noRunc}: .ci/run installs it, the runc column must be measured`)
  for (const probe of PROBES) {
    for (const column of allColumns()) {
      const got = cells[probe.id][column]
      const want = expected.cells[probe.id]?.[column]
      const show = (cell: typeof got | undefined) => (word(cell) === 'n/a' ? `n/a (${reason(cell)})` : word(cell))
      t.ok(same(got, want), `${probe.id} at ${column}: ${probe.title}: expected ${show(want)}, got ${show(got)}`, {
        detail: word(got) === 'error' || word(got) === 'skipped' ? reason(got) : undefined,
        skip: column === RUNC && noRunc ? noRunc : false,
      })
    }
  }

  const column = (name: string) => (name === RUNC ? RUNC : allSteps().find((s) => s.startsWith(name))!)
  for (const [probe, name, want] of CLAIMS) {
    const got = cells[probe][column(name)]
    t.equal(word(got), want, `${probe} at ${column(name)}: ${want}, as notes/isolation-matrix.md says`, {
      detail: reason(got) || undefined,
      skip: name === RUNC && noRunc ? noRunc : false,
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
    const measured = allColumns().filter((c) => word(cells[probe][c]) !== 'skipped')
    if (has()) {
      t.same(measured.filter((c) => word(cells[probe][c]) === 'n/a'), [], `${probe}: this kernel has its target, so no cell is n/a`)
    } else {
      // From step 10 on, the seccomp filter refuses init_module (EPERM) before the kernel could say ENOSYS: a real refusal.
      const filtered = (c: string) => probe === 'module' && /^\d\d-/.test(c) && c >= '10'
      const notNa = measured.filter((c) => !filtered(c) && (word(cells[probe][c]) !== 'n/a' || !reason(cells[probe][c])))
      t.same(notNa, [], `${probe}: this kernel lacks its target, so every cell is n/a with the reason (${reason(cells[probe][measured[0]])})`)
      const wrong = measured.filter((c) => filtered(c) && word(cells[probe][c]) !== 'isolated')
      t.same(wrong, [], `${probe}: …but isolated where step 10's filter refuses the call`)
    }
  }

  t.equal(hostname(), before, 'the host\'s hostname is what it was before')
  t.notOk(existsSync(`/tmp/cfs-matrix-${process.pid}`), `/tmp/cfs-matrix-${process.pid} is removed`)
  const mounts = readMountInfo().filter((m) => m.mountPoint.includes('cfs-matrix-') || m.source.startsWith('cfsm-'))
  t.same(mounts.map((m) => `${m.source} on ${m.mountPoint}`), [], 'no probe mount is left on the host')
  const cgroups = findHierarchies().flatMap((h) => readdirSync(h.mountPoint).filter((n) => n.startsWith(`cfs-matrix-${process.pid}-`)))
  t.same(cgroups, [], 'no throwaway cfs-matrix-* cgroup, nor runc\'s, is left')
  t.same(findKeys(`cfsm-`).filter((k) => k.description.includes(`-${process.pid}`)).map((k) => k.description), [], 'no cfsm-* key of this run is left')
  t.same(findSegments().filter((s) => s.creator === process.pid).map((s) => s.key.toString(16)), [], 'no shared memory segment of this run is left')
  t.same(listDir(RUNC_ROOT).filter((id) => id.includes(`-${process.pid}-`)), [], 'no runc container of this run is left')
  const sessions = spawnSync('tmux', ['-L', 'cfs-test', 'list-sessions', '-F', '#{session_name}'], { encoding: 'utf8' }).stdout ?? ''
  t.same(sessions.split('\n').filter((name) => name.startsWith(`cfs-matrix-${process.pid}-`)), [], 'no tmux session of the tiocsti runs is left')
  t.same(listDir('/run/netns').filter((n) => n === `cfsm-runc-${process.pid}`), [], 'the runc column\'s network namespace is removed')
  t.same(liveLeases().filter((l) => l.pid === process.pid).map((l) => l.address), [], 'the runc column\'s address lease is freed')
  t.notOk(existsSync(`/sys/class/net/cfsm${process.pid}`), 'the runc column\'s veth pair is removed')
})
