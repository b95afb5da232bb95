// The cgroup v2 VM test's kernel: Debian's, from `apt-get download
// linux-image-amd64` (the package it depends on), unpacked (not installed)
// into the VM directory once and re-used from there, with the modules the
// guest needs to reach the host's files, decompressed, in the order to load
// them.

import { execFileSync, spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { UsageError } from '../../shared/errors.ts'
import { onPath } from '../lib/files.ts'

/**
 * The modules the guest needs (with what they depend on): to reach the
 * host's files, and, for step 09 as root, the bridge and veth pairs of its
 * network and step 08's nftables table (NAT, DNAT, fib, reject, conntrack;
 * npm run doctor asks nft, which needs nf_tables), since the guest cannot
 * load modules on demand: its modprobe is the host's, with the host's
 * /lib/modules.
 */
const wantedModules = [
  'virtio_pci', '9pnet_virtio', '9p', 'overlay', 'bridge', 'veth',
  // crc32c_generic first: libcrc32c, which nf_tables needs, names it only as a soft dependency.
  'crc32c_generic', 'nf_tables', 'nft_chain_nat', 'nft_masq', 'nft_nat', 'nft_fib_inet', 'nft_reject_inet', 'nft_ct',
]

/** An unpacked kernel: <dir>/vmlinuz, and <dir>/modules/<name>.ko to load in this order. */
export interface Kernel {
  dir: string
  package: string // e.g. `linux-image-6.1.0-56-amd64 6.1.192-2`
  release: string // uname -r
  modules: string[] // names, dependencies first
  wanted?: string[] // the wantedModules they were unpacked for
}

/**
 * The cached kernel in `vmDir`, or Debian's current one, downloaded and
 * unpacked there (not installed). A cache unpacked for fewer modules than
 * wantedModules now lists is downloaded again (once).
 */
export function ensureKernel(vmDir: string): Kernel {
  const kernels = readdirSync(vmDir).filter((name) => existsSync(join(vmDir, name, 'kernel.json'))).sort()
    .map((name) => ({ ...JSON.parse(readFileSync(join(vmDir, name, 'kernel.json'), 'utf8')), dir: join(vmDir, name) }) as Kernel)
  const cached = kernels.filter((k) => wantedModules.every((name) => k.wanted?.includes(name))).at(-1)
  if (cached) return cached
  const tmp = join(vmDir, `download-${process.pid}`)
  mkdirSync(tmp)
  try {
    console.log('getting a kernel: apt-get download linux-image-amd64 (once; kept in ' + vmDir + ')')
    // linux-image-amd64 is a metapackage: the kernel is the package it depends on.
    aptDownload('linux-image-amd64', tmp)
    const meta = readdirSync(tmp).find((f) => f.startsWith('linux-image-amd64_'))!
    const real = /linux-image-[\w.+-]+/.exec(dpkgField(join(tmp, meta), 'Depends'))?.[0]
    if (!real) throw new UsageError(`linux-image-amd64 depends on no linux-image-* package: ${dpkgField(join(tmp, meta), 'Depends')}`)
    aptDownload(real, tmp)
    const deb = readdirSync(tmp).find((f) => f.startsWith(`${real}_`))!
    const version = dpkgField(join(tmp, deb), 'Version')
    execFileSync('dpkg-deb', ['-x', join(tmp, deb), join(tmp, 'x')])
    const release = readdirSync(join(tmp, 'x/lib/modules'))[0]
    // Beside a cache of the same kernel unpacked for fewer modules, not over
    // it: a run of older code may be reading that one.
    const plain = join(vmDir, `${real}_${version}`)
    const dir = existsSync(plain) ? `${plain}-m${wantedModules.length}` : plain
    const staging = join(tmp, 'kernel')
    mkdirSync(join(staging, 'modules'), { recursive: true })
    copyFileSync(join(tmp, 'x/boot', `vmlinuz-${release}`), join(staging, 'vmlinuz'))
    const modules = resolveModules(join(tmp, 'x/lib/modules', release), wantedModules).map((file) => {
      writeFileSync(join(staging, 'modules', `${moduleName(file)}.ko`), decompress(file))
      return moduleName(file)
    })
    const kernel = { package: `${real} ${version}`, release, modules, wanted: wantedModules }
    writeFileSync(join(staging, 'kernel.json'), `${JSON.stringify(kernel, null, 2)}\n`) // last: marks it complete
    try {
      renameSync(staging, dir)
    } catch (err) {
      // Another run unpacked the same kernel meanwhile: use that one.
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    return { ...kernel, dir }
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}

// As root, apt hands the download to its unprivileged `_apt` user, which
// cannot write to root's directory: download as root instead.
function aptDownload(pkg: string, dir: string): void {
  const result = spawnSync('apt-get', ['download', '-q', '-o', 'APT::Sandbox::User=root', pkg], { cwd: dir, encoding: 'utf8' })
  if (result.status !== 0) {
    throw new UsageError(`apt-get download ${pkg} failed (run apt-get update first?): ${(result.stderr || result.error?.message || '').trim()}`)
  }
}

function dpkgField(deb: string, field: string): string {
  return execFileSync('dpkg-deb', ['-f', deb, field], { encoding: 'utf8' }).trim()
}

/**
 * The module files to load for `names`, dependencies first. A module's
 * dependencies are in its `.modinfo` section (`depends=a,b`), which is what
 * modinfo(8) prints; modules built into the kernel (modules.builtin) need
 * nothing, and names differ only in `-` and `_`.
 */
export function resolveModules(modulesDir: string, names: string[]): string[] {
  const files = new Map<string, string>()
  for (const entry of readdirSync(join(modulesDir, 'kernel'), { recursive: true, withFileTypes: true })) {
    if (/\.ko(\.(xz|zst|gz))?$/.test(entry.name)) files.set(moduleName(entry.name), join(entry.parentPath, entry.name))
  }
  const list = join(modulesDir, 'modules.builtin')
  const builtin = new Set(existsSync(list) ? readFileSync(list, 'utf8').split('\n').filter(Boolean).map(moduleName) : [])
  const order: string[] = []
  const visit = (name: string, neededBy: string) => {
    name = name.replace(/-/g, '_')
    if (builtin.has(name) || order.includes(files.get(name) ?? '')) return
    const file = files.get(name)
    if (!file) throw new UsageError(`kernel ${basename(modulesDir)} has no ${name} module (needed by ${neededBy})`)
    const depends = /depends=([^\0]*)\0/.exec(decompress(file).toString('latin1'))?.[1] ?? ''
    for (const dependency of depends.split(',').filter(Boolean)) visit(dependency, name)
    if (!order.includes(file)) order.push(file)
  }
  for (const name of names) visit(name, 'the guest')
  return order
}

/** `a/b/9pnet-virtio.ko.xz` → `9pnet_virtio`. */
export function moduleName(file: string): string {
  return basename(file).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_')
}

/** A module file's contents, decompressed: busybox's insmod may not read compressed modules (newer Debian kernels ship .ko.xz). */
export function decompress(file: string): Buffer {
  if (file.endsWith('.ko')) return readFileSync(file)
  const tool = file.endsWith('.xz') ? 'xz' : file.endsWith('.zst') ? 'zstd' : 'gzip'
  if (!onPath(tool)) throw new UsageError(`${basename(file)} is compressed: apt-get install ${tool === 'xz' ? 'xz-utils' : tool}`)
  return execFileSync(tool, ['-dc', file], { maxBuffer: 256 * 1024 ** 2 })
}
