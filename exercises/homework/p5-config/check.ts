// Check P5: the Config's limits are in the container's cgroup files, the
// extra mount shows the host directory inside and only inside, bad values
// are refused before anything is made, and nothing is left afterwards.
//
// Usage: npm run homework -- p5

import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { findControllers, findHierarchies, type Controller } from '../../../shared/cgroups.ts'
import { readMountInfo } from '../../../shared/mounts.ts'
import { findProcesses } from '../../../scripts/lib/procfs.ts'
import { isRunning } from '../../../shared/procfs.ts'
import { waitFor } from '../../../scripts/lib/wait.ts'
import { ensureImage } from '../../../shared/rootfs.ts'
import { containersDir } from '../../../shared/settings.ts'
import { Checks } from '../../../scripts/lib/verify.ts'
import { runProgram, shownProgram, target, tempDir } from '../checks.ts'

const dir = target('p5-config')
const c = new Checks('Homework P5: memory, CPU percent and an extra mount point, in one typed config')
const where = findControllers()
const v2 = (controller: Controller) => where.get(controller)?.version === 2

// A host directory with a file to read inside, and a run that stays up until we have looked.
const data = tempDir('p5')
const token = `p5-${process.pid}`
writeFileSync(join(data, 'hello'), `${token}\n`)
const image = await ensureImage()
const marker = `100.${process.pid}5`
const options = ['--memory', '48M', '--cpu-percent', '30', '--mount', `${data}:/mypoint`]
const args = ['run', ...options, 'sh', '-c', 'hostname; cat /mypoint/hello; echo written > /mypoint/from-inside; grep -c " /mypoint " /proc/self/mountinfo; exec sleep "$0"', marker]
const cgroupsBefore = cgroupDirs()
const run = runProgram(dir, args)
const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker).find(isRunning), 15_000)
const dirs = sleep ? cgroupsOf(sleep) : {}
const read = (controller: Controller, file: string) => (dirs[controller] ? readOr(join(dirs[controller]!, file), 'missing') : 'no cgroup')
const memoryFile = v2('memory') ? 'memory.max' : 'memory.limit_in_bytes'
const memory = read('memory', memoryFile)
const cpu = v2('cpu') ? read('cpu', 'cpu.max') : `${read('cpu', 'cpu.cfs_quota_us')} ${read('cpu', 'cpu.cfs_period_us')}`
const hostMounts = readMountInfo().filter((m) => m.mountPoint === '/mypoint' || m.mountPoint.endsWith('/mypoint') || m.root === data).map((m) => m.mountPoint)
if (sleep) process.kill(sleep, 'SIGKILL') // PID 1 of the container: it ends, the program cleans up
const result = await run
const [id, hello, count] = result.stdout.split('\n')

c.equal(`--memory 48M: ${memoryFile} is ${48 * 1024 ** 2}`, memory, String(48 * 1024 ** 2), `cat <memory>/cfs-<id>/${memoryFile}  # during ${shownProgram(dir, args)}`)
c.equal(`--cpu-percent 30: ${v2('cpu') ? 'cpu.max' : 'cpu.cfs_quota_us and cpu.cfs_period_us'} give 30 ms per 100 ms`, cpu, '30000 100000',
  `cat <cpu>/cfs-<id>/${v2('cpu') ? 'cpu.max' : 'cpu.cfs_quota_us cpu.cfs_period_us'}`)
c.equal('--mount: /mypoint inside shows the host directory\'s file', hello, token, `${shownProgram(dir, args)}  # cat /mypoint/hello`)
c.equal('…takes writes, which the host sees', readOr(join(data, 'from-inside'), 'no such file'), 'written', `cat ${data}/from-inside  # on the host`)
c.equal('…is a mount point in the container\'s mount table', count, '1', 'grep -c " /mypoint " /proc/self/mountinfo  # inside')
c.ok('…and not in the host\'s, during the run', sleep !== undefined && hostMounts.length === 0, {
  ran: `grep mypoint /proc/self/mountinfo  # on the host`, expected: 'nothing', got: sleep ? hostMounts.join(' ') : `the container did not start: ${result.stderr.trim()}`,
})
c.equal('the image gets no /mypoint: the directory was made in the container\'s upper dir', existsSync(join(image, 'mypoint')), false, `ls -d ${image}/mypoint`)
await delay(300)
c.ok('afterwards, the container\'s cgroup and directory are gone', /^[0-9a-f]{12}$/.test(id) && !cgroupDirs().some((d) => d.endsWith(`/cfs-${id}`)) && !existsSync(join(containersDir, id)), {
  ran: `ls -d /sys/fs/cgroup/*/cfs-${id || '<id>'} ${containersDir}/${id || '<id>'}`, expected: 'neither', got: /^[0-9a-f]{12}$/.test(id) ? 'still there' : `no container id came back: ${result.stderr.trim()}`,
})

// Bad values: one line, exit 125, and no cgroup made.
const most = 100 * availableParallelism()
const bad = [['--cpu-percent', '0'], ['--cpu-percent', 'abc'], ['--cpu-percent', String(most + 1)], ['--mount', 'nocolon'],
  ['--mount', 'relative:/x'], ['--mount', `${data}:relative`], ['--mount', `${data}-missing:/x`], ['--memory', 'lots']]
const refused = await Promise.all(bad.map((option) => runProgram(dir, ['run', ...option, 'true'])))
for (const [i, option] of bad.entries()) {
  const { exitCode, stderr } = refused[i]
  c.ok(`\`${option.join(' ')}\` is refused: one line, exit 125`, exitCode === 125 && stderr.trim().split('\n').length === 1, {
    ran: shownProgram(dir, ['run', ...option, 'true']), expected: 'exit 125 and one line on stderr', got: `exit ${exitCode}: ${stderr.trim() || '(nothing on stderr)'}`,
  })
}
const made = cgroupDirs().filter((d) => !cgroupsBefore.includes(d) && readOr(join(d, 'cgroup.procs'), '') === '')
c.equal('…and none of them made a cgroup', made, [], 'ls -d /sys/fs/cgroup/*/cfs-*  # before and after')

c.finish()

/** The cgroup directory of `pid` for each controller, from /proc/PID/cgroup. */
function cgroupsOf(pid: number): Partial<Record<Controller, string>> {
  const lines = readOr(`/proc/${pid}/cgroup`, '').split('\n').map((line) => /^\d+:([^:]*):(.*)$/.exec(line)).filter((m) => m !== null)
  const found: Partial<Record<Controller, string>> = {}
  for (const [name, h] of where) {
    const line = lines.find((m) => (h.version === 2 ? m[1] === '' : m[1].split(',').includes(name)))
    if (line) found[name] = join(h.mountPoint, line[2])
  }
  return found
}

function cgroupDirs(): string[] {
  return findHierarchies().flatMap((h) => readdirSync(h.mountPoint).filter((name) => name.startsWith('cfs-')).map((name) => join(h.mountPoint, name)))
}

function readOr(file: string, fallback: string): string {
  try {
    return readFileSync(file, 'utf8').trim()
  } catch {
    return fallback
  }
}
