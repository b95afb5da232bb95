// Verify step 09: the container runs in a user namespace of its own. As
// root, container root is host uid 100000: the host sees the map and the
// uid, files it makes are 100000's, it cannot make device nodes, and the
// host's supplementary groups are gone. Run by a user without sudo, the same
// step maps that user to root inside and still has its own hostname, PID 1
// and /proc, a root of its own and lo. Every run leaves nothing behind.
//
// Usage: npx tsx steps/09-userns/verify.ts

import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { $ } from 'zx'
import { requireRoot } from '../../shared/cli.ts'
import { containersDir, repoDir } from '../../shared/settings.ts'
import { findLeftovers } from '../../scripts/lib/clean.ts'
import { ROOT_MAP, usernsForbidden } from '../../shared/userns.ts'
import {
  checkDeathSignal, checkExitCodes, checkSignalEnds, Checks, killSleeper, runSleeper, runStep, shown, stepCommand, tsx,
} from '../../scripts/lib/verify.ts'

const step = '09-userns'
requireRoot() // the root half runs as root; the rootless half drops to a user itself
const c = new Checks(`Step ${step}: user namespace, as root and rootless`)
const hostUid = (pid: number) => Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1])
const mapLine = (pid: number) => readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/).join(' ')

// From the host: the map of the container's process, and who it is.
const s = await runSleeper(step)
const during = shown(step, ['sleep', s.marker])
const expectedMap = `0 ${ROOT_MAP.outside} ${ROOT_MAP.count}`
c.equal('from the host, the container\'s uid_map maps root inside to 100000 outside', s.sleep ? mapLine(s.sleep) : 'no sleep found', expectedMap, `cat /proc/<sleep>/uid_map  # during ${during}`)
c.equal('…and its process is host uid 100000, not 0', s.sleep ? hostUid(s.sleep) : 'no sleep found', ROOT_MAP.outside, `grep Uid /proc/<sleep>/status  # during ${during}`)
await checkSignalEnds(c, step, s, 'SIGTERM', during)
await killSleeper(s)

// From the inside: root, without the host's groups, without mknod.
const look = ['sh', '-c', 'id -u; grep Groups /proc/self/status; hostname']
const looked = await $({ cwd: repoDir, nothrow: true, quiet: true })`setpriv --groups 4,27 ${stepCommand(step)} run ${look}`
const [uid, groups] = looked.stdout.trim().split('\n')
const lookShown = `sudo env "PATH=$PATH" setpriv --groups 4,27 ${shown(step, look, 'user')}`
c.equal('inside, `id -u` is 0', uid, '0', lookShown)
c.equal('…with none of the host\'s supplementary groups (the step ran with groups 4 and 27)', groups?.replace(/\s+/g, ' ').trim(), 'Groups:', lookShown)
const mknod = ['mknod', '/tmp/null', 'c', '1', '3']
const made = await runStep(step, mknod)
c.ok('mknod of a device is refused inside', made.exitCode !== 0 && /not permitted/i.test(made.stderr), {
  ran: shown(step, mknod), expected: 'mknod: /tmp/null: Operation not permitted', got: `exit ${made.exitCode}: ${made.stderr.trim()}`,
})
const dev = ['sh', '-c', 'echo x > /dev/null && head -c 4 /dev/zero | wc -c']
c.equal('…but /dev/null and /dev/zero work: the host\'s, bind-mounted', (await runStep(step, dev)).stdout.trim(), '4', shown(step, dev))

// Container root writes its root filesystem, and the host sees the mapped owner.
const write = ['sh', '-c', 'echo hi > /etc/made-inside && hostname']
const wrote = await runStep(step, ['--keep', ...write])
const kept = join(containersDir, wrote.stdout.trim())
const file = join(kept, 'upper/etc/made-inside')
c.equal('container root writes /etc, and on the host the file is 100000\'s', existsSync(file) ? statSync(file).uid : `no ${file} (${wrote.stderr.trim()})`, ROOT_MAP.outside, `${shown(step, ['--keep', ...write])}; stat -c %u <container dir>/upper/etc/made-inside`)
if (wrote.stdout.trim()) rmSync(kept, { recursive: true, force: true })

await checkExitCodes(c, step)
await checkDeathSignal(c, step)
// A SIGKILLed step cannot clean up (its cgroup, directory, lease, bridge
// stay, as at step 08): `npm run clean` removes them; every other run did itself.
const clean = await $({ cwd: repoDir, nothrow: true, quiet: true })`${tsx} scripts/clean.ts`
const left = findLeftovers().filter((item) => !item.inUse)
c.equal('after `npm run clean`, nothing of these runs is left: no cgroup, directory, lease, interface or mount', left.map((item) => item.name), [],
  `npm run clean  # said: ${clean.stdout.trim().split('\n').at(-1)}`)

// Rootless: the same step, run by a user without sudo: the one who ran sudo, or nobody.
const user = Number(process.env.SUDO_UID || 65534)
const forbidden = usernsForbidden()
if (forbidden) {
  c.ok('rootless: this host lets users make user namespaces', false, { expected: 'allowed', got: forbidden })
} else {
  const home = mkdtempSync(join(tmpdir(), 'cfs-rootless-'))
  chownSync(home, user, user)
  const env = { ...process.env, HOME: home, CFS_HOME: join(home, 'state'), XDG_CACHE_HOME: join(home, 'cache') }
  const asUser = $({ cwd: repoDir, nothrow: true, quiet: true, env })
  const inside = ['sh', '-c', 'cat /proc/self/uid_map; id -u; hostname; echo $$; ip -o link | cut -d: -f2; echo hi > /root/made-inside']
  const ran = await asUser`setpriv --reuid=${user} --regid=${user} --clear-groups ${stepCommand(step)} run --keep ${inside}`
  const lines = ran.stdout.trim().split('\n').map((line) => line.trim().replace(/\s+/g, ' '))
  const ranShown = `setpriv --reuid=${user} --regid=${user} --clear-groups ${shown(step, ['--keep', ...inside], 'user')}`
  c.equal(`rootless (uid ${user}, no sudo): uid_map maps root inside to that uid, one id`, lines[0], `0 ${user} 1`, ranShown)
  c.equal('…`id -u` inside is 0', lines[1], '0', ranShown)
  c.ok('…its own hostname (UTS) and PID 1 (PID namespace, /proc)', /^[0-9a-f]{12}$/.test(lines[2] ?? '') && lines[3] === '1', {
    ran: ranShown, expected: '<12 hex digits>, 1', got: `${lines[2]}, ${lines[3]} (stderr: ${ran.stderr.trim()})`,
  })
  c.equal('…lo only: a network namespace, no veth', lines.slice(4), ['lo'], ranShown)
  const upper = join(home, 'state/containers', lines[2] ?? 'none', 'upper/root/made-inside')
  c.equal('…a file made inside is the user\'s on the host', existsSync(upper) ? statSync(upper).uid : `no ${upper}`, user, `stat -c %u ${upper}`)
  const gone = await asUser`setpriv --reuid=${user} --regid=${user} --clear-groups ${stepCommand(step)} run true`
  const left = existsSync(join(home, 'state/containers')) ? readdirSync(join(home, 'state/containers')).filter((name) => name !== lines[2]) : []
  c.ok('…and a rootless run leaves no container directory behind', gone.exitCode === 0 && left.length === 0, {
    ran: `${shown(step, ['true'], 'user')} as uid ${user}; ls $CFS_HOME/containers`, expected: 'exit 0, nothing new', got: `exit ${gone.exitCode}, ${left.join(' ') || 'nothing'} (stderr: ${gone.stderr.trim()})`,
  })
  rmSync(home, { recursive: true, force: true })
}

c.finish()
