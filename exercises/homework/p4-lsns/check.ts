// Check P4: for several processes, the learner's lsns names exactly the
// namespaces (type and inode) that util-linux `lsns -p PID` lists; a PID
// that does not exist is one line on stderr and a non-zero exit.
//
// Usage: npm run homework -- p4

import { spawn } from 'node:child_process'
import { $ } from 'zx'
import { findProcesses } from '../../../scripts/lib/procfs.ts'
import { isRunning } from '../../../shared/procfs.ts'
import { waitFor } from '../../../scripts/lib/wait.ts'
import { Checks } from '../../../scripts/lib/verify.ts'
import { runProgram, shownProgram, target } from '../checks.ts'

const dir = target('p4-lsns')
const c = new Checks('Homework P4: a small lsns for one PID')

// Two processes of our own: one in new namespaces, one whose pid_for_children is not its pid.
const marker = (n: number) => `30.${process.pid}${n}`
const started = [
  spawn('unshare', ['--uts', '--ipc', '--net', '--mount', '--pid', '--fork', '--cgroup', 'sleep', marker(1)], { stdio: 'ignore' }),
  spawn('unshare', ['--pid', 'sleep', marker(2)], { stdio: 'ignore' }),
]
const sleeper = async (n: number) => waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker(n)).find(isRunning))
const sleepers = [await sleeper(1), await sleeper(2)]
// The sleeps go when we do (killing unshare --fork would leave its sleep behind, as PID 1 of its namespace).
const stop = () => [...sleepers, ...started.map((p) => p.pid)].forEach((pid) => pid && isRunning(pid) && process.kill(pid, 'SIGKILL'))
process.once('exit', stop)
const subjects: [string, number | undefined][] = [
  ['this checker', process.pid],
  ['a process in new UTS, IPC, network, mount, PID and cgroup namespaces', sleepers[0]],
  ['a process after `unshare --pid` without --fork (its pid_for_children is not its pid)', sleepers[1]],
]

for (const [name, pid] of subjects) {
  if (pid === undefined) {
    c.ok(`${name}: started`, false, { ran: 'unshare … sleep', expected: 'a sleep process', got: 'none found' })
    continue
  }
  const expected = await lsns(pid)
  const result = await runProgram(dir, [String(pid)])
  const got = parse(result.stdout)
  c.equal(`${name} (PID ${pid === process.pid ? '<checker>' : '<sleep>'}): the same namespaces as lsns -p`, result.exitCode === 0 ? got : `exit ${result.exitCode}: ${result.stderr.trim()}`, expected,
    `${shownProgram(dir, [String(pid)])}  # vs lsns -p ${pid} -n -r -o TYPE,NS`)
}

const missing = await runProgram(dir, ['999999999'])
c.ok('a PID that does not exist: one line on stderr, a non-zero exit', missing.exitCode !== 0 && missing.stderr.trim().split('\n').length === 1 && missing.stderr.trim() !== '', {
  ran: shownProgram(dir, ['999999999']),
  expected: 'exit non-zero, one line on stderr',
  got: `exit ${missing.exitCode}, stderr: ${missing.stderr.trim() || '(nothing)'}`,
})

stop()
c.finish()

/** What util-linux says: type -> inode for each namespace the process holds. */
async function lsns(pid: number): Promise<Record<string, number>> {
  const out = await $({ nothrow: true, quiet: true })`lsns -p ${pid} -n -r -o TYPE,NS`
  return sorted(out.stdout.trim().split('\n').filter(Boolean).map((line) => line.split(' ')).map(([type, ns]) => [type, Number(ns)]))
}

/** The learner's lines: a type as in /proc/PID/ns, then its inode number, anywhere on the line. */
function parse(stdout: string): Record<string, number> {
  return sorted(stdout.split('\n').flatMap((line) => {
    const match = /([a-z_]+)\W+?\D*?(\d{3,})/.exec(line)
    return match ? [[match[1], Number(match[2])] as [string, number]] : []
  }))
}

function sorted(entries: (string | number)[][]): Record<string, number> {
  return Object.fromEntries(entries.sort(([a], [b]) => String(a).localeCompare(String(b)))) as Record<string, number>
}
