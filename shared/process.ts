// The calling process itself: its directory, its file descriptors, its
// death signal, and exec, which replaces it with the container's command.

import { mkdirSync, writeSync } from 'node:fs'
import { userInfo } from 'node:os'
import { check, raw } from './libc.ts'
import { EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, SyscallError, UsageError } from './errors.ts'

export const F_GETFD = 1
export const F_SETFD = 2
export const F_GETFL = 3
export const F_SETFL = 4
export const FD_CLOEXEC = 1
export const O_NONBLOCK = 0o4000
export const PR_SET_PDEATHSIG = 1

export const SIGKILL = 9
export const SIGHUP = 1

/** chdir(2) */
export function chdir(path: string): void {
  check('chdir', raw.chdir(path), path)
}

/**
 * -w: make `dir`, a path inside the container (we are in its root), the
 * command's working directory (chdir(2)). `create`: make it first if it is
 * missing, as Docker does (steps 07 on: it lands in the container's own
 * upper dir). Without, a missing one is refused in one line: steps 03-06
 * would have to make it in the image every container shares.
 */
export function enterWorkdir(dir: string, { create = false } = {}): void {
  if (create) mkdirSync(dir, { recursive: true })
  try {
    chdir(dir)
  } catch (err) {
    if (!(err instanceof SyscallError && (err.code === 'ENOENT' || err.code === 'ENOTDIR'))) throw err
    throw new UsageError(`--workdir \`${dir}\`: no such directory in the image${create ? '' : ', and this step has no overlay to make it in (it would change the image every container shares)'}`)
  }
}

/** fchdir(2) */
export function fchdir(fd: number): void {
  check('fchdir', raw.fchdir(fd))
}

/** fcntl(2), for the commands that take an int argument. */
export function fcntl(fd: number, cmd: number, arg = 0): number {
  return check('fcntl', raw.fcntl(fd, cmd, 'int', arg) as number, `fd ${fd}`)
}

/** prctl(2) */
export function prctl(option: number, arg2 = 0): void {
  check('prctl', raw.prctl(option, arg2, 0, 0, 0), undefined, {
    EPERM: 'this option needs a capability the calling thread does not have (see prctl(2))',
  })
}

/** kill(2): send a signal; returns false if the process does not exist. */
export function kill(pid: number, signal: number): boolean {
  const result = raw.kill(pid, signal) as number
  if (result === -1) {
    try {
      check('kill', result, `pid ${pid}`)
    } catch (err) {
      if ((err as { code?: string }).code === 'ESRCH') return false
      throw err
    }
  }
  return true
}

/**
 * execvp(3): replace this Node process with `command`, looked up in PATH
 * inside whatever root the process has now. Returns only by throwing.
 */
export function execvp(command: string, args: string[]): never {
  check('execvp', raw.execvp(command, [command, ...args, null]), command)
  throw new Error('execvp returned without an error') // unreachable
}

/**
 * execvpe(3): as execvp, but the new program's environment is exactly `env`
 * (`KEY=VALUE` strings, execve(2)'s envp), not a copy of ours. glibc looks
 * the command up in the PATH of our own environment, not of `env`.
 */
export function execvpe(command: string, args: string[], env: string[]): never {
  check('execvpe', raw.execvpe(command, [command, ...args, null], [...env, null]), command)
  throw new Error('execvpe returned without an error') // unreachable
}

/**
 * Let fds 0-2 survive an exec as they are: Node marks them close-on-exec
 * (and may make them non-blocking); without undoing that, the next program
 * would start with no stdin, stdout or stderr.
 */
export function keepStdio(): void {
  for (const fd of [0, 1, 2]) {
    fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) & ~FD_CLOEXEC)
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
  }
}

/** The PATH a container's command gets unless -e says otherwise: Docker's. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/**
 * The whole environment of a container's command, as Docker gives it: PATH,
 * HOME, HOSTNAME, TERM if the user has one, then `extra` (from -e), which
 * wins. Nothing else of the host's: its variables hold its paths, its
 * user's name, and often tokens and keys.
 */
export function containerEnv(hostname: string, extra: string[] = []): string[] {
  const home = process.getuid?.() === 0 ? '/root' : userInfo().homedir // step 01 may run as you
  const env = new Map([['PATH', DEFAULT_PATH], ['HOME', home], ['HOSTNAME', hostname]])
  if (process.env.TERM) env.set('TERM', process.env.TERM)
  for (const pair of extra) env.set(pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1))
  return [...env].map(([key, value]) => `${key}=${value}`)
}

/**
 * Run the container's command in place of this process, with the
 * environment `env` and nothing else (see containerEnv).
 * A command that is not there exits 127, one that cannot run 126, as in a shell.
 */
export function execCommand(command: string[], env: string[]): never {
  keepStdio()
  const [file, ...args] = command
  // execvpe searches our own PATH: make it the container's, so the command
  // is found where a shell inside would find it.
  process.env.PATH = env.find((pair) => pair.startsWith('PATH='))?.slice(5) ?? DEFAULT_PATH
  try {
    execvpe(file, args, env)
  } catch (err) {
    const code = (err as { code?: string }).code
    const [message, exitCode] = code === 'ENOENT' ? [`${file}: command not found`, EXIT_NOT_FOUND]
      : code === 'EACCES' || code === 'ENOEXEC' ? [`${file}: permission denied (not an executable)`, EXIT_NOT_EXECUTABLE]
      : [`exec \`${file}\`: ${(err as Error).message}`, EXIT_NOT_EXECUTABLE]
    // Nothing is left to do but say why: write it and _exit(2) at once. Node's
    // own exit would use libuv's io_uring, which step 10's filter refuses.
    writeSync(2, `cfs: ${message}\n`)
    return raw._exit(exitCode) as never
  }
}

export const SIGTTOU = 22
const SIG_BLOCK = 0
const SIG_SETMASK = 2

/**
 * Give the terminal on fd 0 back to our process group (tcsetpgrp(3)).
 *
 * An interactive shell takes the terminal for its own process group. As PID 1
 * of a new PID namespace it cannot see ours (tcgetpgrp returns 0 in there),
 * so it cannot hand it back on exit, and the terminal would be left to a dead
 * group. A background group may take the terminal only with SIGTTOU blocked.
 */
export function reclaimTerminal(): void {
  const isTty = (raw.tcgetpgrp(0) as number) !== -1
  if (!isTty || raw.tcgetpgrp(0) === raw.getpgrp()) return
  const set = Buffer.alloc(128) // sigset_t, one bit per signal
  set[Math.floor((SIGTTOU - 1) / 8)] |= 1 << ((SIGTTOU - 1) % 8)
  const old = Buffer.alloc(128)
  check('pthread_sigmask', raw.pthread_sigmask(SIG_BLOCK, set, old) === 0 ? 0 : -1)
  try {
    check('tcsetpgrp', raw.tcsetpgrp(0, raw.getpgrp()), 'stdin')
  } finally {
    raw.pthread_sigmask(SIG_SETMASK, old, null)
  }
}
