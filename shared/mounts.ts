// Mounts: mount(2), umount2(2), pivot_root(2), chroot(2), and reading the
// mount table (/proc/PID/mountinfo, see proc(5)).

import { readFileSync } from 'node:fs'
import { check, raw } from './libc.ts'

// mount(2) flags, from <sys/mount.h>.
export const MS_RDONLY = 1
export const MS_NOSUID = 2
export const MS_NODEV = 4
export const MS_NOEXEC = 8
export const MS_REMOUNT = 32
export const MS_BIND = 4096
export const MS_MOVE = 8192
export const MS_REC = 16384
export const MS_PRIVATE = 1 << 18
export const MS_SLAVE = 1 << 19
export const MS_SHARED = 1 << 20
// umount2(2) flags.
export const MNT_FORCE = 1
export const MNT_DETACH = 2

const SYS_pivot_root = 155 // x86_64; see syscall(2)
const SYS_pivot_root_arm64 = 41

/** mount(2) */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null = null,
): void {
  check('mount', raw.mount(source, target, fstype, flags, data), target, {
    ENOENT: `the mount point \`${target}\` does not exist`,
    ENODEV: `the kernel does not know the filesystem type \`${fstype}\``,
  })
}

/** umount2(2) */
export function umount2(target: string, flags = 0): void {
  check('umount2', raw.umount2(target, flags), target)
}

/**
 * pivot_root(2): make `newRoot` the root of this mount namespace and put the
 * old root at `putOld`. glibc has no wrapper, so this goes through syscall(2).
 */
export function pivot_root(newRoot: string, putOld: string): void {
  const nr = process.arch === 'arm64' ? SYS_pivot_root_arm64 : SYS_pivot_root
  check('pivot_root', raw.syscall(nr, 'const char *', newRoot, 'const char *', putOld) as number, newRoot, {
    EINVAL: 'the new root must be a mount point (bind it onto itself) and / must not be a shared mount (make it private first)',
    // The kernel says EBUSY when the new root is on the current root's filesystem.
    EBUSY: 'the new root must be a mount point of its own: bind it onto itself first',
  })
}

/** chroot(2) */
export function chroot(path: string): void {
  check('chroot', raw.chroot(path), path)
}

/** One line of /proc/PID/mountinfo. */
export interface MountInfo {
  id: number
  parent: number
  root: string
  mountPoint: string
  options: string
  propagation: string // 'shared:1', 'master:2', or '' for private
  fstype: string
  source: string
  superOptions: string // per-superblock options; for cgroup v1, its controllers
}

/** Parse /proc/PID/mountinfo (proc(5)): the mount table as the kernel sees it. */
export function readMountInfo(pid: number | 'self' = 'self'): MountInfo[] {
  return readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .trim()
    .split('\n')
    .map((line) => {
      const [left, right] = line.split(' - ')
      const [id, parent, , root, mountPoint, options, ...optional] = left.split(' ')
      const [fstype, source, superOptions] = right.split(' ')
      return {
        id: Number(id),
        parent: Number(parent),
        root: unescape(root),
        mountPoint: unescape(mountPoint),
        options,
        propagation: optional.join(' '),
        fstype,
        source: unescape(source),
        superOptions,
      }
    })
}

// mountinfo escapes spaces and other bytes as \040 (octal).
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)))
}

/** Unmount `target` (lazily, MNT_DETACH) if something is mounted there; false if not. */
export function unmountIfMounted(target: string): boolean {
  if (!readMountInfo().some((m) => m.mountPoint === target)) return false
  umount2(target, MNT_DETACH)
  return true
}
