// Control groups: limits on the pids, memory and CPU a container may use.
// See cgroups(7); the v2 files are in the kernel's Documentation/admin-guide/cgroup-v2.rst.
//
// A host has cgroup v1 (one hierarchy per controller, at /sys/fs/cgroup/pids,
// /sys/fs/cgroup/memory, ...), cgroup v2 (one tree, controllers listed in
// cgroup.controllers), or both ("hybrid": a controller lives in one or the
// other). So each controller is looked up on its own: v2 first, then v1.
// A container's cgroup is `cfs-<id>` at the root of each hierarchy it uses.

import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { UsageError } from './errors.ts'
import { readMountInfo } from './mounts.ts'
import { kill, SIGKILL } from './process.ts'
import { PREFIX, rootless } from './settings.ts'

export type Controller = 'pids' | 'memory' | 'cpu'
export const CONTROLLERS: Controller[] = ['pids', 'memory', 'cpu']

/** A mounted cgroup hierarchy: v1 (one per controller set) or v2 (the unified tree). */
export interface Hierarchy {
  version: 1 | 2
  mountPoint: string
  controllers: string[]
}

/** Every cgroup hierarchy mounted on this host, from /proc/self/mountinfo. */
export function findHierarchies(mountinfo = readMountInfo()): Hierarchy[] {
  return mountinfo.flatMap((m): Hierarchy[] => {
    if (m.fstype === 'cgroup2') {
      const file = join(m.mountPoint, 'cgroup.controllers')
      const controllers = existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean) : []
      return [{ version: 2, mountPoint: m.mountPoint, controllers }]
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
}

/** The cgroup name for a container id. */
export function cgroupName(id: string): string {
  return `${PREFIX}-${id}`
}

/**
 * Where the container's cgroup goes on this host and what to write to set
 * `limits`: the data only (a step makes the directories and writes the
 * files itself). The pids controller always, since the cgroup also tells
 * who is alive; memory and cpu when limited. Rootless (step 09): none, and
 * one line that says the limits are off.
 */
export function cgroupFor(id: string, limits: Limits, hierarchies = findHierarchies()): Cgroup {
  // Rootless: the cgroup tree is root's (unless the host delegates a subtree), so no cgroup.
  if (rootless) {
    process.stderr.write('cfs: rootless: the cgroups are root\'s, so limits are off\n')
    return { name: cgroupName(id), dirs: [], writes: [] }
  }
  const wanted = new Set<Controller>(['pids'])
  if (limits.memory !== undefined) wanted.add('memory')
  if (limits.cpus !== undefined || limits.cpuShares !== undefined) wanted.add('cpu')
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
  const enabled = readFileSync(join(parent, 'cgroup.subtree_control'), 'utf8').split(/\s+/)
  const missing = controllers.filter((c) => !enabled.includes(c))
  return missing.length ? [{ dir: parent, file: 'cgroup.subtree_control', value: missing.map((c) => `+${c}`).join(' ') }] : []
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

/** A positive integer option, or `max` (no limit) where allowed. */
export function parseCount(text: string, option: string, allowMax = false): number | undefined {
  if (allowMax && text === 'max') return undefined
  if (!/^\d+$/.test(text) || Number(text) < 1) {
    throw new UsageError(`${option} \`${text}\`: expected a whole number of at least 1${allowMax ? ', or `max` for no limit' : ''}`)
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
  }
}
