// The cgroup v2 VM test's initramfs: busybox, the kernel's modules and the
// guest's init scripts, in a newc cpio archive written here.

import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { UsageError } from '../../shared/errors.ts'
import { repoDir } from '../../shared/settings.ts'
import type { Kernel } from './kernel.ts'

/** Where shared/settings.ts keeps state when CFS_HOME is not set; the guest uses it, on tmpfs. */
const defaultStateDir = '/var/lib/containers-from-scratch'
/** Where the guest mounts the host's results directory (boot()'s `resultsDir`), and the file in it its checks record to. */
const guestResultsDir = '/cfs-vm-results'
export const guestResults = 'results.jsonl'
/** A user made in the guest, not root: step 09 runs rootless as them (see checkDelegated in scripts/cgroup2-guest.ts). */
const guestUser = { name: 'cfs-guest', uid: 1500 }
/**
 * How much longer the checks in the guest wait for things (CFS_WAIT_SCALE,
 * see scripts/lib/wait.ts): a container start takes 2-3 s under tcg, against
 * 0.4 s on the host. The host's CFS_WAIT_SCALE, if set, wins.
 */
const waitScale = (accelerator: string) => process.env.CFS_WAIT_SCALE || (accelerator === 'tcg' ? '5' : '1')

/**
 * A newc cpio archive (what the kernel unpacks as its first root, see the
 * kernel's Documentation/driver-api/early-userspace/buffer-format.rst):
 * busybox, the modules, and /init.
 */
export function buildInitramfs(kernel: Kernel, accelerator: string): Buffer {
  const busybox = staticBusybox()
  const archive = new Cpio()
  for (const dir of ['bin', 'dev', 'proc', 'sys', 'modules', 'host', 'rw', 'newroot']) archive.add(dir, 0o040755)
  archive.add('dev/console', 0o020600, Buffer.alloc(0), [5, 1]) // the kernel opens it for init's stdio
  archive.add('bin/busybox', 0o100755, readFileSync(busybox))
  for (const name of kernel.modules) archive.add(`modules/${name}.ko`, 0o100644, readFileSync(join(kernel.dir, 'modules', `${name}.ko`)))
  const { init, stage2 } = initScripts(kernel, busybox, accelerator)
  archive.add('init', 0o100755, Buffer.from(init))
  archive.add('stage2', 0o100644, Buffer.from(stage2))
  return archive.finish()
}

/** The host's busybox, which must be static: it is the guests' first init, before any library is there. */
export function staticBusybox(): string {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))
  if (!busybox || !isStatic(busybox)) throw new UsageError('needs a static busybox for the guest: apt-get install busybox-static')
  return busybox
}

/**
 * The guest's PID 1, a busybox shell script: load the modules, mount the
 * host's root read-only over 9p with a tmpfs overlay on top (so /tmp,
 * node_modules/.cache and the like are writable, and nothing reaches the
 * host), cgroup2 alone at /sys/fs/cgroup, and make that the root with
 * switch_root. Not chroot: setns(2) into a mount namespace resets the
 * caller's root to the namespace's, so a step's parent, back from spawning
 * its child, would find itself in the initramfs and miss /sys/fs/cgroup.
 * Stage 2 (the host's own busybox, in the new root) runs the checks and
 * powers off.
 */
/** The guest's TMPDIR: a tmpfs of its own (see the init script). */
const scratchDir = '/cfs-vm-tmp'

function initScripts(kernel: Kernel, busybox: string, accelerator: string): { init: string; stage2: string } {
  const env = [
    `PATH=${dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    'HOME=/root', 'TERM=dumb', 'LANG=C.UTF-8', 'FORCE_COLOR=0', `CI=${process.env.CI ?? ''}`, `TMPDIR=${scratchDir}`,
    // Not 0 or unset: Debian's bash, started with a socket as stdin (Node's
    // pipes are socketpairs) and SHLVL below 2, takes itself for an sshd
    // session and reads ~/.bashrc, in every zx command. Whatever the host's
    // root keeps there (pyenv init, here) then runs before each container.
    'SHLVL=1',
    // Step 06's verify starts the step as plain JS (see scripts/lib/verify.ts,
    // stepCommand): 2-3 s a container under tcg, against 6-7 s through tsx.
    'CFS_VERIFY_LAUNCHER=node',
    `CFS_WAIT_SCALE=${waitScale(accelerator)}`,
    // The user that runs step 09 rootless in a delegated cgroup (stage 2 adds it to the guest's /etc/passwd).
    `CFS_GUEST_UID=${guestUser.uid}`,
    // The checks record their results here too, one JSON line each: on the host, in this run's results dir.
    `CFS_VERIFY_JSON=${guestResultsDir}/${guestResults}`,
  ]
  // Fresh tmpfs where the guest writes most, unless this repository or node
  // lives there (a CI clone in /tmp, say): then the overlay keeps it writable.
  const tmpfs = ['/tmp', '/run', '/dev/shm'].filter((dir) => ![repoDir, process.execPath].some((path) => path.startsWith(`${dir}/`)))
  const guest = [process.execPath, join(repoDir, 'node_modules/.bin/tsx'), join(repoDir, 'scripts/cgroup2-guest.ts')]
  const init = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "CGROUP2-RESULT: error: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# A process killed by SIGILL, SIGSEGV and the like gets a line on the console, with where it was.
echo 1 > /proc/sys/kernel/print-fatal-signals
# ...which the kernel prints at KERN_INFO: let those reach the console, despite \`quiet\`.
echo 7 > /proc/sys/kernel/printk
mount -t devtmpfs devtmpfs /dev
for m in ${kernel.modules.join(' ')}; do
  insmod /modules/$m.ko || fail "insmod $m"
done
# cache=loose: the host's files do not change during the run, and lookups over 9p are slow.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /host || fail "mount the host's root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay on the 9p root"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || fail "mount cgroup2"
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
for dir in ${tmpfs.join(' ')}; do mount -t tmpfs -o mode=1777 tmpfs /newroot$dir; done
# The state dir (default path, no CFS_HOME) on tmpfs: images and overlays need a local file system, not overlay.
mkdir -p /newroot${defaultStateDir} && mount -t tmpfs -o mode=0755 tmpfs /newroot${defaultStateDir}
# TMPDIR on a tmpfs of its own, always: the rootless runs keep their state (and their overlays) in temporary
# homes, and /tmp is the overlay above when this repository lives in /tmp (an overlay's upper dir cannot be one).
mkdir -p /newroot${scratchDir} && mount -t tmpfs -o mode=1777 tmpfs /newroot${scratchDir}
# The host's directory for the results, writable: the one thing the guest writes to the host.
mkdir -p /newroot${guestResultsDir} && mount -t 9p -o trans=virtio,version=9p2000.L results /newroot${guestResultsDir} || fail "mount the results directory over 9p"
cp /stage2 /newroot/cfs-vm-stage2
echo "CGROUP2-BOOTED: $(cut -d' ' -f1 /proc/uptime) s, $(uname -r), cgroup2 controllers: $(cat /newroot/sys/fs/cgroup/cgroup.controllers)"
exec switch_root /newroot ${busybox} sh /cfs-vm-stage2
`
  const stage2 = `cd ${repoDir}
# A user of the guest's own (its /etc is the overlay's: nothing reaches the host).
echo '${guestUser.name}:x:${guestUser.uid}:${guestUser.uid}:rootless user of the cgroup2 VM test:/nonexistent:/bin/sh' >> /etc/passwd
echo '${guestUser.name}:x:${guestUser.uid}:' >> /etc/group
/usr/bin/env -i ${env.join(' ')} sh -c '${process.env.CFS_VM_GUEST_CMD ?? `exec ${guest.join(' ')}`}'
echo "CGROUP2-EXIT: $?"
${busybox} poweroff -f
`
  return { init, stage2 }
}

/** Just enough of cpio's newc format for an initramfs. */
export class Cpio {
  private parts: Buffer[] = []
  private inode = 1

  /** One entry: `mode` includes the file type (S_IFDIR 0o040000, S_IFREG 0o100000, S_IFCHR 0o020000). */
  add(name: string, mode: number, data: Buffer = Buffer.alloc(0), [major, minor] = [0, 0]): void {
    const fields = [this.inode++, mode, 0, 0, 1, 0, data.length, 0, 0, major, minor, name.length + 1, 0]
    const header = `070701${fields.map((n) => n.toString(16).padStart(8, '0')).join('')}${name}\0`
    this.parts.push(pad(Buffer.from(header)), pad(data))
  }

  finish(): Buffer {
    this.add('TRAILER!!!', 0)
    return Buffer.concat(this.parts)
  }
}

// newc aligns headers and file data to 4 bytes.
function pad(buffer: Buffer): Buffer {
  return Buffer.concat([buffer, Buffer.alloc((4 - (buffer.length % 4)) % 4)])
}

/** Whether `file` is a static ELF: it has no PT_INTERP program header (no dynamic loader to name). */
export function isStatic(file: string): boolean {
  const fd = openSync(file, 'r')
  try {
    const header = Buffer.alloc(64)
    readSync(fd, header, 0, 64, 0)
    const phoff = Number(header.readBigUInt64LE(0x20))
    const count = header.readUInt16LE(0x38)
    const size = header.readUInt16LE(0x36)
    const table = Buffer.alloc(count * size)
    readSync(fd, table, 0, table.length, phoff)
    return Array.from({ length: count }, (_, i) => table.readUInt32LE(i * size)).every((type) => type !== 3)
  } finally {
    closeSync(fd)
  }
}
