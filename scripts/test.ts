// npm test: the test suite (tap), as root.
//
// package.json runs the typecheck and `tap build` first, as whoever typed
// `npm test`; this re-runs itself under sudo if need be, runs tap, and gives
// tap's results directory (.tap/) back to the learner, so their checkout
// holds nothing root-owned afterwards.
//
// Two tap runs at once: the host's tests (tap's own list, which leaves out
// test/vm/), and the cgroup v2 VM guest (test/vm/), which spends its
// minutes in qemu on a core of its own: in turn they would take some four
// minutes more. The VM's output is held back and printed when both are
// done; either failing fails the whole. With arguments (`npm test --
// test/foo.test.ts`), tap alone, with them.

import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { requireRoot } from '../shared/cli.ts'
import { repoDir } from '../shared/settings.ts'
import { handBack } from './lib/owner.ts'

requireRoot() // containers, mounts, cgroups
const tap = join(repoDir, 'node_modules/.bin/tap')
const args = process.argv.slice(2)
const started = Date.now()
const host = spawn(tap, args, { cwd: repoDir, stdio: 'inherit' })
const vmTests = readdirSync(join(repoDir, 'test/vm')).filter((name) => name.endsWith('.test.ts')).map((name) => `test/vm/${name}`)
// Beside the host's tests the guest shares the CPUs with them, and may take
// twice its 4 minutes alone without making the whole run longer: the host's
// tests take over 10. So its time limit is theirs, not the 8 minutes of a VM run alone.
const vmEnv = { ...process.env, CFS_VM_TIMEOUT_S: process.env.CFS_VM_TIMEOUT_S ?? '900' }
const vm = args.length ? undefined : spawn(tap, ['--timeout=960', ...vmTests], { cwd: repoDir, env: vmEnv, stdio: ['ignore', 'pipe', 'pipe'] })
let vmOutput = ''
vm?.stdout!.on('data', (chunk) => (vmOutput += chunk))
vm?.stderr!.on('data', (chunk) => (vmOutput += chunk))
// Ctrl-C reaches tap through the terminal; tap stops its tests itself.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => [host, vm].forEach((child) => child?.kill(signal)))

const [hostCode, vmCode] = await Promise.all([ended(host), vm ? ended(vm) : 0])
if (vm) {
  console.log(`\n== the VM guest (${vmTests.join(', ')}), run beside the tests above: ${vmCode === 0 ? 'passed' : 'FAILED'}; both done in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  process.stdout.write(vmOutput)
}
handBack(join(repoDir, '.tap'))
process.exit(hostCode || vmCode)

// The exit code a child ended with (128 + the signal's number if a signal ended it).
function ended(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? 128 + (signal === 'SIGINT' ? 2 : 15))))
}
