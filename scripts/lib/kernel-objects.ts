// Kernel objects that have no path in any file system: keys (keyrings(7))
// and System V shared memory segments (sysvipc(7)). The isolation matrix
// plants one of each on the host for its probes; npm run clean finds what a
// crash left, by the names below. glibc has no wrapper for add_key(2) or
// keyctl(2), so all four calls go through syscall(2), like pivot_root in
// shared/mounts.ts.

import { readFileSync } from 'node:fs'
import { check, raw } from '../../shared/libc.ts'

// syscall(2) numbers: x86_64, then arm64 (asm-generic).
const arm64 = process.arch === 'arm64'
const SYS_shmget = arm64 ? 194 : 29
const SYS_shmctl = arm64 ? 195 : 31
const SYS_add_key = arm64 ? 217 : 248
const SYS_keyctl = arm64 ? 219 : 250

const KEY_SPEC_PROCESS_KEYRING = -2
const KEYCTL_SET_TIMEOUT = 15
const KEYCTL_INVALIDATE = 21
const IPC_CREAT = 0o1000
const IPC_EXCL = 0o2000
const IPC_RMID = 0

/** Segment keys of the project: "cfs" in ASCII, then one byte (0x636673NN). */
export const SHM_KEY_BASE = 0x63667300

/**
 * add_key(2): a `user` key named `description` in the caller's process
 * keyring (@p), which the caller always holds, even under sudo in someone
 * else's session keyring, and which dies with it (a crash leaves no key).
 * It also expires after `timeoutS` seconds (keyctl KEYCTL_SET_TIMEOUT).
 * Any process of the same uid may view it in /proc/keys. Returns its serial.
 */
export function add_key(description: string, payload: string, timeoutS: number): number {
  const serial = check('add_key', raw.syscall(SYS_add_key, 'const char *', 'user', 'const char *', description,
    'const char *', payload, 'size_t', Buffer.byteLength(payload), 'int', KEY_SPEC_PROCESS_KEYRING) as number, description)
  check('keyctl KEYCTL_SET_TIMEOUT', raw.syscall(SYS_keyctl, 'int', KEYCTL_SET_TIMEOUT, 'int', serial, 'unsigned int', timeoutS) as number, description)
  return serial
}

/** keyctl(KEYCTL_INVALIDATE): the key is gone at once, from every keyring that holds it. */
export function keyctl_invalidate(serial: number): void {
  check('keyctl KEYCTL_INVALIDATE', raw.syscall(SYS_keyctl, 'int', KEYCTL_INVALIDATE, 'int', serial) as number, serial.toString(16))
}

/**
 * Keys that /proc/keys lists for this process (those it may view) whose
 * description starts with `prefix`; not those already on their way out
 * (invalidated, dead or expired), which the kernel's garbage collector
 * frees by itself.
 */
export function findKeys(prefix: string): { serial: number; description: string }[] {
  let text = ''
  try {
    text = readFileSync('/proc/keys', 'utf8')
  } catch {
    return [] // a kernel without keys (CONFIG_KEYS)
  }
  // serial flags usage expiry perm uid gid type description: summary;
  // flags are IRDQUNi, a letter where set (D dead, i invalidated).
  return text.split('\n').flatMap((line) => {
    const match = /^([0-9a-f]+)\s+(\S+)\s+\d+\s+(\S+)\s+[0-9a-f]+\s+\d+\s+\d+\s+\S+\s+(.*?)(?::\s.*)?$/.exec(line)
    if (!match || !match[4].startsWith(prefix)) return []
    const [, serial, flags, expiry, description] = match
    return flags[2] === 'D' || flags[6] === 'i' || expiry === 'expd' ? [] : [{ serial: parseInt(serial, 16), description }]
  })
}

/** shmget(2) with IPC_CREAT | IPC_EXCL: a new segment of `size` bytes under `key`, mode 0600. Returns its id. */
export function shmget(key: number, size: number): number {
  return check('shmget', raw.syscall(SYS_shmget, 'int', key, 'size_t', size, 'int', IPC_CREAT | IPC_EXCL | 0o600) as number, `0x${key.toString(16)}`, {
    EEXIST: `a segment with key 0x${key.toString(16)} exists already: another matrix run, or a crashed one's (npm run clean removes it)`,
  })
}

/** shmctl(2) IPC_RMID: remove the segment (at once, if nothing has it attached). */
export function shmctl_rmid(id: number): void {
  check('shmctl IPC_RMID', raw.syscall(SYS_shmctl, 'int', id, 'int', IPC_RMID, 'void *', null) as number, String(id))
}

/** The segments in /proc/sysvipc/shm whose key starts with the project's "cfs": key, id, the PID that made it. */
export function findSegments(): { key: number; id: number; creator: number }[] {
  let text = ''
  try {
    text = readFileSync('/proc/sysvipc/shm', 'utf8')
  } catch {
    return [] // a kernel without System V IPC
  }
  // key shmid perms size cpid lpid nattch uid gid …; the key is signed decimal.
  return text.split('\n').slice(1).flatMap((line) => {
    const [key, id, , , cpid] = line.trim().split(/\s+/).map(Number)
    return line.trim() && (key >>> 8) === SHM_KEY_BASE >>> 8 ? [{ key: key >>> 0, id, creator: cpid }] : []
  })
}
