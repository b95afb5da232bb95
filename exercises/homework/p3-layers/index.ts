// Homework P3: an image of layers, one per instruction
//
// Goal: what `docker build` leaves in the image store, and why deleting a
// file in a later instruction does not make an image smaller. FROM gives
// the base image's layers. Each COPY or RUN after it mounts an overlay of
// the layers so far, read-only, with an empty upper directory on top, does
// its work in the merged view, and unmounts: what is left in the upper
// directory, the files it changed and a whiteout for each one it deleted,
// is the instruction's layer. It goes into the image store as
// layers/<hex>, named by the sha256 of its tar (shared/image-config.ts has
// the layout), and image.json lists the image's layers, the bottom one first.
//
// Usage: npx tsx exercises/homework/p3-layers <context-dir> <image-name>
//
// Reads <context-dir>/Containerfile; writes <state dir>/layers/<hex>/ for
// each new layer and <state dir>/images/<image-name>/image.json. Run the
// image with `npx tsx steps/07-overlay run --image <image-name> …`.
//
// Homework: fill in each TODO, then check with `npm run homework -- p3`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { isAbsolute, join, relative, resolve } from 'node:path'
import { requireRoot } from '../../../shared/cli.ts'
import { reexecChild, waitForExit } from '../../../shared/container.ts'
import { exitWithError, UsageError } from '../../../shared/errors.ts'
import { imageLayers, layersDir, type ImageConfig } from '../../../shared/image-config.ts'
import { mount, MS_PRIVATE, MS_REC, umount2 } from '../../../shared/mounts.ts'
import { CLONE_NEWNS } from '../../../shared/namespaces.ts'
import { prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../../shared/process.ts'
import { imagesDir } from '../../../shared/settings.ts'
import { refuseHostNamespace, refuseSharedMount } from '../../guard.ts'

/** One instruction after FROM. */
type Step = { instruction: 'COPY'; source: string; dest: string } | { instruction: 'RUN'; command: string }

/** A parsed Containerfile. */
interface Recipe {
  from: string // an image name (npm run rootfs, or one this program built) or a root filesystem directory
  steps: Step[]
}

/** What the parent hands to the child, which builds. */
interface Build {
  name: string // the new image's name
  layers: string[] // the base image's layers, sha256:<hex>, the bottom one first
  config: ImageConfig // the base image's, which the new one keeps
  history: object[] // one entry per layer: what made it
  context: string // where COPY sources are
  scratch: string // each instruction's upper/, work/, merged/, on the store's filesystem
  steps: Step[]
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Build)
  if (argv.length !== 2) throw new UsageError('usage: npx tsx exercises/homework/p3-layers <context-dir> <image-name>')
  requireRoot()
  const [context, name] = [resolve(argv[0]), argv[1]]
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) throw new UsageError(`image name \`${name}\`: expected lower-case letters, digits, \`.\`, \`_\` and \`-\``)
  // An image of one directory under that name is not ours to replace (it may be the base).
  if (existsSync(join(imagesDir, name, 'rootfs')) && !lstatSync(join(imagesDir, name, 'rootfs')).isSymbolicLink()) {
    throw new UsageError(`an image \`${name}\` of one directory (npm run rootfs) is there already: choose another name`)
  }
  const recipe = parseContainerfile(readFileSync(join(context, 'Containerfile'), 'utf8'), context)
  // In the store: a layer moves into place with rename(2), which cannot cross filesystems.
  const scratch = join(layersDir, `.build-${process.pid}`)
  mkdirSync(scratch, { recursive: true })
  try {
    const base = await baseImage(recipe.from)
    // The overlays are mounted in the child's own mount namespace: they go with it.
    const child = reexecChild({ name, ...base, context, scratch, steps: recipe.steps }, CLONE_NEWNS)
    process.exitCode = await waitForExit(child)
  } finally {
    rmSync(scratch, { recursive: true, force: true })
  }
  if (process.exitCode === 0) console.log(`image \`${name}\` is in ${join(imagesDir, name)}`)
  process.exit()
}

/** FROM, then COPY <source> <dest> and RUN <command> lines; # comments and blank lines are skipped. */
function parseContainerfile(text: string, context: string): Recipe {
  let from: string | undefined
  const steps: Step[] = []
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const [, instruction, rest] = /^(\S+)\s*(.*)$/.exec(line)!
    const where = `Containerfile line ${i + 1}`
    if (instruction === 'FROM' && !from && rest) from = rest
    else if (!from) throw new UsageError(`${where}: the first instruction must be FROM <image>`)
    else if (instruction === 'RUN' && rest) steps.push({ instruction, command: rest })
    else if (instruction === 'COPY' && rest.split(/\s+/).length === 2) {
      const [source, dest] = rest.split(/\s+/)
      if (relative(context, resolve(context, source)).startsWith('..')) throw new UsageError(`${where}: COPY ${source}: outside the build context`)
      if (!isAbsolute(dest)) throw new UsageError(`${where}: COPY … ${dest}: the destination must be an absolute path`)
      steps.push({ instruction, source, dest })
    } else throw new UsageError(`${where}: expected FROM <image>, COPY <source> <dest> or RUN <command>, got \`${line}\``)
  }
  if (!from) throw new UsageError('the Containerfile has no FROM')
  return { from, steps }
}

// FROM: the base image's layers, config and history. An image of one
// directory (what `npm run rootfs` makes) is copied into the store as a layer first.
async function baseImage(from: string): Promise<Pick<Build, 'layers' | 'config' | 'history'>> {
  const { lowerdirs, config } = await imageLayers(from)
  const json = from.includes('/') ? undefined : readJson(join(imagesDir, from, 'image.json'))
  if (Array.isArray(json?.layers)) return { layers: json.layers as string[], config, history: (json.history as object[]) ?? [] }
  return { layers: [storeLayer(lowerdirs[0], { copy: true })], config, history: [{ created_by: `FROM ${from}` }] }
}

// Child, in a mount namespace of its own: one overlay, and one layer, per instruction.
function child(build: Build): void {
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Exercises only: stop here, not mount on the host, while the namespace is missing.
  refuseHostNamespace('mnt')
  mount(null, '/', null, MS_REC | MS_PRIVATE)
  const layers = [...build.layers]
  const history = [...build.history]
  for (const [i, step] of build.steps.entries()) {
    const line = step.instruction === 'RUN' ? `RUN ${step.command}` : `COPY ${step.source} ${step.dest}`
    console.log(`STEP ${i + 1}/${build.steps.length}: ${line}`)
    const [upper, work, merged] = ['upper', 'work', 'merged'].map((sub) => join(build.scratch, String(i), sub))
    for (const dir of [upper, work, merged]) mkdirSync(dir, { recursive: true })
    // Exercises only: stop here, not mount where the host would see it.
    refuseSharedMount(merged)
    // TODO: mount an overlay on merged: the layers so far read-only below
    // (`layers` lists them as image.json does, the bottom one first;
    // layerDir(id) is one's directory), upper on top, where this
    // instruction's changes land, and work as the kernel's scratch space.
    if (step.instruction === 'COPY') {
      cpSync(join(build.context, step.source), join(merged, step.dest), { recursive: true })
    } else {
      // The command runs with the merged tree as its root: the image's sh, the image's files.
      const result = spawnSync('chroot', [merged, '/bin/sh', '-c', step.command], { stdio: 'inherit' })
      if (result.status !== 0) throw new UsageError(`${line}: exit ${result.status ?? result.signal}`)
    }
    umount2(merged)
    // TODO: upper is now this instruction's layer: into the store with it
    // (storeLayer), and on top of the image's layers.
    history.push({ created: new Date().toISOString(), created_by: line })
  }
  writeImage(build.name, { layers, config: build.config, history })
}

/** A layer's directory in the store, from its id (sha256:<hex>). */
function layerDir(id: string): string {
  return join(layersDir, id.slice('sha256:'.length))
}

/**
 * Put directory `dir` into the store as a layer and return its id,
 * sha256:<hex>, the sha256 of its tar (see layerDigest). A layer already
 * there is the same layer: kept, and `dir` dropped. `copy`: copy `dir`
 * (an image others use) instead of moving it.
 */
function storeLayer(dir: string, { copy = false } = {}): string {
  // TODO: name the layer by its digest (layerDigest), and put it at
  // <layers>/<hex>: moved there (renameSync), or with `copy` copied
  // (`cp -a`), unless a layer of that name is there already. Return its id.
  throw new UsageError(`storeLayer(${dir}): not written yet (see the TODO)`)
}

/**
 * The sha256 of a layer's tar: its files in name order, with their owners
 * as numbers, so the same tree always has the same name. A whiteout goes
 * in as what it is here, a 0,0 character device (OCI's tars write
 * `.wh.<name>` files instead).
 */
function layerDigest(dir: string): string {
  const tar = 'tar --create --sort=name --numeric-owner --directory "$1" . | sha256sum'
  return execFileSync('sh', ['-c', tar, 'sh', dir], { encoding: 'utf8' }).split(' ')[0]
}

// images/<name>/image.json, written whole (rename(2)); an image of one layer also gets rootfs/, a link to it.
function writeImage(name: string, image: { layers: string[]; config: ImageConfig; history: object[] }): void {
  const dir = join(imagesDir, name)
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, `.image.json.${process.pid}`), `${JSON.stringify({ name, source: 'build', created: new Date().toISOString(), ...image }, null, 2)}\n`)
  renameSync(join(dir, `.image.json.${process.pid}`), join(dir, 'image.json'))
  rmSync(join(dir, 'rootfs'), { recursive: true, force: true })
  if (image.layers.length === 1) symlinkSync(layerDir(image.layers[0]), join(dir, 'rootfs'))
}

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return undefined
  }
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
