// Images: the directory trees containers use as their root filesystem.
//
// An image is `<stateDir>/images/<name>/rootfs` plus `image.json` saying where
// it came from. Sources, in the order `prepareImage` tries them:
//   1. an image that is already there;
//   2. Alpine's minirootfs (pinned, SHA-256 checked), when the network allows;
//   3. busybox from the host (Debian/Ubuntu: apt-get install busybox-static),
//      which needs no network and is what CI uses;
//   4. any tarball, with --from-tar (e.g. the output of `docker export`).

import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readSync, closeSync,
  renameSync, rmSync, symlinkSync, writeFileSync, accessSync, constants as fsConstants,
} from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import { UsageError } from './errors.ts'
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

/** Where an image's root filesystem is (or would be). */
export function imageRootfs(name: string): string {
  return name.includes('/') ? resolve(name) : join(imagesDir, name, 'rootfs')
}

/**
 * The root filesystem to run: the named image (or a directory path), or the
 * default one, prepared on first use. Throws a one-line UsageError if the
 * image is missing or broken.
 */
export async function ensureImage(name?: string): Promise<string> {
  if (name) {
    const rootfs = imageRootfs(name)
    if (!existsSync(rootfs)) {
      throw new UsageError(`no image \`${name}\` at ${rootfs}: prepare it with \`npm run rootfs\``)
    }
    return checkImage(rootfs)
  }
  const found = DEFAULT_IMAGES.map(imageRootfs).find((dir) => existsSync(dir))
  if (found) return checkImage(found)
  // One line, not the preparation's running commentary: the learner asked for a container.
  const said: string[] = []
  const rootfs = await prepareImage({ log: (line) => said.push(line) })
  const fallback = said.find((line) => line.startsWith('Alpine download not possible'))
  process.stderr.write(`cfs: no image yet: prepared one at ${rootfs}, once${fallback ? ' (from the host\'s busybox: Alpine could not be downloaded)' : ''}\n`)
  return checkImage(rootfs)
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
  name?: string
  force?: boolean
  log?: (line: string) => void
}

/** Prepare an image and return its rootfs directory. See the header for the order. */
export async function prepareImage(options: PrepareOptions): Promise<string> {
  const log = options.log ?? ((line: string) => process.stderr.write(`cfs: ${line}\n`))
  if (options.fromTar) {
    const name = options.name ?? basename(options.fromTar).replace(/\.(tar(\.\w+)?|tgz)$/, '')
    return build(name, options.force, log, (dir) => extractTar(options.fromTar!, dir), { source: 'tar', file: resolve(options.fromTar) })
  }
  if (!options.force && !options.source) {
    const found = DEFAULT_IMAGES.map(imageRootfs).find((dir) => existsSync(dir))
    if (found) return found
  }
  if (options.source !== 'busybox') {
    try {
      return await build('alpine', options.force, log, (dir) => downloadAlpine(dir, log), { source: 'alpine', version: ALPINE.version })
    } catch (err) {
      if (options.source === 'alpine') throw err
      log(`Alpine download not possible (${(err as Error).message}); using the host's busybox instead`)
    }
  }
  return build('busybox', options.force, log, buildBusybox, { source: 'busybox', binary: findBusybox() })
}

// Build an image in a temporary directory and rename it into place, so a
// half-built image is never used and two first runs cannot collide.
async function build(
  name: string,
  force: boolean | undefined,
  log: (line: string) => void,
  fill: (rootfs: string) => void | Promise<void>,
  info: object,
): Promise<string> {
  const final = join(imagesDir, name)
  if (existsSync(final) && !force) return join(final, 'rootfs')
  mkdirSync(imagesDir, { recursive: true })
  const tmp = mkdtempSync(join(imagesDir, `.${name}-`))
  try {
    mkdirSync(join(tmp, 'rootfs'))
    await fill(join(tmp, 'rootfs'))
    writeFileSync(join(tmp, 'image.json'), JSON.stringify({ name, ...info, created: new Date().toISOString() }, null, 2) + '\n')
    if (force) rmSync(final, { recursive: true, force: true })
    renameSync(tmp, final)
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true })
    if ((err as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (err as NodeJS.ErrnoException).code === 'EEXIST') {
      return join(final, 'rootfs') // another run built it at the same moment
    }
    throw err
  }
  log(`image \`${name}\` ready at ${join(final, 'rootfs')}`)
  return join(final, 'rootfs')
}

async function downloadAlpine(rootfs: string, log: (line: string) => void): Promise<void> {
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
  const file = join(dirname(rootfs), 'alpine.tar.gz')
  writeFileSync(file, tarball)
  extractTar(file, rootfs)
  rmSync(file)
}

function extractTar(file: string, rootfs: string): void {
  if (!existsSync(file)) throw new UsageError(`no such tarball: ${file}`)
  try {
    // --numeric-owner: the image's uids are the image's, not this host's names.
    execFileSync('tar', ['-xf', resolve(file), '-C', rootfs, '--numeric-owner'], { stdio: ['ignore', 'ignore', 'pipe'] })
  } catch (err) {
    throw new UsageError(`cannot extract ${file}: ${String((err as { stderr?: Buffer }).stderr ?? '').trim().split('\n')[0]}`)
  }
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
