// A learner's own machine, in CI: a new user who is not root, may use sudo,
// and has Node 24 in their home directory, of mode 0700, as the only Node
// their shell finds (the machine's own /usr/bin/node and npm are hidden from
// this test, in a private mount namespace). They clone the repository, `npm
// ci`, type the card's line without sudo, run README's first command, stop
// a container that sudo runs by SIGTERM and by closing its window, run step
// 09 with sudo and without, check an exercise and ask for two hints.
// Nothing in their clone or home may end up owned by root (a second `npm
// ci` used to show that too, at 25 s; the search for root's files does).
//
// The clone is of HEAD (a git bundle): commit what you want this to test.
// Node comes from CFS_TEST_NODE_PREFIX (a prefix with node and npm in
// node_modules/.bin, as .ci/run installs it), else the user installs
// node@24 and npm from the registry. Everything it makes is removed after:
// the user and its home, its sudoers entry, the bundle.

import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { repoDir } from '../shared/settings.ts'
import { rootOnly, type Test } from './helpers.ts'

const user = 'cfs-learner'
const home = `/home/${user}`
const sudoers = `/etc/sudoers.d/${user}`

t.test('a new user, Node in their home, sudo: from clone to a PID-1 shell, nothing root-owned', { ...rootOnly(), timeout: 900_000 }, async (t) => {
  if (!existsSync('/usr/bin/sudo')) throw new Error('sudo is not installed (.ci/run installs it)')
  const started = Date.now()
  removeUser()
  const work = mkdtempSync('/tmp/cfs-learner-')
  try {
    execFileSync('useradd', ['--create-home', '--shell', '/bin/bash', user])
    // As Debian 12's adduser and Ubuntu since 21.04 make them: only its owner
    // may enter it, not even container root's launcher (see userns-root below).
    chmodSync(home, 0o700)
    writeFileSync(sudoers, `${user} ALL=(ALL) NOPASSWD: ALL\n`, { mode: 0o440 })
    chmodSync(work, 0o755)
    const results = join(work, 'results')
    execFileSync('install', ['-d', '-o', user, results])
    execFileSync('git', ['-C', repoDir, 'bundle', 'create', '--quiet', join(work, 'repo.bundle'), 'HEAD'])
    chmodSync(join(work, 'repo.bundle'), 0o644)
    giveNode()

    // The session runs in a mount namespace of its own where the machine's
    // Node and npm are replaced by a script that says so and fails.
    const hidden = join(work, 'hidden-node')
    writeFileSync(hidden, '#!/bin/sh\necho "the machine\'s node is hidden from this test" >&2\nexit 127\n', { mode: 0o755 })
    const hide = ['/usr/bin/node', '/usr/bin/npm', '/usr/bin/npx'].filter(existsSync).map((file) => `mount --bind ${hidden} ${file}`).join(' && ')
    const env = ['HOME=' + home, 'USER=' + user, 'LOGNAME=' + user, 'LANG=C.UTF-8', 'TERM=xterm', `PATH=${home}/node/node_modules/.bin:/usr/local/bin:/usr/bin:/bin`]
    // The machine's own trust settings for the registry (a proxy's CA), as a learner's shell would have them.
    for (const key of ['NODE_EXTRA_CA_CERTS', 'HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'NO_PROXY', 'no_proxy']) {
      if (process.env[key]) env.push(`${key}=${process.env[key]}`)
    }
    const setUp = Date.now() - started
    const session = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c',
      `${hide || 'true'} && exec runuser -u ${user} -- env -i "$@"`, 'sh', ...env, 'bash', join(repoDir, 'test/learner/session.sh'), results, join(work, 'repo.bundle')],
    { encoding: 'utf8', timeout: 840_000 })
    t.equal(session.status, 0, `the session ran to its end (stderr: ${session.stderr?.slice(-500)})`)
    const out = (name: string) => (existsSync(join(results, `${name}.out`)) ? readFileSync(join(results, `${name}.out`), 'utf8') : '(no output)')
    const rc = (name: string) => (existsSync(join(results, `${name}.rc`)) ? Number(readFileSync(join(results, `${name}.rc`), 'utf8')) : undefined)

    t.match(out('node-found'), new RegExp(`^${home}/node/.*\\nv24\\.`), 'their shell finds only the Node in their home, a Node 24')
    t.not(rc('system-node'), 0, 'the machine\'s /usr/bin/node is hidden from them')
    t.equal(rc('clone'), 0, `git clone: ${out('clone')}`)
    t.equal(rc('npm-ci'), 0, `npm ci as the user: ${out('npm-ci').slice(-400)}`)
    t.notMatch(out('npm-ci'), /install scripts not yet covered|allowScripts/, 'npm ci says nothing of unreviewed install scripts')

    t.equal(rc('readme-first'), 0, `README's first command exits 0: ${out('readme-first')}`)
    t.equal(out('readme-first'), 'hello\n', 'and prints hello, without sudo: step 01 needs no root')

    t.equal(rc('card-piped'), 0, `the card's line, typed without sudo, exits 0: ${out('card-piped')}`)
    t.match(out('card-piped'), /^cfs: needs root .*: re-running under sudo$/m, 'it says in one line that it re-runs itself under sudo')
    t.match(out('card-piped'), /^pid=1 uid=0$/m, 'the shell inside is PID 1, and root')

    t.equal(rc('card-tty'), 7, `in a terminal, through sudo's own pty, \`exit 7\` comes back as the exit code (screen: ${out('card-tty').trim()})`)
    t.match(out('card-tty'), /^pid=1 uid=0 host=[0-9a-f]{12}$/m, 'in a terminal: PID 1, root, the container\'s hostname')

    t.equal(rc('kill-tsx'), 137, `SIGTERM to \`npx tsx\` stops the container that sudo runs: its sleep, as PID 1, ignores SIGTERM, so SIGKILL after 2 s (${out('kill-tsx').trim()})`)
    checkNothingLeft(t, results, 'kill-tsx', (row) => row.step === '06-cgroups')
    t.equal(rc('window-closed'), 0, 'closing the window of `run sh` (the terminal hung up) stops the step within 20 s')
    checkNothingLeft(t, results, 'window-closed', (row) => row.step === '06-cgroups')

    t.equal(rc('userns-root'), 0, `step 09 as root, the way README says it (sudo env "PATH=$PATH" …), from the 0700 home: ${out('userns-root')}`)
    t.match(out('userns-root'), /^uid=0 map= ?0 100000 65536$/m, 'inside, root, and root is host uid 100000')
    t.equal(rc('userns-rootless'), 0, `step 09 rootless, without sudo: ${out('userns-rootless')}`)
    t.match(out('userns-rootless'), new RegExp(`^uid=0 map= ?0 ${uid()} 1$`, 'm'), 'inside, root, and root is the learner')

    t.equal(rc('doctor'), 0, `npm run doctor passes: ${out('doctor').slice(-600)}`)
    t.equal(rc('exercise'), 1, 'npm run exercise -- 02 (as shipped) runs its checks through sudo and fails them')
    t.match(out('exercise'), /✘ exercise 02-uts: \d+ of \d+ checks pass/, `with the verdict line: ${out('exercise').slice(-300)}`)
    t.match(out('hint-1'), /hint 1 of \d/, `the first --hint is hint 1: ${out('hint-1')}`)
    t.match(out('hint-2'), /hint 2 of \d/, `the second --hint is hint 2: the progress was saved: ${out('hint-2')}`)
    t.equal(rc('git-clean'), 0, `git clean -fdx: ${out('git-clean')}`)
    t.equal(out('root-owned'), '', 'no file in their clone, ~/.local or ~/.npm is owned by root')
    if (existsSync(join(results, 'times'))) t.comment(`seconds per command: ${readFileSync(join(results, 'times'), 'utf8').trim().replace(/\n/g, ', ')}; set-up ${(setUp / 1000).toFixed(0)} s, in all ${((Date.now() - started) / 1000).toFixed(0)} s`)
  } finally {
    removeUser()
    rmSync(work, { recursive: true, force: true })
  }
})

// Node 24 and npm in ~/node, as nvm or fnm would put them in a home directory.
function giveNode(): void {
  const prefix = process.env.CFS_TEST_NODE_PREFIX
  if (prefix) {
    execFileSync('cp', ['-a', prefix, `${home}/node`])
    execFileSync('chown', ['-R', `${user}:`, `${home}/node`])
    return
  }
  execFileSync('runuser', ['-u', user, '--', 'env', `HOME=${home}`, ...(process.env.NODE_EXTRA_CA_CERTS ? [`NODE_EXTRA_CA_CERTS=${process.env.NODE_EXTRA_CA_CERTS}`] : []),
    'npm', 'install', '--no-audit', '--no-fund', '--prefix', `${home}/node`, 'node@24', 'npm@11'], { stdio: 'ignore' })
}

// The one container `npm run ps` showed while <name> ran (its id), and
// nothing of it in what `npm run clean` found afterwards.
function checkNothingLeft(t: Test, results: string, name: string, mine: (row: { id: string; step: string }) => boolean): void {
  const running = join(results, `${name}-running.json`)
  const ids = readJson<{ id: string; step: string }[]>(running).filter(mine).map((row) => row.id)
  const clean = existsSync(join(results, `${name}-clean.out`)) ? readFileSync(join(results, `${name}-clean.out`), 'utf8') : '(no output)'
  t.equal(ids.length, 1, `${name}: npm run ps showed its container while it ran`, { ps: existsSync(running) ? readFileSync(running, 'utf8') : '(none)' })
  t.ok(ids.length === 1 && !clean.includes(ids[0]), `${name}: and nothing of it is left: ${clean}`, { id: ids, ps: existsSync(join(results, `${name}-ps.txt`)) ? readFileSync(join(results, `${name}-ps.txt`), 'utf8') : '' })
}

// A JSON file, or [] if it is missing or not JSON.
function readJson<T>(file: string): T {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T
  } catch {
    return [] as T
  }
}

// The user's uid.
function uid(): number {
  return Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim())
}

// The user, its processes, its home and its sudoers entry: gone.
function removeUser(): void {
  spawnSync('pkill', ['-KILL', '-u', user])
  spawnSync('userdel', ['--remove', user], { stdio: 'ignore' })
  rmSync(sudoers, { force: true })
  rmSync(home, { recursive: true, force: true })
}
