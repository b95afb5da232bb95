// Verify step 02: the container has its own hostname, the container's id;
// renaming it inside leaves the host's alone, because only the UTS
// namespace is new. Stopping the step stops the container, and so does
// killing the step outright.
//
// Usage: npx tsx steps/02-uts/verify.ts

import { hostname } from 'node:os'
import { namespaceOf } from '../../shared/namespaces.ts'
import { sethostname } from '../../shared/uts.ts'
import { checkDeathSignal, checkExitCodes, checkSignalEnds, Checks, killSleeper, runSleeper, runStep, shown } from '../../scripts/lib/verify.ts'
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

await checkExitCodes(c, step)
// Ctrl-C or kill: the step passes the signal on to the container, and sends
// SIGKILL if it is still there after 2 s.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  const s = await runSleeper(step)
  await checkSignalEnds(c, step, s, signal)
  await killSleeper(s)
}
// PR_SET_PDEATHSIG: when the step dies, even by SIGKILL, the kernel kills the container.
await checkDeathSignal(c, step)

c.finish()
