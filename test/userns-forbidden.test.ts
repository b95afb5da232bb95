// Step 09 rootless where the kernel refuses a user a user namespace: one
// line that names the cause and how to change it, exit 125, nothing left.
//
// The refusals are real, made without touching the host's settings:
//   - user.max_user_namespaces is per user namespace (user_namespaces(7)):
//     in a child namespace of our own, root there writes 0, or 1 with one
//     already held by the user, and the kernel says ENOSPC, to root too;
//   - a chroot (a bind of / in a private mount namespace): the kernel says
//     EPERM to anyone who asks for a user namespace from inside it.
// In each the step runs as a user, nobody (65534), the uid being mapped to
// itself. Before it, the same user asks `unshare --user` and reads the
// sysctl in the same place, so the test checks the line against what the
// kernel really said there, not only against the line's own reading.

import t from 'tap'
import { spawn } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { repoDir } from '../shared/settings.ts'
import { tsx } from '../scripts/lib/verify.ts'
import { rootOnly } from './helpers.ts'
import { leftoversSince, snapshotLeftovers, watchRun } from './leftovers.ts'

const USER = 65534

interface Refused {
  kernel: string // what `unshare --user --map-root-user true` said to the user there
  root: string // ...and to root there
  sysctl: string // user.max_user_namespaces as read there
  exitCode: number | null
  stderr: string
  home: string
}

// What each case does before the user runs: in `sh`, as root of the place the step runs in.
const cases: { name: string; setup: string; wrap: 'userns' | 'chroot'; code: string; line: RegExp }[] = [
  {
    name: 'user.max_user_namespaces = 0 in the namespace the step runs in',
    wrap: 'userns',
    setup: 'echo 0 > /proc/sys/user/max_user_namespaces',
    code: 'No space left on device',
    line: /^cfs: this host allows no user namespaces, not even root's \(user\.max_user_namespaces = 0\): allow them with `sudo sysctl user\.max_user_namespaces=15000`$/,
  },
  {
    name: 'user.max_user_namespaces = 1, and the user holds one already',
    wrap: 'userns',
    setup: 'echo 1 > /proc/sys/user/max_user_namespaces',
    code: 'No space left on device',
    line: /^cfs: the kernel says ENOSPC: this user has as many user namespaces as it may \(user\.max_user_namespaces = 1, per user, here or in a namespace above\): end some, or raise the limit with `sudo sysctl user\.max_user_namespaces=<more>`$/,
  },
  {
    name: 'in a chroot',
    wrap: 'chroot',
    setup: 'true',
    code: 'Operation not permitted',
    line: /^cfs: the kernel says EPERM to a user namespace, and no setting forbids them: in a chroot, or under a seccomp filter \(in a container, say\), no one may make one; run it outside$/,
  },
]

for (const c of cases) {
  t.test(`step 09 rootless, ${c.name}: one line, exit 125, nothing left`, rootOnly(), async (t) => {
    const before = snapshotLeftovers()
    const run = watchRun()
    const r = await refused(c.wrap, c.setup, c.name.includes('holds one'))
    run.stop()
    t.teardown(() => rmSync(r.home, { recursive: true, force: true }))
    t.match(r.kernel, new RegExp(`unshare failed: ${c.code}$`), `the kernel refuses the user there: \`unshare --user\` says ${c.code}`)
    if (c.wrap === 'chroot' || c.setup.includes('echo 0')) t.match(r.root, new RegExp(`unshare failed: ${c.code}$`), `…and root there too, as the line says (${r.root || 'it succeeded'})`)
    else t.equal(r.root, '', 'root there may still make one (the limit is per user): the line does not say otherwise')
    t.equal(r.exitCode, 125, `the step exits 125 (stderr: ${r.stderr.trim()})`)
    const lines = r.stderr.trim().split('\n')
    t.equal(lines.length, 1, `one line on stderr: ${r.stderr.trim()}`)
    t.match(lines[0], c.line, `it names the cause the kernel gave, and what to do (sysctl there: ${r.sysctl})`)
    t.same(readdirSync(r.home).filter((name) => name !== 'cache'), [], 'no image and no container directory in the user\'s state dir (CFS_HOME stays empty)')
    t.same(await leftoversSince(before, run), [], 'nothing left on the host: no cgroup, mount or container dir')
  })
}

/**
 * Run, as USER, `unshare --user` (what the kernel says), then the step, in
 * a place where the kernel refuses user namespaces: `userns`, a child user
 * namespace that maps ids 0-65535 to themselves, whose root runs `setup`
 * first (with `hold`, the user keeps one user namespace open meanwhile);
 * `chroot`, a bind of / in a private mount namespace.
 */
async function refused(wrap: 'userns' | 'chroot', setup: string, hold: boolean): Promise<Refused> {
  const home = mkdtempSync(join(tmpdir(), 'cfs-userns-forbidden-'))
  chownSync(home, USER, USER)
  const env = `HOME=${home} CFS_HOME=${home}/state XDG_CACHE_HOME=${home}/cache LC_ALL=C FORCE_COLOR=0`
  // As the user: what the kernel says, the sysctl there, then the step (stderr kept apart).
  const user = [
    hold ? 'unshare --user sleep 60 & held=$!; sleep 0.2;' : '',
    'echo "kernel: $(unshare --user --map-root-user true 2>&1)";',
    'echo "sysctl: $(cat /proc/sys/user/max_user_namespaces)";',
    `env -u NODE_OPTIONS ${env} ${tsx} steps/09-userns run true 2>"${home}/stderr"; echo "exit: $?";`,
    hold ? 'kill $held;' : '',
  ].join(' ')
  const asUser = `cd ${repoDir} && exec setpriv --reuid=${USER} --regid=${USER} --clear-groups sh -c '${user}'`
  const asRoot = `${setup}; echo "root: $(unshare --user --map-root-user true 2>&1)"; ${asUser}`
  let child
  let bind: string | undefined
  if (wrap === 'userns') {
    // --keep-caps: sh starts before its map is written, and an exec by an unmapped uid would drop them.
    child = spawn('unshare', ['--user', '--keep-caps', 'sh', '-c', `read go; ${asRoot}`], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } })
    await delay(200)
    writeFileSync(`/proc/${child.pid}/uid_map`, '0 0 65536\n')
    writeFileSync(`/proc/${child.pid}/gid_map`, '0 0 65536\n')
    child.stdin!.end('go\n')
  } else {
    bind = mkdtempSync(join(tmpdir(), 'cfs-chroot-'))
    const inside = `mount --rbind / ${bind} && exec chroot ${bind} sh -c '${asRoot.replaceAll("'", `'"'"'`)}'`
    child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', inside], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } })
  }
  let stdout = ''
  child.stdout!.on('data', (chunk) => (stdout += chunk))
  child.stderr!.on('data', (chunk) => (stdout += chunk))
  await new Promise((resolve) => child.on('close', resolve))
  if (bind) rmdirSync(bind) // its mount went with the mount namespace
  const field = (name: string) => new RegExp(`^${name}: (.*)$`, 'm').exec(stdout)?.[1]?.trim() ?? `no ${name} line in: ${stdout}`
  const stderrFile = join(home, 'stderr')
  const stderr = existsSync(stderrFile) ? readFileSync(stderrFile, 'utf8') : ''
  rmSync(stderrFile, { force: true })
  return { kernel: field('kernel'), root: field('root'), sysctl: field('sysctl'), exitCode: Number(field('exit')), stderr, home }
}
