// Verify step 02: the container has its own hostname, the container's id;
// renaming it inside leaves the host's alone, because only the UTS
// namespace is new. Stopping the step stops the container, and so does
// killing the step outright.
//
// Usage: npx tsx steps/02-uts/verify.ts

import { hostname } from 'node:os'
import { Checks, killSleeper, runSleeper, runStep, shown, signalStep } from '../../scripts/lib/verify.ts'
import { namespaceOf } from '../../shared/namespaces.ts'
import { isRunning } from '../../shared/procfs.ts'
import { waitFor } from '../../scripts/lib/wait.ts'
import { sethostname } from '../../shared/uts.ts'
import { requireRoot } from '../../shared/cli.ts'

const step = '02-uts'
requireRoot() // namespaces, mounts and cgroups: re-runs this under sudo if need be
const c = new Checks(`Step ${step}: UTS namespace`)

// If the UTS namespace is missing, the runs below rename the host: put its name back at the end.
const before = hostname()
process.once('exit', () => hostname() !== before && sethostname(before))

const name = await runStep(step, ['hostname'])
c.ok('inside, the hostname is the container\'s id (12 hex digits)', /^[0-9a-f]{12}\n$/.test(name.stdout), {
  ran: shown(step, ['hostname']),
  expected: '12 hex digits, such as 3f9a1c0b7d2e',
  got: name.stdout || name.stderr,
})

const rename = ['sh', '-c', 'hostname other && hostname']
const renamed = await runStep(step, rename)
c.equal('inside, `hostname other` renames the container', renamed.stdout.trim(), 'other', shown(step, rename))
c.equal('…and the host keeps its hostname', hostname(), before, 'hostname  # on the host, before and after')

// A namespace is named by its inode: two processes share one if the links match.
for (const kind of ['uts', 'pid', 'mnt', 'net', 'ipc']) {
  const readlink = ['readlink', `/proc/self/ns/${kind}`]
  const inside = (await runStep(step, readlink)).stdout.trim()
  const host = namespaceOf('self', kind)
  if (kind === 'uts') {
    c.ok('the UTS namespace inside is a new one', inside.startsWith('uts:[') && inside !== host, {
      ran: shown(step, readlink),
      expected: `uts:[…], not the host's ${host}`,
      got: inside,
    })
  } else {
    c.equal(`the ${kind} namespace inside is still the host's`, inside, host, shown(step, readlink))
  }
}

const exit7 = ['sh', '-c', 'exit 7']
c.equal('exit code 7 comes back', (await runStep(step, exit7)).exitCode, 7, shown(step, exit7))
c.equal('a missing command exits 127', (await runStep(step, ['no-such-command'])).exitCode, 127, shown(step, ['no-such-command']))

// Ctrl-C or kill: the step passes the signal on to the container, and sends
// SIGKILL if it is still there after 2 s.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  const s = await runSleeper(step)
  const stopped = await signalStep(s, signal)
  c.ok(`${signal} to the step ends it within 6 s`, s.sleep !== undefined && stopped.ms < 6000 && !isRunning(s.sleep), {
    ran: `kill -${signal.slice(3)} <step>  # during ${shown(step, ['sleep', s.marker])}`,
    expected: 'the step and its sleep gone in < 6000 ms',
    got: s.sleep && s.step ? `${stopped.ms < Infinity ? `ended in ${stopped.ms} ms, exit ${stopped.exitCode}` : 'still running after 10 s'}, sleep ${isRunning(s.sleep) ? 'running' : 'gone'}` : 'no sleep or no step process found',
  })
  await killSleeper(s)
}

// PR_SET_PDEATHSIG: when the step dies, even by SIGKILL, the kernel kills the container.
const orphan = await runSleeper(step)
if (orphan.step) process.kill(orphan.step, 'SIGKILL')
const gone = orphan.sleep && (await waitFor(() => (isRunning(orphan.sleep!) ? undefined : true), 5000))
c.ok('SIGKILL to the step kills the container too', orphan.step !== undefined && gone === true, {
  ran: `kill -KILL <step>  # during ${shown(step, ['sleep', orphan.marker])}`,
  expected: 'the sleep gone within 5 s',
  got: orphan.sleep && orphan.step ? `sleep ${orphan.sleep} still running` : 'no sleep or no step process found',
})
await killSleeper(orphan)

c.finish()
