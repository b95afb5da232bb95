// Step 10's security layer, piece by piece: the seccomp filter built from
// the table and run by the real kernel (every blocked call fails as the
// table says, and fails otherwise without it), its architecture check, and
// the --cap-add, --cap-drop and --security-opt rules.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { capabilitiesFrom, capabilitiesIn, capabilityMask, CAPABILITIES, type Capability } from '../shared/capabilities.ts'
import { securityOptions } from '../shared/cli.ts'
import { UsageError } from '../shared/errors.ts'
import { ARCHITECTURES, seccompFilter, SYSCALL_NUMBERS } from '../shared/seccomp.ts'
import { BLOCKED_CALLS, DEFAULT_CAPABILITIES } from '../steps/10-security/policy.ts'
import { rootOnly } from './helpers.ts'

const fixture = fileURLToPath(new URL('../scripts/lib/seccomp-calls.ts', import.meta.url))
const calls = (mode: string) => {
  const run = spawnSync(process.execPath, ['--import=tsx', fixture, mode], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  return { ...run, seen: run.status === 0 ? JSON.parse(run.stdout) as Record<string, string> : {} }
}
const arch = process.arch as keyof typeof ARCHITECTURES
const here = BLOCKED_CALLS.filter(({ call }) => SYSCALL_NUMBERS[call][arch] !== undefined)

t.test('with the filter, every call of the table fails with the table\'s errno', async (t) => {
  const { seen, stderr, status } = calls('filtered')
  t.equal(status, 0, `the fixture ran (stderr: ${stderr.trim().slice(-300)})`)
  for (const { call, errno } of here) t.equal(seen[call], errno, `${call}: ${errno}`)
  t.equal(seen['clone without CLONE_NEW*'], 'EINVAL', 'clone without namespace flags goes past the filter (the kernel itself says EINVAL to CLONE_THREAD alone)')
})

t.test('without it, as root, none of these calls says what the filter says: the errnos above are the filter\'s', rootOnly(), async (t) => {
  const { seen, stderr, status } = calls('unfiltered')
  t.equal(status, 0, `the fixture ran (stderr: ${stderr.trim().slice(-300)})`)
  for (const { call, errno } of here) t.not(seen[call], errno, `${call} unfiltered: ${seen[call]}`)
})

t.test('an x32 call (x86_64\'s other ABI, the same arch value) kills the process', { skip: arch === 'x64' ? false : 'x32 exists on x86_64 only' }, async (t) => {
  const { signal, stdout } = calls('x32')
  t.equal(signal, 'SIGSYS', `killed by SIGSYS, as SECCOMP_RET_KILL_PROCESS does (printed: ${stdout.trim() || 'nothing'})`)
})

t.test('the filter assembles for both architectures, each call with its own number', async (t) => {
  for (const name of Object.keys(ARCHITECTURES) as (keyof typeof ARCHITECTURES)[]) {
    const filter = seccompFilter(BLOCKED_CALLS, name)
    const ks = Array.from({ length: filter.length / 8 }, (_, i) => filter.readUInt32LE(i * 8 + 4))
    t.ok(ks.includes(ARCHITECTURES[name].audit), `${name}: the program checks AUDIT_ARCH ${ARCHITECTURES[name].audit.toString(16)}`)
    const missing = BLOCKED_CALLS.filter(({ call }) => SYSCALL_NUMBERS[call][name] !== undefined && !ks.includes(SYSCALL_NUMBERS[call][name]!))
    t.same(missing.map(({ call }) => call), [], `${name}: every call it has is in the program (${filter.length / 8} instructions)`)
    t.ok(filter.length / 8 < 256, `${name}: short enough for one-byte jumps`)
  }
})

t.test('capabilities: Docker\'s 14 by default, --cap-add and --cap-drop as in Docker', async (t) => {
  const docker = Object.keys(DEFAULT_CAPABILITIES) as Capability[]
  t.equal(docker.length, 14, 'Docker keeps 14')
  t.equal(capabilityMask(docker).toString(16), 'a80425fb', 'their mask is Docker\'s CapEff: 00000000a80425fb')
  t.same(capabilitiesIn(0xa80425fbn).sort(), [...docker].sort(), 'and reads back as the same names')
  t.same(capabilitiesFrom(docker, ['net_admin']).filter((cap) => !docker.includes(cap)), ['NET_ADMIN'], '--cap-add net_admin adds one, any case')
  t.notOk(capabilitiesFrom(docker, [], ['CAP_NET_RAW']).includes('NET_RAW'), '--cap-drop CAP_NET_RAW drops it, with the prefix')
  t.same(capabilitiesFrom(docker, ['NET_RAW'], ['ALL']), ['NET_RAW'], '--cap-drop ALL --cap-add NET_RAW keeps only NET_RAW')
  t.same(capabilitiesFrom(docker, ['ALL'], ['SYS_ADMIN']).length, CAPABILITIES.length - 1, '--cap-add ALL --cap-drop SYS_ADMIN: all but one')
  t.notOk(capabilitiesFrom(docker, ['SYS_TIME'], ['SYS_TIME']).includes('SYS_TIME'), 'added and dropped: dropped')
  t.throws(() => capabilitiesFrom(docker, ['BOGUS']), UsageError, 'an unknown name is a usage error')
})

t.test('--security-opt', async (t) => {
  t.same(securityOptions(), { seccomp: true, noNewPrivileges: true }, 'by default: the filter and no_new_privs')
  t.same(securityOptions(['seccomp=unconfined']), { seccomp: false, noNewPrivileges: true }, 'seccomp=unconfined')
  t.same(securityOptions(['no-new-privileges=false']), { seccomp: true, noNewPrivileges: false }, 'no-new-privileges=false')
  t.same(securityOptions(['no-new-privileges:true']), { seccomp: true, noNewPrivileges: true }, 'Docker\'s older colon form')
  t.throws(() => securityOptions(['seccomp=profile.json']), UsageError, 'a profile file is not supported: one line')
  t.throws(() => securityOptions(['apparmor=unconfined']), UsageError, 'nor AppArmor')
})
