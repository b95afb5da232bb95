// npm run test:cgroup2 (the busybox half of npm run test:vm)
//
// Prove the cgroup v2 code path on a real v2-only kernel. This host may keep
// its controllers on v1 (or be hybrid); so boot Debian's own kernel under
// qemu with `cgroup_no_v1=all`, give it this host's root read-only over 9p
// (with a tmpfs overlay on top, so it can write), and run
// scripts/cgroup2-guest.ts in there: npm run doctor, checks of the v2 files
// themselves, step 09 rootless in a cgroup delegated to a user, and steps
// 06's and 09's verify.ts. The guest prints one line per check on
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
//
// The parts: scripts/vm/kernel.ts gets the kernel, scripts/vm/initramfs.ts
// writes the guest's first root and its scripts, scripts/vm/boot.ts runs
// qemu.

import chalk from 'chalk'
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { exitWithError } from '../shared/errors.ts'
import { requireRoot } from '../shared/cli.ts'
import { stateDir } from '../shared/settings.ts'
import { forwardResults } from './lib/results.ts'
import { boot, skipReason, timeoutMs, type BootResult } from './vm/boot.ts'
import { buildInitramfs, guestResults } from './vm/initramfs.ts'
import { ensureKernel } from './vm/kernel.ts'

/** Where the unpacked kernel is kept between runs, and each run's work directory. */
const vmDir = join(stateDir, 'vm')
/**
 * tcg (qemu's own CPU emulation, the default), kvm, or auto (kvm if it boots
 * within kvmBootMs, else tcg). KVM is opt-in: on the CI machine /dev/kvm is
 * kvm_pvm (a paravirtual KVM for hosts without VT-x/AMD-V, whose guests must
 * be built for it), and Debian's kernel hangs right after "Probing EDD".
 */
const accel = process.env.CFS_VM_ACCEL ?? 'tcg'
const kvmBootMs = 20_000

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
  const kernel = ensureKernel(vmDir)
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
    // The guest's results, for whoever set this run's CFS_VERIFY_JSON (npm run test:vm).
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

// The verdict, from the guest's last line of `CGROUP2-RESULT: pass N fail M` and how qemu ended.
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
    counts && result.exitCode !== 0 && (result.exitCode === undefined
      ? `no CGROUP2-EXIT line came within 30 s of the verdict: the checks' node did not exit (a timer or a child holding it open?)`
      : `the guest's checks exited ${result.exitCode}`),
  ].filter(Boolean)
  if (problems.length) {
    console.log(chalk.red(`cgroup2 VM test failed: ${problems.join('; ')}`))
    process.exitCode = 1
  } else console.log(chalk.green(`cgroup2 VM test passed: all ${counts![1]} checks passed on a v2-only kernel`))
}

main().catch((err) => exitWithError(err, 'test:cgroup2'))
