// Verify step 10: container root keeps Docker's 14 capabilities and no
// more, runs with no_new_privs and a seccomp filter, and finds the host's
// kernel files of /proc masked or read-only. Every call of the filter's
// table fails as the table says; an ordinary workload (a shell, ps, files,
// ping between two containers) still works; each of Docker's switches
// turns its part off. As at 09: root inside is 100000 outside, the same
// step runs rootless, and nothing is left behind.
//
// Usage: npx tsx steps/10-security/verify.ts

import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { $ } from 'zx'
import { capabilitiesIn, capabilityMask, type Capability } from '../../shared/capabilities.ts'
import { requireRoot } from '../../shared/cli.ts'
import { SUBNET } from '../../shared/net.ts'
import { repoDir } from '../../shared/settings.ts'
import { usernsForbidden } from '../../shared/userns.ts'
import { findLeftovers } from '../../scripts/lib/clean.ts'
import { seccompProbes } from '../../scripts/lib/seccomp-calls.ts'
import {
  checkDeathSignal, checkExitCodes, checkSignalEnds, Checks, killSleeper, runSleeper, runStep, shown, stepCommand, tsx,
} from '../../scripts/lib/verify.ts'
import { waitFor } from '../../scripts/lib/wait.ts'
import { BLOCKED_CALLS, DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS } from './policy.ts'

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

// The filter the step builds, on the host's kernel, in a process of its own:
// every row of the table, with and without it (as root, the kernel's own
// answer to the bad arguments is never the filter's).
const probeRun = async (mode: string) => {
  const ran = await $({ cwd: repoDir, nothrow: true, quiet: true })`${tsx} scripts/lib/seccomp-calls.ts ${mode}`
  return { ran, seen: (ran.exitCode === 0 ? JSON.parse(ran.stdout) : {}) as Record<string, string> }
}
const [withFilter, without] = [await probeRun('filtered'), await probeRun('unfiltered')]
const probes = seccompProbes()
const wrong = probes.filter(({ label, expect }) => (expect === 'through' ? withFilter.seen[label] !== without.seen[label] : withFilter.seen[label] !== expect || without.seen[label] === expect))
  .map(({ label, expect }) => `${label}: ${withFilter.seen[label] ?? 'not run'} with the filter, ${without.seen[label] ?? 'not run'} without, expected ${expect === 'through' ? 'the same' : expect}`)
c.ok(`each of the ${probes.length} probes of policy.ts's ${BLOCKED_CALLS.length} rows fails as the table says, and only with the filter`, withFilter.ran.exitCode === 0 && without.ran.exitCode === 0 && wrong.length === 0, {
  ran: 'sudo env "PATH=$PATH" npx tsx scripts/lib/seccomp-calls.ts filtered; … unfiltered  # the step\'s filter, then each call with bad arguments',
  expected: 'EPERM (clone3: ENOSYS) with it; the kernel\'s own EINVAL, EFAULT… without; clone without CLONE_NEW*, socket(AF_INET): the same both ways',
  got: withFilter.ran.exitCode === 0 && without.ran.exitCode === 0 ? wrong.join('; ') || 'all as the table says' : `exit ${withFilter.ran.exitCode}/${without.ran.exitCode}: ${(withFilter.ran.stderr + without.ran.stderr).trim().slice(-300)}`,
})

// Inside, the calls the talk's escapes start with.
const escapes = ['sh', '-c', 'unshare -U true; echo unshare=$?; mount -t tmpfs t /mnt; echo mount=$?']
const escaped = await runStep(step, escapes)
c.ok('inside, unshare and mount are refused: "Operation not permitted"', /unshare=1/.test(escaped.stdout) && /mount=[1-9]/.test(escaped.stdout) && /not permitted|permission denied/i.test(escaped.stderr), {
  ran: shown(step, escapes), expected: 'unshare=1, mount=1, with EPERM', got: `${escaped.stdout.trim()} / ${escaped.stderr.trim()}`,
})

// Masked and read-only parts of /proc and /sys: a mount on each that this kernel has.
const mounts = ['sh', '-c', 'cat /proc/self/mountinfo; v=$(cat /proc/sys/kernel/printk_ratelimit); echo $v > /proc/sys/kernel/printk_ratelimit']
const masked = await runStep(step, mounts)
const mountedAt = (path: string) => masked.stdout.split('\n').find((line) => line.split(' ')[4] === path)
const present = (paths: string[]) => paths.filter((path) => existsSync(path)) // on the host: this kernel's
const unmasked = present(MASKED_PATHS).filter((path) => !mountedAt(path))
c.ok(`the masked paths this kernel has are covered: ${present(MASKED_PATHS).join(' ')}`, present(MASKED_PATHS).length > 0 && unmasked.length === 0, {
  ran: `${shown(step, ['cat', '/proc/self/mountinfo'])}  # a mount at each`, expected: 'a mount at each (/dev/null or a read-only tmpfs)', got: unmasked.length ? `none at ${unmasked.join(' ')}` : 'all covered',
})
const writable = present(READONLY_PATHS).filter((path) => !/(^| )ro[, ]/.test(mountedAt(path)?.split(' ')[5] ?? ''))
c.ok(`the read-only paths this kernel has are read-only mounts: ${present(READONLY_PATHS).join(' ')}`, writable.length === 0 && /read-only/i.test(masked.stderr), {
  ran: `${shown(step, mounts)}  # the write puts back the value it read: harmless, were it to go through`,
  expected: 'ro on each, and the write to /proc/sys fails: Read-only file system', got: `${writable.length ? `writable: ${writable.join(' ')}` : 'all ro'}; ${masked.stderr.trim()}`,
})

// An ordinary workload: a shell, ps, files.
const work = ['sh', '-c', 'echo hi > /tmp/f && cat /tmp/f && chown 1000 /tmp/f && ps -o pid,comm']
const worked = await runStep(step, work)
c.ok('a shell, ps, writing and chowning a file still work', worked.exitCode === 0 && worked.stdout.startsWith('hi\n') && /^\s*\d+ ps\b/m.test(worked.stdout), {
  ran: shown(step, work), expected: 'hi, then a ps listing with ps in it, exit 0', got: `exit ${worked.exitCode}: ${worked.stdout.trim()} ${worked.stderr.trim()}`,
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
const none = status((await runStep(step, ['--cap-drop', 'ALL', ...statusLines])).stdout)
c.equal('--cap-drop ALL: no capability left, in any set', [none.CapBnd, none.CapPrm, none.CapEff], ['0'.repeat(16), '0'.repeat(16), '0'.repeat(16)],
  shown(step, ['--cap-drop', 'ALL', ...statusLines]))
const admin = ['--cap-add', 'SYS_ADMIN', 'sh', '-c', 'mount -t tmpfs t /mnt && echo mounted']
const mounted = await runStep(step, admin)
c.ok('--cap-add SYS_ADMIN also lets mount past the filter, as in Docker', mounted.stdout.includes('mounted'), {
  ran: shown(step, admin), expected: 'mounted', got: `${mounted.stdout.trim()} ${mounted.stderr.trim()}`,
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
    `setpriv --reuid=${user} --regid=${user} --clear-groups ${shown(step, statusLines, 'user')}  # stderr: ${ran.stderr.trim().split('\n').at(-1)}`)
  rmSync(home, { recursive: true, force: true })
}

c.finish()
