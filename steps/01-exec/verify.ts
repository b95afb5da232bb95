// Verify step 01: the command runs with our stdin/stdout/stderr, its exit
// code comes back, and on the host it is a child of the step's process.
//
// Usage: npx tsx steps/01-exec/verify.ts

import { Checks, runStep, shown } from '../../shared/verify.ts'
import { cmdline, findProcesses, parentPid, waitFor } from '../../shared/procfs.ts'

const step = '01-exec'
const c = new Checks(`Step ${step}: exec`)

const echo = await runStep(step, ['echo', 'ok', 'wow'])
c.equal('the command\'s output reaches our stdout', echo.stdout, 'ok wow\n', shown(step, ['echo', 'ok', 'wow']))

const cat = await runStep(step, ['cat'], { input: 'from stdin\n' })
c.equal('our stdin reaches the command', cat.stdout, 'from stdin\n', `echo 'from stdin' | ${shown(step, ['cat'])}`)

for (const code of [0, 7]) {
  const args = ['sh', '-c', `exit ${code}`]
  c.equal(`exit code ${code} comes back`, (await runStep(step, args)).exitCode, code, shown(step, args))
}

const missing = await runStep(step, ['no-such-command'])
c.equal('a missing command exits 127', missing.exitCode, 127, shown(step, ['no-such-command']))
c.equal('…with one line on stderr', missing.stderr.trim().split('\n').length, 1, shown(step, ['no-such-command']))

const notExecutable = await runStep(step, ['/etc/passwd'])
c.equal('a file that is not executable exits 126', notExecutable.exitCode, 126, shown(step, ['/etc/passwd']))

// A sleep with an argument nobody else uses, so we can find it in /proc.
const marker = `${Math.floor(30 + Math.random() * 1000)}.${process.pid}`
const sleeper = runStep(step, ['sleep', marker])
const pid = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker)[0])
const parent = pid ? cmdline(parentPid(pid)) : []
c.ok(
  'on the host, the command\'s parent is the step itself (the child became the command)',
  parent.some((arg) => arg.endsWith(`steps/${step}`)) && parent.includes('run'),
  { ran: `ps -o ppid= -p <pid of sleep ${marker}>`, expected: `…steps/${step} run sleep ${marker}`, got: parent.join(' ') || 'no sleep process found' },
)
sleeper.kill('SIGTERM')
const stopped = await sleeper
c.equal('SIGTERM to the step ends the command, exit 143 (128+15)', stopped.exitCode, 143, `kill -TERM <step>`)

c.finish()
