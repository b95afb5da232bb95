// Networking: a bridge on the host, a veth pair per container, addresses.
// See network_namespaces(7), veth(4), and ip-link(8) / ip-address(8).
//
//   host:  cfs0 (bridge, 10.77.0.1/24) ── cfs<id> ┐ veth pair
//   container netns:                       eth0 ──┘ 10.77.0.N/24, default via 10.77.0.1
//
// On the host the `ip` command (iproute2) does the netlink work; inside,
// the child sets up its end with ioctls (linkUp, addAddress,
// addDefaultRoute). Traffic stays on this machine: containers reach each
// other and the bridge, nothing else.

import { execFile, execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { UsageError } from './errors.ts'
import { check, raw } from './libc.ts'
import { withLock } from './lock.ts'
import { isRunning } from './procfs.ts'
import { PREFIX, stateDir } from './settings.ts'

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
 * on the host uses the subnet. Under a lock, so containers starting together
 * get different addresses and never race with the last one leaving, which
 * removes the bridge.
 */
export async function allocateNetwork(id: string): Promise<Network> {
  const hostVeth = vethName(id)
  if (interfaceExists(hostVeth)) throw new UsageError(`an interface named ${hostVeth} already exists on this host`)
  mkdirSync(netDir, { recursive: true })
  return withLock(lockDir, async () => {
    const address = takeLease(id)
    try {
      await ensureBridge()
    } catch (err) {
      rmSync(join(leasesDir, address), { force: true })
      throw err
    }
    return { address, prefix: SUBNET.prefix, gateway: SUBNET.gateway, hostVeth }
  })
}

/**
 * Parent, after the container ended: free its address (the last one out
 * removes the bridge), and see its veth pair gone. Deleting a network device
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
  await withLock(lockDir, async () => {
    rmSync(join(leasesDir, network.address), { force: true })
    if (liveLeases().length === 0) await deleteInterface(BRIDGE)
  })
  for (const deadline = Date.now() + 250; interfaceExists(network.hostVeth) && Date.now() < deadline;) await delay(2)
  await deleteInterface(network.hostVeth)
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
// address, holding the container id and the parent's PID; a lease whose
// parent is gone is stale and is taken over.
function takeLease(id: string): string {
  mkdirSync(leasesDir, { recursive: true })
  const taken = new Set(liveLeases().map((lease) => lease.address))
  for (const address of SUBNET.hosts) {
    if (taken.has(address)) continue
    writeFileSync(join(leasesDir, address), `${id} ${process.pid}\n`)
    return address
  }
  throw new UsageError(`no free address left in ${SUBNET.cidr}: ${taken.size} containers are running (npm run clean drops stale ones)`)
}

/** The leases whose parent process is still alive; stale ones are simply taken over. */
export function liveLeases(): { address: string; id: string; pid: number }[] {
  let files: string[] = []
  try {
    files = readdirSync(leasesDir)
  } catch {
    return []
  }
  return files.flatMap((address) => {
    const [id, pid] = readFileSync(join(leasesDir, address), 'utf8').trim().split(' ')
    return isRunning(Number(pid)) ? [{ address, id, pid: Number(pid) }] : []
  })
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
