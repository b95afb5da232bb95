// npm run test:vm (with the busybox guest), or alone: tsx scripts/test-systemd.ts [--ci] [--only=PART,...]
//
// The learner's distribution, proven: boot a Debian guest with systemd as
// PID 1 (scripts/vm/debian.ts builds it once with mmdebstrap), with its
// own kernel in its default, cgroup v2-only mode, and a learner who logs in
// on the console as on a laptop: their shell in session-N.scope,
// user@1000.service running. Their home is a disk made for this run
// (scripts/vm/home.ts): this repository with its node_modules, the host's
// Node and npm, the host's images. Their login runs scripts/systemd-guest.ts:
// README's start with the card's line, every step's verify from 05 on,
// step 09 rootless in a scope systemd delegates, what systemd does to the
// project's cgroups, `npm run clean`; with --ci only the CI subset (see
// there). One line per check on the console, then `SYSTEMD-RESULT: pass N
// fail M`; the results as data come back over 9p and are passed on to this
// run's CFS_VERIFY_JSON, if set.
//
// Needs root (to build the image and read the repository as it is),
// x86_64, qemu-system-x86_64, mmdebstrap and mkfs.ext4. Skips without qemu
// as test:cgroup2 does (fails instead in CI).

import chalk from 'chalk'
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { exitWithError } from '../shared/errors.ts'
import { requireRoot } from '../shared/cli.ts'
import { prepareImage } from '../shared/rootfs.ts'
import { imagesDir, stateDir } from '../shared/settings.ts'
import { forwardResults } from './lib/results.ts'
import { bootGuest, skipReason, type BootResult } from './vm/boot.ts'
import { ensureDebianGuest } from './vm/debian.ts'
import { buildHome, homeResults } from './vm/home.ts'

const vmDir = join(stateDir, 'vm')
const ci = process.argv.includes('--ci')
/**
 * The whole run, boot included: 12 minutes for the CI subset, which took
 * 7.7 on a core of its own of this 2-core machine; 60 for every verify
 * (32.5 measured on one day, past 40 on a slower one). See
 * notes/cgroup2-vm.md.
 */
const timeoutS = Number(process.env.CFS_VM_TIMEOUT_S ?? (ci ? 720 : 3600))
const accel = process.env.CFS_VM_ACCEL ?? 'tcg'

async function main(): Promise<void> {
  requireRoot() // builds the image (mmdebstrap, chroot) and copies the checkout as it is
  const skip = skipReason()
  if (skip) {
    console.log(`systemd VM test skipped: ${skip}`)
    return
  }
  const started = Date.now()
  mkdirSync(vmDir, { recursive: true })
  removeStale()
  const guest = ensureDebianGuest(vmDir)
  const builtNow = Date.now() - started
  console.log(chalk.dim(`guest: Debian ${guest.suite}, ${guest.packages}${guest.built.note ? ` (${guest.built.note})` : ''}`))
  // The learner gets the host's images: prepare root's busybox image first if the host has none.
  if (!existsSync(join(imagesDir, 'busybox'))) await prepareImage({ source: 'busybox', log: () => {} })
  const work = join(vmDir, `run-${process.pid}`)
  mkdirSync(work)
  try {
    const resultsDir = join(work, 'results')
    mkdirSync(resultsDir)
    chmodSync(resultsDir, 0o777) // the learner (uid 1000) writes the results
    const home = join(work, 'home.ext4')
    const homeMs = buildHome(work, home, imagesDir, {
      guestArgs: process.argv.slice(2).filter((arg) => arg === '--ci' || arg.startsWith('--only=')),
      waitScale: process.env.CFS_WAIT_SCALE || (accel === 'kvm' ? '1' : '5'),
      command: process.env.CFS_VM_GUEST_CMD,
    })
    rmSync(join(work, 'home'), { recursive: true, force: true })
    console.log(chalk.dim(`the learner's home disk (checkout, node_modules, Node, images): ${(homeMs / 1000).toFixed(1)} s`))
    const result = await bootGuest({
      // net.ifnames=0: udev would rename eth0, which the initramfs brought up, and fail at it.
      marker: 'SYSTEMD', kernel: guest.kernel, initramfs: guest.initramfs, append: 'rdinit=/init net.ifnames=0', resultsDir, accelerator: accel, nic: true,
      drives: [{ file: guest.image, snapshot: true }, { file: home }],
      timeoutMs: timeoutS * 1000,
    })
    forwardResults(join(resultsDir, homeResults))
    report(result, Date.now() - started, builtNow)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

// Work directories of earlier runs killed before their clean-up (run-<pid>, build-<pid>).
function removeStale(): void {
  for (const name of readdirSync(vmDir)) {
    const pid = /^(?:run|build)-(\d+)$/.exec(name)?.[1]
    if (pid && Number(pid) !== process.pid && !existsSync(`/proc/${pid}`)) rmSync(join(vmDir, name), { recursive: true, force: true })
  }
}

// The verdict, from the guest's last `SYSTEMD-RESULT: pass N fail M` and how qemu ended.
function report(result: BootResult, totalMs: number, buildMs: number): void {
  const verdict = result.lines.map((line) => /^SYSTEMD-RESULT: (.*)$/.exec(line)?.[1]).filter(Boolean).at(-1)
  const counts = /^pass (\d+) fail (\d+)$/.exec(verdict ?? '')
  const seconds = (ms: number | undefined) => (ms === undefined ? '?' : (ms / 1000).toFixed(1))
  console.log(`booted in ${seconds(result.bootMs)} s (qemu start to the learner's login shell), whole run ${seconds(totalMs)} s${buildMs > 5000 ? ` (building the guest: ${seconds(buildMs)} s)` : ''}`)
  const problems = [
    result.timedOut && `timed out after ${timeoutS} s: qemu killed`,
    result.bootMs === undefined && `the learner's login shell did not start (${result.qemuStatus}; last lines: ${result.lines.slice(-5).join(' | ')})`,
    !counts && result.bootMs !== undefined && `no \`SYSTEMD-RESULT: pass N fail M\` line${verdict ? `, but: ${verdict}` : ''} (${result.qemuStatus})`,
    counts && Number(counts[2]) > 0 && `${counts[2]} of ${Number(counts[1]) + Number(counts[2])} checks failed in the guest`,
    counts && result.exitCode !== 0 && (result.exitCode === undefined
      ? `no SYSTEMD-EXIT line came within 30 s of the verdict: the checks' node did not exit (a timer or a child holding it open?)`
      : `the guest's checks exited ${result.exitCode}`),
  ].filter(Boolean)
  if (problems.length) {
    console.log(chalk.red(`systemd VM test failed: ${problems.join('; ')}`))
    process.exitCode = 1
  } else console.log(chalk.green(`systemd VM test passed: all ${counts![1]} checks passed as a learner on Debian with systemd${ci ? ' (the CI subset)' : ''}`))
}

main().catch((err) => exitWithError(err, 'test:vm'))
