// Networking: a bridge on the host, a veth pair per container, addresses.
// See network_namespaces(7), veth(4), and ip-link(8) / ip-address(8).
//
//   host:  cfs0 (bridge, 10.77.0.1/24) ── cfs<id> ┐ veth pair
//   container netns:                       eth0 ──┘ 10.77.0.N/24, default via 10.77.0.1
//
// On the host the `ip` command (iproute2) does the netlink work; inside,
// the child sets up its end with ioctls (linkUp, addAddress,
// addDefaultRoute). Containers reach each other, the bridge, and, through
// the host's NAT, the outside; the host's own services only where
// shared/firewall.ts lets them (--network-isolation).

import { execFile, execFileSync } from 'node:child_process'
import { chownSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { isIPv4 } from 'node:net'
import { UsageError } from './errors.ts'
import { applyRuleset, enableForwarding, parsePublish, restoreForwarding, type Published, type Route } from './firewall.ts'
import { check, raw } from './libc.ts'
import { withLock } from './lock.ts'
import { isRunning } from './procfs.ts'
import { PREFIX, stateDir } from './settings.ts'
import type { Volume } from './volumes.ts'

/** The host's bridge that all containers plug into. */
export const BRIDGE = `${PREFIX}0`

/** The container subnet: a /24 away from Docker's 172.17.0.0/16. CFS_SUBNET moves it. */
export const SUBNET = parseSubnet(process.env.CFS_SUBNET || '10.77.0.0/24')

const netDir = join(stateDir, 'net')
const leasesDir = join(netDir, 'leases')
const lockDir = join(netDir, 'lock')

/** What the parent hands the child about its network. */
export interface Network {
  address: string // e.g. 10.77.0.2
  prefix: number // e.g. 24
  gateway: string // the bridge's address
  hostVeth: string // cfs<id>: the host's end of the pair
}

/** Names of network interfaces are at most 15 characters (IFNAMSIZ - 1). */
export function vethName(id: string): string {
  const name = `${PREFIX}${id}`
  if (name.length > 15) throw new Error(`interface name ${name} is longer than 15 characters`)
  return name
}

/**
 * ip(8), iproute2's command, which speaks netlink to the kernel: run
 * `commands` (each one line as you would type it after `ip`) as one batch,
 * without blocking: while `ip` runs, the parent can still answer signals
 * (see Cleanup in container.ts). Its error becomes one line.
 */
export function ipAsync(...commands: string[]): Promise<string> {
  return runIpAsync([], `${commands.join('\n')}\n`)
}

// Inside: an interface's flags and address, and the routing table, set
// with ioctl(2) on a socket (netdevice(7), route(7)), as ifconfig(8) and
// route(8) do; ip(8) says the same over netlink. In the calling process:
// the child runs this after it has joined its cgroup, where Node's own
// threads count against pids.max already, and a program started then could
// be one too many for a small --pids-limit.
const AF_INET = 2
const SOCK_DGRAM = 2
const SOCK_CLOEXEC = 0o2000000
const SIOCGIFFLAGS = 0x8913
const SIOCSIFFLAGS = 0x8914
const SIOCSIFADDR = 0x8916
const SIOCSIFNETMASK = 0x891c
const SIOCADDRT = 0x890b
const IFF_UP = 0x1
const RTF_UP = 0x1
const RTF_GATEWAY = 0x2

// An ioctl on a new AF_INET socket: any socket of the network namespace will do.
function socketIoctl(request: number, arg: Buffer, what: string): void {
  const fd = check('socket', raw.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number)
  try {
    check('ioctl', raw.ioctl(fd, request, 'void *', arg) as number, what)
  } finally {
    raw.close(fd)
  }
}

// struct ifreq: the interface's name (16 bytes), then a union, here a flags short or a sockaddr_in.
function ifreq(name: string): Buffer {
  const request = Buffer.alloc(40)
  request.write(name, 0, 15, 'latin1')
  return request
}

// struct sockaddr_in at `offset`: family, port 0, the address in network order.
function writeSockaddr(buffer: Buffer, offset: number, address: string): void {
  buffer.writeUInt16LE(AF_INET, offset)
  address.split('.').forEach((byte, i) => buffer.writeUInt8(Number(byte), offset + 4 + i))
}

/** `ip link set NAME up`: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP added (netdevice(7)). */
export function linkUp(name: string): void {
  const request = ifreq(name)
  socketIoctl(SIOCGIFFLAGS, request, name)
  request.writeUInt16LE(request.readUInt16LE(16) | IFF_UP, 16)
  socketIoctl(SIOCSIFFLAGS, request, name)
}

/** `ip addr add ADDRESS/PREFIX dev NAME`: SIOCSIFADDR, then SIOCSIFNETMASK (netdevice(7)); the subnet's route comes with it. */
export function addAddress(name: string, address: string, prefix: number): void {
  const request = ifreq(name)
  writeSockaddr(request, 16, address)
  socketIoctl(SIOCSIFADDR, request, `${address} on ${name}`)
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
  writeSockaddr(request, 16, [24, 16, 8, 0].map((shift) => (mask >>> shift) & 0xff).join('.'))
  socketIoctl(SIOCSIFNETMASK, request, `/${prefix} on ${name}`)
}

/** `ip route add default via GATEWAY`: SIOCADDRT (route(7)), with a struct rtentry as 64-bit Linux lays it out. */
export function addDefaultRoute(gateway: string): void {
  const route = Buffer.alloc(120)
  writeSockaddr(route, 8, '0.0.0.0') // rt_dst: any
  writeSockaddr(route, 24, gateway) // rt_gateway
  writeSockaddr(route, 40, '0.0.0.0') // rt_genmask: /0
  route.writeUInt16LE(RTF_UP | RTF_GATEWAY, 56) // rt_flags
  socketIoctl(SIOCADDRT, route, `default via ${gateway}`)
}

// `ip ARGS`, or with `input`, `ip ARGS -batch -` reading commands from it.
function runIpAsync(args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile('ip', ipArgs(args, input), { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(ipError(Object.assign(err, { stderr }), args, input))
      else resolve(stdout)
    })
    child.stdin?.end(input)
  })
}

function ipArgs(args: string[], input?: string): string[] {
  return input === undefined ? args : [...args, '-batch', '-']
}

function ipError(err: unknown, args: string[], input?: string): UsageError {
  const e = err as NodeJS.ErrnoException & { stderr?: string }
  if (e.code === 'ENOENT') return new UsageError('the `ip` command is missing: apt-get install iproute2')
  const what = input === undefined ? `ip ${args.join(' ')}` : `ip -batch: ${input.trim().split('\n').join('; ')}`
  return new UsageError(`${what}: ${(e.stderr ?? '').trim().split('\n')[0] || e.message}`)
}

/**
 * Parent, once the child exists (it waits on the sync pipe): take a free
 * address and make sure the bridge is up, after checking that nothing else
 * on the host uses the subnet; then the host's forwarding on, and its
 * nftables table (shared/firewall.ts) rewritten for the running containers,
 * this one's published ports included. Under a lock, so containers starting
 * together get different addresses and ports, and never race with the last
 * one leaving, which removes the bridge and the table.
 */
export async function allocateNetwork(id: string, { publish = [], isolated = true }: { publish?: Published[]; isolated?: boolean } = {}): Promise<Network> {
  const hostVeth = vethName(id)
  if (interfaceExists(hostVeth)) throw new UsageError(`an interface named ${hostVeth} already exists on this host`)
  mkdirSync(netDir, { recursive: true })
  return withLock(lockDir, async () => {
    checkPorts(publish)
    const address = takeLease(id, { publish, isolated })
    try {
      await ensureBridge()
      enableForwarding(BRIDGE, await uplinks())
      await applyRuleset(BRIDGE, SUBNET.cidr, liveLeases())
    } catch (err) {
      await freeLease(address).catch(() => {}) // the first error is the one to tell
      throw err
    }
    return { address, prefix: SUBNET.prefix, gateway: SUBNET.gateway, hostVeth }
  })
}

/**
 * Parent, after the container ended: free its address (the last one out
 * removes the bridge and the table, and puts forwarding back), and see its
 * veth pair gone. Deleting a network device
 * waits in the kernel for tens of milliseconds (see notes/08-net.md), and
 * the kernel deletes the pair anyway, in the background, with the
 * container's network namespace once its last process is gone: so wait for
 * that, and delete the pair only if it outlives the wait (the container is
 * still running because setting it up failed). Nothing to do for none
 * (rootless, step 09: no veth pair).
 */
export async function releaseNetwork(network: Network | undefined): Promise<void> {
  if (!network) return // rootless: none was allocated
  mkdirSync(netDir, { recursive: true })
  await withLock(lockDir, () => freeLease(network.address))
  for (const deadline = Date.now() + 250; interfaceExists(network.hostVeth) && Date.now() < deadline;) await delay(2)
  await deleteInterface(network.hostVeth)
}

// Under the lock: drop a lease, then the table as the containers left need
// it; after the last one, no bridge, no table, forwarding as it was.
async function freeLease(address: string): Promise<void> {
  rmSync(join(leasesDir, address), { force: true })
  const left = liveLeases()
  if (!left.length) {
    await deleteInterface(BRIDGE)
    restoreForwarding()
  }
  await applyRuleset(BRIDGE, SUBNET.cidr, left)
}

// -p: a host port is published by one container at a time, and not while a
// process of the host's listens on it (the host's service would vanish
// behind the DNAT for everyone but the host itself).
function checkPorts(publish: Published[]): void {
  const taken = liveLeases().flatMap((lease) => lease.publish.map((p) => ({ ...p, id: lease.id })))
  const seen = new Set<string>()
  for (const p of publish) {
    const port = `${p.hostPort}/${p.protocol}`
    if (seen.has(port)) throw new UsageError(`-p: port ${port} is given twice`)
    seen.add(port)
    const other = taken.find((t) => t.hostPort === p.hostPort && t.protocol === p.protocol)
    if (other) throw new UsageError(`-p: port ${port} is already published by container ${other.id}`)
    if (hostListens(p)) throw new UsageError(`-p: port ${port} is in use on this host: a process listens on it`)
  }
}

// A socket of the host's on this port: in LISTEN (tcp, state 0A) or bound (udp), any address, v4 or v6.
function hostListens({ hostPort, protocol }: Published): boolean {
  const hex = hostPort.toString(16).toUpperCase().padStart(4, '0')
  return [protocol, `${protocol}6`].some((file) => {
    let table = ''
    try {
      table = readFileSync(`/proc/net/${file}`, 'utf8')
    } catch {
      return false
    }
    return table.split('\n').slice(1).some((line) => {
      const [, local, , state] = line.trim().split(/\s+/)
      return local?.endsWith(`:${hex}`) && (protocol === 'udp' || state === '0A')
    })
  })
}

// The host's uplinks: every interface that carries one of its routes, but lo and the bridge.
async function uplinks(): Promise<string[]> {
  const routes = JSON.parse(await runIpAsync(['-j', 'route', 'show'])) as { dev?: string }[]
  return [...new Set(routes.map((route) => route.dev).filter((dev): dev is string => !!dev && dev !== 'lo' && dev !== BRIDGE))]
}

/** Delete an interface if it exists; one that vanishes meanwhile (its namespace died) is fine. */
export async function deleteInterface(name: string): Promise<boolean> {
  if (!interfaceExists(name)) return false
  try {
    await runIpAsync(['link', 'del', name])
  } catch (err) {
    if (interfaceExists(name)) throw err
  }
  return true
}

/** True if an interface of that name exists in this network namespace. */
export function interfaceExists(name: string): boolean {
  try {
    statSync(`/sys/class/net/${name}`)
    return true
  } catch {
    return false
  }
}

// The first free address in the subnet. A lease is a file named after the
// address, holding the container id and the parent's PID, then what the
// firewall needs (its published ports, whether it is isolated) as JSON
// without spaces, on the same line: older checkouts read the first two
// words only; a lease whose parent is gone is stale and is taken over.
function takeLease(id: string, firewall: Omit<Route, 'address'>): string {
  mkdirSync(leasesDir, { recursive: true })
  const taken = new Set(liveLeases().map((lease) => lease.address))
  for (const address of SUBNET.hosts) {
    if (taken.has(address)) continue
    writeFileSync(join(leasesDir, address), `${id} ${process.pid} ${JSON.stringify(firewall)}\n`)
    return address
  }
  throw new UsageError(`no free address left in ${SUBNET.cidr}: ${taken.size} containers are running (npm run clean drops stale ones)`)
}

/** The leases whose parent process is still alive; stale ones are simply taken over. `dir`: another state dir's (npm run ps, as a user, reads root's). */
export function liveLeases(dir = leasesDir): (Route & { id: string; pid: number })[] {
  let files: string[] = []
  try {
    files = readdirSync(dir)
  } catch {
    return []
  }
  return files.flatMap((address) => {
    const lease = readLease(join(dir, address))
    return lease && isRunning(lease.pid) ? [{ address, ...lease }] : []
  })
}

/** A lease file: `<id> <parent's pid> <JSON for the firewall>` (takeLease); undefined if unreadable. */
export function readLease(file: string): (Omit<Route, 'address'> & { id: string; pid: number }) | undefined {
  try {
    const [id, pid, firewall] = readFileSync(file, 'utf8').trim().split(' ')
    const { publish = [], isolated = true } = JSON.parse(firewall || '{}') as Partial<Route>
    return { id, pid: Number(pid), publish, isolated }
  } catch {
    return undefined
  }
}

// Create the bridge if it is not there, after checking that no other
// interface or route on the host already uses the subnet.
async function ensureBridge(): Promise<void> {
  if (interfaceExists(BRIDGE)) {
    // Up already, for running containers: it must be on the subnet we were asked for.
    const [bridge] = JSON.parse(await runIpAsync(['-j', 'addr', 'show', 'dev', BRIDGE])) as { addr_info: { family: string; local: string; prefixlen: number }[] }[]
    const inet = bridge?.addr_info?.find((a) => a.family === 'inet')
    if (inet && (inet.local !== SUBNET.gateway || inet.prefixlen !== SUBNET.prefix)) {
      throw new UsageError(`${BRIDGE} is up with ${inet.local}/${inet.prefixlen} for running containers, not ${SUBNET.gateway}/${SUBNET.prefix} (CFS_SUBNET): stop them first`)
    }
    return
  }
  // Both questions to one `ip`, which answers each with a line of JSON.
  const [addresses, routes] = (await runIpAsync(['-j'], 'addr show\nroute show\n')).trim().split('\n').map((line) => JSON.parse(line)) as [
    { ifname: string; addr_info: { family: string; local: string }[] }[],
    { dst: string; dev: string }[],
  ]
  for (const link of addresses) {
    for (const addr of link.addr_info ?? []) {
      if (addr.family === 'inet' && SUBNET.contains(addr.local)) {
        throw new UsageError(`${SUBNET.cidr} is already in use on this host (${link.ifname} has ${addr.local}): set CFS_SUBNET to a free range`)
      }
    }
  }
  const clash = routes.find((r) => r.dst !== 'default' && SUBNET.contains(r.dst.split('/')[0]))
  if (clash) throw new UsageError(`${SUBNET.cidr} is already routed on this host (via ${clash.dev}): set CFS_SUBNET to a free range`)
  await ipAsync(`link add ${BRIDGE} type bridge`, `addr add ${SUBNET.gateway}/${SUBNET.prefix} dev ${BRIDGE}`, `link set ${BRIDGE} up`)
}

/** A /16 to /30 IPv4 subnet: its gateway (.1) and the addresses containers may take (at most 1000). */
export function parseSubnet(cidr: string) {
  const match = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr)
  const prefix = Number(match?.[5])
  if (!match || match.slice(1, 5).some((o) => Number(o) > 255) || prefix < 16 || prefix > 30) {
    throw new UsageError(`CFS_SUBNET \`${cidr}\`: expected an IPv4 range from /16 to /30, such as 10.77.0.0/24`)
  }
  const toInt = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0)
  const toAddress = (n: number) => [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.')
  const size = 2 ** (32 - prefix)
  const network = toInt(match.slice(1, 5).join('.')) - (toInt(match.slice(1, 5).join('.')) % size)
  const hosts = Array.from({ length: Math.min(size - 3, 1000) }, (_, i) => toAddress(network + 2 + i))
  return {
    cidr: `${toAddress(network)}/${prefix}`,
    prefix,
    gateway: toAddress(network + 1),
    hosts,
    contains: (address: string) => Math.floor(toInt(address) / size) === network / size,
  }
}

/** --network: bridge (eth0 on the bridge, NAT out), none (only lo), host (no network namespace: the host's own). */
export type NetworkMode = 'bridge' | 'none' | 'host'

/**
 * What a step's network options ask for, checked: --network, -p,
 * --network-isolation, --dns. In a user namespace (steps 09 and 10), not
 * --network host: sysfs mounts only for a network namespace that the user
 * namespace owns, and the host's is not; rootless, no -p (no eth0).
 */
export function networkFromOptions(
  options: { network?: string; publish?: string[]; 'network-isolation'?: string; dns?: string[] },
  { userns = false, rootless = false } = {},
) {
  const mode = (options.network ?? 'bridge') as NetworkMode
  if (!['bridge', 'none', 'host'].includes(mode)) throw new UsageError(`--network ${options.network}: expected ${userns ? 'bridge or none' : 'bridge, none or host'}`)
  if (userns && mode === 'host') throw new UsageError('--network host: a user namespace may not mount sysfs for the host\'s network namespace, which it does not own (step 08 has --network host)')
  const isolation = options['network-isolation'] ?? 'on'
  if (isolation !== 'on' && isolation !== 'off') throw new UsageError(`--network-isolation ${isolation}: expected on or off`)
  if (options['network-isolation'] !== undefined && mode !== 'bridge') throw new UsageError(`--network-isolation is the firewall between the bridge and the host, which --network ${mode} has none of`)
  const publish = (options.publish ?? []).map(parsePublish)
  if (publish.length && mode !== 'bridge') throw new UsageError(`-p publishes a port of a container on the bridge, not with --network ${mode}`)
  if (publish.length && rootless) throw new UsageError('-p: a rootless container has no eth0 to publish a port of (run it with sudo)')
  return { mode, publish, isolated: isolation === 'on', dns: (options.dns ?? []).map(parseDns) }
}

/**
 * The container's /etc/resolv.conf, /etc/hosts and /etc/hostname, written
 * in its directory, to be bound over the image's (etcVolumes), as Docker
 * does: the image stays as it is, and each container has its own.
 * `address`: its eth0's (none with --network none or host); `dns`: --dns.
 * With --network host, the host's resolv.conf and hosts, the latter with
 * the container's hostname added (its UTS namespace is still its own).
 */
export function writeEtcFiles(dir: string, { hostname, mode, address, dns, owner }: { hostname: string; mode: NetworkMode; address?: string; dns: string[]; owner?: number }): void {
  const host = (file: string) => readFileSync(file, 'utf8')
  const files = {
    'resolv.conf': mode === 'host' && !dns.length ? host('/etc/resolv.conf') : resolvConf(dns),
    hosts: mode === 'host' ? `${host('/etc/hosts').trimEnd()}\n127.0.1.1\t${hostname}\n` : `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${address ?? '127.0.1.1'}\t${hostname}\n`,
    hostname: `${hostname}\n`,
  }
  mkdirSync(join(dir, 'etc'), { recursive: true })
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(dir, 'etc', name), text)
    // Steps 09 and 10: container root's, as Docker's are (else nobody's, in there).
    if (owner !== undefined) chownSync(join(dir, 'etc', name), owner, owner)
  }
}

/** Where writeEtcFiles put them, as volumes to bind in the container. */
export function etcVolumes(dir: string): Volume[] {
  return ['resolv.conf', 'hosts', 'hostname'].map((name) => ({ source: join(dir, 'etc', name), target: `/etc/${name}`, readonly: false }))
}

/** --dns ADDR: an IPv4 address (the container has no IPv6 route). */
export function parseDns(address: string): string {
  if (!isIPv4(address)) throw new UsageError(`--dns ${address}: expected an IPv4 address, e.g. --dns 192.0.2.53`)
  return address
}

/**
 * A resolv.conf for a container: `dns` if given, else the host's
 * nameservers. A nameserver on the host's loopback (systemd-resolved's
 * 127.0.0.53) is not the container's loopback: then the servers
 * systemd-resolved itself asks, from /run/systemd/resolve/resolv.conf.
 * IPv6 ones are left out (no IPv6 route in here). Never a public resolver
 * the host does not use: with none left, a comment says why and what to do.
 */
export function resolvConf(dns: string[], hostFile = '/etc/resolv.conf', resolvedFile = '/run/systemd/resolve/resolv.conf'): string {
  if (dns.length) return `# from --dns\n${dns.map((server) => `nameserver ${server}\n`).join('')}`
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8')
    } catch {
      return ''
    }
  }
  const servers = (text: string) => [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1])
  const loopback = (server: string) => server.startsWith('127.') || server === '::1'
  let source = hostFile
  let text = read(hostFile)
  if (servers(text).some(loopback)) {
    source = `${resolvedFile} (the host's ${hostFile} names ${servers(text).filter(loopback).join(', ')}, its own loopback)`
    text = read(resolvedFile)
  }
  const usable = servers(text).filter((server) => isIPv4(server) && !loopback(server))
  const rest = text.split('\n').filter((line) => /^\s*(search|domain|options)\s/.test(line))
  const none = usable.length ? [] : ['# no nameserver the container can reach (only loopback or IPv6 ones): give one with --dns ADDR']
  return [`# from the host's ${source}`, ...rest, ...none, ...usable.map((server) => `nameserver ${server}`)].join('\n') + '\n'
}
