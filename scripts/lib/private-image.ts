// A private copy of an image, for runs that write into the image or mount on
// it (steps 03-06 use the image itself as the container's root): they then
// cannot disturb, or be disturbed by, other runs on the shared image.

import { spawnSync } from 'node:child_process'
import { mkdirSync, rmSync } from 'node:fs'
import { dirname } from 'node:path'
import { MNT_DETACH, readMountInfo, umount2 } from '../../shared/mounts.ts'

/**
 * Copy `image` to `rootfs`, leaving out what is mounted in it (another run's
 * step 04 /proc, say): `cp -x` stays on the image's file system. Files that
 * vanish while it copies (a concurrent run's scratch files) get a second try.
 */
export function copyImage(image: string, rootfs: string): void {
  for (let attempt = 1; ; attempt++) {
    rmSync(rootfs, { recursive: true, force: true })
    mkdirSync(dirname(rootfs), { recursive: true })
    const result = spawnSync('cp', ['-a', '-x', image, rootfs], { encoding: 'utf8' })
    if (result.status === 0) return
    if (attempt === 3) throw new Error(`cp -a -x ${image} ${rootfs}: ${result.error?.message ?? result.stderr.trim()}`)
  }
}

/**
 * Remove `dir` and everything in it, unmounting what is mounted under it
 * first (deepest first), so removing files never reaches into a mount.
 * Returns the mount points it had to unmount.
 */
export function removeTree(dir: string): string[] {
  const mounted = readMountInfo()
    .filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(`${dir}/`))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length)
  for (const m of mounted) umount2(m.mountPoint, MNT_DETACH)
  rmSync(dir, { recursive: true, force: true })
  return mounted.map((m) => m.mountPoint)
}
