// What a container changed, and all it sees, from its overlay (steps 07-10):
//   npm run images -- diff ID         docker diff: its changes, A|C|D /path
//   npm run images -- export ID FILE  docker export: its merged view as a tar
// ID is a running container's id (or a prefix only it has) or --name, or the
// id of one kept with --keep. Its directory (shared/overlay.ts) holds upper/,
// its changes, and `lower`, the image's layers under them.

import { spawn } from 'node:child_process'
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readSync, statSync, writeSync, type Stats } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { requireRoot } from '../../shared/cli.ts'
import { handBack } from './owner.ts'
import { UsageError } from '../../shared/errors.ts'
import { mount, MS_PRIVATE, MS_RDONLY, MS_REC } from '../../shared/mounts.ts'
import { CLONE_NEWNS, spawnInNamespaces } from '../../shared/namespaces.ts'
import { etcVolumes } from '../../shared/net.ts'
import { isOpaque, isWhiteout, overlayDirs, readLowerdirs } from '../../shared/overlay.ts'
import { readStates, runDir, statusOf } from '../../shared/state.ts'
import { ROOT_MAP, shiftedLayers, type IdMap } from '../../shared/userns.ts'
import { stateDirs } from './containers.ts'
import { listDir } from './files.ts'

/** One change, as `docker diff` prints it: A added, C changed, D deleted. */
export interface Change {
  kind: 'A' | 'C' | 'D'
  path: string
}

/** A container with an overlay: its directory, and its PID 1 on the host if it runs. */
export interface ContainerDir {
  id: string
  dir: string
  pid1?: number
  map?: IdMap // steps 09-10: container root is map.outside on the host
}

/** `npm run images -- diff ID`: print the container's changes, one `A|C|D /path` a line, by path. */
export function diffCommand(args: string[]): void {
  if (args.length !== 1) throw new UsageError('usage: npm run images -- diff ID   (a running container\'s id or --name, or a kept one\'s id)')
  requireRoot()
  for (const { kind, path } of containerChanges(args[0])) console.log(`${kind} ${path}`)
}

/** `npm run images -- export ID FILE`: write the container's merged view to FILE, a tar; print how many files and bytes. */
export async function exportCommand(args: string[]): Promise<void> {
  if (args.length !== 2) throw new UsageError('usage: npm run images -- export ID FILE   (a running container\'s id or --name, or a kept one\'s id)')
  requireRoot()
  const { id, file, files, bytes } = await exportContainer(args[0], args[1])
  handBack(file) // written as root through sudo: the learner's file, not root's
  console.log(`exported container ${id} to ${file}: ${files} files, ${bytes} bytes (${(bytes / 1024 / 1024).toFixed(1)} MiB)`)
}

/**
 * The container `idOrName`: a running one by its --name, or any by its id
 * or a prefix of it that only it has, among the containers' directories of
 * root's and the user's state dirs. Else one line (UsageError, exit 125).
 */
export function findContainerDir(idOrName: string): ContainerDir {
  const found = stateDirs().flatMap((stateDir) => {
    const running = readStates(runDir(stateDir)).filter(({ state }) => statusOf(state) === 'running' || statusOf(state) === 'parent gone')
    const named = running.filter(({ state }) => state.name === idOrName).map(({ state }) => state.id)
    const ids = named.length ? named : listDir(join(stateDir, 'containers')).filter((id) => id.startsWith(idOrName))
    return ids.map((id) => ({ id, dir: join(stateDir, 'containers', id), pid1: running.find(({ state }) => state.id === id)?.state.pid1.pid }))
  })
  if (found.length > 1) throw new UsageError(`\`${idOrName}\` is the start of ${found.length} container ids: give more of it (see npm run ps)`)
  const [container] = found
  if (!container || !existsSync(join(container.dir, 'upper'))) {
    throw new UsageError(`no such container: \`${idOrName}\`: give the id or --name of a running container of steps 07-10, or the id of one kept with --keep (see npm run ps)`)
  }
  // Steps 09-10 give upper/ to container root (idMapFor, shared/userns.ts): as root, host uid 100000; rootless, the user.
  const owner = statSync(join(container.dir, 'upper')).uid
  const map = owner === 0 ? undefined : owner === ROOT_MAP.outside ? ROOT_MAP : { inside: 0, outside: owner, count: 1 }
  return { ...container, map }
}

/** The container's changes to its image, by path: what its upper dir holds, against the layers below. */
export function containerChanges(idOrName: string): Change[] {
  const container = findContainerDir(idOrName)
  const upper = overlayDirs(container.dir).upper
  return withoutMountPoints(changesIn(upper, lowerdirsOf(container)), upper, container.dir)
}

// Steps 08-10 bind the container's own /etc/resolv.conf, hosts and hostname
// (shared/net.ts) over the image's; one the image lacks is made in the upper
// dir first, empty, as the mount's target. Not a change of the container's,
// and `docker diff` does not list Docker's either: leave those out, and
// /etc's C if nothing else in it changed.
function withoutMountPoints(changes: Change[], upper: string, dir: string): Change[] {
  if (!existsSync(join(dir, 'etc'))) return changes // not a container of steps 08-10
  const targets = new Set(etcVolumes(dir).map((volume) => volume.target))
  const stub = (change: Change) => change.kind === 'A' && targets.has(change.path) && lstatSync(join(upper, change.path)).size === 0
  const left = changes.filter((change) => !stub(change))
  return left.filter((change) => change.path !== '/etc' || change.kind !== 'C' || left.some((other) => other.path.startsWith('/etc/')) || left.length === changes.length)
}

// The layers under its upper dir, as its directory notes them.
function lowerdirsOf(container: ContainerDir): string[] {
  const lowerdirs = readLowerdirs(container.dir)
  if (!lowerdirs.length) throw new UsageError(`container ${container.id}: its directory does not say which image layers it is on (no \`lower\` file): it was made before images had layers`)
  return lowerdirs
}

/**
 * The changes an upper dir makes to `lowerdirs` (top first), as `docker
 * diff` reports them: a whiteout is D; an opaque directory is C, with a D
 * for each name below it that it hides; anything else is C if the layers
 * below show something at its path, else A.
 */
export function changesIn(upper: string, lowerdirs: string[]): Change[] {
  const changes: Change[] = []
  const walk = (rel: string) => {
    for (const name of readdirSync(join(upper, rel))) {
      const path = rel ? `${rel}/${name}` : name
      const stat = lstatSync(join(upper, path))
      if (isWhiteout(stat)) {
        changes.push({ kind: 'D', path: `/${path}` })
        continue
      }
      changes.push({ kind: shownBelow(lowerdirs, path) ? 'C' : 'A', path: `/${path}` })
      if (!stat.isDirectory()) continue
      if (isOpaque(join(upper, path))) {
        for (const hidden of namesBelow(lowerdirs, path)) if (!existsSync(join(upper, path, hidden))) changes.push({ kind: 'D', path: `/${path}/${hidden}` })
      }
      walk(path)
    }
  }
  walk('')
  return changes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
}

// What the layers (top first) show at `rel`, as overlayfs merges them: the
// first layer that has the name decides (a whiteout: nothing); a layer
// that hides the name (see hidesBelow) ends the search.
function shownBelow(lowerdirs: string[], rel: string): Stats | undefined {
  for (const layer of lowerdirs) {
    const stat = lstatSync(join(layer, rel), { throwIfNoEntry: false })
    if (stat) return isWhiteout(stat) ? undefined : stat
    if (hidesBelow(layer, rel)) return undefined
  }
  return undefined
}

// The names the layers (top first) show in directory `rel`.
function namesBelow(lowerdirs: string[], rel: string): string[] {
  const names = new Set<string>()
  const gone = new Set<string>()
  for (const layer of lowerdirs) {
    const stat = lstatSync(join(layer, rel), { throwIfNoEntry: false })
    if (stat && !stat.isDirectory()) break
    if (!stat) {
      if (hidesBelow(layer, rel)) break
      continue
    }
    for (const name of readdirSync(join(layer, rel))) {
      if (isWhiteout(lstatSync(join(layer, rel, name)))) gone.add(name)
      else if (!gone.has(name)) names.add(name)
    }
    if (isOpaque(join(layer, rel))) break
  }
  return [...names].sort()
}

// Whether `layer` hides `rel` in the layers under it: a directory above
// `rel` is, in this layer, a whiteout, not a directory, or opaque.
function hidesBelow(layer: string, rel: string): boolean {
  const parts = rel.split('/')
  for (let n = 1; n < parts.length; n++) {
    const above = join(layer, ...parts.slice(0, n))
    const stat = lstatSync(above, { throwIfNoEntry: false })
    if (stat && (isWhiteout(stat) || !stat.isDirectory() || isOpaque(above))) return true
  }
  return false
}

/**
 * Write the container's merged view, all it sees as its root filesystem,
 * to `file`, a tar, as `docker export` does; return the number of entries
 * and the tar's size. A running container's is read through
 * /proc/<PID 1>/root; a stopped one's (--keep) is mounted read-only, its
 * upper dir on top of its layers (no workdir: nothing is written), in a
 * mount namespace of tar's own, which goes with tar: nothing stays mounted
 * on the host, even on Ctrl-C. The tar is of `.`, its names ./bin, ./etc…;
 * --one-file-system leaves out what is mounted inside (/proc, /sys, /dev,
 * volumes). Owners are the container's own (steps 09-10: host uid 100000
 * is 0 in the tar).
 */
export async function exportContainer(idOrName: string, file: string): Promise<{ id: string; file: string; files: number; bytes: number }> {
  const container = findContainerDir(idOrName)
  const out = resolve(file)
  if (!existsSync(dirname(out))) throw new UsageError(`export to ${out}: no such directory ${dirname(out)}`)
  const args = ['--create', '--file', out, '--numeric-owner', '--one-file-system', '--sort=name', '--directory']
  let tar
  if (container.pid1 !== undefined) {
    const root = `/proc/${container.pid1}/root`
    tar = spawn('tar', [...args, root, '.'], { stdio: ['ignore', 'ignore', 'pipe'] })
  } else {
    const { upper, merged } = overlayDirs(container.dir)
    // The layers as the container had them: owned by the mapped ids at steps 09-10 (as root), with user.* xattrs.
    const lowerdirs = container.map ? shiftedLayers(lowerdirsOf(container), container.map, container.dir) : lowerdirsOf(container)
    const options = `lowerdir=${[upper, ...lowerdirs].join(':')}${container.map ? ',userxattr' : ''}`
    tar = spawnInNamespaces(CLONE_NEWNS, 'tar', [...args, merged, '.'], { stdio: ['ignore', 'ignore', 'pipe'] }, () => {
      // MS_PRIVATE first: our overlay must not propagate to the host's mount table.
      mount(null, '/', null, MS_REC | MS_PRIVATE)
      // An overlay of lower layers only is read-only: upper/ is its top layer, whiteouts and opaque directories included.
      mount('overlay', merged, 'overlay', MS_RDONLY, options)
    })
  }
  let stderr = ''
  tar.stderr!.on('data', (chunk) => (stderr += chunk))
  const code = await new Promise<number | null>((done) => tar.on('close', done))
  // 1: a file changed as tar read it, which a running container may do.
  if (code !== 0 && code !== 1) throw new UsageError(`tar of container ${container.id}: ${stderr.trim().split('\n')[0] || `exit ${code}`}`)
  const files = rewriteOwners(out, container.map)
  return { id: container.id, file: out, files, bytes: statSync(out).size }
}

/**
 * Go through a tar's headers (GNU or ustar): count its entries (not the
 * GNU long-name and pax records that carry another's details), and, with a
 * `map`, write each owner as the container sees it, in place.
 */
export function rewriteOwners(file: string, map?: IdMap): number {
  const fd = openSync(file, map ? 'r+' : 'r')
  const header = Buffer.alloc(512)
  let files = 0
  try {
    for (let at = 0; readSync(fd, header, 0, 512, at) === 512 && !header.every((byte) => byte === 0);) {
      const size = tarNumber(header, 124, 12)
      if (!'LKxgX'.includes(String.fromCharCode(header[156]))) {
        files++
        if (map) {
          for (const offset of [108, 116]) {
            const id = tarNumber(header, offset, 8)
            const inside = id >= map.outside && id < map.outside + map.count ? id - map.outside + map.inside : id
            header.write(`${inside.toString(8).padStart(7, '0')}\0`, offset, 'ascii')
          }
          // The checksum: the header's bytes summed, its own field counted as spaces.
          header.fill(' ', 148, 156)
          header.write(`${header.reduce((sum, byte) => sum + byte, 0).toString(8).padStart(6, '0')}\0 `, 148, 'ascii')
          writeSync(fd, header, 0, 512, at)
        }
      }
      at += 512 + Math.ceil(size / 512) * 512
    }
  } finally {
    closeSync(fd)
  }
  return files
}

// A number field of a tar header: octal digits, or GNU's base-256 (top bit set) for big ones.
function tarNumber(header: Buffer, offset: number, length: number): number {
  if (header[offset] & 0x80) return header.subarray(offset + 1, offset + length).reduce((n, byte) => n * 256 + byte, header[offset] & 0x7f)
  return parseInt(header.toString('ascii', offset, offset + length).replace(/[\0 ].*$/s, '') || '0', 8)
}
