// Homework P1A: proc for a new PID namespace, without touching the host
//
// Goal: launch a command in a new PID namespace with a proc filesystem of
// its own, mounted either on /proc or on another directory, while the
// host's mount table stays exactly as it was. First find out how / and
// /proc are mounted on this host (their propagation), because that decides
// whether a mount in a new mount namespace reaches the host.
//
// Usage: npx tsx exercises/homework/p1a-proc propagation
//        npx tsx exercises/homework/p1a-proc run [--proc-at DIR] <command> [args...]
//
// Homework: fill in each TODO, then check with `npm run homework -- p1a`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { existsSync } from 'node:fs'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { parseRunArgs, requireRoot } from '../../../shared/cli.ts'
import { reexecChild, waitForExit } from '../../../shared/container.ts'
import { exitWithError, UsageError } from '../../../shared/errors.ts'
import { mount, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC, readMountInfo, type MountInfo } from '../../../shared/mounts.ts'
import { CLONE_NEWNS, CLONE_NEWPID } from '../../../shared/namespaces.ts'
import { containerEnv, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../../shared/process.ts'
import { refuseHostNamespace, refuseSharedMount } from '../../guard.ts'

const usage = `
Usage: npx tsx exercises/homework/p1a-proc propagation
       npx tsx exercises/homework/p1a-proc run [--proc-at DIR] <command> [args...]

propagation  print the propagation of / and /proc, as findmnt -o PROPAGATION does
run          run <command> in new PID and mount namespaces, with proc mounted
             on DIR (default /proc)
`

/** What the parent hands to the child. */
interface Container {
  procAt: string
  command: string[]
  env: string[] // -e KEY=VALUE
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  if (argv[0] === 'propagation') return printPropagation()
  const { options, command, env } = parseRunArgs(argv, { 'proc-at': { type: 'string' } }, usage)
  requireRoot()
  const procAt = resolve(options['proc-at'] ?? '/proc')
  if (!existsSync(procAt)) throw new UsageError(`--proc-at ${procAt}: no such directory`)
  await run({ procAt, command, env })
}

// `propagation`: how / and /proc are mounted here.
function printPropagation(): void {
  const mounts = readMountInfo()
  for (const target of ['/', '/proc']) console.log(`${target} ${propagationOf(target, mounts)}`)
}

/**
 * The propagation of the mount on `target`, in findmnt's words: shared or
 * private, then `,slave` if it receives from a master, `,unbindable` if it
 * cannot be bind-mounted. From the optional fields of mountinfo (proc(5)).
 */
function propagationOf(target: string, mounts: MountInfo[]): string {
  // TODO: find the mount on `target` (if several are stacked there, the last
  // one is on top, the one seen), and read its propagation from the optional
  // fields of its mountinfo line (MountInfo.propagation): shared:N, master:N,
  // unbindable. Answer as `findmnt -o PROPAGATION` does.
  return 'unknown'
}

// Parent: start the child in new PID and mount namespaces, wait, exit with its code.
async function run(container: Container): Promise<void> {
  // TODO: which new namespaces does the child need, so that its proc shows
  // its own processes, and its mount is its own business, not the host's?
  const child = reexecChild(container)
  process.exit(await waitForExit(child))
}

// Child: PID 1 of the new PID namespace, in its own copy of the mount table.
function child(container: Container): void {
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Exercises only: stop here, not mount over the host's /proc, while the namespaces are missing.
  refuseHostNamespace('mnt')
  // TODO: a new mount namespace is a copy of the host's mounts, propagation
  // and all. Given what `propagation` prints on a host whose / is shared,
  // what must change, and on which mounts, so nothing mounted here reaches
  // the host?
  // Exercises only: stop here, not mount on a mount shared with the host.
  refuseSharedMount(container.procAt)
  // TODO: mount a proc filesystem on container.procAt. Which PID namespace
  // does it show: the one of the process that mounts it, or another?
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
