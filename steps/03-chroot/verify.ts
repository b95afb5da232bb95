// Verify step 03: after chroot the image is the container's `/`. `ls /`
// lists the image, host files are out of reach even by `..`, the kernel
// records the image as the process's root, and commands are looked up in
// the image. Stopping the step stops the container, and so does killing
// the step outright.
//
// Usage: npx tsx steps/03-chroot/verify.ts

import { readdirSync, readlinkSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { Checks, killSleeper, runSleeper, runStep, shown, signalStep } from '../../scripts/lib/verify.ts'
import { isRunning } from '../../shared/procfs.ts'
import { waitFor } from '../../scripts/lib/wait.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { repoDir } from '../../shared/settings.ts'
import { requireRoot } from '../../shared/cli.ts'

const step = '03-chroot'
requireRoot() // namespaces, mounts and cgroups: re-runs this under sudo if need be
const c = new Checks(`Step ${step}: chroot`)

// The image the step picks when no --image is given.
const rootfs = await ensureImage()
const image = readdirSync(rootfs).filter((name) => !name.startsWith('.')).sort()

const ls = await runStep(step, ['ls', '/'])
const listed = ls.stdout.trim().split('\n').sort()
c.equal('`ls /` lists the image\'s top level', listed, image, `${shown(step, ['ls', '/'])}  # vs ls ${rootfs}`)
const hostOnly = readdirSync('/').filter((name) => !name.startsWith('.') && !image.includes(name))
const leaked = hostOnly.filter((name) => listed.includes(name))
c.ok('…and none of the host\'s entries that the image lacks', hostOnly.length > 0 && leaked.length === 0, {
  ran: shown(step, ['ls', '/']),
  expected: `none of ${hostOnly.join(' ')}`,
  got: leaked.join(' '),
})

// Many `..` from the container's cwd: at the root `..` is the root itself.
const hostFile = join(repoDir, 'package.json')
const relative = ['cat', '../'.repeat(8) + hostFile.slice(1)]
const cat = await runStep(step, relative)
c.ok('a host file is out of reach, even by a relative path', cat.exitCode !== 0 && cat.stdout === '', {
  ran: shown(step, relative),
  expected: 'cat fails: No such file or directory',
  got: cat.exitCode === 0 ? `exit 0: it printed the host's ${hostFile}` : cat.stderr,
})

const s = await runSleeper(step)
const root = s.sleep ? readlinkSync(`/proc/${s.sleep}/root`) : 'no sleep process found'
c.equal('on the host, /proc/<pid>/root of the container is the image', root, realpathSync(rootfs), `readlink /proc/<pid of sleep ${s.marker}>/root`)
await killSleeper(s)

const which = await runStep(step, ['which', 'ls'])
c.equal('`which ls` finds the image\'s ls: commands are looked up in the new root', which.stdout.trim(), '/bin/ls', shown(step, ['which', 'ls']))

const exit7 = ['sh', '-c', 'exit 7']
c.equal('exit code 7 comes back', (await runStep(step, exit7)).exitCode, 7, shown(step, exit7))
c.equal('a missing command exits 127', (await runStep(step, ['no-such-command'])).exitCode, 127, shown(step, ['no-such-command']))

// Ctrl-C or kill: the step passes the signal on to the container, and sends
// SIGKILL if it is still there after 2 s.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  const s = await runSleeper(step)
  const stopped = await signalStep(s, signal)
  c.ok(`${signal} to the step ends it within 6 s`, s.sleep !== undefined && stopped.ms < 6000 && !isRunning(s.sleep), {
    ran: `kill -${signal.slice(3)} <step>  # during ${shown(step, ['sleep', s.marker])}`,
    expected: 'the step and its sleep gone in < 6000 ms',
    got: s.sleep && s.step ? `${stopped.ms < Infinity ? `ended in ${stopped.ms} ms, exit ${stopped.exitCode}` : 'still running after 10 s'}, sleep ${isRunning(s.sleep) ? 'running' : 'gone'}` : 'no sleep or no step process found',
  })
  await killSleeper(s)
}

// PR_SET_PDEATHSIG: when the step dies, even by SIGKILL, the kernel kills the container.
const orphan = await runSleeper(step)
if (orphan.step) process.kill(orphan.step, 'SIGKILL')
const gone = orphan.sleep && (await waitFor(() => (isRunning(orphan.sleep!) ? undefined : true), 5000))
c.ok('SIGKILL to the step kills the container too', orphan.step !== undefined && gone === true, {
  ran: `kill -KILL <step>  # during ${shown(step, ['sleep', orphan.marker])}`,
  expected: 'the sleep gone within 5 s',
  got: orphan.sleep && orphan.step ? `sleep ${orphan.sleep} still running` : 'no sleep or no step process found',
})
await killSleeper(orphan)

c.finish()
