// Check P1A: `propagation` reads mountinfo as findmnt does, on this host
// and on simulated ones; the command is PID 1 of its own PID namespace with
// its own proc; the host's mount table does not change, even when its / is
// shared; lsns tells proc on /proc from proc elsewhere. The explanation in
// answers.md is for a person.
//
// Usage: npm run homework -- p1a

import { readlinkSync } from 'node:fs'
import { $ } from 'zx'
import { readMountInfo } from '../../../shared/mounts.ts'
import { findProcesses } from '../../../scripts/lib/procfs.ts'
import { waitFor } from '../../../scripts/lib/wait.ts'
import { repoDir, stateDir } from '../../../shared/settings.ts'
import { Checks, tsx } from '../../../scripts/lib/verify.ts'
import { answerUnder, forAPerson, readTarget, runProgram, shownProgram, target, tempDir } from '../checks.ts'

const slug = 'p1a-proc'
const dir = target(slug)
const c = new Checks('Homework P1A: proc for a new PID namespace, without touching the host')

// 1. `propagation`, against findmnt, on this host and on simulated hosts made with unshare.
const unshare = (propagation: string) => ['unshare', '--mount', '--propagation', propagation]
// A slave needs its master's namespace alive: a shell stays there (`; exit` keeps sh from exec'ing away).
const slaves = [...unshare('shared'), 'sh', '-c', '"$@"; exit $?', 'sh', ...unshare('slave')]
const hosts: { name: string; prefix: string[]; setup: string }[] = [
  { name: 'this host', prefix: [], setup: '' },
  { name: 'a host whose / is shared (as systemd makes it)', prefix: unshare('shared'), setup: '' },
  { name: 'a host whose mounts are slaves', prefix: slaves, setup: '' },
  { name: 'a host whose / is shared and a slave', prefix: slaves, setup: 'mount --make-shared /' },
  { name: 'a host whose /proc is unbindable', prefix: unshare('private'), setup: 'mount --make-unbindable /proc' },
]
for (const host of hosts) {
  const script = `${host.setup}\nfor t in / /proc; do echo "$t $(findmnt -n -o PROPAGATION -M $t)"; done\necho ---\nexec "$@"`
  const out = await $({ cwd: repoDir, nothrow: true, quiet: true })`${host.prefix} sh -c ${script} sh ${tsx} ${dir} propagation`
  const [findmnt, ours] = out.stdout.split('---\n').map((part) => part.trim())
  c.equal(`\`propagation\` on ${host.name}: ${findmnt.replace(/\n/g, ', ')}`, ours ?? out.stderr.trim(), findmnt,
    `${host.prefix.length ? `${host.prefix.join(' ')} ` : ''}${host.setup ? `${host.setup}; ` : ''}${shownProgram(dir, ['propagation'])}  # vs findmnt -o PROPAGATION`)
}

// 2. The command is PID 1, and its /proc shows its namespace, not the host's processes.
const hostPidNs = readlinkSync('/proc/self/ns/pid')
const looks = ['run', 'sh', '-c', 'echo $$; ls /proc']
const looked = await runProgram(dir, looks)
const [pid, ...entries] = looked.stdout.trim().split('\n')
const pids = entries.filter((name) => /^\d+$/.test(name))
c.equal('inside, the command is PID 1 (`echo $$`)', pid, '1', shownProgram(dir, looks))
c.ok('…and `ls /proc` shows PID 1 and none of the host\'s processes', pids.includes('1') && !pids.includes(String(process.pid)) && pids.length < 20, {
  ran: shownProgram(dir, looks),
  expected: `1 and a few more; not this checker's PID ${process.pid}`,
  got: looked.exitCode === 0 ? pids.join(' ') : `exit ${looked.exitCode}: ${looked.stderr.trim()}`,
})

// 3. The host's mount table: the same before, during and after, with proc on /proc and elsewhere.
const procDir = tempDir('p1a')
// Other containers on this machine may come and go under the state dir meanwhile: those are not ours.
const table = (pid: number | 'self' = 'self') => readMountInfo(pid).filter((m) => !m.mountPoint.startsWith(`${stateDir}/`)).map((m) => `${m.fstype} ${m.source} on ${m.mountPoint}`)
for (const procAt of ['/proc', procDir]) {
  const before = table()
  const held = await holdOpen([...(procAt === '/proc' ? [] : ['--proc-at', procAt])])
  const during = held.ready ? table() : undefined
  const ended = await held.end()
  const after = table()
  c.ok(`with proc on ${procAt === '/proc' ? '/proc' : 'another directory'}, the host's mount table is the same before, during and after`,
    during !== undefined && same(before, during) && same(before, after) && ended.exitCode === 0, {
      ran: `cat /proc/self/mountinfo  # on the host, during ${held.shown}`,
      expected: 'no change, and the run exits 0',
      got: during ? `${changes(before, during) || 'no change during'}; ${changes(before, after) || 'no change after'}; exit ${ended.exitCode}` : `the command never ran: ${ended.stderr.trim() || `exit ${ended.exitCode}`}`,
    })
}

// …and on a host whose / is shared: the copy in the child's namespace is a peer of the host's.
const shared = await holdOpen([], unshare('shared'))
const launcher = shared.ready ? findProcesses((argv) => argv.includes(shared.marker) && argv.includes('run') && !argv.includes('child'))[0] : undefined
const procMounts = launcher ? readMountInfo(launcher).filter((m) => m.mountPoint === '/proc').length : 0
const sharedEnd = await shared.end()
c.ok('on a host whose / is shared, the child\'s proc does not show up on the host\'s /proc', shared.ready && procMounts === 1, {
  ran: `${shared.shown}  # then grep ' /proc ' /proc/<pid of that host>/mountinfo`,
  expected: 'the command runs; one proc mount on /proc on that host, its own',
  got: shared.ready ? `${procMounts} mounts on /proc` : `the command never ran: ${sharedEnd.stderr.trim() || `exit ${sharedEnd.exitCode}`}`,
})

// 4. lsns reads /proc: the new PID namespace with proc on /proc, the host's otherwise.
const lsns = ['lsns', '-n', '-r', '-o', 'NS,TYPE']
const onProc = await runProgram(dir, ['run', ...lsns])
const elsewhere = await runProgram(dir, ['run', '--proc-at', procDir, ...lsns])
const pidNamespaces = (out: string) => out.split('\n').filter((line) => line.endsWith(' pid')).map((line) => `pid:[${line.split(' ')[0]}]`)
c.ok('`lsns` inside, proc on /proc: only the new PID namespace, not the host\'s', pidNamespaces(onProc.stdout).length === 1 && !pidNamespaces(onProc.stdout).includes(hostPidNs), {
  ran: shownProgram(dir, ['run', ...lsns]),
  expected: `one pid namespace, not the host's ${hostPidNs}`,
  got: onProc.exitCode === 0 ? pidNamespaces(onProc.stdout).join(' ') || 'no pid namespace' : `exit ${onProc.exitCode}: ${onProc.stderr.trim()}`,
})
c.ok('`lsns` inside, proc elsewhere: the host\'s namespaces, as on the host', pidNamespaces(elsewhere.stdout).includes(hostPidNs), {
  ran: shownProgram(dir, ['run', '--proc-at', procDir, ...lsns]),
  expected: `the host's ${hostPidNs} among them`,
  got: elsewhere.exitCode === 0 ? pidNamespaces(elsewhere.stdout).join(' ') || 'no pid namespace' : `exit ${elsewhere.exitCode}: ${elsewhere.stderr.trim()}`,
})

// 5. answers.md, for a person.
const answers = readTarget(slug, 'answers.md')
const questions = ['How are / and /proc mounted', 'lsns with proc']
const empty = questions.filter((q) => answerUnder(answers, q) === '')
c.ok('answers.md answers both questions', empty.length === 0, { ran: `cat ${dir}/answers.md`, expected: 'text under each heading', got: `no answer under: ${empty.join(', ')}` })
forAPerson(`${dir}/answers.md: how the propagation was read, and why lsns lists the host's namespaces when proc is not on /proc`)

c.finish()

/** Run `sh -c 'echo ready; read x'` in the program and wait until it says ready; end() lets it finish. */
async function holdOpen(options: string[], prefix: string[] = []) {
  const marker = `p1a-${process.pid}-${Math.random().toString(16).slice(2, 8)}`
  const args = ['run', ...options, 'sh', '-c', 'echo ready; read x', marker]
  const run = runProgram(dir, args, { prefix })
  let out = ''
  let ended = false
  run.stdout.on('data', (chunk: Buffer) => (out += chunk))
  void run.finally(() => (ended = true))
  const ready = (await waitFor(() => (out.includes('ready') ? true : ended ? false : undefined), 15_000)) === true
  return {
    ready,
    marker,
    shown: `${prefix.length ? `${prefix.join(' ')} ` : ''}${shownProgram(dir, args)}`,
    end: async () => {
      run.stdin.end('go\n')
      return run
    },
  }
}

function same(a: string[], b: string[]): boolean {
  return JSON.stringify([...a].sort()) === JSON.stringify([...b].sort())
}

function changes(before: string[], after: string[]): string {
  return [...after.filter((m) => !before.includes(m)).map((m) => `+ ${m}`), ...before.filter((m) => !after.includes(m)).map((m) => `- ${m}`)].join(', ')
}
