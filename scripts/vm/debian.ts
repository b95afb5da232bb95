// The systemd VM test's guest: a Debian root file system with systemd as
// PID 1, as a learner's laptop has it, built once with mmdebstrap into an
// ext4 image and kept in the VM directory beside the busybox guest's
// kernel. Its name holds a key of its recipe (suite, packages, the files
// written into it): change the recipe and the next run builds a new one.
// Also the guest's initramfs: Debian's own kernel (the image's
// linux-image-amd64) needs virtio_blk and ext4, which are modules, to
// reach the image; a busybox script loads them and hands over to systemd.

import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { UsageError } from '../../shared/errors.ts'
import { readMountInfo } from '../../shared/mounts.ts'
import { onPath } from '../lib/files.ts'
import { Cpio, staticBusybox } from './initramfs.ts'
import { decompress, moduleName, resolveModules } from './kernel.ts'

/** The newest Debian release first; the next is tried when the mirror does not serve one (the reason is printed). */
const suites = ['trixie', 'bookworm']
/**
 * What a learner's Debian has for the workshop: systemd as init with
 * logind (libpam-systemd: a login gets a session scope and user@UID.service),
 * sudo, and what README asks for (busybox-static, iproute2, nftables); the kernel,
 * whose modules the guest loads from the image (overlay, bridge, veth).
 */
const packages = [
  'systemd', 'systemd-sysv', 'dbus', 'libpam-systemd', 'udev', 'login', 'sudo', 'kmod', 'procps', 'iproute2', 'nftables', 'busybox-static', 'linux-image-amd64',
]
/** The learner: not root, sudo without a password (nobody types it), uid 1000 as a desktop installer makes the first user. */
export const learner = { name: 'learner', uid: 1000 }
/** Where the guest mounts the host's results directory (9p, tag `results`). */
export const resultsMount = '/cfs-vm-results'
/**
 * The modules the initramfs loads to mount the disks and the results directory (built-in ones are
 * skipped); ext4 needs crc32c, a soft dependency modinfo does not list.
 */
const bootModules = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4', '9pnet_virtio', '9p', 'virtio_net']
/**
 * The guest's network, as a laptop has one: qemu's user-mode network with
 * restrict=on (no way out), its usual address. Step 08's verify needs the
 * host to have an address outside the loopback (it refuses a CFS_SUBNET
 * that clashes with it).
 */
export const guestNetwork = { address: '10.0.2.15/24', gateway: '10.0.2.2' }
/** The image's size (sparse): the system takes about 400 MB, the rest is room for the run (writes go to a qemu snapshot). */
const imageSize = '2G'

/**
 * Files written into the root file system after mmdebstrap, as [path, mode, text].
 * Changing any of them changes the recipe's key, so the image is built again.
 */
const files: [string, number, string][] = [
  ['/etc/hostname', 0o644, 'cfs-vm\n'],
  ['/etc/hosts', 0o644, '127.0.0.1 localhost\n127.0.1.1 cfs-vm\n'],
  // Nothing to mount: the initramfs mounts the image, the learner's home and the results (see initramfs()),
  // so that systemd waits for no device unit (that wait was 30 s of the boot under emulation).
  ['/etc/fstab', 0o644, '# the initramfs mounts /, the learner\'s home and the results directory (scripts/vm/debian.ts)\n'],
  // One machine id for every run of this image: otherwise each boot is a first boot.
  ['/etc/machine-id', 0o444, 'cf5c0de0000000000000000000000001\n'],
  // A console login as on a laptop's screen: agetty logs the learner in, login(1) runs PAM, and
  // pam_systemd puts the shell in session-N.scope and starts user@1000.service.
  ['/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf', 0o644,
    `[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin ${learner.name} --noclear --keep-baud 115200 - vt100\n`],
  ['/etc/sudoers.d/learner', 0o440, `${learner.name} ALL=(ALL) NOPASSWD: ALL\n`],
]
/**
 * Units a VM without a screen, a network, a clock or a disk to keep does not
 * need, nor a learner's checks: each took seconds of the boot under
 * emulation (systemd-analyze blame). None has to do with cgroups or logins.
 */
const masked = [
  'getty@tty1.service', 'apt-daily.timer', 'apt-daily-upgrade.timer', 'dpkg-db-backup.timer', 'fstrim.timer', 'e2scrub_all.timer',
  'systemd-random-seed.service', 'ldconfig.service', 'systemd-journal-catalog-update.service', 'systemd-update-done.service', 'systemd-hwdb-update.service',
  'modprobe@drm.service', 'modprobe@efi_pstore.service', 'modprobe@fuse.service', 'systemd-pstore.service',
  'sys-fs-fuse-connections.mount', 'sys-kernel-config.mount', 'sys-kernel-debug.mount', 'sys-kernel-tracing.mount', 'dev-hugepages.mount',
]
/** Bumped when the build below changes in a way the recipe does not show. */
const buildVersion = 2

/** A built guest: the image, and the kernel and initramfs to boot it with, all in `dir`. */
export interface DebianGuest {
  dir: string
  suite: string
  image: string // <dir>/rootfs.ext4, the root file system
  kernel: string // <dir>/vmlinuz
  initramfs: string // <dir>/initramfs.cpio
  release: string // uname -r
  packages: string // `linux-image-… <version>, systemd <version>`
  built: { seconds: number; note?: string }
}

/** The recipe's key: the same recipe gives the same directory name. */
function recipeKey(suite: string): string {
  const recipe = JSON.stringify({ buildVersion, suite, packages, files, masked, learner, bootModules, guestNetwork, imageSize })
  return createHash('sha256').update(recipe).digest('hex').slice(0, 12)
}

/**
 * The cached guest in `vmDir` for this recipe, or a new one: mmdebstrap
 * the newest suite the mirror serves, write `files`, make the learner,
 * mask `masked`, take the kernel and the boot modules out, make the ext4
 * image. About 2 minutes, once (the download is most of it).
 */
export function ensureDebianGuest(vmDir: string, log: (line: string) => void = console.log): DebianGuest {
  for (const suite of suites) {
    const dir = join(vmDir, `debian-${suite}-${recipeKey(suite)}`)
    if (existsSync(join(dir, 'guest.json'))) return inDir(dir, JSON.parse(readFileSync(join(dir, 'guest.json'), 'utf8')))
  }
  if (!onPath('mmdebstrap')) throw new UsageError('the systemd guest is built with mmdebstrap: apt-get install mmdebstrap')
  if (!onPath('mkfs.ext4')) throw new UsageError('the systemd guest\'s image is made with mkfs.ext4: apt-get install e2fsprogs')
  const tmp = join(vmDir, `build-${process.pid}`)
  // The root file system outside the state dir: mmdebstrap mounts /proc, /sys and /dev in it while it
  // works, and mounts under the state dir are what `npm run clean` (and the tests' leftover checks) remove.
  const scratch = join(tmpdir(), `cfs-vm-build-${process.pid}`)
  removeStaleScratch()
  for (const dir of [tmp, scratch]) {
    rmSync(dir, { recursive: true, force: true })
    mkdirSync(dir)
  }
  try {
    const started = Date.now()
    const tried: string[] = []
    for (const suite of suites) {
      const root = join(scratch, 'root')
      removeUnmounted(root)
      log(`building the systemd guest: mmdebstrap --variant=minbase ${suite} (once; kept in ${vmDir})`)
      const built = spawnSync('mmdebstrap', ['--variant=minbase', `--include=${packages.join(',')}`, suite, root], { encoding: 'utf8' })
      if (built.status !== 0) {
        const why = (built.stderr || built.error?.message || '').trim().split('\n').filter((l) => l.startsWith('E:')).join(' ') || `exit ${built.status}`
        tried.push(`${suite}: ${why}`)
        log(`mmdebstrap ${suite} failed (${why})${suite === suites.at(-1) ? '' : `: trying ${suites[suites.indexOf(suite) + 1]}`}`)
        continue
      }
      const staging = join(tmp, 'guest')
      mkdirSync(staging)
      const guest = configure(root, staging, suite, { seconds: Math.round((Date.now() - started) / 1000), note: tried.length ? `not ${tried.join('; ')}` : undefined })
      writeFileSync(join(staging, 'guest.json'), `${JSON.stringify(guest, null, 2)}\n`) // last: marks it complete
      const dir = join(vmDir, `debian-${suite}-${recipeKey(suite)}`)
      try {
        renameSync(staging, dir)
      } catch (err) {
        // Another run built the same recipe meanwhile: use that one.
        if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      removeOlder(vmDir, dir)
      return inDir(dir, guest)
    }
    throw new UsageError(`mmdebstrap could not build any of ${suites.join(', ')}: ${tried.join('; ')}`)
  } finally {
    rmSync(tmp, { recursive: true, force: true })
    removeUnmounted(scratch)
  }
}

// Root file systems of builds killed half-way (cfs-vm-build-<pid> of a process that is gone).
function removeStaleScratch(): void {
  for (const name of readdirSync(tmpdir())) {
    const pid = /^cfs-vm-build-(\d+)$/.exec(name)?.[1]
    if (pid && Number(pid) !== process.pid && !existsSync(`/proc/${pid}`)) removeUnmounted(join(tmpdir(), name))
  }
}

// rm -r, unless something is still mounted below `dir` (a killed mmdebstrap's /dev would take the host's nodes along).
function removeUnmounted(dir: string): void {
  const mounted = readMountInfo().filter((m) => m.mountPoint.startsWith(`${dir}/`))
  if (mounted.length) console.log(`left ${dir}: ${mounted.map((m) => m.mountPoint).join(', ')} still mounted there`)
  else rmSync(dir, { recursive: true, force: true })
}

/** The guest as kept in guest.json, with its files' paths in `dir`. */
function inDir(dir: string, guest: Omit<DebianGuest, 'dir' | 'image' | 'kernel' | 'initramfs'>): DebianGuest {
  return { ...guest, dir, image: join(dir, 'rootfs.ext4'), kernel: join(dir, 'vmlinuz'), initramfs: join(dir, 'initramfs.cpio') }
}

// Write the recipe's files, make the learner, mask units, and put the image, the kernel and the initramfs in `staging`.
function configure(root: string, staging: string, suite: string, built: DebianGuest['built']): Omit<DebianGuest, 'dir' | 'image' | 'kernel' | 'initramfs'> {
  for (const [path, mode, text] of files) {
    mkdirSync(dirname(join(root, path)), { recursive: true })
    writeFileSync(join(root, path), text)
    chmodSync(join(root, path), mode)
  }
  run('chroot', [root, 'useradd', '--no-create-home', '--uid', String(learner.uid), '--shell', '/bin/bash', learner.name])
  mkdirSync(join(root, 'home', learner.name), { recursive: true })
  mkdirSync(join(root, resultsMount))
  run('chroot', [root, 'systemctl', 'mask', ...masked])
  const release = readdirSync(join(root, 'lib/modules'))[0]
  copyFileSync(join(root, 'boot', `vmlinuz-${release}`), join(staging, 'vmlinuz'))
  writeFileSync(join(staging, 'initramfs.cpio'), initramfs(join(root, 'lib/modules', release)))
  const version = (pkg: string) => run('chroot', [root, 'dpkg-query', '-W', '-f', '${Package} ${Version}', pkg])
  run('mkfs.ext4', ['-q', '-F', '-L', 'cfs-debian', '-d', root, join(staging, 'rootfs.ext4'), imageSize])
  return {
    suite, release,
    packages: [version(`linux-image-${release}`), version('systemd')].join(', '), built,
  }
}

/**
 * The guest's first root: the host's static busybox and the modules that
 * reach the disks. Its /init mounts the image (/dev/vda) as /, the
 * learner's home (/dev/vdb) and the results (9p), brings eth0 up, and hands over to systemd,
 * with nothing on the kernel's command line about cgroups: systemd mounts
 * cgroup2 alone at /sys/fs/cgroup, Debian's default since bookworm.
 */
function initramfs(modulesDir: string): Buffer {
  const archive = new Cpio()
  for (const dir of ['bin', 'dev', 'proc', 'sys', 'modules', 'newroot']) archive.add(dir, 0o040755)
  archive.add('dev/console', 0o020600, Buffer.alloc(0), [5, 1])
  archive.add('bin/busybox', 0o100755, readFileSync(staticBusybox()))
  const modules = resolveModules(modulesDir, bootModules)
  for (const file of modules) archive.add(`modules/${moduleName(file)}.ko`, 0o100644, decompress(file))
  archive.add('init', 0o100755, Buffer.from(`#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "SYSTEMD-RESULT: error: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${modules.map(moduleName).join(' ')}; do
  insmod /modules/$m.ko || fail "insmod $m"
done
mount -t ext4 -o rw,noatime /dev/vda /newroot || fail "mount the image"
mount -t ext4 -o rw,noatime /dev/vdb /newroot/home/${learner.name} || fail "mount the learner's home"
mount -t 9p -o trans=virtio,version=9p2000.L results /newroot${resultsMount} || fail "mount the results directory over 9p"
ip link set lo up
ip link set eth0 up && ip addr add ${guestNetwork.address} dev eth0 && ip route add default via ${guestNetwork.gateway} || fail "eth0"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
`))
  return archive.finish()
}

// Earlier builds of the same guest (another recipe key): a run of older code may still read one, so only those not touched for a day.
function removeOlder(vmDir: string, keep: string): void {
  for (const name of readdirSync(vmDir)) {
    const dir = join(vmDir, name)
    if (!name.startsWith('debian-') || dir === keep) continue
    const json = join(dir, 'guest.json')
    const age = existsSync(json) ? Date.now() - statSync(json).mtimeMs : Infinity
    if (age > 86_400_000) rmSync(dir, { recursive: true, force: true })
  }
}

function run(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8' })
  if (result.status !== 0) throw new UsageError(`${command} ${args.join(' ')}: exit ${result.status}: ${(result.stderr || result.error?.message || '').trim()}`)
  return result.stdout.trim()
}
