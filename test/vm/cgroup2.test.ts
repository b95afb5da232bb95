// The cgroup v2 code path on a real v2-only kernel: runs `npm run
// test:cgroup2` (scripts/test-cgroup2.ts boots Debian's kernel under qemu
// with cgroup_no_v1=all) and turns each claim the guest records into a tap
// assertion (CFS_VERIFY_JSON: the guest's results come back over 9p, see
// scripts/lib/results.ts). About 3.5 minutes under TCG on 2 cores, steps
// 06 and 09 (rootless in a delegated cgroup too); see notes/cgroup2-vm.md.
//
// Skips without root, on a machine that is not x86_64, and when qemu is not
// installed, except in CI (CI=true), where the script fails instead: CI
// installs qemu, so a skip there would hide the test.

import t from 'tap'
import { arch } from 'node:os'
import { onPath } from '../../scripts/lib/files.ts'
import { detailOf, needsRoot, runWithResults } from '../helpers.ts'

const qemuInstalled = onPath('qemu-system-x86_64')
const skip = needsRoot()
  || (arch() !== 'x64' && `the VM is x86_64 and this machine is ${arch()}`)
  // In CI the script itself fails on a missing qemu: run it, so that shows.
  || (!qemuInstalled && process.env.CI !== 'true' && 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)')

t.test('npm run test:cgroup2: steps 06 and 09 on a v2-only kernel, in qemu', { skip, timeout: 600_000 }, async (t) => {
  // `env -u NODE_OPTIONS`: without tap's preloads, as verify.test.ts runs the
  // verify scripts: tap's preloads are for test files, not what they run.
  const result = await runWithResults('scripts/test-cgroup2.ts')
  // A failed claim comes with what ran, what was expected and what came back.
  for (const claim of result.claims) t.ok(claim.pass, claim.claim, { diagnostic: !claim.pass, detail: detailOf(claim) })
  const lines = result.stdout.split('\n')
  const summary = lines.filter((l) => /^(booted in|cgroup2 VM test)/.test(l)).join('; ')
  t.ok(result.claims.length > 0, `the guest recorded its checks (${summary || `stdout ends: ${lines.slice(-5).join(' | ')}`}; stderr: ${result.stderr.trim().slice(0, 500)})`)
  t.equal(result.exitCode, 0, `npm run test:cgroup2 exits 0 (${summary})`)
})
