// User namespaces (user_namespaces(7)): who root is. The id maps a parent
// writes for a child's namespace, the calls that set a process's
// credentials, starting Node in a new user namespace (Node, multithreaded,
// cannot make one for itself), and image layers whose owners are the mapped ids.

import { execFileSync, spawn, spawnSync, type ChildProcess, type SpawnOptions, type StdioOptions } from 'node:child_process'
import {
  chmodSync, closeSync, existsSync, fstatSync, lchownSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync,
  statSync, writeFileSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { basename, dirname, join, resolve } from 'node:path'
import { UsageError } from './errors.ts'
import { check, raw } from './libc.ts'
import { mount, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_REC, MS_SLAVE, O_CLOEXEC, O_PATH } from './mounts.ts'
import { CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS, spawnInNamespaces } from './namespaces.ts'
import { isOpaque, linkLayers } from './overlay.ts'
import { compileCacheDir, imagesDir, layersDir, repoDir, rootless } from './settings.ts'
import { prepareRecord, recordPid1, recordStart } from './state.ts'
import type { Volume } from './volumes.ts'
import { lsetxattr } from './xattr.ts'

/** One line of /proc/PID/uid_map (and gid_map): `count` ids from `inside` are `outside`… on the host. */
export interface IdMap {
  inside: number
  outside: number
  count: number
}

/** As root: container root is host uid 100000, with 65536 ids, the range /etc/subuid gives a first user. */
export const ROOT_MAP: IdMap = { inside: 0, outside: 100000, count: 65536 }

/** The map for whoever runs the step: ROOT_MAP as root; rootless, the user's own uid as root (`0 <uid> 1`), all the kernel lets a user map. */
export function idMapFor(uid = process.getuid!()): IdMap {
  return uid === 0 ? ROOT_MAP : { inside: 0, outside: uid, count: 1 }
}

// The options of unshare(1) for each CLONE_NEW* flag.
const unshareOptions: [flag: number, option: string][] = [
  [CLONE_NEWUSER, '--user'], [CLONE_NEWUTS, '--uts'], [CLONE_NEWIPC, '--ipc'],
  [CLONE_NEWPID, '--pid'], [CLONE_NEWNS, '--mount'], [CLONE_NEWNET, '--net'],
]

/**
 * The launcher: the command line that starts `command` in new namespaces,
 * the user namespace among them, made by one unshare(2) in a process with
 * one thread. runc has the same problem in Go and solves it with nsexec, C
 * code that runs before the Go runtime starts its threads; here it is
 * util-linux's unshare(1), a small C program every Linux has:
 *   setpriv --pdeathsig KILL  unshare dies with us (then --kill-child kills the child)
 *   unshare --user --uts …    one unshare(2): the user namespace first, the
 *                             others owned by it, then fork (--fork: the new
 *                             PID namespace is for children) and exec
 *   --keep-caps               capabilities survive that exec as ambient ones:
 *                             until the parent writes the maps our uid is
 *                             unmapped, and an exec by an unmapped uid drops them all
 */
export function launcher(flags: number, command: string[]): string[] {
  const options = unshareOptions.filter(([flag]) => flags & flag).map(([, option]) => option)
  return ['setpriv', '--pdeathsig', 'KILL', 'unshare', ...options, '--keep-caps', '--fork', '--kill-child', '--', ...command]
}

/**
 * As reexecChild (shared/container.ts), through the launcher: `<step> child
 * <config>` in new namespaces, created by unshare(1) with the user namespace.
 * The returned process is unshare, which stays in the host's PID namespace;
 * the container's PID 1 is its child (containerPid). The config's -v
 * sources, if any, are made reachable with Node and the checkout: the child
 * binds them, with no more reach over the host's files than the launcher.
 */
export function reexecChildInUserNamespace(config: object, flags: number, stdio: StdioOptions): ChildProcess {
  const env = { ...process.env, NODE_COMPILE_CACHE: compileCacheDir }
  const script = realpathSync(statSync(resolve(process.argv[1])).isDirectory() ? join(resolve(process.argv[1]), 'index.ts') : resolve(process.argv[1]))
  const [file, ...args] = launcher(flags, [process.execPath, script, 'child', JSON.stringify(config)])
  prepareRecord()
  // Once each: closedAncestors would list a path given twice twice, and openClosedDir make it twice (EEXIST).
  const paths = [...new Set([...nodeAndCheckout(), ...((config as { volumes?: Volume[] }).volumes ?? []).map((volume) => volume.source)])]
  const child = spawnWithPathsReachable(paths, file, args, { stdio, env })
  // Its state file names the launcher as PID 1 until signalContainer learns the real one.
  if (child.pid) recordStart(config, child.pid)
  return child
}

/**
 * What a Node child of this project loads, each by its real path: Node, the
 * checkout (the steps, shared/), and the node_modules that holds koffi and
 * its native part (@koromix/koffi-<platform>, beside it).
 */
export function nodeAndCheckout(): string[] {
  const koffi = createRequire(import.meta.url).resolve('koffi') // <node_modules>/koffi/index.cjs
  return [process.execPath, realpathSync(repoDir), dirname(dirname(koffi))]
}

/**
 * spawn, with each of `paths` reachable by a process that has no privilege
 * over the host's files, though its parent is root. The launcher is one:
 * after unshare(CLONE_NEWUSER) it is still host uid 0, but its capabilities
 * are the new namespace's, so CAP_DAC_OVERRIDE no longer opens the host's
 * directories, and once the maps are written it is uid 100000. Node in a
 * home directory of mode 0700 or 0750 (Debian 12, Ubuntu 21.04 on) is then
 * out of its reach: "failed to execute …/bin/node: Permission denied". So
 * is the checkout, if it is there too.
 *
 * If a directory above a path is closed to others (closedAncestors), the
 * child gets a mount namespace of its own (spawnInNamespaces), where a
 * tmpfs anyone may search covers that directory and holds only the paths,
 * bind-mounted at their own places: the same file names, nothing else of
 * the directory, and nothing on the host. The container's child leaves it
 * behind with the host's tree at pivot_root. Nothing closed, or not root:
 * a plain spawn.
 */
export function spawnWithPathsReachable(paths: string[], command: string, args: string[], options: SpawnOptions): ChildProcess {
  // Rootless, the child is the user who started Node: it reaches what they reach.
  const closed = process.getuid?.() === 0 ? closedAncestors(paths) : new Map<string, string[]>()
  if (closed.size === 0) return spawn(command, args, options)
  return spawnInNamespaces(CLONE_NEWNS, command, args, options, () => {
    // MS_SLAVE: our mounts stay in this namespace; the host's later ones still show in it.
    mount(null, '/', null, MS_REC | MS_SLAVE)
    for (const [dir, below] of closed) openClosedDir(dir, below)
  })
}

/**
 * For each path, the highest directory above it that others may not search
 * (no S_IXOTH, path_resolution(7)), with the paths under it. A path inside
 * another of `paths` that is listed comes with that one. One that is not
 * (a -v of a whole 0700 home, with Node in it) does not bring it: Node is
 * then listed under the home itself, which its tmpfs covers; the volume
 * shows that tmpfs, where its container root could not have read the home.
 */
export function closedAncestors(paths: string[]): Map<string, string[]> {
  const highest = new Map(paths.map((path) => [path, highestClosed(path)]))
  const closed = new Map<string, string[]>()
  for (const [path, dir] of highest) {
    if (!dir || paths.some((other) => path.startsWith(`${other}/`) && highest.get(other))) continue
    closed.set(dir, [...(closed.get(dir) ?? []), path])
  }
  return closed
}

// The highest directory above `path` that others may not search, if any.
function highestClosed(path: string): string | undefined {
  const parts = path.split('/').slice(1, -1)
  return parts.map((_, i) => `/${parts.slice(0, i + 1).join('/')}`).find((dir) => !(statSync(dir).mode & 0o001))
}

// Cover `dir` with a tmpfs of mode 755 that holds only `paths`, bind mounts
// of the real ones. Each is opened first, as the tmpfs hides it: the bind's
// source is /proc/self/fd/N, a link the kernel follows to the open file
// itself, without walking its path.
function openClosedDir(dir: string, paths: string[]): void {
  // O_PATH: the file itself, not its contents; a FIFO's open(2) would wait for a writer, a socket's fail (ENXIO).
  const fds = paths.map((path) => openSync(path, O_PATH | O_CLOEXEC))
  try {
    // Directories and mount points only: nothing on it runs, or is a device.
    mount('tmpfs', dir, 'tmpfs', MS_NOSUID | MS_NODEV | MS_NOEXEC, 'mode=755')
    for (const [i, path] of paths.entries()) {
      const parts = path.slice(dir.length + 1).split('/')
      for (let n = 1; n < parts.length; n++) {
        const at = join(dir, ...parts.slice(0, n))
        if (!existsSync(at)) mkdirSync(at)
        chmodSync(at, 0o755) // whatever the umask
      }
      if (fstatSync(fds[i]).isDirectory()) mkdirSync(path)
      else writeFileSync(path, '')
      // MS_REC: what is mounted under it comes along (a -v source's submounts, as bindVolumes promises).
      mount(`/proc/self/fd/${fds[i]}`, path, null, MS_BIND | MS_REC)
    }
  } finally {
    for (const fd of fds) closeSync(fd)
  }
}

/** The host PID of the container's PID 1: the launcher's only child (proc(5), /proc/PID/task/TID/children). */
export function containerPid(launcherPid: number): number {
  const pid = Number(readFileSync(`/proc/${launcherPid}/task/${launcherPid}/children`, 'utf8').trim().split(' ')[0])
  if (!pid) throw new UsageError('the launcher (unshare) has no child: the container\'s process did not start')
  return pid
}

/**
 * Send what is meant for the container (child.kill, as waitForExit and the
 * clean-up use it) to its PID 1, `pid`, past the launcher: unshare(1) blocks
 * SIGINT and SIGTERM while it waits for its child, and passes nothing on.
 * A SIGKILL also goes to unshare itself: util-linux before 2.40 reports a
 * child that died of SIGKILL as exit 1 (it cannot re-raise SIGKILL), and a
 * launcher killed by SIGKILL is 137, as Docker says. From now on the
 * container's state file (shared/state.ts) names `pid` as its PID 1.
 */
export function signalContainer(child: ChildProcess, pid: number): void {
  const launcher = child.pid!
  recordPid1(pid)
  child.kill = (signal?: NodeJS.Signals | number) => {
    try {
      // The launcher first: were PID 1 killed first, unshare could wake and
      // exit 1 before its own SIGKILL came. Its child goes with it (--kill-child).
      if (signal === 'SIGKILL' || signal === 9) process.kill(launcher, 'SIGKILL')
      process.kill(pid, signal)
      return true
    } catch {
      return false // gone already
    }
  }
}

/**
 * Write the user namespace's maps for process `pid`, from its parent
 * namespace (user_namespaces(7), "User and group ID mappings"). Rootless,
 * setgroups must be denied first: otherwise the user could drop a group
 * that a file's permissions deny them, and gain access.
 */
export function writeIdMaps(pid: number, map: IdMap): void {
  const line = `${map.inside} ${map.outside} ${map.count}\n`
  if (rootless) writeFileSync(`/proc/${pid}/setgroups`, 'deny')
  writeFileSync(`/proc/${pid}/uid_map`, line)
  writeFileSync(`/proc/${pid}/gid_map`, line)
}

/** Rootless, stop with usernsForbidden's sentence if the kernel refuses users a user namespace; as root, nothing to check. */
export function requireUserns(): void {
  const forbidden = rootless ? usernsForbidden() : undefined
  if (forbidden) throw new UsageError(forbidden)
}

/**
 * The kernel's answer to "may a user make a user namespace?": undefined if
 * yes, else one sentence with the cause and how to change it. The kernel
 * is asked: unshare(1) makes one and maps root in it (as root, this asks
 * for nobody, uid 65534), and the errno it reports says which kind of no:
 *   ENOSPC  the count is at user.max_user_namespaces (per user, in this
 *           namespace or one above); 0 there allows none, root's included
 *   EPERM   kernel.unprivileged_userns_clone=0 (Debian's patch),
 *           kernel.apparmor_restrict_unprivileged_userns=1 (Ubuntu 24.04:
 *           the namespace is made, its capabilities denied, so writing
 *           the map fails), or, with neither, a chroot or a seccomp filter
 *           (a container's), which refuse everyone
 *   EUSERS  32 user namespaces nested already, the kernel's limit
 */
export function usernsForbidden(): string | undefined {
  const asUser = process.getuid?.() === 0 ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : []
  const [file, ...args] = [...asUser, 'unshare', '--user', '--map-root-user', 'true']
  // LC_ALL=C: unshare reports the errno as strerror's English text.
  const probe = spawnSync(file, args, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } })
  if (probe.error) return `${file} did not run (${(probe.error as NodeJS.ErrnoException).code}): apt-get install util-linux`
  if (probe.status === 0) return undefined
  const said = probe.stderr.trim().split('\n').at(-1) ?? ''
  const code = Object.entries(strerror).find(([, text]) => said.endsWith(`: ${text}`))?.[0]
  const sysctl = (name: string) => {
    const path = `/proc/sys/${name.replaceAll('.', '/')}`
    return existsSync(path) ? readFileSync(path, 'utf8').trim() : undefined
  }
  if (code === 'ENOSPC') {
    const max = sysctl('user.max_user_namespaces')
    if (max === '0') return 'this host allows no user namespaces, not even root\'s (user.max_user_namespaces = 0): allow them with `sudo sysctl user.max_user_namespaces=15000`'
    return `the kernel says ENOSPC: this user has as many user namespaces as it may (user.max_user_namespaces = ${max ?? '?'}, per user, here or in a namespace above): end some, or raise the limit with \`sudo sysctl user.max_user_namespaces=<more>\``
  }
  if (code === 'EPERM' && sysctl('kernel.unprivileged_userns_clone') === '0') {
    return 'this host forbids unprivileged user namespaces (kernel.unprivileged_userns_clone = 0): allow them with `sudo sysctl kernel.unprivileged_userns_clone=1`, or run as root'
  }
  if (code === 'EPERM' && sysctl('kernel.apparmor_restrict_unprivileged_userns') === '1') {
    return 'AppArmor denies unprivileged user namespaces their capabilities on this host (kernel.apparmor_restrict_unprivileged_userns = 1): allow them with `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`, or run as root'
  }
  if (code === 'EPERM') return 'the kernel says EPERM to a user namespace, and no setting forbids them: in a chroot, or under a seccomp filter (in a container, say), no one may make one; run it outside'
  if (code === 'EUSERS') return 'the kernel says EUSERS: user namespaces are nested 32 deep here already, its limit'
  return `the kernel refuses a user namespace: ${said || `unshare exited ${probe.status ?? probe.signal}`}`
}

// strerror(3) in the C locale, for the errnos unshare(2) and writing a map can fail with.
const strerror = {
  EPERM: 'Operation not permitted', ENOSPC: 'No space left on device', EUSERS: 'Too many users', EINVAL: 'Invalid argument', ENOMEM: 'Cannot allocate memory',
}

/** setgroups(2): the supplementary groups; [] drops them all. */
export function setgroups(groups: number[]): void {
  check('setgroups', raw.setgroups(groups.length, groups.length ? groups : null), undefined, {
    EPERM: 'rootless, /proc/self/setgroups is "deny": the groups cannot be dropped',
  })
}

/** setresgid(2): real, effective and saved group id. */
export function setresgid(rgid: number, egid: number, sgid: number): void {
  check('setresgid', raw.setresgid(rgid, egid, sgid), undefined, { EINVAL: 'the gid is not mapped in this user namespace' })
}

/** setresuid(2): real, effective and saved user id. */
export function setresuid(ruid: number, euid: number, suid: number): void {
  check('setresuid', raw.setresuid(ruid, euid, suid), undefined, { EINVAL: 'the uid is not mapped in this user namespace' })
}

/**
 * The image's layers (top first) with every owner moved by `map.outside`,
 * so that root-owned files belong to the container's root. Each is copied
 * once per mapping and kept: a layer as `<layers>/<hex>@<outside>`, an
 * image's rootfs as `<images>/<name>@<outside>/rootfs`; any other directory
 * (an image given by path) in the container's directory, and removed with
 * it (such a directory may change, and its own may be closed to uid 100000).
 * The copies' opaque directories get user.overlay.opaque too: the overlay
 * in a user namespace (userxattr) reads user.* xattrs, not trusted.*.
 * Rootless (a one-id map), the layers themselves: the user's files are root's inside already.
 */
export function shiftedLayers(lowerdirs: string[], map: IdMap, containerDir: string): string[] {
  if (map.count === 1) return lowerdirs
  const dirs = lowerdirs.map((dir) => {
    const real = realpathSync(dir)
    // A layer of the store (shared/layers.ts) is shifted once, beside it, for every image that has it.
    const shifted = real.startsWith(`${layersDir}/`) ? `${real}@${map.outside}`
      : real.startsWith(`${imagesDir}/`) ? join(imagesDir, `${basename(dirname(real))}@${map.outside}`, 'rootfs')
      : join(containerDir, 'image')
    if (existsSync(shifted)) return shifted
    mkdirSync(dirname(shifted), { recursive: true })
    const making = `${shifted}.${process.pid}`
    // The directory itself, if `dir` is a symlink to it (an image's rootfs may be one, to its layer).
    execFileSync('cp', ['-a', real, making])
    shiftOwners(making, map.outside)
    try {
      renameSync(making, shifted)
    } catch {
      rmSync(making, { recursive: true, force: true }) // another run made it first
    }
    return shifted
  })
  linkLayers(dirs) // their short names, for an image of many layers (shared/overlay.ts)
  return dirs
}

// lchown every entry by `by`; chown clears set-user-ID bits, so put the mode back.
// An opaque directory (trusted.overlay.opaque) gets user.overlay.opaque too.
function shiftOwners(path: string, by: number): void {
  const stat = lstatSync(path)
  lchownSync(path, stat.uid + by, stat.gid + by)
  if (!stat.isSymbolicLink()) chmodSync(path, stat.mode & 0o7777)
  if (!stat.isDirectory()) return
  if (isOpaque(path, ['trusted.overlay.opaque'])) lsetxattr(path, 'user.overlay.opaque', 'y')
  for (const name of readdirSync(path)) shiftOwners(join(path, name), by)
}
