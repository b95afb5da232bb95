// Check P6A: the message goes from B to A, two different addresses on the
// bridge's subnet, the listener in a network namespace of its own, and
// nothing left afterwards.
//
// Usage: npm run homework -- p6a

import { readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { readLease, SUBNET } from '../../../shared/net.ts'
import { findProcesses } from '../../../scripts/lib/procfs.ts'
import { isRunning } from '../../../shared/procfs.ts'
import { stateDir } from '../../../shared/settings.ts'
import { Checks } from '../../../scripts/lib/verify.ts'
import { runProgram, shownProgram, target } from '../checks.ts'

const dir = target('p6a-net')
const c = new Checks('Homework P6A: two containers talking over the network')
const message = `hello from B, ${process.pid}`
const hostNet = readlinkSync('/proc/self/ns/net')

// While it runs, note every nc and its network namespace.
const seen = new Map<number, string>()
const watch = setInterval(() => {
  for (const pid of findProcesses((argv) => argv[0] === 'nc')) {
    try {
      seen.set(pid, readlinkSync(`/proc/${pid}/ns/net`))
    } catch {} // gone meanwhile
  }
}, 20)
const result = await runProgram(dir, [message], { timeoutMs: 60_000 })
clearInterval(watch)
const said = (who: string) => result.stdout.split('\n').find((line) => line.startsWith(`${who}: `))?.slice(who.length + 2).trim()
const [a, b] = [said('A'), said('B')]

c.equal('A got B\'s message, whole', said('A got'), message, shownProgram(dir, [message]))
c.ok('A and B have different addresses, both in the containers\' subnet', a !== undefined && b !== undefined && a !== b && SUBNET.contains(a) && SUBNET.contains(b), {
  ran: shownProgram(dir, [message]), expected: `A: 10.77.… and B: 10.77.…, different (${SUBNET.cidr})`, got: `A: ${a ?? 'none'}, B: ${b ?? 'none'}; exit ${result.exitCode} ${result.stderr.trim()}`,
})
c.equal('the program exits 0', result.exitCode, 0, shownProgram(dir, [message]))
const namespaces = [...new Set(seen.values())]
c.ok('while it ran, nc ran in a network namespace other than the host\'s', namespaces.some((ns) => ns !== hostNet), {
  ran: 'readlink /proc/<pid of each nc>/ns/net  # on the host, every 20 ms', expected: `a net:[…] other than the host's ${hostNet}`, got: namespaces.join(' ') || 'no nc seen',
})
await delay(300)
const stale = [a, b].filter((address): address is string => address !== undefined).filter((address) => {
  const lease = join(stateDir, 'net', 'leases', address)
  const pid = readLease(lease)?.pid
  return pid !== undefined && !isRunning(pid)
})
const left = [...seen.keys()].filter(isRunning)
c.ok('afterwards no nc is left, and both addresses are released', left.length === 0 && stale.length === 0, {
  ran: `ps -p <each nc>; ls ${stateDir}/net/leases`, expected: 'no process, no stale lease', got: `${left.length} nc running, stale leases: ${stale.join(' ') || 'none'}`,
})

c.finish()
