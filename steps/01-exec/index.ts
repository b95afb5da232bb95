// Step 01: exec
//
// Goal: run a command the way every container runtime does at its core. The
// parent starts a copy of itself as `child`; the child replaces itself with
// the command (execvp), so the command keeps the child's PID, the user's
// terminal, and hands its exit code back to the parent. Nothing is isolated
// yet: that is what the next steps add, one kernel feature at a time.
//
// Usage: npx tsx steps/01-exec run [options] <command> [args...]   (--help lists the options)

import { hostname } from 'node:os'
import { parseRunArgs } from '../../shared/cli.ts'
import { reexecChild, waitForExit } from '../../shared/container.ts'
import { exitWithError } from '../../shared/errors.ts'
import { containerEnv, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../shared/process.ts'

const usage = `
Usage: npx tsx steps/01-exec run [options] <command> [args...]

Run <command> as a child process that replaces itself with the command.
Nothing is isolated yet.

Options:

Examples:
  npx tsx steps/01-exec run echo hello
  npx tsx steps/01-exec run -e GREETING=hi sh -c 'echo $GREETING'
`

/** What the parent hands to the child. */
interface Container {
  command: string[]
  env: string[] // -e KEY=VALUE
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  const { command, env } = parseRunArgs(argv, {}, usage)
  await run({ command, env })
}

// Parent: start the child, wait for it, exit with its exit code.
async function run(container: Container): Promise<void> {
  const child = reexecChild(container)
  process.exit(await waitForExit(child))
}

// Child: set up the container from the inside, then become the command.
function child(container: Container): void {
  // If the parent dies (even by SIGKILL), the kernel kills us too.
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
