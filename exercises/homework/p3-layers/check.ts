// Check P3: build a Containerfile whose second layer adds an 8 MiB file and
// whose third deletes it, with the learner's builder, into the image store;
// check the layers (each named by the sha256 of its tar; the big file; its
// whiteout), that the image does not shrink, that a container of it does
// not see the file, that `npm run images -- diff` lists the container's
// changes and that `export` holds fewer files and bytes than the layers
// together. The image, its new layers and the container go at the end.
//
// Usage: npm run homework -- p3

import { execFileSync } from 'node:child_process'
import { existsSync, lstatSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { containerChanges, exportContainer } from '../../../scripts/lib/image-changes.ts'
import { Checks, runStep, shown } from '../../../scripts/lib/verify.ts'
import { listDir } from '../../../scripts/lib/files.ts'
import { layersDir } from '../../../shared/image-config.ts'
import { readMountInfo } from '../../../shared/mounts.ts'
import { removeContainerDir } from '../../../shared/overlay.ts'
import { ensureImage } from '../../../shared/rootfs.ts'
import { containersDir, imagesDir, PREFIX } from '../../../shared/settings.ts'
import { answerUnder, forAPerson, readTarget, runProgram, shownProgram, target, tempDir } from '../checks.ts'

const dir = target('p3-layers')
const c = new Checks('Homework P3: an image of layers: add a big file, delete it, and measure')
const BIG = 8 * 1024 * 1024
const name = `${PREFIX}-p3-${process.pid}`
await ensureImage('busybox')

// Whatever the build and the run make goes at the end: the image, the layers that were not there before, the kept container.
const layersBefore = new Set(listDir(layersDir))
let kept: string | undefined
process.once('exit', () => {
  rmSync(join(imagesDir, name), { recursive: true, force: true })
  for (const layer of listDir(layersDir)) if (!layersBefore.has(layer)) rmSync(join(layersDir, layer), { recursive: true, force: true })
  if (kept) removeContainerDir(join(containersDir, kept))
})

const context = tempDir('p3-context')
writeFileSync(join(context, 'Containerfile'), [
  'FROM busybox',
  `RUN yes 0123456789abcdef | head -c ${BIG} > /big`,
  'RUN rm /big',
  '',
].join('\n'))
const build = await runProgram(dir, [context, name], { timeoutMs: 120_000 })
const ran = shownProgram(dir, ['<context>', name])
c.equal('the build exits 0', build.exitCode, 0, `${ran}  # ${build.stderr.trim().split('\n').at(-1) ?? ''}`)

const json = readJson(join(imagesDir, name, 'image.json'))
const ids = Array.isArray(json?.layers) ? (json.layers as string[]) : []
c.ok('image.json lists three layers, sha256:<hex> each: FROM\'s, then one per RUN', ids.length === 3 && ids.every((id) => /^sha256:[0-9a-f]{64}$/.test(id)), {
  ran: `cat ${join(imagesDir, name, 'image.json')}`, expected: 'layers: [sha256:<busybox>, sha256:<RUN 1>, sha256:<RUN 2>]', got: JSON.stringify(json?.layers ?? 'no image.json'),
})
const layers = ids.map((id) => join(layersDir, id.slice('sha256:'.length)))
const digests = layers.map((layer) => (existsSync(layer) ? execFileSync('sh', ['-c', 'tar --create --sort=name --numeric-owner --directory "$1" . | sha256sum', 'sh', layer], { encoding: 'utf8' }).split(' ')[0] : 'missing'))
c.ok('each layer is in the store, named by the sha256 of its tar', layers.length === 3 && digests.every((digest, i) => ids[i] === `sha256:${digest}`), {
  ran: 'tar --create --sort=name --numeric-owner --directory <layer> . | sha256sum  # for each', expected: ids.join(' '), got: digests.map((d) => `sha256:${d}`).join(' '),
})
const [base, added, deleted] = layers.map((layer) => (existsSync(layer) ? layer : undefined))
c.ok('the first layer is the base image, busybox', base !== undefined && existsSync(join(base, 'bin/busybox')), { ran: `ls ${base}/bin/busybox`, expected: 'there', got: base ? 'missing' : 'no layer' })
const big = added ? lstatSync(join(added, 'big'), { throwIfNoEntry: false }) : undefined
c.ok('the second layer holds /big, 8 MiB, and nothing else', big?.isFile() === true && big.size === BIG && readdirSync(added!).join() === 'big', {
  ran: `ls -l ${added ?? '<layer 2>'}`, expected: `big, ${BIG} bytes, alone`, got: added ? `${readdirSync(added).join(' ')}; big: ${big?.size ?? 'missing'} bytes` : 'no layer',
})
const whiteout = deleted ? lstatSync(join(deleted, 'big'), { throwIfNoEntry: false }) : undefined
c.ok('the third layer holds only a whiteout for /big: a character device 0,0', whiteout?.isCharacterDevice() === true && whiteout.rdev === 0 && readdirSync(deleted!).join() === 'big', {
  ran: `ls -l ${deleted ?? '<layer 3>'}`, expected: 'c--------- … 0, 0 … big, alone', got: deleted ? `${readdirSync(deleted).join(' ')}; big: ${whiteout ? (whiteout.isCharacterDevice() ? `rdev ${whiteout.rdev}` : 'not a device') : 'missing'}` : 'no layer',
})

// The image's size is its layers': after the first RUN, layers 1-2; after the second, 1-3.
const sizes = layers.map((layer) => measure(layer))
const afterAdd = sizes.slice(0, 2).reduce((sum, s) => sum + s.bytes, 0)
const afterDelete = sizes.reduce((sum, s) => sum + s.bytes, 0)
c.ok('the image does not shrink: after RUN rm /big it is as big as after the RUN that made it', sizes.length === 3 && afterDelete >= afterAdd && afterAdd >= sizes[0].bytes + BIG, {
  ran: 'the bytes of the files in layers 1-2, and in 1-3', expected: `≥ ${afterAdd} after the delete, ≥ busybox + ${BIG} before`, got: `${afterAdd} after the first RUN, ${afterDelete} after the second`,
})

const seen = await runStep('07-overlay', ['--image', name, 'sh', '-c', 'test -e /big && echo big-here || echo big-gone'])
c.equal('a container of the image does not see /big', seen.stdout.trim(), 'big-gone', shown('07-overlay', ['--image', name, 'sh', '-c', 'test -e /big …']))

const script = 'echo hello > /hello; rm /etc/hosts'
const run = await runStep('07-overlay', ['--image', name, '--keep', 'sh', '-c', script])
kept = /containers\/([0-9a-f]{12})\/upper/.exec(run.stderr)?.[1]
c.ok('a container of it runs with --keep', run.exitCode === 0 && kept !== undefined, { ran: shown('07-overlay', ['--image', name, '--keep', 'sh', '-c', script]), expected: 'exit 0, kept', got: `exit ${run.exitCode}: ${run.stderr.trim()}` })
const diff = attempt(() => containerChanges(kept ?? 'none').map(({ kind, path }) => `${kind} ${path}`))
c.equal('npm run images -- diff lists its changes: /etc changed, /etc/hosts deleted, /hello added', diff, ['C /etc', 'D /etc/hosts', 'A /hello'], `npm run images -- diff ${kept ?? '<id>'}`)

const tar = join(tempDir('p3-export'), 'container.tar')
const exported = await exportContainer(kept ?? 'none', tar).catch((err: Error) => err.message)
const layerFiles = sizes.reduce((sum, s) => sum + s.entries, 0)
const names = existsSync(tar) ? execFileSync('tar', ['-tf', tar], { encoding: 'utf8', maxBuffer: 1 << 26 }).trim().split('\n') : []
c.ok('npm run images -- export: the tar has /hello, and no /big and no /etc/hosts', names.includes('./hello') && !names.includes('./big') && !names.includes('./etc/hosts'), {
  ran: `npm run images -- export ${kept ?? '<id>'} container.tar; tar -tf container.tar`, expected: './hello, no ./big, no ./etc/hosts', got: typeof exported === 'string' ? exported : `${names.length} names`,
})
// The tar's entries but its top, ./, against the entries of the layers, their tops left out too.
const files = typeof exported === 'string' ? Infinity : exported.files - 1
const bytes = typeof exported === 'string' ? Infinity : exported.bytes
c.ok('the export holds fewer files than the layers together', files < layerFiles, { ran: 'tar -tf container.tar | wc -l, against the entries of the three layers', expected: `< ${layerFiles}`, got: files })
c.ok('the export holds fewer bytes than the layers together (/big is in a layer, not in what the container sees)', bytes < afterDelete, { ran: 'ls -l container.tar, against the bytes of the files of the three layers', expected: `< ${afterDelete}`, got: bytes })
const mounted = readMountInfo().filter((m) => m.mountPoint.startsWith(`${layersDir}/`) || m.mountPoint.startsWith(`${containersDir}/${kept}`)).map((m) => m.mountPoint)
c.equal('nothing of the build or the export is mounted on the host', mounted, [], `grep ${layersDir} /proc/self/mountinfo`)

const answers = readTarget('p3-layers', 'answers.md')
const unanswered = ['(i)', '(ii)', '(iii)'].filter((q) => answerUnder(answers, q) === '')
c.ok('answers.md answers (i), (ii) and (iii)', unanswered.length === 0, { ran: `cat ${dir}/answers.md`, expected: 'text under each', got: `no answer under ${unanswered.join(' ')}` })
const measured = typeof exported === 'string' ? 'no export' : `the export ${files} entries in ${bytes} bytes`
forAPerson(`${dir}/answers.md: why the image does not shrink, what diff's letters mean, and the export against the layers; for reference, here the layers held ${layerFiles} entries and ${afterDelete} bytes, ${measured}`)

c.finish()

// A layer's entries (its top directory left out) and the bytes of its regular files, as `find | wc -l` and `du --apparent-size` count them.
function measure(dir: string): { entries: number; bytes: number } {
  if (!existsSync(dir)) return { entries: 0, bytes: 0 }
  let entries = 0
  let bytes = 0
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    entries++
    if (entry.isFile()) bytes += lstatSync(join(entry.parentPath, entry.name)).size
  }
  return { entries, bytes }
}

function attempt<T>(f: () => T): T | string {
  try {
    return f()
  } catch (err) {
    return (err as Error).message
  }
}

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return undefined
  }
}
