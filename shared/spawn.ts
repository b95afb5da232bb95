// posix_spawn(3): start a program from a multithreaded Node without running
// any of Node in the child. `npm run exec` needs it (notes/exec.md): the
// process it starts must be made by the thread that joined the container's
// namespaces, must be single-threaded from its first instant (it joins the
// container's cgroup before it execs), and must be able to wait, blocked,
// until the parent has put it there. glibc's posix_spawn makes the child
// with clone(CLONE_VM | CLONE_VFORK) from the calling thread, runs only its
// own C code in it (the "file actions" below), then execs.

import { check, checkReturned, raw } from './libc.ts'

const POSIX_SPAWN_SETSIGDEF = 0x04
const POSIX_SPAWN_SETSIGMASK = 0x08
const POSIX_SPAWN_SETSID = 0x80
const O_RDONLY = 0
const O_RDWR = 2

/** What the child does between its clone and its exec, in this order. */
export interface SpawnPlan {
  /** An O_PATH fd of a FIFO: the child opens it for reading, which blocks until someone opens it for writing. */
  gate?: number
  /** A terminal's path: the child starts a session of its own (setsid), and opens it as fds 0-2, which makes it its controlling terminal. */
  terminal?: string
}

/**
 * Start `command` (looked up in our PATH, execvp's way) with exactly `env`,
 * from the calling thread, as `plan` says; return its PID. Every signal is
 * back to its default and unblocked in the child (Node ignores SIGPIPE, for
 * one), and it gets no fd but 0-2. A command that cannot be started throws
 * a SyscallError: ENOENT (not found) or EACCES (not executable).
 */
export function spawnPlain(command: string[], env: string[], plan: SpawnPlan = {}): number {
  const actions = Buffer.alloc(512) // posix_spawn_file_actions_t: 80 bytes in glibc
  const attr = Buffer.alloc(1024) // posix_spawnattr_t: 336
  checkReturned('posix_spawn_file_actions_init', raw.posix_spawn_file_actions_init(actions) as number)
  checkReturned('posix_spawnattr_init', raw.posix_spawnattr_init(attr) as number)
  try {
    const fd = 100 // any fd number the child does not use
    if (plan.gate !== undefined) {
      // Reopening an fd through /proc/self/fd opens the FIFO anew: for
      // reading, which waits for a writer (fifo(7)).
      checkReturned('posix_spawn_file_actions_addopen', raw.posix_spawn_file_actions_addopen(actions, fd, `/proc/self/fd/${plan.gate}`, O_RDONLY, 0) as number)
      checkReturned('posix_spawn_file_actions_addclose', raw.posix_spawn_file_actions_addclose(actions, fd) as number)
    }
    if (plan.terminal !== undefined) {
      // A session leader with no terminal that opens one (without O_NOCTTY)
      // gets it as its controlling terminal (credentials(7), "Sessions").
      checkReturned('posix_spawn_file_actions_addopen', raw.posix_spawn_file_actions_addopen(actions, 0, plan.terminal, O_RDWR, 0) as number)
      for (const to of [1, 2]) checkReturned('posix_spawn_file_actions_adddup2', raw.posix_spawn_file_actions_adddup2(actions, 0, to) as number)
    } else {
      // dup2 of an fd onto itself clears its close-on-exec flag, which Node sets on 0-2.
      for (const to of [0, 1, 2]) checkReturned('posix_spawn_file_actions_adddup2', raw.posix_spawn_file_actions_adddup2(actions, to, to) as number)
    }
    checkReturned('posix_spawn_file_actions_addclosefrom_np', raw.posix_spawn_file_actions_addclosefrom_np(actions, 3) as number)
    const all = Buffer.alloc(128, 0xff) // sigset_t
    checkReturned('posix_spawnattr_setsigdefault', raw.posix_spawnattr_setsigdefault(attr, all) as number)
    checkReturned('posix_spawnattr_setsigmask', raw.posix_spawnattr_setsigmask(attr, Buffer.alloc(128)) as number)
    const flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | (plan.terminal !== undefined ? POSIX_SPAWN_SETSID : 0)
    checkReturned('posix_spawnattr_setflags', raw.posix_spawnattr_setflags(attr, flags) as number)
    const pid = [0]
    const [file, ...args] = command
    checkReturned('posix_spawnp', raw.posix_spawnp(pid, file, actions, attr, [file, ...args, null], [...env, null]) as number, file)
    return pid[0]
  } finally {
    raw.posix_spawn_file_actions_destroy(actions)
    raw.posix_spawnattr_destroy(attr)
  }
}

/** waitpid(2), blocking: the child's end as a shell reports it (its code, or 128+N for signal N). */
export function waitExitCode(pid: number): number {
  const status = [0]
  for (;;) {
    const result = raw.waitpid(pid, status, 0) as number
    if (result === pid) break
    try {
      check('waitpid', result, `pid ${pid}`)
    } catch (err) {
      if ((err as { code?: string }).code !== 'EINTR') throw err // EINTR: a signal came; wait on
    }
  }
  const signal = status[0] & 0x7f
  return signal === 0 ? (status[0] >> 8) & 0xff : 128 + signal
}
