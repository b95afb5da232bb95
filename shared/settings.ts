// Where the project keeps things, and the name it gives them on the host.

import { homedir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Everything the project creates on the host starts with this. */
export const PREFIX = 'cfs'

/** The repository root, derived from this file's location. */
export const repoDir = fileURLToPath(new URL('..', import.meta.url))

/**
 * Run by a user, without sudo: step 09 runs rootless (notes/09-userns.md).
 * Read once, at start: a container's child, whose uid is unmapped until its
 * parent writes the maps, is told by its parent instead.
 */
export const rootless = process.getuid?.() !== 0

/**
 * Images and container state live outside the repository by default: a repo
 * on a Vagrant or 9p shared folder cannot hold device nodes or overlay dirs.
 * Root's are in /var/lib; a user's, for the rootless step 09, in
 * ~/.local/share (XDG_DATA_HOME). CFS_HOME moves them.
 */
export const stateDir = process.env.CFS_HOME || (process.getuid?.() === 0
  ? '/var/lib/containers-from-scratch'
  : join(process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'containers-from-scratch'))
export const imagesDir = join(stateDir, 'images')
/** Image layers, one directory each, shared by the images that have them (shared/layers.ts). */
export const layersDir = join(stateDir, 'layers')
export const containersDir = join(stateDir, 'containers')

/** Root's state dir (see stateDir), whoever asks: `npm run ps` run by a user lists root's containers too. */
export const rootStateDir = process.env.CFS_HOME || '/var/lib/containers-from-scratch'

/**
 * Node's compile cache for the steps' children: root's in the state dir, a
 * user's (step 01 runs as you) in ~/.cache. Never in /tmp, where another
 * user could plant code for root to run, nor in the checkout.
 */
export const compileCacheDir = process.getuid?.() === 0
  ? join(stateDir, 'node-compile-cache')
  : join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'containers-from-scratch', 'node-compile-cache')
