// npm run exec (scripts/exec.ts) into real containers started in the
// background: the command lands in every namespace of the container
// (proven by the namespace inodes, read from the host's /proc and from
// inside), in its cgroup while Node's helper stays out of it, in its root
// and working directory, with its environment, and at step 10 with its
// capabilities, no_new_privs and seccomp filter. It is never PID 1. Its
// exit code is the command's, 126/127 when it cannot run; a container
// that has ended, or a bad option, gets one line and 125.

import t from 'tap'
import { chownSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { leftoversOf } from '../scripts/lib/clean.ts'
import { findProcesses } from '../scripts/lib/procfs.ts'
import { waitFor } from '../scripts/lib/wait.ts'
import { cgroupProcs, findHierarchies } from '../shared/cgroups.ts'
import { usernsForbidden } from '../shared/userns.ts'
import { asUser, killMarked, marker, markers, start, stopGroup, type Started } from './background.ts'
import { rootOnly, runTool } from './helpers.ts'

const NAMESPACES = ['user', 'mnt', 'uts', 'ipc', 'net', 'pid', 'cgroup']
const ids: string[] = []

t.teardown(killMarked)

// A shell line that prints, for each namespace, `name inode-link`, then the cgroup lines and the process's own facts.
const facts = `for n in ${NAMESPACES.join(' ')}; do echo "ns $n $(readlink /proc/self/ns/$n)"; done; `
  + 'sed "s/^/cgroup /" /proc/self/cgroup; echo "pid $$"; echo "ppid $PPID"; echo "cwd $(pwd)"; echo "host $(hostname)"; '
  + 'grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status | tr -d "\\t" | sed "s/^/status /"; echo "uid $(id -u)"'

// Parse what `facts` printed.
function parseFacts(stdout: string) {
  const lines = stdout.split('\n')
  const pick = (key: string) => lines.filter((l) => l.startsWith(`${key} `)).map((l) => l.slice(key.length + 1))
  return {
    ns: Object.fromEntries(pick('ns').map((l) => l.split(' ') as [string, string])),
    cgroup: pick('cgroup'),
    pid: Number(pick('pid')[0]),
    ppid: Number(pick('ppid')[0]),
    cwd: pick('cwd')[0],
    host: pick('host')[0],
    status: Object.fromEntries(pick('status').map((l) => l.split(':') as [string, string])),
    uid: Number(pick('uid')[0]),
  }
}

// The same, read from the host for the container's PID 1.
function hostFacts(pid: number) {
  return {
    ns: Object.fromEntries(NAMESPACES.map((n) => [n, readlinkSync(`/proc/${pid}/ns/${n}`)])),
    cgroup: readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n'),
  }
}

// The container's id, from its state (npm run ps).
async function idOf(c: Started, env: NodeJS.ProcessEnv = {}, user?: number, name?: string): Promise<string> {
  const result = user === undefined ? await runTool('scripts/ps.ts', ['--format', 'json'], env) : await asUser(user, ['scripts/ps.ts', '--format', 'json'], env)
  const row = (JSON.parse(result.stdout) as { id: string; pid: number; name: string | null }[]).find((r) => (name ? r.name === name : r.pid === c.sleep))
  if (!row) throw new Error(`ps does not list the container of sleep ${c.sleep}: ${result.stdout}${result.stderr}`)
  ids.push(row.id)
  return row.id
}

t.test('step 08: the command is in every namespace and the cgroup of the container, not PID 1, with its environment', rootOnly(), async (t) => {
  const mark = marker()
  const name = `exec-test-${process.pid}`
  const c = await start('08-net', ['--name', name, '-w', '/tmp', 'sh', '-c', `sleep ${mark}; :`], mark)
  const id = await idOf(c, {}, undefined, name)
  const pid1 = findProcesses((argv) => argv[0] === 'sh' && argv.includes(`sleep ${mark}; :`))[0]
  const inside = await runTool('scripts/exec.ts', ['-e', 'GREETING=hi', name, 'sh', '-c', `${facts}; echo "env $GREETING"; env | sort | sed "s/^/var /"`], { CFS_SECRET_TEST: 'host only' })
  t.equal(inside.exitCode, 0, 'exec exits 0', { stderr: inside.stderr })
  const got = parseFacts(inside.stdout)
  const host = hostFacts(pid1)
  for (const ns of NAMESPACES) t.equal(got.ns[ns], host.ns[ns], `its ${ns} namespace is PID 1's`)
  t.not(host.ns.pid, readlinkSync('/proc/self/ns/pid'), '(and the PID namespace is not the host\'s)')
  t.same(got.cgroup, host.cgroup, 'its cgroups are PID 1\'s', { inside: got.cgroup })
  t.ok(got.cgroup.some((l) => l.endsWith(`/cfs-${id}`)), '…the container\'s own, cfs-<id>')
  t.ok(got.pid > 1, `it is not PID 1 (it is ${got.pid})`)
  t.equal(got.ppid, 0, 'its parent, the helper, is outside the container\'s PID namespace (PPID 0), as with docker exec')
  t.equal(got.host, id, 'the hostname is the container\'s')
  t.equal(got.cwd, '/tmp', 'its working directory is the container\'s own, its -w')
  t.match(inside.stdout, /^env hi$/m, '-e sets a variable')
  t.match(inside.stdout, new RegExp(`^var HOSTNAME=${id}$`, 'm'), 'HOSTNAME is the container\'s')
  t.notMatch(inside.stdout, /CFS_SECRET_TEST/, 'nothing of the host\'s environment gets in')
  const where = await runTool('scripts/exec.ts', ['-w', '/etc', id.slice(0, 6), 'pwd'])
  t.same([where.exitCode, where.stdout.trim()], [0, '/etc'], 'an id prefix finds it; -w sets the working directory')
  t.equal((await runTool('scripts/exec.ts', [name, 'sh', '-c', 'exit 5'])).exitCode, 5, 'the command\'s exit code is exec\'s')
  const missing = await runTool('scripts/exec.ts', [name, 'no-such-command'])
  t.same([missing.exitCode, missing.stderr.trim()], [127, 'cfs: no-such-command: command not found'], 'a command not in the image: one line, 127')
  const notExecutable = await runTool('scripts/exec.ts', [name, '/etc/passwd'])
  t.equal(notExecutable.exitCode, 126, 'a file that is not executable: 126')

  // While an exec'd command runs: it is in the cgroup, the helper (its parent on the host) is not.
  const mark2 = marker()
  const running = runTool('scripts/exec.ts', [name, 'sleep', mark2])
  const sleep2 = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === mark2)[0], 15_000)
  t.ok(sleep2, 'the exec\'d sleep runs')
  const helper = Number(readFileSync(`/proc/${sleep2}/stat`, 'utf8').split(') ')[1].split(' ')[1])
  const dirs = findHierarchies().map((h) => join(h.mountPoint, `cfs-${id}`)).filter((dir) => cgroupProcs(dir).length)
  t.ok(dirs.length > 0, 'the container has cgroups', { dirs })
  t.ok(dirs.every((dir) => cgroupProcs(dir).includes(sleep2!)), 'the exec\'d command is in each of them')
  t.ok(dirs.every((dir) => !cgroupProcs(dir).includes(helper)), `Node's helper (PID ${helper}) is in none`)
  process.kill(sleep2!, 'SIGTERM')
  t.equal((await running).exitCode, 143, 'killed by SIGTERM: 143')

  stopGroup(c.child, 'SIGTERM')
  await c.ended
  const after = await runTool('scripts/exec.ts', [id, 'true'])
  t.same([after.exitCode, after.stderr.trim()], [125, `cfs: no such container: \`${id}\` (see npm run ps)`], 'once it has ended: one line, 125')
})

t.test('step 04: the container\'s chroot and PID namespace, without a mount namespace of its own', rootOnly(), async (t) => {
  const mark = marker()
  const c = await start('04-pid-proc', ['sleep', mark], mark)
  const id = await idOf(c)
  const inside = await runTool('scripts/exec.ts', [id, 'sh', '-c', `${facts}; echo "one $(tr '\\0' ' ' < /proc/1/cmdline)"`])
  t.equal(inside.exitCode, 0, 'exec exits 0', { stderr: inside.stderr })
  const got = parseFacts(inside.stdout)
  t.equal(got.ns.pid, hostFacts(c.sleep).ns.pid, 'its PID namespace is the container\'s')
  t.equal(got.ns.mnt, readlinkSync('/proc/self/ns/mnt'), 'its mount namespace is the host\'s, as the container\'s is')
  t.ok(got.pid > 1, `it is not PID 1 (it is ${got.pid})`)
  t.match(inside.stdout, new RegExp(`^one sleep ${mark} $`, 'm'), 'its /proc, the container\'s, has the sleep as PID 1')
  stopGroup(c.child, 'SIGTERM')
  await c.ended
})

t.test('step 10: the container\'s capabilities, no_new_privs and seccomp filter', rootOnly(), async (t) => {
  const mark = marker()
  const c = await start('10-security', ['sleep', mark], mark)
  const id = await idOf(c)
  const inside = await runTool('scripts/exec.ts', [id, 'sh', '-c', facts])
  t.equal(inside.exitCode, 0, 'exec exits 0', { stderr: inside.stderr })
  const got = parseFacts(inside.stdout)
  t.equal(got.ns.user, hostFacts(c.sleep).ns.user, 'its user namespace is the container\'s')
  t.equal(got.uid, 0, 'as its root')
  const pid1 = readFileSync(`/proc/${c.sleep}/status`, 'utf8')
  t.equal(got.status.CapEff, /^CapEff:\s+(\w+)$/m.exec(pid1)?.[1], `its effective capabilities are PID 1's (${got.status.CapEff}: Docker's 14)`)
  t.equal(got.status.CapEff, '00000000a80425fb', '…Docker\'s 14')
  t.equal(got.status.NoNewPrivs, '1', 'no_new_privs is set')
  t.equal(got.status.Seccomp, '2', 'a seccomp filter is on (mode 2)')
  const refused = await runTool('scripts/exec.ts', [id, 'unshare', '-U', 'true'])
  t.not(refused.exitCode, 0, 'the filter refuses it a user namespace, as it does the container', { stderr: refused.stderr })
  stopGroup(c.child, 'SIGTERM')
  await c.ended
})

t.test('step 09 rootless: a user runs a command in their own container', rootOnly(), async (t) => {
  const forbidden = usernsForbidden()
  if (forbidden) {
    if (process.env.CI === 'true') t.fail(`rootless step 09 needs user namespaces: ${forbidden}`)
    else t.pass('rootless', { skip: forbidden })
    return
  }
  const user = 65534
  const home = mkdtempSync('/tmp/cfs-exec-rootless-')
  chownSync(home, user, user)
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const env = { HOME: home, CFS_HOME: join(home, 'state'), XDG_CACHE_HOME: join(home, 'cache') }
  const mark = marker()
  const c = await start('09-userns', ['sleep', mark], mark, { env, asUser: user })
  const id = await idOf(c, env, user)
  const inside = await asUser(user, ['scripts/exec.ts', id, 'sh', '-c', facts], env)
  t.equal(inside.exitCode, 0, 'exec exits 0', { stderr: inside.stderr })
  const got = parseFacts(inside.stdout)
  const host = hostFacts(c.sleep)
  for (const ns of ['user', 'mnt', 'uts', 'pid']) t.equal(got.ns[ns], host.ns[ns], `its ${ns} namespace is the container's`)
  t.equal(got.uid, 0, 'as its root: the user, mapped')
  const other = await asUser(65533, ['scripts/exec.ts', id, 'true'], { ...env, HOME: '/nonexistent', CFS_HOME: '/nonexistent' })
  t.equal(other.exitCode, 125, 'another user cannot find it: 125', { stderr: other.stderr })
  stopGroup(c.child, 'SIGTERM')
  await c.ended
})

t.test('bad options: one line, exit 125; --help', async (t) => {
  for (const args of [[], ['some-id'], ['--bogus', 'x', 'true'], ['-w', 'relative', 'x', 'true'], ['-e', '1BAD=x', 'x', 'true']]) {
    const result = await runTool('scripts/exec.ts', args)
    t.equal(result.exitCode, 125, `exec ${args.join(' ')}: 125`)
    t.equal(result.stderr.trim().split('\n').length, 1, '…with one line', { stderr: result.stderr })
  }
  const help = await runTool('scripts/exec.ts', ['--help'])
  t.equal(help.exitCode, 0, '--help exits 0')
  t.match(help.stdout, /^Usage: npm run exec/, '--help prints the usage')
})

t.test('nothing of these runs is left', rootOnly(), async (t) => {
  t.same(leftoversOf(ids, undefined, markers), [], 'no cgroup, directory, lease, interface, mount, state file or marked process')
})

