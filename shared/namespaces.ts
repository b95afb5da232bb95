// Namespaces: unshare(2), setns(2), and starting a child in new namespaces
// from Node, which is multithreaded.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { closeSync, openSync, readlinkSync } from 'node:fs'
import { check, raw } from './libc.ts'
import { chroot } from './mounts.ts'
import { fchdir } from './process.ts'

// Flags for unshare(2) and setns(2), from <linux/sched.h>.
export const CLONE_NEWNS = 0x00020000 // mount
export const CLONE_NEWCGROUP = 0x02000000
export const CLONE_NEWUTS = 0x04000000 // hostname
export const CLONE_NEWIPC = 0x08000000
export const CLONE_NEWUSER = 0x10000000
export const CLONE_NEWPID = 0x20000000
export const CLONE_NEWNET = 0x40000000
export const CLONE_FS = 0x00000200

/** unshare(2): move the calling thread into new namespaces. */
export function unshare(flags: number): void {
  check('unshare', raw.unshare(flags), undefined, {
    EINVAL: 'CLONE_NEWUSER cannot be used from a multithreaded process such as Node',
  })
}

/** setns(2): move the calling thread into the namespace an fd refers to. */
export function setns(fd: number, nstype: number): void {
  check('setns', raw.setns(fd, nstype))
}

/** Each namespace type: its CLONE_ flag and its file in /proc/PID/ns/. */
export const namespaceFiles: { flag: number; file: string }[] = [
  { flag: CLONE_NEWNS, file: 'mnt' },
  { flag: CLONE_NEWUTS, file: 'uts' },
  { flag: CLONE_NEWIPC, file: 'ipc' },
  // For PID, unshare changes only the namespace of the caller's future
  // children: pid_for_children is the one to save and restore.
  { flag: CLONE_NEWPID, file: 'pid_for_children' },
  { flag: CLONE_NEWNET, file: 'net' },
  { flag: CLONE_NEWCGROUP, file: 'cgroup' },
]

/** The namespace a process is in, as the kernel names it: `uts:[4026531838]`. */
export function namespaceOf(pid: number | 'self' | 'thread-self', file: string): string {
  return readlinkSync(`/proc/${pid}/ns/${file}`)
}

/**
 * Start a process in new namespaces without moving the caller, as Go's
 * SysProcAttr.Cloneflags does.
 *
 * unshare(2) moves only the calling thread, and child_process.spawn forks
 * from that same main thread, so the child is born in the new namespaces
 * (and is PID 1 in a new PID namespace). Right after the spawn the main
 * thread goes back with setns(2) to the namespaces it saved, and back to its
 * root and working directory, which joining a mount namespace resets.
 * `inside`, if given, runs in the new namespaces just before the spawn: to
 * mount something that only the child sees, say.
 */
export function spawnInNamespaces(
  flags: number,
  command: string,
  args: string[],
  options: SpawnOptions = {},
  inside?: () => void,
): ChildProcess {
  if (flags === 0) return spawn(command, args, options)
  const saved = namespaceFiles
    .filter((ns) => flags & ns.flag)
    .map((ns) => ({ ...ns, fd: openSync(`/proc/thread-self/ns/${ns.file}`, 'r') }))
  const cwd = openSync('.', 'r')
  const root = openSync('/', 'r')
  try {
    // CLONE_FS: give this thread its own root and cwd, which setns back to
    // the host's mount namespace requires (Node's threads share them).
    unshare(flags | (flags & CLONE_NEWNS ? CLONE_FS : 0))
    try {
      inside?.()
      return spawn(command, args, options)
    } finally {
      for (const ns of saved) setns(ns.fd, ns.flag)
      // Joining a mount namespace also resets the root: a parent that runs
      // chrooted itself (a build sandbox, say) must not come back outside it.
      if (flags & CLONE_NEWNS) {
        fchdir(root)
        chroot('.')
      }
      fchdir(cwd)
    }
  } finally {
    for (const ns of saved) closeSync(ns.fd)
    closeSync(cwd)
    closeSync(root)
  }
}
