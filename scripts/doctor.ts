// npm run doctor
//
// Can this machine run the workshop's containers? One line per requirement:
// a green check, or a red cross with what to do about it.

import chalk from 'chalk'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, statfsSync } from 'node:fs'
import { release } from 'node:os'
import { MIN_NODE, requireRoot } from '../shared/cli.ts'
import { exitOnClosedPipe } from '../shared/errors.ts'
import { CONTROLLERS, cgroupLayout, findControllers, findHierarchies } from '../shared/cgroups.ts'
import { readMountInfo } from '../shared/mounts.ts'
import { nftPath, TABLE } from '../shared/firewall.ts'
import { BRIDGE } from '../shared/net.ts'
import { DEFAULT_IMAGES, imageRootfs } from '../shared/rootfs.ts'
import { imagesDir, stateDir } from '../shared/settings.ts'
import { usernsForbidden } from '../shared/userns.ts'

exitOnClosedPipe()

let failures = 0

function check(ok: boolean, what: string, hint = ''): void {
  if (ok) console.log(`${chalk.green('✔')} ${what}`)
  else {
    failures++
    console.log(`${chalk.red('✘')} ${what}${hint ? chalk.dim(`  → ${hint}`) : ''}`)
  }
}

function note(what: string): void {
  console.log(`${chalk.yellow('•')} ${what}`)
}

const linux = process.platform === 'linux'
const [nodeMajor, nodeMinor] = process.versions.node.split('.').map(Number)
const nodeOk = nodeMajor > MIN_NODE[0] || (nodeMajor === MIN_NODE[0] && nodeMinor >= MIN_NODE[1])
// Root first, before anything is printed, so that nothing shows twice: the
// checks below read what only root may read (re-runs under sudo).
if (linux && nodeOk) requireRoot()
check(linux, `Linux (${process.platform})`, 'containers need a Linux kernel: use the VM in vagrant/ (see README.md)')
if (!linux) process.exit(1)
check(nodeOk, `Node ${process.versions.node} (${process.execPath})`, `install Node ${MIN_NODE.join('.')} or newer: it runs the steps' TypeScript itself`)
if (!nodeOk) process.exit(1)
check(process.getuid?.() === 0, 'running as root (through sudo when started as a user)')

const [major, minor] = release().split('.').map(Number)
check(major > 5 || (major === 5 && minor >= 4), `kernel ${release()}`, 'Linux 5.4 or newer is needed (5.14+ for cgroup.kill)')

for (const ns of ['uts', 'pid', 'mnt', 'ipc', 'net', 'cgroup', 'user']) {
  check(existsSync(`/proc/self/ns/${ns}`), `${ns} namespaces`, `this kernel was built without CONFIG_${ns.toUpperCase()}_NS`)
}

const filesystems = readFileSync('/proc/filesystems', 'utf8')
const overlay = /\toverlay$/m.test(filesystems) || hasModule('overlay')
check(overlay, 'overlayfs (step 07)', 'modprobe overlay')

const hierarchies = findHierarchies()
const where = findControllers(hierarchies)
const layout = cgroupLayout(hierarchies)
check(layout !== 'none', `cgroups: ${layout}${layout === 'hybrid' ? ' (v1 and v2 both mounted)' : ''}`, 'no cgroup filesystem is mounted')
for (const controller of CONTROLLERS) {
  const h = where.get(controller)
  check(!!h, `  ${controller}: ${h ? `v${h.version} at ${h.mountPoint}` : 'not found'}`, `no ${controller} controller: step 06 limits need it`)
}
for (const h of hierarchies.filter((h) => h.version === 2)) {
  const useful = h.controllers.filter((c) => (CONTROLLERS as string[]).includes(c))
  note(`  cgroup2 at ${h.mountPoint} offers ${useful.length ? useful.join(', ') : `none of ${CONTROLLERS.join('/')}`}${h.controllers.length ? ` (all: ${h.controllers.join(' ')})` : ''}`)
}

let ipVersion = ''
try {
  ipVersion = execFileSync('ip', ['-V'], { encoding: 'utf8' }).trim()
} catch {}
check(!!ipVersion, `ip (iproute2)${ipVersion ? `: ${ipVersion.replace(/^ip utility, /, '')}` : ''}`, 'apt-get install iproute2 (step 08)')

// Step 08's NAT, -p and firewall: nft(8), and no other table's forward
// chain dropping what ours lets through (every table's chains see a packet).
let nftVersion = ''
let nftError = ''
try {
  nftVersion = execFileSync(nftPath() ?? 'nft', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim()
} catch (err) {
  nftError = String((err as { stderr?: string }).stderr ?? '').trim().split('\n')[0]
}
// nft opens a netlink socket even for --version: installed, but without the kernel's nf_tables, it fails.
check(!!nftVersion, `nft (nftables)${nftVersion ? `: ${nftVersion}` : nftPath() ? `: ${nftPath()} is there, but it says: ${nftError}` : ''}`,
  nftPath() ? 'this kernel has no nf_tables (step 08\'s NAT, ports and firewall): modprobe nf_tables' : 'apt-get install nftables (step 08: NAT, published ports, the firewall)')
for (const chain of nftVersion ? forwardDrops() : []) {
  note(`another firewall drops forwarded packets: ${chain}. Containers reach each other and the host, but not the outside, and -p ports are closed. Let ${BRIDGE} through there, e.g. with Docker: sudo iptables -I DOCKER-USER -i ${BRIDGE} -j ACCEPT; sudo iptables -I DOCKER-USER -o ${BRIDGE} -j ACCEPT; with ufw: sudo ufw route allow in on ${BRIDGE}; sudo ufw route allow out on ${BRIDGE} (see notes/08-net.md)`)
}

// Step 09: util-linux's unshare(1) and setpriv(1) start the child in its user
// namespace; rootless, the kernel must also let a user make one.
let unshareVersion = ''
try {
  unshareVersion = execFileSync('unshare', ['--version'], { encoding: 'utf8' }).trim() && execFileSync('setpriv', ['--version'], { encoding: 'utf8' }).trim()
} catch {}
check(!!unshareVersion, `unshare and setpriv${unshareVersion ? `: ${unshareVersion}` : ''}`, 'apt-get install util-linux (step 09)')
const userns = usernsForbidden()
if (userns) note(`step 09 rootless: ${userns}`)
else check(true, 'users may make user namespaces (step 09 rootless)')

const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))
check(!!busybox, `busybox for the offline image${busybox ? `: ${busybox}` : ''}`, 'apt-get install busybox-static')

const image = DEFAULT_IMAGES.map((name) => ({ name, rootfs: imageRootfs(name) })).find((i) => existsSync(i.rootfs))
if (image) check(true, `image \`${image.name}\` at ${image.rootfs}`)
else note(`no image in ${imagesDir} yet: the first step that needs one prepares it (or: npm run rootfs)`)

// Overlay upper dirs and device nodes need a real local filesystem for the state dir.
const stateMount = readMountInfo()
  .filter((m) => `${stateDir}/`.startsWith(m.mountPoint === '/' ? '/' : `${m.mountPoint}/`))
  .sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0]
const unsuitable = ['vboxsf', '9p', 'overlay', 'nfs', 'nfs4', 'cifs', 'fuse', 'virtiofs']
check(!!stateMount && !unsuitable.includes(stateMount.fstype), `state dir ${stateDir} on ${stateMount?.fstype ?? '?'}`, 'set CFS_HOME to a directory on a local disk (ext4, xfs, btrfs, tmpfs)')
try {
  const { bavail, bsize } = statfsSync(existsSync(stateDir) ? stateDir : '/')
  note(`  ${((bavail * bsize) / 1024 ** 3).toFixed(1)} GiB free there`)
} catch {}

console.log(failures ? chalk.red(`${failures} problem${failures > 1 ? 's' : ''} found`) : chalk.green('all set'))
process.exitCode = failures ? 1 : 0

// Forward chains of other tables whose policy is drop (iptables-nft's rules
// are nftables tables too), as "family table chain"; not the project's own.
function forwardDrops(): string[] {
  try {
    const { nftables } = JSON.parse(execFileSync(nftPath()!, ['-j', 'list', 'chains'], { encoding: 'utf8' })) as { nftables: { chain?: { family: string; table: string; name: string; hook?: string; policy?: string } }[] }
    return nftables.flatMap(({ chain }) => (chain?.hook === 'forward' && chain.policy === 'drop' && !(chain.family === 'inet' && chain.table === TABLE) ? [`${chain.family} ${chain.table} ${chain.name} (policy drop)`] : []))
  } catch {
    return []
  }
}

function hasModule(name: string): boolean {
  const listed = (file: string) => {
    try {
      return new RegExp(`/${name}\\.ko(\\.\\w+)?(:|$)`, 'm').test(readFileSync(`/lib/modules/${release()}/${file}`, 'utf8'))
    } catch {
      return false
    }
  }
  // modules.dep: a module not loaded yet, which the kernel loads itself on the first mount (mount(2) asks for fs-overlay).
  return existsSync(`/sys/module/${name}`) || listed('modules.builtin') || listed('modules.dep')
}
