// Seccomp (seccomp(2), Documentation/userspace-api/seccomp_filter.rst): a
// small program the kernel runs at every system call a process makes, before
// the call does anything. It reads the call's number, its architecture and
// its arguments (struct seccomp_data) and returns a verdict: go on, fail
// with this errno, or kill the process. The program is classic BPF, the
// language of socket filters; here it is assembled from a table of rules,
// with no libseccomp and no compiler. It survives execve and fork, and can
// never be removed.

import type { Capability } from './capabilities.ts'
import { UsageError } from './errors.ts'
import { addressOf, check, raw } from './libc.ts'

// Instructions (<linux/filter.h>, <linux/bpf_common.h>): class | size | mode, or class | op | source.
const BPF_LD_W_ABS = 0x00 | 0x00 | 0x20 // A = 32-bit word at offset k of seccomp_data
const BPF_JMP_JEQ_K = 0x05 | 0x10 | 0x00 // if (A == k) jump jt else jf
const BPF_JMP_JGE_K = 0x05 | 0x30 | 0x00 // if (A >= k)
const BPF_JMP_JSET_K = 0x05 | 0x40 | 0x00 // if (A & k)
const BPF_RET_K = 0x06 // return k

// struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
const OFFSET_NR = 0
const OFFSET_ARCH = 4
const OFFSET_ARG0_LOW = 16 // the low half of args[0] on a little-endian machine

// Verdicts (<linux/seccomp.h>).
export const SECCOMP_RET_KILL_PROCESS = 0x80000000
export const SECCOMP_RET_ERRNO = 0x00050000 // | errno in the low 16 bits
export const SECCOMP_RET_ALLOW = 0x7fff0000
export const SECCOMP_SET_MODE_FILTER = 1
/** prctl(2): no execve may gain privileges from now on (setuid bits, file capabilities). */
export const PR_SET_NO_NEW_PRIVS = 38

export const ERRNO = { EPERM: 1, ENOSYS: 38 } as const

/** The architectures the filter knows, by Node's name: the kernel's AUDIT_ARCH_* value (<linux/audit.h>). */
export const ARCHITECTURES = {
  x64: { audit: 0xc000003e, name: 'x86_64' },
  arm64: { audit: 0xc00000b7, name: 'aarch64' },
} as const
export type Arch = keyof typeof ARCHITECTURES

/** x86_64 also runs x32 programs: same AUDIT_ARCH, numbers with this bit set (asm/unistd.h). */
export const X32_SYSCALL_BIT = 0x40000000

/**
 * System call numbers (asm/unistd_64.h for x86_64, asm-generic/unistd.h for
 * aarch64). A call an architecture never had is missing there: nothing to filter.
 */
export const SYSCALL_NUMBERS: Record<string, { x64?: number; arm64?: number }> = {
  _sysctl: { x64: 156 },
  acct: { x64: 163, arm64: 89 },
  add_key: { x64: 248, arm64: 217 },
  bpf: { x64: 321, arm64: 280 },
  clock_adjtime: { x64: 305, arm64: 266 },
  clock_settime: { x64: 227, arm64: 112 },
  clone: { x64: 56, arm64: 220 },
  clone3: { x64: 435, arm64: 435 },
  create_module: { x64: 174 },
  delete_module: { x64: 176, arm64: 106 },
  finit_module: { x64: 313, arm64: 273 },
  fsconfig: { x64: 431, arm64: 431 },
  fsmount: { x64: 432, arm64: 432 },
  fsopen: { x64: 430, arm64: 430 },
  fspick: { x64: 433, arm64: 433 },
  get_kernel_syms: { x64: 177 },
  fanotify_init: { x64: 300, arm64: 262 },
  get_mempolicy: { x64: 239, arm64: 236 },
  init_module: { x64: 175, arm64: 105 },
  io_uring_enter: { x64: 426, arm64: 426 },
  io_uring_register: { x64: 427, arm64: 427 },
  io_uring_setup: { x64: 425, arm64: 425 },
  ioperm: { x64: 173 },
  iopl: { x64: 172 },
  kcmp: { x64: 312, arm64: 272 },
  kexec_file_load: { x64: 320, arm64: 294 },
  kexec_load: { x64: 246, arm64: 104 },
  keyctl: { x64: 250, arm64: 219 },
  lookup_dcookie: { x64: 212, arm64: 18 },
  mbind: { x64: 237, arm64: 235 },
  migrate_pages: { x64: 256, arm64: 238 },
  mount: { x64: 165, arm64: 40 },
  mount_setattr: { x64: 442, arm64: 442 },
  move_mount: { x64: 429, arm64: 429 },
  move_pages: { x64: 279, arm64: 239 },
  name_to_handle_at: { x64: 303, arm64: 264 },
  nfsservctl: { x64: 180, arm64: 42 },
  open_by_handle_at: { x64: 304, arm64: 265 },
  open_tree: { x64: 428, arm64: 428 },
  perf_event_open: { x64: 298, arm64: 241 },
  pidfd_getfd: { x64: 438, arm64: 438 },
  pivot_root: { x64: 155, arm64: 41 },
  process_madvise: { x64: 440, arm64: 440 },
  query_module: { x64: 178 },
  quotactl: { x64: 179, arm64: 60 },
  quotactl_fd: { x64: 443, arm64: 443 },
  reboot: { x64: 169, arm64: 142 },
  request_key: { x64: 249, arm64: 218 },
  seccomp: { x64: 317, arm64: 277 },
  set_mempolicy: { x64: 238, arm64: 237 },
  set_mempolicy_home_node: { x64: 450, arm64: 450 },
  setns: { x64: 308, arm64: 268 },
  settimeofday: { x64: 164, arm64: 170 },
  socket: { x64: 41, arm64: 198 },
  swapoff: { x64: 168, arm64: 225 },
  swapon: { x64: 167, arm64: 224 },
  sysfs: { x64: 139 },
  syslog: { x64: 103, arm64: 116 },
  umount2: { x64: 166, arm64: 39 },
  unshare: { x64: 272, arm64: 97 },
  uselib: { x64: 134 },
  userfaultfd: { x64: 323, arm64: 282 },
  ustat: { x64: 136 },
  vhangup: { x64: 153, arm64: 58 },
}

/**
 * One row of a policy: this call fails with `errno`. With `arg0Mask`, only
 * when its first argument has one of those bits; with `arg0Values`, only
 * when it is one of them. With `unlessCaps`, the row is left out when the
 * container keeps one of those capabilities (`--cap-add`), as in Docker.
 */
export interface SeccompRule {
  call: string
  errno: keyof typeof ERRNO
  arg0Mask?: number
  arg0Values?: number[]
  unlessCaps?: Capability[]
  why: string
}

// One instruction, with jumps by label until assemble() turns them into offsets.
interface Instruction { code: number; k: number; jt?: string; jf?: string }

/**
 * The filter for `rules` on `arch`, leaving out the rows whose capability
 * the container keeps, as the kernel takes it: an array of
 * struct sock_filter { u16 code; u8 jt; u8 jf; u32 k }. Its order:
 *   1. a foreign architecture (i386 or x32 on x86_64): kill, since the same
 *      call has another number there and would slip past the table;
 *   2. number -1, which a tracer sets to skip a call: allowed (the kernel
 *      then skips it), or strace's fault injection would kill its tracee;
 *   3. each rule: its number, and for an argument rule, the argument;
 *   4. anything else: allow (a deny-list: the table says what it blocks).
 */
export function seccompFilter(rules: SeccompRule[], kept: Capability[] = [], arch: Arch = process.arch as Arch): Buffer {
  if (!(arch in ARCHITECTURES)) throw new UsageError(`seccomp: no system call table for ${arch} (x64 and arm64 only): use --security-opt seccomp=unconfined`)
  const { audit } = ARCHITECTURES[arch]
  const nr = (call: string) => SYSCALL_NUMBERS[call]?.[arch]
  const active = rules.filter((r) => nr(r.call) !== undefined && !r.unlessCaps?.some((cap) => kept.includes(cap)))
  const isArgRule = (r: SeccompRule) => r.arg0Mask !== undefined || r.arg0Values !== undefined
  const at = new Map<string, number>() // label -> index of its instruction
  const program: Instruction[] = [
    { code: BPF_LD_W_ABS, k: OFFSET_ARCH },
    { code: BPF_JMP_JEQ_K, k: audit, jf: 'kill' },
    { code: BPF_LD_W_ABS, k: OFFSET_NR },
    { code: BPF_JMP_JEQ_K, k: 0xffffffff, jt: 'allow' },
  ]
  if (arch === 'x64') program.push({ code: BPF_JMP_JGE_K, k: X32_SYSCALL_BIT, jt: 'kill' })
  for (const rule of active.filter((r) => !isArgRule(r))) {
    program.push({ code: BPF_JMP_JEQ_K, k: nr(rule.call)!, jt: rule.errno })
  }
  // Argument rules last: each loads its argument, so the number is loaded again after it.
  for (const [i, rule] of active.filter(isArgRule).entries()) {
    const next = `next-${i}`
    program.push({ code: BPF_JMP_JEQ_K, k: nr(rule.call)!, jf: next }, { code: BPF_LD_W_ABS, k: OFFSET_ARG0_LOW })
    for (const value of rule.arg0Values ?? []) program.push({ code: BPF_JMP_JEQ_K, k: value, jt: rule.errno })
    if (rule.arg0Mask !== undefined) program.push({ code: BPF_JMP_JSET_K, k: rule.arg0Mask, jt: rule.errno })
    program.push({ code: BPF_RET_K, k: SECCOMP_RET_ALLOW })
    at.set(next, program.length)
    program.push({ code: BPF_LD_W_ABS, k: OFFSET_NR })
  }
  at.set('allow', program.length)
  program.push({ code: BPF_RET_K, k: SECCOMP_RET_ALLOW })
  at.set('kill', program.length)
  program.push({ code: BPF_RET_K, k: SECCOMP_RET_KILL_PROCESS })
  for (const errno of Object.keys(ERRNO) as (keyof typeof ERRNO)[]) {
    at.set(errno, program.length)
    program.push({ code: BPF_RET_K, k: SECCOMP_RET_ERRNO | ERRNO[errno] })
  }
  return assemble(program, at)
}

// Jumps are relative, forward only, and at most 255 instructions long.
function assemble(program: Instruction[], at: Map<string, number>): Buffer {
  const out = Buffer.alloc(program.length * 8)
  program.forEach(({ code, k, jt, jf }, i) => {
    const offset = (label?: string) => {
      if (label === undefined) return 0
      const target = at.get(label)
      if (target === undefined || target <= i || target - i - 1 > 255) throw new Error(`seccomp filter: cannot jump from ${i} to ${label}`)
      return target - i - 1
    }
    out.writeUInt16LE(code, i * 8)
    out.writeUInt8(offset(jt), i * 8 + 2)
    out.writeUInt8(offset(jf), i * 8 + 3)
    out.writeUInt32LE(k >>> 0, i * 8 + 4)
  })
  return out
}

/**
 * seccomp(2) with SECCOMP_SET_MODE_FILTER: install `filter` on the calling
 * thread only (no SECCOMP_FILTER_FLAG_TSYNC: Node's other threads go with
 * the exec that follows). Without no_new_privs set first, the kernel asks
 * for CAP_SYS_ADMIN.
 */
export function seccomp(filter: Buffer): void {
  const fprog = Buffer.alloc(16) // struct sock_fprog { unsigned short len; struct sock_filter *filter }
  fprog.writeUInt16LE(filter.length / 8, 0)
  fprog.writeBigUInt64LE(addressOf(filter), 8)
  const nr = SYSCALL_NUMBERS.seccomp[process.arch as Arch]
  if (nr === undefined) throw new UsageError(`seccomp: no system call table for ${process.arch}`)
  check('seccomp', raw.syscall(nr, 'unsigned int', SECCOMP_SET_MODE_FILTER, 'unsigned int', 0, 'void *', fprog) as number, undefined, {
    EACCES: 'without no_new_privs, installing a filter needs CAP_SYS_ADMIN: install it before dropping capabilities',
  })
}
