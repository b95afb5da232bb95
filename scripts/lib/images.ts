// Looking after the image store (shared/layers.ts): which layers the images
// name, which ones running containers use, and removing images and unused
// layers. For npm run images.

import { existsSync, readlinkSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { UsageError } from '../../shared/errors.ts'
import {
  checkImageName, imageExists, layerDirs, listImages, measure, readImage, readLayer, tempPath, withStoreLock, type ImageRecord,
} from '../../shared/layers.ts'
import { imagesDir, layersDir } from '../../shared/settings.ts'
import { listDir, readText } from './files.ts'

/** A layer directory of the store: `<hex>`, or userns.ts's copy of one shifted for a uid map, `<hex>@<outside>`. */
export interface StoredLayer {
  name: string // as in layers/: hex, or hex@outside
  diffId: string // sha256:<hex> of the layer (of the one it is a copy of)
  dir: string
  size: number
}

/** Every layer directory in the store, with its size (from its .json, else measured). */
export function storedLayers(): StoredLayer[] {
  return listDir(layersDir)
    .filter((name) => /^[0-9a-f]{64}(@\d+)?$/.test(name))
    .sort()
    .map((name) => {
      const diffId = `sha256:${name.slice(0, 64)}`
      const dir = join(layersDir, name)
      return { name, diffId, dir, size: (!name.includes('@') && readLayer(diffId)?.size) || measure(dir).size }
    })
}

/** For each layer (by diff_id), the images that have it. */
export function layerUsers(images = listImages()): Map<string, string[]> {
  const users = new Map<string, string[]>()
  for (const image of images) for (const diffId of image.layers) users.set(diffId, [...(users.get(diffId) ?? []), image.name])
  return users
}

/**
 * Directories of the store that something running uses, and what: a
 * process whose root or working directory is in one (steps 03-06 run in
 * the layer itself), or a mount, in any mount namespace, whose source,
 * root or options (overlay's lowerdir) name one. Keyed by the name under
 * layers/ (hex or hex@outside), or by the path under images/.
 */
export function storeInUse(): Map<string, string> {
  const used = new Map<string, string>()
  const note = (text: string, why: string) => {
    for (const match of text.matchAll(/\/layers\/([0-9a-f]{64}(?:@\d+)?)/g)) if (!used.has(match[1])) used.set(match[1], why)
    for (const match of text.matchAll(/\/images\/([^/\s,:]+)\/rootfs/g)) if (!used.has(`images/${match[1]}`)) used.set(`images/${match[1]}`, why)
  }
  const namespaces = new Set<string>()
  for (const pid of listDir('/proc').filter((name) => /^\d+$/.test(name))) {
    for (const link of ['root', 'cwd']) {
      try {
        note(`${readlinkSync(`/proc/${pid}/${link}`)}/`, `process ${pid} runs in it`)
      } catch {}
    }
    let namespace = ''
    try {
      namespace = readlinkSync(`/proc/${pid}/ns/mnt`)
    } catch {
      continue
    }
    if (namespaces.has(namespace)) continue
    namespaces.add(namespace)
    note(readText(`/proc/${pid}/mountinfo`), `mounted in the mount namespace of process ${pid}`)
  }
  return used
}

/** Remove an image: its image.json and rootfs link (its layers stay, for prune), and its shifted copies (NAME@ID). */
export function removeImage(name: string): { removed: string[] } {
  checkImageName(name)
  if (!imageExists(name)) throw new UsageError(`no image \`${name}\` in ${imagesDir} (npm run images lists them)`)
  const image = readImage(name)
  const dirs = [name, ...listDir(imagesDir).filter((entry) => entry.startsWith(`${name}@`))]
  // An image from before layers holds its tree itself: not while a container runs in it.
  const used = storeInUse()
  for (const dir of dirs) {
    const why = image.rootfs && used.get(`images/${dir}`)
    if (why) throw new UsageError(`image \`${name}\` is in use (${why}): stop that container first`)
  }
  const aside = withStoreLock(() => dirs.map((dir) => {
    const temp = tempPath(imagesDir, 'rm-')
    renameSync(join(imagesDir, dir), temp)
    return temp
  }))
  for (const temp of aside) rmSync(temp, { recursive: true, force: true })
  return { removed: dirs }
}

/** What prune did: layers removed (with their sizes), and unused ones left because something runs on them. */
export interface Pruned {
  removed: StoredLayer[]
  left: { layer: StoredLayer; why: string }[]
  freed: number
}

/**
 * Remove the layers no image names (and their shifted copies, and .json
 * files without a layer), unless something running uses them. Under the
 * store's lock, so an import between unpacking and writing its image.json
 * cannot lose a layer it is about to name.
 */
export function pruneLayers(): Pruned {
  const result: Pruned = { removed: [], left: [], freed: 0 }
  const aside = withStoreLock(() => {
    const named = layerUsers()
    const used = storeInUse()
    const moved: string[] = []
    for (const layer of storedLayers()) {
      if (named.has(layer.diffId)) continue
      const why = used.get(layer.name)
      if (why) {
        result.left.push({ layer, why })
        continue
      }
      const temp = tempPath(layersDir, 'prune-')
      renameSync(layer.dir, temp)
      moved.push(temp)
      result.removed.push(layer)
      result.freed += layer.size
    }
    // Short links (l/, shared/overlay.ts linkLayers) to layers no longer there.
    for (const link of listDir(join(layersDir, 'l')).map((name) => join(layersDir, 'l', name))) {
      if (!existsSync(link)) rmSync(link, { force: true })
    }
    for (const file of listDir(layersDir).filter((name) => /^[0-9a-f]{64}\.json$/.test(name))) {
      if (!listDir(layersDir).includes(file.slice(0, 64))) rmSync(join(layersDir, file), { force: true })
    }
    return moved
  })
  for (const temp of aside) rmSync(temp, { recursive: true, force: true })
  return result
}

/** An image's size on disk: its layers' (each once), or, from before layers, its tree's. */
export function imageSize(image: ImageRecord, layers: Map<string, StoredLayer>): number {
  if (image.rootfs) return measure(layerDirs(image)[0]).size
  return image.layers.reduce((sum, diffId) => sum + (layers.get(diffId.slice(7))?.size ?? 0), 0)
}
