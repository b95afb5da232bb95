// Verify step 04: in its own PID namespace the command is PID 1 and sees
// only its own processes; host processes are out of reach, while the host
// still sees the container's, under host PIDs. With no mount namespace yet
// the container's /proc shows on the host while it runs, and the step
// unmounts it however it ends, unless it is killed outright.
//
// Usage: npx tsx steps/04-pid-proc/verify.ts

import { spawn } from 'node:child_process'
import { realpathSync } from 'node:fs'
import { join } from 'node:path'
import { readMountInfo, unmountIfMounted } from '../../shared/mounts.ts'
import { isRunning } from '../../shared/procfs.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { nsPids } from '../../scripts/lib/procfs.ts'
import {
  checkDeathSignal, checkExitCodes, checkSignalEnds, Checks, killSleeper, runSleeper, runStep, shown, type Sleeper,
} from '../../scripts/lib/verify.ts'
import { requireRoot } from '../../shared/cli.ts'

const step = '04-pid-proc'
requireRoot() // namespaces, mounts and cgroups: re-runs this under sudo if need be
const c = new Checks(`Step ${step}: PID namespace and /proc`)

// The container's /proc, as the host sees it: inside the image the step picks.
const procDir = join(realpathSync(await ensureImage()), 'proc')
const mounted = () => readMountInfo().filter((m) => m.mountPoint === procDir).map((m) => `${m.fstype} on ${m.mountPoint}`)
const grepMounts = `grep ${procDir} /proc/self/mountinfo`

const psArgs = ['ps', '-o', 'pid,args']
const ps = await runStep(step, psArgs)
const rows = ps.stdout.trim().split('\n').slice(1).map((row) => row.trim().replace(/\s+/g, ' '))
c.equal('`ps` lists only the container\'s processes: the command, as PID 1', rows, ['1 ps -o pid,args'], shown(step, psArgs))
c.equal('…and once the step is done, its /proc is no longer mounted on the host', mounted(), [], grepMounts)

const pid = ['sh', '-c', 'echo $$']
c.equal('`echo $$` prints 1', (await runStep(step, pid)).stdout.trim(), '1', shown(step, pid))

// A host process, and its PID, which means nothing in the container's namespace.
const hostSleep = spawn('sleep', ['100'], { stdio: 'ignore' })
const kill = ['kill', String(hostSleep.pid)]
const killed = await runStep(step, kill)
c.ok('`kill <host pid>` inside fails: host processes are out of reach', killed.exitCode !== 0, {
  ran: shown(step, kill),
  expected: 'kill fails: no such process',
  got: `exit ${killed.exitCode} ${killed.stderr.trim()}`,
})
c.ok('…and the host process lives on', isRunning(hostSleep.pid!), { ran: `ps -p ${hostSleep.pid}`, expected: 'running', got: 'gone' })
hostSleep.kill('SIGKILL')

await checkExitCodes(c, step)

// The host still sees the container's processes, and its /proc mount.
const running = await runSleeper(step)
const pids = running.sleep ? nsPids(running.sleep) : []
c.ok('on the host, the container\'s PID 1 is a process with a host PID', pids.length >= 2 && pids[0] !== 1 && pids.at(-1) === 1, {
  ran: `grep NSpid /proc/<pid of sleep ${running.marker}>/status`,
  expected: 'NSpid: <host pid> 1',
  got: running.sleep ? `NSpid: ${pids.join(' ')}` : 'no sleep process found',
})
c.equal('while it runs, the container\'s /proc shows in the host\'s mount table', mounted(), [`proc on ${procDir}`], grepMounts)

// Ctrl-C or kill: the step passes the signal on, but PID 1 ignores signals it
// has no handler for, so after 2 s the step sends SIGKILL.
await checkStop(running, 'SIGTERM')
await checkStop(await runSleeper(step), 'SIGINT')

// PR_SET_PDEATHSIG: when the step dies, even by SIGKILL, the kernel kills the container.
await checkDeathSignal(c, step)
// A step killed outright cannot unmount: a known leftover, as after any crash.
let leftovers = 0
while (unmountIfMounted(procDir)) leftovers++
if (leftovers) console.log(`    left behind: proc on ${procDir}; unmounted it, as \`npm run clean\` would`)

c.finish()

// Signal the step: it must end within 6 s, and unmount the container's /proc.
async function checkStop(s: Sleeper, signal: NodeJS.Signals): Promise<void> {
  await checkSignalEnds(c, step, s, signal)
  c.equal(`…and after ${signal}, its /proc is no longer mounted on the host`, mounted(), [], grepMounts)
  await killSleeper(s)
  while (unmountIfMounted(procDir)); // if the check failed, mounts may have piled up
}
