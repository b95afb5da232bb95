// Verify step 03: after chroot the image is the container's `/`. `ls /`
// lists the image, host files are out of reach even by `..`, the kernel
// records the image as the process's root, and commands are looked up in
// the image. Stopping the step stops the container, and so does killing
// the step outright.
//
// Usage: npx tsx steps/03-chroot/verify.ts

import { readdirSync, readlinkSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { ensureImage } from '../../shared/rootfs.ts'
import { repoDir } from '../../shared/settings.ts'
import { checkDeathSignal, checkExitCodes, checkSignalEnds, Checks, killSleeper, runSleeper, runStep, shown } from '../../scripts/lib/verify.ts'
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

await checkExitCodes(c, step)
// Ctrl-C or kill: the step passes the signal on to the container, and sends
// SIGKILL if it is still there after 2 s.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  const s = await runSleeper(step)
  await checkSignalEnds(c, step, s, signal)
  await killSleeper(s)
}
// PR_SET_PDEATHSIG: when the step dies, even by SIGKILL, the kernel kills the container.
await checkDeathSignal(c, step)

c.finish()
