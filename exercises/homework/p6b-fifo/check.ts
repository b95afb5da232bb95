// Check P6B: the message goes through a FIFO in the given directory, which
// a process in another mount namespace (a container) has open; the FIFO
// and the containers are gone afterwards. The questions are for a person.
//
// Usage: npm run homework -- p6b

import { lstatSync, readdirSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { Checks } from '../../../scripts/lib/verify.ts'
import { answerUnder, forAPerson, readTarget, runProgram, shownProgram, target, tempDir } from '../checks.ts'

const dir = target('p6b-fifo')
const c = new Checks('Homework P6B: a FIFO between two containers')
const queue = tempDir('p6b')
const message = `hello through the FIFO, ${process.pid}`
const hostMnt = readlinkSync('/proc/self/ns/mnt')

// While it runs: FIFOs in the directory, and the processes (and mount namespaces) that have one open.
const fifos = new Set<string>()
const holders = new Map<number, string>()
const watch = setInterval(() => {
  for (const name of readdirSync(queue)) if (lstatSync(join(queue, name), { throwIfNoEntry: false })?.isFIFO()) fifos.add(join(queue, name))
  if (fifos.size === 0) return
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      if (readdirSync(`/proc/${pid}/fd`).some((fd) => fifos.has(readlinkSync(`/proc/${pid}/fd/${fd}`)))) holders.set(Number(pid), readlinkSync(`/proc/${pid}/ns/mnt`))
    } catch {} // gone meanwhile, or no access
  }
}, 20)
const result = await runProgram(dir, [queue, message], { timeoutMs: 60_000 })
clearInterval(watch)

c.ok('A printed the message B wrote', result.stdout.split('\n').includes(`A got: ${message}`), {
  ran: shownProgram(dir, [queue, message]), expected: `A got: ${message}`, got: `exit ${result.exitCode}: ${result.stdout.trim()} ${result.stderr.trim()}`.trim(),
})
c.ok('while it ran, a FIFO was in the directory', fifos.size > 0, { ran: `ls -l ${queue}  # every 20 ms`, expected: 'a p--------- entry', got: 'no FIFO seen' })
const inContainers = [...holders].filter(([, mnt]) => mnt !== hostMnt)
c.ok('…and a process in a mount namespace other than the host\'s (a container) had it open', inContainers.length > 0, {
  ran: 'readlink /proc/*/fd/*  # every 20 ms, and /proc/<pid>/ns/mnt of who has the FIFO open',
  expected: `a holder outside the host's ${hostMnt}`,
  got: holders.size ? `only host processes: ${[...holders.keys()].join(' ')}` : 'no process seen with it open',
})
c.equal('afterwards, the FIFO is gone', readdirSync(queue), [], `ls ${queue}`)
c.equal('the program exits 0', result.exitCode, 0, shownProgram(dir, [queue, message]))
const answers = readTarget('p6b-fifo', 'answers.md')
const unanswered = ['1.', '2.', '3.'].filter((q) => answerUnder(answers, q) === '')
c.ok('answers.md answers the three questions', unanswered.length === 0, { ran: `cat ${dir}/answers.md`, expected: 'text under each', got: `no answer under ${unanswered.join(' ')}` })
forAPerson(`${dir}/answers.md: the order of opening a FIFO's ends; why CLONE_NEWIPC would not stop it; a FIFO through a shared mount`)

c.finish()
