// -v HOST:CTR[:ro]: host paths bound into the container, as Docker's bind
// volumes. The child makes them in its own mount namespace, after the new
// root is bound onto itself and before pivot_root: the host's paths are
// still in view, the targets are inside the new root, and the binds stay
// the container's (its mounts are private: the host never sees them).

import { closeSync, constants, fstatSync, mkdirSync, openSync, readlinkSync, statSync } from 'node:fs'
import { basename, dirname, relative } from 'node:path'
import { SyscallError, UsageError } from './errors.ts'
import {
  AT_EMPTY_PATH, AT_RECURSIVE, mount, mount_setattr, MOUNT_ATTR_RDONLY, MS_BIND, MS_REC, O_CLOEXEC, O_PATH, openat2, RESOLVE_IN_ROOT,
} from './mounts.ts'

/** One -v: a host path, where it shows in the container, and whether it is read-only there. */
export interface Volume {
  source: string // absolute, on the host
  target: string // absolute, inside the container
  readonly: boolean // :ro
}

/** A volume as -v spells it, for messages. */
export function volumeSpec(volume: Volume): string {
  return `${volume.source}:${volume.target}${volume.readonly ? ':ro' : ''}`
}

/**
 * Bind each volume onto its target inside `root`, the new root already
 * bound onto itself. `create`: make a missing target, a directory, or an
 * empty file for a file (steps 07 on: it lands in the container's upper
 * dir); without, a missing target is refused in one line, since it would
 * have to be made in the image every container shares.
 */
export function bindVolumes(root: string, volumes: Volume[], { create = false } = {}): void {
  if (volumes.length === 0) return
  const rootFd = openSync(root, constants.O_RDONLY | constants.O_DIRECTORY)
  try {
    for (const volume of volumes) {
      try {
        bindVolume(rootFd, volume, create)
      } catch (err) {
        // One line that names the -v, whatever said no.
        throw new UsageError(`--volume \`${volumeSpec(volume)}\`: ${(err as Error).message}`)
      }
    }
  } finally {
    closeSync(rootFd)
  }
}

function bindVolume(rootFd: number, volume: Volume, create: boolean): void {
  // The target is a path of the image, where a symlink may point anywhere:
  // `/data -> /etc` means the image's /etc inside, but the host's /etc to a
  // lookup made from out here. openat2 with RESOLVE_IN_ROOT resolves it as
  // the container will, with the root as `/` (`..` stops there too), and
  // gives an O_PATH fd for what it found. The bind goes onto that very file,
  // through /proc/self/fd/N, so no symlink is followed after the check.
  const fd = create ? makeInRoot(rootFd, volume.target, statSync(volume.source).isDirectory()) : openInRoot(rootFd, volume)
  try {
    refuseRoot(rootFd, fd, volume.target)
    refuseKernelPlaces(rootFd, fd, volume.target, volume.target)
    // MS_REC: what the host has mounted under its path comes along, as in Docker.
    mount(volume.source, `/proc/self/fd/${fd}`, null, MS_BIND | MS_REC)
  } finally {
    closeSync(fd)
  }
  if (!volume.readonly) return
  // :ro for the whole bind, its submounts too: mount_setattr(2) sets
  // MOUNT_ATTR_RDONLY on every mount of the tree in one call (AT_RECURSIVE).
  // A read-only remount (MS_REMOUNT | MS_BIND | MS_RDONLY) changes one mount
  // only, and would leave a submount writable. Looked up again: the fd from
  // before names the mount underneath, not the bind now on top of it.
  const bound = openInRoot(rootFd, volume)
  try {
    mount_setattr(bound, '', AT_EMPTY_PATH | AT_RECURSIVE, MOUNT_ATTR_RDONLY)
  } finally {
    closeSync(bound)
  }
}

// The target, resolved inside the root (see bindVolume); a missing one is a UsageError.
function openInRoot(rootFd: number, volume: Volume): number {
  try {
    return openat2(rootFd, volume.target, O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT)
  } catch (err) {
    if (!(err instanceof SyscallError && err.code === 'ENOENT')) throw err
    // Missing under /proc, /sys or /dev: say so, rather than to make it in the image.
    const [found, path] = deepestInRoot(rootFd, dirname(volume.target))
    try {
      refuseKernelPlaces(rootFd, found, path, volume.target)
    } finally {
      closeSync(found)
    }
    throw new UsageError(`\`${volume.target}\` is not in the image, and this step has no overlay to make it in (it would change the image every container shares): bind onto a directory that exists, such as /mnt`)
  }
}

// The target, resolved inside the root, made first if missing (its parents
// too): each name is made inside a directory we hold by fd, so a symlink by
// that name is not followed (EEXIST), and the lookup after it stays inside.
// `target`: the volume's, for messages, as the parents are made.
function makeInRoot(rootFd: number, path: string, directory: boolean, target = path): number {
  try {
    return openat2(rootFd, path, O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT)
  } catch (err) {
    if (!(err instanceof SyscallError && err.code === 'ENOENT')) throw err
  }
  const parent = makeInRoot(rootFd, dirname(path), true, target)
  // Nothing is made under /proc, /sys or /dev, not even in our upper dir.
  try {
    refuseKernelPlaces(rootFd, parent, dirname(path), target)
  } catch (err) {
    closeSync(parent)
    throw err
  }
  const at = `/proc/self/fd/${parent}/${basename(path)}`
  try {
    if (directory) mkdirSync(at, 0o755)
    else closeSync(openSync(at, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  } finally {
    closeSync(parent)
  }
  try {
    return openat2(rootFd, path, O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT)
  } catch (err) {
    // There, yet not found: a symlink to a path the image does not have. Not followed to make it.
    if (!(err instanceof SyscallError && err.code === 'ENOENT')) throw err
    throw new UsageError(`\`${path}\` is a symlink to a path that is not in the image: bind onto the path it points to, inside the container`)
  }
}

// The deepest of `path` and its parents that the image has, resolved inside
// the root (`/` at least), and which one it is.
function deepestInRoot(rootFd: number, path: string): [fd: number, path: string] {
  for (let at = path; ; at = dirname(at)) {
    try {
      return [openat2(rootFd, at, O_PATH | O_CLOEXEC, RESOLVE_IN_ROOT), at]
    } catch (err) {
      if (!(err instanceof SyscallError && err.code === 'ENOENT') || at === '/') throw err
    }
  }
}

// A target that resolves to the root itself (`/x -> /` in the image, or
// `/x -> ..`: RESOLVE_IN_ROOT stops `..` there) would have the volume cover
// the whole image, its shell and /proc included. The same directory is the
// same device and inode (fstat(2); bigint: overlayfs inode numbers may pass 2^53).
function refuseRoot(rootFd: number, fd: number, target: string): void {
  const root = fstatSync(rootFd, { bigint: true })
  const found = fstatSync(fd, { bigint: true })
  if (found.dev !== root.dev || found.ino !== root.ino) return
  throw new UsageError(`\`${target}\` is the container's root itself (through a symlink in the image): a volume there would cover the whole image; bind onto a directory inside it, such as /mnt`)
}

// /proc, /sys and /dev are the kernel's places in the container: the step
// mounts proc, sysfs and a /dev of its own there (after the volumes; from
// step 09 on, before them), and step 10 hides parts of them and makes
// others read-only (its masks), by path. A bind there would hide or
// replace what the kernel shows, to the command and to the step itself
// (step 10 reads /proc/sys/kernel/cap_last_cap). Where `fd` (resolved
// from `path`) really is: /proc/self/fd/N names it as the host sees it
// (readlink(2), proc(5)), and so names the root's; the one relative to the
// other is its path in the container, whatever symlinks the lookup went through.
function refuseKernelPlaces(rootFd: number, fd: number, path: string, target: string): void {
  const root = readlinkSync(`/proc/self/fd/${rootFd}`)
  const where = `/${relative(root, readlinkSync(`/proc/self/fd/${fd}`))}`
  const place = ['/proc', '/sys', '/dev'].find((place) => where === place || where.startsWith(`${place}/`))
  if (!place) return
  const at = path === target && where === place ? place : `under ${place}`
  const symlink = where === path ? '' : ' (through a symlink in the image)'
  throw new UsageError(`\`${target}\` is ${at}${symlink}, where the step mounts the kernel's filesystems (proc, sysfs, a /dev of the container's own): a volume there would hide or replace them; bind elsewhere, such as /mnt`)
}
