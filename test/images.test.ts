// Images as layers (shared/layers.ts, shared/oci.ts, npm run images). A
// two-layer OCI image made by umoci (layer 1: the busybox image's files;
// layer 2: adds a file, deletes one, makes a directory opaque), as an OCI
// layout, a tar of it, and a docker-archive (skopeo), is imported into a
// scratch store (CFS_HOME): what lands in layers/, whiteouts as overlayfs
// reads them (mounted here by root, and with userxattr in a user namespace),
// layers shared between images and unpacked once. Then what an import
// refuses: tars crafted to write outside the layer, corrupt, truncated and
// mislabelled blobs; each with one line, exit 125, and nothing left in the
// store. And Debian (mmdebstrap) as a one-layer --from-tar image.
//
// The images are built once per machine, outside the repository, in CACHE,
// keyed by FIXTURES and the host's busybox: a rerun takes seconds.

import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync, zstdCompressSync } from 'node:zlib'
import { listDir, onPath } from '../scripts/lib/files.ts'
import { readMountInfo } from '../shared/mounts.ts'
import { hostArchitecture } from '../shared/oci.ts'
import { repoDir } from '../shared/settings.ts'
import { lgetxattr } from '../shared/xattr.ts'
import { needsRoot, runTool, type Test, type ToolResult } from './helpers.ts'

/** Where the built images are kept between runs, outside the repository. */
const CACHE = process.env.CFS_TEST_CACHE || '/var/cache/containers-from-scratch-test'
/** Bump when the way the images below are made changes: the cache is rebuilt. */
const FIXTURES = 'images-2'
const DEBIAN = 'debian-bookworm-minbase-procps-iproute2-python3-1.tar'
const TOOLS = ['umoci', 'skopeo', 'mmdebstrap']

const skip = needsRoot() || missingTools()

function missingTools(): string | false {
  const missing = TOOLS.filter((tool) => !onPath(tool))
  if (!missing.length) return false
  if (process.env.CI === 'true') throw new Error(`CI=true but ${missing.join(', ')} missing: .ci/run installs them`)
  return `needs ${missing.join(', ')}: apt-get install ${TOOLS.join(' ')}`
}

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

// A scratch store: CFS_HOME for the tools, removed at the end.
function scratchStore(t: Test): string {
  const home = mkdtempSync(join(tmpdir(), 'cfs-images-test-'))
  t.teardown(() => rmSync(home, { recursive: true, force: true }))
  return home
}

const rootfs = (home: string, ...args: string[]) => runTool('rootfs/prepare.ts', args, { CFS_HOME: home })
const images = (home: string, ...args: string[]) => runTool('scripts/images.ts', args, { CFS_HOME: home })
const step = (home: string, name: string, ...args: string[]) => runTool(`steps/${name}`, ['run', ...args], { CFS_HOME: home })
const said = (r: ToolResult) => ({ exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr })

// What the store holds: names in layers/ and images/.
function storeContents(home: string): { layers: string[]; images: string[] } {
  return { layers: listDir(join(home, 'layers')).sort(), images: listDir(join(home, 'images')).sort() }
}

function imageJson(home: string, name: string): { layers: string[]; config: Record<string, unknown>; history?: { createdBy?: string }[]; [key: string]: unknown } {
  return JSON.parse(readFileSync(join(home, 'images', name, 'image.json'), 'utf8'))
}

const layerPath = (home: string, diffId: string) => join(home, 'layers', diffId.slice('sha256:'.length))
const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex')

// ---- The images, built once per machine ----

interface Fixtures {
  layout: string // OCI image layout directory, image `two`
  ociTar: string // a tar of it, as Docker 25's docker save writes
  dockerArchive: string // skopeo's docker-archive of it
  busyboxTar: string // the busybox image's files, as a plain tar
}

// Layer 1 from the busybox image's files (umoci repack), layer 2 a tar of
// our own (umoci raw add-layer): umoci makes per-file whiteouts, never an
// opaque directory.
function buildFixtures(busyboxLayer: string): Fixtures {
  const busybox = sha256(readFileSync(realBusybox())).slice(0, 12)
  const dir = join(CACHE, `${FIXTURES}-busybox-${busybox}`)
  const fixtures = {
    layout: join(dir, 'layout'), ociTar: join(dir, 'two.oci.tar'), dockerArchive: join(dir, 'two.docker.tar'), busyboxTar: join(dir, 'busybox.tar'),
  }
  if (existsSync(dir)) return fixtures
  const work = `${dir}.tmp-${process.pid}`
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  try {
    const layout = join(work, 'layout')
    const bundle = join(work, 'bundle')
    run('umoci', ['init', '--layout', layout])
    run('umoci', ['new', '--image', `${layout}:two`])
    run('umoci', ['unpack', '--image', `${layout}:two`, bundle])
    run('cp', ['-a', `${busyboxLayer}/.`, join(bundle, 'rootfs')])
    run('umoci', ['repack', '--image', `${layout}:two`, '--history.created_by', 'COPY busybox /', bundle])
    const second = join(work, 'layer2')
    mkdirSync(join(second, 'etc'), { recursive: true })
    mkdirSync(join(second, 'var'))
    writeFileSync(join(second, 'etc/added'), 'from layer 2\n')
    writeFileSync(join(second, 'etc/.wh.os-release'), '') // rm /etc/os-release
    writeFileSync(join(second, 'var/.wh..wh..opq'), '') // /var: nothing of the layers below
    writeFileSync(join(second, 'var/new'), 'only this in /var\n')
    run('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', second, '-cf', join(work, 'layer2.tar'), 'etc', 'var'])
    run('umoci', ['raw', 'add-layer', '--image', `${layout}:two`, '--history.created_by', 'RUN echo > /etc/added; rm /etc/os-release; rm -rf /var/*; echo > /var/new', join(work, 'layer2.tar')])
    run('umoci', ['config', '--image', `${layout}:two`, '--config.cmd', '/bin/sh', '--config.env', 'PATH=/bin:/usr/bin', '--config.workingdir', '/root'])
    run('umoci', ['gc', '--layout', layout])
    run('tar', ['-C', layout, '-cf', join(work, 'two.oci.tar'), 'oci-layout', 'index.json', 'blobs'])
    run('skopeo', ['copy', '-q', `oci:${layout}:two`, `docker-archive:${join(work, 'two.docker.tar')}:two:latest`])
    run('tar', ['--numeric-owner', '-C', busyboxLayer, '-cf', join(work, 'busybox.tar'), '.'])
    for (const scratch of [bundle, second, join(work, 'layer2.tar')]) rmSync(scratch, { recursive: true, force: true })
    renameSync(work, dir)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return fixtures
}

function realBusybox(): string {
  return ['/bin/busybox', '/usr/bin/busybox'].find((path) => existsSync(path))!
}

// Debian minbase with python3, as a tar; undefined (and why) if mmdebstrap cannot reach a mirror.
function buildDebian(): { tar?: string; why?: string; seconds?: number } {
  const tar = join(CACHE, DEBIAN)
  if (existsSync(tar)) return { tar }
  mkdirSync(CACHE, { recursive: true })
  const started = Date.now()
  const partial = `${tar}.tmp-${process.pid}.tar`
  const made = spawnSync('mmdebstrap', ['--quiet', '--variant=minbase', '--include=procps,iproute2,python3-minimal', 'bookworm', partial], { encoding: 'utf8' })
  if (made.status !== 0) {
    rmSync(partial, { force: true })
    return { why: `mmdebstrap failed (offline?): ${made.stderr.trim().split('\n').pop()}` }
  }
  renameSync(partial, tar)
  return { tar, seconds: (Date.now() - started) / 1000 }
}

// ---- OCI layouts, taken apart and put back with new digests ----

interface Descriptor { mediaType: string; digest: string; size: number; platform?: object; annotations?: Record<string, string> }
interface Layout {
  dir: string
  index: { manifests: Descriptor[] }
  manifest: { config: Descriptor; layers: Descriptor[] }
  config: { rootfs: { diff_ids: string[] } }
}

const blobFile = (dir: string, digest: string) => join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length))

function putBlob(dir: string, data: Buffer | string): { digest: string; size: number } {
  const bytes = Buffer.from(data)
  const digest = `sha256:${sha256(bytes)}`
  writeFileSync(blobFile(dir, digest), bytes)
  return { digest, size: bytes.length }
}

// A copy of the image's layout, to change.
function copyLayout(t: Test, source: string): Layout {
  const dir = mkdtempSync(join(tmpdir(), 'cfs-images-layout-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  cpSync(source, dir, { recursive: true })
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8'))
  const manifest = JSON.parse(readFileSync(blobFile(dir, index.manifests[0].digest), 'utf8'))
  const config = JSON.parse(readFileSync(blobFile(dir, manifest.config.digest), 'utf8'))
  return { dir, index, manifest, config }
}

// The config and manifest as they are now, each under its new digest, and index.json naming it.
function saveLayout(layout: Layout): string {
  layout.manifest.config = { ...layout.manifest.config, ...putBlob(layout.dir, JSON.stringify(layout.config)) }
  layout.index.manifests[0] = { ...layout.index.manifests[0], ...putBlob(layout.dir, JSON.stringify(layout.manifest)) }
  writeFileSync(join(layout.dir, 'index.json'), JSON.stringify(layout.index))
  return layout.dir
}

// ---- Tars, crafted: each header as tar(5) lays it out ----

interface Member { name: string; type?: '0' | '1' | '2' | '5'; data?: string; link?: string; size?: number }

function tarHeader({ name, type = '0', data = '', link = '', size }: Member): Buffer {
  const header = Buffer.alloc(512)
  header.write(name, 0, 100)
  header.write('0000644\0', 100)
  header.write('0000000\0', 108)
  header.write('0000000\0', 116)
  header.write(`${(size ?? Buffer.byteLength(data)).toString(8).padStart(11, '0')}\0`, 124)
  header.write('00000000000\0', 136)
  header.write(type, 156)
  header.write(link, 157, 100)
  header.write('ustar\u000000', 257)
  header.fill(32, 148, 156)
  const sum = header.reduce((total, byte) => total + byte, 0)
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148)
  return header
}

function tarOf(members: Member[], { end = true } = {}): Buffer {
  const blocks = members.flatMap((member) => {
    const data = Buffer.from(member.data ?? '')
    return [tarHeader(member), Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)])]
  })
  return Buffer.concat([...blocks, Buffer.alloc(end ? 1024 : 0)])
}

// ---- The tests ----

// One store for the images that import: busybox, then two three ways.
t.test('images as layers: busybox, an OCI image three ways, shared layers, whiteouts', { skip }, async (t) => {
  const home = scratchStore(t)
  const busybox = await rootfs(home, '--source', 'busybox')
  t.equal(busybox.exitCode, 0, 'npm run rootfs -- --source busybox: exit 0', said(busybox))
  const bb = imageJson(home, 'busybox')
  t.equal(bb.layers.length, 1, 'busybox is a one-layer image', { layers: bb.layers })
  t.equal(readlinkSync(join(home, 'images/busybox/rootfs')), `../../layers/${bb.layers[0].slice(7)}`, 'its rootfs links to its layer, relatively')
  const record = JSON.parse(readFileSync(`${layerPath(home, bb.layers[0])}.json`, 'utf8'))
  t.equal(record.diffId, bb.layers[0], 'the layer\'s .json names its diff_id')
  t.ok(record.size > 1_000_000 && record.files > 100, 'the layer\'s .json has its size on disk and its file count', record)
  t.match(busybox.stdout.trim(), layerPath(home, bb.layers[0]), 'npm run rootfs prints the layer\'s directory')

  const again = await rootfs(home, '--source', 'busybox')
  t.equal(again.exitCode, 0, 'again: exit 0', said(again))
  t.same(storeContents(home).layers, [bb.layers[0].slice(7), `${bb.layers[0].slice(7)}.json`], 'again: the same one layer, no other')

  const started = Date.now()
  const fixtures = buildFixtures(layerPath(home, bb.layers[0]))
  t.comment(`fixtures in ${join(CACHE, FIXTURES)}-*: ${((Date.now() - started) / 1000).toFixed(1)} s`)

  const a = await rootfs(home, '--from-oci', fixtures.layout, '--name', 'two')
  t.equal(a.exitCode, 0, 'import of the OCI layout directory: exit 0', said(a))
  const two = imageJson(home, 'two')
  t.equal(two.layers.length, 2, 'two layers', { layers: two.layers })
  t.match(two, { source: 'oci', format: 'oci-layout', platform: `linux/${hostArchitecture()}` }, 'image.json says where it came from')
  t.same(two.config, { Cmd: ['/bin/sh'], Env: ['PATH=/bin:/usr/bin'], WorkingDir: '/root' }, 'image.json has the config, with OCI names')
  t.same(two.history?.map((h) => h.createdBy), ['COPY busybox /', 'RUN echo > /etc/added; rm /etc/os-release; rm -rf /var/*; echo > /var/new', 'umoci config'], 'and the history, oldest first')
  t.notOk(existsSync(join(home, 'images/two/rootfs')), 'a two-layer image has no rootfs link')
  // PATH:TAG, as umoci and skopeo name an image in a layout.
  const byTag = await rootfs(home, '--from-oci', `${fixtures.layout}:two`, '--name', 'two-by-tag')
  t.equal(byTag.exitCode, 0, 'import of LAYOUT:two, by its tag: exit 0', said(byTag))
  t.same(imageJson(home, 'two-by-tag').layers, two.layers, '…the same image, the same layers')
  t.equal((await images(home, 'rm', 'two-by-tag')).exitCode, 0, '…removed again (it shares both layers with two)')
  const noTag = await rootfs(home, '--from-oci', `${fixtures.layout}:nope`, '--name', 'nope')
  t.equal(noTag.exitCode, 125, 'LAYOUT:nope, a tag it does not have: exit 125', said(noTag))
  t.match(noTag.stderr, /^cfs: [^\n]*: no image tagged `nope` in it; its tags: two\n$/, '…in one line that lists the tags it has')
  t.notOk(existsSync(join(home, 'images/nope')), '…and no image `nope`')
  const [first, second] = two.layers.map((diffId) => layerPath(home, diffId))
  t.ok(lstatSync(join(first, 'bin/busybox')).isFile() && lstatSync(join(first, 'etc/os-release')).isFile(), 'layer 1 has the busybox image\'s files')
  const hosts = lstatSync(join(second, 'etc/os-release'))
  t.ok(hosts.isCharacterDevice() && hosts.rdev === 0, 'layer 2: .wh.os-release became etc/os-release, a character device 0:0 (overlayfs\'s whiteout)', { mode: hosts.mode.toString(8), rdev: hosts.rdev })
  t.equal(readFileSync(join(second, 'etc/added'), 'utf8'), 'from layer 2\n', 'layer 2: its new file')
  t.same(readdirSync(join(second, 'var')), ['new'], 'layer 2: var/.wh..wh..opq is gone, var/new stays')
  t.equal(lgetxattr(join(second, 'var'), 'trusted.overlay.opaque'), 'y', 'layer 2: var is opaque for root\'s overlay (trusted.overlay.opaque=y)')
  t.equal(lgetxattr(join(second, 'var'), 'user.overlay.opaque'), 'y', 'layer 2: and for a userxattr overlay (user.overlay.opaque=y)')
  t.equal(statSync(second).mode & 0o777, 0o755, 'a layer\'s root is 0755 even when its tar has no ./ member')

  // The kernel reads the layers as they are: the merged tree has no /etc/os-release and only /var/new.
  const merged = mkdtempSync(join(tmpdir(), 'cfs-images-merged-'))
  t.teardown(() => rmSync(merged, { recursive: true, force: true }))
  const look = `ls ${merged}/etc/os-release 2>/dev/null; ls ${merged}/var; cat ${merged}/etc/added; umount ${merged}`
  for (const [how, argv] of [
    ['mounted by root', ['sh', '-c', `mount -t overlay overlay -o lowerdir=${second}:${first} ${merged} && ${look}`]],
    ['mounted in a user namespace with userxattr', ['unshare', '-Urm', 'sh', '-c', `mount -t overlay overlay -o userxattr,lowerdir=${second}:${first} ${merged} && ${look}`]],
  ] as const) {
    const seen = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' })
    t.equal(seen.stdout, 'new\nfrom layer 2\n', `overlay of the two layers, ${how}: no /etc/os-release, /var has only new, /etc/added is there`, { stderr: seen.stderr })
  }

  // The same image twice more: its layers are in the store, not unpacked again.
  const before = two.layers.map((diffId) => statSync(layerPath(home, diffId), { bigint: true }))
  for (const [name, file, source] of [['two-tar', fixtures.ociTar, 'oci'], ['two-docker', fixtures.dockerArchive, 'docker-archive']] as const) {
    const r = await rootfs(home, '--from-oci', file, '--name', name)
    t.equal(r.exitCode, 0, `import of ${file}: exit 0`, said(r))
    t.same(imageJson(home, name).layers, two.layers, `${name}: the same diff_ids`)
    t.equal(imageJson(home, name).source, source, `${name}: source ${source}`)
    t.equal(r.stderr.match(/in the store already/g)?.length, 2, `${name}: both layers found in the store, not unpacked`, said(r))
  }
  const after = two.layers.map((diffId) => statSync(layerPath(home, diffId), { bigint: true }))
  t.same(after.map((s) => [s.ino, s.mtimeNs]), before.map((s) => [s.ino, s.mtimeNs]), 'the layer directories are the same ones: same inode, same mtime')
  t.equal(storeContents(home).layers.filter((name) => /^[0-9a-f]{64}$/.test(name)).length, 3, 'three layers in the store for four images')

  const list = await images(home)
  t.equal(list.exitCode, 0, 'npm run images: exit 0', said(list))
  t.match(list.stdout, /^two {2}2 layers, [\d.]+ MiB, oci/m, 'npm run images lists two with its layers')
  t.match(list.stdout, new RegExp(`${two.layers[0].slice(0, 19)} +[\\d.]+ MiB {2}also in two-docker, two-tar`), 'and says which images share a layer')
  const history = await images(home, 'history', 'two')
  t.match(history.stdout, new RegExp(`${two.layers[1].slice(0, 19)} +[\\d.]+ KiB +\\S+ \\S+ +RUN echo > /etc/added`), 'npm run images -- history two: each layer, its size, what made it', said(history))
  t.match(history.stdout, /\(no layer\) +0 B .* umoci config/, 'and the steps that made no layer')

  // Steps 03-06 run one directory: a two-layer image is refused in one line; busybox runs through its link.
  const refused = await step(home, '05-mount-ns', '--image', 'two', 'true')
  t.equal(refused.exitCode, 125, 'step 05 --image two: exit 125', said(refused))
  t.equal(refused.stderr, 'cfs: image `two` has 2 layers: steps before 07 run one-layer images only (layers arrive with overlay at step 07)\n', 'in one line that says why')
  for (const name of ['03-chroot', '05-mount-ns', '07-overlay']) {
    for (const image of ['busybox', join(home, 'images/busybox/rootfs')]) {
      const ran = await step(home, name, '--image', image, 'cat', '/etc/os-release')
      t.equal(ran.exitCode, 0, `step ${name} --image ${image}: exit 0`, said(ran))
      t.match(ran.stdout, /^ID=busybox$/m, `step ${name} --image ${image}: the busybox layer is its root`)
    }
  }
  t.same(readMountInfo().filter((m) => m.mountPoint.startsWith(`${home}/`)).map((m) => m.mountPoint), [], 'no mount left in the store')

  // Steps 07 and 08 run it as its layers: one lowerdir per layer, top first, and the whiteout and the new file as layer 2 left them.
  for (const name of ['07-overlay', '08-net']) {
    const ran = await step(home, name, '--image', 'two', 'sh', '-c', 'grep " / / " /proc/self/mountinfo; cat /etc/added; ls /var; ls /etc/os-release')
    t.equal(ran.exitCode, 1, `step ${name} --image two: exit 1, from \`ls /etc/os-release\` (whited out)`, said(ran))
    const lowerdirs = /\blowerdir=([^,\s]+)/.exec(ran.stdout)?.[1].split(':') ?? []
    t.same(lowerdirs, [second, first], `step ${name}: the root is an overlay with one lowerdir per layer, top first`, said(ran))
    t.match(ran.stdout, /^from layer 2\nnew$/m, `step ${name}: /etc/added is there, /var has only new`, said(ran))
  }

  // Removing images; prune frees the layers no image has.
  for (const name of ['two', 'two-tar']) t.equal((await images(home, 'rm', name)).exitCode, 0, `npm run images -- rm ${name}: exit 0`)
  t.ok(existsSync(layerPath(home, two.layers[1])), 'the layers stay while two-docker has them')
  const nothing = await images(home, 'prune')
  t.match(nothing.stdout, /^nothing to prune/m, 'prune: nothing to do while two-docker has them', said(nothing))
  await images(home, 'rm', 'two-docker')
  const pruned = await images(home, 'prune')
  t.equal(pruned.exitCode, 0, 'prune: exit 0', said(pruned))
  t.equal(pruned.stdout.match(/^removed layer /gm)?.length, 2, 'prune removes the two layers no image has', said(pruned))
  t.match(pruned.stdout, /^freed [\d.]+ MiB$/m, 'and says what that freed')
  t.same(storeContents(home), { layers: [bb.layers[0].slice(7), `${bb.layers[0].slice(7)}.json`], images: ['busybox'] }, 'busybox is all the store has left')
  const noSuch = await images(home, 'rm', 'two')
  t.equal(noSuch.exitCode, 125, 'rm of an image that is not there: exit 125', said(noSuch))
  t.match(noSuch.stderr, /^cfs: no image `two` [^\n]*\n$/, '…in one line')
})

t.test('an image from before layers (a rootfs directory, no layers in image.json) still runs', { skip }, async (t) => {
  const home = scratchStore(t)
  t.equal((await rootfs(home, '--source', 'busybox')).exitCode, 0, 'a busybox image to copy')
  const layer = layerPath(home, imageJson(home, 'busybox').layers[0])
  mkdirSync(join(home, 'images/old'), { recursive: true })
  run('cp', ['-a', layer, join(home, 'images/old/rootfs')])
  writeFileSync(join(home, 'images/old/image.json'), JSON.stringify({ name: 'old', source: 'busybox', created: '2025-01-01T00:00:00.000Z' }))
  for (const name of ['03-chroot', '05-mount-ns', '07-overlay']) {
    const ran = await step(home, name, '--image', 'old', 'cat', '/etc/os-release')
    t.equal(ran.exitCode, 0, `step ${name} --image old: exit 0`, said(ran))
  }
  const list = await images(home)
  t.match(list.stdout, /^old {2}1 layer \(a directory: made before layers\)/m, 'npm run images lists it as one layer', said(list))
})

t.test('an index for several platforms: the host\'s is chosen; none for it, one line', { skip }, async (t) => {
  const home = scratchStore(t)
  const busybox = await rootfs(home, '--source', 'busybox')
  const fixtures = buildFixtures(busybox.stdout.trim())
  const layout = copyLayout(t, fixtures.layout)
  const host = layout.index.manifests[0]
  const other = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 500, platform: { os: 'linux', architecture: 's390x' } }
  // A nested index (as docker save writes), with a manifest whose blob is not there: it must not be read.
  const nested = putBlob(layout.dir, JSON.stringify({ schemaVersion: 2, manifests: [other, { ...host, platform: { os: 'linux', architecture: hostArchitecture() } }] }))
  writeFileSync(join(layout.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', ...nested }] }))
  const chosen = await rootfs(home, '--from-oci', layout.dir, '--name', 'multi')
  t.equal(chosen.exitCode, 0, `linux/${hostArchitecture()} chosen from the index: exit 0`, said(chosen))
  t.equal(imageJson(home, 'multi').layers.length, 2, 'its two layers imported')

  writeFileSync(join(layout.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [other] }))
  const before = storeContents(home)
  const none = await rootfs(home, '--from-oci', layout.dir, '--name', 'none')
  t.equal(none.exitCode, 125, 'an index with no image for this machine: exit 125', said(none))
  t.match(none.stderr, new RegExp(`^cfs: [^\\n]*no image for linux/${hostArchitecture()} in it, only for linux/s390x\\n$`), '…in one line naming the platforms it has')
  t.same(storeContents(home), before, 'nothing added to the store')
})

t.test('a layer compressed with zstd (media type …tar+zstd)', { skip }, async (t) => {
  const home = scratchStore(t)
  const busybox = await rootfs(home, '--source', 'busybox')
  const layout = copyLayout(t, buildFixtures(busybox.stdout.trim()).layout)
  const tar = gunzipSync(readFileSync(blobFile(layout.dir, layout.manifest.layers[0].digest)))
  layout.manifest.layers[0] = { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', ...putBlob(layout.dir, zstdCompressSync(tar)) }
  const r = await rootfs(home, '--from-oci', saveLayout(layout), '--name', 'zstd')
  t.equal(r.exitCode, 0, 'import: exit 0', said(r))
  const [first] = imageJson(home, 'zstd').layers
  t.equal(first, layout.config.rootfs.diff_ids[0], 'layer 1 has the diff_id it had gzipped: the same tar')
  t.ok(lstatSync(join(layerPath(home, first), 'bin/busybox')).isFile(), 'and is unpacked')
})

// Each case imports into an empty store and must leave it empty.
async function refuses(t: Test, what: string, args: string[], says: RegExp): Promise<void> {
  const home = scratchStore(t)
  const r = await rootfs(home, ...args, '--name', 'bad')
  t.equal(r.exitCode, 125, `${what}: exit 125`, said(r))
  t.match(r.stderr, /^cfs: [^\n]+\n$/, `${what}: one line`, said(r))
  t.match(r.stderr, says, `${what}: says why`)
  t.same(storeContents(home), { layers: [], images: [] }, `${what}: nothing left in layers/ or images/`)
}

t.test('tars that would write outside their layer are refused before tar(1) sees them', { skip }, async (t) => {
  const outside = mkdtempSync(join(tmpdir(), 'cfs-images-outside-'))
  t.teardown(() => rmSync(outside, { recursive: true, force: true }))
  writeFileSync(join(outside, 'secret'), 'the host\'s\n')
  const cases: [string, Member[], RegExp][] = [
    ['a `..` member', [{ name: '../../pwned', data: 'x' }], /member `\.\.\/\.\.\/pwned` has a `\.\.` component/],
    ['an absolute member', [{ name: `${outside}/pwned`, data: 'x' }], /is an absolute path/],
    ['a symlink, then a file written through it', [{ name: 'link', type: '2', link: outside }, { name: 'link/pwned', data: 'x' }], /`link\/pwned` would be written through `link`, a symlink earlier in the same layer/],
    ['a relative symlink up and out, then a file through it', [{ name: 'd', type: '5' }, { name: 'd/up', type: '2', link: '../..' }, { name: 'd/up/pwned', data: 'x' }], /would be written through `d\/up`/],
    ['a file over an earlier symlink', [{ name: 'f', type: '2', link: `${outside}/secret` }, { name: 'f', data: 'overwritten' }], /`f` comes again after a symlink/],
    ['a hard link to a host file', [{ name: 'h', type: '1', link: `${outside}/secret` }], /hard link target `[^`]+` is an absolute path/],
    ['a hard link up and out', [{ name: 'h', type: '1', link: '../../etc/shadow' }], /hard link target `\.\.\/\.\.\/etc\/shadow` has a `\.\.` component/],
    ['a hard link to a file the layer does not have', [{ name: 'h', type: '1', link: 'etc/shadow' }], /hard link `h` points to `etc\/shadow`, which is not an earlier file of this layer/],
    // GNU tar reads the block after a symlink as the next header whatever its size says; a reader that skipped it would let `../pwned` through.
    ['a symlink with contents that hide a header', [{ name: 'l', type: '2', link: 'x', size: 512, data: tarHeader({ name: '../pwned', data: 'x' }).toString('latin1') }], /`l` is a symlink with 512 bytes of contents/],
  ]
  for (const [what, members, says] of cases) {
    const file = join(outside, 'evil.tar')
    writeFileSync(file, tarOf(members))
    await refuses(t, what, ['--from-tar', file], says)
    t.same(readdirSync(outside).sort(), ['evil.tar', 'secret'], `${what}: nothing written outside`)
    t.equal(readFileSync(join(outside, 'secret'), 'utf8'), 'the host\'s\n', `${what}: the host file is untouched`)
  }

  // Inside an OCI image too: layer 2 swapped for one with a symlink to write through, every digest right.
  const busybox = await rootfs(scratchStore(t), '--source', 'busybox')
  const layout = copyLayout(t, buildFixtures(busybox.stdout.trim()).layout)
  const evil = tarOf([{ name: 'etc', type: '5' }, { name: 'etc/link', type: '2', link: outside }, { name: 'etc/link/pwned', data: 'x' }])
  layout.manifest.layers[1] = { mediaType: 'application/vnd.oci.image.layer.v1.tar', ...putBlob(layout.dir, evil) }
  layout.config.rootfs.diff_ids[1] = `sha256:${sha256(evil)}`
  await refuses(t, 'an OCI image whose layer 2 writes through a symlink', ['--from-oci', saveLayout(layout)], /^cfs: layer 2 of 2: member `etc\/link\/pwned` would be written through `etc\/link`/)
  t.same(readdirSync(outside).sort(), ['evil.tar', 'secret'], 'nothing written outside')
})

t.test('corrupt, truncated and mislabelled images are refused, and leave nothing', { skip }, async (t) => {
  const busybox = await rootfs(scratchStore(t), '--source', 'busybox')
  const fixtures = buildFixtures(busybox.stdout.trim())
  const scratch = mkdtempSync(join(tmpdir(), 'cfs-images-bad-'))
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))

  const flipped = copyLayout(t, fixtures.layout)
  const flippedBlob = blobFile(flipped.dir, flipped.manifest.layers[0].digest)
  const bytes = readFileSync(flippedBlob)
  bytes[bytes.length >> 1] ^= 0xff
  writeFileSync(flippedBlob, bytes)
  await refuses(t, 'a layer blob with a byte flipped', ['--from-oci', flipped.dir], /^cfs: layer 1 of 2: its sha256 is [0-9a-f]{64}, not [0-9a-f]{64} as the manifest says: corrupt\n$/)

  const truncated = copyLayout(t, fixtures.layout)
  const whole = readFileSync(blobFile(truncated.dir, truncated.manifest.layers[0].digest))
  truncated.manifest.layers[0] = { ...truncated.manifest.layers[0], ...putBlob(truncated.dir, whole.subarray(0, whole.length >> 1)) }
  await refuses(t, 'a truncated layer (its digest made to match)', ['--from-oci', saveLayout(truncated)], /^cfs: layer 1 of 2: not a valid gzip stream \([^)]*\): corrupt or truncated\n$/)

  const mislabelled = copyLayout(t, fixtures.layout)
  mislabelled.config.rootfs.diff_ids[1] = `sha256:${sha256('something else')}`
  await refuses(t, 'a wrong diff_id for layer 2 (layer 1 is fine, and must not stay)', ['--from-oci', saveLayout(mislabelled)], /^cfs: layer 2 of 2: uncompressed, its sha256 is [0-9a-f]{64}, not [0-9a-f]{64} as the image's config \(rootfs\.diff_ids\) says\n$/)

  const missing = copyLayout(t, fixtures.layout)
  rmSync(blobFile(missing.dir, missing.manifest.layers[1].digest))
  await refuses(t, 'a missing layer blob', ['--from-oci', missing.dir], /layer blobs\/sha256\/[0-9a-f]{64} is missing/)

  const badConfig = copyLayout(t, fixtures.layout)
  writeFileSync(blobFile(badConfig.dir, badConfig.manifest.config.digest), '{}')
  await refuses(t, 'a config that is not what its digest says', ['--from-oci', badConfig.dir], /blobs\/sha256\/[0-9a-f]{64} is 2 bytes, not \d+ as its descriptor says: corrupt/)

  const cut = join(scratch, 'cut.oci.tar')
  writeFileSync(cut, readFileSync(fixtures.ociTar).subarray(0, Math.floor(statSync(fixtures.ociTar).size * 0.6)))
  await refuses(t, 'a truncated tar of an OCI layout', ['--from-oci', cut], /truncated/)

  const docker = join(scratch, 'flipped.docker.tar')
  const archive = readFileSync(fixtures.dockerArchive)
  archive[archive.indexOf('\x7fELF') + 10_000] ^= 0xff // inside busybox's code, in layer 1's tar
  writeFileSync(docker, archive)
  await refuses(t, 'a docker-archive with a byte of a layer flipped', ['--from-oci', docker], /^cfs: layer 1 of 2: uncompressed, its sha256 is [0-9a-f]{64}, not [0-9a-f]{64} as the image's config/)

  const plainCut = join(scratch, 'cut.tar')
  writeFileSync(plainCut, readFileSync(fixtures.busyboxTar).subarray(0, 1_000_000))
  await refuses(t, '--from-tar a truncated tar', ['--from-tar', plainCut], /the tar archive ends at byte \d+, in the middle: truncated/)
  const gzipCut = join(scratch, 'cut.tar.gz')
  writeFileSync(gzipCut, execFileSync('gzip', ['-c', fixtures.busyboxTar], { maxBuffer: 1 << 30 }).subarray(0, 300_000))
  await refuses(t, '--from-tar a truncated tar.gz', ['--from-tar', gzipCut], /not a valid gzip stream \(unexpected end of file\): corrupt or truncated/)
  const garbage = join(scratch, 'garbage.tar')
  writeFileSync(garbage, Buffer.alloc(4096, 'not a tar '))
  await refuses(t, '--from-tar a file that is not a tar', ['--from-tar', garbage], /not a tar archive, or a corrupt one: bad header checksum at byte 0/)
  await refuses(t, '--from-oci a directory that is no image', ['--from-oci', scratch], /is neither an OCI image layout \(oci-layout and index\.json\) nor a docker-archive \(manifest\.json\)/)
})

t.test('npm run clean removes what a crashed import left, never an image or a layer', { skip }, async (t) => {
  const home = scratchStore(t)
  t.equal((await rootfs(home, '--source', 'busybox')).exitCode, 0, 'a busybox image')
  // A crashed import's temporary layer (its PID gone), and one under way (this test's PID).
  const gone = spawnSync('true').pid!
  mkdirSync(join(home, 'layers', `.tmp-${gone}-crashed`, 'etc'), { recursive: true })
  mkdirSync(join(home, 'layers', `.tmp-${process.pid}-busy`))
  // clean's own finder, run in the scratch store (npm run clean itself would also take others' leftovers).
  const script = join(home, 'clean-store.ts')
  writeFileSync(script, `import { findLeftovers } from ${JSON.stringify(join(repoDir, 'scripts/lib/clean.ts'))}
const found = findLeftovers(['store temp', 'lock'])
for (const item of found) if (!item.inUse) item.remove()
console.log(JSON.stringify(found.map(({ name, inUse }) => ({ name, inUse }))))
`)
  const r = await runTool(script, [], { CFS_HOME: home })
  t.equal(r.exitCode, 0, 'clean\'s finder: exit 0', said(r))
  const found = JSON.parse(r.stdout) as { name: string; inUse: string | false }[]
  t.same(found.map((item) => item.name).sort(), [join(home, 'layers', `.tmp-${gone}-crashed`), join(home, 'layers', `.tmp-${process.pid}-busy`)].sort(), 'it finds the two temporary directories, and no layer or image')
  t.equal(found.find((item) => item.name.includes('crashed'))?.inUse, false, 'the crashed one is not in use')
  t.match(found.find((item) => item.name.includes('busy'))?.inUse, `its process ${process.pid} is running`, 'the one under way is')
  t.same(storeContents(home).layers.filter((name) => name.startsWith('.')), [`.tmp-${process.pid}-busy`], 'the crashed one is removed, the busy one stays')
  t.equal(storeContents(home).images.length, 1, 'the image stays')
})

t.test('Debian from mmdebstrap, as a one-layer --from-tar image', { skip }, async (t) => {
  const debian = buildDebian()
  if (!debian.tar) {
    if (process.env.CI === 'true') t.fail(debian.why!)
    else t.pass('Debian from mmdebstrap', { skip: debian.why })
    return
  }
  if (debian.seconds) t.comment(`mmdebstrap: ${debian.seconds.toFixed(0)} s, ${(statSync(debian.tar).size / 1e6).toFixed(0)} MB`)
  const home = scratchStore(t)
  const started = Date.now()
  const r = await rootfs(home, '--from-tar', debian.tar, '--name', 'debian')
  t.comment(`import: ${((Date.now() - started) / 1000).toFixed(1)} s`)
  t.equal(r.exitCode, 0, 'import: exit 0', said(r))
  const image = imageJson(home, 'debian')
  t.equal(image.layers.length, 1, 'one layer')
  t.equal(image.layers[0], `sha256:${sha256(readFileSync(debian.tar))}`, 'its diff_id is the tar\'s sha256')
  t.ok(lstatSync(join(layerPath(home, image.layers[0]), 'usr/bin/python3')).isSymbolicLink(), 'the layer has /usr/bin/python3')
  // A distribution no one here wrote, at steps 07 and 08: bash, procps's ps, python3.
  for (const name of ['07-overlay', '08-net']) {
    const ran = await step(home, name, '--image', 'debian', 'bash', '-c', 'cat /etc/debian_version; ps -o pid=,comm=; python3 -c "print(6 * 7)"')
    t.equal(ran.exitCode, 0, `step ${name} --image debian: exit 0`, said(ran))
    t.match(ran.stdout, /^12\.\d+\n\s*1 bash\n\s*\d+ ps\n42\n$/, `step ${name}: Debian 12; ps shows bash as PID 1 and itself; python3 prints 42`, said(ran))
  }
})
