// Verify step 07: the container's root is an overlay of the image. Writes
// and deletions land in the container's own upper dir (a deletion as a
// whiteout), the image stays as it was, two containers at once do not see
// each other's changes, and a container costs kilobytes against the
// image's megabytes. The overlay is mounted only in the container's mount
// namespace. The directory goes when the container ends, unless --keep;
// a SIGKILLed step leaves it, and `npm run clean` removes it.
//
// Usage: npx tsx steps/07-overlay/verify.ts

import { createHash } from 'node:crypto'
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { $ } from 'zx'
import { readMountInfo } from '../../shared/mounts.ts'
import { ensureImage } from '../../shared/rootfs.ts'
import { containersDir, repoDir, stateDir } from '../../shared/settings.ts'
import { readText } from '../../scripts/lib/files.ts'
import { checkExitCodes, checkSignalEnds, Checks, killSleeper, runSleeper, runStep, shown, tsx, type Sleeper } from '../../scripts/lib/verify.ts'
import { waitFor } from '../../scripts/lib/wait.ts'
import { requireRoot } from '../../shared/cli.ts'

const step = '07-overlay'
requireRoot() // namespaces, mounts and cgroups: re-runs this under sudo if need be
const c = new Checks(`Step ${step}: overlayfs`)

// The image the step picks, and a file of it to delete inside.
const image = realpathSync(await ensureImage())
const victim = ['/etc/hosts', '/etc/passwd', '/etc/group'].find((f) => lstatSync(join(image, f), { throwIfNoEntry: false })?.isFile())!
const victimContent = readFileSync(join(image, victim))
const before = fingerprint(image)
// Names no one else uses, so nothing of ours can be mistaken for the image's.
const probe = `/cfs-probe-${process.pid}`
const kept: string[] = []
// At the end, however it ends: remove the directories kept with --keep, and
// undo what the runs wrote to the image (without the overlay, they write to the image itself).
process.once('exit', () => {
  for (const path of kept) rmSync(path, { recursive: true, force: true })
  repairImage()
})

// One run with --keep: write a file, delete one of the image's.
const write = ['--keep', 'sh', '-c', `hostname; echo written inside > ${probe}; rm ${victim}; ls ${victim} 2>&1`]
const written = await runStep(step, write)
const id = written.stdout.split('\n')[0]
const dir = join(containersDir, id)
const upper = join(dir, 'upper')
// Where the step says it kept the directory: found even if the command never ran.
const keptDir = /kept the container's changes in (\S+)\/upper/.exec(written.stderr)?.[1]
for (const path of [id && dir, keptDir]) if (path && path.startsWith(`${containersDir}/`)) kept.push(path)
c.ok('with --keep, the container\'s directory stays after it ends, and stderr says where', existsSync(upper) && written.stderr.includes(upper), {
  ran: `${shown(step, write)}; ls ${upper}`,
  expected: `exit 0, ${upper} there, its path on stderr`,
  got: `exit ${written.exitCode}, ${existsSync(upper) ? 'there' : 'no such directory'}, stderr: ${written.stderr.trim()}`,
})
c.equal('a file written inside lands in the container\'s upper dir', readBytes(join(upper, probe))?.toString() ?? 'no such file', 'written inside\n', `cat ${upper}${probe}`)
c.equal('…and not in the image', existsSync(join(image, probe)), false, `ls ${image}${probe}`)
c.ok(`${victim}, deleted inside, is gone for the container`, /no such file/i.test(written.stdout), {
  ran: shown(step, write),
  expected: `ls: ${victim}: No such file or directory`,
  got: written.stdout.split('\n').slice(1).join(' ').trim(),
})
const whiteout = lstatSync(join(upper, victim), { throwIfNoEntry: false })
c.ok('…and leaves a whiteout in the upper dir: a character device 0,0', whiteout?.isCharacterDevice() === true && whiteout.rdev === 0, {
  ran: `ls -l ${upper}${victim}`,
  expected: `c--------- … 0, 0 … ${victim.slice(1)}`,
  got: whiteout ? `${whiteout.isCharacterDevice() ? 'character device' : 'not a character device'}, rdev ${whiteout.rdev}` : 'no such file',
})
c.ok(`…while the image's ${victim} is intact`, readBytes(join(image, victim))?.equals(victimContent) === true, {
  ran: `cat ${image}${victim}`,
  expected: JSON.stringify(victimContent.toString()),
  got: readBytes(join(image, victim))?.toString() ?? 'no such file',
})

// As in the talk: a container is kilobytes, the image megabytes.
const [containerKiB, imageKiB] = [await du(dir), await du(image)]
c.ok(`a container's directory is a few KiB while the image is megabytes: container ${containerKiB.shown}, image ${imageKiB.shown}`,
  containerKiB.kib > 0 && imageKiB.kib >= 1024 && containerKiB.kib * 10 < imageKiB.kib, {
    ran: `du -shx ${dir} ${image}`,
    expected: 'container under a tenth of the image, image at least 1M',
    got: `container ${containerKiB.shown}, image ${imageKiB.shown}`,
  })

// Without --keep: the root is an overlay of the image and the directory goes at the end.
const mountinfo = ['sh', '-c', 'hostname; cat /proc/self/mountinfo']
const inside = await runStep(step, mountinfo)
const otherId = inside.stdout.split('\n')[0]
const root = inside.stdout.split('\n').slice(1).map((line) => line.split(' ')).find((f) => f[4] === '/')
const rootFs = root ? root.slice(root.indexOf('-') + 1).join(' ') : ''
const otherUpper = join(containersDir, otherId, 'upper')
c.ok('inside, / is an overlay: the image as lowerdir, the container\'s upper dir as upperdir',
  rootFs.startsWith('overlay ') && rootFs.includes(`lowerdir=${image}`) && rootFs.includes(`upperdir=${otherUpper}`), {
    ran: `${shown(step, mountinfo)}  # the line for /, after " - "`,
    expected: `overlay overlay rw,…,lowerdir=${image},upperdir=${otherUpper},workdir=…`,
    got: rootFs || inside.stderr.trim() || 'no line for /',
  })
c.ok('without --keep, the container\'s directory is gone after it ends', otherId !== '' && !existsSync(join(containersDir, otherId)), {
  ran: `ls ${join(containersDir, otherId || '<id>')}`,
  expected: 'No such file or directory',
  got: otherId ? 'still there' : `no hostname came back: ${inside.stderr.trim()}`,
})

// Two containers at once. A writes its file and waits on stdin; meanwhile B
// writes its own and looks for A's; then A looks for B's.
const a = runStep(step, ['sh', '-c', `echo A > ${probe}-a; echo ready; read go; cat ${probe}-b 2>&1; cat ${probe}-a`])
const aReady = await outputOf(a, (out) => out.includes('ready\n'))
const hostOverlays = readMountInfo().filter((m) => m.fstype === 'overlay' && m.mountPoint.startsWith(`${stateDir}/`)).map((m) => m.mountPoint)
const bArgs = ['sh', '-c', `echo B > ${probe}-b; cat ${probe}-a 2>&1; cat ${probe}-b`]
const b = await runStep(step, bArgs)
a.stdin.end('go\n')
const aOut = (await a).stdout
c.ok('two containers at once: B does not see the file A wrote, only its own', aReady && /no such file/i.test(b.stdout) && b.stdout.endsWith('B\n'), {
  ran: `${shown(step, bArgs)}  # while A runs`,
  expected: `cat: can't open '${probe}-a': No such file or directory, then B`,
  got: aReady ? b.stdout.trim() : 'A never said ready',
})
c.ok('…and A, after B wrote its file, does not see it, only its own', /no such file/i.test(aOut) && aOut.endsWith('A\n'), {
  ran: `npx tsx steps/${step} run sh -c 'echo A > ${probe}-a; …; cat ${probe}-b; cat ${probe}-a'`,
  expected: `cat: can't open '${probe}-b': No such file or directory, then A`,
  got: aOut.trim(),
})
c.equal('while a container runs, nothing is mounted on the host: the overlay is in the container\'s mount namespace',
  aReady ? hostOverlays : 'A never started', [], `grep 'overlay.*${stateDir}' /proc/self/mountinfo`)
c.equal('…nor after', readMountInfo().filter((m) => m.mountPoint.startsWith(`${stateDir}/containers`)).map((m) => m.mountPoint), [],
  `grep ${containersDir} /proc/self/mountinfo`)

const after = fingerprint(image)
// A path that was a mount point in either listing is left out, with all under it.
const mountPoints = [...before.keys(), ...after.keys()].filter((path) => before.get(path) === 'mount point' || after.get(path) === 'mount point')
const changed = [...new Set([...before.keys(), ...after.keys()])]
  .filter((path) => before.get(path) !== after.get(path) && !mountPoints.some((m) => path === m || path.startsWith(`${m}/`)))
c.equal('the image is unchanged: the same files, modes and contents as before these runs', changed, [],
  `find ${image} -exec sha256sum …  # before and after, ignoring mount points`)

await checkExitCodes(c, step)

// Ctrl-C or kill: the step passes the signal on, SIGKILLs after 2 s, and removes the directory.
const s = await runSleeper(step)
const sleeperDir = s.step ? containerDirOf(s.step) : undefined
await checkSignalEnds(c, step, s, 'SIGTERM')
c.ok('…and removes the container\'s directory', sleeperDir !== undefined && !existsSync(sleeperDir), {
  ran: `ls ${sleeperDir ?? `${containersDir}/<id>`}`,
  expected: 'there while it ran, gone after',
  got: sleeperDir ? 'still there' : 'no directory of this run found while it ran',
})
await killSleeper(s)

// A SIGKILLed step cannot clean up: the directory stays until `npm run clean`.
const orphan = await runSleeper(step)
const orphanDir = orphan.step ? containerDirOf(orphan.step) : undefined
if (orphan.step) process.kill(orphan.step, 'SIGKILL')
await stepGone(orphan)
c.ok('SIGKILL to the step leaves the container\'s directory behind', orphanDir !== undefined && existsSync(orphanDir), {
  ran: `kill -KILL <step>  # during ${shown(step, ['sleep', orphan.marker])}; ls ${orphanDir ?? `${containersDir}/<id>`}`,
  expected: 'the directory still there',
  got: orphanDir ? 'gone' : 'no directory of this run found while it ran',
})
const clean = await $({ cwd: repoDir, nothrow: true, quiet: true })`${tsx} scripts/clean.ts`
c.ok('…and `npm run clean` removes it', orphanDir !== undefined && !existsSync(orphanDir), {
  ran: `npm run clean; ls ${orphanDir ?? `${containersDir}/<id>`}`,
  expected: 'No such file or directory',
  got: `exit ${clean.exitCode}: ${clean.stdout.trim()} ${clean.stderr.trim()}`.trim(),
})

c.finish()

// The directory of the container whose parent (the step) is `stepPid`, from its parent.pid.
function containerDirOf(stepPid: number): string | undefined {
  const id = readdirSync(containersDir).find((name) => readText(join(containersDir, name, 'parent.pid')) === String(stepPid))
  return id && join(containersDir, id)
}

// After a SIGKILL to the step: wait (5 s at most) for the run to end by
// itself, so tsx reaps the step. Until then it is a zombie, which
// `npm run clean` counts as a live parent (kill -0 succeeds).
async function stepGone(s: Sleeper): Promise<void> {
  await Promise.race([s.run, delay(5000, undefined, { ref: false })])
  await killSleeper(s)
  await waitFor(() => (s.step && existsSync(`/proc/${s.step}`) ? undefined : true), 5000)
}

// Each path in the image with its type, mode, owner and content (symlink
// target, SHA-256 of a file). Mount points are only marked as such (a step
// 04 run mounts its /proc in the image).
function fingerprint(root: string): Map<string, string> {
  const found = new Map<string, string>()
  const dev = lstatSync(root).dev
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const path = `${rel}/${name}`
      const st = lstatSync(join(root, path), { throwIfNoEntry: false })
      if (!st) continue
      if (st.dev !== dev) {
        found.set(path, 'mount point')
        continue
      }
      const what = st.isFile() ? createHash('sha256').update(readFileSync(join(root, path))).digest('hex')
        : st.isSymbolicLink() ? `-> ${readlinkSync(join(root, path))}` : st.isDirectory() ? 'dir' : `rdev ${st.rdev}`
      found.set(path, `${st.mode.toString(8)} ${st.uid}:${st.gid} ${what}`)
      if (st.isDirectory()) walk(path)
    }
  }
  walk('')
  return found
}

// `du -sx`: KiB for the comparison, and -h's way of showing it for the report.
async function du(path: string): Promise<{ kib: number; shown: string }> {
  const kib = Number((await $({ nothrow: true, quiet: true })`du -skx ${path}`).stdout.split('\t')[0]) || 0
  const shown = (await $({ nothrow: true, quiet: true })`du -shx ${path}`).stdout.split('\t')[0]
  return { kib, shown }
}

// Wait (up to 10 s) until the run's output so far passes `test`.
async function outputOf(run: ReturnType<typeof runStep>, test: (out: string) => boolean): Promise<boolean> {
  let out = ''
  run.stdout.on('data', (chunk: Buffer) => (out += chunk))
  return (await waitFor(() => (test(out) ? true : undefined))) === true
}

// What a failed run changed in the image: our probe files, the deleted file.
function repairImage(): void {
  for (const name of readdirSync(image).filter((n) => n.startsWith(probe.slice(1)))) rmSync(join(image, name), { force: true })
  if (!readBytes(join(image, victim))?.equals(victimContent)) writeFileSync(join(image, victim), victimContent)
}

function readBytes(path: string): Buffer | undefined {
  try {
    return readFileSync(path)
  } catch {
    return undefined
  }
}
