// Step 10's policy, as tables: what container root keeps of root's power,
// which system calls it may not make, and which files of /proc and /sys it
// may not read or change. The capabilities are Docker's 14. The calls are
// modelled on Docker's default seccomp profile (moby/profiles,
// seccomp/default.json): the calls it refuses a container with those
// capabilities, each row here with its reason. Docker's profile is an
// allow-list of about 370 calls, so a call a newer kernel adds is refused
// there and allowed here, until the table names it: a deny-list is easier
// to read, not as tight. The paths are runc's (`runc spec`).

import type { Capability } from '../../shared/capabilities.ts'
import { CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS } from '../../shared/namespaces.ts'
import type { SeccompRule } from '../../shared/seccomp.ts'

/** Docker's default capabilities: what most programs, package managers included, need of root. */
export const DEFAULT_CAPABILITIES: Partial<Record<Capability, string>> = {
  CHOWN: 'chown(2) any file: package managers hand files to their users',
  DAC_OVERRIDE: 'read and write files whatever their permission bits say',
  FOWNER: 'chmod, utime and the like on files root does not own',
  FSETID: 'keep setuid and setgid bits on files it changes',
  KILL: 'signal any process in the container',
  SETGID: 'change group ids: su, and daemons that drop root',
  SETUID: 'change user ids, the same',
  SETPCAP: 'give its own capabilities to what it runs (inheritable set)',
  SETFCAP: 'setcap: give a file capabilities',
  NET_BIND_SERVICE: 'listen on a port below 1024',
  NET_RAW: 'raw sockets: ping',
  MKNOD: 'mknod: make device nodes (opening them is another matter)',
  SYS_CHROOT: 'chroot(2): build tools use it',
  AUDIT_WRITE: 'write to the kernel\'s audit log: login and sshd do',
}

/** The namespaces clone(2) may not make: its flags, checked by the filter (Docker's mask). */
export const CLONE_NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET

/**
 * The calls the container may not make: EPERM, but clone3, which says
 * ENOSYS. `unlessCaps`: Docker allows the call again when the container
 * keeps that capability (--cap-add SYS_ADMIN lets mount through), and so
 * does this table.
 */
export const BLOCKED_CALLS: SeccompRule[] = [
  // New namespaces and mounts: the way out of the box this step's namespaces build.
  { call: 'unshare', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'new namespaces: a user namespace gives root over new ones, and the kernel code behind them' },
  { call: 'setns', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'join another namespace, such as the host\'s through a leaked fd' },
  { call: 'clone', errno: 'EPERM', arg0Mask: CLONE_NAMESPACE_FLAGS, unlessCaps: ['SYS_ADMIN'], why: 'clone with CLONE_NEW* flags is unshare by other means; a plain fork still works' },
  { call: 'clone3', errno: 'ENOSYS', unlessCaps: ['SYS_ADMIN'], why: 'its flags are in memory, which a filter cannot read: ENOSYS makes glibc fall back to clone, which it can' },
  { call: 'mount', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'mount over the container\'s /proc masks, or mount a filesystem the kernel handles badly' },
  { call: 'umount2', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'unmount a mask and see what it hides' },
  { call: 'pivot_root', errno: 'EPERM', why: 'change the root of the mount namespace' },
  { call: 'open_tree', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'the new mount API (Linux 5.2): mount by other means' },
  { call: 'move_mount', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'the new mount API' },
  { call: 'fsopen', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'the new mount API' },
  { call: 'fsconfig', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'the new mount API' },
  { call: 'fsmount', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'the new mount API' },
  { call: 'fspick', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'the new mount API' },
  { call: 'mount_setattr', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'the new mount API: change a mount\'s flags, read-only ones included' },
  { call: 'open_by_handle_at', errno: 'EPERM', unlessCaps: ['DAC_READ_SEARCH'], why: 'the "shocker" escape: open a file by its handle, past the mount tree, such as the host\'s /etc/shadow' },
  // The kernel itself: modules, a new kernel, the machine.
  { call: 'init_module', errno: 'EPERM', unlessCaps: ['SYS_MODULE'], why: 'load kernel code' },
  { call: 'finit_module', errno: 'EPERM', unlessCaps: ['SYS_MODULE'], why: 'load kernel code, from a file' },
  { call: 'delete_module', errno: 'EPERM', unlessCaps: ['SYS_MODULE'], why: 'unload kernel code' },
  { call: 'create_module', errno: 'EPERM', why: 'old module call (Linux 2.4)' },
  { call: 'query_module', errno: 'EPERM', why: 'old module call (Linux 2.4)' },
  { call: 'get_kernel_syms', errno: 'EPERM', why: 'old module call (Linux 2.4)' },
  { call: 'kexec_load', errno: 'EPERM', why: 'boot a new kernel' },
  { call: 'kexec_file_load', errno: 'EPERM', why: 'boot a new kernel, from a file' },
  { call: 'reboot', errno: 'EPERM', unlessCaps: ['SYS_BOOT'], why: 'reboot the machine (in a PID namespace it only ends the container; blocked all the same)' },
  { call: 'bpf', errno: 'EPERM', unlessCaps: ['SYS_ADMIN', 'BPF'], why: 'load eBPF programs into the kernel, a large attack surface' },
  { call: 'perf_event_open', errno: 'EPERM', unlessCaps: ['SYS_ADMIN', 'PERFMON'], why: 'profile the kernel and other processes; leaks addresses' },
  { call: 'io_uring_setup', errno: 'EPERM', why: 'io_uring: a second way into most of the kernel, past the filter, and a long list of kernel bugs' },
  { call: 'io_uring_enter', errno: 'EPERM', why: 'io_uring' },
  { call: 'io_uring_register', errno: 'EPERM', why: 'io_uring' },
  { call: 'userfaultfd', errno: 'EPERM', why: 'handle page faults in user space: a classic tool for widening kernel race bugs' },
  { call: 'lookup_dcookie', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'a profiling call that names files by cookie' },
  { call: 'syslog', errno: 'EPERM', unlessCaps: ['SYS_ADMIN', 'SYSLOG'], why: 'read or clear the kernel\'s log: the host\'s messages and addresses' },
  { call: 'fanotify_init', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'watch file access on whole filesystems' },
  { call: 'vhangup', errno: 'EPERM', unlessCaps: ['SYS_TTY_CONFIG'], why: 'hang up the terminal' },
  { call: 'iopl', errno: 'EPERM', unlessCaps: ['SYS_RAWIO'], why: 'raw access to I/O ports, the hardware' },
  { call: 'ioperm', errno: 'EPERM', unlessCaps: ['SYS_RAWIO'], why: 'raw access to I/O ports' },
  { call: 'swapon', errno: 'EPERM', why: 'add swap to the whole machine' },
  { call: 'swapoff', errno: 'EPERM', why: 'take swap away from the whole machine' },
  { call: 'acct', errno: 'EPERM', unlessCaps: ['SYS_PACCT'], why: 'process accounting, kernel-wide: turn it off' },
  { call: 'quotactl', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'disk quotas of the host\'s filesystems' },
  { call: 'quotactl_fd', errno: 'EPERM', unlessCaps: ['SYS_ADMIN'], why: 'disk quotas, by fd' },
  { call: 'nfsservctl', errno: 'EPERM', why: 'the kernel NFS server (gone since Linux 3.1)' },
  { call: 'uselib', errno: 'EPERM', why: 'an old way to load a library, with its own bugs' },
  { call: 'sysfs', errno: 'EPERM', why: 'old call that lists filesystem types' },
  { call: '_sysctl', errno: 'EPERM', why: 'old binary sysctl interface' },
  { call: 'ustat', errno: 'EPERM', why: 'old filesystem statistics call' },
  // Time is not namespaced (but for the offsets of CLOCK_MONOTONIC and CLOCK_BOOTTIME).
  // clock_adjtime and adjtimex stay: they read the clock too, and setting it needs CAP_SYS_TIME.
  { call: 'clock_settime', errno: 'EPERM', unlessCaps: ['SYS_TIME'], why: 'set the host\'s clock' },
  { call: 'settimeofday', errno: 'EPERM', unlessCaps: ['SYS_TIME'], why: 'set the host\'s clock' },
  // Keyrings are not namespaced: a key one container adds, another can find.
  { call: 'keyctl', errno: 'EPERM', why: 'keyrings are the kernel\'s, shared by every container' },
  { call: 'add_key', errno: 'EPERM', why: 'add a key to those keyrings' },
  { call: 'request_key', errno: 'EPERM', why: 'ask the kernel, and its helpers on the host, for a key' },
  // Other processes: ptrace itself is allowed (Docker does, from Linux 4.8); these need CAP_SYS_PTRACE there.
  { call: 'kcmp', errno: 'EPERM', unlessCaps: ['SYS_PTRACE'], why: 'compare two processes\' kernel objects: tells about their memory layout' },
  { call: 'pidfd_getfd', errno: 'EPERM', unlessCaps: ['SYS_PTRACE'], why: 'take a copy of another process\'s file descriptor' },
  { call: 'process_madvise', errno: 'EPERM', unlessCaps: ['SYS_PTRACE'], why: 'advise the kernel about another process\'s memory' },
  // Memory placement on NUMA machines: the host's business.
  { call: 'mbind', errno: 'EPERM', unlessCaps: ['SYS_NICE'], why: 'tie memory to NUMA nodes' },
  { call: 'set_mempolicy', errno: 'EPERM', unlessCaps: ['SYS_NICE'], why: 'NUMA memory policy' },
  { call: 'set_mempolicy_home_node', errno: 'EPERM', unlessCaps: ['SYS_NICE'], why: 'NUMA memory policy' },
  { call: 'get_mempolicy', errno: 'EPERM', unlessCaps: ['SYS_NICE'], why: 'NUMA memory policy' },
  { call: 'move_pages', errno: 'EPERM', why: 'move another process\'s pages between NUMA nodes' },
  { call: 'migrate_pages', errno: 'EPERM', why: 'move all of another process\'s pages between NUMA nodes' },
  // Two socket families with a history of kernel bugs.
  { call: 'socket', errno: 'EPERM', arg0Values: [38, 40], why: 'AF_ALG (38), the kernel\'s crypto, and AF_VSOCK (40), sockets to the hypervisor' },
]

/** Files and directories of /proc and /sys that tell about, or act on, the host's kernel: hidden (runc's maskedPaths). */
export const MASKED_PATHS = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
]

/** Parts of /proc that change kernel-wide settings: readable, not writable (runc's readonlyPaths). */
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']
