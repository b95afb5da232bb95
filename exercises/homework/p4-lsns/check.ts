// Check P4: for several processes, the learner's lsns names exactly the
// namespaces (type and inode) that util-linux `lsns -p PID` lists, among
// them the homework's own subject, a process of `unshare -Ur -u` run by a
// user, whose user namespace must be reported as a new one; a PID that
// does not exist is one line on stderr and a non-zero exit.
//
// Usage: npm run homework -- p4

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { $ } from 'zx'
import { findProcesses } from '../../../scripts/lib/procfs.ts'
import { isRunning } from '../../../shared/procfs.ts'
import { usernsForbidden } from '../../../shared/userns.ts'
import { waitFor } from '../../../scripts/lib/wait.ts'
import { Checks } from '../../../scripts/lib/verify.ts'
import { runProgram, shownProgram, target } from '../checks.ts'

const dir = target('p4-lsns')
const c = new Checks('Homework P4: a small lsns for one PID')

// Three processes of our own: one in new namespaces, one whose pid_for_children
// is not its pid, and the homework's: `unshare -Ur -u` run by a user (nobody,
// 65534; as root if this host forbids users a user namespace), root of a new
// user namespace that maps it to that user.
const marker = (n: number) => `30.${process.pid}${n}`
const user = usernsForbidden() ? 0 : 65534
const asUser = user ? ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--clear-groups'] : []
const started = [
  spawn('unshare', ['--uts', '--ipc', '--net', '--mount', '--pid', '--fork', '--cgroup', 'sleep', marker(1)], { stdio: 'ignore' }),
  spawn('unshare', ['--pid', 'sleep', marker(2)], { stdio: 'ignore' }),
  spawn(asUser[0] ?? 'unshare', [...asUser.slice(1), ...(user ? ['unshare'] : []), '-Ur', '-u', 'sleep', marker(3)], { stdio: 'ignore' }),
]
const sleeper = async (n: number) => waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker(n)).find(isRunning))
const sleepers = [await sleeper(1), await sleeper(2), await sleeper(3)]
const unshareUr = `${asUser.join(' ')} unshare -Ur -u sleep 30`.trim()
// The sleeps go when we do (killing unshare --fork would leave its sleep behind, as PID 1 of its namespace).
const stop = () => [...sleepers, ...started.map((p) => p.pid)].forEach((pid) => pid && isRunning(pid) && process.kill(pid, 'SIGKILL'))
process.once('exit', stop)
const subjects: [string, number | undefined][] = [
  ['this checker', process.pid],
  ['a process in new UTS, IPC, network, mount, PID and cgroup namespaces', sleepers[0]],
  ['a process after `unshare --pid` without --fork (its pid_for_children is not its pid)', sleepers[1]],
  [`the homework's: a process of \`${unshareUr}\` (new user and UTS namespaces)`, sleepers[2]],
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

// The homework's subject, once more: the user namespace it reports is not the checker's, and is the one that maps root to the user.
const subject = sleepers[2]
if (subject !== undefined) {
  const uidMap = readFileSync(`/proc/${subject}/uid_map`, 'utf8').trim().replace(/\s+/g, ' ')
  const ours = parse((await runProgram(dir, [String(process.pid)])).stdout).user
  const its = parse((await runProgram(dir, [String(subject)])).stdout).user
  c.ok(`\`${unshareUr}\`: your lsns reports its user namespace, a new one (not the checker's), whose uid_map maps root to uid ${user}`,
    its !== undefined && ours !== undefined && its !== ours && its === (await lsns(subject)).user && uidMap === `0 ${user} 1`, {
      ran: `${shownProgram(dir, [String(subject)])}; cat /proc/${subject}/uid_map`,
      expected: `a user line whose inode is not ${ours ?? 'the checker\'s'}; uid_map 0 ${user} 1`,
      got: `user ${its ?? '(no user line)'}, the checker's ${ours ?? '(no user line)'}; uid_map ${uidMap}`,
    })
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
