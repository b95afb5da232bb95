// Capabilities (capabilities(7)): root's power, cut into 41 pieces. A
// process has five sets of them: effective (what it may do now), permitted
// (what it may make effective), inheritable and ambient (what may pass
// through execve), and the bounding set (the most it can ever gain again).
// The names, the calls that change the sets, and Docker's --cap-add and
// --cap-drop.

import { readFileSync } from 'node:fs'
import { UsageError } from './errors.ts'
import { check, raw } from './libc.ts'

/** Every capability, by its number (<linux/capability.h>). */
export const CAPABILITIES = [
  'CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP',
  'LINUX_IMMUTABLE', 'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'IPC_OWNER',
  'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE', 'SYS_PACCT', 'SYS_ADMIN', 'SYS_BOOT', 'SYS_NICE',
  'SYS_RESOURCE', 'SYS_TIME', 'SYS_TTY_CONFIG', 'MKNOD', 'LEASE', 'AUDIT_WRITE', 'AUDIT_CONTROL', 'SETFCAP',
  'MAC_OVERRIDE', 'MAC_ADMIN', 'SYSLOG', 'WAKE_ALARM', 'BLOCK_SUSPEND', 'AUDIT_READ', 'PERFMON', 'BPF',
  'CHECKPOINT_RESTORE',
] as const
export type Capability = (typeof CAPABILITIES)[number]

// prctl(2) options for the bounding and ambient sets.
export const PR_CAPBSET_DROP = 24
export const PR_CAP_AMBIENT = 47
export const PR_CAP_AMBIENT_CLEAR_ALL = 4
const _LINUX_CAPABILITY_VERSION_3 = 0x20080522

/**
 * The bit numbers of every capability this kernel has, 0 to
 * `/proc/sys/kernel/cap_last_cap`: fewer than CAPABILITIES on an older
 * kernel, more on a newer one (CAPABILITIES[bit] is then undefined).
 */
export function kernelCapabilityBits(): number[] {
  const last = Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'))
  return Array.from({ length: last + 1 }, (_, bit) => bit)
}

/** A set as the kernel stores it, one bit per capability: what CapEff, CapBnd… in /proc/PID/status show in hex. */
export function capabilityMask(caps: Iterable<Capability>): bigint {
  let mask = 0n
  for (const cap of caps) mask |= 1n << BigInt(CAPABILITIES.indexOf(cap))
  return mask
}

/** The names in a mask, e.g. from a CapEff: line (hex). */
export function capabilitiesIn(mask: bigint): Capability[] {
  return CAPABILITIES.filter((_, bit) => (mask >> BigInt(bit)) & 1n)
}

/**
 * capset(2): set the calling thread's effective, permitted and inheritable
 * sets (version 3: two 32-bit words per set, for 64 capabilities).
 */
export function capset(sets: { effective: Iterable<Capability>; permitted: Iterable<Capability>; inheritable: Iterable<Capability> }): void {
  const header = Buffer.alloc(8)
  header.writeUInt32LE(_LINUX_CAPABILITY_VERSION_3, 0) // pid 0: this thread
  const data = Buffer.alloc(24) // struct __user_cap_data_struct[2]
  for (const [i, set] of [sets.effective, sets.permitted, sets.inheritable].entries()) {
    const mask = capabilityMask(set)
    data.writeUInt32LE(Number(mask & 0xffffffffn), i * 4)
    data.writeUInt32LE(Number(mask >> 32n), 12 + i * 4)
  }
  check('capset', raw.capset(header, data), undefined, {
    EPERM: 'a process can only keep or drop capabilities it has in its permitted and bounding sets',
  })
}

/**
 * Docker's --cap-add and --cap-drop applied to `defaults`, as Docker does
 * (moby's TweakCapabilities): names with or without CAP_, in any case.
 * `--cap-add ALL`: every capability but the dropped ones; `--cap-drop ALL`:
 * only the added ones; else the defaults, minus the dropped, plus the
 * added (a name both dropped and added is kept). An unknown name is a UsageError.
 */
export function capabilitiesFrom(defaults: readonly Capability[], add: string[] = [], drop: string[] = []): Capability[] {
  const parse = (flag: string, names: string[]) => names.flatMap((name) => name.split(',')).map((name) => {
    const bare = name.trim().toUpperCase().replace(/^CAP_/, '')
    if (bare === 'ALL') return 'ALL'
    if (!(CAPABILITIES as readonly string[]).includes(bare)) throw new UsageError(`${flag} ${name}: no such capability (see capabilities(7), e.g. NET_ADMIN)`)
    return bare as Capability
  })
  const added = parse('--cap-add', add)
  const dropped = parse('--cap-drop', drop)
  const kept = added.includes('ALL')
    ? CAPABILITIES.filter((cap) => !dropped.includes(cap))
    : dropped.includes('ALL')
      ? added
      : [...defaults.filter((cap) => !dropped.includes(cap)), ...added]
  return CAPABILITIES.filter((cap) => kept.includes(cap))
}
