// execCommand: exec from Node keeps stdout, passes the exit code, and maps
// a missing or non-executable command to 127 and 126.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { containerEnv, DEFAULT_PATH } from '../shared/process.ts'

const fixture = fileURLToPath(new URL('fixtures/exec.ts', import.meta.url))
const run = (...args: string[]) =>
  spawnSync(process.execPath, ['--import=tsx', fixture, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })

t.test('exec keeps stdout and passes the exit code', async (t) => {
  const result = run('fixed', '/bin/sh', '-c', 'echo kept; exit 5')
  t.equal(result.stdout, 'kept\n', 'the command\'s stdout arrives')
  t.equal(result.status, 5, 'the command\'s exit code is the process\'s exit code')
})

t.test('without clearing FD_CLOEXEC on 0-2, the command loses its output', async (t) => {
  const result = run('bare', '/bin/sh', '-c', 'echo lost; exit 5')
  t.equal(result.stdout, '', 'Node marks stdout close-on-exec, so a bare execvp writes nowhere')
})

t.test('a missing command exits 127, a non-executable one 126, each with one line', async (t) => {
  const missing = run('fixed', 'no-such-command-here')
  t.equal(missing.status, 127, 'missing command: 127')
  t.match(missing.stderr, /^cfs: no-such-command-here: command not found\n$/, 'one line on stderr')
  const notExecutable = run('fixed', '/etc/passwd')
  t.equal(notExecutable.status, 126, 'not executable: 126')
  t.equal(notExecutable.stderr.trim().split('\n').length, 1, 'one line on stderr')
})

t.test('the command gets the container\'s environment and nothing else of the host\'s', async (t) => {
  const result = spawnSync(process.execPath, ['--import=tsx', fixture, 'fixed', 'env'], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, TERM: 'xterm-test', CFS_TEST_SECRET: 'hunter2', AWS_SECRET_ACCESS_KEY: 'hunter2' },
  })
  t.same(result.stdout.trim().split('\n').sort(), [`PATH=${DEFAULT_PATH}`, 'HOME=/root', 'HOSTNAME=fixture', 'TERM=xterm-test'].sort(),
    'PATH, HOME, HOSTNAME and the user\'s TERM; no secret, no CFS_ setting, not the host\'s PATH')
})

t.test('containerEnv: -e adds variables and wins over the defaults', async (t) => {
  t.same(containerEnv('box', ['PATH=/x', 'A=1=2']).filter((pair) => !pair.startsWith('TERM=')), ['PATH=/x', 'HOME=/root', 'HOSTNAME=box', 'A=1=2'],
    'PATH replaced in place, A added, a value may hold "="')
})
