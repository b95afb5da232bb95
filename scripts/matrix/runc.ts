// The matrix's runc column: the same probe script on the same private image,
// run by runc, the OCI runtime under Docker and containerd, for a column to
// hold the steps against. The bundle's config.json is what `runc spec`
// writes, with only what the probes need changed (notes/isolation-matrix.md
// lists each change): Docker's 14 capabilities, no terminal, the image, the
// command, the limits the steps get, a network namespace on the project's
// bridge, and names the clean-up finds.

import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { findControllers } from '../../shared/cgroups.ts'
import { allocateNetwork, BRIDGE, ipAsync, releaseNetwork, type Network } from '../../shared/net.ts'
import { stateDir } from '../../shared/settings.ts'
import { onPath } from '../lib/files.ts'
import type { Host } from './host.ts'
import { LIMITS } from './probes.ts'

/** The column's name, beside the steps'. */
export const RUNC = 'runc'

/** runc's state directory (`runc --root`) for the matrix's containers, where npm run clean looks. */
export const RUNC_ROOT = join(stateDir, 'runc')

/** Docker's default capabilities (moby, oci/caps/defaults.go), in bounding, effective and permitted. */
export const DOCKER_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL', 'CAP_AUDIT_WRITE',
]

/** Why the runc column cannot be measured on this host; undefined if it can. */
export function runcMissing(): string | undefined {
  return onPath('runc') ? undefined : 'runc is not installed (apt-get install runc)'
}

/** A runc container made for one run: the command that runs it, and how to remove it. */
export interface RuncContainer {
  id: string
  command: string[] // runc … run, in the foreground: its stdio is the container's
  kill: () => void // SIGKILL its processes (the watchdog, Ctrl-C)
  remove: () => Promise<void> // the container, its cgroup, network namespace, veth pair and bundle
}

/**
 * A bundle in the host's directory and a network namespace on the bridge for
 * a container that runs `sh /<script> /`. The container itself is made by
 * running `command`.
 */
export async function prepareRunc(host: Host, u: string, script: string): Promise<RuncContainer> {
  // cfs-…: npm run clean finds the cgroups runc makes (its cgroupsPath, below) by the project's prefix.
  const id = `cfs-matrix-${u}`
  const bundle = join(host.dir, `runc-${u}`)
  const netns = `cfsm-runc-${process.pid}`
  let network: Network | undefined
  const runc = (...args: string[]) => spawnSync('runc', ['--root', RUNC_ROOT, ...args], { encoding: 'utf8' })
  const container: RuncContainer = {
    id,
    command: ['runc', '--root', RUNC_ROOT, 'run', '--bundle', bundle, id],
    kill: () => void runc('kill', '--all', id, 'KILL'),
    remove: async () => {
      runc('delete', '--force', id)
      try {
        rmdirSync(RUNC_ROOT) // only if no other run's container is in it
      } catch {}
      // The veth pair goes with the namespace; then the lease (and the bridge, if last).
      spawnSync('ip', ['netns', 'delete', netns])
      await releaseNetwork(network)
    },
  }
  try {
    mkdirSync(bundle)
    const spec = spawnSync('runc', ['spec', '--bundle', bundle], { encoding: 'utf8' })
    if (spec.status !== 0) throw new Error(`runc spec --bundle ${bundle}: ${spec.error?.message ?? spec.stderr.trim()}`)
    // A network namespace of the project's, on its bridge, as step 08's: the network probes compare the two.
    // The lease's id names the host's veth, cfs<id>: 15 characters at most.
    // Not isolated from the host's services (--network-isolation=off): Docker's default, which this column shows.
    network = await allocateNetwork(`m${process.pid}`, { isolated: false })
    execFileSync('ip', ['netns', 'add', netns])
    await ipAsync(`link add ${network.hostVeth} type veth peer name eth0 netns ${netns}`, `link set ${network.hostVeth} master ${BRIDGE} up`)
    execFileSync('ip', ['-n', netns, '-batch', '-'], {
      input: `link set lo up\naddr add ${network.address}/${network.prefix} dev eth0\nlink set eth0 up\nroute add default via ${network.gateway}\n`,
    })
    const file = join(bundle, 'config.json')
    writeFileSync(file, JSON.stringify(adjustSpec(JSON.parse(readFileSync(file, 'utf8')), host, id, script, netns), null, 2))
    return container
  } catch (err) {
    await container.remove()
    throw err
  }
}

// The changes to `runc spec`'s config.json; everything else stays as runc
// wrote it (masked and read-only /proc paths, devices cgroup, no seccomp).
function adjustSpec(spec: OciSpec, host: Host, id: string, script: string, netns: string): OciSpec {
  // Docker keeps these 14; runc's own default is 3 (and them ambient too, which Docker does not set).
  spec.process.capabilities = { bounding: DOCKER_CAPABILITIES, effective: DOCKER_CAPABILITIES, permitted: DOCKER_CAPABILITIES }
  // The probe script reads the handshake from stdin: pipes, not a terminal.
  spec.process.terminal = false
  spec.process.args = ['sh', `/${script}`, '/']
  spec.process.cwd = '/'
  // The private image; writable, as the steps' are: the probes make files and mounts in it.
  spec.root = { path: host.rootfs, readonly: false }
  spec.hostname = `cfsm-runc-${process.pid}`
  // What the steps get from --pids-limit and --memory. Swap: on cgroup v2 the steps set memory.swap.max to 0, so runc
  // gets swap = limit (memory plus swap); on v1 they set memory.limit_in_bytes alone, and so does runc.
  const memory = LIMITS.memoryMiB * 1024 * 1024
  const v2 = findControllers().get('memory')?.version === 2
  spec.linux.resources = { ...spec.linux.resources, pids: { limit: LIMITS.pids }, memory: { limit: memory, ...(v2 ? { swap: memory } : {}) } }
  spec.linux.cgroupsPath = `/${id}`
  spec.linux.namespaces = spec.linux.namespaces.map((ns) => (ns.type === 'network' ? { type: 'network', path: `/run/netns/${netns}` } : ns))
  return spec
}

// The parts of an OCI runtime spec (config.json) the column changes.
interface OciSpec {
  process: { terminal: boolean; args: string[]; cwd: string; capabilities: Record<string, string[]> }
  root: { path: string; readonly: boolean }
  hostname: string
  linux: {
    resources: Record<string, unknown>
    cgroupsPath?: string
    namespaces: { type: string; path?: string }[]
  }
}
