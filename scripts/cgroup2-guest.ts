// The checks `npm run test:cgroup2` runs inside its VM: a v2-only kernel
// (cgroup_no_v1=all), cgroup2 alone at /sys/fs/cgroup, this repository read
// through 9p, the state dir on tmpfs. On a host that is not v2-only the
// first check fails and the rest is not run: it would prove nothing. (On a
// real v2-only host it runs as in the VM; it makes and removes cfs-* cgroups
// and a busybox image, as the steps do.)
//
// One line per check, as the verify scripts print them: step 06's cgroups,
// then step 09 rootless in a cgroup delegated to a user, then
// `CGROUP2-RESULT: pass N fail M`, the line the host looks for. Not the
// steps' own verify.ts: under TCG, 06's took 170 s and 09's 240 s of the
// 480 allowed, and the host runs both (notes/cgroup2-vm.md).
//
// Usage (in the VM only): tsx scripts/cgroup2-guest.ts

import { spawn, spawnSync } from 'node:child_process'
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmdirSync, rmSync, statSync, watch, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { $ } from 'zx'
import {
  cgroupLayout, cgroupProcs, CONTROLLERS, createCgroup, findControllers, findHierarchies, joinCgroup, listCgroups, removeCgroup,
} from '../shared/cgroups.ts'
import { readText } from './lib/files.ts'
import { findProcesses, parentPid } from './lib/procfs.ts'
import { isRunning } from '../shared/procfs.ts'
import { scaled, waitFor } from './lib/wait.ts'
import { imageRootfs } from '../shared/rootfs.ts'
import { imagesDir, repoDir } from '../shared/settings.ts'
import { checkSignalEnds, Checks, findStepProcess, killSleeper, runStep, shown, stepCommand, tsx, type Sleeper } from './lib/verify.ts'

const step = '06-cgroups'
const root = '/sys/fs/cgroup'
const c = new Checks('cgroup v2 on a real v2-only kernel (in the VM of npm run test:cgroup2)')
const here = $({ cwd: repoDir, nothrow: true, quiet: true })
let runs = 0

// The kernel: v2 only, every controller the steps use in the one tree.
const hierarchies = findHierarchies()
const where = findControllers(hierarchies)
const layout = CONTROLLERS.map((name) => `${name}: v${where.get(name)?.version ?? '-'} ${where.get(name)?.mountPoint ?? ''}`.trim())
if (!c.ok('the kernel has cgroup v2 only: pids, memory and cpu all in the cgroup2 tree at /sys/fs/cgroup', cgroupLayout(hierarchies) === 'v2' && CONTROLLERS.every((name) => where.get(name)?.version === 2 && where.get(name)?.mountPoint === root), {
  ran: 'grep cgroup /proc/self/mountinfo; cat /sys/fs/cgroup/cgroup.controllers',
  expected: `layout v2, ${CONTROLLERS.map((name) => `${name}: v2 ${root}`).join(', ')}`,
  got: `layout ${cgroupLayout(hierarchies)}, ${layout.join(', ')}`,
})) finish('not a v2-only host: the rest would prove nothing')
const subtreeBefore = readText(join(root, 'cgroup.subtree_control'))

// The image, into the state dir, tmpfs in the VM (no network there: busybox).
const prepare = await here`${tsx} rootfs/prepare.ts --source busybox`
c.ok(`the busybox image is prepared in ${imagesDir}`, prepare.exitCode === 0 && existsSync(imageRootfs('busybox')), {
  ran: 'npx tsx rootfs/prepare.ts --source busybox',
  expected: `exit 0 and ${imageRootfs('busybox')}`,
  got: `exit ${prepare.exitCode}: ${(prepare.stdout + prepare.stderr).trim()}`,
})

// npm run doctor, as a learner on a v2-only host would see it.
const doctor = await here`npm run --silent doctor`
const doctorSays = (text: string) => doctor.stdout.split('\n').some((line) => line.startsWith('✔') && line.includes(text))
c.ok('npm run doctor says `cgroups: v2`, and pids, memory and cpu are on v2 at /sys/fs/cgroup', doctorSays('cgroups: v2') && CONTROLLERS.every((name) => doctorSays(`${name}: v2 at ${root}`)), {
  ran: 'npm run doctor',
  expected: `✔ cgroups: v2, ${CONTROLLERS.map((name) => `✔ ${name}: v2 at ${root}`).join(', ')}`,
  got: doctor.stdout.trim().replace(/\n/g, ' | '),
})
c.ok('…and finds nothing missing', doctor.exitCode === 0, { ran: 'npm run doctor', expected: 'exit 0', got: `exit ${doctor.exitCode}` })

// A container with every limit: its cgroup and the files that hold them.
const allLimits = ['--pids-limit', '50', '--memory', '64M', '--cpus', '0.5', '--cpu-shares', '512']
const limited = await startSleeper([...allLimits, 'sh', '-c', 'hostname; exec sleep "$0"'], '100')
const path = limited.sleep ? readText(`/proc/${limited.sleep}/cgroup`) : 'no sleep found'
const dir = /^0::(\/cfs-[0-9a-f]{12})$/.test(path) ? join(root, path.slice(3)) : undefined
c.ok('the container\'s cgroup is /sys/fs/cgroup/cfs-<id>: one line in /proc/PID/cgroup, `0::/cfs-<id>`', dir !== undefined && existsSync(dir), {
  ran: `cat /proc/<sleep>/cgroup  # during ${limited.shown}`,
  expected: '0::/cfs-<12 hex digits>, a directory that exists',
  got: path,
})
c.equal('…and only the container\'s process is in it', dir ? cgroupProcs(dir) : [], limited.sleep ? [limited.sleep] : [], `cat ${dir ?? '<cfs-id>'}/cgroup.procs`)
const limitFiles: [string, string, string][] = [
  ['--pids-limit 50', 'pids.max', '50'],
  ['--memory 64M', 'memory.max', String(64 * 1024 ** 2)],
  ['--memory 64M', 'memory.swap.max', '0'],
  ['--cpus 0.5', 'cpu.max', '50000 100000'],
  // v2 weights run 1..10000 (default 100) where v1 shares ran 2..262144 (default 1024).
  ['--cpu-shares 512', 'cpu.weight', '20'],
]
for (const [option, file, value] of limitFiles) {
  c.equal(`${option}: ${file} is ${value}`, dir ? readText(join(dir, file)) : 'no cgroup', value, `cat ${dir ?? '<cfs-id>'}/${file}`)
}
const enabled = readText(join(root, 'cgroup.subtree_control')).split(/\s+/)
c.ok('the root\'s cgroup.subtree_control got the controllers the limits need', CONTROLLERS.every((name) => enabled.includes(name)), {
  ran: `cat ${root}/cgroup.subtree_control  # before the first container: \`${subtreeBefore}\``,
  expected: CONTROLLERS.join(' '),
  got: enabled.join(' '),
})
const own = dir ? readText(join(dir, 'cgroup.controllers')).split(/\s+/) : []
c.ok('…so cfs-<id> has them in its cgroup.controllers', CONTROLLERS.every((name) => own.includes(name)), { ran: `cat ${dir ?? '<cfs-id>'}/cgroup.controllers`, expected: CONTROLLERS.join(' '), got: own.join(' ') })

// SIGTERM: the step stops its container (PID 1, a sleep, ignores it: SIGKILL
// after 2 s) and removes the cgroup with cgroup.kill.
const killWrites = watchWrites(dir && join(dir, 'cgroup.kill'))
await checkSignalEnds(c, step, limited, 'SIGTERM', limited.shown)
c.ok('…the clean-up wrote `1` to cfs-<id>/cgroup.kill, and the directory is gone', killWrites() > 0 && !!dir && !existsSync(dir), {
  ran: `inotifywait -e modify ${dir ?? '<cfs-id>'}/cgroup.kill; ls -d ${dir ?? '<cfs-id>'}`,
  expected: 'a write to cgroup.kill, then no directory',
  got: `${killWrites()} write(s) to cgroup.kill, directory ${dir && existsSync(dir) ? 'still there' : 'gone'}`,
})
await killSleeper(limited)
const id = dir?.slice(dir.lastIndexOf('/cfs-') + 5)
c.equal('…and the id in the name is the container\'s hostname', (await limited.run).stdout.trim(), id, `${limited.shown}  # prints hostname`)

// removeCgroup itself, on a cgroup with a live process in it and outside any PID namespace.
const probe = createCgroup(`vmcheck${process.pid}`, { pids: 10 })
const sleeper = spawn('sleep', ['60'], { stdio: 'ignore' })
const sleeperEnd = new Promise<string | null>((resolve) => sleeper.on('exit', (_, signal) => resolve(signal)))
joinCgroup(probe, sleeper.pid)
const probeWrites = watchWrites(join(probe.dirs[0].dir, 'cgroup.kill'))
await removeCgroup(probe)
const signal = await Promise.race([sleeperEnd, delay(5000, 'still running', { ref: false })])
c.ok('removeCgroup on a cgroup with a process in it: cgroup.kill SIGKILLs it and rmdir succeeds', signal === 'SIGKILL' && probeWrites() > 0 && !existsSync(probe.dirs[0].dir), {
  ran: `createCgroup('vmcheck${process.pid}'), joinCgroup(sleep 60), removeCgroup  # shared/cgroups.ts`,
  expected: 'sleep killed by SIGKILL, a write to cgroup.kill, no directory',
  got: `sleep ${signal}, ${probeWrites()} write(s) to cgroup.kill, directory ${existsSync(probe.dirs[0].dir) ? 'still there' : 'gone'}`,
})

// A fork bomb under --pids-limit 20: it hits the limit, the VM stays usable, all of it ends.
const bomb = await forkBomb(20)
// A fork is charged first and taken back if over pids.max: one over per CPU, for an instant (see step 06's verify).
c.ok(`a fork bomb with --pids-limit 20 is contained: pids.current never above 20 (+${availableParallelism()}), forks refused (pids.events max)`, bomb.peak > 0 && bomb.peak <= 20 + availableParallelism() && bomb.refused > 0, {
  ran: `${bomb.shown}  # and cat pids.current pids.events every few ms`,
  expected: `pids.current at most 20 (+${availableParallelism()}), pids.events max > 0`,
  got: bomb.error ?? `pids.current peaked at ${bomb.peak}, pids.events max ${bomb.refused}`,
})
c.ok('…the rest of the VM can still fork meanwhile (`true` runs and exits 0)', bomb.trueRuns > 0 && bomb.trueFailures === 0, {
  ran: 'true  # every 250 ms during the bomb, outside the container',
  expected: 'every run exits 0',
  got: `${bomb.trueRuns} runs, ${bomb.trueFailures} failed`,
})
c.ok('…and when it ends, no process of the bomb is left, nor cfs-<id>', bomb.dir !== undefined && !existsSync(bomb.dir) && bomb.survivors === 0, {
  ran: `ps -e -o args | grep ${bomb.marker}; ls -d ${bomb.dir ?? '<cfs-id>'}`,
  expected: 'no process, no directory',
  got: `${bomb.survivors} process(es), directory ${bomb.dir && existsSync(bomb.dir) ? 'still there' : 'gone'}`,
})

// A memory hog under --memory 20M: the OOM killer takes it, and memory.events counts it.
const hog = ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=200M', 'count=1']
const oom = await startSleeper(['--memory', '20M', 'sh', '-c', `hostname; ${hog.join(' ')} 2>/dev/null; echo "dd: exit $?"; exec sleep "$0"`], '100')
const oomDir = oom.sleep ? join(root, readText(`/proc/${oom.sleep}/cgroup`).slice(3)) : undefined
const events = oomDir ? readText(join(oomDir, 'memory.events')) : ''
c.ok('a 200 MB dd under --memory 20M is OOM-killed: memory.events oom_kill >= 1', Number(/^oom_kill (\d+)$/m.exec(events)?.[1] ?? 0) >= 1, {
  ran: `cat ${oomDir ?? '<cfs-id>'}/memory.events  # after the dd of ${oom.shown}`,
  expected: 'oom_kill 1 or more',
  got: events.replace(/\n/g, ', ') || 'no cgroup found',
})
// SIGKILL the sleep, PID 1: the container ends as by itself, and the step cleans up.
if (oom.sleep) process.kill(oom.sleep, 'SIGKILL')
const oomOut = (await Promise.race([oom.run, delay(20_000, undefined, { ref: false }).then(() => killSleeper(oom)).then(() => oom.run)])).stdout.trim()
c.ok('…dd ended by SIGKILL: exit 137 (128 + 9)', oomOut.includes('dd: exit 137'), { ran: oom.shown, expected: 'dd: exit 137', got: oomOut.replace(/\n/g, ' | ') })
c.equal('…and once the container ended, its cgroup is gone', oomDir ? existsSync(oomDir) : 'no cgroup', false, `ls -d ${oomDir ?? '<cfs-id>'}`)
const direct = await runStep(step, ['--memory', '20M', ...hog])
c.equal('a hog that is PID 1 takes the container down: the step exits 137', direct.exitCode, 137, shown(step, ['--memory', '20M', ...hog]))

// Step 09 rootless, in a cgroup delegated to a user (see checkDelegated).
if (existsSync(join(repoDir, 'steps/09-userns/index.ts'))) await checkDelegated()

// Nothing left behind by all of the above.
c.equal('no cfs-* cgroup is left in /sys/fs/cgroup', readdirSync(root).filter((name) => name.startsWith('cfs-')), [], `ls -d ${root}/cfs-*`)

finish()

/**
 * Step 09 rootless with limits, in a cgroup delegated to a user the way
 * systemd's Delegate=yes makes one, by hand: a cfs-delegated-<pid> cgroup
 * under the root, pids and memory in the root's cgroup.subtree_control, the
 * directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads
 * chowned to the user (CFS_GUEST_UID, made by the VM's init; else nobody).
 * Root moves a shell of that user into it, and the shell runs the step
 * (steps/09-userns/index.ts, as CFS_VERIFY_LAUNCHER=node runs steps),
 * ended four ways: SIGTERM, an error, exit 3, SIGKILL and `npm run clean`.
 * From here, root reads the files.
 */
async function checkDelegated(): Promise<void> {
  const rootless = '09-userns'
  const user = Number(process.env.CFS_GUEST_UID || 65534)
  const dir = join(root, `cfs-delegated-${process.pid}`)
  const inRoot = `/${basename(dir)}` // as /proc/PID/cgroup names it
  const home = mkdtempSync(join(tmpdir(), 'cfs-guest-user-'))
  chownSync(home, user, user)
  const env = { ...process.env, HOME: home, CFS_HOME: join(home, 'state'), XDG_CACHE_HOME: join(home, 'cache') }
  const asUser = ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--clear-groups']
  const limits = ['--pids-limit', '20', '--memory', '32M']
  const subtree = () => readText(join(dir, 'cgroup.subtree_control'))
  mkdirSync(dir)
  try {
    // The root cgroup may hold processes and still give its children controllers.
    writeFileSync(join(root, 'cgroup.subtree_control'), '+pids +memory')
    for (const file of ['', 'cgroup.procs', 'cgroup.subtree_control', 'cgroup.threads']) chownSync(join(dir, file), user, user)

    // The user's own image: made by the user, its files are the user's, root inside.
    const prepare = `const { prepareImage } = await import(${JSON.stringify(join(repoDir, 'shared/rootfs.ts'))}); console.log(await prepareImage({ source: 'busybox', log: () => {} }))`
    const made = spawnSync(asUser[0], [...asUser.slice(1), process.execPath, '--input-type=module', '-e', prepare], { cwd: repoDir, env, encoding: 'utf8' })
    const image = made.stdout.trim()
    c.ok(`rootless: uid ${user} prepares a busybox image of their own, in their state dir`, made.status === 0 && existsSync(join(image, 'bin/sh')) && statSync(image).uid === user, {
      ran: `setpriv --reuid=${user} … prepareImage({ source: 'busybox' })  # CFS_HOME=${env.CFS_HOME}`,
      expected: 'exit 0, an image owned by the user',
      got: `exit ${made.status}, ${image ? `${image} owned by ${existsSync(image) ? statSync(image).uid : '?'}` : made.stderr.trim()}`,
    })

    // A: a sleeper with limits; the files during the run; SIGTERM; the files after.
    const a = userShell(limits, 'sleep')
    const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === a.marker)[0])
    const stepPid = findStepProcess(rootless, a.marker)
    const path = sleep ? readText(`/proc/${sleep}/cgroup`) : 'no sleep found'
    const id = /^0::\/[^/]+\/cfs-([0-9a-f]{12})$/.exec(path)?.[1] ?? 'none'
    const cgroup = join(dir, `cfs-${id}`)
    const leaf = join(dir, `cfs-${id}-step+pids+memory`)
    c.ok(`rootless, in a delegated cgroup (${dir}, uid ${user}'s): the container's cgroup is in it, cfs-<id>`, path === `0::${inRoot}/cfs-${id}` && existsSync(cgroup), {
      ran: `cat /proc/<sleep>/cgroup  # during ${a.shown}`, expected: `0::${inRoot}/cfs-<id>, a directory that exists`, got: path,
    })
    c.equal('…--pids-limit 20: its pids.max is 20', readText(join(cgroup, 'pids.max')), '20', `cat ${cgroup}/pids.max`)
    c.equal('…--memory 32M: its memory.max is 33554432', readText(join(cgroup, 'memory.max')), String(32 * 1024 ** 2), `cat ${cgroup}/memory.max`)
    c.equal('…the container\'s PID 1 is in it, alone', cgroupProcs(cgroup), sleep ? [sleep] : ['a sleep'], `cat ${cgroup}/cgroup.procs`)
    c.equal('…and the user made it (uid of the directory)', existsSync(cgroup) ? statSync(cgroup).uid : 'no directory', user, `stat -c %u ${cgroup}`)
    // unshare(1), the launcher, stays on the host's side: the step's child, the container's parent.
    const launcher = sleep ? parentPid(sleep) : 0
    c.equal('the user\'s shell, the step and its launcher (unshare) wait in a leaf beside it, cfs-<id>-step+pids+memory (no internal processes)', cgroupProcs(leaf).sort(), [a.shell.pid!, stepPid ?? 0, launcher].sort(), `cat ${leaf}/cgroup.procs`)
    c.ok('…so the delegated cgroup holds no process, and gives its children pids and memory', cgroupProcs(dir).length === 0 && subtree() === 'memory pids', {
      ran: `cat ${dir}/cgroup.procs ${dir}/cgroup.subtree_control`, expected: 'no PID; memory pids', got: `${cgroupProcs(dir).join(' ') || 'no PID'}; ${subtree()}`,
    })
    const signalled = Date.now()
    if (stepPid) process.kill(stepPid, 'SIGTERM')
    const endA = await Promise.race([a.ended, delay(scaled(10_000), undefined, { ref: false })])
    c.ok('SIGTERM to the step ends it within 6 s (exit 137: PID 1, a sleep, ignores it and is SIGKILLed after 2 s)', endA?.exit === 137 && Date.now() - signalled < scaled(6000), {
      ran: `kill -TERM <step>  # during ${a.shown}`, expected: 'exit 137 within 6 s', got: endA ? `exit ${endA.exit} after ${Date.now() - signalled} ms (stderr: ${endA.stderr.trim()})` : 'still running after 10 s',
    })
    checkAsFound(dir, inRoot, endA, 'after SIGTERM')

    // B: an error after the move (the state dir's `containers` is a file): exit 125, one line, all put back.
    const broken = join(home, 'broken')
    mkdirSync(broken)
    writeFileSync(join(broken, 'containers'), '')
    const b = userShell(['--pids-limit', '20', '--image', image, 'true'], undefined, { CFS_HOME: broken })
    const endB = await b.ended
    c.ok('an error once the step has moved (its state dir\'s `containers` is a file): exit 125, one line', endB.exit === 125 && endB.stderr.trim().split('\n').length === 1, {
      ran: `${b.shown}  # CFS_HOME=${broken}`, expected: 'exit 125, one line on stderr', got: `exit ${endB.exit}: ${endB.stderr.trim()}`,
    })
    checkAsFound(dir, inRoot, endB, 'after the error')

    // C: a plain exit 3.
    const d = userShell(['--pids-limit', '20', 'sh', '-c', 'exit 3'])
    const endD = await d.ended
    c.equal('exit 3 comes back', endD.exit, 3, `${d.shown}  (stderr: ${endD.stderr.trim()})`)
    checkAsFound(dir, inRoot, endD, 'after exit 3')

    // D: SIGKILL to the step, then `npm run clean`, as root, as after any crash.
    const k = userShell(limits, 'sleep')
    const sleepK = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === k.marker)[0])
    const idK = /\/cfs-([0-9a-f]{12})$/.exec(sleepK ? readText(`/proc/${sleepK}/cgroup`) : '')?.[1] ?? 'none'
    const stepK = findStepProcess(rootless, k.marker)
    if (stepK) process.kill(stepK, 'SIGKILL')
    const endK = await Promise.race([k.ended, delay(scaled(10_000), undefined, { ref: false })])
    const left = listCgroups(dir)
    c.ok('SIGKILL to the step: its container ends (PR_SET_PDEATHSIG); its cgroup and the leaf stay, with the user\'s shell left in the leaf', endK?.exit === 137 && endK.cgroup === `0::${inRoot}/cfs-${idK}-step+pids+memory` && left.includes(`cfs-${idK}`), {
      ran: `kill -KILL <step>  # during ${k.shown}; ls ${dir}`, expected: `exit 137, the shell in ${inRoot}/cfs-${idK}-step+pids+memory, cfs-${idK} there`,
      got: endK ? `exit ${endK.exit}, the shell in ${endK.cgroup}, ${left.join(' ') || 'nothing'} there` : 'still running after 10 s',
    })
    const cleaned = spawnSync(process.execPath, ['scripts/clean.ts'], { cwd: repoDir, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' } })
    const removed = cleaned.stdout.split('\n').filter((line) => line.startsWith('removed ') && line.includes(`${dir}/`))
    c.ok('`npm run clean` removes both, and takes pids and memory back from the delegated cgroup\'s cgroup.subtree_control', cleaned.status === 0 && removed.length === 2 && listCgroups(dir).length === 0 && subtree() === '', {
      ran: `npm run clean; ls ${dir}; cat ${dir}/cgroup.subtree_control`, expected: `removed cgroup: ${dir}/cfs-${idK}, removed cgroup: …-step+pids+memory; nothing left; empty`,
      got: `exit ${cleaned.status}: ${(cleaned.stdout + cleaned.stderr).trim().replace(/\n/g, ' | ')}; ${listCgroups(dir).join(' ') || 'nothing'} left; \`${subtree()}\``,
    })
  } finally {
    // What a failed check above may have left: the final check (no cfs-* cgroup left) reports it.
    for (const cgroupDir of [...listCgroups(dir).map((name) => join(dir, name)), dir]) {
      try {
        rmdirSync(cgroupDir)
      } catch {}
    }
    rmSync(home, { recursive: true, force: true })
  }

  /**
   * As `user`, a shell that root moves into the delegated cgroup (only root
   * may: a move needs write access to cgroup.procs in the common ancestor,
   * here the root), then lets run the step, then says how it ended and
   * where it is itself: back in the delegated cgroup, or still in the leaf.
   */
  function userShell(args: string[], sleeper?: 'sleep', extraEnv: NodeJS.ProcessEnv = {}) {
    const marker = `100.${process.pid}${++runs}`
    const command = sleeper ? [...args, 'sh', '-c', 'hostname; exec sleep "$0"', marker] : args
    const script = 'read go; "$@"; echo "exit: $?"; cat /proc/self/cgroup'
    const shell = spawn(asUser[0], [...asUser.slice(1), 'sh', '-c', script, 'sh', ...stepCommand(rootless), 'run', ...command], {
      cwd: repoDir, env: { ...env, ...extraEnv }, stdio: ['pipe', 'pipe', 'pipe'],
    })
    writeFileSync(join(dir, 'cgroup.procs'), String(shell.pid))
    shell.stdin!.end('go\n')
    let stdout = ''
    let stderr = ''
    shell.stdout!.on('data', (chunk) => (stdout += chunk))
    shell.stderr!.on('data', (chunk) => (stderr += chunk))
    const ended = new Promise<{ exit?: number; cgroup?: string; stderr: string }>((resolve) => shell.on('close', () => resolve({
      exit: Number(/^exit: (\d+)$/m.exec(stdout)?.[1] ?? NaN), cgroup: /^0::.*$/m.exec(stdout)?.[0], stderr,
    })))
    return { shell, marker, ended, shown: `setpriv --reuid=${user} … ${shown(rootless, command)}` }
  }
}

// After a rootless run in the delegated cgroup: nothing of it there, its
// cgroup.subtree_control empty as found, and the user's shell back in it.
function checkAsFound(dir: string, inRoot: string, end: { cgroup?: string } | undefined, when: string): void {
  const left = listCgroups(dir)
  const subtree = readText(join(dir, 'cgroup.subtree_control'))
  c.ok(`…${when}, the delegated cgroup is as found: no cgroup in it, cgroup.subtree_control empty, the user's shell back in it`, left.length === 0 && subtree === '' && end?.cgroup === `0::${inRoot}`, {
    ran: `ls ${dir}; cat ${dir}/cgroup.subtree_control; cat /proc/self/cgroup  # in the shell, after the step`,
    expected: `nothing; empty; 0::${inRoot}`,
    got: `${left.join(' ') || 'nothing'}; \`${subtree}\`; ${end?.cgroup ?? 'the shell said nothing'}`,
  })
}

/** Print the tally and the line the host looks for, then exit. */
function finish(reason?: string): never {
  if (reason) console.log(`stopped: ${reason}`)
  c.finish()
  console.log(`CGROUP2-RESULT: pass ${c.passed} fail ${c.failed}`)
  process.exit(c.failed ? 1 : 0)
}

/** `run ... sleep <marker>`: wait (10 s × CFS_WAIT_SCALE, which the VM sets) until the sleep is up. */
async function startSleeper(args: string[], seconds: string): Promise<Sleeper & { shown: string }> {
  const marker = `${seconds}.${process.pid}${++runs}`
  const run = runStep(step, [...args, marker])
  const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker)[0])
  return { run, marker, sleep, step: findStepProcess(step, marker), shown: shown(step, [...args, marker]) }
}

/**
 * The fork bomb: an awk loop lights `f() { f | f & }; f` again and again
 * for 4 s (busybox sh gives up at its first failed fork). The step is
 * stopped with SIGTERM if it is still there after 40 s.
 */
async function forkBomb(limit: number) {
  const marker = `bomb.${process.pid}`
  const script = `awk 'BEGIN { srand(); t = srand(); while (srand() - t < 4) system("f() { f | f & }; f") }' 2>/dev/null; echo done`
  const args = ['--pids-limit', String(limit), 'sh', '-c', script, marker]
  const run = runStep(step, args)
  const result = { shown: shown(step, args), marker, peak: 0, refused: 0, trueRuns: 0, trueFailures: 0, survivors: 0, dir: undefined as string | undefined, error: undefined as string | undefined }
  let over = false
  void run.then(() => (over = true))
  const stop = setTimeout(() => over || run.kill('SIGTERM'), 40_000)
  try {
    const pid1 = await waitFor(() => (over ? 0 : findProcesses((argv) => argv[0] === 'sh' && argv[3] === marker)[0]))
    const path = pid1 ? readText(`/proc/${pid1}/cgroup`) : ''
    if (!path.startsWith('0::/cfs-')) {
      const ended = over ? await run : undefined
      return { ...result, error: `PID 1 of the bomb not found in a cfs-<id> cgroup (${path || (ended ? `the run ended first: exit ${ended.exitCode}, ${ended.stderr.trim()}` : 'no process')})` }
    }
    result.dir = join(root, path.slice(3))
    let lastTrue = 0
    while (existsSync(result.dir)) {
      result.peak = Math.max(result.peak, Number(readText(join(result.dir, 'pids.current')) || 0))
      result.refused = Math.max(result.refused, Number(/^max (\d+)$/m.exec(readText(join(result.dir, 'pids.events')))?.[1] ?? 0))
      if (Date.now() - lastTrue > 250) {
        lastTrue = Date.now()
        result.trueRuns++
        if (spawnSync('true').status !== 0) result.trueFailures++
      }
      await delay(5)
    }
    return result
  } finally {
    await run
    clearTimeout(stop)
    result.survivors = findProcesses((argv) => argv.includes(marker) || argv.some((a) => a.includes('f | f &'))).filter(isRunning).length
  }
}

/** Count writes to a file, through inotify (any write(2) to a cgroup file raises IN_MODIFY). */
function watchWrites(file: string | undefined): () => number {
  let writes = 0
  if (!file || !existsSync(file)) return () => writes
  const watcher = watch(file, (event) => {
    if (event === 'change') writes++
  })
  watcher.on('error', () => watcher.close()) // the directory went away: that is expected
  return () => writes
}

