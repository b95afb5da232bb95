// Safety rails for half-done exercises, and only for them: the steps do not
// need these. A child that is still in the host's namespaces, or still has
// the host's `/` as its root, would change the host itself: rename it,
// mount over its /proc, /sys or /dev, pivot every host process into the
// image. These checks stop the child first, with one line that says which
// TODO is still open. They only read /proc.

import { readFileSync, readlinkSync, statSync } from 'node:fs'
import { UsageError } from '../shared/errors.ts'

const names: Record<string, string> = { uts: 'UTS', mnt: 'mount', net: 'network', pid: 'PID' }

/**
 * Stop unless this process is in a namespace of `kind` (a file in
 * /proc/PID/ns: uts, mnt, net) other than the host's, as the process that
 * started the step (tsx, a shell) has it. Not the step itself: it enters
 * the new namespaces for an instant to start the child, and may be caught
 * there. Call it in the child before anything that changes that namespace.
 */
export function refuseHostNamespace(kind: 'uts' | 'mnt' | 'net'): void {
  // Read through the host's /proc, still mounted here: in it, PIDs are host PIDs.
  let ours: string
  let host: string
  try {
    const launcher = parentOf(parentOf('self'))
    ours = readlinkSync(`/proc/self/ns/${kind}`)
    host = readlinkSync(`/proc/${launcher}/ns/${kind}`)
  } catch {
    throw new UsageError(`cannot tell whether the child has its own ${names[kind]} namespace (no host /proc here): refusing to go on`)
  }
  if (ours === host) {
    throw new UsageError(`the child is still in the host's ${names[kind]} namespace (${ours}): going on would change the host. See the TODO in run().`)
  }
}

/**
 * Stop if `/` is still the host's root: mounting /proc, /sys or /dev now
 * would cover the host's. Once the root is the image, the image's /proc is
 * an empty directory, so /proc/1/root cannot be reached and all is well.
 */
export function refuseHostRoot(): void {
  let hostRoot
  try {
    hostRoot = statSync('/proc/1/root/')
  } catch {
    return
  }
  const root = statSync('/')
  if (root.dev === hostRoot.dev && root.ino === hostRoot.ino) {
    throw new UsageError('the container\'s `/` is still the host\'s: mounting /proc, /sys or /dev now would cover the host\'s. Finish the TODOs that change the root first.')
  }
}

// The parent PID field of /proc/PID/stat (proc(5)).
function parentOf(pid: string): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]
}

/**
 * Stop if what is mounted on `target` now would propagate to other mount
 * namespaces (the host's among them): the mount `target` is on is shared.
 */
export function refuseSharedMount(target: string): void {
  const on = readFileSync('/proc/self/mountinfo', 'utf8').trim().split('\n')
    .map((line) => line.split(' '))
    .filter((fields) => target === fields[4] || target.startsWith(fields[4] === '/' ? '/' : `${fields[4]}/`))
    .sort((a, b) => a[4].length - b[4].length)
    .at(-1)
  if (on?.slice(6, on.indexOf('-')).some((field) => field.startsWith('shared:'))) {
    throw new UsageError(`${on[4]}, where ${target} is, is a shared mount: what is mounted there would show up on the host too. See the propagation TODO.`)
  }
}
