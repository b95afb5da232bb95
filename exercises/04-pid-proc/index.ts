// Step 04: PID namespace and /proc
//
// Goal: give the container its own process tree. In a new PID namespace
// (CLONE_NEWPID) the child is PID 1, and because it becomes the command with
// exec, the command is PID 1. `ps` reads /proc, so the child mounts a proc
// filesystem inside the image: it shows this namespace's processes only.
// There is no mount namespace yet, so the host sees that mount while the
// container runs (step 05 fixes that); the parent unmounts it at the end.
//
// Usage: npx tsx exercises/04-pid-proc run [options] <command> [args...]   (--help lists the options)
//
// Exercise: fill in each TODO, then check with `npm run exercise -- 04`
// (add --hint for a hint). exercises/README.md explains the loop.

import { join } from 'node:path'
import { hostname } from 'node:os'
import { parseRunArgs, requireRoot } from '../../shared/cli.ts'
import { Cleanup, newContainerId, reexecChild, waitForExit } from '../../shared/container.ts'
import { exitWithError } from '../../shared/errors.ts'
import { chroot, mount, MS_NODEV, MS_NOEXEC, MS_NOSUID, unmountIfMounted } from '../../shared/mounts.ts'
import { CLONE_NEWPID, CLONE_NEWUTS } from '../../shared/namespaces.ts'
import { chdir, containerEnv, enterWorkdir, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../shared/process.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { sethostname } from '../../shared/uts.ts'

const usage = `
Usage: npx tsx exercises/04-pid-proc run [options] <command> [args...]

Run <command> as PID 1 of new UTS and PID namespaces, chrooted into an image,
with /proc mounted.

Options:
  -h, --hostname NAME  the container's hostname (default: its id)
  --image NAME|DIR  image name (see npm run rootfs) or a root filesystem directory
  -w, --workdir DIR  the command's working directory (default: /)

Examples:
  npx tsx exercises/04-pid-proc run ps
  npx tsx exercises/04-pid-proc run sh -c 'echo I am PID $$; ps'
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
  const cleanup = new Cleanup()
  try {
    // TODO: start the child in a new PID namespace as well: the first process
    // born in one is its PID 1 and sees only the processes born after it.
    const child = reexecChild(container, CLONE_NEWUTS)
    // TODO: there is no mount namespace yet, so the /proc the child mounts in
    // the image is in the host's mount table too. Undo that mount when the
    // container ends, however it ends (the Cleanup runs in `finally`).
    process.exitCode = await waitForExit(child)
  } finally {
    await cleanup.run()
  }
  process.exit()
}

// Child: set up the container from the inside, then become the command.
function child(container: Container): void {
  // If the parent dies (even by SIGKILL), the kernel kills us too.
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Our own UTS namespace: this hostname is seen only in here.
  sethostname(container.hostname)
  // From now on `/` is the image. chdir too: chroot leaves the cwd outside.
  chroot(container.rootfs)
  chdir('/')
  // TODO: `ps` reads /proc, which is an empty directory in the image. Mount a
  // proc filesystem there: it shows the PID namespace of the process that
  // mounts it. Nothing on it should be run, setuid or a device (mount flags).
  // -w: where the command starts (default /). It must be in the image: no overlay yet to make it in.
  enterWorkdir(container.workdir)
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
