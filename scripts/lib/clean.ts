// Finding and removing what the project may have left on the host after a
// crash (a parent killed with SIGKILL cannot clean up after itself):
// mounts under the state dir, cfs-* cgroups (at the top, and, of a rootless
// step 09 or 10, in a user's delegated cgroup), cfs* interfaces and netns,
// the nftables table `inet cfs` and the forwarding settings it came with,
// container directories, stale address leases, an image import's
// temporary directories (never an image or a layer: npm run images -- prune
// removes layers), and the isolation matrix's runc containers, cfsm-* keys
// and "cfs" System V shared memory segments.
// Only things with the project's prefix or under its state dir are ever
// looked at. The one leftover finder: npm run clean, the stress run, the
// tests and the verify scripts all look through findLeftovers().

import { execFileSync } from 'node:child_process'
import { existsSync, readlinkSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import {
  cgroupPopulated, cgroupProcs, findHierarchies, listCgroups, parseLeafName, removeCgroup,
} from '../../shared/cgroups.ts'
import { MNT_DETACH, readMountInfo, umount2 } from '../../shared/mounts.ts'
import { BRIDGE, deleteInterface, liveLeases, readLease } from '../../shared/net.ts'
import { deleteTable, restoreForwarding, savedForwarding, TABLE, tableExists } from '../../shared/firewall.ts'
import { removeContainerDir } from '../../shared/overlay.ts'
import { isStaleLock } from '../../shared/lock.ts'
import { isRunning } from '../../shared/procfs.ts'
import { containersDir, imagesDir, layersDir, PREFIX, stateDir } from '../../shared/settings.ts'
import { alive, readClaims, readStates, runDir, statusOf } from '../../shared/state.ts'
import { RUNC_ROOT } from '../matrix/runc.ts'
import { findKeys, findSegments, keyctl_invalidate, shmctl_rmid } from './kernel-objects.ts'
import { invokingUser, invokingUserDataDir } from './owner.ts'
import { listDir, onPath, readText } from './files.ts'
import { cmdline, findProcesses } from './procfs.ts'

/** Something the project made: what it is, whether a running container still uses it, how to remove it. */
export interface Leftover {
  kind: 'mount' | 'cgroup' | 'interface' | 'netns' | 'nftables table' | 'forwarding' | 'container dir' | 'store temp' | 'lease' | 'lock' | 'runc container' | 'key' | 'shm' | 'state file'
  name: string
  inUse: string | false // why it must stay, if it must
  remove: () => unknown // may return a promise
  id?: string // the container it belongs to, when its name or content says
}

/**
 * What a user's rootless runs (steps 09 and 10, without sudo) may leave, as
 * that user sees it: container directories and state files in their state
 * dir, cgroups in a cgroup delegated to them. Only what the user owns.
 */
export function ownLeftovers(): Leftover[] {
  const mine = (item: Leftover) => {
    try {
      return statSync(item.name).uid === process.getuid?.()
    } catch {
      return false
    }
  }
  return findLeftovers(['container dir', 'cgroup', 'state file']).filter(mine)
}

/** Everything the project has on this host right now, or only things of these kinds (read-only: removes nothing). */
export function findLeftovers(kinds?: Leftover['kind'][]): Leftover[] {
  const wanted = (...some: Leftover['kind'][]) => !kinds || some.some((kind) => kinds.includes(kind))
  return [
    ...(wanted('mount') ? mounts() : []),
    ...(wanted('runc container') ? runcContainers() : []),
    ...(wanted('cgroup') ? cgroups() : []),
    ...(wanted('interface') ? interfaces() : []),
    ...(wanted('netns') ? netns() : []),
    ...(wanted('nftables table', 'forwarding') ? firewall() : []),
    ...(wanted('container dir') ? containerDirs() : []),
    ...(wanted('store temp', 'lock') ? storeTemps() : []),
    ...(wanted('lease', 'lock') ? leases() : []),
    ...(wanted('key') ? keys() : []),
    ...(wanted('shm') ? segments() : []),
    ...(wanted('state file', 'lock') ? stateFiles() : []),
  ].filter((item) => wanted(item.kind))
}

/**
 * What containers with these ids left on the host, as "kind: name": their
 * cgroups, container directories, veths, mounts (under their directories,
 * or anywhere under `imageDir`), their address leases (stale, or still
 * held by a parent that lives on), and the processes whose argv holds one
 * of `markers`. For the tests and the stress run, which must tell their
 * own containers' leftovers from those of others running meanwhile.
 */
export function leftoversOf(ids: string[], imageDir: string | undefined, markers: string[]): string[] {
  const wanted = new Set(ids)
  const found = findLeftovers(['cgroup', 'container dir', 'interface', 'lease', 'mount', 'state file'])
    .filter((item) => (item.id !== undefined && wanted.has(item.id)) || (imageDir !== undefined && item.kind === 'mount' && item.name.includes(` on ${imageDir}/`)))
    .map((item) => `${item.kind}: ${item.name}`)
  const leasesDir = join(stateDir, 'net', 'leases')
  for (const lease of liveLeases()) if (wanted.has(lease.id)) found.push(`lease: ${join(leasesDir, lease.address)} (its parent ${lease.pid} is still running)`)
  const markerSet = new Set(markers)
  for (const pid of findProcesses((argv) => argv.some((arg) => markerSet.has(arg)))) found.push(`process: ${pid}`)
  return found
}

/**
 * Remove the leftovers no running container uses; with `all`, stop running
 * containers' cgroups and remove kept container directories too.
 */
export async function clean(all = false, rootless = false): Promise<{ removed: Leftover[]; kept: Leftover[]; failed: { item: Leftover; error: string }[] }> {
  const removed: Leftover[] = []
  const kept: Leftover[] = []
  const failed: { item: Leftover; error: string }[] = []
  // Order matters: runc's containers and cgroups first (kills processes), then mounts, then the rest.
  const order = ['runc container', 'cgroup', 'mount', 'interface', 'netns', 'nftables table', 'forwarding', 'container dir', 'store temp', 'lease', 'lock', 'key', 'shm', 'state file']
  const items = (rootless ? ownLeftovers() : findLeftovers()).sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind))
  for (const item of items) {
    if (item.inUse && !all) {
      kept.push(item)
      continue
    }
    try {
      await item.remove()
      removed.push(item)
    } catch (err) {
      failed.push({ item, error: (err as Error).message })
    }
  }
  // The bridge goes last, once no container's lease holds it.
  if (!rootless && existsSync(`/sys/class/net/${BRIDGE}`) && liveLeases().length === 0) {
    const bridge: Leftover = { kind: 'interface', name: `${BRIDGE} (bridge)`, inUse: false, remove: () => deleteInterface(BRIDGE) }
    try {
      await bridge.remove()
      removed.push(bridge)
    } catch (err) {
      failed.push({ item: bridge, error: (err as Error).message })
    }
  }
  return { removed, kept, failed }
}

// Mounts at or under the state dir, deepest first. One is in use if a
// process has its root in the image it belongs to (step 04's /proc).
function mounts(): Leftover[] {
  const roots = processRoots()
  return readMountInfo()
    .filter((m) => m.mountPoint.startsWith(`${stateDir}/`))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length)
    .map((m) => {
      const user = roots.find((r) => m.mountPoint.startsWith(`${r.root}/`))
      return {
        kind: 'mount' as const,
        name: `${m.fstype} on ${m.mountPoint}`,
        inUse: user ? `process ${user.pid} runs in ${user.root}` : false,
        remove: () => umount2(m.mountPoint, MNT_DETACH),
        id: m.mountPoint.startsWith(`${containersDir}/`) ? idIn(m.mountPoint.slice(containersDir.length + 1).split('/')[0]) : undefined,
      }
    })
}

// The isolation matrix's runc containers (runc.ts), in the project's own
// runc state directory; in use while the matrix run named in their id
// (cfs-matrix-<pid>-runc) lives. runc delete --force kills what runs in one
// and removes its cgroups.
function runcContainers(): Leftover[] {
  if (!onPath('runc') || !existsSync(RUNC_ROOT)) return []
  let list: { id: string }[] = []
  try {
    list = JSON.parse(execFileSync('runc', ['--root', RUNC_ROOT, 'list', '--format', 'json'], { encoding: 'utf8' })) ?? []
  } catch {
    return []
  }
  return list.map(({ id }) => {
    const pid = Number(/-(\d+)-/.exec(id)?.[1])
    return {
      kind: 'runc container' as const,
      name: `${id} (runc --root ${RUNC_ROOT})`,
      inUse: pid > 0 && isRunning(pid) ? `its matrix run ${pid} is running` : false,
      remove: () => {
        execFileSync('runc', ['--root', RUNC_ROOT, 'delete', '--force', id], { stdio: 'ignore' })
        if (listDir(RUNC_ROOT).length === 0) rmdirSync(RUNC_ROOT)
      },
    }
  })
}

// cfs-* directories at the root of every cgroup hierarchy, v1 and v2, made
// by root; and, on v2, anywhere below, what a rootless step 09 made in a
// cgroup delegated to its user (its container's cfs-<id>, and
// cfs-<id>-step…, the leaf its own processes moved to; see Delegation in
// shared/cgroups.ts). A cfs-* cgroup at the root that root gave to a user
// is such a delegated cgroup (the cgroup2 VM test makes one): the user's,
// not a leftover. Not those of runc's containers, which runc removes with
// them. Deepest first, a container's cgroup before its run's leaf: each is
// removed only once what is below it is gone.
function cgroups(): Leftover[] {
  const runc = new Set(runcContainers().map((c) => c.name.split(' ')[0]))
  const ours = (h: { mountPoint: string }, dir: string) => {
    const name = basename(dir)
    if (!name.startsWith(`${PREFIX}-`) || runc.has(name)) return false
    if (dirname(dir) !== h.mountPoint) return idIn(name.slice(PREFIX.length + 1)) !== undefined || parseLeafName(name) !== undefined
    return ownerOf(dir) === 0
  }
  const found = findHierarchies().flatMap((h) => {
    const dirs = h.version === 2 ? treeBelow(h.mountPoint) : listCgroups(h.mountPoint).map((name) => join(h.mountPoint, name))
    return dirs.filter((dir) => ours(h, dir)).map((dir) => cgroupLeftover(h.version, dir))
  })
  const depth = (item: Leftover) => item.name.split('/').length
  const isLeaf = (item: Leftover) => Number(parseLeafName(basename(item.name)) !== undefined)
  return found.sort((a, b) => depth(b) - depth(a) || isLeaf(a) - isLeaf(b))
}

function ownerOf(path: string): number | undefined {
  try {
    return statSync(path).uid
  } catch {
    return undefined
  }
}

// Every cgroup below `top` in a v2 tree (not `top` itself).
function treeBelow(top: string): string[] {
  return listCgroups(top).flatMap((name) => [join(top, name), ...treeBelow(join(top, name))])
}

function cgroupLeftover(version: 1 | 2, dir: string): Leftover {
  const name = basename(dir)
  const leaf = parseLeafName(name)
  const id = leaf?.id ?? idIn(name.slice(PREFIX.length + 1))
  const procs = cgroupProcs(dir).length
  // A rootless run's leaf holds the step (and npx, tsx) while it runs.
  const stepAlive = !leaf && id !== undefined && listCgroups(dirname(dir)).some((other) => parseLeafName(other)?.id === id && cgroupPopulated(join(dirname(dir), other)))
  return {
    kind: 'cgroup' as const,
    name: dir,
    inUse: procs ? `${procs} processes in it` : cgroupPopulated(dir) ? 'processes in a cgroup below it'
      : stepAlive ? 'its rootless step is running' : !leaf && starting(name) ? 'its container is starting' : false,
    // A leaf holds none of the container's processes, only the user's own (the step, npx,
    // tsx): it is never killed, even with --all; rmdir says EBUSY while they live.
    remove: async () => {
      if (!leaf) return removeCgroup({ name, dirs: [{ version, dir, controllers: [] }] })
      if (existsSync(dir)) rmdirSync(dir)
      giveBackControllers(dirname(dir), leaf.enabled)
    },
    id,
  }
}

// After a rootless run's leaf: take back from the delegated cgroup's
// cgroup.subtree_control the controllers that run added (its leaf's name
// lists them), once no cfs-* cgroup is left there to need them.
function giveBackControllers(parent: string, enabled: string[]): void {
  if (listCgroups(parent).some((name) => name.startsWith(`${PREFIX}-`))) return
  const on = readText(join(parent, 'cgroup.subtree_control')).split(/\s+/)
  const off = enabled.filter((c) => on.includes(c))
  if (off.length) writeFileSync(join(parent, 'cgroup.subtree_control'), off.map((c) => `-${c}`).join(' '))
}

// A container's cgroup is empty until its parent puts the child in. Meanwhile
// the parent is alive and owns the container's directory (steps 07-08), or
// the child's argv (its config) holds the container's id.
function starting(name: string): boolean {
  const id = name.slice(PREFIX.length + 1)
  const parent = Number(readText(join(containersDir, id, 'parent.pid')))
  if (parent > 0 && isRunning(parent)) return true
  return listDir('/proc').some((pid) => /^\d+$/.test(pid) && cmdline(Number(pid)).some((arg) => arg.includes(`"id":"${id}"`)))
}

// cfs<id> veth ends; in use while their container holds an address lease.
function interfaces(): Leftover[] {
  const live = new Set(liveLeases().map((lease) => `${PREFIX}${lease.id}`))
  return listDir('/sys/class/net')
    .filter((name) => name.startsWith(PREFIX) && name !== BRIDGE)
    .map((name) => ({
      kind: 'interface' as const,
      name,
      inUse: live.has(name) ? 'its container is running' : false,
      remove: () => deleteInterface(name),
      id: idIn(name.slice(PREFIX.length)),
    }))
}

// The project's nftables table and the interfaces whose forwarding it
// turned on (shared/firewall.ts), once no container is left to use them:
// the last one out removes them itself, unless it was killed.
function firewall(): Leftover[] {
  if (liveLeases().length) return []
  const saved = Object.entries(savedForwarding())
  return [
    ...(tableExists() ? [{ kind: 'nftables table' as const, name: `inet ${TABLE}`, inUse: false as const, remove: deleteTable }] : []),
    ...(saved.length ? [{ kind: 'forwarding' as const, name: saved.map(([name, was]) => `net.ipv4.conf.${name}.forwarding back to ${was}`).join(', '), inUse: false as const, remove: restoreForwarding }] : []),
  ]
}

// Named network namespaces (ip netns) with the project's prefix, made by exercises and tests.
function netns(): Leftover[] {
  return listDir('/run/netns')
    .filter((name) => name.startsWith(PREFIX))
    .map((name) => ({
      kind: 'netns' as const,
      name,
      inUse: false,
      remove: () => void execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' }),
    }))
}

// <state dir>/containers/<id>: in use while its parent lives; kept on purpose with --keep.
// Under sudo, also the invoking user's, where the rootless step 09 keeps them.
function containerDirs(): Leftover[] {
  const user = invokingUser()
  const dirs = [containersDir, ...(user ? [join(user.home, '.local', 'share', 'containers-from-scratch', 'containers')] : [])]
  return [...new Set(dirs)].flatMap((parentDir) => listDir(parentDir).map((id) => {
    const dir = join(parentDir, id)
    const parent = Number(readText(join(dir, 'parent.pid')))
    const alive = parent > 0 && isRunning(parent) && existsSync(join(dir, 'merged')) && !existsSync(join(dir, 'kept'))
    return {
      kind: 'container dir' as const,
      name: dir,
      inUse: existsSync(join(dir, 'kept')) ? 'kept with --keep (--all removes it)' : alive ? `its parent ${parent} is running` : false,
      remove: () => removeContainerDir(dir),
      id: idIn(id),
    }
  }))
}

// What an image import (shared/layers.ts) or npm run images had under way
// in the store when it died: .tmp-<pid>-… in layers/ and images/, a layer
// half unpacked, an image half written, an old copy on its way out. In use
// while that process lives. And the store's lock, left by a crash.
function storeTemps(): Leftover[] {
  const lock = join(layersDir, '.lock')
  const stale: Leftover[] = isStaleLock(lock)
    ? [{ kind: 'lock', name: lock, inUse: false, remove: () => rmdirSync(lock) }]
    : []
  return stale.concat([layersDir, imagesDir].flatMap((dir) => listDir(dir).flatMap((name) => {
    const pid = Number(/^\.tmp-(\d+)-/.exec(name)?.[1])
    if (!pid) return []
    const path = join(dir, name)
    return [{
      kind: 'store temp' as const,
      name: path,
      inUse: isRunning(pid) ? `its process ${pid} is running` : false,
      remove: () => rmSync(path, { recursive: true, force: true }),
    }]
  })))
}

// Address leases whose parent is gone, and a lock left by a crash.
function leases(): Leftover[] {
  const netDir = join(stateDir, 'net')
  const stale: Leftover[] = listDir(join(netDir, 'leases')).flatMap((address) => {
    const file = join(netDir, 'leases', address)
    const { id = '', pid = 0 } = readLease(file) ?? {}
    return pid > 0 && isRunning(pid) ? [] : [{ kind: 'lease' as const, name: file, inUse: false as const, remove: () => rmSync(file, { force: true }), id: idIn(id) }]
  })
  const lock = join(netDir, 'lock')
  if (isStaleLock(lock)) {
    stale.push({ kind: 'lock', name: lock, inUse: false, remove: () => rmdirSync(lock) })
  }
  return stale
}

// The isolation matrix's keys (cfsm-hostkey-<pid>, cfsm-probekey-<pid>-…)
// that root may view; in use while the matrix run named in them lives.
function keys(): Leftover[] {
  return findKeys(`${PREFIX}m-`).map(({ serial, description }) => {
    const pid = Number(/-(\d+)(-|$)/.exec(description)?.[1])
    return {
      kind: 'key' as const,
      name: `${description} (${serial.toString(16)})`,
      inUse: pid > 0 && isRunning(pid) ? `its matrix run ${pid} is running` : false,
      remove: () => keyctl_invalidate(serial),
    }
  })
}

// System V shared memory segments under the project's keys (0x636673NN);
// in use while the process that made one (a matrix run) lives.
function segments(): Leftover[] {
  return findSegments().map(({ key, id, creator }) => ({
    kind: 'shm' as const,
    name: `key 0x${key.toString(16)} (id ${id})`,
    inUse: isRunning(creator) ? `its maker ${creator} is running` : false,
    remove: () => shmctl_rmid(id),
  }))
}

// State files (shared/state.ts), root's and, under sudo, the invoking user's
// (rootless steps 09-10): in use while the container's parent or PID 1
// runs; a --name claim while it holds; and the claims' lock after a crash.
// --all stops a container that still runs by a SIGKILL to its PID 1, as
// removing its cgroup does from step 06 on.
function stateFiles(): Leftover[] {
  const dirs = [...new Set([stateDir, invokingUserDataDir() ?? stateDir])].map(runDir)
  return dirs.flatMap((dir) => {
    const found: Leftover[] = readStates(dir).map(({ file, state }) => {
      const status = statusOf(state)
      return {
        kind: 'state file' as const,
        name: file,
        inUse: status === 'stale' ? false : `its container is ${status === 'parent gone' ? `running as PID ${state.pid1.pid}, its parent gone` : status}`,
        remove: () => {
          if (alive(state.pid1)) process.kill(state.pid1.pid, 'SIGKILL')
          rmSync(file, { force: true })
        },
        id: idIn(state.id),
      }
    })
    for (const claim of readClaims(dir)) {
      found.push({ kind: 'state file', name: claim.file, inUse: claim.inUse && 'its container is running', remove: () => rmSync(claim.file, { force: true }), id: idIn(claim.id) })
    }
    const lock = join(dir, 'lock')
    if (isStaleLock(lock)) found.push({ kind: 'lock', name: lock, inUse: false, remove: () => rmdirSync(lock) })
    return found
  })
}

// A container id (12 hex digits, see newContainerId), or undefined.
function idIn(text: string | undefined): string | undefined {
  return text && /^[0-9a-f]{12}$/.test(text) ? text : undefined
}

// The root directory of every process, as the host sees it (not '/').
function processRoots(): { pid: number; root: string }[] {
  return listDir('/proc')
    .filter((name) => /^\d+$/.test(name))
    .flatMap((pid) => {
      try {
        const root = readlinkSync(`/proc/${pid}/root`)
        return root === '/' ? [] : [{ pid: Number(pid), root }]
      } catch {
        return []
      }
    })
}
