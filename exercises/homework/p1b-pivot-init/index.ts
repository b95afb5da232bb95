// Homework P1B: a bind-mounted, writable root with pivot_root, and an init
//
// Goal: a container whose root is a directory of its own on the host (a
// copy of the image, so it is writable without changing the image), bound
// onto itself and made the root with pivot_root, the host's tree detached.
// Its PID 1 is not the shell but a small init: it sets the prompt (PS1),
// starts an interactive shell as its child, waits for it and passes its
// exit status on.
//
// Usage: npx tsx exercises/homework/p1b-pivot-init run [--image NAME|DIR] [--prompt TEXT]
//
// Homework: fill in each TODO, then check with `npm run homework -- p1b`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { constants } from 'node:os'
import { parseArgs } from 'node:util'
import { $ } from 'zx'
import { requireRoot } from '../../../shared/cli.ts'
import { Cleanup, newContainerId, reexecChild, waitForExit } from '../../../shared/container.ts'
import { mountDev } from '../../../shared/devices.ts'
import { exitWithError, UsageError } from '../../../shared/errors.ts'
import {
  mount, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC, pivot_root, umount2,
} from '../../../shared/mounts.ts'
import { CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS } from '../../../shared/namespaces.ts'
import { createContainerDir, removeContainerDir } from '../../../shared/overlay.ts'
import { chdir, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../../shared/process.ts'
import { ensureImage } from '../../../shared/rootfs.ts'
import { sethostname } from '../../../shared/uts.ts'
import { refuseHostNamespace, refuseHostRoot } from '../../guard.ts'

const usage = 'usage: npx tsx exercises/homework/p1b-pivot-init run [--image NAME|DIR] [--prompt TEXT]'

/** What the parent hands to the child. */
interface Container {
  id: string
  rootfs: string // the container's own copy of the image
  prompt: string
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  // No command: the init starts the shell.
  const { values: options, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { image: { type: 'string' }, prompt: { type: 'string' } } })
  if (positionals.join(' ') !== 'run') throw new UsageError(usage)
  requireRoot()
  const image = await ensureImage(options.image)
  const id = newContainerId()
  await run({ id, rootfs: '', prompt: options.prompt ?? `${id}# ` }, image)
}

// Parent: copy the image, start the child, wait, remove the copy.
async function run(container: Container, image: string): Promise<void> {
  const cleanup = new Cleanup()
  try {
    // <state dir>/containers/<id>/rootfs: not under /tmp, and `npm run clean` knows the directory.
    const dir = createContainerDir(container.id)
    cleanup.defer(() => removeContainerDir(dir))
    const rootfs = join(dir, 'rootfs')
    // A copy, as the homework's unarchiver makes one: every container has
    // all of the image's bytes again, and may write to them.
    await $`cp -a ${image} ${rootfs}`
    // TODO: the child needs its own hostname, process tree and mount table.
    const child = reexecChild({ ...container, rootfs })
    process.exitCode = await waitForExit(child)
  } finally {
    await cleanup.run()
  }
  process.exit()
}

// Child: set up the container from the inside, then be its init.
function child(container: Container): void {
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Exercises only: stop here, not rename the host or change its mounts, while the namespaces are missing.
  refuseHostNamespace('uts')
  sethostname(container.id)
  refuseHostNamespace('mnt')
  // TODO: nothing mounted from here on may propagate to the host, whatever
  // the propagation of the host's mounts (P1A).
  pivotInto(container.rootfs)
  // Exercises only: stop here, not mount over the host's /proc and /dev, while pivotInto() is unfinished.
  refuseHostRoot()
  mount('proc', '/proc', 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC)
  mountDev('/dev')
  init(container.prompt)
}

// Make `rootfs` the root of this mount namespace, with no way back to the host's.
function pivotInto(rootfs: string): void {
  // TODO: the root can only be swapped at a mount point: bind-mount the
  // container's directory onto itself (only it: what the host has mounted
  // inside it stays out).
  // TODO: from inside the new root, swap the roots: with "." for both, the
  // old root ends up stacked on top of the new one, and needs no directory.
  // TODO: so that no umount (nor anything else) can bring the host's files
  // back, detach the old root from the tree, then go to the new /.
}

// PID 1: the prompt, an interactive shell as a child (fork and exec), its exit status passed on.
function init(prompt: string): never {
  // TODO: start /bin/sh as an interactive shell, a child of this process
  // (which stays PID 1), with `prompt` as its prompt: sh reads it from the
  // environment variable PS1. Wait for it to end, then exit with its exit
  // status (128 + N if signal N killed it).
  throw new UsageError(`init: not written yet, so no shell for ${JSON.stringify(prompt)} (see the TODO in init())`)
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
