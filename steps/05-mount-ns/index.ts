// Step 05: mount namespace, pivot_root and a minimal /dev
//
// Goal: give the container its own mount table. In a new mount namespace
// (CLONE_NEWNS) the child first makes every mount private, so nothing it
// mounts propagates to the host. It then swaps the root for the image with
// pivot_root, which, unlike chroot, leaves no way back: the old root is
// unmounted and gone. Last, it mounts /proc, a read-only /sys, and a /dev
// with only the devices a container needs. An IPC namespace (CLONE_NEWIPC)
// comes along: its message queues show in a mount, /dev/mqueue.
//
// Usage: npx tsx steps/05-mount-ns run [options] <command> [args...]   (--help lists the options)

import { mkdirSync } from 'node:fs'
import { hostname } from 'node:os'
import { parseRunArgs, requireRoot } from '../../shared/cli.ts'
import { Cleanup, newContainerId, reexecChild, waitForExit } from '../../shared/container.ts'
import { exitWithError } from '../../shared/errors.ts'
import { mountDev } from '../../shared/devices.ts'
import {
  mount, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, pivot_root, umount2,
} from '../../shared/mounts.ts'
import { CLONE_NEWIPC, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS } from '../../shared/namespaces.ts'
import { chdir, containerEnv, enterWorkdir, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../shared/process.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { openContainerTerminal, TerminalRelay } from '../../shared/terminal.ts'
import { sethostname } from '../../shared/uts.ts'
import { bindVolumes, type Volume } from '../../shared/volumes.ts'

const usage = `
Usage: npx tsx steps/05-mount-ns run [options] <command> [args...]

Run <command> as PID 1 of new UTS, PID, mount and IPC namespaces, with an image
as its root (pivot_root), /proc, /sys and a minimal /dev.

Options:
  -h, --hostname NAME  the container's hostname (default: its id)
  --image NAME|DIR  image name (see npm run rootfs) or a root filesystem directory
  -w, --workdir DIR  the command's working directory (default: /)
  -v, --volume HOST:CTR[:ro]  bind HOST, a path on this host, at CTR (:ro: read-only); repeatable

Examples:
  npx tsx steps/05-mount-ns run cat /proc/self/mountinfo
  npx tsx steps/05-mount-ns run -v /tmp:/mnt:ro ls /mnt
`

/** What the parent hands to the child. */
interface Container {
  id: string
  hostname: string // -h, or the id
  rootfs: string
  workdir: string // -w, or /
  volumes: Volume[] // -v HOST:CTR[:ro]
  command: string[]
  env: string[] // -e KEY=VALUE
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  const { options, command, env, volumes } = parseRunArgs(argv, {
    hostname: { type: 'string', short: 'h' },
    image: { type: 'string' },
    workdir: { type: 'string', short: 'w' },
    volume: { type: 'string', short: 'v', multiple: true },
  }, usage)
  requireRoot()
  const rootfs = await ensureImage(options.image)
  const id = newContainerId()
  await run({ id, hostname: options.hostname ?? id, rootfs, workdir: options.workdir ?? '/', volumes, command, env })
}

// Parent: start the child, wait for it, exit with its exit code.
async function run(container: Container): Promise<void> {
  const cleanup = new Cleanup()
  try {
    // With a terminal, the child gives the command one of the container's
    // own and sends us its master; we relay between it and ours.
    const terminal = new TerminalRelay()
    // A new IPC namespace too (CLONE_NEWIPC): System V IPC objects and POSIX
    // message queues of its own. It comes with the mount namespace: queues show
    // as files in an mqueue mount, as POSIX shared memory does in /dev/shm.
    const child = reexecChild(container, CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC, terminal.stdio())
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
  // Our own UTS namespace: this hostname is seen only in here.
  sethostname(container.hostname)
  // The host's / is usually a shared mount (`findmnt -o TARGET,PROPAGATION /`):
  // anything mounted under it would show up on the host too. MS_REC: all of
  // the tree, or mounts such as /dev/pts would still leak.
  mount(null, '/', null, MS_REC | MS_PRIVATE)
  pivotInto(container.rootfs, container.volumes)
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
  // -w: where the command starts (default /). It must be in the image: no overlay yet to make it in.
  enterWorkdir(container.workdir)
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

// Make `rootfs` the root of this mount namespace, with no way back to the host's.
function pivotInto(rootfs: string, volumes: Volume[]): void {
  // pivot_root needs the new root to be a mount point: bind it onto itself.
  // Not MS_REC: whatever the host has mounted inside the image stays out.
  mount(rootfs, rootfs, null, MS_BIND)
  // -v: each volume bound in now, inside the new root, while the host's paths are in view.
  bindVolumes(rootfs, volumes)
  chdir(rootfs)
  // "." for both: the old root ends up stacked on top of the new one, at /,
  // and needs no directory in the image (see pivot_root(2), NOTES).
  pivot_root('.', '.')
  // Detach the host's tree from ours; after this there is no path back to it.
  umount2('.', MNT_DETACH)
  chdir('/')
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
