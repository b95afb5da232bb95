// npm run test:cgroup2
//
// Prove the cgroup v2 code path on a real v2-only kernel. This host may keep
// its controllers on v1 (or be hybrid); so boot Debian's own kernel under
// qemu with `cgroup_no_v1=all`, give it this host's root read-only over 9p
// (with a tmpfs overlay on top, so it can write), and run
// scripts/cgroup2-guest.ts in there: npm run doctor, step 06's verify.ts and
// checks of the v2 files themselves. The guest prints one line per check on
// the serial console and ends with `CGROUP2-RESULT: pass N fail M`; it also
// records them as data (CFS_VERIFY_JSON, see scripts/lib/results.ts) in a
// directory of this run's that it mounts over 9p, which this run passes on
// to its own CFS_VERIFY_JSON, if set.
//
// Needs root (the guest reads the host's files as they are), x86_64 and
// qemu-system-x86_64. Without qemu it skips (exit 0, one line), except in CI
// (CI=true), which installs qemu: there a skip would hide the test, so it
// fails. A qemu that is installed but does not boot always fails.
//
// The kernel comes from `apt-get download linux-image-amd64` (the package
// it depends on), unpacked once into <state dir>/vm/ and re-used from there.
// Nothing is installed, mounted or left running on the host.

import chalk from 'chalk'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import {
  closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync,
  renameSync, rmSync, writeFileSync,
} from 'node:fs'
import { arch } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { exitWithError, UsageError } from '../shared/errors.ts'
import { requireRoot } from '../shared/cli.ts'
import { repoDir, stateDir } from '../shared/settings.ts'
import { forwardResults } from './lib/results.ts'

/** Where shared/settings.ts keeps state when CFS_HOME is not set; the guest uses it, on tmpfs. */
const defaultStateDir = '/var/lib/containers-from-scratch'

/** Where the unpacked kernel is kept between runs. */
const vmDir = join(stateDir, 'vm')
/** The modules the guest needs to reach the host's files (with what they depend on). */
const wantedModules = ['virtio_pci', '9pnet_virtio', '9p', 'overlay']
/** The whole run, boot included; then qemu is killed. */
const timeoutMs = Number(process.env.CFS_VM_TIMEOUT_S ?? 480) * 1000
/** Where the guest mounts the host's results directory, and the file in it its checks record to. */
const guestResultsDir = '/cfs-vm-results'
const guestResults = 'results.jsonl'
/** The guest's memory and CPUs. */
const memory = '2G'
const cpus = '2'
/**
 * tcg (qemu's own CPU emulation, the default), kvm, or auto (kvm if it boots
 * within kvmBootMs, else tcg). KVM is opt-in: on the CI machine /dev/kvm is
 * kvm_pvm (a paravirtual KVM for hosts without VT-x/AMD-V, whose guests must
 * be built for it), and Debian's kernel hangs right after "Probing EDD".
 */
const accel = process.env.CFS_VM_ACCEL ?? 'tcg'
const kvmBootMs = 20_000
/**
 * How much longer the checks in the guest wait for things (CFS_WAIT_SCALE,
 * see scripts/lib/wait.ts): a container start takes 2-3 s under tcg, against
 * 0.4 s on the host. The host's CFS_WAIT_SCALE, if set, wins.
 */
const waitScale = (accelerator: string) => process.env.CFS_WAIT_SCALE || (accelerator === 'tcg' ? '5' : '1')

/** An unpacked kernel: <dir>/vmlinuz, and <dir>/modules/<name>.ko to load in this order. */
interface Kernel {
  dir: string
  package: string // e.g. `linux-image-6.1.0-56-amd64 6.1.192-2`
  release: string // uname -r
  modules: string[] // names, dependencies first
}

async function main(): Promise<void> {
  requireRoot() // the guest reads the host's files as root
  const skip = skipReason()
  if (skip) {
    console.log(`cgroup2 VM test skipped: ${skip}`)
    return
  }
  const started = Date.now()
  mkdirSync(vmDir, { recursive: true })
  removeStale()
  const kernel = ensureKernel()
  console.log(chalk.dim(`kernel ${kernel.release} (${kernel.package}), modules: ${kernel.modules.join(' ') || 'all built in'}`))
  const work = join(vmDir, `run-${process.pid}`)
  mkdirSync(work)
  try {
    const initramfs = (accelerator: string) => {
      const file = join(work, `initramfs-${accelerator}.cpio`)
      writeFileSync(file, buildInitramfs(kernel, accelerator))
      return file
    }
    // Where the guest records its results (CFS_VERIFY_JSON), shared with it over 9p.
    const resultsDir = (accelerator: string) => {
      const dir = join(work, `results-${accelerator}`)
      mkdirSync(dir)
      return dir
    }
    let result = accel === 'tcg' ? undefined : await boot(kernel, initramfs('kvm'), resultsDir('kvm'), 'kvm', accel === 'auto' ? kvmBootMs : undefined)
    if (accel === 'auto' && result?.bootMs === undefined) console.log(chalk.dim(`kvm did not boot within ${kvmBootMs / 1000} s: tcg instead`))
    if (!result || (accel === 'auto' && result.bootMs === undefined)) result = await boot(kernel, initramfs('tcg'), resultsDir('tcg'), 'tcg')
    // The guest's results, for whoever set this run's CFS_VERIFY_JSON (test/cgroup2-vm.test.ts).
    forwardResults(join(result.resultsDir, guestResults))
    report(result, Date.now() - started)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

// Work directories of earlier runs killed before their clean-up (run-<pid>, download-<pid>).
function removeStale(): void {
  for (const name of readdirSync(vmDir)) {
    const pid = /^(?:run|download)-(\d+)$/.exec(name)?.[1]
    if (pid && Number(pid) !== process.pid && !existsSync(`/proc/${pid}`)) rmSync(join(vmDir, name), { recursive: true, force: true })
  }
}

// Why this run cannot happen here, or undefined. In CI a missing qemu is an error, not a skip.
function skipReason(): string | undefined {
  if (process.platform !== 'linux' || arch() !== 'x64') return `needs an x86_64 Linux host (this is ${process.platform}/${arch()})`
  if (!onPath('qemu-system-x86_64')) {
    const hint = 'apt-get install qemu-system-x86'
    if (process.env.CI === 'true') throw new UsageError(`CI=true but qemu-system-x86_64 is not installed (.ci/run installs it: ${hint})`)
    return `qemu-system-x86_64 is not installed (${hint})`
  }
  const version = spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' })
  if (version.status !== 0) throw new UsageError(`qemu-system-x86_64 is installed but does not run: ${(version.stderr || version.error?.message || '').trim()}`)
  return undefined
}

// --- The kernel -------------------------------------------------------------

/** The cached kernel, or Debian's current one, downloaded and unpacked (not installed). */
function ensureKernel(): Kernel {
  const cached = readdirSync(vmDir).filter((name) => existsSync(join(vmDir, name, 'kernel.json'))).sort().at(-1)
  if (cached) return { ...JSON.parse(readFileSync(join(vmDir, cached, 'kernel.json'), 'utf8')), dir: join(vmDir, cached) } as Kernel
  const tmp = join(vmDir, `download-${process.pid}`)
  mkdirSync(tmp)
  try {
    console.log('getting a kernel: apt-get download linux-image-amd64 (once; kept in ' + vmDir + ')')
    // linux-image-amd64 is a metapackage: the kernel is the package it depends on.
    aptDownload('linux-image-amd64', tmp)
    const meta = readdirSync(tmp).find((f) => f.startsWith('linux-image-amd64_'))!
    const real = /linux-image-[\w.+-]+/.exec(dpkgField(join(tmp, meta), 'Depends'))?.[0]
    if (!real) throw new UsageError(`linux-image-amd64 depends on no linux-image-* package: ${dpkgField(join(tmp, meta), 'Depends')}`)
    aptDownload(real, tmp)
    const deb = readdirSync(tmp).find((f) => f.startsWith(`${real}_`))!
    const version = dpkgField(join(tmp, deb), 'Version')
    execFileSync('dpkg-deb', ['-x', join(tmp, deb), join(tmp, 'x')])
    const release = readdirSync(join(tmp, 'x/lib/modules'))[0]
    const dir = join(vmDir, `${real}_${version}`)
    const staging = join(tmp, 'kernel')
    mkdirSync(join(staging, 'modules'), { recursive: true })
    copyFileSync(join(tmp, 'x/boot', `vmlinuz-${release}`), join(staging, 'vmlinuz'))
    const modules = resolveModules(join(tmp, 'x/lib/modules', release), wantedModules).map((file) => {
      writeFileSync(join(staging, 'modules', `${moduleName(file)}.ko`), decompress(file))
      return moduleName(file)
    })
    const kernel = { package: `${real} ${version}`, release, modules }
    writeFileSync(join(staging, 'kernel.json'), `${JSON.stringify(kernel, null, 2)}\n`) // last: marks it complete
    try {
      renameSync(staging, dir)
    } catch (err) {
      // Another run unpacked the same kernel meanwhile: use that one.
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    return { ...kernel, dir }
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}

// As root, apt hands the download to its unprivileged `_apt` user, which
// cannot write to root's directory: download as root instead.
function aptDownload(pkg: string, dir: string): void {
  const result = spawnSync('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', pkg], { cwd: dir, encoding: 'utf8' })
  if (result.status !== 0) {
    throw new UsageError(`apt-get download ${pkg} failed (run apt-get update first?): ${(result.stderr || result.error?.message || '').trim()}`)
  }
}

function dpkgField(deb: string, field: string): string {
  return execFileSync('dpkg-deb', ['-f', deb, field], { encoding: 'utf8' }).trim()
}

/**
 * The module files to load for `names`, dependencies first. A module's
 * dependencies are in its `.modinfo` section (`depends=a,b`), which is what
 * modinfo(8) prints; modules built into the kernel (modules.builtin) need
 * nothing, and names differ only in `-` and `_`.
 */
function resolveModules(modulesDir: string, names: string[]): string[] {
  const files = new Map<string, string>()
  for (const entry of readdirSync(join(modulesDir, 'kernel'), { recursive: true, withFileTypes: true })) {
    if (/\.ko(\.(xz|zst|gz))?$/.test(entry.name)) files.set(moduleName(entry.name), join(entry.parentPath, entry.name))
  }
  const list = join(modulesDir, 'modules.builtin')
  const builtin = new Set(existsSync(list) ? readFileSync(list, 'utf8').split('\n').filter(Boolean).map(moduleName) : [])
  const order: string[] = []
  const visit = (name: string, neededBy: string) => {
    name = name.replace(/-/g, '_')
    if (builtin.has(name) || order.includes(files.get(name) ?? '')) return
    const file = files.get(name)
    if (!file) throw new UsageError(`kernel ${basename(modulesDir)} has no ${name} module (needed by ${neededBy})`)
    const depends = /depends=([^\0]*)\0/.exec(decompress(file).toString('latin1'))?.[1] ?? ''
    for (const dependency of depends.split(',').filter(Boolean)) visit(dependency, name)
    if (!order.includes(file)) order.push(file)
  }
  for (const name of names) visit(name, 'the guest')
  return order
}

/** `a/b/9pnet-virtio.ko.xz` → `9pnet_virtio`. */
function moduleName(file: string): string {
  return basename(file).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_')
}

// busybox's insmod may not read compressed modules (newer Debian kernels ship .ko.xz).
function decompress(file: string): Buffer {
  if (file.endsWith('.ko')) return readFileSync(file)
  const tool = file.endsWith('.xz') ? 'xz' : file.endsWith('.zst') ? 'zstd' : 'gzip'
  if (!onPath(tool)) throw new UsageError(`${basename(file)} is compressed: apt-get install ${tool === 'xz' ? 'xz-utils' : tool}`)
  return execFileSync(tool, ['-dc', file], { maxBuffer: 256 * 1024 ** 2 })
}

// --- The initramfs ----------------------------------------------------------

/**
 * A newc cpio archive (what the kernel unpacks as its first root, see the
 * kernel's Documentation/driver-api/early-userspace/buffer-format.rst):
 * busybox, the modules, and /init.
 */
function buildInitramfs(kernel: Kernel, accelerator: string): Buffer {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p))
  if (!busybox || !isStatic(busybox)) throw new UsageError('needs a static busybox for the guest: apt-get install busybox-static')
  const archive = new Cpio()
  for (const dir of ['bin', 'dev', 'proc', 'sys', 'modules', 'host', 'rw', 'newroot']) archive.add(dir, 0o040755)
  archive.add('dev/console', 0o020600, Buffer.alloc(0), [5, 1]) // the kernel opens it for init's stdio
  archive.add('bin/busybox', 0o100755, readFileSync(busybox))
  for (const name of kernel.modules) archive.add(`modules/${name}.ko`, 0o100644, readFileSync(join(kernel.dir, 'modules', `${name}.ko`)))
  const { init, stage2 } = initScripts(kernel, busybox, accelerator)
  archive.add('init', 0o100755, Buffer.from(init))
  archive.add('stage2', 0o100644, Buffer.from(stage2))
  return archive.finish()
}

/**
 * The guest's PID 1, a busybox shell script: load the modules, mount the
 * host's root read-only over 9p with a tmpfs overlay on top (so /tmp,
 * node_modules/.cache and the like are writable, and nothing reaches the
 * host), cgroup2 alone at /sys/fs/cgroup, and make that the root with
 * switch_root. Not chroot: setns(2) into a mount namespace resets the
 * caller's root to the namespace's, so a step's parent, back from spawning
 * its child, would find itself in the initramfs and miss /sys/fs/cgroup.
 * Stage 2 (the host's own busybox, in the new root) runs the checks and
 * powers off.
 */
function initScripts(kernel: Kernel, busybox: string, accelerator: string): { init: string; stage2: string } {
  const env = [
    `PATH=${dirname(process.execPath)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    'HOME=/root', 'TERM=dumb', 'LANG=C.UTF-8', 'FORCE_COLOR=0', `CI=${process.env.CI ?? ''}`,
    // Not 0 or unset: Debian's bash, started with a socket as stdin (Node's
    // pipes are socketpairs) and SHLVL below 2, takes itself for an sshd
    // session and reads ~/.bashrc, in every zx command. Whatever the host's
    // root keeps there (pyenv init, here) then runs before each container.
    'SHLVL=1',
    // Step 06's verify starts the step as plain JS (see scripts/lib/verify.ts,
    // stepCommand): 2-3 s a container under tcg, against 6-7 s through tsx.
    'CFS_VERIFY_LAUNCHER=node',
    `CFS_WAIT_SCALE=${waitScale(accelerator)}`,
    // The checks record their results here too, one JSON line each: on the host, in this run's results dir.
    `CFS_VERIFY_JSON=${guestResultsDir}/${guestResults}`,
  ]
  // Fresh tmpfs where the guest writes most, unless this repository or node
  // lives there (a CI clone in /tmp, say): then the overlay keeps it writable.
  const tmpfs = ['/tmp', '/run', '/dev/shm'].filter((dir) => ![repoDir, process.execPath].some((path) => path.startsWith(`${dir}/`)))
  const guest = [process.execPath, join(repoDir, 'node_modules/.bin/tsx'), join(repoDir, 'scripts/cgroup2-guest.ts')]
  const init = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "CGROUP2-RESULT: error: $*"; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# A process killed by SIGILL, SIGSEGV and the like gets a line on the console, with where it was.
echo 1 > /proc/sys/kernel/print-fatal-signals
# ...which the kernel prints at KERN_INFO: let those reach the console, despite \`quiet\`.
echo 7 > /proc/sys/kernel/printk
mount -t devtmpfs devtmpfs /dev
for m in ${kernel.modules.join(' ')}; do
  insmod /modules/$m.ko || fail "insmod $m"
done
# cache=loose: the host's files do not change during the run, and lookups over 9p are slow.
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /host || fail "mount the host's root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || fail "overlay on the 9p root"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || fail "mount cgroup2"
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
for dir in ${tmpfs.join(' ')}; do mount -t tmpfs -o mode=1777 tmpfs /newroot$dir; done
# The state dir (default path, no CFS_HOME) on tmpfs: images and overlays need a local file system, not overlay.
mkdir -p /newroot${defaultStateDir} && mount -t tmpfs -o mode=0755 tmpfs /newroot${defaultStateDir}
# The host's directory for the results, writable: the one thing the guest writes to the host.
mkdir -p /newroot${guestResultsDir} && mount -t 9p -o trans=virtio,version=9p2000.L results /newroot${guestResultsDir} || fail "mount the results directory over 9p"
cp /stage2 /newroot/cfs-vm-stage2
echo "CGROUP2-BOOTED: $(cut -d' ' -f1 /proc/uptime) s, $(uname -r), cgroup2 controllers: $(cat /newroot/sys/fs/cgroup/cgroup.controllers)"
exec switch_root /newroot ${busybox} sh /cfs-vm-stage2
`
  const stage2 = `cd ${repoDir}
/usr/bin/env -i ${env.join(' ')} sh -c '${process.env.CFS_VM_GUEST_CMD ?? `exec ${guest.join(' ')}`}'
echo "CGROUP2-EXIT: $?"
${busybox} poweroff -f
`
  return { init, stage2 }
}

/** Just enough of cpio's newc format for an initramfs. */
class Cpio {
  private parts: Buffer[] = []
  private inode = 1

  /** One entry: `mode` includes the file type (S_IFDIR 0o040000, S_IFREG 0o100000, S_IFCHR 0o020000). */
  add(name: string, mode: number, data = Buffer.alloc(0), [major, minor] = [0, 0]): void {
    const fields = [this.inode++, mode, 0, 0, 1, 0, data.length, 0, 0, major, minor, name.length + 1, 0]
    const header = `070701${fields.map((n) => n.toString(16).padStart(8, '0')).join('')}${name}\0`
    this.parts.push(pad(Buffer.from(header)), pad(data))
  }

  finish(): Buffer {
    this.add('TRAILER!!!', 0)
    return Buffer.concat(this.parts)
  }
}

// newc aligns headers and file data to 4 bytes.
function pad(buffer: Buffer): Buffer {
  return Buffer.concat([buffer, Buffer.alloc((4 - (buffer.length % 4)) % 4)])
}

// A static ELF has no PT_INTERP program header (no dynamic loader to name).
function isStatic(file: string): boolean {
  const fd = openSync(file, 'r')
  try {
    const header = Buffer.alloc(64)
    readSync(fd, header, 0, 64, 0)
    const phoff = Number(header.readBigUInt64LE(0x20))
    const count = header.readUInt16LE(0x38)
    const size = header.readUInt16LE(0x36)
    const table = Buffer.alloc(count * size)
    readSync(fd, table, 0, table.length, phoff)
    return Array.from({ length: count }, (_, i) => table.readUInt32LE(i * size)).every((type) => type !== 3)
  } finally {
    closeSync(fd)
  }
}

// --- The VM -----------------------------------------------------------------

interface BootResult {
  resultsDir: string // on the host: what the guest recorded
  lines: string[]
  bootMs?: number
  exitCode?: number
  timedOut: boolean
  qemuStatus: string
}

/** Boot the guest and stream its console here; resolves when qemu is gone (killed at the timeout). */
function boot(kernel: Kernel, initramfs: string, resultsDir: string, accelerator: string, bootTimeoutMs?: number): Promise<BootResult> {
  const args = [
    // tcg,thread=single: one host thread runs both virtual CPUs. With one
    // thread per CPU (qemu's default), node's JIT code in the guest now and
    // then crashed (SIGILL or SIGSEGV at an address in V8's code space, in
    // the middle of an instruction; most likely code V8 had just rewritten
    // on one CPU, run as it was on the other), in about 1 run of 4.
    '-accel', accelerator === 'tcg' ? 'tcg,thread=single' : accelerator, '-m', memory, '-smp', cpus, '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-chardev', 'stdio,id=console,signal=off', '-serial', 'chardev:console',
    '-kernel', join(kernel.dir, 'vmlinuz'), '-initrd', initramfs,
    // cgroup_no_v1=all: every controller is on the v2 tree; panic=-1: a panic reboots, and -no-reboot makes that an exit.
    '-append', 'console=ttyS0 quiet cgroup_no_v1=all panic=-1 rdinit=/init',
    // The host's root, read-only; multidevs=remap: it spans several file systems (/proc, /sys, ...).
    '-fsdev', 'local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap',
    '-device', 'virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot',
    // The results directory, writable: see CFS_VERIFY_JSON in the guest's environment.
    '-fsdev', `local,id=results,path=${resultsDir},security_model=passthrough`,
    '-device', 'virtio-9p-pci,fsdev=results,mount_tag=results',
  ]
  const started = Date.now()
  const result: BootResult = { resultsDir, lines: [], timedOut: false, qemuStatus: '' }
  // setpriv --pdeathsig: should this process die, even by SIGKILL, the kernel kills qemu too.
  const qemu = spawn('setpriv', ['--pdeathsig', 'KILL', 'qemu-system-x86_64', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const timer = setTimeout(() => {
    result.timedOut = true
    qemu.kill('SIGKILL')
  }, timeoutMs)
  // A boot that hangs (nested KVM can): give up early, so the caller can try tcg.
  const bootTimer = bootTimeoutMs === undefined ? undefined : setTimeout(() => qemu.kill('SIGKILL'), bootTimeoutMs)
  let pending = ''
  let stderr = ''
  qemu.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  qemu.stdout.setEncoding('utf8') // a ✔ may be split across chunks
  qemu.stdout.on('data', (chunk: string) => {
    pending += chunk
    const lines = pending.split('\n')
    pending = lines.pop()!
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '')
      result.lines.push(line)
      if (line.startsWith('CGROUP2-BOOTED')) {
        result.bootMs = Date.now() - started
        clearTimeout(bootTimer)
      }
      const exit = /^CGROUP2-EXIT: (\d+)/.exec(line)
      if (exit) result.exitCode = Number(exit[1])
      // The verdict is in: the guest gets 30 s to power off, no more.
      if (line.startsWith('CGROUP2-RESULT:')) setTimeout(() => qemu.kill('SIGKILL'), 30_000).unref()
      console.log(colour(line))
    }
  })
  // Ctrl-C or SIGTERM: qemu goes too, so nothing is left running.
  const stop = () => qemu.kill('SIGKILL')
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  return new Promise((resolve) => {
    qemu.on('close', (code, signal) => {
      clearTimeout(timer)
      clearTimeout(bootTimer)
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      result.qemuStatus = `qemu ${signal ? `killed by ${signal}` : `exit ${code}`}${stderr.trim() ? `: ${stderr.trim()}` : ''}`
      resolve(result)
    })
  })
}

function colour(line: string): string {
  if (line.startsWith('✔')) return `${chalk.green('✔')}${line.slice(1)}`
  if (line.startsWith('✘')) return `${chalk.red('✘')}${line.slice(1)}`
  return line
}

// --- The verdict ------------------------------------------------------------

function report(result: BootResult, totalMs: number): void {
  const verdict = result.lines.map((line) => /^CGROUP2-RESULT: (.*)$/.exec(line)?.[1]).filter(Boolean).at(-1)
  const counts = /^pass (\d+) fail (\d+)$/.exec(verdict ?? '')
  const seconds = (ms: number | undefined) => (ms === undefined ? '?' : (ms / 1000).toFixed(1))
  console.log(`booted in ${seconds(result.bootMs)} s (to the 9p and cgroup2 mounts), whole run ${seconds(totalMs)} s`)
  const problems = [
    result.timedOut && `timed out after ${timeoutMs / 1000} s: qemu killed`,
    result.bootMs === undefined && `the guest did not boot (${result.qemuStatus}; last lines: ${result.lines.slice(-5).join(' | ')})`,
    !counts && result.bootMs !== undefined && `no \`CGROUP2-RESULT: pass N fail M\` line${verdict ? `, but: ${verdict}` : ''} (${result.qemuStatus})`,
    counts && Number(counts[2]) > 0 && `${counts[2]} of ${Number(counts[1]) + Number(counts[2])} checks failed in the guest`,
    counts && result.exitCode !== 0 && `the guest's checks exited ${result.exitCode ?? '?'}`,
  ].filter(Boolean)
  if (problems.length) {
    console.log(chalk.red(`cgroup2 VM test failed: ${problems.join('; ')}`))
    process.exitCode = 1
  } else console.log(chalk.green(`cgroup2 VM test passed: all ${counts![1]} checks passed on a v2-only kernel`))
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(join(dir, command)))
}

main().catch((err) => exitWithError(err, 'test:cgroup2'))
