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
    const child = reexecChild({ ...container, rootfs }, CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWNS)
    process.exitCode = await waitForExit(child)
  } finally {
    await cleanup.run()
  }
  process.exit()
}

// Child: set up the container from the inside, then be its init.
function child(container: Container): void {
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  sethostname(container.id)
  // Exercises only: stop here, not change the host's mounts, while the namespaces are missing.
  refuseHostNamespace('mnt')
  // Nothing mounted from here on may propagate to the host.
  mount(null, '/', null, MS_REC | MS_PRIVATE)
  pivotInto(container.rootfs)
  // Exercises only: stop here, not mount over the host's /proc and /dev, while pivotInto() is unfinished.
  refuseHostRoot()
  mount('proc', '/proc', 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC)
  mountDev('/dev')
  init(container.prompt)
}

// Make `rootfs` the root of this mount namespace, with no way back to the host's.
function pivotInto(rootfs: string): void {
  // pivot_root needs the new root to be a mount point: bind the copy onto itself.
  // Not MS_REC: whatever the host has mounted inside it stays out.
  mount(rootfs, rootfs, null, MS_BIND)
  chdir(rootfs)
  // "." for both: the old root ends up stacked on top of the new one, at /,
  // and needs no directory in the copy (see pivot_root(2), NOTES).
  pivot_root('.', '.')
  // Unmounting the old root (it is busy: lazily) is what chroot cannot do.
  umount2('.', MNT_DETACH)
  chdir('/')
}

// PID 1: the prompt, an interactive shell as a child (fork and exec), its exit status passed on.
function init(prompt: string): never {
  const shell = spawnSync('/bin/sh', ['-i'], { stdio: 'inherit', env: { ...process.env, PS1: prompt, HOME: '/root' } })
  if (shell.error) throw shell.error
  process.exit(shell.status ?? 128 + constants.signals[shell.signal!])
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
