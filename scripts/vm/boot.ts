// Booting the cgroup v2 VM test's guest under qemu: the host's root
// read-only over 9p, a results directory writable, the serial console
// streamed here. And whether this host can run it at all.

import chalk from 'chalk'
import { spawn, spawnSync } from 'node:child_process'
import { arch } from 'node:os'
import { join } from 'node:path'
import { UsageError } from '../../shared/errors.ts'
import { onPath } from '../lib/files.ts'
import type { Kernel } from './kernel.ts'

/** The whole run, boot included; then qemu is killed. */
export const timeoutMs = Number(process.env.CFS_VM_TIMEOUT_S ?? 480) * 1000
/** The guest's memory and CPUs. */
const memory = '2G'
const cpus = '2'

/** Why the VM cannot run on this host, or undefined. In CI a missing qemu is an error, not a skip. */
export function skipReason(): string | undefined {
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

export interface BootResult {
  resultsDir: string // on the host: what the guest recorded
  lines: string[]
  bootMs?: number
  exitCode?: number
  timedOut: boolean
  qemuStatus: string
}

/** Boot the busybox guest (scripts/cgroup2-guest.ts) and stream its console here; resolves when qemu is gone (killed at the timeout). */
export function boot(kernel: Kernel, initramfs: string, resultsDir: string, accelerator: string, bootTimeoutMs?: number): Promise<BootResult> {
  return bootGuest({
    marker: 'CGROUP2', kernel: join(kernel.dir, 'vmlinuz'), initramfs, resultsDir, accelerator, bootTimeoutMs,
    // cgroup_no_v1=all: every controller is on the v2 tree.
    append: 'cgroup_no_v1=all rdinit=/init',
    // The host's root, read-only; multidevs=remap: it spans several file systems (/proc, /sys, ...).
    shares: [{ tag: 'hostroot', path: '/', options: 'readonly=on,multidevs=remap' }],
  })
}

/** A guest to boot: its kernel and initramfs, its disks and 9p shares, and the prefix of its console's marker lines. */
export interface GuestSpec {
  /** `<marker>-BOOTED`, `<marker>-RESULT` and `<marker>-EXIT` lines on the console. */
  marker: string
  kernel: string
  initramfs: string
  /** Added to the kernel's command line. */
  append: string
  /** Disks, /dev/vda first; snapshot: the guest's writes go to a temporary file, the image stays as it is. */
  drives?: { file: string; snapshot?: boolean }[]
  shares?: { tag: string; path: string; options?: string }[]
  /** A network card on qemu's user-mode network, restricted: the guest reaches nothing outside. */
  nic?: boolean
  /** Shared writable as `results`: see CFS_VERIFY_JSON in the guests' environment. */
  resultsDir: string
  accelerator: string
  /** Give up (kill qemu) if no BOOTED line comes within this long. */
  bootTimeoutMs?: number
  /** The whole run, boot included (default: CFS_VM_TIMEOUT_S, else 480 s). */
  timeoutMs?: number
}

/** Boot a guest and stream its console here; resolves when qemu is gone (killed at the timeout). */
export function bootGuest(spec: GuestSpec): Promise<BootResult> {
  const { marker, resultsDir, accelerator, bootTimeoutMs } = spec
  const shares = [...(spec.shares ?? []), { tag: 'results', path: resultsDir, options: '' }]
  const args = [
    // tcg,thread=single: one host thread runs both virtual CPUs. With one
    // thread per CPU (qemu's default), node's JIT code in the guest now and
    // then crashed (SIGILL or SIGSEGV at an address in V8's code space, in
    // the middle of an instruction; most likely code V8 had just rewritten
    // on one CPU, run as it was on the other), in about 1 run of 4.
    '-accel', accelerator === 'tcg' ? 'tcg,thread=single' : accelerator, '-m', memory, '-smp', cpus, '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-chardev', 'stdio,id=console,signal=off', '-serial', 'chardev:console',
    '-kernel', spec.kernel, '-initrd', spec.initramfs,
    // panic=-1: a panic reboots, and -no-reboot makes that an exit.
    '-append', `console=ttyS0 quiet panic=-1 ${spec.append}`,
    ...(spec.nic ? ['-nic', 'user,model=virtio-net-pci,restrict=on'] : []),
    ...(spec.drives ?? []).flatMap((drive) => ['-drive', `file=${drive.file},if=virtio,format=raw${drive.snapshot ? ',snapshot=on' : ''}`]),
    ...shares.flatMap(({ tag, path, options }) => [
      '-fsdev', `local,id=${tag},path=${path},security_model=passthrough${options ? `,${options}` : ''}`,
      '-device', `virtio-9p-pci,fsdev=${tag},mount_tag=${tag}`,
    ]),
  ]
  const runTimeoutMs = spec.timeoutMs ?? timeoutMs
  const started = Date.now()
  const result: BootResult = { resultsDir, lines: [], timedOut: false, qemuStatus: '' }
  // setpriv --pdeathsig: should this process die, even by SIGKILL, the kernel kills qemu too.
  const qemu = spawn('setpriv', ['--pdeathsig', 'KILL', 'qemu-system-x86_64', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const timer = setTimeout(() => {
    result.timedOut = true
    qemu.kill('SIGKILL')
  }, runTimeoutMs)
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
      if (line.startsWith(`${marker}-BOOTED`)) {
        result.bootMs = Date.now() - started
        clearTimeout(bootTimer)
      }
      const exit = new RegExp(`^${marker}-EXIT: (\\d+)`).exec(line)
      if (exit) result.exitCode = Number(exit[1])
      // The verdict is in: the guest gets 30 s to power off, no more.
      if (line.startsWith(`${marker}-RESULT:`)) setTimeout(() => qemu.kill('SIGKILL'), 30_000).unref()
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
