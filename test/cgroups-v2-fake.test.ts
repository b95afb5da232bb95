// The cgroup v2 code path against a FAKE cgroup2 tree (plain files in a
// temporary directory). This host's controllers are on v1, so this is the
// only way to exercise v2 here; `npm run test:cgroup2` runs it for real in
// a VM with a v2-only kernel.

import t from 'tap'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cgroupLayout, createCgroup, findControllers, findHierarchies, joinCgroup } from '../shared/cgroups.ts'
import type { MountInfo } from '../shared/mounts.ts'

const mountLine = (mountPoint: string, fstype: string, superOptions: string): MountInfo => ({
  id: 1, parent: 0, root: '/', mountPoint, options: 'rw', propagation: '', fstype, source: fstype, superOptions,
})

t.test('fake v2-only host: every controller is found in the unified tree', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'cfs-fake-cgroup2-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  writeFileSync(join(root, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n')
  writeFileSync(join(root, 'cgroup.subtree_control'), 'memory\n') // as if only memory were enabled
  const hierarchies = findHierarchies([mountLine(root, 'cgroup2', 'rw,nsdelegate')])
  t.equal(cgroupLayout(hierarchies), 'v2', 'layout: v2')
  for (const [controller, h] of findControllers(hierarchies)) t.equal(h.version, 2, `${controller} is on v2`)

  const cgroup = createCgroup('fake', { pids: 30, memory: 20 * 1024 ** 2, cpus: 0.5, cpuShares: 2048 }, hierarchies)
  t.same(cgroup.dirs, [{ version: 2, dir: join(root, 'cfs-fake'), controllers: ['pids', 'memory', 'cpu'] }], 'one directory in the unified tree for all three')
  const read = (file: string) => readFileSync(join(root, 'cfs-fake', file), 'utf8')
  t.equal(read('pids.max'), '30', 'pids.max')
  t.equal(read('memory.max'), String(20 * 1024 ** 2), 'memory.max')
  t.equal(read('memory.swap.max'), '0', 'memory.swap.max: no swapping past the limit')
  t.equal(read('cpu.max'), '50000 100000', 'cpu.max: quota and period')
  t.equal(read('cpu.weight'), '79', 'cpu.weight from shares 2048')
  t.equal(readFileSync(join(root, 'cgroup.subtree_control'), 'utf8'), '+pids +cpu', 'the parent enables only the missing controllers in cgroup.subtree_control')
  joinCgroup(cgroup, 4242)
  t.equal(read('cgroup.procs'), '4242', 'joining writes the PID to cgroup.procs')
})

t.test('fake hybrid host (like this one): v1 controllers, an empty v2 tree', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'cfs-fake-hybrid-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  for (const dir of ['pids', 'memory', 'cpu,cpuacct', 'unified']) mkdirSync(join(root, dir))
  writeFileSync(join(root, 'unified/cgroup.controllers'), '\n')
  const hierarchies = findHierarchies([
    mountLine(join(root, 'pids'), 'cgroup', 'rw,pids'),
    mountLine(join(root, 'memory'), 'cgroup', 'rw,memory'),
    mountLine(join(root, 'cpu,cpuacct'), 'cgroup', 'rw,cpu,cpuacct'),
    mountLine(join(root, 'unified'), 'cgroup2', 'rw'),
  ])
  t.equal(cgroupLayout(hierarchies), 'hybrid', 'layout: hybrid')
  const where = findControllers(hierarchies)
  t.same([...where].map(([c, h]) => `${c}:v${h.version}:${h.mountPoint.slice(root.length)}`), ['pids:v1:/pids', 'memory:v1:/memory', 'cpu:v1:/cpu,cpuacct'], 'each controller from its v1 hierarchy, cpu from the co-mounted cpu,cpuacct')
})
