// The systemd VM test's second disk: the learner's home, made for each run.
// It holds their checkout of this repository with its node_modules, Node
// and npm, a copy of the host's container images, and the .bash_profile
// that their console login runs: the checks, then power off. Everything is
// the learner's (uid 1000), as a clone on a laptop is, except the images,
// which are root's as in the host's state dir. An ext4 image, not a 9p
// share: see notes/cgroup2-vm.md for what each cost under emulation.

import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, cpSync, existsSync, mkdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { UsageError } from '../../shared/errors.ts'
import { repoDir } from '../../shared/settings.ts'
import { learner, resultsMount } from './debian.ts'

/** Where the guest writes its results (CFS_VERIFY_JSON), in the host's results directory. */
export const homeResults = 'results.jsonl'
/** Not copied into the guest's checkout: git's data, tap's results, and node_modules (copied from where it really is). */
const skipped = new Set(['.git', '.tap', 'coverage', 'node_modules'])

/** Options for the guest's checks (scripts/systemd-guest.ts), and how long it may wait for things. */
export interface HomeOptions {
  guestArgs: string[]
  waitScale: string
  /** A shell command run in the repository instead of the checks (CFS_VM_GUEST_CMD). */
  command?: string
}

/**
 * Make `image`, an ext4 file system of the learner's home, from a staging
 * directory in `work`. Returns how long it took, in ms.
 */
export function buildHome(work: string, image: string, images: string, options: HomeOptions): number {
  const started = Date.now()
  const home = join(work, 'home')
  mkdirSync(home)
  // The checkout: the working tree as it is (what a run tests), and node_modules from wherever it really is.
  cpSync(repoDir, join(home, 'repo'), { recursive: true, verbatimSymlinks: true, filter: (src) => src === repoDir || !skipped.has(src.slice(repoDir.length).replace(/^\/+/, '').split('/')[0]) })
  const modules = join(repoDir, 'node_modules')
  if (!existsSync(modules)) throw new UsageError(`${modules} is missing: run npm ci first`)
  cpSync(realpathSync(modules), join(home, 'repo/node_modules'), { recursive: true, verbatimSymlinks: true, filter: (src) => !src.includes('/node_modules/.cache') })
  // Node and npm, laid out as Node's own tarball: bin/node, lib/node_modules/npm, bin/npm and bin/npx.
  mkdirSync(join(home, 'node/bin'), { recursive: true })
  cpSync(process.execPath, join(home, 'node/bin/node'))
  cpSync(npmPackage(), join(home, 'node/lib/node_modules/npm'), { recursive: true, verbatimSymlinks: true })
  for (const tool of ['npm', 'npx']) symlinkSync(`../lib/node_modules/npm/bin/${tool}-cli.js`, join(home, 'node/bin', tool))
  writeFileSync(join(home, '.bash_profile'), profile(options))
  execFileSync('chown', ['-R', `${learner.uid}:${learner.uid}`, home])
  // Root's images, root's as on the host: the login copies them into root's state dir.
  mkdirSync(join(home, '.cfs-vm'))
  execFileSync('cp', ['-a', '--', images, join(home, '.cfs-vm/images')])
  chmodSync(home, 0o700) // as Debian's adduser makes a home
  const size = Number(execFileSync('du', ['-sm', home], { encoding: 'utf8' }).split('\t')[0]) * 1.5 + 512
  // root_owner: mkfs.ext4 -d copies what is in the directory, but makes its top the caller's (root's) unless told.
  const made = spawnSync('mkfs.ext4', ['-q', '-F', '-L', 'cfs-home', '-E', `root_owner=${learner.uid}:${learner.uid}`, '-d', home, image, `${Math.ceil(size)}M`], { encoding: 'utf8' })
  if (made.status !== 0) throw new UsageError(`mkfs.ext4 -d ${home}: ${made.stderr.trim()}`)
  return Date.now() - started
}

// npm's own package directory, from the npm on PATH (node_modules/.bin/npm or bin/npm, a link to npm-cli.js).
function npmPackage(): string {
  const found = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim()
  if (!found) throw new UsageError('npm is not on PATH: the guest gets the host\'s Node and npm')
  return dirname(dirname(realpathSync(found)))
}

/**
 * The learner's login shell runs this: say it is up and where it is, put
 * the images in root's state dir, run the checks as the learner (each
 * prints its line, and records it in the results file on the host), then
 * power off through systemd.
 */
function profile(options: HomeOptions): string {
  const env = [
    // npm_config_progress=false: npx's spinner would clear the console's line (ESC[1G ESC[0K) before each verify's verdict.
    'FORCE_COLOR=0', 'npm_config_progress=false', `CFS_WAIT_SCALE=${options.waitScale}`, `CFS_VERIFY_JSON=${resultsMount}/${homeResults}`, `CI=${process.env.CI ?? ''}`,
  ]
  const checks = options.command ?? `node scripts/systemd-guest.ts ${options.guestArgs.join(' ')}`
  return `# Written for one run of the systemd VM test (scripts/vm/home.ts): this login runs the checks, then powers off.
export PATH="$HOME/node/bin:$PATH"
cd ~/repo || exit 1
echo "SYSTEMD-BOOTED: $(cut -d' ' -f1 /proc/uptime) s, $(uname -r), the login shell in $(cut -d: -f3 /proc/self/cgroup)"
sudo mkdir -p /var/lib/containers-from-scratch && sudo cp -a ~/.cfs-vm/images /var/lib/containers-from-scratch/
touch ${resultsMount}/${homeResults} && chmod 666 ${resultsMount}/${homeResults}
env ${env.join(' ')} sh -c '${checks}'
echo "SYSTEMD-EXIT: $?"
sudo systemctl poweroff
`
}
