// Step 03: chroot
//
// Goal: give the container its own files. The child changes its root
// directory to the image (chroot) and moves into it, so `/` is the image and
// the command is looked up there: `ls` is the image's busybox, not the host's.
// chroot only changes where path lookups start; step 05 shows its limits.
//
// Usage: npx tsx exercises/03-chroot run [options] <command> [args...]   (--help lists the options)
//
// Exercise: fill in each TODO, then check with `npm run exercise -- 03`
// (add --hint for a hint). exercises/README.md explains the loop.

import { hostname } from 'node:os'
import { parseRunArgs, requireRoot } from '../../shared/cli.ts'
import { newContainerId, reexecChild, waitForExit } from '../../shared/container.ts'
import { exitWithError } from '../../shared/errors.ts'
import { chroot } from '../../shared/mounts.ts'
import { CLONE_NEWUTS } from '../../shared/namespaces.ts'
import { chdir, containerEnv, enterWorkdir, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../shared/process.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { sethostname } from '../../shared/uts.ts'

const usage = `
Usage: npx tsx exercises/03-chroot run [options] <command> [args...]

Run <command> in a new UTS namespace, chrooted into an image.

Options:
  -h, --hostname NAME  the container's hostname (default: its id)
  --image NAME|DIR  image name (see npm run rootfs) or a root filesystem directory
  -w, --workdir DIR  the command's working directory (default: /)

Examples:
  npx tsx exercises/03-chroot run ls /
  npx tsx exercises/03-chroot run -w /etc pwd
`

/** What the parent hands to the child. */
interface Container {
  id: string
  hostname: string // -h, or the id
  rootfs: string
  workdir: string // -w, or /
  command: string[]
  env: string[] // -e KEY=VALUE
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  const { options, command, env } = parseRunArgs(argv, {
    hostname: { type: 'string', short: 'h' },
    image: { type: 'string' },
    workdir: { type: 'string', short: 'w' },
  }, usage)
  requireRoot()
  const rootfs = await ensureImage(options.image)
  const id = newContainerId()
  await run({ id, hostname: options.hostname ?? id, rootfs, workdir: options.workdir ?? '/', command, env })
}

// Parent: start the child, wait for it, exit with its exit code.
async function run(container: Container): Promise<void> {
  const child = reexecChild(container, CLONE_NEWUTS)
  process.exit(await waitForExit(child))
}

// Child: set up the container from the inside, then become the command.
function child(container: Container): void {
  // If the parent dies (even by SIGKILL), the kernel kills us too.
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Our own UTS namespace: this hostname is seen only in here.
  sethostname(container.hostname)
  // TODO: make the image (container.rootfs) this process's `/`, so every path
  // lookup from here on, the command's too, starts in the image. The kernel
  // changes the root without moving the current directory: move it into the
  // new root too, or a relative path still leads out to the host's files.
  // -w: where the command starts (default /). It must be in the image: no overlay yet to make it in.
  enterWorkdir(container.workdir)
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
