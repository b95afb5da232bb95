// The checks the systemd VM test runs as its learner, from their console
// login (scripts/vm/home.ts writes the .bash_profile that starts this):
// Debian with systemd as PID 1, cgroup v2 only, the learner's shell in
// session-N.scope, this repository their checkout in ~/repo.
//
// In order: the session is a laptop's; README's start (`npm run doctor`,
// its first command, the card's line); every step's verify from 05 on, typed
// as the learner (steps 05-08 re-run themselves under sudo; 09's and 10's
// verify too, and each checks its rootless half itself); step 09 rootless
// in a scope systemd delegates (`systemd-run --user --scope -p
// Delegate=yes`, as notes/09-userns.md tells learners), and without one;
// what systemd does to the project's cgroups on `daemon-reload`; `npm run
// clean` finds nothing and no cfs-* cgroup is left. With --ci, only the CI
// subset: the session, the card's line, step 09 rootless in the delegated
// scope, a step-06 container with every limit through `daemon-reload`, the
// clean-up. Not step 06's verify: 6 to 8 minutes alone under TCG, past CI's
// budget for the guest (notes/cgroup2-vm.md, "In CI").
//
// One line per check, as the verifies print theirs; a verify's own claims
// are counted and recorded as this script's (CFS_VERIFY_JSON). Ends with
// `SYSTEMD-RESULT: pass N fail M`, the line the host looks for.
//
// Usage (in the VM, as the learner): node scripts/systemd-guest.ts [--ci]

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { $ } from 'zx'
import { cgroupLayout, findHierarchies } from '../shared/cgroups.ts'
import { isRunning } from '../shared/procfs.ts'
import { repoDir } from '../shared/settings.ts'
import { readText } from './lib/files.ts'
import { findProcesses } from './lib/procfs.ts'
import { readResults, resultsFile, sortResults } from './lib/results.ts'
import { Checks } from './lib/verify.ts'
import { waitFor } from './lib/wait.ts'

const ci = process.argv.includes('--ci')
const root = '/sys/fs/cgroup'
const uid = process.getuid!()
const c = new Checks(`Debian with systemd, as ${process.env.USER ?? `uid ${uid}`}${ci ? ' (the CI subset)' : ''}: README's start, the steps' verifies, the project's cgroups under systemd`)
const here = $({ cwd: repoDir, nothrow: true, quiet: true })
const timings: string[] = []
let runs = 0

/** Each part of the run: its name (for --only), whether the CI subset has it, and its checks. */
const parts: [string, boolean, () => Promise<void>][] = [
  ['session', true, checkSession],
  ['doctor', false, async () => {
    const doctor = await here`npm run --silent doctor`
    c.ok('npm run doctor, as the learner: exit 0 (it re-runs itself under sudo), and it says `cgroups: v2`', doctor.exitCode === 0 && /^✔ cgroups: v2$/m.test(doctor.stdout), {
      ran: 'npm run doctor', expected: 'exit 0, ✔ cgroups: v2', got: `exit ${doctor.exitCode}: ${(doctor.stdout + doctor.stderr).trim().replace(/\n/g, ' | ')}`,
    })
  }],
  ['first', false, async () => {
    const first = await here`npx tsx steps/01-exec run echo hello`
    c.ok('README\'s first command, `npx tsx steps/01-exec run echo hello`: prints hello, without sudo', first.exitCode === 0 && first.stdout === 'hello\n' && !first.stderr.includes('sudo'), {
      ran: 'npx tsx steps/01-exec run echo hello', expected: 'exit 0, hello', got: `exit ${first.exitCode}: ${(first.stdout + first.stderr).trim()}`,
    })
  }],
  ['card', true, checkCard],
  ...['05-mount-ns', '06-cgroups', '07-overlay', '08-net', '09-userns', '10-security'].map((step): [string, boolean, () => Promise<void>] => [step, false, () => runVerify(step)]),
  ['delegated', true, checkDelegatedScope],
  ['undelegated', false, checkNoDelegation],
  ['daemon-reload', true, checkDaemonReload],
  ['clean', true, checkClean],
]
const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice(7).split(',')
for (const [name, inCi, check] of parts) {
  if (only ? only.includes(name) : !ci || inCi) await timed(name, check)
}

console.log(`timings: ${timings.join(', ')}`)
c.finish()
console.log(`SYSTEMD-RESULT: pass ${c.passed} fail ${c.failed}`)

/** The card's line, typed without sudo, with a shell script for its input. */
async function checkCard(): Promise<void> {
  const card = await $({ cwd: repoDir, nothrow: true, quiet: true, input: 'echo pid=$$ uid=$(id -u)\nexit 0\n' })`npx tsx steps/04-pid-proc run sh`
  const out = card.stdout + card.stderr
  c.ok('the card\'s line, `npx tsx steps/04-pid-proc run sh`, typed without sudo: one line says it re-runs under sudo, the shell is PID 1 and root', card.exitCode === 0 && /^cfs: needs root .*: re-running under sudo$/m.test(card.stderr) && /^pid=1 uid=0$/m.test(card.stdout), {
    ran: 'printf \'echo pid=$$ uid=$(id -u)\\nexit 0\\n\' | npx tsx steps/04-pid-proc run sh', expected: 'exit 0, cfs: needs root …: re-running under sudo, pid=1 uid=0', got: `exit ${card.exitCode}: ${out.trim().replace(/\n/g, ' | ')}`,
  })
}

/** `npm run clean` as the learner finds nothing, and no cfs-* cgroup is left anywhere. */
async function checkClean(): Promise<void> {
  const cleaned = await here`npm run --silent clean`
  c.equal('`npm run clean`, as the learner: nothing to clean', cleaned.stdout.trim(), 'nothing to clean', 'npm run clean')
  const left = spawnSync('find', [root, '-name', 'cfs-*'], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean)
  c.equal('…and no cfs-* cgroup is left anywhere in /sys/fs/cgroup', left, [], `find ${root} -name 'cfs-*'`)
}

/** Run `part`, and keep how long it took for the timings line. */
async function timed(part: string, check: () => Promise<void>): Promise<void> {
  const started = Date.now()
  await check()
  const took = `${part} ${((Date.now() - started) / 1000).toFixed(0)} s`
  timings.push(took)
  console.log(`  took: ${took}`)
}

/** A laptop's session: cgroup v2 only, by default, and the learner's shell in a logind session with its user manager. */
async function checkSession(): Promise<void> {
  const hierarchies = findHierarchies()
  const fstype = spawnSync('stat', ['-fc', '%T', root], { encoding: 'utf8' }).stdout.trim()
  const cmdline = readText('/proc/cmdline')
  c.ok('cgroup v2 only, systemd\'s default: cgroup2 alone at /sys/fs/cgroup, with no cgroup option on the kernel\'s command line', fstype === 'cgroup2fs' && cgroupLayout(hierarchies) === 'v2' && !/cgroup/.test(cmdline), {
    ran: 'stat -fc %T /sys/fs/cgroup; grep cgroup /proc/self/mountinfo; cat /proc/cmdline', expected: 'cgroup2fs, layout v2, no cgroup_* or systemd.unified_cgroup_hierarchy',
    got: `${fstype}, layout ${cgroupLayout(hierarchies)}, ${cmdline}`,
  })
  // The login shell's cgroup, which started this script (ours is the same: nothing moved it).
  const own = readText('/proc/self/cgroup')
  c.ok(`the learner's login is a logind session: their processes are in user.slice/user-${uid}.slice/session-N.scope`, new RegExp(`^0::/user\\.slice/user-${uid}\\.slice/session-\\d+\\.scope$`).test(own), {
    ran: 'cat /proc/self/cgroup', expected: `0::/user.slice/user-${uid}.slice/session-<N>.scope`, got: own,
  })
  const manager = spawnSync('systemctl', ['is-active', `user@${uid}.service`], { encoding: 'utf8' }).stdout.trim()
  const userBus = spawnSync('systemctl', ['--user', 'is-system-running'], { encoding: 'utf8' })
  c.ok(`…with their systemd, user@${uid}.service, running and reachable (systemctl --user)`, manager === 'active' && ['running', 'degraded'].includes(userBus.stdout.trim()), {
    ran: `systemctl is-active user@${uid}.service; systemctl --user is-system-running`, expected: 'active; running', got: `${manager}; ${(userBus.stdout + userBus.stderr).trim()}`,
  })
}

/**
 * A step's verify, typed as the learner: `npx tsx steps/<step>/verify.ts`.
 * Its lines go to the console as it prints them; its claims (its own
 * CFS_VERIFY_JSON, which sudo passes on with the other CFS_* settings) are
 * counted here. The steps it starts run as plain JS (CFS_VERIFY_LAUNCHER=node,
 * as in the busybox guest: tsx's loader costs seconds a container under
 * emulation), except at 08, whose verify looks for tsx's launcher.
 */
async function runVerify(step: string): Promise<void> {
  const results = resultsFile()
  const started = Date.now()
  const env = { ...process.env, CFS_VERIFY_JSON: results.file, ...(step === '08-net' ? {} : { CFS_VERIFY_LAUNCHER: 'node' }) }
  const code = await new Promise<number | null>((resolve) => {
    spawn('npx', ['tsx', `steps/${step}/verify.ts`], { cwd: repoDir, env, stdio: ['ignore', 'inherit', 'inherit'] }).on('close', resolve)
  })
  const { claims, tally } = sortResults(readResults(results.file))
  results.remove()
  for (const claim of claims) c.add({ ...claim, claim: `${step}: ${claim.claim}` })
  const seconds = ((Date.now() - started) / 1000).toFixed(0)
  c.ok(`npx tsx steps/${step}/verify.ts, as the learner: exit 0, every check passed (${tally ? tally.passed + tally.failed : 0} checks, ${seconds} s)`, code === 0 && !!tally && tally.failed === 0 && claims.length > 0, {
    ran: `npx tsx steps/${step}/verify.ts`, expected: 'exit 0 and its tally', got: `exit ${code}, ${tally ? `${tally.passed} passed, ${tally.failed} failed` : 'no tally recorded'}`,
  })
}

/**
 * Step 09 rootless with limits, as notes/09-userns.md tells the learner:
 * `systemd-run --user --scope -p Delegate=yes npx tsx steps/09-userns run
 * --pids-limit 20 --memory 32M …`. The container's cgroup goes in the
 * scope systemd made and delegated (under user@UID.service), with the
 * limits; the scope and all of it are gone when the run ends.
 */
async function checkDelegatedScope(): Promise<void> {
  const marker = `100.${process.pid}${++runs}`
  const args = ['--pids-limit', '20', '--memory', '32M', 'sleep', marker]
  const typed = `systemd-run --user --scope -p Delegate=yes npx tsx steps/09-userns run ${args.join(' ')}`
  const run = $({ cwd: repoDir, nothrow: true, quiet: true })`systemd-run --user --scope -p Delegate=yes npx tsx steps/09-userns run ${args}`
  // npx alone takes 20-45 s under emulation: 30 s × CFS_WAIT_SCALE.
  const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker)[0], 30_000)
  const path = sleep ? readText(`/proc/${sleep}/cgroup`).replace(/^0::/, '') : ''
  const scope = /^(\/user\.slice\/user-\d+\.slice\/user@\d+\.service\/.*\/run-[^/]+\.scope)\/cfs-[0-9a-f]{12}$/.exec(path)?.[1]
  const dir = join(root, path)
  c.ok(`rootless in a scope systemd delegates: the container's cgroup is cfs-<id> in the run's scope, under user@${uid}.service`, !!scope && existsSync(dir), {
    ran: `cat /proc/<sleep>/cgroup  # during ${typed}`, expected: `0::/user.slice/user-${uid}.slice/user@${uid}.service/…/run-<…>.scope/cfs-<id>`, got: path || 'no sleep found',
  })
  c.equal('…--pids-limit 20: its pids.max is 20', readText(join(dir, 'pids.max'), 'no file'), '20', `cat ${dir}/pids.max`)
  c.equal('…--memory 32M: its memory.max is 33554432', readText(join(dir, 'memory.max'), 'no file'), String(32 * 1024 ** 2), `cat ${dir}/memory.max`)
  const scopeDir = scope ? join(root, scope) : ''
  const leaves = scope ? readdirSync(scopeDir).filter((name) => /^cfs-[0-9a-f]{12}-step\+/.test(name)) : []
  c.ok('…npx, tsx and the step wait in a leaf beside it, and the scope holds no process of its own', leaves.length === 1 && readText(join(scopeDir, 'cgroup.procs')) === '', {
    ran: `ls ${scopeDir || '<scope>'}; cat ${scopeDir || '<scope>'}/cgroup.procs`, expected: 'one cfs-<id>-step+… leaf; no PID', got: `${leaves.join(' ') || 'no leaf'}; ${readText(join(scopeDir, 'cgroup.procs')) || 'no PID'}`,
  })
  if (sleep) process.kill(sleep, 'SIGKILL') // the container's PID 1, the learner's own process: the container ends as by itself
  const ended = await Promise.race([run, delay(60_000, undefined, { ref: false })])
  c.ok('…when its PID 1 dies the run ends (exit 137), and the scope goes with everything in it', ended?.exitCode === 137 && !!scopeDir && !existsSync(scopeDir), {
    ran: `kill -KILL <sleep>; ls -d ${scopeDir || '<scope>'}`, expected: 'exit 137, no scope',
    got: `${ended ? `exit ${ended.exitCode}` : 'still running after 60 s'} (stderr: ${ended?.stderr.trim() ?? ''}), scope ${scopeDir && existsSync(scopeDir) ? 'still there' : 'gone'}`,
  })
}

/** Without systemd-run, from the login session (root's scope): one line says limits are off, and how to get them. */
async function checkNoDelegation(): Promise<void> {
  const run = await here`npx tsx steps/09-userns run --pids-limit 20 true`
  const session = readText('/proc/self/cgroup').replace(/^0::/, '')
  c.ok('rootless from the login session: it runs, and one line says the session scope is not the learner\'s to change, and to use systemd-run --user --scope -p Delegate=yes', run.exitCode === 0 && run.stderr.trim() === `cfs: rootless: your cgroup, ${root}${session}, is not yours to change, so limits are off; for limits, start it in a cgroup of your own (cgroup v2 with systemd): systemd-run --user --scope -p Delegate=yes npx tsx steps/09-userns run …`, {
    ran: 'npx tsx steps/09-userns run --pids-limit 20 true', expected: `exit 0; cfs: rootless: your cgroup, ${root}${session}, is not yours to change, …`, got: `exit ${run.exitCode}; ${run.stderr.trim()}`,
  })
}

/**
 * What systemd does to the project's cgroups: a step-06 container with
 * every limit (its cgroup, cfs-<id>, at the top of the tree, beside
 * systemd's slices), then `systemctl daemon-reload`, as a package upgrade
 * does. Does systemd move or kill the container, take a controller away
 * from it (the limit's file would vanish), or complain in its journal?
 */
async function checkDaemonReload(): Promise<void> {
  const marker = `100.${process.pid}${++runs}`
  const args = ['--pids-limit', '50', '--memory', '64M', '--cpus', '0.5', '--cpu-shares', '512', 'sleep', marker]
  const run = $({ cwd: repoDir, nothrow: true, quiet: true })`npx tsx steps/06-cgroups run ${args}`
  const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker)[0], 30_000)
  const path = sleep ? readText(`/proc/${sleep}/cgroup`) : 'no sleep found'
  const dir = join(root, path.replace(/^0::/, ''))
  const limits = () => ['pids.max', 'memory.max', 'cpu.max', 'cpu.weight'].map((file) => `${file} ${readText(join(dir, file), 'missing')}`).join(', ')
  const before = `${path}; ${limits()}; root's subtree_control: ${readText(join(root, 'cgroup.subtree_control'))}`
  const since = new Date().toISOString().replace('T', ' ').slice(0, 19)
  const reload = spawnSync('sudo', ['systemctl', 'daemon-reload'], { encoding: 'utf8' })
  await delay(3000)
  const after = `${sleep ? readText(`/proc/${sleep}/cgroup`) : ''}; ${limits()}; root's subtree_control: ${readText(join(root, 'cgroup.subtree_control'))}`
  c.ok('systemctl daemon-reload with a step-06 container running in /sys/fs/cgroup/cfs-<id>: the container runs on, in the same cgroup, with the same limits', /^0::\/cfs-[0-9a-f]{12}$/.test(path) && reload.status === 0 && !!sleep && isRunning(sleep) && after === before, {
    ran: `sudo systemctl daemon-reload  # during npx tsx steps/06-cgroups run ${args.join(' ')}`, expected: before, got: `exit ${reload.status}; ${after}`,
  })
  // _PID=1: systemd's own lines (not sudo's, which log the command line).
  const journal = spawnSync('sudo', ['journalctl', '--no-pager', '-q', '--since', since, '_PID=1', '-g', 'cfs-'], { encoding: 'utf8' }).stdout.trim()
  c.equal('…and systemd says nothing about it in its journal', journal, '', `sudo journalctl --since '${since}' _PID=1 -g cfs-`)
  if (sleep) spawnSync('sudo', ['kill', '-KILL', String(sleep)])
  const ended = await Promise.race([run, delay(60_000, undefined, { ref: false })])
  c.ok('…and when the container ends, the step removes its cgroup as ever', ended?.exitCode === 137 && !existsSync(dir), {
    ran: 'sudo kill -KILL <sleep>', expected: 'exit 137, no cgroup', got: `${ended ? `exit ${ended.exitCode}` : 'still running'}, ${existsSync(dir) ? 'cgroup still there' : 'cgroup gone'}`,
  })
}
