// The small pieces of shared/: the CLI, errors from real system calls,
// mountinfo, subnets, and the project's lock.

import t from 'tap'
import { parseRunArgs } from '../shared/cli.ts'
import { SyscallError, UsageError } from '../shared/errors.ts'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, rmSync, utimesSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isStaleLock, STALE_LOCK_MS, withLockSync } from '../shared/lock.ts'
import { fileURLToPath } from 'node:url'
import { mount, readMountInfo, umount2 } from '../shared/mounts.ts'
import { CLONE_NEWNS, spawnInNamespaces } from '../shared/namespaces.ts'
import { parseSubnet, vethName } from '../shared/net.ts'
import { rootOnly } from './helpers.ts'

const spec = { image: { type: 'string' }, keep: { type: 'boolean' }, memory: { type: 'string', short: 'm' } } as const

t.test('run [options] <command> [args...]', async (t) => {
  t.same(parseRunArgs(['run', 'ls', '-la'], spec, ''), { options: {}, command: ['ls', '-la'], env: [], volumes: [] }, 'options after the command belong to the command')
  t.same(parseRunArgs(['run', '--image', 'alpine', '-m', '100M', '--keep', 'sh'], spec, '').options, { image: 'alpine', memory: '100M', keep: true }, 'options before the command are ours')
  t.same(parseRunArgs(['run', '--memory=1G', '--', '-weird'], spec, '').command, ['-weird'], '`--` ends the options')
  t.throws(() => parseRunArgs(['run'], spec, ''), UsageError, 'a missing command is a usage error')
  t.throws(() => parseRunArgs(['start', 'ls'], spec, ''), UsageError, 'an unknown verb is a usage error')
  t.throws(() => parseRunArgs(['run', '--nope', 'ls'], spec, ''), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' }, 'an unknown option is refused')
})

t.test('a failing system call throws SyscallError with code, errno, path and hint', rootOnly(), async (t) => {
  const err = t.throws(() => umount2('/nonexistent-cfs-test'))
  t.type(err, SyscallError, 'SyscallError')
  t.match(err, { syscall: 'umount2', code: 'ENOENT', errno: 2, path: '/nonexistent-cfs-test' }, 'names the call, the errno and the path')
  t.equal((err as Error).message, 'umount2 `/nonexistent-cfs-test`: ENOENT (No such file or directory)', 'reads like crun\'s errors')
  t.match(t.throws(() => mount('none', '/nonexistent-cfs-test', 'tmpfs', 0)), { code: 'ENOENT', hint: /does not exist/ }, 'mount on a missing directory says so')
})

t.test('pivot_root into a plain directory fails, and the hint says why', rootOnly(), async (t) => {
  // Never in the test's own mount namespace: a throwaway one, in a child.
  const child = spawnInNamespaces(CLONE_NEWNS, process.execPath, ['--import=tsx', fileURLToPath(new URL('fixtures/pivot.ts', import.meta.url))], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout!.on('data', (chunk) => (out += chunk))
  await once(child, 'exit')
  // Linux answers EBUSY when the new root is on the current root mount, EINVAL when it is elsewhere.
  t.match(JSON.parse(out), { syscall: 'pivot_root', code: /^(EBUSY|EINVAL)$/, hint: /must be a mount point/ }, 'the hint says the new root must be a mount point')
})

t.test('mountinfo parsing', async (t) => {
  const mounts = readMountInfo()
  const root = mounts.find((m) => m.mountPoint === '/')
  t.ok(root, 'the root mount is listed')
  t.ok(mounts.some((m) => m.fstype === 'proc' && m.mountPoint === '/proc'), '/proc is a proc mount')
  t.ok(mounts.every((m) => Number.isInteger(m.id) && Number.isInteger(m.parent)), 'ids are numbers')
})

t.test('subnets and interface names', async (t) => {
  const net = parseSubnet('10.77.0.0/24')
  t.equal(net.gateway, '10.77.0.1', 'the bridge takes .1')
  t.equal(net.hosts.length, 253, 'containers take .2 to .254')
  t.equal(net.hosts.at(-1), '10.77.0.254', 'the last one is .254')
  t.ok(net.contains('10.77.0.9') && !net.contains('10.77.1.9'), 'membership')
  t.same(parseSubnet('10.9.9.8/30').hosts, ['10.9.9.10'], 'a /30 has room for one container')
  t.throws(() => parseSubnet('10.77.0.0'), UsageError, 'a range needs its prefix')
  t.equal(vethName('0123456789ab').length, 15, 'cfs<id> fits in 15 characters (IFNAMSIZ)')
})

t.test('a lock directory: left over from a crash once it is older than STALE_LOCK_MS; gone is not stale, and no error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cfs-test-lock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const lock = join(dir, 'lock')
  t.equal(isStaleLock(lock), false, 'no lock: not stale (npm run clean may look while its holder lets go)')
  mkdirSync(lock)
  t.equal(isStaleLock(lock), false, 'a fresh lock: held, not stale')
  const old = (Date.now() - STALE_LOCK_MS - 5000) / 1000
  utimesSync(lock, old, old)
  t.equal(isStaleLock(lock), true, 'older than STALE_LOCK_MS: stale')
  t.equal(withLockSync(lock, () => existsSync(lock)), true, 'withLockSync takes a stale lock over, and holds it while fn runs')
  t.equal(existsSync(lock), false, '…and lets it go after')
})
