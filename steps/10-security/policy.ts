// Step 10's policy, as tables: what container root keeps of root's power,
// which system calls it may not make, and which files of /proc and /sys it
// may not read or change. The defaults are Docker's: its 14 capabilities,
// and the calls its default seccomp profile (moby/profiles, seccomp/
// default.json) leaves out for a container with those capabilities, on a
// current kernel. Docker's profile is an allow-list of about 370 calls;
// this table is the same policy written as what it blocks, so each row can
// say why. runc's `runc spec` masks and protects the same paths.

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

/** The calls the container may not make: all fail with EPERM, but clone3, which says ENOSYS. */
export const BLOCKED_CALLS: SeccompRule[] = [
  // New namespaces and mounts: the way out of the box this step's namespaces build.
  { call: 'unshare', errno: 'EPERM', why: 'new namespaces: a user namespace gives root over new ones, and the kernel code behind them' },
  { call: 'setns', errno: 'EPERM', why: 'join another namespace, such as the host\'s through a leaked fd' },
  { call: 'clone', errno: 'EPERM', arg0Mask: CLONE_NAMESPACE_FLAGS, why: 'clone with CLONE_NEW* flags is unshare by other means; a plain fork still works' },
  { call: 'clone3', errno: 'ENOSYS', why: 'its flags are in memory, which a filter cannot read: ENOSYS makes glibc fall back to clone, which it can' },
  { call: 'mount', errno: 'EPERM', why: 'mount over the container\'s /proc masks, or mount a filesystem the kernel handles badly' },
  { call: 'umount2', errno: 'EPERM', why: 'unmount a mask and see what it hides' },
  { call: 'pivot_root', errno: 'EPERM', why: 'change the root of the mount namespace' },
  { call: 'open_tree', errno: 'EPERM', why: 'the new mount API (Linux 5.2): mount by other means' },
  { call: 'move_mount', errno: 'EPERM', why: 'the new mount API' },
  { call: 'fsopen', errno: 'EPERM', why: 'the new mount API' },
  { call: 'fsconfig', errno: 'EPERM', why: 'the new mount API' },
  { call: 'fsmount', errno: 'EPERM', why: 'the new mount API' },
  { call: 'fspick', errno: 'EPERM', why: 'the new mount API' },
  { call: 'mount_setattr', errno: 'EPERM', why: 'the new mount API: change a mount\'s flags, read-only ones included' },
  { call: 'name_to_handle_at', errno: 'EPERM', why: 'with open_by_handle_at, the "shocker" escape: open any host file by its handle' },
  { call: 'open_by_handle_at', errno: 'EPERM', why: 'opens a file by handle, past the mount tree: read the host\'s /etc/shadow' },
  // The kernel itself: modules, a new kernel, the machine.
  { call: 'init_module', errno: 'EPERM', why: 'load kernel code' },
  { call: 'finit_module', errno: 'EPERM', why: 'load kernel code, from a file' },
  { call: 'delete_module', errno: 'EPERM', why: 'unload kernel code' },
  { call: 'create_module', errno: 'EPERM', why: 'old module call (Linux 2.4)' },
  { call: 'query_module', errno: 'EPERM', why: 'old module call (Linux 2.4)' },
  { call: 'get_kernel_syms', errno: 'EPERM', why: 'old module call (Linux 2.4)' },
  { call: 'kexec_load', errno: 'EPERM', why: 'boot a new kernel' },
  { call: 'kexec_file_load', errno: 'EPERM', why: 'boot a new kernel, from a file' },
  { call: 'reboot', errno: 'EPERM', why: 'reboot the machine (in a PID namespace it only kills the container; blocked all the same)' },
  { call: 'bpf', errno: 'EPERM', why: 'load eBPF programs into the kernel, a large attack surface' },
  { call: 'perf_event_open', errno: 'EPERM', why: 'profile the kernel and other processes; leaks addresses' },
  { call: 'userfaultfd', errno: 'EPERM', why: 'handle page faults in user space: a classic tool for widening kernel race bugs' },
  { call: 'lookup_dcookie', errno: 'EPERM', why: 'a profiling call that names files by cookie' },
  { call: 'iopl', errno: 'EPERM', why: 'raw access to I/O ports, the hardware' },
  { call: 'ioperm', errno: 'EPERM', why: 'raw access to I/O ports' },
  { call: 'swapon', errno: 'EPERM', why: 'add swap to the whole machine' },
  { call: 'swapoff', errno: 'EPERM', why: 'take swap away from the whole machine' },
  { call: 'acct', errno: 'EPERM', why: 'process accounting, kernel-wide: turn it off' },
  { call: 'quotactl', errno: 'EPERM', why: 'disk quotas of the host\'s filesystems' },
  { call: 'quotactl_fd', errno: 'EPERM', why: 'disk quotas, by fd' },
  { call: 'nfsservctl', errno: 'EPERM', why: 'the kernel NFS server (gone since Linux 3.1)' },
  { call: 'uselib', errno: 'EPERM', why: 'an old way to load a library, with its own bugs' },
  { call: 'sysfs', errno: 'EPERM', why: 'old call that lists filesystem types' },
  { call: '_sysctl', errno: 'EPERM', why: 'old binary sysctl interface' },
  { call: 'ustat', errno: 'EPERM', why: 'old filesystem statistics call' },
  // Time is not namespaced (but for the offsets of CLOCK_MONOTONIC and CLOCK_BOOTTIME).
  { call: 'clock_settime', errno: 'EPERM', why: 'set the host\'s clock' },
  { call: 'clock_adjtime', errno: 'EPERM', why: 'adjust the host\'s clock' },
  { call: 'settimeofday', errno: 'EPERM', why: 'set the host\'s clock' },
  // Keyrings are not namespaced: a key one container adds, another can find.
  { call: 'keyctl', errno: 'EPERM', why: 'keyrings are the kernel\'s, shared by every container' },
  { call: 'add_key', errno: 'EPERM', why: 'add a key to those keyrings' },
  { call: 'request_key', errno: 'EPERM', why: 'ask the kernel, and its helpers on the host, for a key' },
  // Memory placement on NUMA machines: the host's business (Docker allows these with CAP_SYS_NICE).
  { call: 'mbind', errno: 'EPERM', why: 'tie memory to NUMA nodes' },
  { call: 'set_mempolicy', errno: 'EPERM', why: 'NUMA memory policy' },
  { call: 'get_mempolicy', errno: 'EPERM', why: 'NUMA memory policy' },
  { call: 'move_pages', errno: 'EPERM', why: 'move another process\'s pages between NUMA nodes' },
]

/** Files and directories of /proc and /sys that tell about, or act on, the host's kernel: hidden (runc's maskedPaths). */
export const MASKED_PATHS = [
  '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
  '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
]

/** Parts of /proc that change kernel-wide settings: readable, not writable (runc's readonlyPaths). */
export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger']
