// npm run ps (scripts/ps.ts) against real containers, started in the
// background with a sleep whose argument marks them: it lists each with its
// step, --name, the host PID of its PID 1, cgroup and address, and stops
// listing it once it ends. A container whose step was killed with SIGKILL
// while its PID 1 lives on shows as "parent gone"; once PID 1 is gone too
// its state file is stale, hidden, and npm run clean's finder removes it.
// npm run stop ends a container as docker stop does. Bad options: one
// line, exit 125. Nothing is left behind.

import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { findLeftovers, leftoversOf } from '../scripts/lib/clean.ts'
import { nsPids } from '../scripts/lib/procfs.ts'
import { findStepProcess } from '../scripts/lib/verify.ts'
import { waitFor } from '../scripts/lib/wait.ts'
import { cgroupProcs, findHierarchies } from '../shared/cgroups.ts'
import { liveLeases } from '../shared/net.ts'
import { isRunning } from '../shared/procfs.ts'
import { repoDir } from '../shared/settings.ts'
import { runDir } from '../shared/state.ts'
import { usernsForbidden } from '../shared/userns.ts'
import { asUser, killMarked, marker, markers, start, stopGroup } from './background.ts'
import { rootOnly, runTool } from './helpers.ts'

/** A row of `npm run ps -- --format json`. */
interface Row {
  id: string
  name: string | null
  step: string
  command: string[]
  pid: number
  parentPid: number
  status: string
  user: string
  cgroup: string | null
  address: string | null
  stateFile: string
}

const ids: string[] = []

// npm run ps, as JSON, run as root or as `asUser`.
async function ps(args: string[] = [], options: { env?: NodeJS.ProcessEnv; asUser?: number } = {}): Promise<Row[]> {
  const result = options.asUser === undefined
    ? await runTool('scripts/ps.ts', ['--format', 'json', ...args], options.env)
    : await asUser(options.asUser, ['scripts/ps.ts', '--format', 'json', ...args], options.env)
  if (result.exitCode !== 0) throw new Error(`npm run ps exited ${result.exitCode}: ${result.stderr}`)
  return JSON.parse(result.stdout) as Row[]
}

// The container's IPv4 address on eth0, asked inside its network namespace.
function eth0Address(pid: number): string {
  const out = execFileSync('nsenter', [`--net=/proc/${pid}/ns/net`, 'ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'], { encoding: 'utf8' })
  return /inet (\d+\.\d+\.\d+\.\d+)\//.exec(out)?.[1] ?? `none in: ${out.trim()}`
}

// Whether some cgroup hierarchy has this cgroup, with `pid` in it.
function inCgroup(path: string, pid: number): boolean {
  return findHierarchies().some((h) => existsSync(join(h.mountPoint, path)) && cgroupProcs(join(h.mountPoint, path)).includes(pid))
}

// Whatever a failed check left running.
t.teardown(killMarked)

t.test('a running container of step 08: its step, name, PID 1, cgroup and address, then gone', rootOnly(), async (t) => {
  const mark = marker()
  const name = `ps-test-${process.pid}`
  const c = await start('08-net', ['--name', name, '-h', 'ps-box', '-w', '/tmp', '-v', `${repoDir}:/mnt:ro`, 'sleep', mark], mark)
  const row = (await ps()).find((r) => r.name === name)
  t.ok(row, `ps lists the container named ${name}`)
  if (!row) return stopGroup(c.child, 'SIGKILL')
  ids.push(row.id)
  t.equal(row.step, '08-net', 'its step')
  t.same(row.command, ['sleep', mark], 'its command')
  t.equal(row.status, 'running', 'its status')
  t.equal(row.pid, c.sleep, 'its PID is the host PID of the sleep…')
  t.equal(nsPids(c.sleep).at(-1), 1, '…which is PID 1 in its own PID namespace')
  t.equal(row.parentPid, findStepProcess('08-net', mark), 'its parent is the step\'s own process')
  t.equal(row.cgroup, `/cfs-${row.id}`, 'its cgroup is cfs-<id>, relative to the hierarchy')
  t.ok(row.cgroup && inCgroup(row.cgroup, c.sleep), 'and PID 1 is in that cgroup', { cgroup: row.cgroup })
  t.equal(row.address, eth0Address(c.sleep), 'its address is the one on eth0 in its network namespace')
  t.equal(row.address, liveLeases().find((l) => l.id === row.id)?.address, '…and the one its lease holds')
  t.notMatch(readFileSync(`/proc/${c.sleep}/environ`, 'utf8'), name, 'the name stays with the parent: the command\'s environment has none of it')
  t.equal(row.user, 'root', 'root ran it')
  const state = JSON.parse(readFileSync(row.stateFile, 'utf8'))
  t.same([state.hostname, state.workdir, state.volumes], ['ps-box', '/tmp', [{ source: resolve(repoDir), target: '/mnt', readonly: true }]],
    'its state file has the Container\'s hostname, workdir and volumes, for npm run exec')
  const asNobody = (await ps([], { asUser: 65534, env: { HOME: '/nonexistent' } })).find((r) => r.id === row.id)
  t.same(asNobody && [asNobody.pid, asNobody.cgroup, asNobody.address], [row.pid, row.cgroup, row.address], 'a user without sudo sees root\'s container too, the same')
  const table = await runTool('scripts/ps.ts')
  const line = table.stdout.split('\n').find((l) => l.startsWith(row.id))
  t.match(line, new RegExp(`^${row.id}\\s+${name}\\s+08-net\\s+${c.sleep}\\s+\\S+\\s+running\\s+${row.address}\\s+-\\s+/cfs-${row.id}\\s+sleep ${mark}$`), 'the table has it on one line', { table: table.stdout })
  t.match(table.stdout, /^CONTAINER ID\s+NAME\s+STEP\s+PID\s+UPTIME\s+STATUS\s+ADDRESS\s+PORTS\s+CGROUP\s+COMMAND$/m, 'under a header')

  stopGroup(c.child, 'SIGTERM')
  t.equal(await c.ended, 137, 'SIGTERM stops it: sleep, PID 1 with no handler, ignores it, and the step SIGKILLs it after 2 s (137)')
  t.notOk((await ps(['--all'])).some((r) => r.id === row.id), 'once it has ended ps no longer lists it, not even with --all')
  t.notOk(existsSync(row.stateFile), 'its state file is gone', { file: row.stateFile })
  t.same(leftoversOf([row.id], undefined, [mark]), [], 'nothing of it is left on the host')
})

t.test('step 09: PID 1 is the container\'s, not the launcher\'s', rootOnly(), async (t) => {
  const mark = marker()
  const c = await start('09-userns', ['sleep', mark], mark)
  const row = (await ps()).find((r) => r.command[1] === mark)
  t.ok(row, 'ps lists it')
  if (!row) return stopGroup(c.child, 'SIGKILL')
  ids.push(row.id)
  t.equal(row.step, '09-userns', 'its step')
  t.equal(row.name, null, 'no --name, no name')
  t.equal(row.pid, c.sleep, 'its PID is the sleep\'s, past unshare(1)')
  t.equal(row.cgroup, `/cfs-${row.id}`, 'its cgroup')
  t.equal(row.address, eth0Address(c.sleep), 'its address')
  stopGroup(c.child, 'SIGTERM')
  await c.ended
  t.notOk((await ps(['--all'])).some((r) => r.id === row.id), 'once it has ended ps no longer lists it')
  t.same(leftoversOf([row.id], undefined, [mark]), [], 'nothing of it is left on the host')
})

t.test('step 09 rootless: a user\'s ps lists the user\'s own container, from their state dir', rootOnly(), async (t) => {
  const forbidden = usernsForbidden()
  if (forbidden) {
    if (process.env.CI === 'true') t.fail(`rootless step 09 needs user namespaces: ${forbidden}`)
    else t.pass('rootless', { skip: forbidden })
    return
  }
  const user = 65534
  const home = mkdtempSync('/tmp/cfs-ps-rootless-')
  chownSync(home, user, user)
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const env = { HOME: home, CFS_HOME: join(home, 'state'), XDG_CACHE_HOME: join(home, 'cache') }
  const mark = marker()
  const c = await start('09-userns', ['sleep', mark], mark, { env, asUser: user })
  const row = (await ps([], { env, asUser: user })).find((r) => r.command[1] === mark)
  t.ok(row, 'the user\'s ps lists it')
  if (!row) return stopGroup(c.child, 'SIGKILL')
  t.equal(row.pid, c.sleep, 'with the sleep as PID 1')
  t.equal(row.user, 'nobody', 'as the user\'s')
  t.equal(row.address, null, 'and no address: rootless, it has only lo')
  t.equal(row.stateFile, join(runDir(env.CFS_HOME), `${row.id}.json`), 'its state file is in the user\'s state dir')
  t.equal(statSync(row.stateFile).uid, user, '…and the user\'s')
  stopGroup(c.child, 'SIGTERM')
  await c.ended
  t.notOk((await ps(['--all'], { env, asUser: user })).some((r) => r.id === row.id), 'once it has ended ps no longer lists it')
  t.notOk(existsSync(row.stateFile), 'its state file is gone')
})

t.test('rootless, a SIGKILLed step: the user\'s own `npm run clean -- --rootless`, without sudo, removes what it left', rootOnly(), async (t) => {
  if (usernsForbidden()) return t.pass('rootless', { skip: usernsForbidden() })
  const user = 65534
  const home = mkdtempSync('/tmp/cfs-clean-rootless-')
  chownSync(home, user, user)
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  const env = { HOME: home, CFS_HOME: join(home, 'state'), XDG_CACHE_HOME: join(home, 'cache') }
  const mark = marker()
  const c = await start('10-security', ['sleep', mark], mark, { env, asUser: user })
  const step = findStepProcess('10-security', mark)
  t.ok(step, 'the step\'s own process is found')
  if (step) process.kill(step, 'SIGKILL')
  await c.ended
  await waitFor(() => (isRunning(c.sleep) ? undefined : true), 5000)
  const left = () => ['containers', 'run'].flatMap((dir) => {
    try {
      return execFileSync('ls', [join(home, 'state', dir)], { encoding: 'utf8' }).split('\n').filter((name) => /^[0-9a-f]{12}/.test(name))
    } catch {
      return []
    }
  })
  t.equal(left().length, 2, `the SIGKILLed step left its container directory and its state file (${left().join(' ')})`)
  const cleaned = await asUser(user, ['scripts/clean.ts', '--rootless'], env)
  t.equal(cleaned.exitCode, 0, `npm run clean -- --rootless as the user exits 0 (stderr: ${cleaned.stderr.trim()})`)
  t.match(cleaned.stdout, /removed 2, left 0 in use, 0 failed/, 'and says it removed both')
  t.same(left(), [], 'nothing of the run is left in the user\'s state dir')
  const asRoot = await runTool('scripts/clean.ts', ['--rootless'])
  t.equal(asRoot.exitCode, 125, 'as root, --rootless is one line and exit 125: plain clean covers it there')
})

t.test('a SIGKILLed step whose PID 1 lives on: "parent gone", then stale, and clean removes it', rootOnly(), async (t) => {
  // PR_SET_PDEATHSIG would take PID 1 with its parent, but the kernel clears
  // it when a process changes its uid: su to nobody, as gosu or su-exec do.
  const mark = marker()
  const name = `ps-orphan-${process.pid}`
  const c = await start('05-mount-ns', ['--name', name, 'su', '-s', '/bin/sh', 'nobody', '-c', `exec sleep ${mark}`], mark)
  const row = (await ps()).find((r) => r.name === name)
  t.ok(row, 'ps lists it')
  if (!row) return stopGroup(c.child, 'SIGKILL')
  ids.push(row.id)
  t.equal(row.pid, c.sleep, 'PID 1 is the sleep, now nobody\'s')
  t.equal(statSync(`/proc/${c.sleep}`).uid, 65534, 'it runs as nobody')
  process.kill(row.parentPid, 'SIGKILL')
  await c.ended
  t.ok(isRunning(c.sleep), 'PID 1 outlives its SIGKILLed step')
  const orphan = (await ps()).find((r) => r.id === row.id)
  t.equal(orphan?.status, 'parent gone', 'ps shows it as "parent gone"')
  t.equal(orphan?.pid, c.sleep, '…with PID 1 still there')
  const table = await runTool('scripts/ps.ts')
  t.match(table.stdout, new RegExp(`^${row.id}\\s.*parent gone`, 'm'), 'the table says so too', { table: table.stdout })
  const clash = await runTool('steps/02-uts', ['run', '--name', name, 'true'])
  t.equal(clash.exitCode, 125, 'its name is still taken: another container may not have it')
  const left = findLeftovers(['state file']).filter((l) => l.id === row.id)
  t.ok(left.length > 0 && left.every((l) => l.inUse), 'clean leaves its state file alone while PID 1 runs', { left: left.map((l) => `${l.name}: ${l.inUse}`) })

  process.kill(c.sleep, 'SIGKILL') // from the host's PID namespace even PID 1 cannot refuse it
  await waitFor(() => (isRunning(c.sleep) ? undefined : true), 5000)
  t.notOk((await ps()).some((r) => r.id === row.id), 'with PID 1 gone too, the state file is stale: ps hides it')
  t.equal((await ps(['--all'])).find((r) => r.id === row.id)?.status, 'stale', '--all shows it as stale')
  // What npm run clean does, for this container's files only (others' runs may be going on).
  const stale = findLeftovers(['state file']).filter((l) => l.id === row.id)
  t.same(stale.map((l) => l.name).sort(), [row.stateFile, join(runDir(), 'names', name)].sort(), 'clean finds its state file and its name\'s claim…')
  t.ok(stale.every((l) => l.inUse === false), '…as not in use')
  for (const item of stale) await item.remove()
  t.notOk((await ps(['--all'])).some((r) => r.id === row.id), 'once removed, not even --all lists it')
  t.equal((await runTool('steps/01-exec', ['run', '--name', name, 'true'])).exitCode, 0, 'and its name is free again')
  t.same(leftoversOf([row.id], undefined, [mark]), [], 'nothing of it is left on the host')
})

t.test('bad options: one line, exit 125; --help', async (t) => {
  await refusesBadInput(t, 'ps', [['--bogus'], ['--format', 'yaml'], ['extra']])
})

t.test('npm run stop: SIGTERM to PID 1, SIGKILL after -t seconds; the step cleans up, and stop waits for it', rootOnly(), async (t) => {
  // A sleep as PID 1 has no handler: SIGTERM does nothing, the SIGKILL after 1 s ends it.
  const mark = marker()
  const name = `stop-test-${process.pid}`
  const c = await start('04-pid-proc', ['--name', name, 'sleep', mark], mark)
  const row = (await ps()).find((r) => r.name === name)
  if (row) ids.push(row.id)
  const began = Date.now()
  const stopped = await runTool('scripts/stop.ts', ['-t', '1', name])
  const took = Date.now() - began
  t.equal(stopped.exitCode, 0, 'stop -t 1 <name>: exit 0', { stderr: stopped.stderr })
  t.equal(stopped.stdout.trim(), name, '…and it prints the name it was given, as docker stop does')
  t.equal(await c.ended, 137, 'the sleep, PID 1, ignored SIGTERM and ended by SIGKILL: the run exits 137')
  t.notOk(isRunning(c.sleep), 'the sleep is gone')
  t.ok(row && !existsSync(row.stateFile), 'by the time stop returns, the step has removed its state file', { took })
  // A PID 1 with a handler ends at the SIGTERM, long before -t's 30 s.
  const mark2 = marker()
  const c2 = await start('05-mount-ns', ['sh', '-c', `trap 'exit 3' TERM; sleep ${mark2} & wait`], mark2)
  const row2 = (await ps()).find((r) => r.command.includes(`trap 'exit 3' TERM; sleep ${mark2} & wait`))
  if (row2) ids.push(row2.id)
  const began2 = Date.now()
  const stopped2 = await runTool('scripts/stop.ts', ['-t', '30', row2?.id.slice(0, 6) ?? 'none'])
  t.equal(stopped2.exitCode, 0, 'stop -t 30 <start of the id>: exit 0', { stderr: stopped2.stderr })
  t.ok(Date.now() - began2 < 15_000, 'a PID 1 that traps SIGTERM ends at once, not after -t', { ms: Date.now() - began2 })
  t.equal(await c2.ended, 3, '…with its own exit code, 3')
  killMarked() // its sleep, orphaned by the shell's exit, ends with the PID namespace anyway
})

t.test('npm run stop, bad input: one line, exit 125; --help', async (t) => {
  await refusesBadInput(t, 'stop', [[], ['no-such-container-xyz'], ['-t', 'soon', 'x'], ['--bogus']])
})

// npm run <tool> with each bad argument list: exit 125, one line starting `cfs: `; --help exits 0 with the usage.
async function refusesBadInput(t: Test, tool: string, bad: string[][]): Promise<void> {
  for (const args of bad) {
    const result = await runTool(`scripts/${tool}.ts`, args)
    const lines = result.stderr.trim().split('\n').filter((line) => !/^npm warn/.test(line))
    t.equal(result.exitCode, 125, `${tool} ${args.join(' ')}: exit 125`, { stderr: result.stderr })
    t.equal(lines.length, 1, `${tool} ${args.join(' ')}: one line`, { stderr: result.stderr })
    t.match(lines[0], /^cfs: /, `${tool} ${args.join(' ')}: the line starts with \`cfs: \``)
  }
  const help = await runTool(`scripts/${tool}.ts`, ['--help'])
  t.equal(help.exitCode, 0, '--help exits 0')
  t.match(help.stdout, new RegExp(`^Usage: npm run ${tool}`), '--help prints the usage')
}

t.test('nothing of these runs is left', rootOnly(), async (t) => {
  t.same(leftoversOf(ids, undefined, markers), [], 'no cgroup, directory, lease, interface, mount, state file or marked process')
})
