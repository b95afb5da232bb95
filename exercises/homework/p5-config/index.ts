// Homework P5: memory, CPU percent and an extra mount point, in one typed config
//
// Goal: step 07's container, configured from the command line through one
// typed Config that the parent builds and checks before anything is made,
// and hands to the child with the rest: a memory limit, a share of CPU in
// percent of one CPU, and host directories bind-mounted into the container
// (`--mount /srv/data:/mypoint`), which only the container's mount
// namespace sees.
//
// Usage: npx tsx exercises/homework/p5-config run [--image NAME|DIR] [--memory SIZE]
//          [--cpu-percent N] [--mount HOST_DIR:DIR[,HOST_DIR:DIR…]] <command> [args...]
//
// Homework: fill in each TODO, then check with `npm run homework -- p5`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { mkdirSync, statSync } from 'node:fs'
import { availableParallelism, hostname } from 'node:os'
import { isAbsolute, join, normalize } from 'node:path'
import { parseRunArgs, requireRoot } from '../../../shared/cli.ts'
import {
  createCgroup, DEFAULT_PIDS_LIMIT, joinCgroup, parseSize, removeCgroup, type Cgroup, type Limits,
} from '../../../shared/cgroups.ts'
import { Cleanup, newContainerId, reexecChild, waitForExit } from '../../../shared/container.ts'
import { mountDev } from '../../../shared/devices.ts'
import { exitWithError, UsageError } from '../../../shared/errors.ts'
import {
  mount, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, pivot_root, umount2,
} from '../../../shared/mounts.ts'
import { CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUTS } from '../../../shared/namespaces.ts'
import { createContainerDir, mountOverlay, removeContainerDir } from '../../../shared/overlay.ts'
import { chdir, containerEnv, execCommand, prctl, PR_SET_PDEATHSIG, SIGKILL } from '../../../shared/process.ts'
import { ensureImage } from '../../../shared/rootfs.ts'
import { sethostname } from '../../../shared/uts.ts'

const usage = `
Usage: npx tsx exercises/homework/p5-config run [options] <command> [args...]

Step 07's container, with its limits and extra mounts from one Config.

Options:
  --image NAME|DIR        image name (see npm run rootfs) or a root filesystem directory
  -m, --memory SIZE       memory limit, e.g. 64M
  --cpu-percent N         CPU time in percent of one CPU, e.g. 25 (up to 100 per CPU)
  --mount HOST_DIR:DIR    bind-mount host directories into the container (comma-separated)
`

/** Everything the command line configures, checked once, by the parent. */
interface Config {
  memory?: number // bytes
  cpuPercent?: number // of one CPU: 25 is a quarter of one, 150 one and a half
  mounts: { source: string; target: string }[] // a host directory, and where it shows inside
}

/** What the parent hands to the child. */
interface Container {
  id: string
  rootfs: string
  command: string[]
  env: string[] // -e KEY=VALUE
  config: Config
  cgroup: Cgroup
  dir: string // <state dir>/containers/<id>: upper/, work/, merged/
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return child(JSON.parse(argv[1]) as Container)
  const { options, command, env } = parseRunArgs(argv, {
    image: { type: 'string' },
    memory: { type: 'string', short: 'm' },
    'cpu-percent': { type: 'string' },
    mount: { type: 'string' },
  }, usage)
  const config = parseConfig(options)
  requireRoot()
  const rootfs = await ensureImage(options.image)
  await run({ id: newContainerId(), rootfs, command, env, config })
}

/** The options as a Config; a bad value is one line and exit 125, before anything is made. */
function parseConfig(options: { memory?: string; 'cpu-percent'?: string; mount?: string }): Config {
  const config: Config = { mounts: [] }
  // TODO: fill the config from the options, checking each value: --memory
  // (parseSize knows Docker's sizes), --cpu-percent (a number from 1 to 100
  // per CPU of this machine), --mount (HOST_DIR:DIR pairs, comma-separated;
  // both absolute, the host's an existing directory, DIR not `/`). A bad
  // value: throw a UsageError, one line, before anything is made.
  return config
}

/** The cgroup limits a Config asks for. */
function limitsOf(config: Config): Limits {
  // TODO: the memory limit, and the CPU percent as a quota: the kernel gives
  // a cgroup so much CPU time per period (Limits.cpus is in CPUs: 0.5 is 50 ms
  // every 100 ms). Keep the default pids limit.
  return { pids: DEFAULT_PIDS_LIMIT }
}

// Parent: start the child, wait for it, exit with its exit code.
async function run(container: Omit<Container, 'cgroup' | 'dir'>): Promise<void> {
  const cleanup = new Cleanup()
  try {
    const cgroup = createCgroup(container.id, limitsOf(container.config))
    cleanup.defer(() => removeCgroup(cgroup))
    const dir = createContainerDir(container.id)
    cleanup.defer(() => removeContainerDir(dir))
    const child = reexecChild({ ...container, cgroup, dir }, CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWNS)
    process.exitCode = await waitForExit(child)
  } finally {
    await cleanup.run()
  }
  process.exit()
}

// Child: set up the container from the inside, then become the command.
function child(container: Container): void {
  prctl(PR_SET_PDEATHSIG, SIGKILL)
  joinCgroup(container.cgroup)
  sethostname(container.id)
  mount(null, '/', null, MS_REC | MS_PRIVATE)
  const root = mountOverlay(container.rootfs, container.dir)
  mountExtra(root, container.config.mounts)
  pivotInto(root)
  mount('proc', '/proc', 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC)
  mount('sysfs', '/sys', 'sysfs', MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
  mountDev('/dev')
  // The command's environment is only what exec hands it: nothing of the host's.
  execCommand(container.command, containerEnv(hostname(), container.env))
}

// Bind the host's directories into the new root. Before pivot_root: after
// it, the host's paths are gone. In our own mount namespace (private), so
// the host never sees these mounts.
function mountExtra(root: string, mounts: Config['mounts']): void {
  // TODO: for each, make the directory inside the new root if the image lacks
  // it (where does it land: in the image, or in the container's upper dir?),
  // and bind-mount the host directory there, with what is mounted under it.
}

// Make `rootfs` the root of this mount namespace, with no way back to the host's.
function pivotInto(rootfs: string): void {
  // pivot_root needs the new root to be a mount point: bind it onto itself.
  // MS_REC, unlike step 05: the --mount binds that mountExtra() made in it
  // must come along. Nothing of the host's is in it: it is this mount
  // namespace's own overlay, mounted a moment ago.
  mount(rootfs, rootfs, null, MS_BIND | MS_REC)
  chdir(rootfs)
  // "." for both: the old root ends up stacked on top of the new one, at /,
  // and needs no directory in the image (see pivot_root(2), NOTES).
  pivot_root('.', '.')
  // Detach the host's tree from ours; after this there is no path back to it.
  umount2('.', MNT_DETACH)
  chdir('/')
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
