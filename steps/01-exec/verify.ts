// Verify step 01: the command runs with our stdin/stdout/stderr, its exit
// code comes back, it sees only the environment the step gives it, and on
// the host it is a child of the step's process.
//
// Usage: npx tsx steps/01-exec/verify.ts

import { cmdline, parentPid } from '../../scripts/lib/procfs.ts'
import { checkDeathSignal, Checks, killSleeper, runSleeper, runStep, shown, signalStep, stepPath } from '../../scripts/lib/verify.ts'

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

// A secret in the host's environment (as a cloud token would be) stays out.
const env = await runStep(step, ['-e', 'GREETING=hello', '-e', 'CFS_FROM_HOST', 'env'], { env: { CFS_FROM_HOST: 'passed', CFS_SECRET: 'hunter2' } })
const names = env.stdout.trim().split('\n').map((pair) => pair.split('=')[0]).sort()
c.equal('the command\'s environment is PATH, HOME, HOSTNAME, TERM and what -e adds, nothing else', names,
  ['CFS_FROM_HOST', 'GREETING', 'HOME', 'HOSTNAME', 'PATH', ...(process.env.TERM ? ['TERM'] : [])].sort(), `CFS_SECRET=hunter2 ${shown(step, ['-e', 'GREETING=hello', '-e', 'CFS_FROM_HOST', 'env'])}`)
c.ok('-e KEY=VALUE sets it, -e KEY passes the host\'s value, the host\'s secret is not there', env.stdout.includes('GREETING=hello\n') && env.stdout.includes('CFS_FROM_HOST=passed\n') && !env.stdout.includes('hunter2'),
  { expected: 'GREETING=hello, CFS_FROM_HOST=passed, no hunter2', got: env.stdout.trim().replaceAll('\n', ' ') })

const notExecutable = await runStep(step, ['/etc/passwd'])
c.equal('a file that is not executable exits 126', notExecutable.exitCode, 126, shown(step, ['/etc/passwd']))

// A sleep with an argument nobody else uses, so we can find it in /proc.
const sleeper = await runSleeper(step)
const parent = sleeper.sleep ? cmdline(parentPid(sleeper.sleep)) : []
c.ok(
  'on the host, the command\'s parent is the step itself (the child became the command)',
  parent.some((arg) => arg.endsWith(stepPath(step))) && parent.includes('run'),
  { ran: `ps -o ppid= -p <pid of sleep ${sleeper.marker}>`, expected: `…steps/${step} run sleep ${sleeper.marker}`, got: parent.join(' ') || 'no sleep process found' },
)
const stopped = await signalStep(sleeper, 'SIGTERM')
c.equal('SIGTERM to the step is passed on: the command dies of it, exit 143 (128+15)', stopped.exitCode, 143, `kill -TERM <step>`)
await killSleeper(sleeper)

// PR_SET_PDEATHSIG: if the step dies by SIGKILL, the kernel kills the command too.
await checkDeathSignal(c, step, 'the command')

c.finish()
