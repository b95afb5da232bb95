// Verify step 10: container root keeps Docker's 14 capabilities and no
// more, runs with no_new_privs and a seccomp filter, and finds the host's
// kernel files of /proc masked or read-only. Every call of the filter's
// table fails as the table says; an ordinary workload (a shell, ps, files,
// ping between two containers) still works; each of Docker's switches
// turns its part off. As at 09: root inside is 100000 outside, the same
// step runs rootless, and nothing is left behind.
//
// Usage: npx tsx steps/10-security/verify.ts

import { chownSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { $ } from 'zx'
import { capabilitiesIn, capabilityMask, type Capability } from '../../shared/capabilities.ts'
import { requireRoot } from '../../shared/cli.ts'
import { SUBNET } from '../../shared/net.ts'
import { SYSCALL_NUMBERS, type Arch } from '../../shared/seccomp.ts'
import { repoDir } from '../../shared/settings.ts'
import { usernsForbidden } from '../../shared/userns.ts'
import { findLeftovers } from '../../scripts/lib/clean.ts'
import {
  checkDeathSignal, checkExitCodes, checkSignalEnds, Checks, killSleeper, runSleeper, runStep, shown, stepCommand, tsx,
} from '../../scripts/lib/verify.ts'
import { waitFor } from '../../scripts/lib/wait.ts'
import { BLOCKED_CALLS, DEFAULT_CAPABILITIES } from './policy.ts'

const step = '10-security'
requireRoot() // the root half runs as root; the rootless half drops to a user itself
const c = new Checks(`Step ${step}: capabilities, no_new_privs and seccomp`)
const docker = Object.keys(DEFAULT_CAPABILITIES) as Capability[]
const dockerMask = capabilityMask(docker).toString(16).padStart(16, '0')

// /proc/self/status, as the container's command sees itself.
const statusLines = ['grep', '-E', '^(Cap|NoNewPrivs|Seccomp)', '/proc/self/status']
const status = (text: string) => Object.fromEntries(text.trim().split('\n').map((line) => line.split(':').map((part) => part.trim())))
const seen = status((await runStep(step, statusLines)).stdout)
c.equal('inside, Seccomp is 2 (a filter) and Seccomp_filters 1', `${seen.Seccomp} ${seen.Seccomp_filters}`, '2 1', shown(step, statusLines))
c.equal('…NoNewPrivs is 1', seen.NoNewPrivs, '1', shown(step, statusLines))
c.equal(`…CapBnd, CapPrm and CapEff are Docker's 14 (${dockerMask})`, [seen.CapBnd, seen.CapPrm, seen.CapEff], [dockerMask, dockerMask, dockerMask],
  `${shown(step, statusLines)}  # capsh --decode=${dockerMask}: ${docker.join(' ')}`)
c.equal('…and CapInh and CapAmb are empty: nothing passes through exec but the bounding set', [seen.CapInh, seen.CapAmb], ['0'.repeat(16), '0'.repeat(16)], shown(step, statusLines))

// The filter the step builds, on the host's kernel, in a process of its own: every row of the table.
const table = await $({ cwd: repoDir, nothrow: true, quiet: true })`${tsx} scripts/lib/seccomp-calls.ts filtered`
const got: Record<string, string> = table.exitCode === 0 ? JSON.parse(table.stdout) : {}
const rows = BLOCKED_CALLS.filter(({ call }) => SYSCALL_NUMBERS[call][process.arch as Arch] !== undefined)
const wrong = rows.filter(({ call, errno }) => got[call] !== errno).map(({ call, errno }) => `${call}: ${got[call] ?? 'not run'}, not ${errno}`)
c.ok(`each of the ${rows.length} blocked calls of policy.ts fails as the table says (EPERM; clone3 ENOSYS)`, table.exitCode === 0 && wrong.length === 0, {
  ran: 'npx tsx scripts/lib/seccomp-calls.ts filtered  # installs the step\'s filter, then makes each call with bad arguments',
  expected: 'every errno as in BLOCKED_CALLS',
  got: table.exitCode === 0 ? wrong.join('; ') || 'all as the table says' : `exit ${table.exitCode}: ${table.stderr.trim().slice(-300)}`,
})
c.equal('…while clone without namespace flags goes past it (the kernel\'s own EINVAL for CLONE_THREAD alone)', got['clone without CLONE_NEW*'], 'EINVAL',
  'npx tsx scripts/lib/seccomp-calls.ts filtered')

// Inside, the calls the talk's escapes start with.
const escapes = ['sh', '-c', 'unshare -U true; echo unshare=$?; mount -t tmpfs t /mnt; echo mount=$?']
const escaped = await runStep(step, escapes)
c.ok('inside, unshare and mount are refused: "Operation not permitted"', /unshare=1/.test(escaped.stdout) && /mount=[1-9]/.test(escaped.stdout) && /not permitted|permission denied/i.test(escaped.stderr), {
  ran: shown(step, escapes), expected: 'unshare=1, mount=1, with EPERM', got: `${escaped.stdout.trim()} / ${escaped.stderr.trim()}`,
})

// Masked and read-only parts of /proc and /sys.
// The write puts back the value it read: harmless, were it to go through.
const proc = ['sh', '-c', 'wc -c < /proc/keys; ls /sys/firmware | wc -l; grep -c " /proc/sys " /proc/self/mountinfo; v=$(cat /proc/sys/kernel/printk_ratelimit); echo $v > /proc/sys/kernel/printk_ratelimit']
const masked = await runStep(step, proc)
const [keys, firmware, sysMounts] = masked.stdout.trim().split('\n').map((line) => line.trim())
c.equal('/proc/keys reads empty (/dev/null over it), /sys/firmware is an empty directory', [keys, firmware], ['0', '0'], shown(step, proc))
c.ok('/proc/sys is read-only: a write to a kernel setting fails', /read-only/i.test(masked.stderr) && sysMounts === '1', {
  ran: shown(step, proc), expected: 'Read-only file system, and a mount at /proc/sys', got: `${masked.stderr.trim()}; mounts at /proc/sys: ${sysMounts}`,
})

// An ordinary workload: a shell, ps, files.
const work = ['sh', '-c', 'echo hi > /tmp/f && cat /tmp/f && chown 1000 /tmp/f && ps -o pid,comm | wc -l']
const worked = await runStep(step, work)
c.ok('a shell, ps, writing and chowning a file still work', worked.exitCode === 0 && worked.stdout.startsWith('hi\n'), {
  ran: shown(step, work), expected: 'hi, and a ps listing, exit 0', got: `exit ${worked.exitCode}: ${worked.stdout.trim()} ${worked.stderr.trim()}`,
})

// Two containers: B pings A (NET_RAW is one of the 14), within the project's subnet only.
const a = runStep(step, ['sh', '-c', 'ip -o -4 addr show dev eth0; read end'])
let aOut = ''
a.stdout.on('data', (chunk: Buffer) => (aOut += chunk))
const address = await waitFor(() => /inet (\d+\.\d+\.\d+\.\d+)\//.exec(aOut)?.[1], 20_000).catch(() => undefined)
const pingB = address && SUBNET.contains(address) ? await runStep(step, ['ping', '-c', '1', '-W', '3', address]) : undefined
a.stdin.end()
await a
c.ok('ping from one container to another works (NET_RAW is kept)', pingB?.exitCode === 0, {
  ran: shown(step, ['ping', '-c', '1', '-W', '3', address ?? '<A>']), expected: 'exit 0, one reply', got: pingB ? `exit ${pingB.exitCode}: ${pingB.stderr.trim()}` : `A gave no address: ${aOut.trim()}`,
})
const noRaw = await runStep(step, ['--cap-drop', 'NET_RAW', 'ping', '-c', '1', '-W', '1', SUBNET.gateway])
c.ok('…and with --cap-drop NET_RAW it does not', noRaw.exitCode !== 0 && /not permitted|permission denied/i.test(noRaw.stderr), {
  ran: shown(step, ['--cap-drop', 'NET_RAW', 'ping', '-c', '1', '-W', '1', SUBNET.gateway]), expected: 'ping: permission denied / Operation not permitted', got: `exit ${noRaw.exitCode}: ${noRaw.stderr.trim()}`,
})

// Docker's switches, one part each.
const addAdmin = status((await runStep(step, ['--cap-add', 'NET_ADMIN', ...statusLines])).stdout)
c.equal('--cap-add NET_ADMIN adds one capability to the 14', capabilitiesIn(BigInt(`0x${addAdmin.CapEff ?? 0}`)).filter((cap) => !docker.includes(cap)), ['NET_ADMIN'],
  shown(step, ['--cap-add', 'NET_ADMIN', ...statusLines]))
const unconfined = ['--security-opt', 'seccomp=unconfined', 'sh', '-c', 'grep Seccomp: /proc/self/status; unshare -U true && echo unshared']
const free = await runStep(step, unconfined)
c.ok('--security-opt seccomp=unconfined: no filter, and unshare works again', /Seccomp:\s+0/.test(free.stdout) && free.stdout.includes('unshared'), {
  ran: shown(step, unconfined), expected: 'Seccomp: 0, unshared', got: `${free.stdout.trim()} ${free.stderr.trim()}`,
})
const privs = status((await runStep(step, ['--security-opt', 'no-new-privileges=false', ...statusLines])).stdout)
c.equal('--security-opt no-new-privileges=false: NoNewPrivs 0, and the filter is still there (installed before the capabilities went)',
  `${privs.NoNewPrivs} ${privs.Seccomp}`, '0 2', shown(step, ['--security-opt', 'no-new-privileges=false', ...statusLines]))
const bad = await runStep(step, ['--cap-add', 'BOGUS', 'true'])
c.ok('an unknown capability: one line, exit 125', bad.exitCode === 125 && bad.stderr.trim().split('\n').filter((line) => !/^npm warn/.test(line)).length === 1, {
  ran: shown(step, ['--cap-add', 'BOGUS', 'true']), expected: 'exit 125, one line', got: `exit ${bad.exitCode}: ${bad.stderr.trim()}`,
})

// As at 09: the host sees uid 100000, the step ends as it should.
const s = await runSleeper(step)
await checkSignalEnds(c, step, s, 'SIGTERM')
await killSleeper(s)
await checkExitCodes(c, step)
await checkDeathSignal(c, step)
const clean = await $({ cwd: repoDir, nothrow: true, quiet: true })`${tsx} scripts/clean.ts`
const left = findLeftovers().filter((item) => !item.inUse)
c.equal('after `npm run clean`, nothing of these runs is left: no cgroup, directory, lease, interface or mount', left.map((item) => item.name), [],
  `npm run clean  # said: ${clean.stdout.trim().split('\n').at(-1)}`)

// Rootless: the same layer, for a user without sudo.
const user = Number(process.env.SUDO_UID || 65534)
const forbidden = usernsForbidden()
if (forbidden) {
  c.ok('rootless: this host lets users make user namespaces', false, { expected: 'allowed', got: forbidden })
} else {
  const home = mkdtempSync(join(tmpdir(), 'cfs-rootless-'))
  chownSync(home, user, user)
  const env = { ...process.env, HOME: home, CFS_HOME: join(home, 'state'), XDG_CACHE_HOME: join(home, 'cache') }
  const ran = await $({ cwd: repoDir, nothrow: true, quiet: true, env })`setpriv --reuid=${user} --regid=${user} --clear-groups ${stepCommand(step)} run ${statusLines}`
  const rootless = status(ran.stdout)
  c.equal(`rootless (uid ${user}, no sudo): the same capabilities, no_new_privs and filter`, [rootless.CapEff, rootless.NoNewPrivs, rootless.Seccomp], [dockerMask, '1', '2'],
    `setpriv --reuid=${user} --regid=${user} --clear-groups ${shown(step, statusLines)}  # stderr: ${ran.stderr.trim().split('\n').at(-1)}`)
  rmSync(home, { recursive: true, force: true })
}

c.finish()
