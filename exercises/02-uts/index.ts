// Step 02: UTS namespace
//
// Goal: give the container its own hostname. The parent re-runs itself as
// `child` in a new UTS namespace (CLONE_NEWUTS); the child sets the hostname
// to -h's name, or to the container's id as Docker does, and then becomes
// the command. Changing the hostname inside no longer changes the host's.
//
// Usage: npx tsx exercises/02-uts run [options] <command> [args...]   (--help lists the options)
//
// Exercise: fill in each TODO, then check with `npm run exercise -- 02`
// (add --hint for a hint). exercises/README.md explains the loop.

import { hostname } from 'node:os'
import { parseRunArgs, requireRoot } from '../../shared/cli.ts'
import { newContainerId, reexecChild, waitForExit } from '../../shared/container.ts'
import { exitWithError } from '../../shared/errors.ts'
import { CLONE_NEWUTS } from '../../shared/namespaces.ts'
import { containerEnv, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../shared/process.ts'
import { sethostname } from '../../shared/uts.ts'
import { refuseHostNamespace } from '../guard.ts'

const usage = `
Usage: npx tsx exercises/02-uts run [options] <command> [args...]

Run <command> in a new UTS namespace, with a hostname of its own: -h's, or
the container's id.

Options:
  -h, --hostname NAME  the container's hostname (default: its id)

Examples:
  npx tsx exercises/02-uts run hostname
  npx tsx exercises/02-uts run -h box sh -c 'hostname; cat /proc/sys/kernel/hostname'
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
  // TODO: the hostname belongs to a UTS namespace, and so far the child is
  // born in the host's. Ask the kernel for a new one when it starts the child.
  const child = reexecChild(container)
  process.exit(await waitForExit(child))
}

// Child: set up the container from the inside, then become the command.
function child(container: Container): void {
  // If the parent dies (even by SIGKILL), the kernel kills us too.
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Exercises only: stop here, not rename the host, while the TODO above is open.
  refuseHostNamespace('uts')
  // TODO: give the container its own hostname, container.hostname: -h's, or
  // else the container's id (as Docker does). In a UTS namespace of its own,
  // only this container sees the change.
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
