// Overlay filesystems: copy-on-write roots, so containers share one image.
// See the kernel's Documentation/filesystems/overlayfs.rst.
//
// A container's directory in the state store holds:
//   upper/   its own changes (new files, changed copies, whiteouts for deletions)
//   work/    overlayfs's scratch space (same filesystem as upper/)
//   merged/  the mount point where image + changes appear as one tree

import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { mount } from './mounts.ts'
import { containersDir } from './settings.ts'

/** The directories of a container's overlay. */
export function overlayDirs(dir: string) {
  return { upper: join(dir, 'upper'), work: join(dir, 'work'), merged: join(dir, 'merged') }
}

/**
 * Make the container's directory, `<stateDir>/containers/<id>`, with
 * upper/, work/ and merged/, and note which process owns it (for clean-up).
 */
export function createContainerDir(id: string): string {
  const dir = join(containersDir, id)
  mkdirSync(dir, { recursive: true })
  for (const sub of Object.values(overlayDirs(dir))) mkdirSync(sub)
  writeFileSync(join(dir, 'parent.pid'), `${process.pid}\n`)
  return dir
}

/** Remove a container's directory (nothing may be mounted in it any more). */
export function removeContainerDir(dir: string): void {
  // overlayfs leaves work/work with mode 000: root's rm goes in anyway, a user's (rootless) must open it first.
  if (existsSync(join(dir, 'work/work'))) chmodSync(join(dir, 'work/work'), 0o700)
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true })
}

/** Mark a container's directory as kept on purpose (--keep), so clean-up leaves it alone. */
export function keepContainerDir(dir: string): void {
  writeFileSync(join(dir, 'kept'), `${new Date().toISOString()}\n`)
  process.stderr.write(`cfs: kept the container's changes in ${dir}/upper (remove with npm run clean -- --all)\n`)
}

/**
 * Mount the image (read-only, shared by all containers) with the container's
 * upper dir on top, at merged/.
 */
export function mountOverlay(image: string, dir: string): string {
  const { upper, work, merged } = overlayDirs(dir)
  mount('overlay', merged, 'overlay', 0, `lowerdir=${image},upperdir=${upper},workdir=${work}`)
  return merged
}
