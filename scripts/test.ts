// npm test: the test suite (tap), as root.
//
// package.json runs the typecheck and `tap build` first, as whoever typed
// `npm test`; this re-runs itself under sudo if need be, runs tap, and gives
// tap's results directory (.tap/) back to the learner, so their checkout
// holds nothing root-owned afterwards.
//
// Two tap runs at once, each on cores of its own (taskset): the VM guest
// (test/vm/, which .taprc leaves out of tap's list: the systemd guest's CI
// subset, notes/cgroup2-vm.md) on the last core, where
// qemu emulates the guest's CPUs in one thread, and the host's tests on the
// others until the guest is done, then on all. Most of the host's tests run
// one thing at a time, and took about as long on one core as on two
// (December 2026, 2 cores: the verify, flags and interactive tests, 212 s on
// one core beside the guest, 209 s on both in a full run); in turn, the
// guest's seven minutes or so would come on top. Unpinned, they starved the
// guest, whose checks have deadlines of their own. bad-input, which runs two
// steps at a time, comes last, on every core: pinned, it took 155 s instead
// of 72. The guest's output is held back and printed when both are done;
// either failing fails the whole. With one core, or no taskset, one after
// the other. With arguments (`npm test -- test/foo.test.ts`), tap alone,
// with them.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { onPath } from './lib/files.ts'
import { descendants } from './lib/procfs.ts'
import { requireRoot } from '../shared/cli.ts'
import { repoDir } from '../shared/settings.ts'
import { handBack } from './lib/owner.ts'

requireRoot() // containers, mounts, cgroups
// Beside the guest, these run after the other host tests, on every core (see above).
const LAST = ['test/bad-input.test.ts']
const tap = join(repoDir, 'node_modules/.bin/tap')
const args = process.argv.slice(2)
const vmTests = args.length ? [] : readdirSync(join(repoDir, 'test/vm')).filter((name) => name.endsWith('.test.ts')).map((name) => `test/vm/${name}`)
const cores = availableParallelism()
const beside = vmTests.length > 0 && cores >= 2 && onPath('taskset')
const pinned = (cpus: string, tapArgs: string[]) => ['taskset', ['--cpu-list', cpus, tap, ...tapArgs]] as const
const started = Date.now()
const children: ChildProcess[] = []
// Ctrl-C reaches tap through the terminal; tap stops its tests itself.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => children.forEach((child) => child.kill(signal)))

let code: number
if (beside) {
  // Tests that run several steps at once themselves (bad-input, two at a
  // time) go last, once the guest has given its core back.
  const listed = spawnSync(tap, ['list'], { cwd: repoDir, encoding: 'utf8' }).stdout.split('\n').filter(Boolean)
  const hostTests = listed.filter((file) => !LAST.includes(file))
  const host = start(...pinned(`0-${cores - 2}`, hostTests), 'inherit')
  // The guest's own deadline is in test/vm/; tap's per-file 600 s would cut it short.
  const vm = start(...pinned(`${cores - 1}`, ['--timeout=960', ...vmTests]), ['ignore', 'pipe', 'pipe'])
  // Once the guest is done, the host's tests get every core: each thread of
  // each of their processes now (taskset --all-tasks), and what they start
  // later inherits it.
  vm.on('exit', () => {
    for (const pid of [host.pid!, ...descendants(host.pid!)]) spawnSync('taskset', ['--all-tasks', '--pid', '--cpu-list', `0-${cores - 1}`, String(pid)], { stdio: 'ignore' })
  })
  let vmOutput = ''
  vm.stdout!.on('data', (chunk) => (vmOutput += chunk))
  vm.stderr!.on('data', (chunk) => (vmOutput += chunk))
  const [hostCode, vmCode] = await Promise.all([ended(host), ended(vm)])
  console.log(`\n== the VM guest (${vmTests.join(', ')}), run beside the tests above on core ${cores - 1}: ${vmCode === 0 ? 'passed' : 'FAILED'}; both done in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  process.stdout.write(vmOutput)
  code = hostCode || vmCode
  const last = LAST.filter((file) => listed.includes(file))
  if (last.length) code = (await ended(start(tap, last, 'inherit'))) || code
} else {
  code = await ended(start(tap, args, 'inherit'))
  if (vmTests.length) code = (await ended(start(tap, ['--timeout=960', ...vmTests], 'inherit'))) || code
}
handBack(join(repoDir, '.tap'))
process.exit(code)

function start(command: string, commandArgs: readonly string[], stdio: 'inherit' | ['ignore', 'pipe', 'pipe']): ChildProcess {
  const child = spawn(command, commandArgs, { cwd: repoDir, stdio })
  children.push(child)
  return child
}

// The exit code a child ended with (128 + the signal's number if a signal ended it).
function ended(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => child.on('exit', (code, signal) => resolve(code ?? 128 + (signal === 'SIGINT' ? 2 : 15))))
}
