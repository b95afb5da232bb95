// The isolation matrix's targets on the host, made once before the first
// container run and removed after the last: a private copy of the image (so
// chroot steps write nothing into the shared one), the probe helper in it,
// a secret file, a tmpfs only the host has mounted, a `sleep` to see, a
// loop device, TCP listeners on 127.0.0.1 and on all addresses, a key of
// root's, a System V shared memory segment.
//
// Everything the matrix makes on the host is under one directory,
// /tmp/cfs-matrix-<pid>, or carries the name cfsm-*-<pid>/cfs-matrix-<pid>-*
// (the segment: key 0x636673NN, "cfs" and a byte of the PID), and is
// removed in a `finally` (the runs' own sleeps, throwaway cgroups, files
// and runc containers are runner.ts's).

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo, type Server } from 'node:net'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { mount } from '../../shared/mounts.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { repoDir } from '../../shared/settings.ts'
import { sethostname } from '../../shared/uts.ts'
import { add_key, keyctl_invalidate, SHM_KEY_BASE, shmctl_rmid, shmget } from '../lib/kernel-objects.ts'
import { copyImage, removeTree } from '../lib/private-image.ts'

/** The targets the host prepares once for all runs. */
export interface Host {
  dir: string // /tmp/cfs-matrix-<pid>
  rootfs: string // the private copy of the image
  helper: string // the compiled probe.c, in the image as /cfs-probe
  secret: string // what the secret file holds
  secretFile: string
  hostMount: string // a tmpfs only the host has, source cfsm-host-<pid>
  hostMountSource: string
  seeMarker: string // `sleep <marker>` runs on the host
  see: ReturnType<typeof spawn>
  disk: string // a real disk of the host, e.g. vda
  loop: { device: string; major: number; minor: number; token: string } // a loop device over a file that holds `token`
  mac: string // of the host's default-route interface
  listener: Server // on 127.0.0.1
  port: number
  anyListener: Server // on 0.0.0.0, as many services listen
  anyPort: number
  tokens: Set<string> // what the listeners received
  hostname: string // the host's hostname before any run
  key?: { description: string; serial: number } // a key of root's in our process keyring, cfsm-hostkey-<pid> (if the kernel has keys)
  shm?: { key: number; id: number } // a System V shared memory segment of the host's (if the kernel has System V IPC)
  kernel: Kernel
}

/**
 * What this kernel has, from the host's /proc, where a probe's target may be
 * missing from the kernel itself: those cells are n/a, not isolated.
 */
export interface Kernel {
  kcore: boolean // /proc/kcore (CONFIG_PROC_KCORE)
  sysrq: boolean // /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ)
  modules: boolean // /proc/modules: loadable modules (CONFIG_MODULES); without, init_module is ENOSYS
  keys: boolean // /proc/keys: keyrings (CONFIG_KEYS)
  sysvipc: boolean // /proc/sysvipc: System V IPC (CONFIG_SYSVIPC)
}

/** How long the host's key lives if nothing removes it (a crash): the matrix takes well under a minute. */
const KEY_TIMEOUT_S = 15 * 60

/** Build probe.c with `gcc -static` (static: it must run inside any image). */
export function buildHelper(out: string): void {
  const result = spawnSync('gcc', ['-static', '-O1', '-o', out, join(repoDir, 'scripts/matrix/probe.c')], { encoding: 'utf8' })
  if (result.error || result.status !== 0) {
    throw new Error(`gcc -static scripts/matrix/probe.c failed: ${result.error?.message ?? result.stderr.trim()} (apt-get install gcc libc6-dev)`)
  }
}

/** Everything the runs aim at, made before the first one. */
export async function prepareHost(): Promise<Host> {
  const dir = `/tmp/cfs-matrix-${process.pid}`
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { mode: 0o700 })
  const host = { dir, tokens: new Set<string>(), hostname: hostname() } as Host
  try {
    host.rootfs = join(dir, 'image', 'rootfs')
    copyImage(await ensureImage(), host.rootfs)
    host.helper = join(host.rootfs, 'cfs-probe')
    buildHelper(host.helper)
    host.secret = `cfsm-secret-${process.pid}-${Math.random().toString(36).slice(2)}`
    host.secretFile = join(dir, 'secret')
    writeFileSync(host.secretFile, `${host.secret}\n`)
    host.hostMount = join(dir, 'host-mount')
    host.hostMountSource = `cfsm-host-${process.pid}`
    mkdirSync(host.hostMount)
    mount(host.hostMountSource, host.hostMount, 'tmpfs', 0, 'size=64k')
    host.seeMarker = `300.${process.pid}0731`
    host.see = spawn('sleep', [host.seeMarker], { stdio: 'ignore' })
    host.disk = findDisk()
    host.loop = attachLoop(join(dir, 'loop.img'))
    host.mac = findMac()
    host.listener = await listen(host.tokens, '127.0.0.1')
    host.port = (host.listener.address() as AddressInfo).port
    host.anyListener = await listen(host.tokens, '0.0.0.0')
    host.anyPort = (host.anyListener.address() as AddressInfo).port
    host.kernel = {
      kcore: existsSync('/proc/kcore'),
      sysrq: existsSync('/proc/sysrq-trigger'),
      modules: existsSync('/proc/modules'),
      keys: existsSync('/proc/keys'),
      sysvipc: existsSync('/proc/sysvipc'),
    }
    // In our process keyring (@p): any process of host uid 0 may view the key, and it dies with us.
    const description = `cfsm-hostkey-${process.pid}`
    if (host.kernel.keys) host.key = { description, serial: add_key(description, 'cfsm', KEY_TIMEOUT_S) }
    const key = SHM_KEY_BASE + (process.pid % 256)
    if (host.kernel.sysvipc) host.shm = { key, id: shmget(key, 4096) }
    return host
  } catch (err) {
    await disposeHost(host)
    throw err
  }
}

/** Undo prepareHost and whatever a run left under its directory. */
export async function disposeHost(host: Partial<Host> & { dir: string }): Promise<void> {
  host.see?.kill('SIGKILL')
  if (host.loop) spawnSync('losetup', ['--detach', host.loop.device])
  // The kernel objects first: removing them may fail, the rest must still go.
  const errors: unknown[] = []
  for (const remove of [() => host.key && keyctl_invalidate(host.key.serial), () => host.shm && shmctl_rmid(host.shm.id)]) {
    try {
      remove()
    } catch (err) {
      errors.push(err)
    }
  }
  for (const server of [host.listener, host.anyListener]) {
    await new Promise<void>((resolve) => (server?.listening ? server.close(() => resolve()) : resolve()))
  }
  restoreHostname(host as Host)
  removeTree(host.dir)
  if (errors.length) throw errors[0]
}

/** The host's hostname back, if a run changed it (only to one of ours: never undo someone else's). */
export function restoreHostname(host: Host): void {
  if (host.hostname && hostname().startsWith(`cfsm-h-${process.pid}-`)) sethostname(host.hostname)
}

// A TCP listener that notes the tokens containers send it.
async function listen(tokens: Set<string>, address: string): Promise<Server> {
  const server = createServer((socket) => {
    let data = ''
    socket.on('data', (chunk) => {
      data += chunk
      for (const token of data.match(/cfsm-(tcp|any)-[\w-]+/g) ?? []) tokens.add(token)
      socket.end()
    })
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, address, resolve))
  return server
}

// A real disk of the host (not loop, ram, zram), as /sys/block names it.
function findDisk(): string {
  const disk = readdirSync('/sys/block').sort().find((name) =>
    !/^(loop|ram|zram|nbd|dm-|md|sr)/.test(name) && Number(readFileSync(`/sys/block/${name}/size`, 'utf8')) > 0)
  if (!disk) throw new Error('no disk in /sys/block (only loop, ram or zram devices): the disk probe needs one')
  return disk
}

// A block device the host itself can read (some hosts refuse even root a
// read of their own disk): a read-only loop device over a file holding a token.
function attachLoop(file: string): Host['loop'] {
  const token = `cfsm-loop-${process.pid}`
  writeFileSync(file, `${token}\n`.padEnd(4096, '\0'))
  const result = spawnSync('losetup', ['--find', '--show', '--read-only', file], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`losetup --find --show ${file}: ${result.error?.message ?? result.stderr.trim()}`)
  const device = result.stdout.trim()
  const [major, minor] = readFileSync(`/sys/block/${device.slice('/dev/'.length)}/dev`, 'utf8').trim().split(':').map(Number)
  return { device, major, minor, token }
}

// The MAC address of the interface the default route uses (/proc/net/route: destination 00000000).
function findMac(): string {
  const route = readFileSync('/proc/net/route', 'utf8').split('\n').slice(1).map((line) => line.split('\t'))
  const name = route.find((fields) => fields[1] === '00000000')?.[0]
    ?? readdirSync('/sys/class/net').find((n) => n !== 'lo' && !n.startsWith('cfs'))
  if (!name) throw new Error('the host has no network interface but lo: the interface probe needs one')
  return readFileSync(`/sys/class/net/${name}/address`, 'utf8').trim().toLowerCase()
}
