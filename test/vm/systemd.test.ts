// The learner's distribution in CI: runs `tsx scripts/test-systemd.ts --ci`
// (a Debian guest with systemd as PID 1, cgroup v2 only, booted under qemu;
// the learner logs in on its console) and turns each claim the guest
// records into a tap assertion (CFS_VERIFY_JSON: the results come back over
// 9p, see scripts/lib/results.ts). The CI subset: the session, the card's
// line, step 09 rootless in a scope systemd delegates, a step-06 container
// through `systemctl daemon-reload`, `npm run clean`: 7.7 minutes under TCG
// on a core of its own of the 2-core CI machine; see notes/cgroup2-vm.md.
// The whole set, with the busybox guest: npm run test:vm.
//
// Not in tap's own list (.taprc excludes test/vm/): `npm test`
// (scripts/test.ts) runs this file beside the host's tests, at the same
// time, as a tap run of its own. Skips without root, on a machine that is
// not x86_64, and when qemu is not installed, except in CI (CI=true),
// where the script fails instead: CI installs qemu, so a skip there would
// hide the test.

import t from 'tap'
import { arch } from 'node:os'
import { onPath } from '../../scripts/lib/files.ts'
import { detailOf, needsRoot, runWithResults } from '../helpers.ts'

const qemuInstalled = onPath('qemu-system-x86_64')
const skip = needsRoot()
  || (arch() !== 'x64' && `the VM is x86_64 and this machine is ${arch()}`)
  // In CI the script itself fails on a missing qemu: run it, so that shows.
  || (!qemuInstalled && process.env.CI !== 'true' && 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)')

t.test('the learner on Debian with systemd, cgroup v2 only (the CI subset), in qemu', { skip, timeout: 900_000 }, async (t) => {
  const result = await runWithResults('scripts/test-systemd.ts', ['--ci'])
  // A failed claim comes with what ran, what was expected and what came back.
  for (const claim of result.claims) t.ok(claim.pass, claim.claim, { diagnostic: !claim.pass, detail: detailOf(claim) })
  const lines = result.stdout.split('\n')
  const summary = lines.filter((l) => /^(booted in|systemd VM test|timings:|guest:)/.test(l)).join('; ')
  t.ok(result.claims.length > 0, `the guest recorded its checks (${summary || `stdout ends: ${lines.slice(-5).join(' | ')}`}; stderr: ${result.stderr.trim().slice(0, 500)})`)
  t.equal(result.exitCode, 0, `tsx scripts/test-systemd.ts --ci exits 0 (${summary})`)
})
