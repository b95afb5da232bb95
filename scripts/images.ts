// npm run images [-- history NAME | diff ID | export ID FILE | rm NAME | prune]
//
// The image store (shared/layers.ts): each image with its layers and their
// sizes; an image's history, layer by layer; a container's changes and its
// merged view (scripts/lib/image-changes.ts); removing an image; removing
// the layers no image has any more.

import { parseArgs } from 'node:util'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { formatSize, listImages, readImage, readLayer, shortId, type ImageRecord } from '../shared/layers.ts'
import { requireRoot } from '../shared/cli.ts'
import { imagesDir, layersDir, rootStateDir } from '../shared/settings.ts'
import { diffCommand, exportCommand } from './lib/image-changes.ts'
import { imageSize, layerUsers, pruneLayers, removeImage, storedLayers, type StoredLayer } from './lib/images.ts'

exitOnClosedPipe()

const usage = `Usage: npm run images [-- [--rootless] COMMAND]

The images in ${rootStateDir}/images and their layers, in
${rootStateDir}/layers (set CFS_HOME to move them): root's store,
where npm run rootfs puts them; it runs under sudo. --rootless: your own
store instead, without sudo, where steps 09-10 run without sudo keep theirs.

Commands:
  (none)          each image, its layers (bottom first) and their sizes
  history NAME    how the image was made: each layer, what made it, its size
  diff ID         a running or --keep container's changes, A/C/D (docker diff)
  export ID FILE  a container's merged view as a tar (docker export)
  rm NAME         remove an image (its layers stay until prune)
  prune           remove the layers no image has, and say what that freed
`

try {
  const { positionals, values } = parseArgs({ allowPositionals: true, options: { rootless: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } })
  const [command, ...args] = positionals
  if (values.help) {
    process.stdout.write(usage)
    process.exit(0)
  }
  if (values.rootless && process.getuid?.() === 0) throw new UsageError('--rootless is for a user without sudo: your own store, as steps 09-10 run without sudo use it')
  // Root's store, the one npm run rootfs writes, whoever asks (re-runs under sudo).
  if (!values.rootless) requireRoot()
  const want = (count: number, what: string) => {
    if (args.length !== count) throw new UsageError(`${command} takes ${what} (see --help)`)
  }
  switch (command) {
    case undefined:
    case 'ls':
      list()
      break
    case 'history':
      want(1, 'an image name')
      history(readImage(args[0]))
      break
    case 'rm':
      want(1, 'an image name')
      console.log(`removed image \`${args[0]}\`${removeImage(args[0]).removed.length > 1 ? ' and its shifted copies' : ''} (its layers stay until: npm run images -- prune)`)
      break
    case 'prune':
      want(0, 'nothing')
      prune()
      break
    case 'diff':
      diffCommand(args)
      break
    case 'export':
      await exportCommand(args)
      break
    default:
      throw new UsageError(`no command \`${command}\`: expected history, diff, export, rm or prune (see --help)`)
  }
} catch (err) {
  exitWithError(err)
}

function list(): void {
  const images = listImages()
  const layers = new Map(storedLayers().filter((l) => !l.name.includes('@')).map((l) => [l.name, l]))
  const users = layerUsers(images)
  if (images.length === 0) console.log(`no images in ${imagesDir}: ${process.getuid?.() === 0 ? 'npm run rootfs makes one' : 'steps 09-10 run without sudo make busybox here on first use'}`)
  for (const image of images) {
    const count = image.rootfs ? '1 layer (a directory: made before layers)' : `${image.layers.length} layer${image.layers.length === 1 ? '' : 's'}`
    console.log(`${image.name}  ${count}, ${formatSize(imageSize(image, layers))}, ${image.source}, ${image.created.slice(0, 16).replace('T', ' ')}`)
    for (const diffId of image.layers) {
      const others = (users.get(diffId) ?? []).filter((name) => name !== image.name)
      const layer = layers.get(diffId.slice(7))
      console.log(`  ${shortId(diffId)}  ${layer ? formatSize(layer.size).padStart(9) : '  missing'}${others.length ? `  also in ${others.join(', ')}` : ''}`)
    }
  }
  const unused = [...layers.values()].filter((l) => !users.has(l.diffId))
  const total = [...layers.values()].reduce((sum, l) => sum + l.size, 0)
  console.log(`${layers.size} layer${layers.size === 1 ? '' : 's'}, ${formatSize(total)}${unused.length ? `; ${unused.length} no image has (${formatSize(unused.reduce((sum, l) => sum + l.size, 0))}): npm run images -- prune` : ''}`)
}

// config.md's history, oldest first: each entry that made a layer gets the next layer.
function history(image: ImageRecord): void {
  if (image.rootfs) {
    console.log(`${image.name}: made before layers, one directory (${image.rootfs}): no history`)
    return
  }
  const rows: string[][] = [['LAYER (bottom first)', 'SIZE', 'CREATED', 'CREATED BY']]
  const layers = [...image.layers]
  for (const step of image.history ?? []) {
    const diffId = step.emptyLayer ? undefined : layers.shift()
    rows.push([diffId ? shortId(diffId) : '(no layer)', diffId ? size(diffId) : '0 B', step.created?.slice(0, 16).replace('T', ' ') ?? '?', step.createdBy ?? step.comment ?? '?'])
  }
  for (const diffId of layers) rows.push([shortId(diffId), size(diffId), '?', '? (no history for it)'])
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((row) => row[i].length)))
  for (const row of rows) console.log(row.map((cell, i) => (i < 3 ? cell.padEnd(widths[i]) : cell.replace(/\s+/g, ' ').slice(0, 100))).join('  '))
}

function size(diffId: string): string {
  const record = readLayer(diffId)
  return record ? formatSize(record.size) : 'missing'
}

function prune(): void {
  const { removed, left, freed } = pruneLayers()
  for (const layer of removed) console.log(`removed layer ${describe(layer)}`)
  for (const { layer, why } of left) console.log(`left    layer ${describe(layer)}: no image has it, but ${why}`)
  if (removed.length) console.log(`freed ${formatSize(freed)}`)
  else console.log(left.length ? 'nothing removed: the layers no image has are in use' : 'nothing to prune: every layer belongs to an image')
}

function describe(layer: StoredLayer): string {
  return `${shortId(layer.diffId)}${layer.name.includes('@') ? ` (shifted for uid ${layer.name.split('@')[1]})` : ''}, ${formatSize(layer.size)}`
}
