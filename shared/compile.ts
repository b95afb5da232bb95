// Re-exec without the TypeScript loader.
//
// The parent runs under tsx, as the learner typed it. Started the same way,
// the child would pay for the loader again (about 170 ms here, twice a bare
// Node start). So the child runs a plain-JS copy of the step, which tsc
// (TypeScript's own compiler, types stripped, not checked) writes to
// node_modules/.cache whenever a .ts file changed: about 0.4 s, once.
// If that cannot be done, the child goes through tsx as before.

import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { repoDir } from './settings.ts'

const cacheDir = join(repoDir, 'node_modules', '.cache', 'containers-from-scratch')
const sourceDirs = ['steps', 'shared', 'exercises']

/**
 * The plain-JS twin of a TypeScript file of this repository, compiled if
 * any source is newer than the last build; undefined if there is none
 * (CFS_CHILD_LOADER=tsx, a file outside the repo, no tsc, a syntax error).
 */
export function compiledScript(script: string): string | undefined {
  if (process.env.CFS_CHILD_LOADER === 'tsx') return undefined
  let file = resolve(script)
  if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.ts')
  const rel = relative(repoDir, file)
  if (rel.startsWith('..') || !rel.endsWith('.ts')) return undefined
  const version = String(Math.floor(newestMtime(sourceDirs.map((dir) => join(repoDir, dir)))))
  const out = join(cacheDir, `js-${version}`, rel.replace(/\.ts$/, '.js'))
  if (existsSync(out)) return out
  try {
    return build(version) && existsSync(out) ? out : undefined
  } catch {
    return undefined // e.g. a cache made by root, and we are not: tsx it is
  }
}

// Compile all sources into js-<version>/, atomically: into a temporary
// directory first, renamed into place, so a child never sees half a build.
function build(version: string): boolean {
  const tsc = join(repoDir, 'node_modules', 'typescript', 'bin', 'tsc')
  if (!existsSync(tsc)) return false
  const tmp = join(cacheDir, `build-${process.pid}`)
  mkdirSync(tmp, { recursive: true })
  const config = join(tmp, 'tsconfig.json')
  writeFileSync(config, JSON.stringify({
    compilerOptions: {
      target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', types: [], skipLibCheck: true,
      noCheck: true, rewriteRelativeImportExtensions: true, rootDir: repoDir, outDir: join(tmp, 'out'),
    },
    include: sourceDirs.map((dir) => join(repoDir, dir, '**', '*.ts')),
  }))
  const result = spawnSync(process.execPath, [tsc, '-p', config], { stdio: 'ignore' })
  try {
    if (result.status !== 0) return false // a syntax error: tsx will report it properly
    renameSync(join(tmp, 'out'), join(cacheDir, `js-${version}`))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
  removeOldBuilds(`js-${version}`)
  return true
}

// Builds of older sources, once no child can still be starting from them.
function removeOldBuilds(current: string): void {
  for (const name of readdirSync(cacheDir)) {
    const dir = join(cacheDir, name)
    if (name !== current && name.startsWith('js-') && Date.now() - statSync(dir).mtimeMs > 60_000) {
      rmSync(dir, { recursive: true, force: true })
    }
  }
}

function newestMtime(dirs: string[]): number {
  let newest = 0
  for (const dir of dirs) {
    if (!existsSync(dir)) continue
    for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (entry.isFile() && entry.name.endsWith('.ts')) {
        newest = Math.max(newest, statSync(join(entry.parentPath ?? entry.path, entry.name)).mtimeMs)
      }
    }
  }
  return newest
}
