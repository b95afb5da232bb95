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

/** Boot the guest and stream its console here; resolves when qemu is gone (killed at the timeout). */
export function boot(kernel: Kernel, initramfs: string, resultsDir: string, accelerator: string, bootTimeoutMs?: number): Promise<BootResult> {
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
