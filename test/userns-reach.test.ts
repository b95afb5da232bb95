// spawnWithPathsReachable (shared/userns.ts): as root, a child with no
// privilege over the host's files (uid 100000, or host root after unshare
// --user) still reaches paths under a directory that others may not search,
// a home of mode 0700, and the host's mount table does not change. So do
// steps 09 and 10 as root, for a -v source in such a home.

import t from 'tap'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tsx } from '../scripts/lib/verify.ts'
import { MNT_DETACH, mount, readMountInfo, umount2 } from '../shared/mounts.ts'
import { CLONE_NEWUSER } from '../shared/namespaces.ts'
import { repoDir } from '../shared/settings.ts'
import { closedAncestors, launcher, spawnWithPathsReachable } from '../shared/userns.ts'
import { rootOnly, type Test } from './helpers.ts'

// A home of mode 0700 in /tmp: home/, home/dir/file, home/bin/cat, and
// home/other, which no path asks for. As root, the home is nobody's, as a
// learner's is someone else's to root: its owner's bits do not apply.
function makeHome(t: Test): { home: string; dir: string; file: string; bin: string } {
  const home = mkdtempSync('/tmp/cfs-reach-')
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  chmodSync(home, 0o700)
  if (process.getuid?.() === 0) chownSync(home, 65534, 65534)
  const dir = join(home, 'dir')
  const bin = join(home, 'bin')
  mkdirSync(dir, { mode: 0o755 })
  mkdirSync(bin, { mode: 0o755 })
  chmodSync(dir, 0o755)
  chmodSync(bin, 0o755)
  writeFileSync(join(dir, 'file'), 'hello\n', { mode: 0o644 })
  writeFileSync(join(home, 'other'), 'not asked for\n')
  copyFileSync('/bin/cat', join(bin, 'cat'))
  chmodSync(join(bin, 'cat'), 0o755)
  return { home, dir, file: join(dir, 'file'), bin }
}

// Run a spawned child to its end: its exit code and what it printed.
async function finish(child: ReturnType<typeof spawn>): Promise<{ code: number | null; out: string }> {
  let out = ''
  child.stdout!.on('data', (chunk) => (out += chunk))
  child.stderr!.on('data', (chunk) => (out += chunk))
  const [code] = await once(child, 'exit') as [number | null]
  return { code, out }
}

t.test('closedAncestors: for each path, the highest directory others may not search', async (t) => {
  const { home, dir, file } = makeHome(t)
  chmodSync(dir, 0o700)
  t.same([...closedAncestors([file])], [[home, [file]]], `${home} (0700) above ${dir} (0700): the highest, ${home}, is the one to cover`)
  t.same([...closedAncestors([dir, file])], [[home, [dir]]], `${file} inside ${dir}, both asked for: only ${dir} is listed, the file comes with it`)
  chmodSync(dir, 0o755)
  t.same([...closedAncestors([dir, home])], [[home, [dir]]], `${dir} inside ${home}, which is asked for but has nothing closed above it: ${dir} is still listed, under ${home}`)
  chmodSync(dir, 0o700)
  chmodSync(home, 0o711)
  t.same([...closedAncestors([file])], [[dir, [file]]], `${home} at 0711 (others may search it): ${dir} is the closed one`)
  chmodSync(dir, 0o755)
  t.same([...closedAncestors([file])], [], 'every directory above searchable by others: nothing to cover')
})

t.test('as root, a child of uid 100000 reads a file under a 0700 home; only the paths asked for show, and nothing on the host', rootOnly(), async (t) => {
  const { home, dir, file } = makeHome(t)
  const as100000 = ['--reuid=100000', '--regid=100000', '--clear-groups']
  const plain = spawnSync('setpriv', [...as100000, 'cat', file], { encoding: 'utf8' })
  t.match(plain.stderr, /Permission denied/, `without it, uid 100000 cannot read ${file} (stderr: ${plain.stderr.trim()})`)
  const script = `cat ${file}; ls -A ${home}`
  const child = spawnWithPathsReachable([dir], 'setpriv', [...as100000, 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  const mountsNow = readFileSync('/proc/self/mountinfo', 'utf8')
  const { code, out } = await finish(child)
  t.equal(code, 0, `setpriv ${as100000.join(' ')} sh -c '${script}' exits 0 (output: ${out.trim()})`)
  t.equal(out, 'hello\ndir\n', `it reads the file, and sees in ${home} only dir, not other`)
  t.notMatch(mountsNow, home, `the host's mount table has no mount under ${home}, while the child runs`)
})

t.test('as root, the launcher (unshare --user) executes a program under a 0700 home', rootOnly(), async (t) => {
  // After unshare(CLONE_NEWUSER) the launcher is host uid 0 with capabilities only in its new namespace: the host's files judge it as anyone.
  const { home, dir, file, bin } = makeHome(t)
  const [command, ...args] = launcher(CLONE_NEWUSER, [join(bin, 'cat'), file])
  const plain = await finish(spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  t.match(plain.out, /failed to execute .*: Permission denied/, `without it, unshare cannot execute ${bin}/cat (said: ${plain.out.trim()})`)
  const reached = await finish(spawnWithPathsReachable([bin, dir], command, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  t.equal(reached.code, 0, `with it, \`${[command, ...args].join(' ')}\` exits 0 (said: ${reached.out.trim()})`)
  t.equal(reached.out, 'hello\n', 'and cat, run from the 0700 home, read the file there')
  const withHome = await finish(spawnWithPathsReachable([bin, dir, home], command, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  t.equal(withHome.code, 0, `with the home itself asked for too (a -v of the whole home), it still exits 0 (said: ${withHome.out.trim()})`)
})

t.test('as root, a FIFO and a socket under a 0700 home are reachable too, and nothing waits for a writer', { ...rootOnly(), timeout: 30_000 }, async (t) => {
  // A -v source may be either (a socket of $XDG_RUNTIME_DIR, mode 0700): opening a FIFO to read waits for a writer, a socket cannot be opened at all (ENXIO).
  const { home } = makeHome(t)
  const fifo = join(home, 'fifo')
  const socket = join(home, 'socket')
  execFileSync('mkfifo', ['-m', '0666', fifo])
  const server = createServer().listen(socket)
  await once(server, 'listening')
  t.teardown(() => server.close())
  const script = `test -p ${fifo} && test -S ${socket} && echo both`
  const child = spawnWithPathsReachable([fifo, socket], 'setpriv', ['--reuid=100000', '--regid=100000', '--clear-groups', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  const { code, out } = await finish(child)
  t.equal(code, 0, `uid 100000 runs \`${script}\`: exit 0 (output: ${out.trim()})`)
  t.equal(out, 'both\n', 'it finds the FIFO and the socket at their own paths, as what they are')
})

t.test('as root, steps 09 and 10 bind a -v source under a 0700 home: the container writes through it, the host sees the file', rootOnly(), async (t) => {
  // The container's child binds the source after unshare --user, as host uid 100000: without the source among the paths made reachable, EACCES.
  const { home } = makeHome(t)
  const source = join(home, 'volume')
  mkdirSync(source)
  chmodSync(source, 0o777) // container root, host uid 100000, writes in it
  writeFileSync(join(source, 'from-host'), 'hello from the host\n')
  const hostMounts = () => readMountInfo().map((m) => `${m.mountPoint} <- ${m.source}:${m.root} (${m.fstype})`).sort()
  const before = hostMounts()
  // A submount under the source: the volume is recursive, so it shows in the container too.
  const sub = join(source, 'sub')
  mkdirSync(sub)
  mount('tmpfs', sub, 'tmpfs', 0, 'mode=0755,size=1m')
  t.teardown(() => {
    try {
      umount2(sub, MNT_DETACH)
    } catch {} // unmounted already, below
  })
  writeFileSync(join(sub, 'file'), 'in the submount\n')
  for (const step of ['09-userns', '10-security']) {
    const args = ['steps/' + step, 'run', '-v', `${source}:/data`, 'sh', '-c', `cat /data/from-host /data/sub/file; echo written at ${step} > /data/${step}`]
    const r = await finish(spawn('env', ['-u', 'NODE_OPTIONS', tsx, ...args], { cwd: repoDir, stdio: ['ignore', 'pipe', 'pipe'] }))
    t.equal(r.code, 0, `npx tsx ${args.join(' ')} exits 0 (said: ${r.out.trim()})`)
    t.equal(r.out, 'hello from the host\nin the submount\n', `${step}: the container reads the host's files through the volume, its submount's too, and says nothing else`)
    const written = join(source, step)
    t.equal(existsSync(written) && readFileSync(written, 'utf8'), `written at ${step}\n`, `${step}: the file it wrote through the volume is on the host, at ${written}`)
  }
  umount2(sub)
  t.same(hostMounts(), before, 'the host\'s mount table is as it was, once the test\'s own submount is gone')
})
