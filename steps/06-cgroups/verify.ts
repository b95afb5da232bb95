// Verify step 06: the container runs in its own cgroup, cfs-<id>, wherever
// this host keeps each controller (v1, v2 or hybrid), and the limits hold:
// a fork bomb stops at --pids-limit while the host stays usable, a memory
// hog is OOM-killed, --cpu-shares splits a busy CPU and --cpus caps one.
// However the container ends, its cgroup goes with it; bad limits are
// refused before anything is made.
//
// Usage: npx tsx steps/06-cgroups/verify.ts

import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { $, type ProcessPromise } from 'zx'
import { cgroupLayout, cgroupProcs, findControllers, type Controller } from '../../shared/cgroups.ts'
import { isRunning } from '../../shared/procfs.ts'
import { repoDir } from '../../shared/settings.ts'
import { findLeftovers } from '../../scripts/lib/clean.ts'
import { readText } from '../../scripts/lib/files.ts'
import { findProcesses, nsPids } from '../../scripts/lib/procfs.ts'
import { checkSignalEnds, Checks, findStepProcess, killSleeper, runStep, shown, stepCommand, type Sleeper } from '../../scripts/lib/verify.ts'
import { scaled, waitFor } from '../../scripts/lib/wait.ts'
import { requireRoot } from '../../shared/cli.ts'

const step = '06-cgroups'
requireRoot() // namespaces, mounts and cgroups: re-runs this under sudo if need be
const c = new Checks(`Step ${step}: cgroups`)
// The classic fork bomb, as busybox sh spells it (`:` is not a valid name there).
const bombLine = 'f() { f | f & }; f'
let runs = 0
// Every container id this verify saw, to check at the end that none is left.
const seen: string[] = []

// Where this host keeps each controller: the step must use the same places.
const where = findControllers()
const version = (controller: Controller) => `cgroup v${where.get(controller)?.version}, ${where.get(controller)?.mountPoint}`
console.log(`  note: cgroups on this host are ${cgroupLayout()}: ${[...where].map(([name, h]) => `${name} in v${h.version} (${h.mountPoint})`).join(', ')}`)

// Bad limits: one line, exit 125, and no cgroup made.
const before = cgroupDirs()
const tooMany = String(Math.max(99, availableParallelism() + 1)) // more CPUs than this machine has
const bad = [['--memory', 'abc'], ['--memory', '0'], ['--pids-limit', '-2'], ['--pids-limit', '0'], ['--cpus', '0'], ['--cpus', tooMany], ['--cpu-shares', '1']]
const refused = await Promise.all(bad.map((option) => runStep(step, [...option, 'true'])))
for (const [i, option] of bad.entries()) {
  const { exitCode, stderr } = refused[i]
  c.ok(`\`${option.join(' ')}\` is refused: one line, exit 125`, exitCode === 125 && stderr.trim().split('\n').length === 1, {
    ran: shown(step, [...option, 'true']),
    expected: 'exit 125 and one line on stderr',
    got: `exit ${exitCode}: ${stderr.trim()}`,
  })
}
// Another container on the host may have a new cfs-* for a moment, empty until
// its child joins; one that stays empty is a leftover, and ours.
const newEmpty = () => cgroupDirs().filter((dir) => !before.includes(dir) && cgroupProcs(dir).length === 0)
const made = (await waitFor(() => (newEmpty().length ? undefined : []), 3000)) ?? newEmpty()
c.equal('…and none of them made a cgroup', made, [], `ls -d /sys/fs/cgroup/*/cfs-*  # before and after`)

// /proc/self/cgroup, inside: one line per hierarchy, the path of our cgroup in it.
const catCgroup = ['sh', '-c', 'hostname; cat /proc/self/cgroup']
const plain = parseCgroupRun((await runStep(step, catCgroup)).stdout)
c.ok('/proc/self/cgroup names the container\'s cgroup, cfs-<id>, for pids (always limited)', plain.paths.pids === `/cfs-${plain.id}`, {
  ran: shown(step, catCgroup),
  expected: `the pids line ending in /cfs-<id> (${version('pids')})`,
  got: plain.text,
})
const allLimits = ['--pids-limit', '50', '--memory', '64M', '--cpus', '0.5', '--cpu-shares', '512']
const limited = await runStep(step, [...allLimits, ...catCgroup])
const named = parseCgroupRun(limited.stdout)
c.ok('…and for memory and cpu when --memory and --cpus/--cpu-shares are given', ['pids', 'memory', 'cpu'].every((n) => named.paths[n as Controller] === `/cfs-${named.id}`), {
  ran: shown(step, [...allLimits, ...catCgroup]),
  expected: 'the pids, memory and cpu lines ending in /cfs-<id>',
  got: named.text,
})
c.equal('after a normal exit, cfs-<id> is gone from every hierarchy', leftovers(named.id), [], `ls -d /sys/fs/cgroup/*/cfs-${named.id}`)
const exit3 = ['sh', '-c', 'hostname; exit 3']
const failed = await runStep(step, [...allLimits, ...exit3])
seen.push(failed.stdout.trim())
c.equal('exit code 3 comes back', failed.exitCode, 3, shown(step, [...allLimits, ...exit3]))
c.equal('…and after that non-zero exit, cfs-<id> is gone too', leftovers(failed.stdout.trim()), [], `ls -d /sys/fs/cgroup/*/cfs-${failed.stdout.trim()}`)

// While it runs, the host sees the limits in the cgroup's files.
const sleeper = await startSleeper([...allLimits, 'sleep'], '100')
const dirs = sleeper.sleep ? cgroupsOf(sleeper.sleep) : {}
const v2 = (controller: Controller) => where.get(controller)?.version === 2
const limitChecks: [Controller, string, string[], string[]][] = [
  ['pids', '--pids-limit 50', ['pids.max'], ['50']],
  ['memory', '--memory 64M', [v2('memory') ? 'memory.max' : 'memory.limit_in_bytes'], [String(64 * 1024 ** 2)]],
  ['cpu', '--cpus 0.5', v2('cpu') ? ['cpu.max'] : ['cpu.cfs_quota_us', 'cpu.cfs_period_us'], v2('cpu') ? ['50000 100000'] : ['50000', '100000']],
  // v2 weights run 1..10000 (default 100) where v1 shares ran 2..262144 (default 1024).
  ['cpu', '--cpu-shares 512', [v2('cpu') ? 'cpu.weight' : 'cpu.shares'], [v2('cpu') ? '20' : '512']],
]
for (const [controller, option, files, expected] of limitChecks) {
  const dir = dirs[controller]
  const got = files.map((file) => (dir ? readText(join(dir, file), 'missing') : 'no cgroup'))
  c.equal(`${option}: ${files.join(' and ')} ${expected.length > 1 ? 'are' : 'is'} ${expected.join(' and ')} (${version(controller)})`, got, expected,
    `cat ${files.map((file) => join(dir ?? `<${controller}>/cfs-<id>`, file)).join(' ')}  # during ${sleeper.shown}`)
}
await checkStop(sleeper, 'SIGTERM')
await checkStop(await startSleeper([...allLimits, 'sleep'], '100'), 'SIGINT')

// A fork bomb. busybox sh exits at its first failed fork, so awk lights it again and again for 3 s.
// The kernel charges a fork first and takes it back if that went over
// pids.max (pids_try_charge), so pids.current can read one over for an
// instant per CPU forking at that moment; a fork bomb that got through would
// be far above.
const bomb = await startBomb()
const slack = availableParallelism()
c.ok(`a fork bomb stops at pids.max: pids.current never above 30 (+${slack}, a fork being refused on each CPU), forks refused (peak ${bomb.peak}, ${bomb.refused} refused)`, bomb.peak > 0 && bomb.peak <= 30 + slack && bomb.refused > 0, {
  ran: `${bomb.shown}  # and, on the host, cat pids.current pids.events every few ms`,
  expected: `pids.current up to 30 (+${slack}), pids.events max > 0`,
  got: bomb.error ?? `pids.current peaked at ${bomb.peak}, pids.events max ${bomb.refused}`,
})
c.ok(`…the host stays responsive: \`true\` on the host takes < 1 s while the bomb runs (slowest of ${bomb.trueMs.length}: ${Math.max(0, ...bomb.trueMs)} ms)`, bomb.trueMs.length > 0 && Math.max(...bomb.trueMs) < 1000, {
  ran: 'true  # on the host, every 250 ms during the bomb',
  expected: 'each < 1000 ms',
  got: bomb.trueMs.length ? `${bomb.trueMs.length} runs, slowest ${Math.max(...bomb.trueMs)} ms` : bomb.error ?? 'no run',
})
const survivors = await waitFor(() => {
  const left = findProcesses((argv) => argv.includes(bomb.marker) || argv.includes(bombLine)).filter(isRunning)
  return left.length ? undefined : left
}, 3000)
c.ok('…and when the container ends, no process of the bomb is left, nor its cgroup', bomb.id !== undefined && survivors !== undefined && leftovers(bomb.id).length === 0, {
  ran: `ps -e -o pid,args | grep ${bomb.marker}; ls -d /sys/fs/cgroup/*/cfs-${bomb.id ?? '<id>'}`,
  expected: 'no process, no directory',
  got: `${survivors === undefined ? 'bomb processes still running' : 'no process'}, ${bomb.id ? leftovers(bomb.id).join(' ') || 'no directory' : 'no cgroup found'}`,
})

// A memory hog: dd's 200 MB buffer in a 20 MB cgroup (bounded, should the limit be missing).
const hog = ['dd', 'if=/dev/zero', 'of=/dev/null', 'bs=200M', 'count=1']
const oom = await startSleeper(['--memory', '20M', 'sh', '-c', `${hog.join(' ')} 2>/dev/null; echo "dd: exit $?"; exec sleep "$0"`], '3')
const memoryDir = oom.sleep ? cgroupsOf(oom.sleep).memory : undefined
const events = memoryDir ? readText(join(memoryDir, v2('memory') ? 'memory.events' : 'memory.oom_control'), '') : ''
const kills = Number(/^oom_kill (\d+)$/m.exec(events)?.[1] ?? 0)
c.ok(`a memory hog over --memory 20M is OOM-killed: oom_kill counts it (oom_kill ${kills}; ${version('memory')})`, kills >= 1, {
  ran: `${oom.shown}  # and, on the host, grep oom_kill ${memoryDir ?? '<memory>/cfs-<id>'}/${v2('memory') ? 'memory.events' : 'memory.oom_control'}`,
  expected: 'oom_kill 1 or more',
  got: memoryDir ? events.trim().replace(/\n/g, ', ') : 'no sleep process found',
})
await endContainer(oom)
const direct = await runStep(step, ['--memory', '20M', ...hog])
c.equal('…and a hog that is PID 1 takes the container down: exit 137 (128 + SIGKILL)', direct.exitCode, 137, shown(step, ['--memory', '20M', ...hog]))
const oomId = (await runStep(step, ['--memory', '20M', 'sh', '-c', `hostname; exec ${hog.join(' ')}`])).stdout.trim()
seen.push(oomId)
c.equal('…and after an OOM kill, cfs-<id> is gone from every hierarchy', leftovers(oomId), [], `ls -d /sys/fs/cgroup/*/cfs-${oomId}`)

// Two busy containers on one CPU: CPU time is shared by weight, 512 against 1024.
const [low, high] = await Promise.all([startBusy(['--cpu-shares', '512'], 'taskset -c 0'), startBusy(['--cpu-shares', '1024'], 'taskset -c 0')])
// 3 s, or up to 6 s on a busy host (× CFS_WAIT_SCALE), until the smaller share has a countable amount of CPU time.
const first = [low.busy, high.busy].map(cpuTicks)
let [lowTicks, highTicks] = [0, 0]
for (let waited = 0; waited < 3000 || (waited < scaled(6000) && lowTicks < 100); waited += 500) {
  await delay(500)
  ;[lowTicks, highTicks] = [cpuTicks(low.busy) - first[0], cpuTicks(high.busy) - first[1]]
}
const ratio = highTicks / lowTicks
c.ok(`--cpu-shares 1024 gets about twice the CPU of --cpu-shares 512 on a shared CPU (${ratio.toFixed(2)}; ${version('cpu')})`, ratio >= 1.5 && ratio <= 2.7, {
  ran: `${low.shown}  # and the same with --cpu-shares 1024, both at once; utime+stime of each loop over 3 to 6 s`,
  expected: 'a ratio between 1.5 and 2.7',
  got: lowTicks > 0 ? `${highTicks} against ${lowTicks} ticks: ${ratio.toFixed(2)}` : 'no busy loop found',
})
await Promise.all([endContainer(low), endContainer(high)])
// The highest weight, so the loop would win the CPU over anything else running: only the quota holds it back.
const capped = await startBusy(['--cpus', '0.5', '--cpu-shares', '262144'])
const [cappedTicks] = await measure([capped.busy], 3000)
const percent = cappedTicks / 3 // clock ticks are 1/100 s: ticks per second is percent
// cpu.stat counts the periods in which the cgroup ran out of quota and had to wait.
const cpuDir = capped.busy ? cgroupsOf(capped.busy).cpu : undefined
const throttled = Number(/^nr_throttled (\d+)$/m.exec(cpuDir ? readText(join(cpuDir, 'cpu.stat'), '') : '')?.[1] ?? 0)
c.ok(`--cpus 0.5 holds a busy loop to about 50% of one CPU, even at the highest weight: its cgroup throttles it (${percent.toFixed(0)}%, throttled ${throttled} times)`, percent >= 35 && percent <= 65 && throttled > 0, {
  ran: `${capped.shown}  # and utime+stime of the loop over 3 s, and nr_throttled in ${cpuDir ?? '<cpu>/cfs-<id>'}/cpu.stat`,
  expected: '35% to 65%, nr_throttled > 0',
  got: `${percent.toFixed(0)}%, nr_throttled ${throttled}`,
})
await endContainer(capped)

const left = findLeftovers(['cgroup']).filter((item) => item.id !== undefined && seen.includes(item.id))
c.equal('after all these runs, none of their cgroups is left', left.map((item) => item.name), [], 'ls -d /sys/fs/cgroup/*/cfs-*')
// A step that failed to clean up: remove what it left, as `npm run clean` does.
for (const item of left) {
  await item.remove()
  console.log(`    left behind: ${item.name}; removed it, as \`npm run clean\` would`)
}

c.finish()

/** A run whose command ends in `sleep <marker>`: `$0` of `sh -c` or the last word, a unique number of seconds. */
async function startSleeper(args: string[], seconds: string, prefix?: string): Promise<Sleeper & { shown: string }> {
  const marker = `${seconds}.${process.pid}${++runs}`
  const full = [...args, marker]
  const run: ProcessPromise = prefix
    ? $({ cwd: repoDir, nothrow: true, quiet: true })`${prefix.split(' ')} ${stepCommand(step)} run ${full}`
    : runStep(step, full)
  // Up to 30 s (× CFS_WAIT_SCALE): two containers pinned to one CPU, at weights 20 and 39, start slowly
  // beside systemd's slices at 100 when that CPU is busy (the systemd VM guest, under emulation).
  const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker)[0], 30_000)
  const id = sleep ? idOf(cgroupsOf(sleep).pids) : undefined
  if (id) seen.push(id)
  return { run, marker, sleep, step: findStepProcess(step, marker), shown: `${prefix ? `${prefix} ` : ''}${shown(step, full)}` }
}

/** End a sleeper's container the way a command ends: kill its PID 1, and let the step clean up. */
async function endContainer(s: Sleeper): Promise<void> {
  if (s.sleep && isRunning(s.sleep)) process.kill(s.sleep, 'SIGKILL')
  await Promise.race([s.run, delay(scaled(10_000), undefined, { ref: false })])
  await killSleeper(s) // only if the step hangs: SIGKILL leaves its cgroup behind
}

/** A busy loop in the container, PID 1 sleeping beside it; `busy` is the loop's host PID. */
async function startBusy(options: string[], prefix?: string): Promise<Sleeper & { shown: string; busy?: number }> {
  // 8 s × CFS_WAIT_SCALE: under emulation two containers took longer to start than a plain 8 s sleep lasted.
  const s = await startSleeper([...options, 'sh', '-c', 'while :; do :; done & exec sleep "$0"'], String(scaled(8)), prefix)
  const busy = findProcesses((argv) => argv[0] === 'sh' && argv[3] === s.marker)[0]
  return { ...s, busy }
}

/** CPU time (utime + stime, in clock ticks) each process uses over `ms`. */
async function measure(pids: (number | undefined)[], ms: number): Promise<number[]> {
  const first = pids.map(cpuTicks)
  await delay(ms)
  return pids.map((pid, i) => cpuTicks(pid) - first[i])
}

function cpuTicks(pid: number | undefined): number {
  const stat = pid ? readText(`/proc/${pid}/stat`, '') : ''
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11] ?? 0) + Number(fields[12] ?? 0) // utime and stime, fields 14 and 15 of proc(5)
}

/**
 * Start the fork bomb, but light it only once the host sees PID 1 in a pids
 * cgroup limited to 30: without the limit it would take the host down.
 * Samples pids.current and the host's `true` until the container ends.
 */
async function startBomb(): Promise<{ shown: string; marker: string; id?: string; peak: number; refused: number; trueMs: number[]; error?: string }> {
  const marker = `bomb.${process.pid}`
  const script = `read go && [ "$go" = go ] || exit 99; awk "BEGIN { srand(); t = srand(); while (srand() - t < 3) system(\\"${bombLine}\\") }" 2>/dev/null & wait`
  const args = ['--pids-limit', '30', 'sh', '-c', script, marker]
  const run = runStep(step, args)
  const result = { shown: shown(step, args), marker, peak: 0, refused: 0, trueMs: [] as number[] }
  let ended = false
  void run.finally(() => (ended = true))
  // Hard limit: whatever happens, the run is stopped after 15 s, killed after 20 s (× CFS_WAIT_SCALE).
  const stopRun = (signal: NodeJS.Signals) => ended || run.kill(signal).catch(() => {})
  const stop = setTimeout(() => stopRun('SIGTERM'), scaled(15_000))
  const kill = setTimeout(() => stopRun('SIGKILL'), scaled(20_000))
  try {
    const pid1 = await waitFor(() => findProcesses((argv) => argv[0] === 'sh' && argv[3] === marker).find((pid) => nsPids(pid).at(-1) === 1))
    const dir = pid1 ? cgroupsOf(pid1).pids : undefined
    const max = dir ? readText(join(dir, 'pids.max'), 'missing') : 'no cgroup'
    if (idOf(dir)) seen.push(idOf(dir)!)
    run.stdin.on('error', () => {}) // the run may be over already
    if (!dir?.includes('/cfs-') || max !== '30') {
      run.stdin.end('no\n')
      return { ...result, id: idOf(dir), error: `not lit: PID 1 is in ${dir ?? 'no pids cgroup'} with pids.max ${max}, not a cfs-<id> cgroup with pids.max 30` }
    }
    run.stdin.end('go\n')
    let lastTrue = 0
    while (!ended && existsSync(dir)) {
      const current = Number(readText(join(dir, 'pids.current'), '0'))
      result.peak = Math.max(result.peak, current)
      result.refused = Math.max(result.refused, Number(/^max (\d+)$/m.exec(readText(join(dir, 'pids.events'), ''))?.[1] ?? 0))
      if (Date.now() - lastTrue > 250) {
        lastTrue = Date.now()
        spawnSync('true')
        result.trueMs.push(Date.now() - lastTrue)
      }
      await delay(5)
    }
    return { ...result, id: idOf(dir) }
  } finally {
    await run
    clearTimeout(stop)
    clearTimeout(kill)
  }
}

// Signal the step: it must end within 6 s, and take its cgroup with it.
async function checkStop(s: Sleeper & { shown: string }, signal: NodeJS.Signals): Promise<void> {
  const id = s.sleep ? idOf(cgroupsOf(s.sleep).pids) : undefined
  await checkSignalEnds(c, step, s, signal, s.shown)
  c.ok(`…and after ${signal}, cfs-<id> is gone from every hierarchy`, id !== undefined && leftovers(id).length === 0, {
    ran: `ls -d /sys/fs/cgroup/*/cfs-${id ?? '<id>'}`,
    expected: 'no directory',
    got: id ? leftovers(id).join(' ') : 'no cgroup found',
  })
  await killSleeper(s)
}

/** The cgroup directory of `pid` for each controller, from /proc/PID/cgroup (cgroups(7)). */
function cgroupsOf(pid: number): Partial<Record<Controller, string>> {
  const paths = cgroupPaths(readText(`/proc/${pid}/cgroup`, ''))
  return Object.fromEntries([...where].filter(([name]) => paths[name]).map(([name, h]) => [name, join(h.mountPoint, paths[name]!)]))
}

// /proc/PID/cgroup has `id:controllers:path` per hierarchy; v2's line is `0::path`.
function cgroupPaths(text: string): Partial<Record<Controller, string>> {
  const lines = text.split('\n').map((line) => /^\d+:([^:]*):(.*)$/.exec(line)).filter((m) => m !== null)
  const paths: Partial<Record<Controller, string>> = {}
  for (const [name, h] of where) {
    const line = lines.find((m) => (h.version === 2 ? m[1] === '' : m[1].split(',').includes(name)))
    if (line) paths[name] = line[2]
  }
  return paths
}

// Output of `hostname; cat /proc/self/cgroup`: the container's id, and its cgroup per controller.
function parseCgroupRun(stdout: string): { id: string; paths: Partial<Record<Controller, string>>; text: string } {
  const [id, ...rest] = stdout.trim().split('\n')
  seen.push(id)
  return { id, paths: cgroupPaths(rest.join('\n')), text: stdout.trim().replace(/\n/g, ' | ') }
}

// The container id in a cgroup path such as /sys/fs/cgroup/pids/cfs-3f9a1c0b7d2e.
function idOf(dir: string | undefined): string | undefined {
  return dir?.includes('/cfs-') ? dir.slice(dir.lastIndexOf('/cfs-') + 5) : undefined
}

/** Every cfs-* directory in every hierarchy. */
function cgroupDirs(): string[] {
  return findLeftovers(['cgroup']).map((item) => item.name)
}

/** The container's cgroup directories still there (or why we cannot tell). */
function leftovers(id: string | undefined): string[] {
  if (!id || !/^[0-9a-f]{12}$/.test(id)) return [`no container id: ${JSON.stringify(id)}`]
  return findLeftovers(['cgroup']).filter((item) => item.id === id).map((item) => item.name)
}
