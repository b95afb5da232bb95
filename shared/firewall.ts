// The host as the containers' router (step 08): forwarding, NAT, published
// ports and a firewall, with nftables, the kernel's packet filter since
// Linux 3.13 (nft(8)), and per-interface sysctls (ip-sysctl.rst).
//
//   out:  container eth0 ─ veth ─ cfs0 (bridge) ─ host routes ─ uplink ─ outside
//         10.77.0.2:40000 ───────────────────── masquerade ─→ 198.51.100.1:40000
//   back: the reply to 198.51.100.1:40000 ─ conntrack undoes the NAT ─→ 10.77.0.2
//   -p 8080:80: outside ─→ HOST:8080 ─ DNAT ─→ 10.77.0.2:80
//
// All of it is one table of the project's own, `inet cfs`. It is written
// whole, from the running containers' leases (shared/net.ts), each time one
// starts or ends, in one transaction (nft -f: the old table goes and the new
// one comes at once), and goes with the last container. Other tables are
// never changed: if another firewall (Docker's, ufw's, firewalld's) drops
// forwarded packets, they stay dropped; npm run doctor says so.

import { execFile, execFileSync } from 'node:child_process'
import { accessSync, constants, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { UsageError } from './errors.ts'
import { PREFIX, stateDir } from './settings.ts'

/** The project's own table: `nft list table inet cfs`. */
export const TABLE = PREFIX

/** -p HOSTPORT:CONTAINERPORT[/tcp|udp]: traffic to the host's port goes to the container's. */
export interface Published {
  hostPort: number
  containerPort: number
  protocol: 'tcp' | 'udp'
}

/** What the table needs to know of each running container (its lease). */
export interface Route {
  address: string
  publish: Published[]
  isolated: boolean // false: --network-isolation=off, or the isolation matrix's runc, which may reach the host's services
}

/** -p HOSTPORT:CONTAINERPORT[/tcp|udp], as Docker writes it. */
export function parsePublish(spec: string): Published {
  const match = /^(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/.exec(spec)
  const ports = match ? [Number(match[1]), Number(match[2])] : []
  if (!match || ports.some((port) => port < 1 || port > 65535)) {
    throw new UsageError(`-p ${spec}: expected HOSTPORT:CONTAINERPORT[/tcp|udp], ports from 1 to 65535, e.g. -p 8080:80`)
  }
  return { hostPort: ports[0], containerPort: ports[1], protocol: (match[3] as 'tcp' | 'udp' | undefined) ?? 'tcp' }
}

/**
 * The table for these containers on `bridge` (gateway address, subnet).
 * Read top to bottom, it is the packet's path: prerouting and output (where
 * a packet goes: DNAT for published ports), postrouting (who it seems to
 * come from: masquerade), input (what containers may send the host itself),
 * forward (what the host forwards for whom).
 */
export function ruleset(bridge: string, subnet: string, routes: Route[], uplinks: string[]): string {
  const open = routes.filter((route) => !route.isolated).map((route) => route.address)
  const quoted = uplinks.map((name) => `"${name}"`).join(', ')
  const dnat = routes.flatMap((route) => route.publish.map((p) => `    ${p.protocol} dport ${p.hostPort} dnat ip to ${route.address}:${p.containerPort}`))
  return `table inet ${TABLE} {
  # Containers that may reach the host's own services (--network-isolation=off).
  set open {
    type ipv4_addr
${open.length ? `    elements = { ${open.join(', ')} }\n` : ''}  }

  # -p: a packet for one of the host's own addresses ("fib daddr type local")
  # on a published port is sent on to its container instead: DNAT rewrites
  # the destination before the routing decision, so it is forwarded, and
  # conntrack rewrites the replies back. From outside and from containers:
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local jump published
  }
  # ...and from the host itself, to its addresses other than loopback:
  # a packet to 127.0.0.1 never leaves lo, so -p does not work there
  # (Docker runs a userland proxy for it).
  chain output {
    type nat hook output priority -100; policy accept; # -100 is dstnat, a name nft gives only prerouting
    ip daddr != 127.0.0.0/8 fib daddr type local jump published
  }
  chain published {
${dnat.join('\n')}
  }

  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    # Out of the bridge to anywhere else: the outside has no route back to
    # ${subnet}, so the source becomes the address of the interface it
    # leaves by (masquerade), and conntrack maps the replies back.
    ip saddr ${subnet} oifname != "${bridge}" masquerade
    # A published port reached by another container through the host: the
    # reply would go straight back over the bridge, not through the host
    # that rewrote the request, so the host poses as the sender.
    ip saddr ${subnet} oifname "${bridge}" ct status dnat masquerade
  }

  # Whatever the routes say (the bridge gone under a stale lease, say), a
  # packet for the container subnet leaves by the bridge or not at all.
  chain guard {
    type filter hook postrouting priority filter; policy accept;
    ip daddr ${subnet} oifname != "${bridge}" drop
  }

  # What containers send to the host itself. The gateway is the host: without
  # this, every service on the host listening on all addresses (0.0.0.0)
  # answers every container.
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "${bridge}" jump from_containers
  }
  chain from_containers {
    # Replies to what the host started (ping, a connection to a container).
    ct state established,related accept
    ip saddr @open accept
    # ping the gateway; DNS, if the host serves it.
    icmp type echo-request accept
    meta l4proto { tcp, udp } th dport 53 accept
    # Anything else: refused at once, not dropped, so nothing waits out a
    # timeout: TCP with a reset ("Connection refused"), the rest with ICMP
    # ("No route to host").
    meta l4proto tcp reject with tcp reset
    reject with icmpx type admin-prohibited
  }

  # The interfaces whose forwarding was off until the project turned it on
  # for the containers: through them, the host forwards what is for the
  # containers (replies, published ports) and nothing else, not a packet
  # another machine routes through this one, nor one straight to a
  # container's address.
  set enabled {
    type ifname
${uplinks.length ? `    elements = { ${quoted} }
` : ''}  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname @enabled ct state established,related accept
    iifname @enabled ct status dnat accept
    iifname @enabled drop
  }
}
`
}

/**
 * Write the table for these containers, or delete it when there are none.
 * One nft transaction: a `table` line (so the delete always finds one),
 * `delete table`, then the new table.
 */
export async function applyRuleset(bridge: string, subnet: string, routes: Route[]): Promise<void> {
  const enabled = Object.entries(savedForwarding()).filter(([, was]) => was !== '1').map(([name]) => name)
  const script = `table inet ${TABLE}\ndelete table inet ${TABLE}\n${routes.length ? ruleset(bridge, subnet, routes, enabled) : ''}`
  // Without nft there is no table to delete either.
  await nft(['-f', '-'], script, routes.length === 0)
}

/** True if the project's table is there (for npm run clean). */
export function tableExists(): boolean {
  const nft = nftPath()
  if (!nft) return false
  try {
    execFileSync(nft, ['list', 'table', 'inet', TABLE], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** Delete the project's table if it is there (npm run clean, after a crash). */
export function deleteTable(): void {
  if (tableExists()) execFileSync(nftPath()!, ['delete', 'table', 'inet', TABLE], { stdio: 'ignore' })
}

/**
 * Where nft(8) is: on PATH, else in /usr/sbin or /sbin, where Debian puts
 * it, and which a user's PATH (kept by `sudo env "PATH=$PATH"`) lacks.
 */
export function nftPath(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin']
  return dirs.map((dir) => join(dir, 'nft')).find((file) => {
    try {
      accessSync(file, constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

function nft(args: string[], input: string, missingOk = false): Promise<void> {
  const file = nftPath()
  if (!file) {
    return missingOk ? Promise.resolve() : Promise.reject(new UsageError('the `nft` command is missing (it sets up NAT and the firewall): apt-get install nftables, or run with --network none'))
  }
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (!err) return resolve()
      reject(new UsageError(`nft: ${stderr.trim().split('\n')[0] || err.message}`))
    })
    child.stdin?.end(input)
  })
}

// Forwarding. Linux forwards a packet only if the interface it came in by
// has forwarding on (net.ipv4.conf.<if>.forwarding): the bridge, for what
// containers send out, and the uplinks, for the replies and for published
// ports. Not the global net.ipv4.ip_forward, which turns it on for every
// interface, now and to come. What each interface had is written down
// first, and put back when the last container ends (or by npm run clean).

const forwardingFile = join(stateDir, 'net', 'forwarding.json')
const sysctl = (name: string) => `/proc/sys/net/ipv4/conf/${name}/forwarding`

/**
 * Turn forwarding on for `bridge` and for each uplink: every interface that
 * carries a route of the host's (`ip route`), other than lo and the bridge.
 */
export function enableForwarding(bridge: string, uplinks: string[]): void {
  const saved = savedForwarding()
  for (const name of uplinks) {
    if (name === 'lo' || name === bridge || !existsSync(sysctl(name))) continue
    const was = readFileSync(sysctl(name), 'utf8').trim()
    if (!(name in saved)) saved[name] = was
    if (was !== '1') writeFileSync(sysctl(name), '1')
  }
  writeFileSync(forwardingFile, `${JSON.stringify(saved)}\n`)
  // The bridge is ours, and goes with the last container: nothing to put back.
  writeFileSync(sysctl(bridge), '1')
}

/** Put back what enableForwarding changed, on the interfaces still there. */
export function restoreForwarding(): string[] {
  const saved = savedForwarding()
  const restored: string[] = []
  for (const [name, was] of Object.entries(saved)) {
    if (!existsSync(sysctl(name))) continue
    if (readFileSync(sysctl(name), 'utf8').trim() !== was) writeFileSync(sysctl(name), was)
    restored.push(`${name}=${was}`)
  }
  rmSync(forwardingFile, { force: true })
  return restored
}

/** The interfaces whose forwarding setting the project changed, and what it was (npm run clean). */
export function savedForwarding(): Record<string, string> {
  try {
    return JSON.parse(readFileSync(forwardingFile, 'utf8')) as Record<string, string>
  } catch {
    return {}
  }
}
