// Images as stacks of layers, and the store that keeps them. See
// rootfs/README.md, and the OCI image spec's layer.md and config.md.
//
//   <stateDir>/layers/<hex>/            a layer's tree, unpacked once, shared by
//                                       every image that has it; an overlay
//                                       lowerdir as it is
//   <stateDir>/layers/<hex>.json        { diffId, size, files, created }
//   <stateDir>/images/<name>/image.json { name, source, created, layers, config, history }
//   <stateDir>/images/<name>/rootfs     -> ../../layers/<hex>, one-layer images only
//
// <hex> is the SHA-256 of the layer's uncompressed tar: its OCI diff_id, the
// name the image's config gives it. Images made before layers have a real
// directory at images/<name>/rootfs and no `layers`: that directory is their
// one layer (layerDirs).
//
// A layer is unpacked into <stateDir>/layers/.tmp-<pid>-… and renamed into
// place only once all of an image's layers have unpacked and checked out;
// image.json is written last. A failed import leaves nothing; a crashed one
// leaves .tmp-* directories, which `npm run clean` removes.

import { spawn, type ChildProcess } from 'node:child_process'
import { createHash, type Hash } from 'node:crypto'
import {
  chmodSync, closeSync, createReadStream, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync,
  renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync,
} from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { Duplex, Transform, Writable, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import zlib from 'node:zlib'
import { makedev, mknod, S_IFCHR } from './devices.ts'
import { UsageError } from './errors.ts'
import { withLockSync } from './lock.ts'
import { imagesDir, layersDir, rootStateDir } from './settings.ts'
import { LayerScanner, type LayerScan } from './tar.ts'
import { lsetxattr } from './xattr.ts'

/** Where layers live: one directory per layer, named by its diff_id's hex (settings.ts has it, for userns.ts). */
export { layersDir }

/** A layer's metadata, `<layersDir>/<hex>.json`. */
export interface LayerRecord {
  diffId: string // sha256:<hex> of the uncompressed tar
  size: number // bytes on disk, as du counts them
  files: number // entries in its tree
  created: string // when it was unpacked here
}

/** What to run, from the image's config (OCI names; see config.md). */
export interface ImageConfig {
  Entrypoint?: string[]
  Cmd?: string[]
  Env?: string[]
  WorkingDir?: string
  User?: string
}

/** One step of the image's making, in the config's order; emptyLayer steps made no layer. */
export interface HistoryEntry {
  created?: string
  createdBy?: string
  emptyLayer?: boolean
  comment?: string
}

/** An image, `<imagesDir>/<name>/image.json`. */
export interface ImageRecord {
  name: string
  source: string // busybox, alpine, tar, oci, docker-archive; unknown for an image with no image.json
  created: string
  layers: string[] // diff_ids, bottom first; [] for an image from before layers (see rootfs)
  config: ImageConfig
  history?: HistoryEntry[]
  rootfs?: string // an image from before layers: the directory that is its one layer
  [from: string]: unknown // where it came from: file, version, digest, platform…
}

const DIFF_ID = /^sha256:([0-9a-f]{64})$/

/** A layer's directory, from its diff_id (sha256:<hex>). */
export function layerDir(diffId: string): string {
  const hex = DIFF_ID.exec(diffId)?.[1]
  if (!hex) throw new UsageError(`\`${diffId}\` is not a layer's id (sha256: and 64 hex digits)`)
  return join(layersDir, hex)
}

/** A diff_id as people read it: sha256: and 12 hex digits. */
export function shortId(diffId: string): string {
  return diffId.slice(0, 'sha256:'.length + 12)
}

/** Image names: a directory name, not a path (`--image DIR` takes paths), without `@` (userns.ts's shifted copies). */
export const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/

/** Throw a one-line UsageError if `name` cannot be an image's name. */
export function checkImageName(name: string): void {
  if (!IMAGE_NAME.test(name)) throw new UsageError(`\`${name}\` cannot be an image's name: letters, digits, \`.\`, \`_\` and \`-\`, at most 128`)
}

// Whether root's store has an image `name`, for a user whose own store has none (rootless steps 09-10).
function inRootsStore(name: string): boolean {
  return ownStore() && existsSync(join(rootStateDir, 'images', name))
}

// Whether this run uses a user's own store (rootless), not root's.
function ownStore(): boolean {
  return process.getuid?.() !== 0 && join(rootStateDir, 'images') !== imagesDir
}

// What to do about a missing image: root's store may have it; a user's own store holds only the busybox image made on first use.
function missingHint(name: string): string {
  if (inRootsStore(name)) return 'root\'s store has it (npm run rootfs writes there): run the step with sudo, or npm run images without --rootless'
  return ownStore() ? 'rootless, your store has only the busybox image made on first use; import one with `npm run rootfs` (root\'s store), then run the step with sudo' : 'prepare it with `npm run rootfs`'
}

/** Whether there is an image of this name (of either kind). */
export function imageExists(name: string): boolean {
  return existsSync(join(imagesDir, name, 'image.json')) || existsSync(join(imagesDir, name, 'rootfs'))
}

/** The image `name`, as image.json says; an image from before layers as one whose rootfs is its one layer. */
export function readImage(name: string): ImageRecord {
  const dir = join(imagesDir, name)
  const file = join(dir, 'image.json')
  if (!imageExists(name)) throw new UsageError(`no image \`${name}\` in ${imagesDir}: ${missingHint(name)}`)
  let json: Partial<ImageRecord> = {}
  try {
    if (existsSync(file)) json = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new UsageError(`${file}: ${(err as Error).message}: rebuild the image with \`npm run rootfs -- --force\``)
  }
  const base = { source: 'unknown', created: statSync(dir).mtime.toISOString(), ...json, name, config: json.config ?? {} }
  if (Array.isArray(json.layers)) return { ...base, layers: json.layers }
  return { ...base, layers: [], rootfs: join(dir, 'rootfs') }
}

/** Every image in the store, by name (not userns.ts's shifted copies, NAME@ID). */
export function listImages(): ImageRecord[] {
  if (!existsSync(imagesDir)) return []
  return readdirSync(imagesDir)
    .filter((name) => IMAGE_NAME.test(name) && imageExists(name))
    .sort()
    .map(readImage)
}

/** The directories of an image's layers, bottom first: what overlay's lowerdir takes (reversed). */
export function layerDirs(image: ImageRecord): string[] {
  return image.rootfs ? [image.rootfs] : image.layers.map(layerDir)
}

/** A layer's metadata, or undefined if the store does not have it. */
export function readLayer(diffId: string): LayerRecord | undefined {
  try {
    return JSON.parse(readFileSync(`${layerDir(diffId)}.json`, 'utf8')) as LayerRecord
  } catch {
    return undefined
  }
}

/** Where a layer comes from: a file, or part of one (a blob inside an image archive), maybe compressed. */
export interface LayerSource {
  label: string // for messages: "layer 2 of 3", "alpine.tar"
  file: string
  start?: number // the byte range inside `file`, for a blob in an archive
  size?: number
  digest?: string // sha256:<hex> the blob must have (OCI: the manifest's descriptor)
  diffId?: string // sha256:<hex> it must have uncompressed (OCI: the config's rootfs.diff_ids)
}

/** How an image came to be, for image.json: source, config, history, and anything else to keep. */
export interface ImageInfo {
  source: string
  config: ImageConfig
  history?: HistoryEntry[]
  [from: string]: unknown
}

// A layer ready to go into the store: unpacked in a temporary directory, or already there.
interface Staged {
  diffId: string
  temp?: string
  record?: LayerRecord
}

/**
 * Import an image: unpack each layer not yet in the store (checking
 * digests, diff_ids and every tar member), then put the layers and the
 * image in place. `force` replaces an image of that name, and unpacks its
 * layers afresh even if the store has them (a run at steps 03-06 writes
 * into its image's layer: --force is how a broken one is mended). All or
 * nothing: on any failure, or Ctrl-C, what it unpacked is removed.
 */
export async function importImage(
  name: string,
  sources: LayerSource[],
  info: ImageInfo,
  { force = false, log = () => {} }: { force?: boolean; log?: (line: string) => void } = {},
): Promise<ImageRecord> {
  checkImageName(name)
  if (imageExists(name) && !force) throw new UsageError(`there is an image \`${name}\` already: --force replaces it, or choose another --name`)
  if (sources.length === 0) throw new UsageError(`image \`${name}\` has no layers`)
  mkdirSync(layersDir, { recursive: true })
  const staged: Staged[] = []
  const interrupted = new Interruption(staged)
  // What happened to each layer is said once all went well: a failure is one line.
  const said: string[] = []
  try {
    for (const source of sources) {
      if (process.stderr.isTTY) process.stderr.write(`\r\x1b[Kcfs: ${source.label}: checking and unpacking…`)
      const layer = await stageLayer(source, interrupted, force)
      if (layer.temp) said.push(`${source.label}: ${shortId(layer.diffId)}, unpacked: ${layer.record!.files} files, ${formatSize(layer.record!.size)}`)
      else said.push(`${source.label}: ${shortId(layer.diffId)}, in the store already`)
      staged.push(layer)
    }
    const image = withLockSync(storeLock(), () => commit(name, staged, info, force, log))
    for (const line of said) log(line)
    return image
  } finally {
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K')
    interrupted.stop()
    for (const layer of staged) if (layer.temp) rmSync(layer.temp, { recursive: true, force: true })
  }
}

// The store's lock: an import's last step, removals and prune take it, so
// that a layer an image is about to name is never pruned in between.
function storeLock(): string {
  return join(layersDir, '.lock')
}

/** Run `fn` holding the store's lock (imports, `npm run images -- rm` and `prune`). */
export function withStoreLock<T>(fn: () => T): T {
  mkdirSync(layersDir, { recursive: true })
  return withLockSync(storeLock(), fn)
}

/** A temporary name in `dir` for this process, which `npm run clean` removes once the process is gone. */
export function tempPath(dir: string, what = ''): string {
  return join(dir, `.tmp-${process.pid}-${what}${Math.random().toString(36).slice(2, 10)}`)
}

// Layers into the store (a rename each), then the image.
function commit(name: string, staged: Staged[], info: ImageInfo, force: boolean, log: (line: string) => void): ImageRecord {
  for (const layer of staged) {
    const final = layerDir(layer.diffId)
    let ours = false // the copy in place is the one this import unpacked
    if (layer.temp) {
      try {
        renameSync(layer.temp, final)
        ours = true
      } catch (err) {
        if (!['ENOTEMPTY', 'EEXIST'].includes((err as NodeJS.ErrnoException).code!)) throw err
        if (force) {
          replaceLayer(final, layer.temp, log)
          ours = true
        } else {
          // Another import unpacked the same layer meanwhile: theirs is as good as ours.
          rmSync(layer.temp, { recursive: true, force: true })
        }
      }
      layer.temp = undefined
    } else if (!existsSync(final)) {
      throw new UsageError(`layer ${shortId(layer.diffId)} was removed while this import ran (npm run images -- prune?): import again`)
    }
    if (ours || !existsSync(`${final}.json`)) {
      writeAtomically(`${final}.json`, JSON.stringify(ours ? layer.record : measureLayer(layer.diffId, final), null, 2) + '\n')
    }
  }
  const { source, config, history, ...from } = info
  const record: ImageRecord = {
    name, source, ...from, created: new Date().toISOString(), layers: staged.map((layer) => layer.diffId), config, ...(history ? { history } : {}),
  }
  writeImage(record, force)
  return record
}

// --force: the fresh copy in, the old one out, and userns.ts's shifted
// copies of the old one (<hex>@<outside>) with it, to be made again. A
// container still running in the old one keeps what it has open.
function replaceLayer(final: string, fresh: string, log: (line: string) => void): void {
  const old = [final, ...readdirSync(layersDir).filter((name) => name.startsWith(`${basename(final)}@`)).map((name) => join(layersDir, name))]
    .map((dir) => {
      const aside = tempPath(layersDir, 'old-')
      renameSync(dir, aside)
      return aside
    })
  renameSync(fresh, final)
  for (const dir of old) {
    try {
      rmSync(dir, { recursive: true, force: true })
    } catch (err) {
      log(`an old copy of ${basename(final)} stays in ${dir} (${(err as Error).message}): npm run clean removes it`)
    }
  }
}

// images/<name>/: image.json, and for one layer the rootfs link steps 03-06
// use; made aside, renamed into place.
function writeImage(record: ImageRecord, force: boolean): void {
  mkdirSync(imagesDir, { recursive: true })
  const temp = tempPath(imagesDir, `${record.name}-`)
  const final = join(imagesDir, record.name)
  try {
    mkdirSync(temp)
    writeFileSync(join(temp, 'image.json'), JSON.stringify(record, null, 2) + '\n')
    // Relative, so the store can move (CFS_HOME) with its links intact.
    if (record.layers.length === 1) symlinkSync(join('..', '..', 'layers', basename(layerDir(record.layers[0]))), join(temp, 'rootfs'))
    if (!existsSync(final)) return renameSync(temp, final)
    if (!force) throw new UsageError(`there is an image \`${record.name}\` already: --force replaces it`)
    // The old one aside, the new one in, the old one gone (with its tree, for an image from before layers).
    const old = tempPath(imagesDir, `${record.name}-old-`)
    renameSync(final, old)
    try {
      renameSync(temp, final)
    } catch (err) {
      renameSync(old, final)
      throw err
    }
    rmSync(old, { recursive: true, force: true })
  } finally {
    rmSync(temp, { recursive: true, force: true })
  }
}

function writeAtomically(file: string, text: string): void {
  const temp = tempPath(dirname(file), 'json-')
  writeFileSync(temp, text)
  renameSync(temp, file)
}

// Stop on Ctrl-C or SIGTERM with nothing half-made: kill tar(1), remove the temporaries, exit.
class Interruption {
  child?: ChildProcess
  temp?: string
  private handler = (signal: NodeJS.Signals) => {
    this.child?.kill('SIGKILL')
    for (const dir of [this.temp, ...this.staged.map((layer) => layer.temp)]) if (dir) rmSync(dir, { recursive: true, force: true })
    process.stderr.write(`cfs: import stopped by ${signal}: nothing was kept\n`)
    process.exit(signal === 'SIGINT' ? 130 : 143)
  }

  private staged: Staged[]

  constructor(staged: Staged[]) {
    this.staged = staged
    process.on('SIGINT', this.handler)
    process.on('SIGTERM', this.handler)
  }

  stop(): void {
    process.off('SIGINT', this.handler)
    process.off('SIGTERM', this.handler)
  }
}

// Read a layer's blob once to check it (its digest, and its diff_id if the
// caller knows none), then unpack it, unless the store has it already.
async function stageLayer(source: LayerSource, interrupted: Interruption, afresh: boolean): Promise<Staged> {
  const compression = sniff(source)
  const blobHash = createHash('sha256')
  const diffHash = createHash('sha256')
  let bytes = 0
  const counted = tap(blobHash, (n) => (bytes += n))
  if (source.diffId) {
    // Nothing to check before unpacking if the blob has no digest (old docker save's <id>/layer.tar): its diff_id is its check.
    if (source.digest || source.size !== undefined) await pipeline(open(source), counted, new Writable({ write: (_chunk, _encoding, done) => done() }))
  } else {
    await guard(source, compression, pipeline(open(source), counted, decompressor(compression), tap(diffHash), new Writable({ write: (_c, _e, done) => done() })))
  }
  const digest = `sha256:${blobHash.digest('hex')}`
  if (source.size !== undefined && bytes !== source.size) {
    throw new UsageError(`${source.label}: ${bytes} bytes, but the manifest says ${source.size}: corrupt or truncated`)
  }
  if (source.digest && digest !== source.digest) {
    throw new UsageError(`${source.label}: its sha256 is ${digest.slice(7)}, not ${source.digest.slice(7)} as the manifest says: corrupt`)
  }
  const diffId = source.diffId ?? `sha256:${diffHash.digest('hex')}`
  if (!afresh && existsSync(layerDir(diffId))) return { diffId }
  return unpack(source, compression, diffId, interrupted)
}

// The layer, through tar(1), into a temporary directory in the store.
async function unpack(source: LayerSource, compression: Compression, diffId: string, interrupted: Interruption): Promise<Staged> {
  const temp = mkdtempSync(join(layersDir, `.tmp-${process.pid}-`))
  interrupted.temp = temp
  try {
    // mkdtemp makes it 0700; a layer's tar sets its root's mode only if it has a `./` member.
    chmodSync(temp, 0o755)
    const root = process.getuid?.() === 0
    const child = spawn('tar', [
      '-x', '-f', '-', '-C', temp,
      // The image's uids and modes, not this host's names or umask.
      '--numeric-owner', root ? '--same-owner' : '--no-same-owner', '-p',
      // Every xattr (file capabilities: security.capability), not only user.*;
      // but none of overlayfs's own: a layer could otherwise plant a redirect or a
      // metacopy that makes overlay serve another file. Whiteouts are made below.
      '--xattrs', ...(root ? ['--xattrs-include=*'] : []), '--xattrs-exclude=trusted.overlay.*', '--xattrs-exclude=user.overlay.*',
    ], { stdio: ['pipe', 'ignore', 'pipe'] })
    interrupted.child = child
    let stderr = ''
    child.stderr!.on('data', (chunk) => (stderr += chunk))
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
    const hash = createHash('sha256')
    const scanner = new LayerScanner()
    try {
      await guard(source, compression, pipeline(open(source), decompressor(compression), tap(hash), scanner, toStdin(child)))
    } catch (err) {
      child.kill('SIGKILL')
      await exited
      throw err
    }
    const code = await exited
    interrupted.child = undefined
    if (code !== 0) throw new UsageError(`${source.label}: tar: ${stderr.trim().split('\n').find((line) => !/Ignoring unknown extended header/.test(line)) ?? `exit ${code}`}`)
    const actual = `sha256:${hash.digest('hex')}`
    if (actual !== diffId) {
      throw new UsageError(source.diffId
        ? `${source.label}: uncompressed, its sha256 is ${actual.slice(7)}, not ${diffId.slice(7)} as the image's config (rootfs.diff_ids) says`
        : `${source.label}: changed while it was read (sha256 ${diffId.slice(7)}, then ${actual.slice(7)})`)
    }
    applyWhiteouts(temp, scanner.scan, root)
    return { diffId, temp, record: { diffId, ...measure(temp), created: new Date().toISOString() } }
  } catch (err) {
    rmSync(temp, { recursive: true, force: true })
    throw err
  } finally {
    interrupted.temp = undefined
  }
}

/**
 * OCI whiteouts into overlayfs's own (Documentation/filesystems/overlayfs.rst,
 * "whiteouts and opaque directories"), so the layer is a lowerdir as it is:
 *   `.wh.NAME`     -> NAME as a character device 0/0: overlay hides NAME in the
 *                     layers below. The device alone says so, whether overlay
 *                     reads trusted.overlay.* (mounted by root) or, with
 *                     `userxattr` (step 09, in a user namespace), user.overlay.*:
 *                     a 0/0 device is a whiteout either way, no xattr needed.
 *   `.wh..wh..opq` -> overlay.opaque=y on its directory: overlay shows none of
 *                     what lower layers have there. An xattr, so both:
 *                     trusted.* for root's mounts, user.* for userxattr ones.
 * A whiteout for a name the same layer has is void (layer.md: whiteouts apply
 * to lower layers only): the layer's file stays.
 */
function applyWhiteouts(layer: string, scan: LayerScan, root: boolean): void {
  for (const path of scan.whiteouts) {
    const target = join(layer, path)
    unlinkSync(join(dirname(target), `.wh.${basename(target)}`))
    if (exists(target)) continue
    mknod(target, S_IFCHR, makedev(0, 0))
  }
  for (const dir of scan.opaque) {
    unlinkSync(join(layer, dir, '.wh..wh..opq'))
    if (root) lsetxattr(join(layer, dir), 'trusted.overlay.opaque', 'y')
    lsetxattr(join(layer, dir), 'user.overlay.opaque', 'y')
  }
}

function exists(path: string): boolean {
  try {
    lstatSync(path)
    return true
  } catch {
    return false
  }
}

/** Bytes on disk (each inode once, as du(1) counts) and entries of a tree, not crossing into mounts (du -x). */
export function measure(dir: string): { size: number; files: number } {
  const seen = new Set<string>()
  const device = lstatSync(dir, { bigint: true }).dev
  let size = 0
  let files = -1 // not the root itself
  const walk = (path: string) => {
    const stat = lstatSync(path, { bigint: true })
    if (stat.dev !== device) return // a /proc that step 04 mounted in the image, say
    files++
    const key = `${stat.dev}:${stat.ino}`
    if (!seen.has(key)) {
      seen.add(key)
      size += Number(stat.blocks) * 512
    }
    if (stat.isDirectory()) for (const name of readdirSync(path)) walk(join(path, name))
  }
  walk(dir)
  return { size, files }
}

// A layer found in the store without its .json (a crash between the two renames).
function measureLayer(diffId: string, dir: string): LayerRecord {
  return { diffId, ...measure(dir), created: statSync(dir).mtime.toISOString() }
}

/** Sizes as du -h would say them, in powers of 1024. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`
}

type Compression = 'none' | 'gzip' | 'zstd' | 'xz' | 'bzip2'

// Layers are tars, compressed or not, whatever the media type says: the first bytes tell.
function sniff(source: LayerSource): Compression {
  const head = Buffer.alloc(6)
  const fd = openSync(source.file, 'r')
  try {
    readSync(fd, head, 0, head.length, source.start ?? 0)
  } finally {
    closeSync(fd)
  }
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip'
  if (head.readUInt32LE(0) === 0xfd2fb528) return 'zstd'
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz'
  if (head.toString('latin1', 0, 3) === 'BZh') return 'bzip2'
  return 'none'
}

function open(source: LayerSource): Readable {
  const start = source.start ?? 0
  return createReadStream(source.file, source.size !== undefined ? { start, end: start + source.size - 1 } : { start })
}

function decompressor(compression: Compression): Duplex {
  if (compression === 'gzip') return zlib.createGunzip()
  if (compression === 'zstd') {
    if (typeof zlib.createZstdDecompress !== 'function') throw new UsageError(`zstd needs Node 22.15 or newer (this is ${process.version})`)
    return zlib.createZstdDecompress()
  }
  if (compression === 'xz' || compression === 'bzip2') return filter(compression === 'xz' ? 'xz' : 'bzip2', ['-dc'])
  return new Transform({ transform: (chunk, _encoding, done) => done(null, chunk) })
}

// A decompressor program as a stream (xz and bzip2: Node's zlib has neither).
function filter(command: string, args: string[]): Duplex {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk) => (stderr += chunk))
  const duplex = Duplex.from({ writable: child.stdin, readable: child.stdout })
  child.on('error', (err) => duplex.destroy(new UsageError(`${command}: ${err.message} (install it, or decompress the file first)`)))
  child.on('close', (code) => {
    if (code !== 0) duplex.destroy(new Error(`${command}: ${stderr.trim().split('\n')[0] || `exit ${code}`}`))
  })
  return duplex
}

// A one-line message for what can go wrong while reading a layer.
async function guard(source: LayerSource, compression: Compression, running: Promise<void>): Promise<void> {
  try {
    await running
  } catch (err) {
    if (err instanceof UsageError) throw new UsageError(`${source.label}: ${err.message}`, err.exitCode, err.hint)
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'EACCES') throw err
    throw new UsageError(`${source.label}: not a valid ${compression === 'none' ? 'tar' : compression} stream (${(err as Error).message}): corrupt or truncated`)
  }
}

// Hash what passes through.
function tap(hash: Hash, count?: (bytes: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk)
      count?.(chunk.length)
      done(null, chunk)
    },
  })
}

// Into tar(1)'s stdin. tar stops reading at the end-of-archive block and
// may exit before the padding after it has arrived: EPIPE then is no
// error (its exit status says whether it did its job), and the rest is
// still read, for the digest.
function toStdin(child: ChildProcess): Writable {
  let closed = false
  child.stdin!.on('error', () => (closed = true))
  return new Writable({
    write(chunk, _encoding, done) {
      if (closed) return done()
      child.stdin!.write(chunk, () => done())
    },
    final(done) {
      if (closed) return done()
      child.stdin!.end(() => done())
    },
  })
}
