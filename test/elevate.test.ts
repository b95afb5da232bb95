// Self-elevation and the Node version check (shared/cli.ts), for what the
// learner test (learner.test.ts) cannot show: a machine without sudo, a
// sudo that does not make us root, and a Node that is too old. Runs the
// step as the user `nobody`, through setpriv(1).

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { checkNodeVersion, parseRunArgs } from '../shared/cli.ts'
import { UsageError } from '../shared/errors.ts'
import { repoDir } from '../shared/settings.ts'
import { rootOnly } from './helpers.ts'

// Step 02 as `nobody`, with only `env` as its environment.
function asNobody(env: string[], args = ['hostname']) {
  return spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'env', '-i', ...env, process.execPath, join(repoDir, 'steps/02-uts/index.ts'), 'run', ...args],
    { encoding: 'utf8', cwd: '/' })
}

t.test('not root and no sudo on PATH: one line, exit 125', rootOnly(), async (t) => {
  const empty = mkdtempSync('/tmp/cfs-no-sudo-')
  try {
    const result = asNobody([`PATH=${empty}`])
    t.equal(result.status, 125, `exit 125 (stderr: ${result.stderr})`)
    t.match(result.stderr, /^cfs: needs root .*, and there is no sudo: run it as root\n$/, 'one line that says why')
  } finally {
    rmSync(empty, { recursive: true, force: true })
  }
})

t.test('re-run by sudo, yet still not root: no loop, one line, exit 125', rootOnly(), async (t) => {
  const result = asNobody(['PATH=/usr/bin:/bin', 'CFS_SUDO=1'])
  t.equal(result.status, 125, `exit 125 (stderr: ${result.stderr})`)
  t.match(result.stderr, /^cfs: needs root .*, and sudo ran it as uid 65534: run it as root\n$/, 'one line, and no second sudo')
})

t.test('--name goes along when the step re-runs itself under sudo', rootOnly(), async (t) => {
  // A stand-in sudo that prints what it was asked to run: requireRoot execs it.
  const bin = mkdtempSync('/tmp/cfs-fake-sudo-')
  try {
    writeFileSync(join(bin, 'sudo'), '#!/bin/sh\nprintf "%s\\n" "$@"\n', { mode: 0o755 })
    chmodSync(bin, 0o755)
    const result = asNobody([`PATH=${bin}:/usr/bin:/bin`], ['--name', 'web', '-e', 'A=1', 'hostname'])
    const args = result.stdout.split('\n')
    const run = args.indexOf('run')
    t.equal(result.status, 0, `the stand-in sudo ran (stderr: ${result.stderr})`)
    t.same(args.slice(run, run + 7), ['run', '--name', 'web', '--env', 'A=1', '--', 'hostname'], 'sudo is asked to run the step with --name web, before the command', { stdout: result.stdout })
  } finally {
    rmSync(bin, { recursive: true, force: true })
  }
})

t.test('checkNodeVersion: 22.18 is the oldest Node that runs the steps (type stripping)', async (t) => {
  for (const ok of ['22.18.0', '22.20.1', '24.21.0', '25.0.0']) t.doesNotThrow(() => checkNodeVersion(ok), `${ok} is new enough`)
  for (const old of ['20.20.2', '22.17.1', '18.0.0']) t.throws(() => checkNodeVersion(old), UsageError, `${old} is refused`)
  t.throws(() => checkNodeVersion('20.20.2'), /^Node 20\.20\.2 is too old: the workshop needs Node 22\.18 or newer/, 'the line names both versions')
})

// A real old Node, where the machine has one (this CI machine's /usr/bin/node
// is 20): every step must get as far as the version check, so nothing it
// imports may fail to link there (a named import Node 20 lacks did, once).
const oldNode = spawnSync('/usr/bin/node', ['--version'], { encoding: 'utf8' }).stdout?.trim().slice(1)
const tooOld = oldNode !== undefined && oldNode !== '' && (() => {
  try {
    checkNodeVersion(oldNode)
    return false
  } catch {
    return true
  }
})()
t.test(`every step under the machine's old Node (${oldNode || 'none'}): one line, exit 125`, { skip: tooOld ? false : 'no Node older than 22.18 at /usr/bin/node' }, async (t) => {
  const steps = readdirSync(join(repoDir, 'steps')).filter((name) => /^\d\d-/.test(name)).sort()
  for (const step of steps) {
    const result = spawnSync('/usr/bin/node', [join(repoDir, 'node_modules/tsx/dist/cli.mjs'), `steps/${step}`, 'run', 'true'], { encoding: 'utf8', cwd: repoDir })
    t.equal(result.status, 125, `${step}: exit 125 (stderr: ${result.stderr.trim().slice(-300)})`)
    t.match(result.stderr, /^cfs: Node [\d.]+ is too old: the workshop needs Node 22\.18 or newer.*\n$/, `${step}: one line`)
  }
  // `sudo npx tsx …` finds the system's Node through sudo's secure_path: the line says so, and what to type instead.
  if (process.getuid?.() !== 0) return
  const underSudo = spawnSync('/usr/bin/node', [join(repoDir, 'node_modules/tsx/dist/cli.mjs'), 'steps/04-pid-proc', 'run', 'true'], { encoding: 'utf8', cwd: repoDir, env: { ...process.env, SUDO_USER: 'learner' } })
  t.match(underSudo.stderr, /^cfs: Node [\d.]+ is too old: [^\n]*; under sudo, PATH is sudo's: leave sudo out \(steps re-run themselves under it\), or keep your PATH with sudo env "PATH=\$PATH" …\n$/, 'typed with sudo (SUDO_USER set, as root): the one line says to leave sudo out, or keep PATH')
})

t.test('-e KEY=VALUE as given; -e KEY takes the host\'s value, or nothing', async (t) => {
  process.env.CFS_TEST_FROM_HOST = 'here'
  delete process.env.CFS_TEST_UNSET
  const { env, command } = parseRunArgs(['run', '-e', 'A=1', '--env', 'CFS_TEST_FROM_HOST', '-e', 'CFS_TEST_UNSET', '--env=B=x=y', 'sh', '-e', 'x'], {}, 'usage')
  t.same(env, ['A=1', 'CFS_TEST_FROM_HOST=here', 'B=x=y'], 'three variables, the unset one left out')
  t.same(command, ['sh', '-e', 'x'], '-e after the command belongs to the command')
  t.throws(() => parseRunArgs(['run', '-e', '=oops', 'sh'], {}, 'usage'), UsageError, 'an empty name is refused')
})
