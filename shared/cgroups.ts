// Control groups: limits on the pids, memory and CPU a container may use.
// See cgroups(7); the v2 files are in the kernel's Documentation/admin-guide/cgroup-v2.rst.
//
// A host has cgroup v1 (one hierarchy per controller, at /sys/fs/cgroup/pids,
// /sys/fs/cgroup/memory, ...), cgroup v2 (one tree, controllers listed in
// cgroup.controllers), or both ("hybrid": a controller lives in one or the
// other). So each controller is looked up on its own: v2 first, then v1.
// A container's cgroup is `cfs-<id>` at the root of each hierarchy it uses;
// rootless (step 09), in the cgroup v2 the host delegates to the user, if any.

import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join, relative } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { UsageError } from './errors.ts'
import { readMountInfo } from './mounts.ts'
import { kill, SIGKILL } from './process.ts'
import { parentPid } from './procfs.ts'
import { PREFIX, rootless } from './settings.ts'

export type Controller = 'pids' | 'memory' | 'cpu'
export const CONTROLLERS: Controller[] = ['pids', 'memory', 'cpu']

/** A mounted cgroup hierarchy: v1 (one per controller set) or v2 (the unified tree). */
export interface Hierarchy {
  version: 1 | 2
  mountPoint: string
  controllers: string[]
  root?: string // the cgroup mounted there, as /proc/PID/cgroup names it (mountinfo's root): usually /
}

/** Every cgroup hierarchy mounted on this host, from /proc/self/mountinfo. */
export function findHierarchies(mountinfo = readMountInfo()): Hierarchy[] {
  return mountinfo.flatMap((m): Hierarchy[] => {
    if (m.fstype === 'cgroup2') {
      const file = join(m.mountPoint, 'cgroup.controllers')
      const controllers = existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean) : []
      return [{ version: 2, mountPoint: m.mountPoint, controllers, root: m.root }]
    }
    if (m.fstype === 'cgroup') {
      // v1: the controllers are in the super options, e.g. `rw,cpu,cpuacct`.
      const controllers = m.superOptions.split(',').filter((o) => o !== 'rw' && o !== 'ro' && !o.startsWith('name='))
      return [{ version: 1, mountPoint: m.mountPoint, controllers }]
    }
    return []
  })
}

/** Where each controller really is: the v2 tree if it offers it, else its v1 hierarchy. */
export function findControllers(hierarchies = findHierarchies()): Map<Controller, Hierarchy> {
  const found = new Map<Controller, Hierarchy>()
  for (const controller of CONTROLLERS) {
    const v2 = hierarchies.find((h) => h.version === 2 && h.controllers.includes(controller))
    const v1 = hierarchies.find((h) => h.version === 1 && h.controllers.includes(controller))
    if (v2 ?? v1) found.set(controller, (v2 ?? v1)!)
  }
  return found
}

/** The host's layout in one word: v1, v2, hybrid (both mounted) or none. */
export function cgroupLayout(hierarchies = findHierarchies()): 'v1' | 'v2' | 'hybrid' | 'none' {
  const v1 = hierarchies.some((h) => h.version === 1 && h.controllers.length > 0)
  const v2 = hierarchies.some((h) => h.version === 2)
  return v1 && v2 ? 'hybrid' : v1 ? 'v1' : v2 ? 'v2' : 'none'
}

/** Limits as the kernel wants them: bytes, a count, CPU quota, shares. */
export interface Limits {
  pids?: number // pids.max; undefined: no limit
  memory?: number // bytes
  cpus?: number // CPUs worth of time per period, e.g. 0.5
  cpuShares?: number // relative weight, v1 style (default 1024)
  asked?: boolean // the command line asked for a limit (not only the default pids.max)
}

/**
 * A container's cgroup: one directory per hierarchy it uses, and the writes
 * that set its limits there, in order (a v2 parent's cgroup.subtree_control
 * first, so the child directory gets its controllers' files).
 */
export interface Cgroup {
  name: string
  dirs: { version: 1 | 2; dir: string; controllers: Controller[] }[]
  writes: { dir: string; file: string; value: string }[]
  delegation?: Delegation // rootless, in a cgroup delegated to the user
}

/** The cgroup name for a container id. */
export function cgroupName(id: string): string {
  return `${PREFIX}-${id}`
}

/**
 * Where the container's cgroup goes on this host and what to write to set
 * `limits`: the data only (a step makes the directories and writes the
 * files itself). The pids controller always, since the cgroup also tells
 * who is alive; memory and cpu when limited.
 *
 * Rootless (step 09) the cgroup tree is root's, except a cgroup the host
 * delegates to the user (findDelegation): then the container's cgroup goes
 * in there, and this process first moves to a leaf beside it (enterLeaf),
 * until it exits. Without one: no cgroup, and one line that says the
 * limits are off and how to get them.
 */
export function cgroupFor(id: string, limits: Limits, hierarchies = findHierarchies(), asUser = rootless): Cgroup {
  const wanted = new Set<Controller>(['pids'])
  if (limits.memory !== undefined) wanted.add('memory')
  if (limits.cpus !== undefined || limits.cpuShares !== undefined) wanted.add('cpu')
  const delegated = asUser ? findDelegation([...wanted], hierarchies) : undefined
  if (delegated && 'why' in delegated) {
    // The whole story when the command line asked for a limit; else a short line (the default pids.max is off too).
    process.stderr.write(limits.asked
      ? `cfs: rootless: ${delegated.why}, so limits are off; for limits, start it in a cgroup of your own (cgroup v2 with systemd): systemd-run --user --scope -p Delegate=yes npx tsx ${stepShown()} run …\n`
      : 'cfs: rootless: no cgroup of your own, so no limits (see notes/09-userns.md)\n')
    return { name: cgroupName(id), dirs: [], writes: [] }
  }
  // Delegated: the user's cgroup is the top of the only hierarchy we may use.
  if (delegated) hierarchies = [{ version: 2, mountPoint: delegated.dir, controllers: delegated.controllers }]
  const where = findControllers(hierarchies)
  const cgroup: Cgroup = { name: cgroupName(id), dirs: [], writes: [] }
  for (const controller of wanted) {
    const hierarchy = where.get(controller)
    if (!hierarchy) throw new UsageError(`this kernel has no ${controller} cgroup controller (see npm run doctor)`)
    const dir = join(hierarchy.mountPoint, cgroup.name)
    const entry = cgroup.dirs.find((d) => d.dir === dir)
    if (entry) entry.controllers.push(controller)
    else cgroup.dirs.push({ version: hierarchy.version, dir, controllers: [controller] })
  }
  for (const { version, dir, controllers } of cgroup.dirs) {
    if (version === 2) cgroup.writes.push(...enableControllers(join(dir, '..'), controllers))
    for (const controller of controllers) {
      for (const [file, value] of limitFiles(version, controller, limits)) cgroup.writes.push({ dir, file, value })
    }
  }
  if (delegated) cgroup.delegation = enterLeaf(id, delegated, missingControllers(delegated.dir, [...wanted]))
  return cgroup
}

/**
 * For tools and tests: make the cgroup of cgroupFor and write its limits,
 * all at once. The caller removes it with removeCgroup.
 */
export function createCgroup(id: string, limits: Limits, hierarchies = findHierarchies()): Cgroup {
  const cgroup = cgroupFor(id, limits, hierarchies)
  try {
    for (const { dir } of cgroup.dirs) mkdirSync(dir)
    for (const { dir, file, value } of cgroup.writes) writeFileSync(join(dir, file), value)
  } catch (err) {
    // Nothing has joined it yet: the empty directories go with a plain rmdir.
    for (const { dir } of cgroup.dirs) if (existsSync(dir)) rmdirSync(dir)
    throw err
  }
  return cgroup
}

// v2: a child cgroup gets a controller only if its parent lists it in
// cgroup.subtree_control. Add what is missing (only what we need).
function enableControllers(parent: string, controllers: Controller[]): Cgroup['writes'] {
  const missing = missingControllers(parent, controllers)
  return missing.length ? [{ dir: parent, file: 'cgroup.subtree_control', value: missing.map((c) => `+${c}`).join(' ') }] : []
}

// The controllers of `controllers` that `parent` does not give its children yet.
function missingControllers(parent: string, controllers: Controller[]): Controller[] {
  const enabled = readFileSync(join(parent, 'cgroup.subtree_control'), 'utf8').split(/\s+/)
  return controllers.filter((c) => !enabled.includes(c))
}

/**
 * Rootless, the cgroup a user may manage: cgroup v2 lets root delegate a
 * subtree by giving a user its directory and its cgroup.procs,
 * cgroup.subtree_control and cgroup.threads (cgroup-v2.rst, "Delegation");
 * systemd does so for a unit with Delegate=yes. `dir` is that cgroup, the
 * one this process started in; `leaf`, `dir`/cfs-<id>-step, is where the
 * run's own processes wait meanwhile (enterLeaf), and its name lists what
 * the run added to `dir`'s cgroup.subtree_control (`-step+pids+memory`), so
 * that `npm run clean` can take it back after a crash.
 */
export interface Delegation {
  dir: string
  leaf: string
  enabled: Controller[] // added to dir's cgroup.subtree_control by this run
  moved: number[] // this process, those that started it (npx, tsx) and those it started (tsx's esbuild), as found in dir
}

/**
 * Rootless, on cgroup v2: whether this process's own cgroup is delegated
 * to its user, for the `wanted` controllers. It is if the user may write
 * the directory, its cgroup.procs and cgroup.subtree_control, its
 * cgroup.controllers offers them all, and its processes are this one,
 * those that started it and those it started (the kernel enables
 * controllers only in a cgroup without processes of its own, so they must
 * all move: see enterLeaf).
 * Otherwise `why`, in a few words.
 */
export function findDelegation(
  wanted: Controller[], hierarchies = findHierarchies(), ownCgroup = readFileSync('/proc/self/cgroup', 'utf8'), pid = process.pid,
): { dir: string; controllers: string[]; processes: number[] } | { why: string } {
  const v2 = hierarchies.find((h) => h.version === 2)
  if (!v2) return { why: 'this host has no cgroup v2, the only kind a user can be given' }
  const offered = wanted.filter((c) => v2.controllers.includes(c))
  if (offered.length < wanted.length) {
    return { why: `this host keeps ${wanted.filter((c) => !offered.includes(c)).join(' and ')} on cgroup v1, whose cgroups are root's` }
  }
  // `0::/path` (cgroups(7)): the path from the mount's root (mountinfo's root field, usually /).
  const path = /^0::(\/.*)$/m.exec(ownCgroup)?.[1]
  const below = path === undefined ? undefined : relative(v2.root ?? '/', path)
  if (below === undefined || below.startsWith('..')) return { why: `this process's cgroup (${path ?? 'none'}) is not under ${v2.mountPoint}` }
  const dir = join(v2.mountPoint, below)
  const mayWrite = (file: string) => {
    try {
      accessSync(join(dir, file), constants.W_OK)
      return true
    } catch {
      return false
    }
  }
  if (!['', 'cgroup.procs', 'cgroup.subtree_control'].every(mayWrite)) return { why: `your cgroup, ${dir}, is not yours to change` }
  const controllers = readFileSync(join(dir, 'cgroup.controllers'), 'utf8').split(/\s+/).filter(Boolean)
  const missing = wanted.filter((c) => !controllers.includes(c))
  if (missing.length) return { why: `your cgroup, ${dir}, offers ${controllers.join(' ') || 'no controllers'} but not ${missing.join(' ')}` }
  const run = new Set<number>()
  for (let p = pid; p > 0 && !run.has(p); p = parentPid(p)) run.add(p)
  const processes = cgroupProcs(dir)
  // Ours too: what this process started, such as tsx's esbuild service (a child of the step's own Node).
  const started = (p: number) => {
    for (let q = parentPid(p), hops = 0; q > 1 && hops < 64; q = parentPid(q), hops++) if (q === pid) return true
    return false
  }
  const others = processes.filter((p) => !run.has(p) && !started(p))
  if (others.length) {
    return { why: `your cgroup, ${dir}, holds processes other than this run's (${others.slice(0, 5).join(' ')}${others.length > 5 ? ' …' : ''}), and the kernel gives controllers only to a cgroup with none of its own` }
  }
  return { dir, controllers, processes }
}

// How the learner started this program, for the one line: steps/09-userns (or the exercise).
function stepShown(): string {
  const script = relative(process.cwd(), process.argv[1] ?? '')
  return script.replace(/\/index\.ts$/, '') || 'steps/09-userns'
}

/** A leaf's name: `cfs-<id>-step`, and each controller the run added to its parent's cgroup.subtree_control: `+pids+memory`. */
export function leafName(id: string, enabled: Controller[]): string {
  return `${cgroupName(id)}-step${enabled.map((c) => `+${c}`).join('')}`
}

/** What leafName put in a name: the container id and the controllers, or undefined for another name. */
export function parseLeafName(name: string): { id: string; enabled: Controller[] } | undefined {
  const match = new RegExp(`^${PREFIX}-([0-9a-f]{12})-step((?:\\+[a-z]+)*)$`).exec(name)
  return match ? { id: match[1], enabled: match[2].split('+').filter(Boolean) as Controller[] } : undefined
}

/**
 * Move this process, and those that started it, from the delegated cgroup
 * into a leaf of their own: the "no internal processes" rule
 * (cgroup-v2.rst) lets a cgroup other than the root give controllers to
 * children (cgroup.subtree_control) only while no process is in it. Node
 * runs its 'exit' event however the run ends (exit, error, a signal the
 * step caught); leaveLeaf puts everything back then. A SIGKILL leaves it
 * all to `npm run clean`.
 */
export function enterLeaf(id: string, found: { dir: string; processes: number[] }, enabled: Controller[]): Delegation {
  const delegation: Delegation = { dir: found.dir, leaf: join(found.dir, leafName(id, enabled)), enabled, moved: [] }
  mkdirSync(delegation.leaf)
  process.once('exit', () => leaveLeaf(delegation))
  try {
    for (const pid of found.processes) {
      try {
        writeFileSync(join(delegation.leaf, 'cgroup.procs'), String(pid))
        delegation.moved.push(pid)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err // ESRCH: it ended meanwhile
      }
    }
  } catch (err) {
    leaveLeaf(delegation)
    throw new UsageError(`rootless: cannot move this run into ${delegation.leaf}: ${(err as Error).message}`)
  }
  return delegation
}

/**
 * Put back what enterLeaf and the run changed in the delegated cgroup,
 * once the container's cgroup is gone: take back the controllers the run
 * added to cgroup.subtree_control (unless another run's cgroup there is in
 * use), move every process of the leaf back, remove the leaf. Synchronous:
 * it runs in Node's 'exit' event. If the kernel refuses a process back,
 * one line says why, and the leaf is left to `npm run clean`.
 */
export function leaveLeaf(delegation: Delegation): void {
  const { dir, leaf, enabled } = delegation
  if (!existsSync(leaf)) return
  const inUse = listCgroups(dir).filter((name) => name.startsWith(`${PREFIX}-`) && join(dir, name) !== leaf && cgroupPopulated(join(dir, name)))
  const problems: string[] = []
  if (enabled.length && !inUse.length) {
    try {
      writeFileSync(join(dir, 'cgroup.subtree_control'), enabled.map((c) => `-${c}`).join(' '))
    } catch (err) {
      problems.push(`cgroup.subtree_control keeps ${enabled.join(' ')} (${(err as NodeJS.ErrnoException).code})`)
    }
  }
  const stuck: number[] = []
  for (const pid of cgroupProcs(leaf)) {
    try {
      writeFileSync(join(dir, 'cgroup.procs'), String(pid))
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ESRCH') continue
      stuck.push(pid)
      if (!problems.length) problems.push(`${code}${code === 'EBUSY' ? `: it takes no process while its cgroup.subtree_control gives controllers to ${inUse.join(' ') || 'its children'}` : ''}`)
    }
  }
  if (stuck.length) {
    process.stderr.write(`cfs: rootless: processes ${stuck.join(' ')} stay in ${leaf}: the kernel refused them back into ${dir} (${problems.join('; ')}); \`npm run clean\` removes it once they have ended\n`)
    return
  }
  try {
    rmdirSync(leaf)
  } catch (err) {
    problems.push(`rmdir: ${(err as NodeJS.ErrnoException).code}`)
  }
  if (problems.length) process.stderr.write(`cfs: rootless: ${dir} is not quite as it was: ${problems.join('; ')}; \`npm run clean\` tries again\n`)
}

/** The cgroups directly below `dir` (its subdirectories). */
export function listCgroups(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name)
  } catch {
    return []
  }
}

/** v2: whether a process is in the cgroup or below it (`populated 1` in cgroup.events); v1: in it. */
export function cgroupPopulated(dir: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'))
  } catch {
    return cgroupProcs(dir).length > 0
  }
}

/** The files and values that set `limits` for one controller, v1 or v2. */
export function limitFiles(version: 1 | 2, controller: Controller, limits: Limits): [string, string][] {
  const files: [string, string][] = []
  if (controller === 'pids' && limits.pids !== undefined) files.push(['pids.max', String(limits.pids)])
  if (controller === 'memory' && limits.memory !== undefined) {
    if (version === 2) files.push(['memory.max', String(limits.memory)], ['memory.swap.max', '0'])
    else files.push(['memory.limit_in_bytes', String(limits.memory)])
  }
  if (controller === 'cpu' && limits.cpus !== undefined) {
    const period = 100_000 // µs
    const quota = Math.round(limits.cpus * period)
    if (version === 2) files.push(['cpu.max', `${quota} ${period}`])
    else files.push(['cpu.cfs_period_us', String(period)], ['cpu.cfs_quota_us', String(quota)])
  }
  if (controller === 'cpu' && limits.cpuShares !== undefined) {
    // v2 has weights 1..10000 (default 100) where v1 had shares 2..262144
    // (default 1024); this is the conversion runc and crun use.
    if (version === 2) files.push(['cpu.weight', String(1 + Math.floor(((limits.cpuShares - 2) * 9999) / 262142))])
    else files.push(['cpu.shares', String(limits.cpuShares)])
  }
  return files
}

/** For tools and tests: put a process (0: the caller) in every directory of the cgroup, by writing its PID to cgroup.procs. */
export function joinCgroup(cgroup: Cgroup, pid = 0): void {
  for (const { dir } of cgroup.dirs) writeFileSync(join(dir, 'cgroup.procs'), String(pid))
}

/** The PIDs in a cgroup directory (empty if it is gone). */
export function cgroupProcs(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/**
 * rmdir(2) a cgroup directory, which the kernel allows only once no process
 * is left in it: first SIGKILL whatever is (v2: a write to cgroup.kill,
 * Linux 5.14+; v1: a kill(2) per process), then retry while rmdir says
 * EBUSY, until the dead are reaped: every 10 ms for up to 2 s, without
 * blocking, so signals still get answered. A directory already gone is fine.
 */
export async function rmdirCgroup(dir: string): Promise<void> {
  if (!existsSync(dir)) return
  if (existsSync(join(dir, 'cgroup.kill'))) writeFileSync(join(dir, 'cgroup.kill'), '1')
  for (let attempt = 0; ; attempt++) {
    for (const pid of cgroupProcs(dir)) kill(pid, SIGKILL)
    try {
      rmdirSync(dir)
      return
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return
      if (code !== 'EBUSY' || attempt >= 200) throw err
      await delay(10)
    }
  }
}

/** For tools and tests: rmdirCgroup every directory of a cgroup. */
export async function removeCgroup(cgroup: Pick<Cgroup, 'name' | 'dirs'>): Promise<void> {
  for (const { dir } of cgroup.dirs) await rmdirCgroup(dir)
}

/** How many times the OOM killer killed a process in this cgroup. */
export function oomKills(cgroup: Cgroup): number {
  const memory = cgroup.dirs.find((d) => d.controllers.includes('memory'))
  if (!memory) return 0
  const file = memory.version === 2 ? 'memory.events' : 'memory.oom_control'
  const match = readFileSync(join(memory.dir, file), 'utf8').match(/^oom_kill (\d+)$/m)
  return match ? Number(match[1]) : 0
}

/** Docker's size syntax: 100M, 1g, 512k, 1.5GiB, or plain bytes. */
export function parseSize(text: string, option = '--memory'): number {
  const match = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)(i?b)?$/i.exec(text.trim())
  const units: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }
  if (!match) throw new UsageError(`${option} \`${text}\`: expected a size such as 100M or 1G`)
  const bytes = Math.floor(Number(match[1]) * units[match[2].toLowerCase()])
  if (bytes < 6 * 1024 ** 2) throw new UsageError(`${option} \`${text}\`: the smallest limit is 6M (as in Docker)`)
  return bytes
}

/** A positive integer option, or `max` or -1 (no limit) where allowed. */
export function parseCount(text: string, option: string, allowMax = false): number | undefined {
  // -1 is Docker's "unlimited" (docker run --pids-limit -1); max is the kernel's word for it.
  if (allowMax && (text === 'max' || text === '-1')) return undefined
  if (!/^\d+$/.test(text) || Number(text) < 1) {
    throw new UsageError(`${option} \`${text}\`: expected a whole number of at least 1${allowMax ? ', or `max` (or -1) for no limit' : ''}`)
  }
  return Number(text)
}

/** --cpus: a positive decimal no larger than the CPUs this machine has. */
export function parseCpus(text: string): number {
  const cpus = Number(text)
  if (!/^\d*\.?\d+$/.test(text) || !(cpus >= 0.01)) throw new UsageError(`--cpus \`${text}\`: expected a number of CPUs such as 0.5 or 2`)
  if (cpus > availableParallelism()) throw new UsageError(`--cpus ${text}: this machine has only ${availableParallelism()} CPUs`)
  return cpus
}

/** Without --pids-limit a container may have this many processes: a fork bomb stops here. */
export const DEFAULT_PIDS_LIMIT = 512

/** The --pids-limit, --memory, --cpus and --cpu-shares options as Limits (Docker's names and syntax). */
export function limitsFromOptions(options: { 'pids-limit'?: string; memory?: string; cpus?: string; 'cpu-shares'?: string }): Limits {
  const shares = options['cpu-shares']
  if (shares !== undefined && (parseCount(shares, '--cpu-shares')! < 2 || Number(shares) > 262144)) {
    throw new UsageError(`--cpu-shares \`${shares}\`: expected a number from 2 to 262144 (the default weight is 1024)`)
  }
  return {
    pids: parseCount(options['pids-limit'] ?? String(DEFAULT_PIDS_LIMIT), '--pids-limit', true),
    memory: options.memory === undefined ? undefined : parseSize(options.memory),
    cpus: options.cpus === undefined ? undefined : parseCpus(options.cpus),
    cpuShares: shares === undefined ? undefined : Number(shares),
    asked: [options['pids-limit'], options.memory, options.cpus, shares].some((value) => value !== undefined),
  }
}
