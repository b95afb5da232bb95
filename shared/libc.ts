// The only file that talks to koffi: it loads glibc and declares the C
// functions the project calls. Everything else imports the checked wrappers
// from the area modules (namespaces.ts, mounts.ts, process.ts, ...).
//
// Why koffi: the talk's materials used ffi-napi/ref-napi, which no longer
// compile against Node 20's headers; koffi ships prebuilt binaries.

import koffi, { type LibraryHandle } from 'koffi'
import { SyscallError, UsageError } from './errors.ts'

/** Raw glibc functions. They return -1 and set errno on failure; use `check`. */
export const raw = process.platform === 'linux' ? bind(koffi.load('libc.so.6')) : notLinux()

function bind(lib: LibraryHandle) {
  return {
    unshare: lib.func('int unshare(int flags)'),
    setns: lib.func('int setns(int fd, int nstype)'),
    sethostname: lib.func('int sethostname(const char *name, size_t len)'),
    mount: lib.func('int mount(const char *source, const char *target, const char *filesystemtype, unsigned long mountflags, const char *data)'),
    umount2: lib.func('int umount2(const char *target, int flags)'),
    chroot: lib.func('int chroot(const char *path)'),
    chdir: lib.func('int chdir(const char *path)'),
    fchdir: lib.func('int fchdir(int fd)'),
    execvp: lib.func('int execvp(const char *file, const char **argv)'),
    execvpe: lib.func('int execvpe(const char *file, const char **argv, const char **envp)'),
    fcntl: lib.func('int fcntl(int fd, int cmd, ...)'),
    mknod: lib.func('int mknod(const char *pathname, unsigned int mode, unsigned long dev)'),
    // Extended attributes: overlayfs's notes on a layer's directories (shared/xattr.ts).
    lsetxattr: lib.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)'),
    lgetxattr: lib.func('long lgetxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)'),
    prctl: lib.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)'),
    kill: lib.func('int kill(int pid, int sig)'),
    _exit: lib.func('void _exit(int status)'),
    setgroups: lib.func('int setgroups(size_t size, const uint32_t *list)'),
    setresuid: lib.func('int setresuid(uint32_t ruid, uint32_t euid, uint32_t suid)'),
    setresgid: lib.func('int setresgid(uint32_t rgid, uint32_t egid, uint32_t sgid)'),
    capset: lib.func('int capset(void *hdrp, void *datap)'),
    getpgrp: lib.func('int getpgrp(void)'),
    tcgetpgrp: lib.func('int tcgetpgrp(int fd)'),
    tcsetpgrp: lib.func('int tcsetpgrp(int fd, int pgrp)'),
    pthread_sigmask: lib.func('int pthread_sigmask(int how, const uint8_t *set, _Out_ uint8_t *oldset)'),
    // posix_spawn(3): a child made by glibc, in C, between its clone and its
    // exec: the one way a multithreaded Node can start a process that runs
    // nothing of Node's (see shared/spawn.ts).
    posix_spawnp: lib.func('int posix_spawnp(_Out_ int *pid, const char *file, void *actions, void *attr, const char **argv, const char **envp)'),
    posix_spawn_file_actions_init: lib.func('int posix_spawn_file_actions_init(void *actions)'),
    posix_spawn_file_actions_destroy: lib.func('int posix_spawn_file_actions_destroy(void *actions)'),
    posix_spawn_file_actions_addopen: lib.func('int posix_spawn_file_actions_addopen(void *actions, int fd, const char *path, int oflag, unsigned int mode)'),
    posix_spawn_file_actions_addclose: lib.func('int posix_spawn_file_actions_addclose(void *actions, int fd)'),
    posix_spawn_file_actions_adddup2: lib.func('int posix_spawn_file_actions_adddup2(void *actions, int fd, int newfd)'),
    posix_spawn_file_actions_addclosefrom_np: lib.func('int posix_spawn_file_actions_addclosefrom_np(void *actions, int from)'),
    posix_spawnattr_init: lib.func('int posix_spawnattr_init(void *attr)'),
    posix_spawnattr_destroy: lib.func('int posix_spawnattr_destroy(void *attr)'),
    posix_spawnattr_setflags: lib.func('int posix_spawnattr_setflags(void *attr, short flags)'),
    posix_spawnattr_setsigdefault: lib.func('int posix_spawnattr_setsigdefault(void *attr, const uint8_t *set)'),
    posix_spawnattr_setsigmask: lib.func('int posix_spawnattr_setsigmask(void *attr, const uint8_t *set)'),
    waitpid: lib.func('int waitpid(int pid, _Out_ int *status, int options)'),
    // Terminals and passing fds (shared/terminal.ts).
    ioctl: lib.func('int ioctl(int fd, unsigned long request, ...)'),
    isatty: lib.func('int isatty(int fd)'),
    openat: lib.func('int openat(int dirfd, const char *pathname, int flags)'),
    setsid: lib.func('int setsid(void)'),
    dup2: lib.func('int dup2(int oldfd, int newfd)'),
    close: lib.func('int close(int fd)'),
    socketpair: lib.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    sendmsg: lib.func('long sendmsg(int sockfd, const void *msg, int flags)'),
    recvmsg: lib.func('long recvmsg(int sockfd, void *msg, int flags)'),
    shutdown: lib.func('int shutdown(int sockfd, int how)'),
    // syscall(2): for calls glibc has no wrapper for (pivot_root, seccomp).
    syscall: lib.func('long syscall(long number, ...)'),
    strerror: lib.func('const char *strerror(int errnum)'),
  }
}

/** The address of a buffer's memory, for a C struct that points to another (seccomp's sock_fprog). */
export function addressOf(buffer: Buffer): bigint {
  return BigInt(koffi.address(buffer) as bigint)
}

// On macOS or Windows there is no libc.so.6 and none of these calls: say so
// on first use instead of crashing at import.
function notLinux(): ReturnType<typeof bind> {
  return new Proxy({} as ReturnType<typeof bind>, {
    get() {
      throw new UsageError('containers need a Linux kernel: on macOS or Windows use the VM in vagrant/ (see README.md)')
    },
  })
}

// errno number -> name ('EPERM'), from koffi's table of POSIX codes.
const errnoNames = new Map<number, string>(
  Object.entries(koffi.os.errno as Record<string, number>).map(([name, n]) => [n, name]),
)

/** Hints for the errors learners meet most, keyed by errno name. */
const commonHints: Record<string, string> = {
  EPERM: 'needs root: rerun with sudo',
}

/**
 * Check a libc return value: -1 means failure, so read errno and throw a
 * SyscallError naming the call, the path it was about and a hint.
 */
export function check<T extends number | bigint>(
  syscall: string,
  result: T,
  path?: string,
  hints: Record<string, string> = {},
): T {
  if (Number(result) !== -1) return result
  const errno = koffi.errno()
  const code = errnoNames.get(errno) ?? `errno ${errno}`
  const hint = hints[code] ?? commonHints[code]
  throw new SyscallError(syscall, code, errno, raw.strerror(errno) as string, path, hint)
}

/**
 * Check a return value that is the error number itself, 0 for success, as
 * posix_spawn(3) and pthread functions return it (errno is not set).
 */
export function checkReturned(call: string, result: number, path?: string): void {
  if (result === 0) return
  const code = errnoNames.get(result) ?? `errno ${result}`
  throw new SyscallError(call, code, result, raw.strerror(result) as string, path, commonHints[code])
}
