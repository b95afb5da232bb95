// Reading tar headers (POSIX ustar, pax and GNU long names), never file
// contents: see tar(5), "pax Interchange Format" in POSIX.1.
//
// GNU tar(1) unpacks the layers: it keeps owners, modes, xattrs and device
// nodes, which a hand-written extractor would get wrong. It is safe on its
// own against most tricks (it refuses `..` members, strips a leading `/`,
// and delays symlinks that point out of the tree, so nothing is written
// through them); but it refuses by printing a warning per member, carrying
// on with the rest and exiting 2, and it quietly re-roots absolute names and
// hard link targets instead of refusing them. So each header is read here
// first, in the stream, before tar(1) sees it: a layer with a bad member is
// refused with one line, before tar writes anything of it, and the layer's
// whiteouts are noted on the way. The same reader lists an image archive's
// members (docker save, podman save) to read its blobs in place.

import { closeSync, openSync, readSync } from 'node:fs'
import { Transform, type TransformCallback } from 'node:stream'
import { UsageError } from './errors.ts'

const BLOCK = 512

/** One member of an archive, as tar(5) describes it. */
export interface TarEntry {
  name: string // normalised: no leading `./`, no trailing `/`; '' is the archive's root
  type: 'file' | 'hardlink' | 'symlink' | 'chardev' | 'blockdev' | 'directory' | 'fifo'
  linkname: string // a symlink's target as written; a hard link's target, normalised
  size: number
  uid: number
  gid: number
  dataOffset: number // where its contents start in the (uncompressed) archive
}

const TYPES: Record<string, TarEntry['type']> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'chardev', '4': 'blockdev', '5': 'directory', '6': 'fifo',
}

// A header's numbers are octal text, or, past 8 GiB, base-256 with the top bit set (GNU).
function number(block: Buffer, start: number, length: number): number {
  if (block[start] & 0x80) {
    let value = block[start] & 0x7f
    for (let i = start + 1; i < start + length; i++) value = value * 256 + block[i]
    return value
  }
  const text = block.toString('latin1', start, start + length).replace(/[\0 ]+$/, '').trim()
  return text === '' ? 0 : parseInt(text, 8)
}

function text(block: Buffer, start: number, length: number): string {
  const end = block.indexOf(0, start)
  return block.toString('utf8', start, end === -1 || end > start + length ? start + length : end)
}

// The checksum is the sum of the header's bytes with its own field read as spaces.
function checksumOk(block: Buffer): boolean {
  const stored = number(block, 148, 8)
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : block[i]
  return sum === stored
}

// "%d %s=%s\n" records (POSIX pax extended header).
function paxRecords(data: Buffer): Record<string, string> {
  const records: Record<string, string> = {}
  let at = 0
  while (at < data.length && data[at] !== 0) {
    const space = data.indexOf(32, at)
    const length = Number(data.toString('latin1', at, space))
    if (space === -1 || !(length > 0) || at + length > data.length) throw new Error('bad pax header')
    const record = data.toString('utf8', space + 1, at + length - 1)
    const equals = record.indexOf('=')
    records[record.slice(0, equals)] = record.slice(equals + 1)
    at += length
  }
  return records
}

/**
 * A path inside the archive, checked and normalised: refused if absolute
 * or if any component is `..` (either would let a member land outside the
 * directory it is unpacked into).
 */
export function memberPath(raw: string, what = 'member'): string {
  if (raw.includes('\0')) throw new UsageError(`a ${what} name has a NUL byte in it`)
  if (raw.startsWith('/')) throw new UsageError(`${what} \`${raw}\` is an absolute path`)
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.')
  if (parts.includes('..')) throw new UsageError(`${what} \`${raw}\` has a \`..\` component`)
  return parts.join('/')
}

/**
 * Turns a stream of header blocks into entries, following pax extended
 * headers (x), GNU long names (L, K), and ustar's name prefix. `data` reads
 * the contents of those meta entries, which are small.
 */
class HeaderReader {
  private pax: Record<string, string> = {}
  private longName?: string
  private longLink?: string

  /** A header block: the entry, a meta entry whose data must be read next ('meta'), or the end. */
  read(block: Buffer, offset: number): TarEntry | { meta: string; size: number } | 'end' {
    if (block.every((byte) => byte === 0)) return 'end'
    if (!checksumOk(block)) throw new UsageError(`not a tar archive, or a corrupt one: bad header checksum at byte ${offset}`)
    const flag = String.fromCharCode(block[156])
    const size = this.pax.size !== undefined ? Number(this.pax.size) : number(block, 124, 12)
    if (!Number.isSafeInteger(size) || size < 0) throw new UsageError(`not a tar archive, or a corrupt one: bad size at byte ${offset}`)
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') return { meta: flag, size: number(block, 124, 12) }
    const type = TYPES[flag]
    if (!type) throw new UsageError(`member at byte ${offset} has tar type \`${flag}\`, which images do not use`)
    // ustar (magic "ustar\0") splits long names into prefix/name; GNU ("ustar  ") uses that field for times.
    const posix = block.toString('latin1', 257, 263) === 'ustar\0'
    const prefix = posix ? text(block, 345, 155) : ''
    const rawName = this.pax.path ?? this.longName ?? (prefix ? `${prefix}/${text(block, 0, 100)}` : text(block, 0, 100))
    const rawLink = this.pax.linkpath ?? this.longLink ?? text(block, 157, 100)
    this.pax = {}
    this.longName = this.longLink = undefined
    // Only files have contents: a size on anything else would leave tar(1) and
    // this reader reading different blocks as the next header.
    if (type !== 'file' && size !== 0) throw new UsageError(`member \`${rawName}\` is a ${type} with ${size} bytes of contents`)
    return {
      name: memberPath(rawName),
      type,
      linkname: type === 'hardlink' ? memberPath(rawLink, 'hard link target') : rawLink,
      size: type === 'file' ? size : 0,
      uid: number(block, 108, 8),
      gid: number(block, 116, 8),
      dataOffset: offset + BLOCK,
    }
  }

  /** The contents of the meta entry just read. */
  meta(flag: string, data: Buffer): void {
    if (flag === 'x' || flag === 'g') {
      const records = paxRecords(data)
      // GNU tar names a sparse file by GNU.sparse.name, which this reader would not check.
      const sparse = Object.keys(records).find((key) => key.startsWith('GNU.sparse.'))
      if (sparse) throw new UsageError(`a member is a sparse file (pax \`${sparse}\`), which images do not use`)
      if (flag === 'x') this.pax = records
      else if (['path', 'linkpath', 'size'].some((key) => key in records)) throw new UsageError('a global pax header sets a name or size for every member')
    } else if (flag === 'L') this.longName = text(data, 0, data.length)
    else if (flag === 'K') this.longLink = text(data, 0, data.length)
  }
}

function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK
}

/** What a layer's scan found, for after tar(1) has unpacked it. */
export interface LayerScan {
  entries: number
  whiteouts: string[] // paths whose `.wh.NAME` said: deleted in this layer
  opaque: string[] // directories whose `.wh..wh..opq` said: hide what lower layers have here
}

/**
 * A pass-through stream that reads every header of a layer's tar before
 * passing it on, and fails the stream, before the member reaches tar(1),
 * on a member that could write outside the layer:
 *   - an absolute name, or a `..` component (memberPath);
 *   - a member under a path that is a symlink made earlier in this layer
 *     (it would be written through the link, wherever it points);
 *   - a member at the path of an earlier symlink (tar(1) would replace a
 *     link it has not made yet, or follow it);
 *   - a hard link whose target is not an earlier member of this layer (a
 *     link to a host file would bring that file into the image);
 *   - a whiteout that is not a plain file, or names `.` or `..`.
 * The archive must end with tar's end-of-archive blocks, or it is truncated.
 */
export class LayerScanner extends Transform {
  readonly scan: LayerScan = { entries: 0, whiteouts: [], opaque: [] }
  private reader = new HeaderReader()
  private pending: Buffer[] = [] // a header block, or a meta entry's data, in pieces
  private pendingBytes = 0
  private want = BLOCK // bytes to gather before looking at them
  private meta?: { flag: string; size: number }
  private pass = 0 // bytes of a member's data (and padding) to pass on unread
  private offset = 0
  private ended = false
  private symlinks = new Set<string>()
  private members = new Set<string>() // non-directories so far: what a hard link may name

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    try {
      this.feed(chunk)
      done()
    } catch (err) {
      done(err as Error)
    }
  }

  override _flush(done: TransformCallback): void {
    done(this.ended ? undefined : new UsageError(`the tar archive ends at byte ${this.offset + this.pendingBytes}, in the middle: truncated`))
  }

  private feed(chunk: Buffer): void {
    while (chunk.length > 0) {
      if (this.ended) { // tar(1) stops at the end-of-archive block; what follows is padding
        this.push(chunk)
        return
      }
      if (this.pass > 0) {
        const n = Math.min(this.pass, chunk.length)
        this.push(chunk.subarray(0, n))
        this.pass -= n
        this.offset += n
        chunk = chunk.subarray(n)
        continue
      }
      const n = Math.min(this.want - this.pendingBytes, chunk.length)
      this.pending.push(chunk.subarray(0, n))
      this.pendingBytes += n
      chunk = chunk.subarray(n)
      if (this.pendingBytes < this.want) return
      const gathered = Buffer.concat(this.pending)
      this.pending = []
      this.pendingBytes = 0
      this.header(gathered)
      this.push(gathered) // only once it has been checked
      this.offset += gathered.length
    }
  }

  // A whole header block, or a whole meta entry's data (padded).
  private header(gathered: Buffer): void {
    if (this.meta) {
      this.reader.meta(this.meta.flag, gathered.subarray(0, this.meta.size))
      this.meta = undefined
      this.want = BLOCK
      return
    }
    const header = this.reader.read(gathered, this.offset)
    if (header === 'end') {
      this.ended = true
      return
    }
    if ('meta' in header) {
      if (header.size > 1 << 20) throw new UsageError(`a tar extended header of ${header.size} bytes at byte ${this.offset}: too big to be one`)
      if (header.size > 0) {
        this.meta = { flag: header.meta, size: header.size }
        this.want = padded(header.size)
      }
      return
    }
    this.check(header)
    this.pass = padded(header.size)
  }

  private check(entry: TarEntry): void {
    const { name } = entry
    const parts = name.split('/')
    for (let i = 1; i < parts.length; i++) {
      const above = parts.slice(0, i).join('/')
      if (this.symlinks.has(above)) throw new UsageError(`member \`${name}\` would be written through \`${above}\`, a symlink earlier in the same layer`)
    }
    if (this.symlinks.has(name)) throw new UsageError(`member \`${name}\` comes again after a symlink of that name in the same layer`)
    if (entry.type === 'hardlink' && !this.members.has(entry.linkname)) {
      throw new UsageError(`hard link \`${name}\` points to \`${entry.linkname}\`, which is not an earlier file of this layer`)
    }
    if (entry.type === 'symlink') this.symlinks.add(name)
    if (entry.type !== 'directory') this.members.add(name)
    if (name === '' && entry.type !== 'directory') throw new UsageError('the archive\'s root member is not a directory')
    const base = parts[parts.length - 1]
    if (base.startsWith('.wh.')) {
      const dir = parts.slice(0, -1).join('/')
      const target = base.slice('.wh.'.length)
      if (entry.type !== 'file') throw new UsageError(`whiteout \`${name}\` is not a plain file`)
      if (target === '.wh..opq') this.scan.opaque.push(dir)
      else if (target === '' || target === '.' || target === '..' || target.startsWith('.wh.')) throw new UsageError(`whiteout \`${name}\` names no file`)
      else this.scan.whiteouts.push(dir ? `${dir}/${target}` : target)
    }
    if (name !== '') this.scan.entries++
  }
}

/** The regular members of a tar file, and where their contents are, without unpacking it. */
export function indexTar(file: string): Map<string, TarEntry> {
  const members = new Map<string, TarEntry>()
  const reader = new HeaderReader()
  const fd = openSync(file, 'r')
  const readAt = (offset: number, length: number): Buffer => {
    const buffer = Buffer.alloc(length)
    const got = readSync(fd, buffer, 0, length, offset)
    if (got < length) throw new UsageError(`${file}: the tar archive ends at byte ${offset + got}, in the middle: truncated`)
    return buffer
  }
  try {
    for (let offset = 0; ;) {
      const header = reader.read(readAt(offset, BLOCK), offset)
      if (header === 'end') return members
      if ('meta' in header) {
        reader.meta(header.meta, readAt(offset + BLOCK, header.size))
        offset += BLOCK + padded(header.size)
        continue
      }
      members.set(header.name, header)
      offset += BLOCK + padded(header.size)
    }
  } finally {
    closeSync(fd)
  }
}
