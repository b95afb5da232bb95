// Step 08: network namespace
//
// Goal: give the container a network of its own that can still talk. In a
// new network namespace (CLONE_NEWNET) there is only `lo`, down. The parent
// plugs a veth pair in: one end on a bridge on the host, the other inside as
// eth0, with an address no other running container has. The child, which
// waits on the pipe from step 06, hears its address there once the parent is
// done, then brings lo and eth0 up and routes via the bridge, so the command
// never starts before its network is ready. The host routes for the
// bridge: NAT out to the world, published ports in (-p), and a firewall
// between containers and the host's own services (shared/firewall.ts).
//
// Usage: npx tsx steps/08-net run [options] <command> [args...]   (--help lists the options)

import { mkdirSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { parseRunArgs, requireRoot } from '../../shared/cli.ts'
import {
  childStarted, Cleanup, newContainerId, reexecChild, STDIO_WITH_SYNC, tellChild, waitForExit, waitForParent,
} from '../../shared/container.ts'
import { exitWithError } from '../../shared/errors.ts'
import { cgroupFor, DEFAULT_PIDS_LIMIT, limitsFromOptions, rmdirCgroup, type Limits } from '../../shared/cgroups.ts'
import { mountDev } from '../../shared/devices.ts'
import {
  mount, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, pivot_root, umount2,
} from '../../shared/mounts.ts'
import { CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS } from '../../shared/namespaces.ts'
import {
  addAddress, addDefaultRoute, allocateNetwork, BRIDGE, etcVolumes, ipAsync, linkUp, networkFromOptions, releaseNetwork, writeEtcFiles,
  type Network,
} from '../../shared/net.ts'
import { createContainerDir, keepContainerDir, overlayDirs, removeContainerDir } from '../../shared/overlay.ts'
import { chdir, containerEnv, enterWorkdir, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../shared/process.ts'
import { imageLayers, withImageConfig } from '../../shared/image-config.ts'
import { openContainerTerminal, TerminalRelay } from '../../shared/terminal.ts'
import { sethostname } from '../../shared/uts.ts'
import { bindVolumes, type Volume } from '../../shared/volumes.ts'

const usage = `
Usage: npx tsx steps/08-net run [options] <command> [args...]

Run <command> as PID 1 of new UTS, PID, mount, IPC and network namespaces, on a
copy-on-write overlay of an image (pivot_root), with /proc, /sys and a
minimal /dev, in its own cgroup, with eth0 on the host's ${BRIDGE} bridge,
which routes it to the outside (NAT).

Options:
  -h, --hostname NAME  the container's hostname (default: its id)
  --image NAME|DIR  image name (see npm run rootfs) or a root filesystem directory
  -w, --workdir DIR  the command's working directory (default: /)
  -v, --volume HOST:CTR[:ro]  bind HOST, a path on this host, at CTR (:ro: read-only); repeatable
  --keep              keep the container's directory (its changes) after it ends
  --pids-limit N|max|-1  most processes at once (default: ${DEFAULT_PIDS_LIMIT}; max or -1: no limit)
  -m, --memory SIZE   memory limit, e.g. 100M or 1G; beyond it the OOM killer acts
  --cpus N            CPU time, in CPUs, e.g. 0.5
  -c, --cpu-shares N  CPU weight relative to others (default 1024)
  -p, --publish HOSTPORT:PORT[/udp]  the host's port to the container's (not on 127.0.0.1); repeatable
  --network bridge|none|host  bridge (default); none: only lo; host: the host's own network
  --network-isolation on|off  off: the container may reach the host's own services
  --dns ADDR          the container's nameserver (default: the host's); repeatable

Examples:
  npx tsx steps/08-net run ip addr show eth0
  npx tsx steps/08-net run --name web -p 8080:80 httpd -f -p 80 -h /etc
    (then, on the host: curl http://<a host address, not 127.0.0.1>:8080/hostname; npm run stop -- web)
`

/** What the parent hands to the child. */
interface Container {
  id: string
  hostname: string // -h, or the id
  lowerdirs: string[] // the image's layers, top first
  workdir: string // -w, or the image's WorkingDir, or /
  volumes: Volume[] // -v HOST:CTR[:ro]
  command: string[]
  env: string[] // -e KEY=VALUE
  dir: string // <state dir>/containers/<id>: upper/, work/, merged/
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  const { options, command, env, volumes } = parseRunArgs(argv, {
    hostname: { type: 'string', short: 'h' },
    image: { type: 'string' },
    workdir: { type: 'string', short: 'w' },
    volume: { type: 'string', short: 'v', multiple: true },
    keep: { type: 'boolean' },
    'pids-limit': { type: 'string' },
    memory: { type: 'string', short: 'm' },
    cpus: { type: 'string' },
    'cpu-shares': { type: 'string', short: 'c' },
    publish: { type: 'string', short: 'p', multiple: true },
    network: { type: 'string' },
    'network-isolation': { type: 'string' },
    dns: { type: 'string', multiple: true },
  }, usage, { commandFromImage: true })
  const limits = limitsFromOptions(options)
  const net = networkFromOptions(options)
  requireRoot()
  const image = await imageLayers(options.image)
  // What runs, with what, where: the command line's over the image's config, as Docker merges them.
  const config = withImageConfig(image.config, { command, env, workdir: options.workdir })
  const id = newContainerId()
  await run({ id, hostname: options.hostname ?? id, lowerdirs: image.lowerdirs, volumes, ...config }, limits, net, options.keep)
}

// Parent: start the child, wait for it, exit with its exit code.
async function run(container: Omit<Container, 'dir'>, limits: Limits, net: ReturnType<typeof networkFromOptions>, keep = false): Promise<void> {
  const cleanup = new Cleanup()
  try {
    // A cgroup is a directory in a cgroup filesystem: one in each hierarchy
    // that holds a controller we use (v2: one tree; v1: one per controller).
    const cgroup = cgroupFor(container.id, limits)
    // At the end, however it ends: rmdir, which the kernel allows once no
    // process is left in it (rmdirCgroup SIGKILLs the rest first).
    cleanup.defer(async () => {
      for (const { dir } of cgroup.dirs) await rmdirCgroup(dir)
    })
    for (const { dir } of cgroup.dirs) mkdirSync(dir)
    // A limit is a write to one of its files: pids.max, memory.max, cpu.max…
    for (const { dir, file, value } of cgroup.writes) writeFileSync(join(dir, file), value)
    const dir = createContainerDir(container.id, container.lowerdirs)
    // The overlay is mounted in the container's mount namespace and goes with it.
    cleanup.defer(() => (keep ? keepContainerDir(dir) : removeContainerDir(dir)))
    // With a terminal, the child gives the command one of the container's
    // own and sends us its master; we relay between it and ours.
    const terminal = new TerminalRelay()
    // A new IPC namespace too (CLONE_NEWIPC): System V IPC objects and POSIX
    // message queues of its own. It comes with the mount namespace: queues show
    // as files in an mqueue mount, as POSIX shared memory does in /dev/shm.
    // --network host: no network namespace, the host's own interfaces.
    const flags = CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | (net.mode === 'host' ? 0 : CLONE_NEWNET)
    const child = reexecChild({ ...container, dir }, flags, terminal.stdio(STDIO_WITH_SYNC))
    // If setting up fails here, the child, still waiting on the pipe, must not outlive us.
    cleanup.defer(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'))
    // The child waits on a pipe until we say so. Joining is a write too: its
    // PID to cgroup.procs, once its Node has started (memory is charged where
    // it is allocated), before it runs anything of its own.
    await childStarted(child)
    for (const { dir } of cgroup.dirs) writeFileSync(join(dir, 'cgroup.procs'), String(child.pid))
    // Its network namespace exists now: a free address, the bridge up, and
    // the host's nftables table rewritten for it: NAT out, its -p ports in,
    // the firewall (shared/firewall.ts). Not for --network none or host.
    const network = net.mode === 'bridge' ? await allocateNetwork(container.id, net) : undefined
    // The veth pair goes with the container's namespace; free the address (the bridge and the table, if last).
    cleanup.defer(() => releaseNetwork(network))
    // A veth pair is a virtual cable. One end is made right inside the child's
    // network namespace (`netns <pid>`), as its eth0; ours plugs into the bridge.
    if (network) await ipAsync(
      `link add ${network.hostVeth} type veth peer name eth0 netns ${child.pid}`,
      `link set ${network.hostVeth} master ${BRIDGE} up`,
      // Hairpin: the bridge may send a frame back out of the port it came in
      // by, as when a container reaches its own -p port through the host.
      `link set ${network.hostVeth} type bridge_slave hairpin on`,
    )
    // Its own /etc/resolv.conf, hosts and hostname, which the child binds over the image's.
    writeEtcFiles(dir, { hostname: container.hostname, mode: net.mode, address: network?.address, dns: net.dns })
    // Go on, with this address.
    tellChild(child, { network })
    process.exitCode = await waitForExit(child, terminal)
  } finally {
    await cleanup.run()
  }
  process.exit()
}

// Child: set up the container from the inside, then become the command.
function child(container: Container): void {
  // If the parent dies (even by SIGKILL), the kernel kills us too.
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Wait until the parent has put us in our cgroup and eth0 in our network
  // namespace: from here on, everything we do, and the command, is limited.
  const { network } = waitForParent<{ network?: Network }>()
  // Our own UTS namespace: this hostname is seen only in here.
  sethostname(container.hostname)
  // eth0 is here now, and the parent told us its address: loopback and eth0
  // up, the address on eth0, the default route through the bridge. With
  // ioctls of our own (shared/net.ts), not `ip`: a program started now would
  // count against pids.max, where Node's threads are already.
  // --network none: lo alone; host: the host's own lo, up already.
  linkUp('lo')
  if (network) {
    addAddress('eth0', network.address, network.prefix)
    linkUp('eth0')
    addDefaultRoute(network.gateway)
  }
  // The host's / is usually a shared mount (`findmnt -o TARGET,PROPAGATION /`):
  // anything mounted under it would show up on the host too. MS_REC: all of
  // the tree, or mounts such as /dev/pts would still leak.
  mount(null, '/', null, MS_REC | MS_PRIVATE)
  // overlayfs: the image's layers, read-only and shared by every container,
  // below (lowerdir, top first); our writes go to upperdir, workdir is overlayfs's
  // scratch space (on upperdir's filesystem), and merged shows them as one tree.
  const { upper, work, merged } = overlayDirs(container.dir)
  mount('overlay', merged, 'overlay', 0, `lowerdir=${container.lowerdirs.join(':')},upperdir=${upper},workdir=${work}`)
  pivotInto(merged, [...etcVolumes(container.dir), ...container.volumes])
  // A proc filesystem shows the PID namespace of the process that mounts it.
  mount('proc', '/proc', 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC)
  // sysfs read-only: the container may read the kernel's view of devices and settings, not change it.
  mount('sysfs', '/sys', 'sysfs', MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
  // A /dev of its own: a tmpfs with the few devices programs expect (null, zero,
  // random, tty…) and a devpts of its own, none of the host's disks.
  mountDev('/dev')
  // POSIX message queues: an mqueue filesystem, like proc, shows the IPC
  // namespace of whoever mounts it, so the container sees only its own.
  mkdirSync('/dev/mqueue')
  mount('mqueue', '/dev/mqueue', 'mqueue', MS_NOSUID | MS_NODEV | MS_NOEXEC)
  // A terminal of the container's own, if the parent has one to relay: a pty
  // from our devpts, the command's controlling terminal and fds 0-2, so that
  // nothing in here holds the host's (shared/terminal.ts).
  openContainerTerminal()
  // -w: where the command starts (default /), made if missing: in our upper dir, not in the image.
  enterWorkdir(container.workdir, { create: true })
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

// Make `rootfs` the root of this mount namespace, with no way back to the host's.
function pivotInto(rootfs: string, volumes: Volume[]): void {
  // pivot_root needs the new root to be a mount point: bind it onto itself.
  // Not MS_REC: whatever the host has mounted inside the image stays out.
  mount(rootfs, rootfs, null, MS_BIND)
  // -v: each volume bound in now, inside the new root, while the host's paths are in view;
  // a missing target is made, in our upper dir.
  bindVolumes(rootfs, volumes, { create: true })
  chdir(rootfs)
  // "." for both: the old root ends up stacked on top of the new one, at /,
  // and needs no directory in the image (see pivot_root(2), NOTES).
  pivot_root('.', '.')
  // Detach the host's tree from ours; after this there is no path back to it.
  umount2('.', MNT_DETACH)
  chdir('/')
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
