// Step 10's security layer, piece by piece: the seccomp filter built from
// the table and run by the real kernel (every probe of the table fails as
// the table says, and otherwise without it), the same program run by a
// small BPF interpreter for both architectures (aarch64 included, which CI
// cannot run), and the --cap-add, --cap-drop and --security-opt rules.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { capabilitiesFrom, capabilitiesIn, capabilityMask, CAPABILITIES, type Capability } from '../shared/capabilities.ts'
import { securityOptions } from '../shared/cli.ts'
import { UsageError } from '../shared/errors.ts'
import {
  ARCHITECTURES, ERRNO, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS, seccompFilter, SYSCALL_NUMBERS, X32_SYSCALL_BIT, type Arch,
} from '../shared/seccomp.ts'
import { seccompProbes } from '../scripts/lib/seccomp-calls.ts'
import { BLOCKED_CALLS, CLONE_NAMESPACE_FLAGS, DEFAULT_CAPABILITIES } from '../steps/10-security/policy.ts'
import { rootOnly } from './helpers.ts'

const fixture = fileURLToPath(new URL('../scripts/lib/seccomp-calls.ts', import.meta.url))
// prlimit --core=0: the x32 probe dies of SIGSYS, and must leave no core dump.
const calls = (mode: string) => {
  const run = spawnSync('prlimit', ['--core=0', process.execPath, '--import=tsx', fixture, mode], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  return { ...run, seen: run.status === 0 ? JSON.parse(run.stdout) as Record<string, string> : {} }
}
const probes = seccompProbes()

t.test('with the filter, every probe of the table fails with the table\'s errno, and what it lets by gets the kernel\'s own answer', rootOnly(), async (t) => {
  const filtered = calls('filtered')
  const unfiltered = calls('unfiltered')
  t.equal(filtered.status, 0, `the filtered run worked (stderr: ${filtered.stderr.trim().slice(-300)})`)
  t.equal(unfiltered.status, 0, `the unfiltered run worked (stderr: ${unfiltered.stderr.trim().slice(-300)})`)
  for (const { label, expect } of probes) {
    if (expect === 'through') t.equal(filtered.seen[label], unfiltered.seen[label], `${label}: let by, the kernel says ${unfiltered.seen[label]} either way`)
    else {
      t.equal(filtered.seen[label], expect, `${label}: ${expect} with the filter`)
      // Root without the filter: the kernel's own answer to bad arguments, never the filter's.
      t.not(unfiltered.seen[label], expect, `${label}: ${unfiltered.seen[label]} without it`)
    }
  }
})

t.test('an x32 call (x86_64\'s other ABI, the same arch value) kills the process', { skip: process.arch === 'x64' ? false : 'x32 exists on x86_64 only' }, async (t) => {
  const { signal, stdout } = calls('x32')
  t.equal(signal, 'SIGSYS', `killed by SIGSYS, as SECCOMP_RET_KILL_PROCESS does (printed: ${stdout.trim() || 'nothing'})`)
})

// Classic BPF as the kernel runs a seccomp filter (only what seccompFilter emits).
function run(filter: Buffer, data: { nr: number; arch: number; arg0?: number }): number {
  const word = (k: number) => (k === 0 ? data.nr : k === 4 ? data.arch : k === 16 ? (data.arg0 ?? 0) : NaN) >>> 0
  let a = 0
  for (let pc = 0; pc < filter.length / 8;) {
    const code = filter.readUInt16LE(pc * 8)
    const jt = filter[pc * 8 + 2]
    const jf = filter[pc * 8 + 3]
    const k = filter.readUInt32LE(pc * 8 + 4)
    if (code === 0x20) a = word(k)
    else if (code === 0x06) return k
    else if (code === 0x15) { pc += 1 + (a === k ? jt : jf); continue }
    else if (code === 0x35) { pc += 1 + (a >= k ? jt : jf); continue }
    else if (code === 0x45) { pc += 1 + ((a & k) >>> 0 ? jt : jf); continue }
    else throw new Error(`unknown instruction ${code.toString(16)} at ${pc}`)
    pc++
  }
  throw new Error('the program ran off its end')
}

for (const arch of Object.keys(ARCHITECTURES) as Arch[]) {
  t.test(`the ${ARCHITECTURES[arch].name} program, run by an interpreter`, async (t) => {
    const filter = seccompFilter(BLOCKED_CALLS, [], arch)
    const audit = ARCHITECTURES[arch].audit
    const verdict = (nr: number, arg0?: number, onArch: number = audit) => run(filter, { nr, arch: onArch, arg0 })
    t.equal(verdict(SYSCALL_NUMBERS.seccomp[arch]!), SECCOMP_RET_ALLOW, 'a call not in the table: allowed')
    t.equal(verdict(0xffffffff), SECCOMP_RET_ALLOW, 'number -1 (a tracer skipping a call): allowed, the kernel skips it')
    t.equal(verdict(SYSCALL_NUMBERS.unshare[arch]!, 0, 0x40000003), SECCOMP_RET_KILL_PROCESS, 'another architecture (i386): killed')
    if (arch === 'x64') t.equal(verdict(X32_SYSCALL_BIT | 39), SECCOMP_RET_KILL_PROCESS, 'an x32 number: killed')
    for (const { label, nr, args, expect } of seccompProbes(arch)) {
      const want = expect === 'through' ? SECCOMP_RET_ALLOW : (SECCOMP_RET_ERRNO | ERRNO[expect]) >>> 0
      t.equal(verdict(nr, args[0]), want, `${label}: ${expect}`)
    }
    const clone = SYSCALL_NUMBERS.clone[arch]!
    t.equal(verdict(clone, 0x01200011), SECCOMP_RET_ALLOW, 'clone as fork() makes it (CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD): allowed')
    t.equal(verdict(clone, CLONE_NAMESPACE_FLAGS), (SECCOMP_RET_ERRNO | ERRNO.EPERM) >>> 0, 'clone with every namespace flag: EPERM')
    const relaxed = seccompFilter(BLOCKED_CALLS, ['SYS_ADMIN'], arch)
    t.equal(run(relaxed, { nr: SYSCALL_NUMBERS.mount[arch]!, arch: audit }), SECCOMP_RET_ALLOW, 'with SYS_ADMIN kept (--cap-add), mount is let by, as Docker does')
    t.equal(run(relaxed, { nr: SYSCALL_NUMBERS.keyctl[arch]!, arch: audit }), (SECCOMP_RET_ERRNO | ERRNO.EPERM) >>> 0, '…while keyctl, which no capability opens, is not')
  })
}

t.test('capabilities: Docker\'s 14 by default, --cap-add and --cap-drop as moby\'s TweakCapabilities does', async (t) => {
  const docker = Object.keys(DEFAULT_CAPABILITIES) as Capability[]
  t.equal(docker.length, 14, 'Docker keeps 14')
  t.equal(capabilityMask(docker).toString(16), 'a80425fb', 'their mask is Docker\'s CapEff: 00000000a80425fb')
  t.same(capabilitiesIn(0xa80425fbn).sort(), [...docker].sort(), 'and reads back as the same names')
  t.same(capabilitiesFrom(docker, ['net_admin']).filter((cap) => !docker.includes(cap)), ['NET_ADMIN'], '--cap-add net_admin adds one, any case')
  t.notOk(capabilitiesFrom(docker, [], ['CAP_NET_RAW']).includes('NET_RAW'), '--cap-drop CAP_NET_RAW drops it, with the prefix')
  t.same(capabilitiesFrom(docker, ['NET_RAW'], ['ALL']), ['NET_RAW'], '--cap-drop ALL --cap-add NET_RAW keeps only NET_RAW')
  t.same(capabilitiesFrom(docker, ['ALL'], ['SYS_ADMIN']).length, CAPABILITIES.length - 1, '--cap-add ALL --cap-drop SYS_ADMIN: all but one')
  t.ok(capabilitiesFrom(docker, ['SYS_TIME'], ['SYS_TIME']).includes('SYS_TIME'), 'added and dropped: kept (the defaults lose the drops, then the adds go in)')
  t.same(capabilitiesFrom(docker, [], ['ALL']), [], '--cap-drop ALL: none')
  t.throws(() => capabilitiesFrom(docker, ['BOGUS']), UsageError, 'an unknown name is a usage error')
})

t.test('--security-opt', async (t) => {
  t.same(securityOptions(), { seccomp: true, noNewPrivileges: true }, 'by default: the filter and no_new_privs')
  t.same(securityOptions(['seccomp=unconfined']), { seccomp: false, noNewPrivileges: true }, 'seccomp=unconfined')
  t.same(securityOptions(['no-new-privileges=false']), { seccomp: true, noNewPrivileges: false }, 'no-new-privileges=false')
  t.same(securityOptions(['no-new-privileges']), { seccomp: true, noNewPrivileges: true }, 'no-new-privileges alone: true')
  t.same(securityOptions(['no-new-privileges:true']), { seccomp: true, noNewPrivileges: true }, 'Docker\'s older colon form')
  t.throws(() => securityOptions(['no-new-privileges=true=junk']), UsageError, 'a value with more after it: one line')
  t.throws(() => securityOptions(['seccomp=profile.json']), UsageError, 'a profile file is not supported: one line')
  t.throws(() => securityOptions(['apparmor=unconfined']), UsageError, 'nor AppArmor')
})
