// An image as steps 07-10 run it: its layers, the overlay's lowerdirs, and
// its config (OCI's names: Entrypoint, Cmd, Env, WorkingDir, User), which
// the command line's options override as Docker's do.
//
// The image store (shared/settings.ts has stateDir):
//   <stateDir>/layers/<hex>/             a layer's tree; hex is the sha256 of
//                                        its uncompressed tar, its diff_id
//   <stateDir>/images/<name>/image.json  `layers`: ["sha256:<hex>", …],
//                                        the BOTTOM layer first; `config`
// An image.json without `layers` is one layer, the image's rootfs/ (every
// image `npm run rootfs` makes); so is a directory given by its path.

import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { UsageError } from './errors.ts'
import { ensureImage } from './rootfs.ts'
import { imagesDir, layersDir } from './settings.ts'

/** Where the layers are: one directory each, named by the hex of its diff_id (shared/settings.ts). */
export { layersDir }

/** What an image's config may say about running it (OCI image-spec, config.md: `config`). */
export interface ImageConfig {
  Entrypoint?: string[]
  Cmd?: string[]
  Env?: string[] // KEY=VALUE
  WorkingDir?: string
  User?: string
}

/** An image to run: its layers as overlay lowerdirs, top first (overlayfs lists the top one first), and its config. */
export interface ImageLayers {
  lowerdirs: string[]
  config: ImageConfig
}

/**
 * The image to run: `name` from the store, a directory by its path, or the
 * default image, prepared on first use (shared/rootfs.ts, ensureImage).
 * Throws a one-line UsageError if it, or one of its layers, is missing.
 */
export async function imageLayers(name?: string): Promise<ImageLayers> {
  const json = name && !name.includes('/') ? readImageJson(join(imagesDir, name)) : undefined
  if (!json?.layers) {
    const rootfs = await ensureImage(name)
    // The default image's config, if it has one; a directory by path has none.
    const own = name?.includes('/') ? undefined : json ?? readImageJson(dirname(rootfs))
    return { lowerdirs: [rootfs], config: own?.config ?? {} }
  }
  const lowerdirs = json.layers.map((id) => {
    if (!/^sha256:[0-9a-f]{64}$/.test(id)) throw new UsageError(`image \`${name}\`: its image.json lists a layer \`${id}\`: expected sha256:<64 hex digits>`)
    const dir = join(layersDir, id.slice('sha256:'.length))
    if (!existsSync(dir)) throw new UsageError(`image \`${name}\`: its layer ${id} is not in ${layersDir}: import the image again`)
    return dir
  })
  return { lowerdirs: lowerdirs.reverse(), config: json.config ?? {} }
}

// <dir>/image.json, or undefined if there is none.
function readImageJson(dir: string): { layers?: string[]; config?: ImageConfig } | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, 'image.json'), 'utf8'))
  } catch {
    return undefined
  }
}

/** What the command line says: the command's words (maybe none), -e's KEY=VALUE, -w. */
export interface RunOptions {
  command: string[]
  env: string[]
  workdir?: string
}

/**
 * The command, environment and working directory of a container: the
 * command line's over the image's config, as Docker merges them.
 *   command  Entrypoint, then the command line's words, or else Cmd
 *   env      Env, then -e: containerEnv (shared/process.ts) lets a later
 *            KEY win, so -e over Env over its own PATH, HOME, HOSTNAME
 *   workdir  -w, or else WorkingDir, or else /
 * Neither a command nor Entrypoint/Cmd: the one-line "missing command".
 * A User other than root is refused in one line: the steps run the command
 * as (the container's) root, and a uid of the image's would need
 * setgroups/setresgid/setresuid before exec, after step 10 has dropped
 * what root keeps, and a second id mapped in rootless step 09's user
 * namespace, which has one.
 */
export function withImageConfig(config: ImageConfig, given: RunOptions): { command: string[]; env: string[]; workdir: string } {
  const command = [...(config.Entrypoint ?? []), ...(given.command.length ? given.command : config.Cmd ?? [])]
  if (command.length === 0) throw new UsageError('missing command: what should run in the container? The image has no Entrypoint or Cmd (see --help)')
  const bad = (config.Env ?? []).find((pair) => !/^[^=]+=/.test(pair))
  if (bad !== undefined) throw new UsageError(`the image's config has Env \`${bad}\`: expected KEY=VALUE`)
  if (config.User && !/^(0|root)(:(0|root))?$/.test(config.User)) {
    throw new UsageError(`the image's config says User \`${config.User}\`: the steps run the command as the container's root only (see notes/07-overlay.md)`)
  }
  // OCI: WorkingDir is absolute; Docker takes a relative one from /.
  const workdir = given.workdir ?? (config.WorkingDir ? posix.resolve('/', config.WorkingDir) : '/')
  return { command, env: [...(config.Env ?? []), ...given.env], workdir }
}
