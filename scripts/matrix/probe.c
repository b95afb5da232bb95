// The isolation matrix's helper, run inside containers: a static binary, so
// it runs in any image and needs nothing from /dev or /proc.
//
//   probe escape DIR JAIL FILE  the classic chroot escape (rubber-docker's
//                               breakout.py): chroot into DIR/JAIL keeping an
//                               fd on DIR, fchdir back out, `..` up to the
//                               real root, chroot(".") there, then read FILE
//   probe fork N                fork up to N children; print how many it got
//   probe alloc MB              allocate and touch MB MiB; print how many it got
//   probe host-file FILE TOKEN  read FILE (a host file the host bind-mounted
//                               here, holding TOKEN), then try to append to it
//                               and to chmod it
//   probe clock                 clock_adjtime(CLOCK_REALTIME) by an offset of 0
//   probe userns                unshare(CLONE_NEWUSER), in a child
//   probe mount-tmpfs DIR       mount a tmpfs on DIR (made, then removed), unmount it
//   probe keyctl DESC           add a key DESC to a session keyring of its own, then invalidate it
//   probe sysctl FILE           write back to FILE (under /proc/sys) what it holds
//   probe proc-keys PROC DESC   whether PROC/keys lists a key DESC
//   probe raw-socket            socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
//   probe chown FILE UID        make FILE, chown it to UID:UID, remove it
//   probe ptrace                PTRACE_ATTACH to a child, then detach
//   probe shm KEY               look up a System V shared memory segment by KEY
//   probe kcore PROC            read PROC/kcore
//   probe sysrq PROC            open PROC/sysrq-trigger for writing (never writes)
//   probe module                init_module with no module
//   probe tiocsti TEXT          push TEXT and a newline into the terminal on
//                               fd 0, a byte at a time (ioctl TIOCSTI): for
//                               the shell that reads that terminal next
//
// And one the host runs, outside any container:
//
//   probe inject PID FILE TARGET  bind-mount the host's FILE onto TARGET (a
//                               path as process PID sees it) in PID's mount
//                               namespace
//
// Output is KEY=VALUE lines; a refused call prints its errno name (EPERM).
// Raw system calls, for those older glibc has no wrapper for, are syscall().
// Built with `gcc -static` by scripts/matrix/host.ts.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timex.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x04
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x40
#endif
#define KEYCTL_JOIN_SESSION_KEYRING 1
#define KEYCTL_INVALIDATE 21
#define KEY_SPEC_SESSION_KEYRING -3

// errno as its name: strerrorname_np needs glibc 2.32.
static const char *errname(int e) {
  static char other[16];
  switch (e) {
  case EPERM: return "EPERM";
  case ENOENT: return "ENOENT";
  case ESRCH: return "ESRCH";
  case EIO: return "EIO";
  case ENOEXEC: return "ENOEXEC";
  case EBADF: return "EBADF";
  case EAGAIN: return "EAGAIN";
  case ENOMEM: return "ENOMEM";
  case EACCES: return "EACCES";
  case EFAULT: return "EFAULT";
  case EBUSY: return "EBUSY";
  case EEXIST: return "EEXIST";
  case EXDEV: return "EXDEV";
  case ENOTDIR: return "ENOTDIR";
  case EINVAL: return "EINVAL";
  case ENOSPC: return "ENOSPC";
  case EROFS: return "EROFS";
  case ENOSYS: return "ENOSYS";
  case EDQUOT: return "EDQUOT";
  case EOPNOTSUPP: return "EOPNOTSUPP";
  case EUSERS: return "EUSERS";
  case ELOOP: return "ELOOP";
  case ENOTTY: return "ENOTTY";
  }
  snprintf(other, sizeof other, "errno%d", e);
  return other;
}

// Print KEY=ok, or KEY=<errno name> if the call returned -1.
static int result(const char *key, long rc) {
  if (rc == -1) printf("%s=%s\n", key, errname(errno));
  else printf("%s=ok\n", key);
  return 0;
}

static int escape(const char *dir, const char *jail, const char *file) {
  if (chdir(dir) != 0) return printf("escape=chdir %s: %s\n", dir, strerror(errno)), 1;
  mkdir(jail, 0700);
  int outside = open(".", O_RDONLY | O_DIRECTORY);
  // chroot(2) does not move the cwd: it is now outside the new root.
  if (chroot(jail) != 0) return printf("escape=chroot: %s\n", strerror(errno)), 1;
  fchdir(outside);
  close(outside);
  rmdir(jail);
  // `..` stops only at the root of this process or of the mount namespace.
  for (int i = 0; i < 256; i++) chdir("..");
  if (chroot(".") != 0) return printf("escape=chroot .: %s\n", strerror(errno)), 1;
  FILE *f = fopen(file, "r");
  if (!f) return printf("escape=open %s: %s\n", file, strerror(errno)), 1;
  char line[256] = "";
  if (!fgets(line, sizeof line, f)) line[0] = 0;
  line[strcspn(line, "\n")] = 0;
  printf("escape=%s\n", line);
  return 0;
}

static int forks(int n) {
  pid_t pids[4096];
  int got = 0;
  if (n > 4096) n = 4096;
  for (; got < n; got++) {
    pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      // Die with the parent, whatever kills it.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() == 1) _exit(0);
      pause();
      _exit(0);
    }
    pids[got] = pid;
  }
  for (int i = 0; i < got; i++) kill(pids[i], SIGKILL);
  for (int i = 0; i < got; i++) waitpid(pids[i], NULL, 0);
  printf("forked=%d\n", got);
  return 0;
}

static int alloc(int mb) {
  int got = 0;
  for (; got < mb; got++) {
    char *chunk = malloc(1 << 20);
    if (!chunk) break;
    memset(chunk, 1, 1 << 20); // touch it: untouched pages cost nothing
  }
  printf("allocated=%d\n", got);
  return 0;
}

// The host judges the file afterwards; this says whether it was in view and what the kernel answered.
static int host_file(const char *file, const char *token) {
  char line[256] = "";
  FILE *f = fopen(file, "r");
  if (f && !fgets(line, sizeof line, f)) line[0] = 0;
  if (f) fclose(f);
  line[strcspn(line, "\n")] = 0;
  printf("host_file_seen=%d\n", strcmp(line, token) == 0);
  int fd = open(file, O_WRONLY | O_APPEND);
  if (fd >= 0 && write(fd, "cfsm-changed\n", 13) != 13) fd = -1;
  result("host_file_write", fd < 0 ? -1 : 0);
  return result("host_file_chmod", chmod(file, 0666));
}

// ADJ_SETOFFSET by 0 s: a call that needs CAP_SYS_TIME (in the initial user
// namespace: the clock is not namespaced) and moves the clock by nothing.
static int clock_probe(void) {
  struct timex tx = { .modes = ADJ_SETOFFSET };
  return result("clock", clock_adjtime(CLOCK_REALTIME, &tx));
}

// In a child, so this process keeps its namespaces; the child's errno is its exit code.
static int userns(void) {
  pid_t pid = fork();
  if (pid == 0) _exit(unshare(CLONE_NEWUSER) == 0 ? 0 : errno);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return result("userns", -1);
  errno = WEXITSTATUS(status);
  return result("userns", errno ? -1 : 0);
}

static int mount_tmpfs(const char *dir) {
  mkdir(dir, 0700);
  long rc = mount("cfsm-tmpfs", dir, "tmpfs", 0, "size=16k");
  int saved = errno;
  if (rc == 0) umount2(dir, MNT_DETACH);
  rmdir(dir);
  errno = saved;
  return result("mount_tmpfs", rc);
}

// A session keyring of its own first, so the key never lands in one the
// host's processes share; invalidated at once (the kernel frees it).
static int keyctl_probe(const char *desc) {
  if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL) == -1) return result("keyctl", -1);
  long key = syscall(SYS_add_key, "user", desc, "cfsm", 4, KEY_SPEC_SESSION_KEYRING);
  if (key == -1) return result("keyctl", -1);
  syscall(SYS_keyctl, KEYCTL_INVALIDATE, key);
  return result("keyctl", 0);
}

// The same value back: the kernel takes the write, nothing changes.
static int sysctl(const char *file) {
  char value[256];
  int fd = open(file, O_RDONLY);
  ssize_t n = fd < 0 ? -1 : read(fd, value, sizeof value);
  if (fd >= 0) close(fd);
  if (n <= 0) return printf("sysctl=read %s\n", n < 0 ? errname(errno) : "empty"), 0;
  fd = open(file, O_WRONLY);
  long rc = fd < 0 ? -1 : write(fd, value, n);
  if (fd >= 0) close(fd);
  return result("sysctl", rc);
}

// /proc/keys lists the keys the reader may view: its own, and those whose permissions let its uid view them.
static int proc_keys(const char *proc, const char *desc) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/keys", proc);
  FILE *f = fopen(path, "r");
  if (!f) return printf("proc_keys=%s\n", errname(errno)), 0;
  // A line ends `<type> <description>: <summary>`.
  char line[512], wanted[300];
  snprintf(wanted, sizeof wanted, " %s:", desc);
  int shown = 0;
  while (fgets(line, sizeof line, f)) shown |= strstr(line, wanted) != NULL;
  fclose(f);
  printf("proc_keys=%s\n", shown ? "shown" : "hidden");
  return 0;
}

static int raw_socket(void) {
  int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (fd >= 0) close(fd);
  return result("raw_socket", fd);
}

static int chown_probe(const char *file, int uid) {
  int fd = open(file, O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd < 0) return printf("chown=create %s\n", errname(errno)), 0;
  close(fd);
  long rc = chown(file, uid, uid);
  int saved = errno;
  unlink(file);
  errno = saved;
  return result("chown", rc);
}

// The tracee is a child that waits; ATTACH stops it, DETACH lets it go on.
static int ptrace_probe(void) {
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    pause();
    _exit(0);
  }
  long rc = ptrace(PTRACE_ATTACH, pid, NULL, NULL);
  int saved = errno;
  if (rc == 0) {
    waitpid(pid, NULL, __WALL);
    ptrace(PTRACE_DETACH, pid, NULL, NULL);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, __WALL);
  errno = saved;
  return result("ptrace", rc);
}

// shmget with size 0 and no flags only looks the key up, in this IPC namespace.
static int shm(const char *key) {
  int id = shmget((key_t)strtoul(key, NULL, 0), 0, 0);
  if (id < 0) return printf("ipc=%s\n", errname(errno)), 0;
  printf("ipc=found\n");
  return 0;
}

static int kcore(const char *proc) {
  char path[PATH_MAX], buf[64];
  snprintf(path, sizeof path, "%s/kcore", proc);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return printf("kcore=%s\n", errname(errno)), 0;
  ssize_t n = read(fd, buf, sizeof buf);
  int saved = errno;
  close(fd);
  if (n < 0) return printf("kcore=%s\n", errname(saved)), 0;
  // A masked kcore (runc binds /dev/null over it) reads as empty.
  printf("kcore=%s\n", n > 0 ? "read" : "empty");
  return 0;
}

// Opening is the permission check; a write of one letter would act on the host's kernel, so none.
static int sysrq(const char *proc) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/sysrq-trigger", proc);
  int fd = open(path, O_WRONLY);
  if (fd >= 0) close(fd);
  return result("sysrq", fd);
}

// No module at all: EPERM if CAP_SYS_MODULE is missing, else the kernel
// goes on to read the image and finds it too short (ENOEXEC).
static int module(void) {
  long rc = syscall(SYS_init_module, NULL, 0UL, "");
  printf("module=%s\n", rc == -1 ? errname(errno) : "ok");
  return 0;
}

// Host side. mount(2) refuses a target in another mount namespace, so:
// clone a mount of FILE here (open_tree), join PID's mount namespace, and
// attach the clone there (move_mount). TARGET is opened through
// /proc/PID/root, which resolves it as PID sees it (chroot included).
static int inject(const char *pid, const char *file, const char *target) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "/proc/%s/root%s", pid, target);
  int to = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (to < 0) return printf("inject=open %s: %s\n", path, errname(errno)), 1;
  int tree = syscall(SYS_open_tree, AT_FDCWD, file, OPEN_TREE_CLONE | O_CLOEXEC);
  if (tree < 0) return printf("inject=open_tree %s: %s\n", file, errname(errno)), 1;
  snprintf(path, sizeof path, "/proc/%s/ns/mnt", pid);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  struct stat theirs, ours;
  if (ns < 0 || fstat(ns, &theirs) != 0 || stat("/proc/self/ns/mnt", &ours) != 0) return printf("inject=%s: %s\n", path, errname(errno)), 1;
  // Before step 05 the container shares our mount namespace: nothing to join.
  if ((theirs.st_ino != ours.st_ino || theirs.st_dev != ours.st_dev) && setns(ns, CLONE_NEWNS) != 0) {
    return printf("inject=setns %s: %s\n", path, errname(errno)), 1;
  }
  if (syscall(SYS_move_mount, tree, "", to, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) != 0) {
    return printf("inject=move_mount onto %s: %s\n", target, errname(errno)), 1;
  }
  printf("inject=ok\n");
  return 0;
}

// Push TEXT, then a newline, into fd 0's terminal as if typed there: the
// kernel allows it on the caller's controlling terminal, and on any with
// CAP_SYS_ADMIN; where dev.tty.legacy_tiocsti is 0, only with CAP_SYS_ADMIN.
static int tiocsti(const char *text) {
  const char newline = '\n';
  for (const char *c = text; *c; c++) {
    if (ioctl(0, TIOCSTI, c) != 0) return printf("tiocsti=%s\n", errname(errno)), 0;
  }
  if (ioctl(0, TIOCSTI, &newline) != 0) return printf("tiocsti=%s\n", errname(errno)), 0;
  printf("tiocsti=ok\n");
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const char *cmd = argc > 1 ? argv[1] : "";
  if (argc == 5 && !strcmp(cmd, "escape")) return escape(argv[2], argv[3], argv[4]);
  if (argc == 3 && !strcmp(cmd, "fork")) return forks(atoi(argv[2]));
  if (argc == 3 && !strcmp(cmd, "alloc")) return alloc(atoi(argv[2]));
  if (argc == 4 && !strcmp(cmd, "host-file")) return host_file(argv[2], argv[3]);
  if (argc == 2 && !strcmp(cmd, "clock")) return clock_probe();
  if (argc == 2 && !strcmp(cmd, "userns")) return userns();
  if (argc == 3 && !strcmp(cmd, "mount-tmpfs")) return mount_tmpfs(argv[2]);
  if (argc == 3 && !strcmp(cmd, "keyctl")) return keyctl_probe(argv[2]);
  if (argc == 3 && !strcmp(cmd, "sysctl")) return sysctl(argv[2]);
  if (argc == 4 && !strcmp(cmd, "proc-keys")) return proc_keys(argv[2], argv[3]);
  if (argc == 2 && !strcmp(cmd, "raw-socket")) return raw_socket();
  if (argc == 4 && !strcmp(cmd, "chown")) return chown_probe(argv[2], atoi(argv[3]));
  if (argc == 2 && !strcmp(cmd, "ptrace")) return ptrace_probe();
  if (argc == 3 && !strcmp(cmd, "shm")) return shm(argv[2]);
  if (argc == 3 && !strcmp(cmd, "kcore")) return kcore(argv[2]);
  if (argc == 3 && !strcmp(cmd, "sysrq")) return sysrq(argv[2]);
  if (argc == 2 && !strcmp(cmd, "module")) return module();
  if (argc == 3 && !strcmp(cmd, "tiocsti")) return tiocsti(argv[2]);
  if (argc == 5 && !strcmp(cmd, "inject")) return inject(argv[2], argv[3], argv[4]);
  fprintf(stderr, "usage: probe escape DIR JAIL FILE | fork N | alloc MB | host-file FILE TOKEN | clock | userns\n"
                  "  | mount-tmpfs DIR | keyctl DESC | sysctl FILE | proc-keys PROC DESC | raw-socket | chown FILE UID\n"
                  "  | ptrace | shm KEY | kcore PROC | sysrq PROC | module | tiocsti TEXT | inject PID FILE TARGET\n");
  return 2;
}
