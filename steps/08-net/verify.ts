// Verify step 08: the container has a network namespace of its own, with lo
// up and eth0 holding a leased address of the project's subnet; its veth
// peer is on the host's cfs0 bridge while it runs. Containers reach each
// other and the bridge, and when the last one ends the host's links and
// routes are as before. A SIGKILLed step leaves its bridge, lease and
// directory, which `npm run clean` removes; a subnet the host already uses
// is refused. (Ten containers at once, under load, are
// test/concurrency.test.ts's.)
//
// Only addresses in the project's subnet are pinged: traffic stays on this machine.
//
// Usage: npx tsx steps/08-net/verify.ts

import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { $, type ProcessPromise } from 'zx'
import { namespaceOf } from '../../shared/namespaces.ts'
import { BRIDGE, liveLeases, readLease, SUBNET } from '../../shared/net.ts'
import { isRunning } from '../../shared/procfs.ts'
import { containersDir, PREFIX, repoDir, stateDir } from '../../shared/settings.ts'
import { findLeftovers } from '../../scripts/lib/clean.ts'
import { listDir, readText } from '../../scripts/lib/files.ts'
import { cmdline, findProcesses, parentPid } from '../../scripts/lib/procfs.ts'
import { Checks, killSleeper, runSleeper, runStep, shown, tsx, type Sleeper } from '../../scripts/lib/verify.ts'
import { scaled, waitFor } from '../../scripts/lib/wait.ts'
import { requireRoot } from '../../shared/cli.ts'

const step = '08-net'
requireRoot() // namespaces, mounts and cgroups: re-runs this under sudo if need be
const c = new Checks(`Step ${step}: network namespace, veth pair and bridge`)
const leasesDir = join(stateDir, 'net', 'leases')

// The host's network before any container: what it must be again at the
// end. Other runs of this step (npm run bench, a learner) may come and go
// meanwhile: checks that need the bridge gone first wait until they are done.
await quiet()
const linksBefore = (await hostLinks()).filter((name) => !name.startsWith(PREFIX))
const routesBefore = (await hostRoutes()).filter((route) => !route.includes(` dev ${PREFIX}`))
const stale = (await hostLinks()).filter((name) => name.startsWith(PREFIX))
if (stale.length) console.log(`  note: the host already has ${stale.join(' ')}, left by a crash: the last container out removes the bridge`)

const look = ['sh', '-c', 'ip addr; echo ---; ip route; echo ---; readlink /proc/self/ns/net']
const looked = await runStep(step, look)
const lookShown = shown(step, look)
const [addrText = '', routeText = '', rest = ''] = looked.stdout.split('---\n')
const links = parseIpAddr(addrText)
const lo = links.find((l) => l.name === 'lo')
const eth0 = links.find((l) => l.name === 'eth0')
c.equal('inside, `ip addr` lists only lo and eth0', links.map((l) => l.name), ['lo', 'eth0'], lookShown)
c.ok('…lo is UP, with 127.0.0.1', lo?.flags.includes('UP') === true && lo.inet.includes('127.0.0.1/8'), {
  ran: lookShown,
  expected: 'lo: <LOOPBACK,UP,LOWER_UP> … inet 127.0.0.1/8',
  got: lo ? `lo: <${lo.flags.join(',')}> inet ${lo.inet.join(' ') || 'none'}` : addrText || looked.stderr.trim(),
})
const leased = eth0?.inet.find((a) => SUBNET.contains(a.split('/')[0]))
c.ok(`…eth0 is UP, with an address in ${SUBNET.cidr}`, eth0?.flags.includes('UP') === true && leased?.endsWith(`/${SUBNET.prefix}`) === true, {
  ran: lookShown,
  expected: `eth0: <…,UP,…> inet ${SUBNET.hosts[0]}/${SUBNET.prefix} (or another in ${SUBNET.cidr})`,
  got: eth0 ? `eth0: <${eth0.flags.join(',')}> inet ${eth0.inet.join(' ') || 'none'}` : 'no eth0',
})
const defaultRoute = routeText.split('\n').find((line) => line.startsWith('default'))?.trim() ?? 'no default route'
c.equal('…and the default route goes via the bridge', defaultRoute, `default via ${SUBNET.gateway} dev eth0`, lookShown)
const netns = rest.split('\n')[0]
c.ok('the network namespace inside is a new one', netns.startsWith('net:[') && netns !== namespaceOf('self', 'net'), {
  ran: `${lookShown}  # vs readlink /proc/self/ns/net on the host`,
  expected: `net:[…] other than the host's ${namespaceOf('self', 'net')}`,
  got: netns || looked.stderr.trim(),
})

// The child must not touch eth0 before the parent has made it: it waits on
// the sync pipe. Freeze the parent (SIGSTOP) for a second right after it
// starts the child, as a slow host would, and the network must still come up.
const slowMarker = `slow-parent-${process.pid}`
const slowArgs = ['sh', '-c', 'ip -o -4 addr show dev eth0', slowMarker]
const slow = runStep(step, slowArgs)
// The step's own node process: the one whose parent (tsx's launcher) has the same arguments.
const slowStep = await waitFor(() => {
  const runs = findProcesses((argv) => argv.includes(slowMarker) && argv.includes('run'))
  return runs.find((pid) => runs.includes(parentPid(pid)))
})
const froze = await freezeAfterSpawn(slowStep, 1000)
const slowed = await slow
const slowAddress = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(slowed.stdout)?.[1]
c.ok('the child waits for the parent: with the parent frozen for 1 s after it starts the child, eth0 still comes up',
  froze && slowed.exitCode === 0 && slowAddress !== undefined && SUBNET.contains(slowAddress), {
    ran: `${shown(step, slowArgs)}  # kill -STOP <step> as soon as it has a child, kill -CONT 1 s later`,
    expected: `exit 0, inet ${SUBNET.hosts[0]}/${SUBNET.prefix} (or another in ${SUBNET.cidr})`,
    got: froze ? `exit ${slowed.exitCode}: ${(slowed.stdout + slowed.stderr).trim()}` : 'the step and its child were not found in time',
  })

// Two containers at once: both print their address, then each pings the
// other (whose address it reads on stdin) and the bridge, and waits.
const pair = [start(), start()]
await allSaid(pair, (p) => p.address !== undefined)
const [a, b] = pair
const brif = bridgePorts()
const hostDuring = await hostLinks()
c.ok(`while they run, the host has the ${BRIDGE} bridge, and each container's cfs<id> veth is a port of it`,
  a.id !== '' && b.id !== '' && hostDuring.includes(BRIDGE) && brif.includes(`cfs${a.id}`) && brif.includes(`cfs${b.id}`), {
    ran: `ip -o link; ls /sys/class/net/${BRIDGE}/brif/`,
    expected: `${BRIDGE} in the list, and cfs${a.id || '<id of A>'} cfs${b.id || '<id of B>'} in brif/`,
    got: `links: ${hostDuring.join(' ')}; brif: ${brif.join(' ') || 'none'}${a.id && b.id ? '' : `; A said ${a.out()} ${a.err()}, B said ${b.out()} ${b.err()}`}`,
  })
a.ping(b.address)
b.ping(a.address)
await allSaid(pair, (p) => p.out().includes('done\n'))
c.ok('A reaches B', a.reached(b.address), { ran: `ping -c 1 -W 3 ${b.address ?? '<B>'}  # in A`, expected: 'a reply', got: a.out().trim() })
c.ok('B reaches A', b.reached(a.address), { ran: `ping -c 1 -W 3 ${a.address ?? '<A>'}  # in B`, expected: 'a reply', got: b.out().trim() })
c.ok(`both reach the host's bridge, ${SUBNET.gateway}`, a.reached(SUBNET.gateway) && b.reached(SUBNET.gateway), {
  ran: `ping -c 1 -W 3 ${SUBNET.gateway}  # in A and in B`,
  expected: 'a reply in both',
  got: `A: ${a.out().trim()}; B: ${b.out().trim()}`,
})
await endAll(pair)

await quiet()
c.equal('after all ended, the host\'s interfaces are as before: the last one out removed the bridge', await hostLinks(), linksBefore, 'ip -o link  # before and after')
c.equal('…and so are its routes', await hostRoutes(), routesBefore, 'ip route  # before and after')

// A SIGKILLed step cannot release its network: the bridge, lease and
// directory stay (the veth goes with the namespace) until `npm run clean`.
const orphan = await runSleeper(step)
const lease = orphan.step ? leaseOf(orphan.step) : undefined
const orphanDir = lease && join(containersDir, lease.id)
const vethDuring = lease ? existsSync(`/sys/class/net/cfs${lease.id}`) : false
if (orphan.step) process.kill(orphan.step, 'SIGKILL')
await stepGone(orphan)
const left = {
  vethWhileRunning: vethDuring,
  bridge: existsSync(`/sys/class/net/${BRIDGE}`),
  lease: lease !== undefined && existsSync(join(leasesDir, lease.address)),
  dir: orphanDir !== undefined && existsSync(orphanDir),
}
c.ok('SIGKILL to the step leaves the bridge, the address lease and the container\'s directory behind', Object.values(left).every(Boolean), {
  ran: `kill -KILL <step>  # during ${shown(step, ['sleep', orphan.marker])}; ip -o link; ls ${leasesDir} ${containersDir}`,
  expected: `${BRIDGE}, ${lease ? join(leasesDir, lease.address) : 'its lease'} and ${orphanDir ?? 'its directory'} still there`,
  got: lease ? JSON.stringify(left) : 'no lease of this run found while it ran',
})
// The kernel destroys a network namespace's devices in the background, a moment after its last process.
const vethGone = lease !== undefined && (await waitFor(() => (existsSync(`/sys/class/net/cfs${lease.id}`) ? undefined : true), 5000)) === true
c.ok('…but not its veth: the pair went with the container\'s network namespace', vethGone, {
  ran: `ip link show cfs${lease?.id ?? '<id>'}`,
  expected: 'Device does not exist (within 5 s)',
  got: lease ? 'still there' : 'no lease of this run found while it ran',
})
await quiet()
const clean = await $({ cwd: repoDir, nothrow: true, quiet: true })`${tsx} scripts/clean.ts`
const linksAfterClean = await hostLinks()
const leaseLeft = lease && listDir(leasesDir).find((address) => readText(join(leasesDir, address)).startsWith(`${lease.id} `))
c.ok('…and `npm run clean` removes them: the host\'s interfaces are as before, no lease, no directory',
  JSON.stringify(linksAfterClean) === JSON.stringify(linksBefore) && lease !== undefined && !leaseLeft && !existsSync(orphanDir!), {
    ran: `npm run clean; ip -o link; ls ${leasesDir} ${containersDir}`,
    expected: `links ${linksBefore.join(' ')}; no lease, no directory`,
    got: `links ${linksAfterClean.join(' ')}; leases: ${listDir(leasesDir).sort().join(' ') || 'none'}; dirs: ${listDir(containersDir).sort().join(' ') || 'none'}; clean said: ${clean.stdout.trim()} ${clean.stderr.trim()}`,
  })

// A subnet the host already uses (its own address's /24) is refused, before anything is made.
const hostAddress = await firstHostAddress()
const clashing = hostAddress ? `${hostAddress.split('.').slice(0, 3).join('.')}.0/24` : undefined
if (clashing) {
  await quiet()
  if (existsSync(`/sys/class/net/${BRIDGE}`)) console.log(`  note: ${BRIDGE} is up already (another container?): the step checks the subnet only when it creates the bridge`)
  const leftBefore = leftovers()
  const refused = await runStep(step, ['true'], { env: { CFS_SUBNET: clashing } })
  const lines = refused.stderr.trim().split('\n')
  c.ok(`CFS_SUBNET=${clashing}, which the host uses, fails with one line and exit 125`, refused.exitCode === 125 && lines.length === 1 && /in use|routed/.test(lines[0]), {
    ran: `CFS_SUBNET=${clashing} ${shown(step, ['true'])}`,
    expected: `exit 125, cfs: ${clashing} is already in use on this host (…)`,
    got: `exit ${refused.exitCode}, ${refused.stderr.trim() || 'nothing on stderr'}`,
  })
  await quiet()
  const left = leftovers().filter((item) => !leftBefore.includes(item))
  c.equal('…and leaves nothing: no interface, no lease, no directory', { links: await hostLinks(), left }, { links: linksBefore, left: [] },
    `ip -o link; ls ${leasesDir} ${containersDir}  # what npm run clean would remove`)
} else {
  c.ok('CFS_SUBNET set to a range the host uses fails', false, { ran: 'ip -j -4 addr', expected: 'an IPv4 address on the host outside the loopback', got: 'none' })
}

c.finish()

/** A container that prints its id and address, pings what it is given, and waits for stdin to close. */
interface Pinger {
  run: ProcessPromise
  out: () => string
  err: () => string
  ended: () => boolean
  id: string
  address?: string
  ping: (peer?: string) => void
  reached: (address?: string) => boolean
}

function start(): Pinger {
  const script = `hostname; ip -o -4 addr show dev eth0; read peer; for a in $peer ${SUBNET.gateway}; do
    if ping -c 1 -W 3 $a >/dev/null 2>&1; then echo "reached $a"; else echo "no reply from $a"; fi; done; echo done; read end`
  const run = runStep(step, ['sh', '-c', script])
  let out = ''
  let err = ''
  let ended = false
  run.stdout.on('data', (chunk: Buffer) => (out += chunk))
  run.stderr.on('data', (chunk: Buffer) => (err += chunk))
  void Promise.resolve(run).then(() => (ended = true))
  return {
    run,
    out: () => out,
    err: () => err,
    ended: () => ended,
    get id() {
      return /^[0-9a-f]{12}$/m.exec(out)?.[0] ?? ''
    },
    get address() {
      const found = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(out)?.[1]
      return found && SUBNET.contains(found) ? found : undefined
    },
    // Only an address of the project's subnet, so no ping ever leaves this machine.
    ping: (peer) => void run.stdin.write(`${peer && SUBNET.contains(peer) ? peer : ''}\n`),
    reached: (address) => address !== undefined && out.includes(`reached ${address}\n`),
  }
}

// Wait (20 s at most) until each container has said what `test` looks for, or ended.
async function allSaid(pingers: Pinger[], test: (p: Pinger) => boolean): Promise<void> {
  await waitFor(() => (pingers.every((p) => test(p) || p.ended()) ? true : undefined), 20_000)
}

// Close each container's stdin, so its last `read` returns and it exits; wait for all.
async function endAll(pingers: Pinger[]): Promise<void> {
  for (const p of pingers) p.run.stdin.end()
  await Promise.all(pingers.map((p) => p.run))
}

// Once `stepPid` has started the container's child, stop it for `ms`, then let it go on.
// A busy loop: the parent takes only some 20 ms from starting the child to telling it to go on.
async function freezeAfterSpawn(stepPid: number | undefined, ms: number): Promise<boolean> {
  const deadline = Date.now() + scaled(10_000) // tsx alone takes longer than 10 s to start a step under emulation
  while (stepPid && Date.now() < deadline && isRunning(stepPid)) {
    const children = readText(`/proc/${stepPid}/task/${stepPid}/children`).split(' ').filter(Boolean).map(Number)
    if (children.some((pid) => cmdline(pid).includes('child'))) {
      process.kill(stepPid, 'SIGSTOP')
      try {
        await delay(ms)
      } finally {
        process.kill(stepPid, 'SIGCONT')
      }
      return true
    }
  }
  return false
}

// Wait (15 s at most) until no other run of the step holds an address.
async function quiet(): Promise<void> {
  const calm = await waitFor(() => (liveLeases().length ? undefined : true), 15_000)
  if (!calm) console.log(`  note: other containers still hold addresses: ${liveLeases().map((l) => `${l.address} (${l.id})`).join(' ')}`)
}

// What `npm run clean` would remove now (interfaces, directories, leases), as "kind name".
function leftovers(): string[] {
  return findLeftovers().filter((item) => !item.inUse && item.kind !== 'cgroup').map((item) => `${item.kind} ${item.name}`)
}

// Ports of the bridge: the host's ends of the veth pairs.
function bridgePorts(): string[] {
  return listDir(`/sys/class/net/${BRIDGE}/brif`).sort()
}

// `ip -o link` names, without the @peer suffix.
async function hostLinks(): Promise<string[]> {
  const text = (await $({ nothrow: true, quiet: true })`ip -o link`).stdout
  return text.split('\n').filter(Boolean).map((line) => line.split(': ')[1].split('@')[0])
}

async function hostRoutes(): Promise<string[]> {
  return (await $({ nothrow: true, quiet: true })`ip route`).stdout.split('\n').filter(Boolean)
}

// The host's first IPv4 address outside the loopback and the project's subnet (eth0's, here).
async function firstHostAddress(): Promise<string | undefined> {
  const links = JSON.parse((await $({ nothrow: true, quiet: true })`ip -j -4 addr`).stdout || '[]') as { ifname: string; addr_info: { local: string }[] }[]
  return links.filter((l) => l.ifname !== 'lo').flatMap((l) => l.addr_info.map((a) => a.local)).find((a) => !SUBNET.contains(a))
}

// The lease (address and container id) whose parent is `stepPid`.
function leaseOf(stepPid: number): { address: string; id: string } | undefined {
  for (const address of listDir(leasesDir)) {
    const lease = readLease(join(leasesDir, address))
    if (lease?.pid === stepPid) return { address, id: lease.id }
  }
  return undefined
}

// After a SIGKILL to the step: wait (5 s at most) for the run to end by
// itself, so tsx reaps the step. Until then it is a zombie, which
// `npm run clean` counts as a live parent (kill -0 succeeds).
async function stepGone(s: Sleeper): Promise<void> {
  await Promise.race([s.run, delay(5000, undefined, { ref: false })])
  await killSleeper(s)
  await waitFor(() => (s.step && existsSync(`/proc/${s.step}`) ? undefined : true), 5000)
}

// `ip addr` (iproute2 or busybox): each link's name, flags and IPv4 addresses.
function parseIpAddr(text: string): { name: string; flags: string[]; inet: string[] }[] {
  const links: { name: string; flags: string[]; inet: string[] }[] = []
  for (const line of text.split('\n')) {
    const head = /^\d+: ([^:@]+)(?:@\S+)?: <([^>]*)>/.exec(line)
    if (head) links.push({ name: head[1], flags: head[2].split(','), inet: [] })
    const inet = /^\s+inet (\S+)/.exec(line)
    if (inet && links.length) links.at(-1)!.inet.push(inet[1])
  }
  return links
}
