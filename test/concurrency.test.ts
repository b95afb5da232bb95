// Ten containers of step 08 started at the same moment: each gets its own
// id (and hostname), address in the project's subnet and veth on the
// bridge, all reach each other over it (each pings the next one's
// address), and all of it is gone afterwards. (steps/08-net/verify.ts
// checks what the step claims with one or two containers; the load is
// here.) Each publishes a port of its own (-p), so all ten rewrite the
// host's nftables table at once, under the lease lock. Only addresses in
// the project's subnet are pinged: traffic stays on this machine.

import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { setTimeout as delay } from 'node:timers/promises'
import { cgroupName, findHierarchies } from '../shared/cgroups.ts'
import { BRIDGE, liveLeases, SUBNET, vethName } from '../shared/net.ts'
import { nftPath, savedForwarding, TABLE, tableExists } from '../shared/firewall.ts'
import { waitFor } from '../scripts/lib/wait.ts'
import { containersDir, repoDir } from '../shared/settings.ts'
import { tsx } from '../scripts/lib/verify.ts'
import { leftoversOf } from '../scripts/lib/clean.ts'
import { rootOnly } from './helpers.ts'

const COUNT = 10
/** Container i publishes port PORT + i: ports nothing else uses here. */
const PORT = 28100

// Print the hostname and eth0's address, wait for the next container's
// address on stdin, ping it, then stay up until told to go (the one before
// may not have pinged this one yet). $0 is a marker, so /proc can find the runs.
const script = `hostname; ip -o -4 addr show dev eth0; read peer
if ping -c 1 -W 3 "$peer" >/dev/null 2>&1; then echo "reached $peer"; else echo "no reply from $peer"; fi
read done`

interface Run {
  marker: string
  stdout: string
  stderr: string
  exitCode?: number | null
  ended: Promise<number | null>
  write: (line: string) => void
  kill: () => void
}

function start(i: number): Run {
  const marker = `cfs-concurrency-${process.pid}-${i}`
  // env -u NODE_OPTIONS: as a learner runs it, without tap's preloads.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', tsx, 'steps/08-net', 'run', '-p', `${PORT + i}:80`, 'sh', '-c', script, marker], {
    cwd: repoDir, detached: true, stdio: ['pipe', 'pipe', 'pipe'],
  })
  const run: Run = {
    marker, stdout: '', stderr: '',
    ended: new Promise((resolve) => child.on('close', (code) => resolve(code))),
    write: (line) => child.stdin!.write(line),
    kill: () => {
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {}
    },
  }
  child.stdin!.on('error', () => {})
  child.stdout!.on('data', (chunk) => (run.stdout += chunk))
  child.stderr!.on('data', (chunk) => (run.stderr += chunk))
  return run
}

t.test(`${COUNT} containers of step 08 at once`, rootOnly(), async (t) => {
  const started = Date.now()
  const runs = Array.from({ length: COUNT }, (_, i) => start(i))
  t.teardown(() => runs.forEach((run) => run.kill()))
  try {
    // Up: every container printed its hostname and its address.
    const up = await waitFor(() => (runs.every((r) => /inet \d+\.\d+\.\d+\.\d+\//.test(r.stdout)) ? true : undefined), 60_000)
    t.ok(up, `all ${COUNT} containers came up within 60 s`, {
      diagnostic: !up, got: runs.map((r) => `${r.stdout.trim().split('\n').join(' / ')} ${r.stderr.trim()}`),
    })
    if (!up) return
    const ids = runs.map((r) => r.stdout.split('\n')[0].trim())
    const addresses = runs.map((r) => /inet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout)![1])
    t.comment(`ids: ${ids.join(' ')}\naddresses: ${addresses.join(' ')}`)
    t.equal(new Set(ids).size, COUNT, `${COUNT} different ids (the hostnames): ${ids.join(' ')}`)
    t.ok(ids.every((id) => /^[0-9a-f]{12}$/.test(id)), 'each id is 12 hex digits')
    t.equal(new Set(addresses).size, COUNT, `${COUNT} different addresses: ${addresses.join(' ')}`)
    t.same(addresses.filter((address) => !SUBNET.contains(address)), [], `each address is in the project's subnet, ${SUBNET.cidr}`)
    const veths = ids.map(vethName)
    t.equal(new Set(veths).size, COUNT, `${COUNT} different veth names on the host: ${veths.join(' ')}`)
    t.same(veths.filter((name) => !existsSync(`/sys/class/net/${name}`)), [], 'each container\'s veth, cfs<id>, is on the host while it runs')
    t.same(veths.filter((name) => !existsSync(`/sys/class/net/${BRIDGE}/brif/${name}`)), [], `…as a port of the ${BRIDGE} bridge`)
    const hierarchies = findHierarchies()
    t.same(ids.filter((id) => !hierarchies.some((h) => existsSync(`${h.mountPoint}/${cgroupName(id)}`))), [], 'each hostname is a running container\'s id: its cgroup cfs-<id> exists')
    t.same(ids.filter((id) => !existsSync(`${containersDir}/${id}`)), [], '…and so does its directory, containers/<id>')
    // The table, written by each start under the lock: every container's port, to its own address.
    const table = execFileSync(nftPath()!, ['list', 'chain', 'inet', TABLE, 'published'], { encoding: 'utf8' })
    const dnat = addresses.map((address, i) => `tcp dport ${PORT + i} dnat ip to ${address}:80`)
    t.same(dnat.filter((rule) => !table.includes(rule)), [], `the host's nftables table \`inet ${TABLE}\` sends each container's published port to it: ${COUNT} DNAT rules`, { table })

    // Each pings the next one; all stay up until every ping is done.
    runs.forEach((run, i) => {
      const next = addresses[(i + 1) % COUNT]
      run.write(`${SUBNET.contains(next) ? next : ''}\n`)
    })
    const pinged = await waitFor(() => (runs.every((r) => /reached|no reply/.test(r.stdout)) ? true : undefined), 30_000)
    t.ok(pinged, 'every container pinged within 30 s')
    runs.forEach((run) => run.write('go\n'))
    const codes = await Promise.race([
      Promise.all(runs.map((r) => r.ended)),
      delay(60_000, undefined, { ref: false }),
    ])
    t.ok(codes, 'all containers ended within 60 s of being told whom to ping')
    for (const [i, run] of runs.entries()) {
      const next = addresses[(i + 1) % COUNT]
      t.match(run.stdout, `reached ${next}`, `${ids[i]} (${addresses[i]}) reaches the next one, ${next}`, { stderr: run.stderr })
    }
    t.same(codes, Array(COUNT).fill(0), 'every run exits 0')
    t.comment(`${COUNT} containers took ${((Date.now() - started) / 1000).toFixed(1)} s`)

    // Gone: nothing of the ten is left (cgroups, directories, veths, leases, mounts, processes).
    const left = await waitFor(() => {
      const found = leftoversOf(ids, undefined, runs.map((r) => r.marker))
      return found.length ? undefined : found
    }, 5000)
    t.same(left ?? leftoversOf(ids, undefined, runs.map((r) => r.marker)), [], 'nothing of the ten containers is left on the host')
    // The last container out removes the bridge; another run's container may still hold it.
    const bridgeGone = await waitFor(() => (existsSync(`/sys/class/net/${BRIDGE}`) && liveLeases().length === 0 ? undefined : true), 3000)
    t.ok(bridgeGone, `the ${BRIDGE} bridge is gone, unless another container still holds an address`)
    if (liveLeases().length === 0) {
      t.notOk(tableExists(), `…and so is the table \`inet ${TABLE}\``)
      t.same(savedForwarding(), {}, '…and every forwarding setting is put back (no record of one left)')
    }
  } finally {
    runs.forEach((run) => run.kill())
  }
})
