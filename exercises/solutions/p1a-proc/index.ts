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
  // The last mount on a mount point is the one on top, the one seen there.
  const mount = mounts.filter((m) => m.mountPoint === target).at(-1)
  if (!mount) throw new UsageError(`nothing is mounted on ${target}`)
  const fields = mount.propagation.split(' ')
  const has = (prefix: string) => fields.some((field) => field.startsWith(prefix))
  return [has('shared:') ? 'shared' : 'private', ...(has('master:') ? ['slave'] : []), ...(has('unbindable') ? ['unbindable'] : [])].join(',')
}

// Parent: start the child in new PID and mount namespaces, wait, exit with its code.
async function run(container: Container): Promise<void> {
  // Both are needed: PID for a process tree of its own, mount so that the
  // proc mount is the child's business only. Nothing is mounted on the host,
  // so there is nothing to undo here: the mount goes with the namespace.
  const child = reexecChild(container, CLONE_NEWPID | CLONE_NEWNS)
  process.exit(await waitForExit(child))
}

// Child: PID 1 of the new PID namespace, in its own copy of the mount table.
function child(container: Container): void {
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  // Exercises only: stop here, not mount over the host's /proc, while the namespaces are missing.
  refuseHostNamespace('mnt')
  // The copy is made of the host's mounts with their propagation: if / is
  // shared (systemd makes it so), our mounts would propagate to the host.
  // Private (or slave, to still receive the host's new mounts) stops that.
  mount(null, '/', null, MS_REC | MS_PRIVATE)
  // Exercises only: stop here, not mount on a mount shared with the host.
  refuseSharedMount(container.procAt)
  // A proc filesystem shows the PID namespace of the process that mounts it: ours.
  mount('proc', container.procAt, 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC)
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
