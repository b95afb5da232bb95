// The isolation matrix's helper, run inside containers: a static binary, so
// it runs in any image and needs nothing from /dev or /proc.
//
//   probe escape DIR JAIL FILE  the classic chroot escape (rubber-docker's
//                               breakout.py): chroot into DIR/JAIL keeping an
//                               fd on DIR, fchdir back out, `..` up to the
//                               real root, chroot(".") there, then read FILE
//   probe fork N                fork up to N children; print how many it got
//   probe alloc MB              allocate and touch MB MiB; print how many it got
//
// Output is KEY=VALUE lines. Built with `gcc -static` by scripts/matrix/host.ts.

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc == 5 && !strcmp(argv[1], "escape")) return escape(argv[2], argv[3], argv[4]);
  if (argc == 3 && !strcmp(argv[1], "fork")) return forks(atoi(argv[2]));
  if (argc == 3 && !strcmp(argv[1], "alloc")) return alloc(atoi(argv[2]));
  fprintf(stderr, "usage: probe escape DIR JAIL FILE | fork N | alloc MB\n");
  return 2;
}
