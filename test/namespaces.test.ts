// spawnInNamespaces: the child is in new namespaces, PID 1 in its PID
// namespace, and the parent (this test) is where it was before.

import t from 'tap'
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readlinkSync, rmdirSync } from 'node:fs'
import {
  CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS, spawnInNamespaces,
} from '../shared/namespaces.ts'
import { repoDir } from '../shared/settings.ts'
import { rootOnly } from './helpers.ts'

const types = ['uts', 'pid', 'mnt', 'net', 'ipc'] as const
const inodes = (pid: number | string) => Object.fromEntries(types.map((ns) => [ns, readlinkSync(`/proc/${pid}/ns/${ns}`)]))

t.test('a child spawned in new namespaces is in them; the parent is not moved', rootOnly(), async (t) => {
  const before = { process: inodes('self'), thread: inodes('thread-self'), pidForChildren: readlinkSync('/proc/thread-self/ns/pid_for_children'), cwd: process.cwd() }
  // The child reports its PID as it sees it, then its own namespaces.
  const child = spawnInNamespaces(
    CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC,
    '/bin/sh',
    ['-c', `echo $$; for ns in ${types.join(' ')}; do readlink /proc/self/ns/$ns; done; read line`],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  let out = ''
  child.stdout!.on('data', (chunk) => (out += chunk))
  while (out.split('\n').length < types.length + 2) await once(child.stdout!, 'data')
  const [pidInside, ...inside] = out.trim().split('\n')
  t.equal(pidInside, '1', 'the child is PID 1 in its new PID namespace')
  for (const [i, ns] of types.entries()) {
    t.not(inside[i], before.process[ns], `the child's ${ns} namespace differs from the parent's (${inside[i]} vs ${before.process[ns]})`)
    t.equal(readlinkSync(`/proc/${child.pid}/ns/${ns}`), inside[i], `the host sees the child in that ${ns} namespace too`)
  }
  t.same(inodes('self'), before.process, 'the parent process is still in its namespaces')
  t.same(inodes('thread-self'), before.thread, 'the main thread is back in its namespaces')
  t.equal(readlinkSync('/proc/thread-self/ns/pid_for_children'), before.pidForChildren, 'new children of the parent go to its PID namespace again')
  t.equal(process.cwd(), before.cwd, 'the parent\'s working directory is unchanged')
  const sibling = execFileSync('/bin/sh', ['-c', 'readlink /proc/self/ns/uts /proc/self/ns/pid'], { encoding: 'utf8' }).trim().split('\n')
  t.same(sibling, [before.process.uts, before.process.pid], 'a process spawned afterwards is on the host again')
  child.stdin!.end('\n')
  const [code] = await once(child, 'exit')
  t.equal(code, 0, 'the child exits cleanly')
})

t.test('flags 0 is a plain spawn', async (t) => {
  const child = spawnInNamespaces(0, '/bin/sh', ['-c', 'readlink /proc/self/ns/uts'], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout!.on('data', (chunk) => (out += chunk))
  await once(child, 'exit')
  t.equal(out.trim(), readlinkSync('/proc/self/ns/uts'), 'same UTS namespace as the parent')
})

t.test('a parent that runs chrooted is still in its chroot after spawning into a new mount namespace', rootOnly(), async (t) => {
  // A bind mount of / in a throwaway mount namespace (unshare), so nothing reaches the host's mount table.
  const dir = mkdtempSync('/tmp/cfs-chroot-test-')
  t.teardown(() => rmdirSync(dir))
  const script = `mount --rbind / "$0" && exec chroot "$0" sh -c 'cd "$1" && exec "$2" --import tsx test/fixtures/chroot-spawn.ts "$0"' "$0" "$1" "$2"`
  const out = execFileSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, dir, repoDir, process.execPath], {
    encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' },
  })
  const seen = JSON.parse(out.trim().split('\n').at(-1)!) as { before: boolean; after: boolean }
  t.equal(seen.before, false, `chrooted, the parent sees ${dir} as the empty directory it is inside the chroot`)
  t.equal(seen.after, false, 'after spawnInNamespaces(CLONE_NEWNS) it still does: setns(2) reset its root, and it went back to the chroot')
})
