// Importing images made by other tools: an OCI image layout (a directory,
// or a tar of one, as `docker save` writes since Docker 25), or a
// docker-archive (manifest.json and layer tars, as `podman save` and older
// Docker write). See the OCI image spec: image-layout.md, image-index.md,
// manifest.md, config.md.
//
// Nothing is trusted that a digest does not vouch for: index.json names
// the manifest by its SHA-256, the manifest names the config and each
// layer's blob by theirs, and the config names each layer's uncompressed
// tar by its diff_id. shared/layers.ts checks the layers and unpacks them.

import { createHash } from 'node:crypto'
import { closeSync, existsSync, openSync, readSync, realpathSync, statSync } from 'node:fs'
import { basename, join, posix, resolve } from 'node:path'
import { UsageError } from './errors.ts'
import { importImage, type HistoryEntry, type ImageConfig, type ImageRecord, type LayerSource } from './layers.ts'
import { indexTar, memberPath, type TarEntry } from './tar.ts'

/** OCI's name for this machine's architecture (Go's GOARCH). */
export function hostArchitecture(arch = process.arch): string {
  return ({ x64: 'amd64', ia32: '386', arm: 'arm', arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' } as Record<string, string>)[arch] ?? arch
}

/**
 * Import the image at `path` (an OCI layout directory, a tar of one, or a
 * docker-archive) as `name`, or as the name the archive gives it.
 */
export async function importOci(
  path: string,
  { name, force, log }: { name?: string; force?: boolean; log?: (line: string) => void } = {},
): Promise<ImageRecord> {
  // PATH:TAG, as umoci and skopeo write it: the image of that tag in the archive.
  const tagged = !existsSync(path) && /^(.+):([\w][\w.-]{0,127})$/.exec(path)
  if (tagged && existsSync(tagged[1])) path = tagged[1]
  const tag = tagged && path === tagged[1] ? tagged[2] : undefined
  const archive = openArchive(resolve(path))
  const found = archive.has('index.json') && archive.has('oci-layout') ? readLayout(archive, tag) : archive.has('manifest.json') ? readDockerArchive(archive, tag) : undefined
  if (!found) {
    throw new UsageError(`${path} is neither an OCI image layout (oci-layout and index.json) nor a docker-archive (manifest.json)`)
  }
  const { layers, config, info: { ref, ...info } } = found
  const host = hostArchitecture()
  if (config.architecture && config.architecture !== host) {
    log?.(`note: the image is for ${config.os ?? 'linux'}/${config.architecture}; this machine is linux/${host}`)
  }
  const diffIds = config.rootfs?.diff_ids
  if (!Array.isArray(diffIds) || diffIds.length !== layers.length) {
    throw new UsageError(`${path}: the config lists ${Array.isArray(diffIds) ? diffIds.length : 'no'} layers (rootfs.diff_ids), the manifest ${layers.length}`)
  }
  const sources = layers.map((layer, i): LayerSource => ({
    ...archive.source(layer.path),
    label: `layer ${i + 1} of ${layers.length}`,
    digest: layer.digest,
    size: layer.size,
    diffId: checkDigest(diffIds[i], `rootfs.diff_ids[${i}]`),
  }))
  return importImage(name ?? defaultName(ref, path), sources, {
    ...info,
    file: resolve(path),
    platform: `${config.os ?? 'linux'}/${config.architecture ?? host}`,
    config: imageConfig(config.config),
    history: (config.history ?? []).map(historyEntry),
  }, { force, log })
}

// What the manifest (or manifest.json) says of a layer's blob.
interface LayerBlob {
  path: string
  digest?: string
  size?: number
}

// The parts of an image config (config.md) read here.
interface OciConfig {
  architecture?: string
  os?: string
  config?: Record<string, unknown> | null
  rootfs?: { type?: string; diff_ids?: string[] }
  history?: Record<string, unknown>[]
}

interface Found {
  layers: LayerBlob[]
  config: OciConfig
  info: { source: string; format: string; ref?: string; digest?: string }
}

interface Descriptor {
  mediaType?: string
  digest: string
  size: number
  platform?: { os?: string; architecture?: string; variant?: string }
  annotations?: Record<string, string>
}

const INDEX_TYPES = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']
const MANIFEST_TYPES = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json']
const CONFIG_TYPES = ['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']
// Layer media types: tars, plain or compressed (the blob's first bytes say which).
const LAYER_TYPE = /^application\/vnd\.(oci\.image\.layer(\.nondistributable)?\.v1\.tar(\+gzip|\+zstd)?|docker\.image\.rootfs\.(foreign\.)?diff\.tar(\.gzip)?)$/

// image-layout.md: oci-layout, index.json, blobs/<alg>/<hex>.
function readLayout(archive: Archive, tag?: string): Found {
  const layout = archive.json('oci-layout') as { imageLayoutVersion?: string }
  if (!String(layout.imageLayoutVersion).startsWith('1.')) throw new UsageError(`${archive.name}: oci-layout says version ${layout.imageLayoutVersion}, not 1.x`)
  const top = archive.json('index.json') as { manifests?: Descriptor[] }
  const refName = (d: Descriptor) => d.annotations?.['org.opencontainers.image.ref.name'] ?? d.annotations?.['io.containerd.image.name']
  const listed = top.manifests ?? []
  const picked = tag === undefined ? listed : listed.filter((d) => refName(d) === tag || refName(d)?.endsWith(`:${tag}`))
  if (!picked.length) throw new UsageError(`${archive.name}: no image tagged \`${tag}\` in it; its tags: ${listed.map(refName).filter(Boolean).join(', ') || 'none'}`)
  const chosen = chooseManifest(archive, picked, 0)
  const manifest = archive.blob(chosen, 'the manifest') as { config?: Descriptor; layers?: Descriptor[] }
  if (!manifest.config || !Array.isArray(manifest.layers)) throw new UsageError(`${archive.name}: manifest ${chosen.digest} has no config or no layers`)
  if (manifest.config.mediaType && !CONFIG_TYPES.includes(manifest.config.mediaType)) {
    throw new UsageError(`${archive.name}: its config is a ${manifest.config.mediaType}: not a container image`)
  }
  const config = archive.blob(manifest.config, 'the config') as OciConfig
  const layers = manifest.layers.map((layer, i) => {
    if (layer.mediaType && !LAYER_TYPE.test(layer.mediaType)) throw new UsageError(`${archive.name}: layer ${i + 1} is a ${layer.mediaType}, not a layer tar`)
    return { path: blobPath(layer), digest: layer.digest, size: layer.size }
  })
  const ref = chosen.annotations?.['io.containerd.image.name'] ?? chosen.annotations?.['org.opencontainers.image.ref.name']
  return { layers, config, info: { source: 'oci', format: archive.kind === 'directory' ? 'oci-layout' : 'oci-archive', ref, digest: chosen.digest } }
}

// The manifest for this machine: the one manifest, or, from an index (of
// indexes), the one for linux and this architecture. Docker's attestations
// (platform unknown/unknown) are not images.
function chooseManifest(archive: Archive, descriptors: Descriptor[], depth: number): Descriptor {
  const host = hostArchitecture()
  const manifests: Descriptor[] = []
  const collect = (list: Descriptor[], level: number, inherited?: Descriptor['annotations']) => {
    for (const d of list) {
      if (INDEX_TYPES.includes(d.mediaType ?? '')) {
        if (level > 4) throw new UsageError(`${archive.name}: indexes nested too deep`)
        const nested = archive.blob(d, 'an index') as { manifests?: Descriptor[] }
        collect(nested.manifests ?? [], level + 1, { ...inherited, ...d.annotations })
      } else if (!d.mediaType || MANIFEST_TYPES.includes(d.mediaType)) {
        if (d.platform?.os === 'unknown' || d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest') continue
        manifests.push({ ...d, annotations: { ...inherited, ...d.annotations } })
      }
    }
  }
  collect(descriptors, depth)
  const forHost = manifests.filter((d) => d.platform?.os === 'linux' && d.platform.architecture === host)
  if (forHost.length) return forHost.find((d) => !d.platform?.variant || d.platform.variant === 'v8') ?? forHost[0]
  const unnamed = manifests.filter((d) => !d.platform)
  if (unnamed.length === 1) return unnamed[0]
  if (manifests.length === 0) throw new UsageError(`${archive.name}: index.json lists no image manifest`)
  if (unnamed.length > 1) throw new UsageError(`${archive.name}: index.json lists ${unnamed.length} images and no platform for them: pick one by its tag, PATH:TAG`)
  const platforms = [...new Set(manifests.map((d) => [d.platform?.os, d.platform?.architecture, d.platform?.variant].filter(Boolean).join('/')))]
  throw new UsageError(`${archive.name}: no image for linux/${host} in it, only for ${platforms.join(', ')}`)
}

// docker-archive: manifest.json lists the config and the layer tars by path.
function readDockerArchive(archive: Archive, tag?: string): Found {
  const all = archive.json('manifest.json') as { Config?: string; RepoTags?: string[]; Layers?: string[] }[]
  if (!Array.isArray(all) || all.length === 0) throw new UsageError(`${archive.name}: manifest.json lists no image`)
  const tags = all.flatMap((i) => i.RepoTags ?? [])
  const list = tag === undefined ? all : all.filter((i) => (i.RepoTags ?? []).some((t) => t === tag || t.endsWith(`:${tag}`)))
  if (!list.length) throw new UsageError(`${archive.name}: no image tagged \`${tag}\` in it; its tags: ${tags.join(', ') || 'none'}`)
  if (list.length > 1) throw new UsageError(`${archive.name}: manifest.json lists ${list.length} images (${tags.join(', ')}): pick one by its tag, PATH:TAG`)
  const [entry] = list
  if (typeof entry.Config !== 'string' || !Array.isArray(entry.Layers)) throw new UsageError(`${archive.name}: manifest.json has no Config or no Layers`)
  // Config and blobs are named by their digest (<hex>.json, blobs/sha256/<hex>): check it. Old
  // Docker's <id>/layer.tar have no digest in their name: their diff_id is their check.
  const config = archive.json(entry.Config, digestInName(entry.Config)) as OciConfig
  const layers = entry.Layers.map((path) => ({ path, digest: /^blobs\/sha256\/[0-9a-f]{64}$/.test(path) ? digestInName(path) : undefined }))
  return { layers, config, info: { source: 'docker-archive', format: archive.kind === 'directory' ? 'docker-archive directory' : 'docker-archive', ref: entry.RepoTags?.[0] } }
}

function digestInName(path: string): string | undefined {
  const hex = /(?:^|\/)([0-9a-f]{64})(\.json)?$/.exec(path)?.[1]
  return hex ? `sha256:${hex}` : undefined
}

function blobPath(descriptor: Descriptor): string {
  const [algorithm, hex] = checkDigest(descriptor.digest, 'a descriptor').split(':')
  return `blobs/${algorithm}/${hex}`
}

function checkDigest(digest: unknown, what: string): string {
  if (typeof digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(digest)) throw new UsageError(`${what}: \`${String(digest)}\` is not a sha256 digest (the only kind this reads)`)
  return digest
}

// config.md's "config": what to run; the OCI names, as image.json keeps them.
function imageConfig(config: OciConfig['config']): ImageConfig {
  const result: ImageConfig = {}
  const strings = (value: unknown) => Array.isArray(value) && value.every((v) => typeof v === 'string') ? value as string[] : undefined
  if (strings(config?.Entrypoint)) result.Entrypoint = strings(config?.Entrypoint)
  if (strings(config?.Cmd)) result.Cmd = strings(config?.Cmd)
  if (strings(config?.Env)) result.Env = strings(config?.Env)
  if (typeof config?.WorkingDir === 'string' && config.WorkingDir) result.WorkingDir = config.WorkingDir
  if (typeof config?.User === 'string' && config.User) result.User = config.User
  return result
}

function historyEntry(entry: Record<string, unknown>): HistoryEntry {
  const result: HistoryEntry = {}
  if (typeof entry.created === 'string') result.created = entry.created
  if (typeof entry.created_by === 'string') result.createdBy = entry.created_by
  if (entry.empty_layer === true) result.emptyLayer = true
  if (typeof entry.comment === 'string') result.comment = entry.comment
  return result
}

// "docker.io/library/alpine:3.20" -> alpine; else the file's name.
function defaultName(ref: string | undefined, path: string): string {
  const fromRef = ref?.split('/').pop()?.split('@')[0].split(':')[0]
  if (fromRef && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(fromRef) && !/^(latest|[0-9.]+)$/.test(fromRef)) return fromRef
  return basename(resolve(path)).replace(/\.(tar|oci|docker)$/, '').replace(/[^A-Za-z0-9_.-]/g, '-')
}

// Where the image's files are: a directory, or a tar read in place.
interface Archive {
  name: string
  kind: 'directory' | 'tar'
  has(path: string): boolean
  json(path: string, digest?: string): unknown
  blob(descriptor: Descriptor, what: string): unknown
  source(path: string): { file: string; start?: number; size?: number }
}

function openArchive(path: string): Archive {
  if (!existsSync(path)) throw new UsageError(`no such file or directory: ${path}`)
  const reader = statSync(path).isDirectory() ? directoryFiles(path) : tarFiles(path)
  const archive: Archive = {
    name: path,
    kind: reader.kind,
    has: (member) => reader.find(member) !== undefined,
    json(member, digest) {
      const where = reader.find(member)
      if (!where) throw new UsageError(`${path}: ${member} is missing`)
      if (where.size > 16 << 20) throw new UsageError(`${path}: ${member} is ${where.size} bytes, too big for a JSON document`)
      const bytes = readRange(where.file, where.start ?? 0, where.size)
      const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`
      if (digest && actual !== digest) throw new UsageError(`${path}: ${member} has sha256 ${actual.slice(7)}, not ${digest.slice(7)} as it is named: corrupt`)
      try {
        return JSON.parse(bytes.toString('utf8'))
      } catch (err) {
        throw new UsageError(`${path}: ${member} is not JSON (${(err as Error).message})`)
      }
    },
    blob(descriptor, what) {
      const member = blobPath(descriptor)
      if (!reader.find(member)) throw new UsageError(`${path}: ${what} (${descriptor.digest}) is missing: no ${member}`)
      if (reader.find(member)!.size !== descriptor.size) throw new UsageError(`${path}: ${member} is ${reader.find(member)!.size} bytes, not ${descriptor.size} as its descriptor says: corrupt`)
      return archive.json(member, descriptor.digest)
    },
    source(member) {
      const where = reader.find(member)
      if (!where) throw new UsageError(`${path}: layer ${member} is missing`)
      return { file: where.file, start: where.start, size: where.size }
    },
  }
  return archive
}

interface Located {
  file: string
  start?: number
  size: number
}

// A directory's files, only those inside it (a symlink out of it is not followed).
function directoryFiles(root: string): { kind: 'directory'; find: (member: string) => Located | undefined } {
  const realRoot = realpathSync(root)
  return {
    kind: 'directory',
    find(member) {
      const path = join(realRoot, memberPath(member))
      try {
        const real = realpathSync(path)
        if (!real.startsWith(`${realRoot}/`) || !statSync(real).isFile()) return undefined
        return { file: real, size: statSync(real).size }
      } catch {
        return undefined
      }
    },
  }
}

// A tar's members, read in place: no unpacking of a whole image to read it
// once. Links inside the archive are followed (old docker save links
// repeated layers to the first copy), never out of it.
function tarFiles(file: string): { kind: 'tar'; find: (member: string) => Located | undefined } {
  const head = readRange(file, 0, 2)
  if (head[0] === 0x1f && head[1] === 0x8b) throw new UsageError(`${file} is gzip-compressed: gunzip it first (an image archive is read in place, which a compressed one cannot be)`)
  let members: Map<string, TarEntry>
  try {
    members = indexTar(file)
  } catch (err) {
    if (err instanceof UsageError && !err.message.startsWith(`${file}: `)) throw new UsageError(`${file}: ${err.message}`)
    throw err
  }
  const size = statSync(file).size
  return {
    kind: 'tar',
    find(member) {
      let name = memberPath(member)
      for (let hops = 0; hops < 16; hops++) {
        const entry = members.get(name)
        if (!entry) return undefined
        if (entry.type === 'file') {
          if (entry.dataOffset + entry.size > size) throw new UsageError(`${file}: ${name} runs past the end of the archive: truncated`)
          return { file, start: entry.dataOffset, size: entry.size }
        }
        if (entry.type === 'hardlink') name = entry.linkname
        else if (entry.type === 'symlink' && !entry.linkname.startsWith('/')) {
          const target = posix.normalize(posix.join(posix.dirname(name), entry.linkname))
          if (target.startsWith('../')) return undefined
          name = memberPath(target)
        } else return undefined
      }
      return undefined
    },
  }
}

function readRange(file: string, start: number, length: number): Buffer {
  const buffer = Buffer.alloc(length)
  const fd = openSync(file, 'r')
  try {
    const got = readSync(fd, buffer, 0, length, start)
    if (got < length) throw new UsageError(`${file}: ends at byte ${start + got}, ${length - got} bytes short: truncated`)
  } finally {
    closeSync(fd)
  }
  return buffer
}
