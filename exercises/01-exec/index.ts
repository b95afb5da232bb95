// Step 01: exec
//
// Goal: run a command the way every container runtime does at its core. The
// parent starts a copy of itself as `child`; the child replaces itself with
// the command (execvp), so the command keeps the child's PID, the user's
// terminal, and hands its exit code back to the parent. Nothing is isolated
// yet: that is what the next steps add, one kernel feature at a time.
//
// Usage: npx tsx exercises/01-exec run [options] <command> [args...]   (--help lists the options)
//
// Exercise: fill in each TODO, then check with `npm run exercise -- 01`
// (add --hint for a hint). exercises/README.md explains the loop.

import { parseRunArgs } from '../../shared/cli.ts'
import { reexecChild, waitForExit } from '../../shared/container.ts'
import { exitWithError } from '../../shared/errors.ts'
import { containerEnv, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../shared/process.ts'

const usage = `
Usage: npx tsx exercises/01-exec run [options] <command> [args...]

Run <command> as a child process that replaces itself with the command.
Nothing is isolated yet.

Options:

Examples:
  npx tsx exercises/01-exec run echo hello
  npx tsx exercises/01-exec run -e GREETING=hi sh -c 'echo $GREETING'
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
  // TODO: if the parent dies, even by SIGKILL, this child must die too. No
  // code of ours runs after a SIGKILL, so only the kernel can do it: a process
  // may ask to be sent a signal of its choice when its parent exits.
  // TODO: become the command. Starting it as one more process is not it: the
  // kernel can replace this process's program with another, keeping its PID,
  // its stdin/stdout/stderr and its parent, who then sees the command's exit
  // code as ours. Until then the child just ends, and nothing runs.
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
