// Verify step 05: the container has its own mount table. What it mounts
// stays inside, the host's table does not change, the image is its `/`
// through pivot_root with the old root gone, /sys is read-only and /dev
// holds only the devices a container needs, none of the host's disks.
// Stopping the step stops the container, and so does killing it outright.
//
// Usage: npx tsx steps/05-mount-ns/verify.ts

import { readFileSync, realpathSync } from 'node:fs'
import { $ } from 'zx'
import { DEV_ENTRIES } from '../../shared/devices.ts'
import { readMountInfo } from '../../shared/mounts.ts'
import { namespaceOf } from '../../shared/namespaces.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { repoDir } from '../../shared/settings.ts'
import { findProcesses } from '../../scripts/lib/procfs.ts'
import {
  checkDeathSignal, checkExitCodes, checkSignalEnds, Checks, findStepProcess, killSleeper, runSleeper, runStep, shown, stepPath, tsx, type Sleeper,
} from '../../scripts/lib/verify.ts'
import { waitFor } from '../../scripts/lib/wait.ts'
import { requireRoot } from '../../shared/cli.ts'

const step = '05-mount-ns'
requireRoot() // namespaces, mounts and cgroups: re-runs this under sudo if need be
const c = new Checks(`Step ${step}: mount namespace, pivot_root and a minimal /dev`)

// The image the step picks, as the host sees it, and what is mounted in it.
const rootfs = realpathSync(await ensureImage())
const inImage = (pid: number | 'self' = 'self') =>
  readMountInfo(pid).filter((m) => m.mountPoint === rootfs || m.mountPoint.startsWith(`${rootfs}/`)).map((m) => `${m.fstype} on ${m.mountPoint}`)
const hostTable = () => readFileSync('/proc/self/mountinfo', 'utf8')
// What the step mounts inside, and nothing else of the host's: not even host
// mounts already in the image (a step 04 run has its /proc there while it
// runs), which the bind of the image onto itself, not recursive, leaves out.
const containerMounts = (...extra: string[]) => {
  const hosts = inImage().map((m) => m.slice(m.indexOf(' on ') + 4 + rootfs.length)).filter(Boolean)
  if (hosts.length) console.log(`  note: the host has mounts in the image, which must stay out of the container: ${hosts.join(' ')}`)
  return ['/', '/dev', '/dev/mqueue', '/dev/pts', '/dev/shm', '/proc', '/sys', ...extra].sort()
}

const hostRoot = readMountInfo().find((m) => m.mountPoint === '/')
console.log(`  note: on this host / is ${propagationOf(hostRoot?.propagation ?? '')} (findmnt -o TARGET,PROPAGATION /)${
  hostRoot?.propagation.includes('shared:') ? '' : ': nothing would reach it even without MS_PRIVATE, so one check below simulates a shared /'}`)

const readlink = ['readlink', '/proc/self/ns/mnt']
const inside = (await runStep(step, readlink)).stdout.trim()
c.ok('the mount namespace inside is a new one', inside.startsWith('mnt:[') && inside !== namespaceOf('self', 'mnt'), {
  ran: `${shown(step, readlink)}  # vs readlink /proc/self/ns/mnt on the host`,
  expected: `mnt:[…] other than the host's ${namespaceOf('self', 'mnt')}`,
  got: inside,
})

// The IPC namespace comes with the mount namespace: System V IPC objects and
// POSIX message queues of its own, the queues in an mqueue mount.
const readIpc = ['readlink', '/proc/self/ns/ipc']
const ipc = (await runStep(step, readIpc)).stdout.trim()
c.ok('the IPC namespace inside is a new one', ipc.startsWith('ipc:[') && ipc !== namespaceOf('self', 'ipc'), {
  ran: `${shown(step, readIpc)}  # vs readlink /proc/self/ns/ipc on the host`,
  expected: `ipc:[…] other than the host's ${namespaceOf('self', 'ipc')}`,
  got: ipc,
})

const catMounts = ['cat', '/proc/self/mountinfo']
const table = parseMountInfo((await runStep(step, catMounts)).stdout)
c.equal('the container\'s mount table holds only its own mounts: /, /proc, /sys, /dev, /dev/pts, /dev/shm, /dev/mqueue',
  table.map((m) => m.mountPoint).sort(), containerMounts(), shown(step, catMounts))
const shared = table.filter((m) => m.propagation.includes('shared:'))
c.ok('…and none is shared with the host: / inside is private', table.length > 0 && shared.length === 0, {
  ran: `${shown(step, catMounts)}  # optional fields before " - "`,
  expected: 'no shared:N field',
  got: shared.map((m) => `${m.mountPoint} ${m.propagation}`).join(', ') || 'no mount table',
})
const mqueue = table.find((m) => m.mountPoint === '/dev/mqueue')
c.equal('/dev/mqueue is an mqueue filesystem: the message queues of the container\'s IPC namespace', mqueue?.fstype, 'mqueue', shown(step, catMounts))
const sys = table.find((m) => m.mountPoint === '/sys')
const touch = await runStep(step, ['touch', '/sys/cfs-probe'])
c.ok('/sys is read-only inside', sys?.options.split(',')[0] === 'ro' && /read-only/i.test(touch.stderr), {
  ran: `${shown(step, ['touch', '/sys/cfs-probe'])}  # and the /sys line of mountinfo`,
  expected: 'mount options ro…, touch fails: Read-only file system',
  got: `options ${sys?.options ?? '(no /sys mount)'}, touch: ${touch.stderr.trim() || `exit ${touch.exitCode}`}`,
})

const lsDev = ['ls', '-a', '/dev']
const dev = (await runStep(step, lsDev)).stdout.trim().split('\n').sort()
c.equal('`ls -a /dev` lists exactly the minimal set, and mqueue', dev, ['.', '..', ...DEV_ENTRIES, 'mqueue'].sort(), shown(step, lsDev))
const disks = dev.filter((name) => /^(sd|vd|hd|xvd|nvme|mmcblk|loop|dm-|mapper|disk|mem$|kmsg$)/.test(name))
c.ok('…with none of the host\'s disks (as devtmpfs would have)', dev.length > 2 && disks.length === 0, {
  ran: shown(step, lsDev),
  expected: 'no sda, vda, nvme0n1, loop0, mem, …',
  got: disks.join(' ') || `${dev.length} entries`,
})
const devIo = ['sh', '-c', 'echo x > /dev/null && head -c 8 /dev/zero | od -An -tx1']
const io = await runStep(step, devIo)
c.equal('/dev/null swallows a write and /dev/zero reads zeros', io.stdout.trim().split(/\s+/), Array(8).fill('00'), shown(step, devIo))

const lsRoot = ['ls', '-a', '/']
const root = (await runStep(step, lsRoot)).stdout.trim().split('\n')
c.ok('pivot_root leaves no old root behind in /', root.includes('bin') && !root.some((name) => name.startsWith('.old-root')), {
  ran: shown(step, lsRoot),
  expected: 'the image\'s entries, no .old-root-*',
  got: root.join(' '),
})

// One run that mounts a tmpfs, then sleeps, so the host can look while it runs.
const before = hostTable()
const imageBefore = inImage()
const mnt = await runMounter(step)
const during = hostTable()
const added = inImage().filter((m) => !imageBefore.includes(m))
const insideMounts = mnt.sleep ? readMountInfo(mnt.sleep) : []
c.ok('a tmpfs mounted inside on /mnt is there inside', insideMounts.some((m) => m.mountPoint === '/mnt' && m.fstype === 'tmpfs'), {
  ran: `${mnt.shown}  # then, on the host: grep /mnt /proc/<pid of sleep>/mountinfo`,
  expected: 'tmpfs on /mnt',
  got: mnt.sleep ? insideMounts.map((m) => m.mountPoint).join(' ') : 'no sleep process found',
})
c.equal('…and not on the host, which sees no new mount in the image, not even /proc (step 04\'s leak)',
  mnt.sleep ? added : 'no sleep process found', [], `grep ${rootfs} /proc/self/mountinfo  # on the host, before and during the run`)
c.ok('the host\'s mount table is the same before and during the run', mnt.sleep !== undefined && during === before, {
  ran: 'cat /proc/self/mountinfo  # on the host, before and during the run',
  expected: 'no change',
  got: mnt.sleep ? difference(before, during) : 'no sleep process found',
})
// nsenter starts at the root of the namespace, not at the container's root:
// after chroot it would land in the host's tree, still mounted in there.
const nsenter = mnt.sleep
  ? await $({ nothrow: true, quiet: true })`nsenter --target ${mnt.sleep} --mount --pid cat /proc/self/mountinfo`
  : undefined
const whole = parseMountInfo(nsenter?.stdout ?? '').map((m) => m.mountPoint).sort()
c.equal('the old root is gone: the whole namespace, entered from the host, holds only the container\'s mounts',
  whole, containerMounts('/mnt'), `nsenter --target <pid of sleep> --mount --pid cat /proc/self/mountinfo`)
await checkStop(mnt, 'SIGTERM', mnt.shown)
c.ok('…and the host\'s mount table is the same after the run', hostTable() === before, {
  ran: 'cat /proc/self/mountinfo  # on the host, before and after the run',
  expected: 'no change',
  got: difference(before, hostTable()),
})

// A host whose / is shared, as systemd makes it: unshare gives the step a copy of
// this host's mount table with every mount shared, and leaves this host's alone.
const sharedHost = await runMounter(step, true)
const simulatedRoot = sharedHost.sleep ? readMountInfo(sharedHost.launcher!).find((m) => m.mountPoint === '/') : undefined
const reached = sharedHost.sleep ? inImage(sharedHost.launcher!).filter((m) => !imageBefore.includes(m)) : []
const sharedRun = (await killSleeper(sharedHost), await sharedHost.run)
c.ok('on a host whose / is shared, the container still starts and its mounts do not reach the host',
  sharedHost.sleep !== undefined && simulatedRoot?.propagation.includes('shared:') === true && reached.length === 0, {
    ran: `${sharedHost.shown}  # then grep ${rootfs} /proc/<pid of tsx>/mountinfo`,
    expected: `/ shared on that host, the container running, nothing mounted under ${rootfs}`,
    got: sharedHost.sleep
      ? `/ ${propagationOf(simulatedRoot?.propagation ?? '')} on that host; mounted in the image: ${reached.join(', ') || 'nothing'}`
      : `the container did not start: ${sharedRun.stderr.trim() || `exit ${sharedRun.exitCode}`}`,
  })

await checkExitCodes(c, step)

await checkStop(await runSleeper(step), 'SIGINT')

// PR_SET_PDEATHSIG: when the step dies, even by SIGKILL, the kernel kills the container.
await checkDeathSignal(c, step)
c.equal('after all these runs, no new mount is left in the image on the host',
  inImage().filter((m) => !imageBefore.includes(m)), [], `grep ${rootfs} /proc/self/mountinfo`)

c.finish()

/** A run that mounts a tmpfs on /mnt and then sleeps; `shared` runs it under `unshare --propagation shared`. */
async function runMounter(step: string, shared = false): Promise<Sleeper & { shown: string; launcher?: number }> {
  const marker = `200.${process.pid}${shared ? 2 : 1}`
  const args = ['sh', '-c', 'mount -t tmpfs t /mnt && exec sleep "$0"', marker]
  const run = shared
    ? $({ cwd: repoDir, nothrow: true, quiet: true })`unshare --mount --propagation shared ${tsx} ${stepPath(step)} run ${args}`
    : runStep(step, args)
  const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === marker)[0])
  const prefix = shared ? 'sudo unshare --mount --propagation shared ' : ''
  return { run, marker, sleep, step: findStepProcess(step, marker), launcher: run.pid, shown: prefix + shown(step, args) }
}

// Signal the step: it must end within 6 s, with the container.
async function checkStop(s: Sleeper, signal: NodeJS.Signals, run = shown(step, ['sleep', s.marker])): Promise<void> {
  await checkSignalEnds(c, step, s, signal, run)
  await killSleeper(s)
}

// Mount points, options and propagation fields of mountinfo text (proc(5)):
// `id parent major:minor root mount-point options [optional fields…] - type source super-options`.
function parseMountInfo(text: string): { mountPoint: string; options: string; propagation: string; fstype: string }[] {
  return text.split('\n').filter((line) => line.includes(' - ')).map((line) => {
    const fields = line.split(' - ')[0].split(' ')
    return { mountPoint: fields[4], options: fields[5], propagation: fields.slice(6).join(' '), fstype: line.split(' - ')[1].split(' ')[0] }
  })
}

function propagationOf(optional: string): string {
  return optional.includes('shared:') ? 'shared' : optional.includes('master:') ? 'a slave' : 'private'
}

// Lines added to and removed from a mount table.
function difference(before: string, after: string): string {
  const [a, b] = [before.split('\n'), after.split('\n')]
  const changes = [...b.filter((l) => !a.includes(l)).map((l) => `+ ${l}`), ...a.filter((l) => !b.includes(l)).map((l) => `- ${l}`)]
  return changes.join('\n') || 'no change'
}
