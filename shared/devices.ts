// Device nodes: mknod(2) and the minimal /dev a container gets.
//
// Mounting devtmpfs would hand the container every device of the host
// (disks included, as one learner's Go container found); a container gets a tmpfs with only
// the nodes programs expect, as runc and Docker do.

import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { check, raw } from './libc.ts'
import { mount, MS_BIND, MS_NOEXEC, MS_NOSUID } from './mounts.ts'

export const S_IFCHR = 0o020000

/** makedev(3): a device number from its major and minor. */
export function makedev(major: number, minor: number): number {
  return ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & ~0xff) << 12)
}

/** mknod(2) */
export function mknod(path: string, mode: number, dev: number): void {
  check('mknod', raw.mknod(path, mode, dev), path)
}

/** The character devices a container gets: name, major, minor (see devices.txt in the kernel). */
export const DEVICES: [name: string, major: number, minor: number][] = [
  ['null', 1, 3],
  ['zero', 1, 5],
  ['full', 1, 7],
  ['random', 1, 8],
  ['urandom', 1, 9],
  ['tty', 5, 0],
]

/** Everything mountDev puts in /dev, for checks: nodes, directories and links. */
export const DEV_ENTRIES = [...DEVICES.map(([name]) => name), 'pts', 'ptmx', 'shm', 'fd', 'stdin', 'stdout', 'stderr'].sort()

/**
 * Build a minimal /dev at `dev`: a tmpfs with the DEVICES nodes, a private
 * devpts (so the container's terminals are its own), /dev/shm, and the
 * fd/stdin/stdout/stderr links into /proc/self/fd.
 *
 * `bindHostNodes`: in a user namespace, where mknod(2) of a device is
 * refused, each node is the host's own, bind-mounted onto an empty file (as
 * rootless Podman does); call it then while the host's /dev is in view.
 */
export function mountDev(dev: string, { bindHostNodes = false } = {}): void {
  mount('tmpfs', dev, 'tmpfs', MS_NOSUID | MS_NOEXEC, 'mode=755,size=64k')
  for (const [name, major, minor] of DEVICES) {
    if (!bindHostNodes) {
      mknod(join(dev, name), S_IFCHR | 0o666, makedev(major, minor))
      // mknod's mode goes through the umask (022: 0644); these are for every user, as Docker's are.
      chmodSync(join(dev, name), 0o666)
      continue
    }
    writeFileSync(join(dev, name), '')
    mount(`/dev/${name}`, join(dev, name), null, MS_BIND)
  }
  mkdirSync(join(dev, 'pts'))
  // newinstance: a devpts of its own, not the host's list of terminals.
  mount('devpts', join(dev, 'pts'), 'devpts', MS_NOSUID | MS_NOEXEC, 'newinstance,ptmxmode=0666,mode=0620')
  symlinkSync('pts/ptmx', join(dev, 'ptmx'))
  mkdirSync(join(dev, 'shm'))
  mount('shm', join(dev, 'shm'), 'tmpfs', MS_NOSUID | MS_NOEXEC, 'mode=1777,size=64m')
  symlinkSync('/proc/self/fd', join(dev, 'fd'))
  for (const [i, name] of ['stdin', 'stdout', 'stderr'].entries()) symlinkSync(`/proc/self/fd/${i}`, join(dev, name))
}
