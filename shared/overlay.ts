// Overlay filesystems: copy-on-write roots, so containers share one image.
// See the kernel's Documentation/filesystems/overlayfs.rst.
//
// A container's directory in the state store holds:
//   upper/   its own changes (new files, changed copies, whiteouts for deletions)
//   work/    overlayfs's scratch space (same filesystem as upper/)
//   merged/  the mount point where image + changes appear as one tree
//   lower    the image's layers, the overlay's lowerdirs, top first, one a
//            line: what lies under upper/, for `npm run images -- diff`
//            and `export` (scripts/lib/image-changes.ts), also once it has ended
//
// In a layer, and in upper/, overlayfs marks what hides the layers below:
// a whiteout, a character device 0,0, for a name deleted, and an opaque
// directory, one with the xattr overlay.opaque = "y", for a directory whose
// contents below are all hidden (overlayfs.rst, "whiteouts and opaque directories").

import { chmodSync, existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync, type Stats } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { UsageError } from './errors.ts'
import { mount, shortLink } from './mounts.ts'
import { containersDir } from './settings.ts'
import { lgetxattr } from './xattr.ts'

/** The directories of a container's overlay. */
export function overlayDirs(dir: string) {
  return { upper: join(dir, 'upper'), work: join(dir, 'work'), merged: join(dir, 'merged') }
}

/**
 * Make the container's directory, `<stateDir>/containers/<id>`, with
 * upper/, work/ and merged/, note which process owns it (for clean-up),
 * and, if given, the image's layers it goes on (`lower`, see the header).
 */
export function createContainerDir(id: string, lowerdirs: string[] = []): string {
  const dir = join(containersDir, id)
  mkdirSync(dir, { recursive: true })
  for (const sub of Object.values(overlayDirs(dir))) mkdirSync(sub)
  writeFileSync(join(dir, 'parent.pid'), `${process.pid}\n`)
  if (lowerdirs.length) writeFileSync(join(dir, 'lower'), lowerdirs.map((path) => `${path}\n`).join(''))
  linkLayers(lowerdirs)
  return dir
}

/**
 * Give each layer of the store its short link, `l/<16 digits>` beside it
 * (shortLink), if it has none: for an image of more layers than fit in
 * mount(2)'s one page of options by their full paths (shared/mounts.ts).
 * Only for an image of many layers, and made by whoever owns the store,
 * before the container's mount namespace. Any other directory is left be.
 */
export function linkLayers(lowerdirs: string[]): void {
  if (lowerdirs.join(':').length < 2048) return
  for (const layer of lowerdirs.filter((dir) => /^[0-9a-f]{64}(@\d+)?$/.test(basename(dir)))) {
    const link = shortLink(layer)
    const target = join('..', basename(layer))
    mkdirSync(dirname(link), { recursive: true })
    try {
      symlinkSync(target, link)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      if (readlinkSync(link) !== target) throw new UsageError(`layers ${basename(layer)} and ${readlinkSync(link)} share their first 16 digits, the short name \`${link}\`: remove one (npm run images -- rm)`)
    }
  }
}

/** The image's layers a container's directory notes in `lower` (top first); [] if it has none. */
export function readLowerdirs(dir: string): string[] {
  try {
    return readFileSync(join(dir, 'lower'), 'utf8').split('\n').filter(Boolean)
  } catch {
    return []
  }
}

/** The xattrs that make a directory opaque: trusted.* for an overlay mounted by host root, user.* with userxattr. */
export const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque']

/** A whiteout: a character device with device number 0,0 (lstat's view of it). */
export function isWhiteout(stat: Stats): boolean {
  return stat.isCharacterDevice() && stat.rdev === 0
}

/** Whether directory `path` is opaque to an overlay mounted with `xattrs` (both kinds unless said). */
export function isOpaque(path: string, xattrs = OPAQUE_XATTRS): boolean {
  return xattrs.some((name) => lgetxattr(path, name) === 'y')
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
  // rm -rf, not clean --all: that one stops every running container too.
  process.stderr.write(`cfs: kept the container's changes in ${dir}/upper (remove them: ${process.getuid?.() === 0 ? 'sudo ' : ''}rm -rf ${dir})\n`)
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
