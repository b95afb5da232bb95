// cgroups on this host for real (v1 or v2, whichever holds each controller),
// and the option parsing that turns Docker's flags into limits.

import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  cgroupProcs, createCgroup, findControllers, joinCgroup, limitFiles, limitsFromOptions, parseSize, removeCgroup,
} from '../shared/cgroups.ts'
import { UsageError } from '../shared/errors.ts'
import { rootOnly } from './helpers.ts'

t.test('Docker size syntax', async (t) => {
  t.equal(parseSize('100M'), 100 * 1024 ** 2, '100M is 100 MiB')
  t.equal(parseSize('1g'), 1024 ** 3, '1g is 1 GiB')
  t.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3, '1.5GiB')
  t.equal(parseSize('7340032'), 7340032, 'plain bytes')
  for (const bad of ['abc', '0', '100X', '-5M', '1M']) {
    t.throws(() => parseSize(bad), UsageError, `--memory ${bad} is refused with a UsageError`)
  }
})

t.test('limits from options: pids limit on by default, bad values refused', async (t) => {
  t.equal(limitsFromOptions({}).pids, 512, 'a fork bomb stops at 512 processes unless told otherwise')
  t.equal(limitsFromOptions({ 'pids-limit': 'max' }).pids, undefined, '`max` turns the pids limit off')
  t.equal(limitsFromOptions({ 'pids-limit': '-1' }).pids, undefined, '-1, Docker\'s "unlimited", turns it off too')
  t.same(limitsFromOptions({ memory: '100M', cpus: '0.5', 'cpu-shares': '512' }), { pids: 512, memory: 104857600, cpus: 0.5, cpuShares: 512, asked: true }, 'all four')
  t.equal(limitsFromOptions({}).asked, false, 'no limit on the command line: not asked (the default pids.max alone)')
  t.equal(limitsFromOptions({ 'pids-limit': '20' }).asked, true, '--pids-limit 20: asked')
  for (const [option, value] of [['pids-limit', '-2'], ['pids-limit', '0'], ['pids-limit', 'abc'], ['cpus', '0'], ['cpus', '999'], ['cpu-shares', '1'], ['cpu-shares', '300000']]) {
    t.throws(() => limitsFromOptions({ [option]: value }), UsageError, `--${option} ${value} is refused`)
  }
})

t.test('limit files: the same limits in v1 and v2 words', async (t) => {
  const limits = { pids: 20, memory: 104857600, cpus: 0.5, cpuShares: 512 }
  t.same(limitFiles(1, 'pids', limits), [['pids.max', '20']], 'v1 pids')
  t.same(limitFiles(2, 'pids', limits), [['pids.max', '20']], 'v2 pids: same file name')
  t.same(limitFiles(1, 'memory', limits), [['memory.limit_in_bytes', '104857600']], 'v1 memory')
  t.same(limitFiles(2, 'memory', limits), [['memory.max', '104857600'], ['memory.swap.max', '0']], 'v2 memory, no swap')
  t.same(limitFiles(1, 'cpu', limits), [['cpu.cfs_period_us', '100000'], ['cpu.cfs_quota_us', '50000'], ['cpu.shares', '512']], 'v1 cpu')
  t.same(limitFiles(2, 'cpu', limits), [['cpu.max', '50000 100000'], ['cpu.weight', '20']], 'v2 cpu: shares 512 is weight 20')
  t.same(limitFiles(2, 'cpu', { cpuShares: 1024 }), [['cpu.weight', '39']], 'default shares map to weight 39, as runc does')
})

t.test('a real cgroup on this host: limits written, a process joins, removal kills it', rootOnly(), async (t) => {
  const where = findControllers()
  const id = `test${process.pid}`
  const cgroup = createCgroup(id, { pids: 20, memory: 64 * 1024 ** 2, cpuShares: 512 })
  t.teardown(() => removeCgroup(cgroup))
  for (const { dir, controllers, version } of cgroup.dirs) {
    t.ok(existsSync(dir), `${dir} exists (v${version}: ${controllers.join(', ')})`)
    t.equal(dir, join(where.get(controllers[0])!.mountPoint, `cfs-${id}`), 'named cfs-<id> at the root of the hierarchy that holds the controller')
  }
  const pids = cgroup.dirs.find((d) => d.controllers.includes('pids'))!
  t.equal(readFileSync(join(pids.dir, 'pids.max'), 'utf8').trim(), '20', 'pids.max holds the limit')
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' })
  joinCgroup(cgroup, sleeper.pid!)
  t.match(readFileSync(`/proc/${sleeper.pid}/cgroup`, 'utf8'), new RegExp(`pids:/cfs-${id}$|^0::/cfs-${id}$`, 'm'), '/proc/PID/cgroup names the new cgroup')
  t.same(cgroupProcs(pids.dir), [sleeper.pid], 'cgroup.procs lists the process')
  const exited = new Promise((resolve) => sleeper.on('exit', (_code, signal) => resolve(signal)))
  await removeCgroup(cgroup)
  t.equal(await exited, 'SIGKILL', 'removing the cgroup killed what was left in it')
  for (const { dir } of cgroup.dirs) t.notOk(existsSync(dir), `${dir} is gone`)
})
