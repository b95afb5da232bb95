// Mounts: mount(2), umount2(2), pivot_root(2), chroot(2), openat2(2),
// mount_setattr(2), and reading the mount table (/proc/PID/mountinfo, see proc(5)).

import { existsSync, readFileSync, realpathSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { UsageError } from './errors.ts'
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
// Calls newer than 5.0 have one number on every architecture.
const SYS_openat2 = 437 // Linux 5.6
const SYS_mount_setattr = 442 // Linux 5.12

// openat2(2): open_how.flags and .resolve.
export const O_PATH = 0o10000000 // the same on x86_64 and arm64
export const O_CLOEXEC = 0o2000000
export const RESOLVE_IN_ROOT = 0x10
// mount_setattr(2).
export const AT_EMPTY_PATH = 0x1000
export const AT_RECURSIVE = 0x8000
export const MOUNT_ATTR_RDONLY = 0x1

/** The most of mount(2)'s `data` the kernel reads: one page, its last byte made NUL (fs/namespace.c, path_mount). */
export const MOUNT_DATA_MAX = 4095

/**
 * mount(2). Options longer than MOUNT_DATA_MAX are refused here: the kernel
 * would cut them off without a word, and an overlay's cut-off list of
 * layers can still name directories that exist. An overlay's layers, full
 * paths of 64-digit names, fill that page at about 37: past that, they go
 * by their short links instead (shortLowerdirs), as Docker's do.
 */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null = null,
): void {
  if (data !== null && Buffer.byteLength(data) > MOUNT_DATA_MAX) {
    const short = fstype === 'overlay' ? shortLowerdirs(data) : undefined
    if (short) return inDirectory(short.dir, () => mount(source, target, fstype, flags, short.data))
    throw new UsageError(`mount \`${target}\`: its options are ${Buffer.byteLength(data)} bytes, and mount(2) reads ${MOUNT_DATA_MAX}, one page: ${fstype === 'overlay' ? 'an image of this many layers does not fit here (fewer layers, or a shorter CFS_HOME)' : 'fewer options'}`)
  }
  check('mount', raw.mount(source, target, fstype, flags, data), target, {
    ENOENT: `the mount point \`${target}\` does not exist`,
    ENODEV: `the kernel does not know the filesystem type \`${fstype}\``,
  })
}

/** A layer's short link, beside it in its store: `l/` and the first 16 digits of its name (and its `@<uid>`, if shifted). */
export function shortLink(layer: string): string {
  const name = basename(layer)
  return join(dirname(layer), 'l', name.slice(0, 16) + (name.includes('@') ? name.slice(name.indexOf('@')) : ''))
}

// An overlay's options with its lowerdirs as `l/<16 digits>`, relative to
// the store they share (the kernel reads a relative path from the mounting
// process's working directory), if every one has its short link
// (shared/overlay.ts, linkLayers) and that fits the page; else undefined.
function shortLowerdirs(data: string): { dir: string; data: string } | undefined {
  const lowerdirs = /(?:^|,)lowerdir=([^,]*)/.exec(data)?.[1].split(':') ?? []
  const dir = dirname(lowerdirs[0] ?? '')
  const linked = (layer: string) => dirname(layer) === dir && existsSync(shortLink(layer)) && realpathSync(shortLink(layer)) === realpathSync(layer)
  if (!lowerdirs.length || !lowerdirs.every(linked)) return undefined
  const short = data.replace(/(^|,)lowerdir=[^,]*/, `$1lowerdir=${lowerdirs.map((layer) => `l/${basename(shortLink(layer))}`).join(':')}`)
  return Buffer.byteLength(short) > MOUNT_DATA_MAX ? undefined : { dir, data: short }
}

// Run `action` with `dir` as the working directory, then go back.
function inDirectory<T>(dir: string, action: () => T): T {
  const back = process.cwd()
  process.chdir(dir)
  try {
    return action()
  } finally {
    process.chdir(back)
  }
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

/**
 * openat2(2): open `path` below the directory `dirfd` with open_how's
 * `flags` and `resolve` (RESOLVE_IN_ROOT: `dirfd` is `/` for the lookup,
 * `..` and absolute symlinks included). Returns the new fd. glibc has no
 * wrapper, so this goes through syscall(2).
 */
export function openat2(dirfd: number, path: string, flags: number, resolve: number): number {
  const how = Buffer.alloc(24) // struct open_how: flags, mode, resolve, each a u64
  how.writeBigUInt64LE(BigInt(flags), 0)
  how.writeBigUInt64LE(BigInt(resolve), 16)
  return Number(check('openat2', raw.syscall(SYS_openat2, 'int', dirfd, 'const char *', path, 'void *', how, 'size_t', how.length) as number, path, {
    ENOSYS: 'openat2 needs Linux 5.6 or newer',
  }))
}

/**
 * mount_setattr(2): set (`set`) and clear (`clear`) MOUNT_ATTR_* flags on the
 * mount at `path` below `dirfd`; `flags` AT_RECURSIVE: on every mount under
 * it too, AT_EMPTY_PATH: on `dirfd`'s own mount (path '').
 */
export function mount_setattr(dirfd: number, path: string, flags: number, set: number, clear = 0): void {
  const attr = Buffer.alloc(32) // struct mount_attr: attr_set, attr_clr, propagation, userns_fd, each a u64
  attr.writeBigUInt64LE(BigInt(set), 0)
  attr.writeBigUInt64LE(BigInt(clear), 8)
  check('mount_setattr', raw.syscall(SYS_mount_setattr, 'int', dirfd, 'const char *', path, 'unsigned int', flags, 'void *', attr, 'size_t', attr.length) as number, path || undefined, {
    ENOSYS: 'mount_setattr needs Linux 5.12 or newer',
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
