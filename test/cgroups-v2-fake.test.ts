// The cgroup v2 code path against a FAKE cgroup2 tree (plain files in a
// temporary directory). This host's controllers are on v1, so this is the
// only way to exercise v2 here; `npm run test:cgroup2` runs it for real in
// a VM with a v2-only kernel, the rootless delegated cgroup included.

import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  cgroupFor, cgroupLayout, createCgroup, findControllers, findDelegation, findHierarchies, joinCgroup, leafName, parseLeafName,
} from '../shared/cgroups.ts'
import type { Hierarchy } from '../shared/cgroups.ts'
import type { MountInfo } from '../shared/mounts.ts'
import { repoDir } from '../shared/settings.ts'

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

// Rootless, a FAKE delegated cgroup: the user's own cgroup in a fake v2 tree
// (as systemd's Delegate=yes makes it), with this test's process and its
// parent in it. The real thing, with a real kernel's rules, is in the VM
// (npm run test:cgroup2): here only the decisions and the plan. The fake
// cgroup is at this process's real cgroup path, which cgroupFor reads.
const ownPath = /^0::(\/.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/'
const own = `0::${ownPath}\n`
function fakeDelegated(t: Test, controllers = 'cpu memory pids', procs = [process.pid, process.ppid]) {
  const root = mkdtempSync(join(tmpdir(), 'cfs-fake-delegated-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const dir = join(root, ownPath).replace(/(.)\/$/, '$1')
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'cgroup.controllers'), `${controllers}\n`)
  writeFileSync(join(dir, 'cgroup.subtree_control'), '\n')
  writeFileSync(join(dir, 'cgroup.procs'), procs.map((pid) => `${pid}\n`).join(''))
  // What the tree's root offers (its own cgroup.controllers may be the delegated one's, here at /).
  const hierarchies: Hierarchy[] = [{ version: 2, mountPoint: root, controllers: ['cpuset', 'cpu', 'io', 'memory', 'pids'], root: '/' }]
  return { root, dir, hierarchies }
}

t.test('fake delegated cgroup: found, and each way it is not says why', async (t) => {
  const fake = fakeDelegated(t)
  t.same(findDelegation(['pids', 'memory'], fake.hierarchies, own), { dir: fake.dir, controllers: ['cpu', 'memory', 'pids'], processes: [process.pid, process.ppid] },
    'this process\'s cgroup, under the v2 mount, with the controllers, holding this process and its parent: delegated')
  const scope = fakeDelegated(t)
  mkdirSync(join(scope.root, 'run-u7.scope'))
  for (const file of ['cgroup.procs', 'cgroup.subtree_control', 'cgroup.controllers']) writeFileSync(join(scope.root, 'run-u7.scope', file), '')
  const subtree = scope.hierarchies.map((h) => ({ ...h, root: '/user.slice' }))
  t.match(findDelegation(['pids'], subtree, '0::/user.slice/run-u7.scope\n'), { why: new RegExp(`your cgroup, ${scope.root}/run-u7.scope, offers no controllers`) },
    'a mount of a subtree (mountinfo root /user.slice): the path is taken from there')
  t.match(findDelegation(['pids'], subtree, '0::/system.slice/x.service\n'), { why: /is not under/ }, '…and a cgroup outside that subtree is not under the mount: why says so')
  t.match(findDelegation(['pids'], [], own), { why: /no cgroup v2/ }, 'no v2 mount: why says so')
  const hybrid = fake.hierarchies.map((h) => ({ ...h, controllers: ['memory'] }))
  t.match(findDelegation(['pids', 'memory'], hybrid, own), { why: /keeps pids on cgroup v1/ }, 'v2 without pids (a hybrid host like this one): why names the controller')
  const fewer = fakeDelegated(t, 'pids')
  t.match(findDelegation(['pids', 'memory'], fewer.hierarchies, own), { why: /offers pids but not memory/ }, 'a delegated cgroup without memory, for --memory: why names it')
  const shared = fakeDelegated(t, 'cpu memory pids', [process.pid, 999999])
  t.match(findDelegation(['pids'], shared.hierarchies, own), { why: /holds processes other than this run's \(999999\)/ }, 'a process that did not start this one in it: why names it')
  // tsx's esbuild service is such a child: in `systemd-run --user --scope … npx tsx steps/09-userns run`, the Debian guest found it in the scope.
  const child = spawn('sleep', ['30'], { stdio: 'ignore' })
  t.teardown(() => child.kill('SIGKILL'))
  const started = fakeDelegated(t, 'cpu memory pids', [process.pid, process.ppid, child.pid!])
  t.same(findDelegation(['pids'], started.hierarchies, own), { dir: started.dir, controllers: ['cpu', 'memory', 'pids'], processes: [process.pid, process.ppid, child.pid] },
    'a process this one started (a child of it) in it: this run\'s too, delegated')
})

t.test('fake delegated cgroup: a user who may not write it is refused (as nobody)', async (t) => {
  const fake = fakeDelegated(t)
  chmodSync(fake.root, 0o755) // mkdtemp's 0700 would shut nobody out of the whole tree
  // `env -u NODE_OPTIONS`: tap's preloads (see test/helpers.ts) would write to .tap/, which nobody may not.
  const ask = () => spawnSync('env', ['-u', 'NODE_OPTIONS', 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--input-type=module', '-e', `
    import { findDelegation, findHierarchies } from ${JSON.stringify(join(repoDir, 'shared/cgroups.ts'))}
    const hierarchies = findHierarchies([{ id: 1, parent: 0, root: '/', mountPoint: ${JSON.stringify(fake.root)}, options: 'rw', propagation: '', fstype: 'cgroup2', source: 'cgroup2', superOptions: 'rw' }])
    console.log(JSON.stringify(findDelegation(['pids'], hierarchies, ${JSON.stringify(own)})))
  `], { encoding: 'utf8' })
  const rootOwned = ask()
  t.match(JSON.parse(rootOwned.stdout || '{}'), { why: /is not yours to change/ }, `root's directory and files: not the user's (stderr: ${rootOwned.stderr.trim() || 'none'})`)
  for (const file of ['', 'cgroup.procs', 'cgroup.subtree_control']) chownSync(join(fake.dir, file), 65534, 65534)
  writeFileSync(join(fake.dir, 'cgroup.procs'), '') // nobody's node is no process of this test's lineage: none in it
  const delegated = ask()
  t.match(JSON.parse(delegated.stdout || '{}'), { dir: fake.dir }, `chowned to the user as systemd does (the directory, cgroup.procs, cgroup.subtree_control): delegated (stderr: ${delegated.stderr.trim() || 'none'})`)
})

t.test('fake delegated cgroup: the plan, and the leaf this process moves to', async (t) => {
  const fake = fakeDelegated(t, 'cpu memory pids', [process.pid])
  const cgroup = cgroupFor('0123456789ab', { pids: 20, memory: 32 * 1024 ** 2 }, fake.hierarchies, true)
  const leaf = join(fake.dir, 'cfs-0123456789ab-step+pids+memory')
  t.same(cgroup.dirs, [{ version: 2, dir: join(fake.dir, 'cfs-0123456789ab'), controllers: ['pids', 'memory'] }], 'the container\'s cgroup goes in the delegated cgroup')
  t.same(cgroup.writes[0], { dir: fake.dir, file: 'cgroup.subtree_control', value: '+pids +memory' }, 'first the delegated cgroup gives its children pids and memory')
  t.same(cgroup.writes.slice(1).map((w) => `${w.file}=${w.value}`), ['pids.max=20', `memory.max=${32 * 1024 ** 2}`, 'memory.swap.max=0'], 'then the limits, in the container\'s cgroup')
  t.same(cgroup.delegation, { dir: fake.dir, leaf, enabled: ['pids', 'memory'], moved: [process.pid] }, 'the leaf, named after what the run adds, holds the moved processes')
  t.equal(readFileSync(join(leaf, 'cgroup.procs'), 'utf8'), String(process.pid), 'this process was written to the leaf\'s cgroup.procs')
  t.same(parseLeafName('cfs-0123456789ab-step+pids+memory'), { id: '0123456789ab', enabled: ['pids', 'memory'] }, 'npm run clean reads the id and the controllers back from the name')
  t.equal(parseLeafName('cfs-0123456789ab'), undefined, '…and a container\'s cgroup is no leaf')
  t.equal(leafName('0123456789ab', []), 'cfs-0123456789ab-step', 'a run that added nothing: no controllers in the name')
})
