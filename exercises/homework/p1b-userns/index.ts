// Homework P1B, its user namespace: root inside, someone else outside
//
// Goal: run a command as root of a new user namespace (CLONE_NEWUSER), in
// which uid 0 and gid 0 are whichever host ids the parent maps them to: as
// root 100000, rootless (no sudo) your own uid. The parent writes the
// child's uid_map and gid_map (and, rootless, denies setgroups first); the
// child waits for them, drops the host's groups and becomes root inside.
// Node has threads and cannot make a user namespace for itself, so
// util-linux's unshare makes it, as in step 09.
//
// Usage: npx tsx exercises/homework/p1b-userns run <command> [args...]
//
// Homework: fill in each TODO, then check with `npm run homework -- p1b-userns`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { hostname } from 'node:os'
import { childStarted, Cleanup, STDIO_WITH_SYNC, tellChild, waitForExit, waitForParent } from '../../../shared/container.ts'
import { exitWithError, UsageError } from '../../../shared/errors.ts'
import { CLONE_NEWUSER } from '../../../shared/namespaces.ts'
import { containerEnv, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../../shared/process.ts'
import {
  containerPid, idMapFor, reexecChildInUserNamespace, setgroups, setresgid, setresuid, signalContainer, usernsForbidden, writeIdMaps,
} from '../../../shared/userns.ts'

const usage = 'usage: npx tsx exercises/homework/p1b-userns run <command> [args...]'

/** What the parent hands to the child. */
interface Container {
  command: string[]
  rootless: boolean // run by a user, without sudo
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  if (argv[0] !== 'run' || argv.length < 2) throw new UsageError(usage)
  const rootless = process.getuid?.() !== 0
  if (rootless && usernsForbidden()) throw new UsageError(usernsForbidden()!)
  await run({ command: argv.slice(argv[1] === '--' ? 2 : 1), rootless })
}

// Parent: start the child in its user namespace, write its maps, let it go, wait.
async function run(container: Container): Promise<void> {
  const cleanup = new Cleanup()
  try {
    // As root: 0 100000 65536; rootless: 0 <your uid> 1.
    const map = idMapFor()
    // TODO: the child needs a user namespace of its own: the launcher turns
    // each CLONE_NEW* flag into an option of unshare(1).
    const child = reexecChildInUserNamespace(container, 0, STDIO_WITH_SYNC)
    // If setting up fails here, the child, still waiting on the pipe, must not outlive us.
    cleanup.defer(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'))
    await childStarted(child)
    // TODO: its user namespace exists, with no ids in it yet. Write its maps
    // from here, the parent namespace: /proc/<pid>/uid_map and gid_map of the
    // launcher (child.pid, in the namespace already), one line each,
    // `inside outside count`, from `map`. Rootless, /proc/<pid>/setgroups
    // must say `deny` first, or the kernel refuses gid_map (user_namespaces(7)).
    signalContainer(child, containerPid(child.pid!))
    tellChild(child)
    process.exitCode = await waitForExit(child)
  } finally {
    await cleanup.run()
  }
  process.exit()
}

// Child: once the maps are there, become root of the user namespace, then the command.
function child(container: Container): void {
  waitForParent()
  // TODO: drop the host's supplementary groups (inside they would show as
  // nobody's, and still open the host's files), except rootless, where the
  // parent denied setgroups. Then become root of the user namespace: real,
  // effective and saved ids, the group first (a uid without privilege can
  // no longer change its gid).
  // After the credentials: changing them clears the death signal.
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  execCommand(container.command, containerEnv(hostname()))
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
