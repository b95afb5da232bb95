// Homework P6C: a tiny Containerfile, one overlay layer on top of an image
//
// Goal: what `docker build` does at its core. A Containerfile names a base
// image (FROM), files to copy in (COPY) and commands to run (RUN). The
// build mounts an overlay, the base image as the read-only lower layer and
// an empty directory as the upper, does every COPY and RUN in the merged
// view, and unmounts. What is left in the upper directory is the new
// layer: only what changed, deletions as whiteouts. Stacked on the base
// (lowerdir=layer:base) it is the new image.
//
// Usage: npx tsx exercises/homework/p6c-build <context-dir> <out-dir>
//
// Reads <context-dir>/Containerfile; writes the layer to <out-dir>/diff.
//
// Homework: fill in each TODO, then check with `npm run homework -- p6c`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { isAbsolute, join, relative, resolve } from 'node:path'
import { requireRoot } from '../../../shared/cli.ts'
import { reexecChild, waitForExit } from '../../../shared/container.ts'
import { exitWithError, UsageError } from '../../../shared/errors.ts'
import { mount, MS_PRIVATE, MS_REC } from '../../../shared/mounts.ts'
import { CLONE_NEWNS } from '../../../shared/namespaces.ts'
import { prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../../shared/process.ts'
import { ensureImage } from '../../../shared/rootfs.ts'
import { refuseHostNamespace, refuseSharedMount } from '../../guard.ts'

/** One instruction after FROM. */
type Step = { instruction: 'COPY'; source: string; dest: string } | { instruction: 'RUN'; command: string }

/** A parsed Containerfile. */
interface Recipe {
  from: string // an image name (npm run rootfs) or a root filesystem directory
  steps: Step[]
}

/** What the parent hands to the child, which builds. */
interface Build {
  base: string // the base image's root filesystem
  context: string // where COPY sources are
  out: string // diff/ (the layer), work/, merged/
  steps: Step[]
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Build)
  if (argv.length !== 2) throw new UsageError('usage: npx tsx exercises/homework/p6c-build <context-dir> <out-dir>')
  requireRoot()
  const [context, out] = argv.map((path) => resolve(path))
  const recipe = parseContainerfile(readFileSync(join(context, 'Containerfile'), 'utf8'), context)
  if (existsSync(out) && readdirSync(out).length) throw new UsageError(`${out} is not empty: the layer needs an empty directory`)
  const base = await ensureImage(recipe.from)
  for (const sub of ['diff', 'work', 'merged']) mkdirSync(join(out, sub), { recursive: true })
  try {
    // The overlay is mounted in the child's own mount namespace: it goes with it.
    const child = reexecChild({ base, context, out, steps: recipe.steps }, CLONE_NEWNS)
    process.exitCode = await waitForExit(child)
  } finally {
    // Only the layer stays: work/ is overlayfs's scratch space, merged/ an empty mount point.
    for (const sub of ['work', 'merged']) rmSync(join(out, sub), { recursive: true, force: true })
  }
  if (process.exitCode === 0) console.log(`the layer is in ${join(out, 'diff')}`)
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

// Child, in a mount namespace of its own: overlay, every step, done.
function child(build: Build): void {
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Exercises only: stop here, not mount on the host, while the namespace is missing.
  refuseHostNamespace('mnt')
  mount(null, '/', null, MS_REC | MS_PRIVATE)
  const [diff, work, merged] = ['diff', 'work', 'merged'].map((sub) => join(build.out, sub))
  // Exercises only: stop here, not mount where the host would see it.
  refuseSharedMount(merged)
  // TODO: mount an overlay on merged: the base image as the read-only lower
  // layer, diff as the upper one, where every change lands, work as the
  // kernel's scratch space (on the same filesystem as diff).
  for (const [i, step] of build.steps.entries()) {
    console.log(`STEP ${i + 1}/${build.steps.length}: ${step.instruction} ${step.instruction === 'RUN' ? step.command : `${step.source} ${step.dest}`}`)
    if (step.instruction === 'COPY') {
      // TODO: copy the source (a file or a directory of the build context) to
      // dest, as the merged tree sees it.
    } else {
      // TODO: run the command with the merged tree as its root, so /bin/sh and
      // every file it touches are the image's. A failing RUN fails the build.
    }
  }
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
