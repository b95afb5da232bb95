// Images: the directory trees containers use as their root filesystem.
//
// An image is a stack of layers in the store (shared/layers.ts): steps 03-06
// run one-layer images, whose `<stateDir>/images/<name>/rootfs` links to
// their layer; from step 07 overlay stacks the layers. Sources, in the order
// `prepareImage` tries them:
//   1. an image that is already there;
//   2. Alpine's minirootfs (pinned, SHA-256 checked), when the network allows;
//   3. busybox from the host (Debian/Ubuntu: apt-get install busybox-static),
//      which needs no network and is what CI uses;
//   4. any tarball, with --from-tar (e.g. the output of `docker export`);
//   5. an OCI image or a docker-archive, with --from-oci (shared/oci.ts).
// The first four make one-layer images.

import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readSync, closeSync,
  realpathSync, rmSync, symlinkSync, writeFileSync, accessSync, constants as fsConstants,
} from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { UsageError } from './errors.ts'
import { imageExists, importImage, layerDirs, layersDir, readImage, type ImageInfo, type ImageRecord } from './layers.ts'
import { importOci } from './oci.ts'
import { imagesDir } from './settings.ts'

/** Alpine minirootfs, pinned: version, and SHA-256 per architecture. */
export const ALPINE = {
  version: '3.20.3',
  sha256: {
    x64: 'd4e6fd67dcf75e40c451560ac7265166c2b72a0f38ddc9aae756a7de3d1efa0c',
    arm64: '041fa34a81788242df9e78fa69b97ab45b8ec47ddbf88864755610414a7bf3de',
  } as Record<string, string>,
  url(arch: string): string {
    const alpineArch = arch === 'arm64' ? 'aarch64' : 'x86_64'
    return `https://dl-cdn.alpinelinux.org/alpine/v3.20/releases/${alpineArch}/alpine-minirootfs-${this.version}-${alpineArch}.tar.gz`
  },
}

/** Image names tried, in order, when none is given. */
export const DEFAULT_IMAGES = ['alpine', 'busybox']

/** Where an image's root filesystem is (or would be): for a one-layer image, a link to its layer. */
export function imageRootfs(name: string): string {
  return name.includes('/') ? resolve(name) : join(imagesDir, name, 'rootfs')
}

/**
 * The root filesystem to run: the named image (or a directory path), or the
 * default one, prepared on first use. For an image of the store, its one
 * layer's directory itself (not the rootfs link to it, which cp -a and
 * mountinfo would not see through). Throws a one-line UsageError if the
 * image is missing, broken, or has more than one layer.
 */
export async function ensureImage(name?: string): Promise<string> {
  if (name?.includes('/')) {
    const rootfs = imageRootfs(name)
    if (!existsSync(rootfs)) throw new UsageError(`--image ${name}: no such directory (a path with a / names a root filesystem; a name, an image of npm run images)`)
    // Through any symlink (images/<name>/rootfs is one): step 04 finds its
    // /proc mount in mountinfo by this path, which shows the real one.
    return checkImage(realpathSync(rootfs))
  }
  if (name) return checkImage(oneLayer(readImage(name)))
  const found = DEFAULT_IMAGES.find(imageExists)
  if (found) return checkImage(oneLayer(readImage(found)))
  // One line, not the preparation's running commentary: the learner asked for a container.
  const said: string[] = []
  const rootfs = await prepareImage({ log: (line) => said.push(line) })
  const fallback = said.find((line) => line.startsWith('Alpine download not possible'))
  process.stderr.write(`cfs: no image yet: prepared one at ${rootfs}, once${fallback ? ' (from the host\'s busybox: Alpine could not be downloaded)' : ''}\n`)
  return checkImage(rootfs)
}

// Steps 03-06 use the image as the root itself: one directory, one layer.
function oneLayer(image: ImageRecord): string {
  const dirs = layerDirs(image)
  if (dirs.length !== 1) {
    throw new UsageError(`image \`${image.name}\` has ${dirs.length} layers: steps before 07 run one-layer images only (layers arrive with overlay at step 07)`)
  }
  return dirs[0]
}

// An image must at least have a shell; anything else is a half-made image.
function checkImage(rootfs: string): string {
  try {
    lstatSync(join(rootfs, 'bin/sh'))
  } catch {
    throw new UsageError(`the image at ${rootfs} looks broken (no /bin/sh): rebuild it with \`npm run rootfs -- --force\``)
  }
  return rootfs
}

export interface PrepareOptions {
  source?: 'alpine' | 'busybox'
  fromTar?: string
  fromOci?: string
  name?: string
  force?: boolean
  log?: (line: string) => void
}

/**
 * Prepare an image and return its rootfs directory (its layer's), or, for
 * an image of several layers, the image's directory. See the header for the order.
 */
export async function prepareImage(options: PrepareOptions): Promise<string> {
  const log = options.log ?? ((line: string) => process.stderr.write(`cfs: ${line}\n`))
  const { force } = options
  if (options.fromOci) return where(await importOci(options.fromOci, { name: options.name, force, log }))
  if (options.fromTar) {
    const file = resolve(options.fromTar)
    if (!existsSync(file)) throw new UsageError(`no such tarball: ${file}`)
    const name = options.name ?? basename(file).replace(/\.(tar(\.\w+)?|tgz)$/, '')
    const info: ImageInfo = { source: 'tar', file, config: {}, history: [{ created: new Date().toISOString(), createdBy: `npm run rootfs -- --from-tar ${file}` }] }
    return where(await importImage(name, [{ label: basename(file), file }], info, { force, log }))
  }
  if (!force && !options.source) {
    const found = DEFAULT_IMAGES.find(imageExists)
    if (found) return where(readImage(found))
  }
  if (options.source !== 'busybox') {
    try {
      return await build('alpine', force, log, (work) => downloadAlpine(work, log), {
        source: 'alpine', version: ALPINE.version, config: SHELL_CONFIG,
        history: [{ created: new Date().toISOString(), createdBy: `Alpine minirootfs ${ALPINE.version}, ${ALPINE.url(process.arch)}` }],
      })
    } catch (err) {
      if (options.source === 'alpine') throw err
      log(`Alpine download not possible (${(err as Error).message}); using the host's busybox instead`)
    }
  }
  const binary = findBusybox()
  return build('busybox', force, log, busyboxLayer, {
    source: 'busybox', binary, config: SHELL_CONFIG,
    history: [{ created: new Date().toISOString(), createdBy: `${binary} from this host, a link per applet, a minimal /etc` }],
  })
}

// What Docker's busybox and alpine images run when told nothing else.
const SHELL_CONFIG = { Cmd: ['/bin/sh'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] }

// The directory to print for an image: its one layer's, or the image's own.
function where(image: ImageRecord): string {
  const dirs = layerDirs(image)
  return dirs.length === 1 ? dirs[0] : join(imagesDir, image.name)
}

// Make a one-layer image from a tar that `makeTar` writes in a scratch
// directory, unless the image is there already (and not --force). Two
// first runs at the same moment: one makes it, the other uses it.
async function build(
  name: string,
  force: boolean | undefined,
  log: (line: string) => void,
  makeTar: (work: string) => string | Promise<string>,
  info: ImageInfo,
): Promise<string> {
  if (!force && imageExists(name)) return where(readImage(name))
  mkdirSync(layersDir, { recursive: true })
  // In the store, so that npm run clean finds it if this process dies.
  const work = mkdtempSync(join(layersDir, `.tmp-${process.pid}-`))
  try {
    const tar = await makeTar(work)
    const image = await importImage(name, [{ label: `image \`${name}\``, file: tar }], info, { force })
    const rootfs = where(image)
    log(`image \`${name}\` ready at ${rootfs}`)
    return rootfs
  } catch (err) {
    if (!force && imageExists(name)) return where(readImage(name)) // another run made it meanwhile
    throw err
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

// The pinned minirootfs, checked, as a file in `work`.
async function downloadAlpine(work: string, log: (line: string) => void): Promise<string> {
  const sha256 = ALPINE.sha256[process.arch]
  if (!sha256) throw new Error(`no pinned Alpine image for ${process.arch}`)
  const url = ALPINE.url(process.arch)
  const response = await fetch(url, { signal: AbortSignal.timeout(60_000) }).catch((err: Error) => {
    throw new Error(`cannot reach ${new URL(url).host}: ${(err.cause as Error)?.message ?? err.message}`)
  })
  if (!response.ok || !response.body) throw new Error(`${url}: HTTP ${response.status}`)
  const total = Number(response.headers.get('content-length')) || 0
  const chunks: Buffer[] = []
  let received = 0
  for await (const chunk of response.body) {
    chunks.push(Buffer.from(chunk))
    received += chunk.length
    if (process.stderr.isTTY) {
      process.stderr.write(`\rcfs: downloading Alpine ${ALPINE.version}: ${mib(received)}${total ? ` of ${mib(total)}` : ''}`)
    }
  }
  if (process.stderr.isTTY) process.stderr.write('\n')
  const tarball = Buffer.concat(chunks)
  const actual = createHash('sha256').update(tarball).digest('hex')
  if (actual !== sha256) throw new Error(`SHA-256 mismatch for ${url}: expected ${sha256}, got ${actual}`)
  log(`downloaded Alpine ${ALPINE.version} (${mib(tarball.length)}, SHA-256 checked)`)
  const file = join(work, 'alpine.tar.gz')
  writeFileSync(file, tarball)
  return file
}

/** The host's busybox, if it is statically linked (it must run inside any root). */
export function findBusybox(): string {
  const candidates = ['/bin/busybox', '/usr/bin/busybox', '/usr/sbin/busybox', '/sbin/busybox']
  const found = candidates.find((path) => existsSync(path))
  if (!found) {
    throw new UsageError('no network for Alpine and no busybox on this host: install it with `apt-get install busybox-static`, or use `npm run rootfs -- --from-tar FILE`')
  }
  if (!isStatic(found)) {
    throw new UsageError(`${found} is dynamically linked, so it cannot run inside an image: install busybox-static`)
  }
  return found
}

// A static ELF has no PT_INTERP program header (no dynamic loader to ask for).
function isStatic(path: string): boolean {
  const header = Buffer.alloc(4096)
  const fd = openSync(path, 'r')
  try {
    readSync(fd, header, 0, header.length, 0)
  } finally {
    closeSync(fd)
  }
  const phoff = Number(header.readBigUInt64LE(0x20))
  const phentsize = header.readUInt16LE(0x36)
  const phnum = header.readUInt16LE(0x38)
  const PT_INTERP = 3
  for (let i = 0; i < phnum; i++) {
    if (header.readUInt32LE(phoff + i * phentsize) === PT_INTERP) return false
  }
  return true
}

// The busybox image's layer: the tree below, as a tar made the same way
// every time (names sorted, times 0, numeric owners). So the layer's
// diff_id is a content id: the same busybox gives the same layer, and a
// second build finds it in the store instead of unpacking another copy.
function busyboxLayer(work: string): string {
  const tree = join(work, 'tree')
  mkdirSync(tree)
  buildBusybox(tree)
  const tar = join(work, 'busybox.tar')
  execFileSync('tar', ['--sort=name', '--numeric-owner', '--mtime=@0', '--format=gnu', '-C', tree, '-cf', tar, '.'])
  return tar
}

// A tiny distribution: one static busybox, a link per applet, /etc basics.
function buildBusybox(rootfs: string): void {
  const busybox = findBusybox()
  for (const dir of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'root', 'proc', 'sys', 'dev', 'tmp', 'var/tmp', 'home', 'mnt']) {
    mkdirSync(join(rootfs, dir), { recursive: true })
  }
  chmodSync(join(rootfs, 'tmp'), 0o1777)
  copyFileSync(busybox, join(rootfs, 'bin/busybox'))
  chmodSync(join(rootfs, 'bin/busybox'), 0o755)
  const applets = execFileSync(busybox, ['--list-full'], { encoding: 'utf8' }).trim().split('\n')
  for (const applet of applets) {
    const link = join(rootfs, applet)
    if (applet === 'bin/busybox' || existsSync(link)) continue
    mkdirSync(dirname(link), { recursive: true })
    symlinkSync('/bin/busybox', link)
  }
  writeFileSync(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n')
  writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n')
  writeFileSync(join(rootfs, 'etc/hosts'), '127.0.0.1\tlocalhost\n')
  writeFileSync(join(rootfs, 'etc/os-release'), 'NAME="busybox (containers-from-scratch)"\nID=busybox\n')
  accessSync(join(rootfs, 'bin/sh'), fsConstants.X_OK)
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}
