// Where the project keeps things, and the name it gives them on the host.

import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** Everything the project creates on the host starts with this. */
export const PREFIX = 'cfs'

/** The repository root, derived from this file's location. */
export const repoDir = fileURLToPath(new URL('..', import.meta.url))

/**
 * Images and container state live outside the repository by default: a repo
 * on a Vagrant or 9p shared folder cannot hold device nodes or overlay dirs.
 * CFS_HOME moves them.
 */
export const stateDir = process.env.CFS_HOME || '/var/lib/containers-from-scratch'
export const imagesDir = join(stateDir, 'images')
export const containersDir = join(stateDir, 'containers')
