// Beyond the bridge (shared/firewall.ts, steps 08-10 as root): NAT out, -p
// in, the firewall between containers and the host's own services, the
// container's /etc files, --network none and host, and nothing of it left.
//
// "Outside" is simulated: a network namespace of this test's
// (cfs-up-<pid>), joined to the host by a veth pair (cfsup<pid> on the
// host, 198.51.100.1; eth0 inside, 198.51.100.2: TEST-NET-2, a
// documentation range), with a listener inside that answers with the
// address it sees. Nothing is ever sent to any other address: the DNS
// checks read files, they resolve nothing.

import t from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { tableExists } from '../shared/firewall.ts'
import { liveLeases, resolvConf, SUBNET } from '../shared/net.ts'
import { repoDir } from '../shared/settings.ts'
import { tsx } from '../scripts/lib/verify.ts'
import { rootOnly } from './helpers.ts'

const ns = `cfs-up-${process.pid}`
const uplink = `cfsup${process.pid}`.slice(0, 15)
const HOST_UP = '198.51.100.1'
const UPSTREAM = '198.51.100.2'
const UP_PORT = 7000
const sysctl = (name: string) => `/proc/sys/net/ipv4/conf/${name}/forwarding`
const forwarding = () => Object.fromEntries(readdirSync('/proc/sys/net/ipv4/conf').filter((name) => !name.startsWith('cfs')).map((name) => [name, readFileSync(sysctl(name), 'utf8').trim()]))

interface Ran { code: number | null; stdout: string; stderr: string; ran: string }

/** `npx tsx steps/STEP run ARGS…`, as root, without tap's preloads; never throws. */
function run(step: string, args: string[]): Promise<Ran> & { child: ChildProcess } {
  const child = spawn('env', ['-u', 'NODE_OPTIONS', tsx, `steps/${step}`, 'run', ...args], { cwd: repoDir, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (chunk) => (stdout += chunk))
  child.stderr!.on('data', (chunk) => (stderr += chunk))
  const done = new Promise<Ran>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr, ran: `npx tsx steps/${step} run ${args.join(' ')}` })))
  return Object.assign(done, { child })
}

/** A command in the upstream namespace (node, so nothing depends on the host's tools). */
function upstream(script: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, process.execPath, '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' }, timeout: 15_000 })
}

/** GET http://ADDRESS:PORT/ from here or from the upstream namespace: the body, or the error's code. */
const httpGet = (address: string, port: number) => `require('http').get({ host: '${address}', port: ${port}, timeout: 3000 }, (r) => { let b = ''; r.on('data', (c) => b += c); r.on('end', () => process.stdout.write(b)) }).on('error', (e) => process.stdout.write('error ' + e.code)).on('timeout', function () { this.destroy(Object.assign(new Error(), { code: 'TIMEOUT' })) })`

async function waitUntil(check: () => boolean, ms: number): Promise<boolean> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) if (check()) return true
  return check()
}

t.test('beyond the bridge: NAT, -p, the firewall, /etc files, --network', { ...rootOnly(), timeout: 300_000 }, async (t) => {
  const before = forwarding()
  const ipForward = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim()
  t.notOk(tableExists(), 'no `inet cfs` table before (no container of the project is running)')
  // The upstream: its namespace, the veth pair, the addresses, the listener.
  execFileSync('ip', ['netns', 'add', ns])
  t.teardown(() => {
    execFileSync('ip', ['netns', 'delete', ns], { stdio: 'ignore' })
    try {
      execFileSync('ip', ['link', 'del', uplink], { stdio: 'ignore' })
    } catch {}
  })
  execFileSync('ip', ['-batch', '-'], { input: [`link add ${uplink} type veth peer name eth0 netns ${ns}`, `addr add ${HOST_UP}/24 dev ${uplink}`, `link set ${uplink} up`].join('\n') })
  // And a route to the container subnet through the host, as another machine on the host's network could add.
  execFileSync('ip', ['-n', ns, '-batch', '-'], { input: [`addr add ${UPSTREAM}/24 dev eth0`, 'link set eth0 up', 'link set lo up', `route add ${SUBNET.cidr} via ${HOST_UP}`].join('\n') })
  const listener = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e',
    `require('net').createServer((s) => s.end('from ' + s.remoteAddress + '\\n')).listen(${UP_PORT}, '${UPSTREAM}', () => console.log('listening'))`],
  { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' } })
  t.teardown(() => void listener.kill())
  await new Promise((resolve) => listener.stdout!.once('data', resolve))
  // A service of the host's on all its addresses, as many are: what the firewall must keep from containers.
  const token = `host-secret-${process.pid}`
  const service: Server = createServer((socket) => socket.end(`${token}\n`))
  await new Promise<void>((resolve) => service.listen(0, '0.0.0.0', resolve))
  t.teardown(() => void service.close())
  const servicePort = (service.address() as { port: number }).port
  const gateway = SUBNET.gateway

  for (const step of ['08-net', '09-userns', '10-security']) {
    t.test(`steps/${step}`, async (t) => {
      // Out: NAT. The upstream has no route to the container subnet; it answers the host's address.
      const out = await run(step, ['sh', '-c', `nc -w 3 ${UPSTREAM} ${UP_PORT}; nc -w 3 ${gateway} ${servicePort}; echo "rc=$?"; nc -w 3 ${HOST_UP} ${servicePort}; echo "rc=$?"`])
      t.match(out.stdout, new RegExp(`^from ${HOST_UP.replace(/\./g, '\\.')}$`, 'm'), `a container reaches the upstream (${UPSTREAM}) through NAT: the listener sees the host's upstream address, ${HOST_UP}, not ${SUBNET.cidr}`, out)
      // The firewall: the host's service on 0.0.0.0 is not for containers, by any of the host's addresses.
      t.notMatch(out.stdout, token, `…and cannot reach a host service listening on 0.0.0.0:${servicePort}, by the gateway ${gateway} nor by ${HOST_UP}`, out)
      t.match(out.stdout, /^rc=1\nrc=1$/m, '…both refused (nc exits 1)', out)
      t.match(out.stderr, /Connection refused/, '…at once, with a TCP reset: "Connection refused", as from a closed port', out)

      const open = await run(step, ['--network-isolation', 'off', 'nc', '-w', '3', gateway, String(servicePort)])
      t.equal(open.stdout.trim(), token, '--network-isolation off: the host\'s service answers again (the leak Docker leaves open by default)', open)

      // In: -p. A web server in a container, on a port of the host's.
      const www = mkdtempSync(join(tmpdir(), 'cfs-www-'))
      t.teardown(() => rmSync(www, { recursive: true, force: true }))
      writeFileSync(join(www, 'index.html'), `served by ${step}\n`, { mode: 0o644 })
      chmodSync(www, 0o755) // readable by container root at 09 and 10, host uid 100000
      const hostPort = 18080 + Number(step.slice(0, 2))
      const server = run(step, ['-p', `${hostPort}:80`, '-v', `${www}:/www:ro`, 'httpd', '-f', '-p', '80', '-h', '/www'])
      const fromHost = () => execFileSync(process.execPath, ['-e', httpGet(HOST_UP, hostPort)], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } })
      const up = await waitUntil(() => fromHost() === `served by ${step}\n`, 30_000)
      t.ok(up, `-p ${hostPort}:80: the host reaches the container's port 80 on its own address ${HOST_UP}:${hostPort}`, { got: fromHost(), stderr: await Promise.race([server.then((r) => r.stderr), Promise.resolve('(still running)')]) })
      t.equal(upstream(httpGet(HOST_UP, hostPort)), `served by ${step}\n`, `…the upstream namespace reaches it at ${HOST_UP}:${hostPort} (DNAT, forwarded)`)
      // Forwarding on the uplink is for the containers' traffic only: not a packet routed straight to a container's address.
      const address = liveLeases().find((lease) => lease.publish.some((p) => p.hostPort === hostPort))?.address
      t.match(upstream(httpGet(address ?? '10.77.0.254', 80)), /^error /, `…but not straight at the container's address, ${address}:80, even with a route to it through the host (forward chain)`)
      const other = await run(step, ['wget', '-q', '-O', '-', `http://${gateway}:${hostPort}/`])
      t.equal(other.stdout, `served by ${step}\n`, `…another container reaches it through the gateway ${gateway}:${hostPort} (hairpin NAT)`, other)
      t.equal(execFileSync(process.execPath, ['-e', httpGet('127.0.0.1', hostPort)], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } }), 'error ECONNREFUSED',
        '…but not at 127.0.0.1: a packet to loopback never leaves lo (Docker runs a userland proxy for it; here there is none)')
      const ps = JSON.parse(execFileSync('env', ['-u', 'NODE_OPTIONS', tsx, 'scripts/ps.ts', '--format', 'json'], { cwd: repoDir, encoding: 'utf8' })) as { address: string; ports: string[] }[]
      t.same(ps.find((row) => row.address === address)?.ports, [`${hostPort}->80/tcp`], `npm run ps shows its port: ${hostPort}->80/tcp`)
      const clash = await run(step, ['-p', `${hostPort}:80`, 'true'])
      t.equal(clash.code, 125, `a second -p ${hostPort}:80 while it runs: exit 125`, clash)
      t.match(clash.stderr, new RegExp(`^cfs: -p: port ${hostPort}/tcp is already published by container [0-9a-f]{12}\\n$`), '…with one line', clash)
      // httpd is PID 1 and has no SIGTERM handler, so the kernel ignores it: the step SIGKILLs after its grace period.
      server.child.kill('SIGTERM')
      const ended = await server
      t.equal(ended.code, 137, 'the web server\'s container ends on SIGTERM (137: PID 1 ignored it, and was killed)', ended)
    })
  }

  t.test('a container reaches its own published port through the gateway (hairpin, steps/08-net)', async (t) => {
    const self = await run('08-net', ['-p', '18180:80', 'sh', '-c', `mkdir /www && echo self > /www/index.html && httpd -p 80 -h /www && wget -q -O - http://${gateway}:18180/`])
    t.equal(self.stdout, 'self\n', `-p 18180:80, then wget http://${gateway}:18180/ from inside: its own httpd answers (the veth's hairpin mode lets the frame back out of its port)`, self)
  })

  t.test('the container\'s /etc/resolv.conf, hosts and hostname (steps/08-net)', async (t) => {
    const files = await run('08-net', ['--hostname', 'web1', '--dns', '198.51.100.53', 'sh', '-c', 'cat /etc/resolv.conf; echo --; cat /etc/hosts; echo --; cat /etc/hostname; echo --; ip -4 -o addr show eth0; grep -E " /etc/(resolv.conf|hosts|hostname) " /proc/self/mountinfo | wc -l'])
    const [resolv, hosts, hostname, rest] = files.stdout.split('--\n')
    t.equal(resolv, '# from --dns\nnameserver 198.51.100.53\n', '--dns 198.51.100.53: resolv.conf names it, and nothing else', files)
    const address = /inet (\S+)\//.exec(rest ?? '')?.[1]
    t.match(hosts, new RegExp(`^${address?.replace(/\./g, '\\.')}\\tweb1$`, 'm'), '/etc/hosts names the container: its eth0 address and hostname', files)
    t.equal(hostname, 'web1\n', '/etc/hostname holds its hostname', files)
    t.equal(rest?.trim().split('\n').at(-1), '3', 'all three are bind mounts over the image\'s (mountinfo)', files)
    const plain = await run('08-net', ['cat', '/etc/resolv.conf'])
    t.equal(plain.stdout, resolvConf([]), 'without --dns: built from the host\'s resolv.conf (resolvConf)', plain)
  })

  t.test('--network none and host (steps/08-net)', async (t) => {
    const none = await run('08-net', ['--network', 'none', 'ls', '/sys/class/net'])
    t.equal(none.stdout, 'lo\n', '--network none: only lo', none)
    const host = await run('08-net', ['--network', 'host', 'readlink', '/proc/self/ns/net'])
    t.equal(host.stdout.trim(), execFileSync('readlink', ['/proc/self/ns/net'], { encoding: 'utf8' }).trim(), '--network host: the host\'s own network namespace (same inode)', host)
    const userns = await run('09-userns', ['--network', 'host', 'true'])
    t.ok(userns.code === 125 && /^cfs: --network host: a user namespace may not mount sysfs/.test(userns.stderr), 'steps/09-userns --network host: exit 125, one line on why', userns)
  })

  // Nothing of the project's firewall or forwarding left once the last container ended.
  t.same(liveLeases(), [], 'no address lease is left')
  t.notOk(tableExists(), 'the `inet cfs` table went with the last container')
  t.same(Object.fromEntries(Object.entries(forwarding()).filter(([name]) => name in before)), before, 'every interface\'s forwarding setting is as it was before (the bridge and the uplinks)')
  t.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), ipForward, `net.ipv4.ip_forward untouched (${ipForward})`)
})

t.test('resolvConf: the host\'s nameservers a container can reach', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cfs-resolv-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const host = join(dir, 'resolv.conf')
  const resolved = join(dir, 'resolved.conf')
  writeFileSync(host, 'nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch example.org\n')
  t.equal(resolvConf([], host, resolved), `# from the host's ${host}\nsearch example.org\nnameserver 192.0.2.53\n`, 'a plain resolv.conf: its IPv4 servers and its search line; IPv6 ones left out')
  writeFileSync(host, 'nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n')
  writeFileSync(resolved, 'nameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch lan\n')
  t.equal(resolvConf([], host, resolved), `# from the host's ${resolved} (the host's ${host} names 127.0.0.53, its own loopback)\nsearch lan\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n`,
    'systemd-resolved\'s stub (127.0.0.53): the servers resolved lists itself')
  writeFileSync(resolved, 'nameserver 2001:db8::1\n')
  t.match(resolvConf([], host, resolved), /^# no nameserver the container can reach .*--dns ADDR$/m, 'none left: a comment says so and names --dns, and no public resolver is made up')
  t.notMatch(resolvConf([], host, resolved), /^nameserver/m, '…and no nameserver line')
})
