// Step 02: UTS namespace
//
// Goal: give the container its own hostname. The parent re-runs itself as
// `child` in a new UTS namespace (CLONE_NEWUTS); the child sets the hostname
// to -h's name, or to the container's id as Docker does, and then becomes
// the command. Changing the hostname inside no longer changes the host's.
//
// Usage: npx tsx steps/02-uts run [options] <command> [args...]   (--help lists the options)

import { hostname } from 'node:os'
import { parseRunArgs, requireRoot } from '../../shared/cli.ts'
import { newContainerId, reexecChild, waitForExit } from '../../shared/container.ts'
import { exitWithError } from '../../shared/errors.ts'
import { CLONE_NEWUTS } from '../../shared/namespaces.ts'
import { containerEnv, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../shared/process.ts'
import { sethostname } from '../../shared/uts.ts'

const usage = `
Usage: npx tsx steps/02-uts run [options] <command> [args...]

Run <command> in a new UTS namespace, with a hostname of its own: -h's, or
the container's id.

Options:
  -h, --hostname NAME  the container's hostname (default: its id)

Examples:
  npx tsx steps/02-uts run hostname
  npx tsx steps/02-uts run -h box sh -c 'hostname; cat /proc/sys/kernel/hostname'
`

/** What the parent hands to the child. */
interface Container {
  id: string
  hostname: string // -h, or the id
  command: string[]
  env: string[] // -e KEY=VALUE
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  const { options, command, env } = parseRunArgs(argv, { hostname: { type: 'string', short: 'h' } }, usage)
  requireRoot()
  const id = newContainerId()
  await run({ id, hostname: options.hostname ?? id, command, env })
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
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
