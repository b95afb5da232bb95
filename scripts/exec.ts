// npm run exec -- [-e KEY[=VALUE]] [-w DIR] ID|NAME <command> [args...]
//
// Run a command inside a running container, as `docker exec` does: in
// every namespace of the container, in its root and working directory, in
// its cgroup, with its environment, and at step 10 with its capabilities,
// no_new_privs and seccomp filter. notes/exec.md walks through it.
//
// Three processes, because of what the kernel asks of each move:
//   this one, the parent  finds the container, opens its namespaces, and,
//                         once the command exists, moves it into the
//                         container's cgroup
//   the helper (`child`)  Node again, started by nsenter(1) inside the
//                         container's user namespace if it has one (no
//                         multithreaded process may join one); joins the
//                         other namespaces with setns(2), takes the
//                         container's root, and starts the command
//   the command           made by glibc's posix_spawn, single-threaded from
//                         its first instant, held at a gate until it is in
//                         the cgroup, then exec'd: in the container's PID
//                         namespace, as a child of the helper, never PID 1

import { spawn, type StdioOptions } from 'node:child_process'
import { chownSync, closeSync, constants as fsConstants, realpathSync, mkdirSync, openSync, readFileSync, readlinkSync, statSync, unlinkSync, writeSync } from 'node:fs'
import * as nodeModule from 'node:module'
import { constants as osConstants, hostname } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { CAPABILITIES, capset, kernelCapabilityBits, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAPBSET_DROP, type Capability } from '../shared/capabilities.ts'
import { checkNodeVersion, requireRoot } from '../shared/cli.ts'
import { findHierarchies } from '../shared/cgroups.ts'
import { mknod } from '../shared/devices.ts'
import { EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, exitWithError, UsageError } from '../shared/errors.ts'
import { raw } from '../shared/libc.ts'
import { chroot } from '../shared/mounts.ts'
import {
  CLONE_FS, CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWUSER, CLONE_NEWUTS, setns, unshare,
} from '../shared/namespaces.ts'
import { chdir, containerEnv, DEFAULT_PATH, fchdir, prctl } from '../shared/process.ts'
import { PR_SET_NO_NEW_PRIVS, seccomp, seccompFilter } from '../shared/seccomp.ts'
import { spawnPlain, waitExitCode } from '../shared/spawn.ts'
import { close, copyWindowSize, ioctl, isatty, openpty, sendFd, TERMINAL_FD, TerminalRelay } from '../shared/terminal.ts'
import { compileCacheDir, PREFIX } from '../shared/settings.ts'
import { runDir, type ContainerState } from '../shared/state.ts'
import { nodeAndCheckout, spawnWithPathsReachable } from '../shared/userns.ts'
import { BLOCKED_CALLS } from '../steps/10-security/policy.ts'
import { findContainer } from './lib/containers.ts'

const usage = `Usage: npm run exec -- [options] ID|NAME <command> [args...]

Run <command> inside a running container (see npm run ps): in its
namespaces, root, working directory and cgroup, with its environment, and
at step 10 its capabilities and seccomp filter. It is not PID 1 in there:
that stays the container's own command.

Options:
  -e KEY[=VALUE]  set a variable for the command (KEY alone: the host's value)
  -w DIR          working directory inside (default: the container's)

Examples:
  npm run exec -- web sh                 a shell in the container named web
  npm run exec -- 3f2a9c ps -o pid,args  its processes, from inside

Exit codes:
  the command's own; 125 exec itself failed (no such container, bad option),
  126 the command cannot be run, 127 it was not found, 128+N killed by signal N
`

// The namespaces a container may have, user first: joined in this order.
const NAMESPACES = [
  { file: 'user', flag: CLONE_NEWUSER },
  { file: 'cgroup', flag: CLONE_NEWCGROUP },
  { file: 'ipc', flag: CLONE_NEWIPC },
  { file: 'uts', flag: CLONE_NEWUTS },
  { file: 'net', flag: CLONE_NEWNET },
  // setns to a PID namespace changes only where our children are born.
  { file: 'pid', flag: CLONE_NEWPID },
  // Last: joining a mount namespace moves our root and cwd to its root.
  { file: 'mnt', flag: CLONE_NEWNS },
] as const

/** What the parent hands the helper: fd numbers are the helper's own. */
interface Plan {
  namespaces: { file: string; flag: number; fd: number }[] // user's excepted: nsenter joined it
  root?: number // the container's root, if not ours
  gate?: number // an O_PATH fd of the FIFO the command waits at, if it has a cgroup to join
  terminal: boolean // give the command a pty of the container's, its master sent back on TERMINAL_FD
  workdir: string
  env: string[]
  command: string[]
  security?: { capabilities: Capability[]; seccomp: boolean; noNewPrivileges: boolean } // step 10
}

/** The helper's fd on which it tells the parent how it goes (see helper). */
const TELL_FD = 3

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'child') return helper(JSON.parse(argv[1]) as Plan)
  checkNodeVersion()
  const { target, command, env, workdir, rerun } = parse(argv)
  const { state, owner } = findContainer(target)
  // Root's containers need root to join; a user's (rootless 09-10, 01 run as a user) their user, or root.
  if (owner === 0) requireRoot(rerun)
  else if (process.getuid?.() !== 0 && process.getuid?.() !== owner) {
    throw new UsageError(`container ${state.id} is user ${owner}'s: only they, or root, can run a command in it`)
  }
  const code = await execIn(state, command, env, workdir)
  // Now, not when Node finds nothing left to do: a read of our terminal
  // that the relay started may still be pending, until a key is pressed.
  process.exit(code)
}

// Options, the container, then the command. Docker takes options only
// before the container; after it, up to the command, they are taken too.
function parse(argv: string[]) {
  const before = takeOptions(argv)
  const [target, ...rest] = before.rest
  if (!target) throw new UsageError('missing container: which one? (see npm run ps, and --help)')
  const after = takeOptions(rest)
  const env = [...before.env, ...after.env]
  const workdir = after.workdir ?? before.workdir
  const command = after.rest
  if (command.length === 0) throw new UsageError('missing command: what should run in the container? (see --help)')
  if (workdir !== undefined && !workdir.startsWith('/')) throw new UsageError(`-w ${workdir}: the working directory must be an absolute path`)
  // sudo gives a fresh environment: the host's values of `-e KEY` go along as `-e KEY=VALUE`.
  const rerun = [...env.flatMap((pair) => ['-e', pair]), ...(workdir ? ['-w', workdir] : []), target, '--', ...command]
  return { target, command, env, workdir, rerun }
}

// The options at the start of `args`, up to the first word that is not one (or `--`).
function takeOptions(args: string[]): { env: string[]; workdir?: string; rest: string[] } {
  const options = { env: { type: 'string', short: 'e', multiple: true }, workdir: { type: 'string', short: 'w' }, help: { type: 'boolean', short: 'h' } } as const
  const { tokens } = parseArgs({ args, options, strict: false, tokens: true, allowPositionals: true })
  const env: string[] = []
  let workdir: string | undefined
  for (const token of tokens) {
    if (token.kind === 'option-terminator') return { env, workdir, rest: args.slice(token.index + 1) }
    if (token.kind === 'positional') return { env, workdir, rest: args.slice(token.index) }
    if (token.name === 'help') {
      process.stdout.write(usage)
      process.exit(0)
    }
    if (token.name !== 'env' && token.name !== 'workdir') throw new UsageError(`unknown option \`${token.rawName}\` (see --help)`)
    if (token.value === undefined) throw new UsageError(`${token.rawName} needs a value (see --help)`)
    if (token.name === 'workdir') workdir = token.value
    else env.push(...hostValue(token.value))
  }
  return { env, workdir, rest: [] }
}

// `-e KEY=VALUE` as it is; `-e KEY`, the host's value, or nothing if it has none.
function hostValue(arg: string): string[] {
  const [key] = arg.split('=', 1)
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new UsageError(`-e ${arg}: expected KEY=VALUE or KEY, with KEY a variable name (see --help)`)
  if (arg.includes('=')) return [arg]
  return process.env[key] === undefined ? [] : [`${key}=${process.env[key]}`]
}

// Parent: open what the helper needs, start it, put the command in the cgroup, wait.
async function execIn(state: ContainerState, command: string[], env: string[], workdir?: string): Promise<number> {
  const pid = state.pid1.pid
  const config = state.config ?? {}
  const opened: number[] = []
  const open = (path: string, flags: string | number = 'r') => {
    opened.push(openSync(path, flags))
    return opened.at(-1)!
  }
  try {
    // The namespaces the container does not share with us, each by an fd
    // of /proc/PID/ns/: the kernel's handle on it, good for setns(2).
    const differ = NAMESPACES.filter(({ file }) => readlinkSync(`/proc/${pid}/ns/${file}`) !== readlinkSync(`/proc/self/ns/${file}`))
    const fds: number[] = [] // the helper gets these as fds 5, 6, … (after TERMINAL_FD)
    const handOver = (fd: number) => fds.push(fd) + TERMINAL_FD
    const userns = differ.find(({ file }) => file === 'user')
    const userFd = userns ? handOver(open(`/proc/${pid}/ns/user`)) : undefined
    const namespaces = differ.filter((ns) => ns !== userns).map(({ file, flag }) => ({ file, flag, fd: handOver(open(`/proc/${pid}/ns/${file}`)) }))
    // Its root, unless it is ours (steps 01-02): /proc/PID/root is the directory PID 1 sees as /.
    const sameRoot = sameFile(`/proc/${pid}/root`, '/')
    const root = sameRoot ? undefined : handOver(open(`/proc/${pid}/root`))
    // Its cgroups (step 06 on): the gate holds the command until it is in them.
    const cgroups = cgroupsOf(pid)
    const gateFd = cgroups.length ? openGate(pid, userns !== undefined) : undefined
    if (gateFd !== undefined) opened.push(gateFd)
    const gate = gateFd === undefined ? undefined : handOver(gateFd)
    const security = 'capabilities' in config ? {
      capabilities: config.capabilities as Capability[], seccomp: config.seccomp !== false, noNewPrivileges: config.noNewPrivileges !== false,
    } : undefined
    // With a terminal, and a container with a devpts of its own (step 05 on,
    // where it has a mount namespace), the command gets a pty of the
    // container's, as `docker exec -it` gives, and we relay; with part of
    // one (a redirection), pipes for that part (shared/terminal.ts).
    const terminal = differ.some(({ file }) => file === 'mnt') ? new TerminalRelay() : undefined
    const plan: Plan = {
      namespaces, root, gate, security, command, terminal: terminal?.pty === true,
      // -w, else the container's own (-w at its run), else, in its root, /; with the host's root (01-02), where its PID 1 is.
      workdir: workdir ?? (typeof config.workdir === 'string' ? config.workdir : sameRoot ? readlinkSync(`/proc/${pid}/cwd`) : '/'),
      env: [...(Array.isArray(config.env) ? config.env.map(String) : []), ...env],
    }
    // In a user namespace, nsenter joins it first, and becomes its root
    // (uid 0 inside): a process with one thread, as setns(2) requires for
    // that namespace. It then execs Node, which keeps its capabilities there.
    const node = [process.execPath, realpathSync(fileURLToPath(import.meta.url)), 'child', JSON.stringify(plan)]
    // Rootless, we are its root already (the map is `0 <our uid> 1`), and
    // nsenter must leave our ids alone: setgroups(2) is denied in there.
    const ours = userFd !== undefined && rootMappedTo(pid) === process.geteuid?.()
    const nsenter = ['nsenter', `--user=/proc/self/fd/${userFd}`, ...(ours ? ['--preserve-credentials'] : []), '--']
    const [file, ...args] = userFd === undefined ? node : [...nsenter, ...node]
    // Node's compile cache, as for the steps' children: the helper starts in half the time.
    const helperEnv = { ...process.env, NODE_COMPILE_CACHE: compileCacheDir }
    const base: StdioOptions = ['inherit', 'inherit', 'inherit', 'pipe']
    // 0-2, TELL_FD, TERMINAL_FD (the pty's socket, or nothing), then the fds handed over.
    const stdio = [...(terminal?.stdio(base) ?? base) as unknown[]]
    while (stdio.length <= TERMINAL_FD) stdio.push('ignore')
    stdio.push(...fds)
    // As root, the helper is host uid 100000 once in the user namespace: if
    // Node or the checkout is in a home only its owner may enter, it is
    // shown them as step 09's child is (shared/userns.ts).
    const options = { stdio: stdio as StdioOptions, env: helperEnv }
    const helper = userFd === undefined ? spawn(file, args, options) : spawnWithPathsReachable(nodeAndCheckout(), file, args, options)
    const exited = new Promise<number>((resolve, reject) => {
      helper.on('error', reject)
      helper.on('exit', (exitCode, signal) => resolve(exitCode ?? 128 + osConstants.signals[signal!]))
    })
    // Once the helper, and so the command, has ended, the relay ends too,
    // though a job the command left in the background holds the terminal.
    const relayed = terminal?.relay(helper, exited.catch(() => {}))
    let commandPid: number | undefined
    // Signals for us are for the command. But Ctrl-C and Ctrl-\\ typed in a
    // terminal without a pty (one in cooked mode) reach our whole process
    // group, the command's too: not twice.
    const forward = (signal: NodeJS.Signals) => {
      const fromTerminal = (signal === 'SIGINT' || signal === 'SIGQUIT') && !plan.terminal && isatty(0)
      if (commandPid && !fromTerminal) process.kill(commandPid, signal)
    }
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) process.on(signal, forward)
    let said = ''
    let refused: Error | undefined
    helper.stdio[TELL_FD]!.on('data', (chunk: Buffer) => {
      said += chunk.toString()
      for (let end = said.indexOf('\n'); end >= 0; end = said.indexOf('\n')) {
        const [what, value] = said.slice(0, end).split(' ')
        said = said.slice(end + 1)
        if (what === 'spawning' && gateFd !== undefined) {
          try {
            commandPid = enterCgroups(helper.pid!, cgroups, gateFd)
          } catch (err) {
            // The command never ran; nor should the helper wait for it.
            refused = err as Error
            helper.kill('SIGKILL')
          }
        }
        if (what === 'started') commandPid ??= Number(value)
      }
    })
    const code = await exited
    await relayed
    if (refused) throw refused
    return code
  } finally {
    for (const fd of opened) closeSync(fd)
  }
}

// Whether two paths name the same file (same device and inode).
function sameFile(a: string, b: string): boolean {
  const [x, y] = [statSync(a), statSync(b)]
  return x.dev === y.dev && x.ino === y.ino
}

/**
 * The directories of the container's own cgroups (`cfs-…`): from
 * /proc/PID/cgroup, `hierarchy:controllers:path` per line (`0::path` for
 * v2), each under the mount point of its hierarchy.
 */
function cgroupsOf(pid: number): string[] {
  const hierarchies = findHierarchies()
  return readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').filter(Boolean).flatMap((line) => {
    const [id, controllers, ...rest] = line.split(':')
    const path = rest.join(':')
    if (!path.split('/').some((part) => part.startsWith(`${PREFIX}-`))) return []
    const hierarchy = id === '0'
      ? hierarchies.find((h) => h.version === 2)
      : hierarchies.find((h) => h.version === 1 && h.controllers.join(',') === controllers)
    if (!hierarchy) return []
    const root = hierarchy.root && hierarchy.root !== '/' ? hierarchy.root : ''
    return [join(hierarchy.mountPoint, path.slice(root.length))]
  })
}

/**
 * The gate: a FIFO (fifo(7)), opened here O_PATH (a handle, not an open
 * end) and unlinked at once, so nothing is left of it but our fd. The
 * command reopens it for reading through /proc/self/fd, which blocks until
 * we open it for writing. In a user namespace the command is the
 * container's root, host uid map.outside: the FIFO is made that uid's.
 */
function openGate(pid: number, userns: boolean): number {
  const dir = runDir()
  mkdirSync(dir, { recursive: true })
  const path = join(dir, `.exec-${process.pid}.gate`)
  const S_IFIFO = 0o010000
  mknod(path, S_IFIFO | 0o600, 0)
  try {
    const root = userns ? rootMappedTo(pid) : undefined
    if (root !== undefined && root !== process.geteuid?.()) chownSync(path, root, root)
    const O_PATH = 0o10000000
    return openSync(path, O_PATH)
  } finally {
    unlinkSync(path)
  }
}

// The host uid that is root in PID's user namespace (/proc/PID/uid_map: `inside outside count`).
function rootMappedTo(pid: number): number | undefined {
  for (const line of readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split('\n')) {
    const [inside, outside, count] = line.trim().split(/\s+/).map(Number)
    if (inside === 0 && count > 0) return outside
  }
  return undefined
}

/**
 * Parent, once the helper says it is spawning: find the command (the
 * helper's child, blocked at the gate: one thread, nothing of its own run
 * yet), write its PID to cgroup.procs in each of the container's cgroups,
 * then open the gate. Node's threads never enter the cgroup: moved there,
 * they would count against pids.max.
 */
function enterCgroups(helperPid: number, cgroups: string[], gate: number): number {
  const deadline = Date.now() + 5000
  let child: number | undefined
  while (!child && Date.now() < deadline) {
    child = Number(readFileSync(`/proc/${helperPid}/task/${helperPid}/children`, 'utf8').trim().split(' ')[0]) || undefined
    if (!child) pause()
  }
  if (!child) throw new UsageError('the command did not start: the helper made no process')
  try {
    for (const dir of cgroups) writeFileSyncNoCreate(join(dir, 'cgroup.procs'), String(child))
  } catch (err) {
    process.kill(child, 'SIGKILL')
    const code = (err as NodeJS.ErrnoException).code
    throw new UsageError(code === 'EACCES' || code === 'EPERM'
      ? `cannot move the command into the container's cgroup (${code}): rootless, cgroup v2 lets a user move a process only between cgroups delegated to them; run exec from where the container was started (same systemd-run --user scope)`
      : `cannot move the command into the container's cgroup: ${(err as Error).message}`)
  }
  // Opening for writing while the command waits to read releases it; ENXIO: it has not reached the gate yet.
  for (;;) {
    try {
      closeSync(openSync(`/proc/self/fd/${gate}`, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK))
      return child
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENXIO' || Date.now() > deadline) throw err
      pause()
    }
  }
}

// 2 ms without spinning: the helper and the command need the CPU meanwhile.
function pause(): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2)
}

// Write to a file that must already be there (cgroup.procs): never create one.
function writeFileSyncNoCreate(path: string, text: string): void {
  const fd = openSync(path, 'r+')
  try {
    writeSync(fd, text)
  } finally {
    closeSync(fd)
  }
}

// Helper: join, enter, start the command, wait for it, and end with its code.
function helper(plan: Plan): void {
  // Every module is compiled by now: keep them for the next exec, while the cache's directory is in view.
  nodeModule.flushCompileCache?.()
  // Its own root and cwd (CLONE_FS): Node's other threads share ours, and
  // setns(2) refuses a mount namespace to a thread that shares them.
  unshare(CLONE_FS)
  // Each namespace, by the fd the parent opened. Only this thread moves:
  // it is the one that starts the command, which is born where it is.
  for (const ns of plan.namespaces) setns(ns.fd, ns.flag)
  // The container's root: the directory its PID 1 has as / (at steps 03-04
  // a chroot, from 05 the root of its mount namespace, which setns gave us already).
  if (plan.root !== undefined) {
    fchdir(plan.root)
    chroot('.')
  }
  try {
    chdir(plan.workdir)
  } catch {
    end(EXIT_NOT_EXECUTABLE, `-w ${plan.workdir}: no such directory in the container`)
  }
  // The container's environment, HOSTNAME from its UTS namespace, which we are in now.
  const env = containerEnv(hostname(), plan.env)
  // posix_spawnp looks the command up in our PATH: make it the container's.
  process.env.PATH = env.find((pair) => pair.startsWith('PATH='))?.slice(5) ?? DEFAULT_PATH
  // The container's own terminal: a pty from its devpts (its /dev/ptmx,
  // now that its root is ours); the master goes to the parent. We keep the
  // slave open until the command has it: with no slave open, the parent
  // would read EIO on the master, its sign that the terminal is done with.
  const tty = plan.terminal ? openpty('/dev/ptmx') : undefined
  const ttyPath = tty && ptsName(tty.master)
  if (tty) {
    copyWindowSize(0, tty.master)
    sendFd(TERMINAL_FD, tty.master)
    close(tty.master)
    close(TERMINAL_FD)
  }
  if (plan.security) restrict(plan.security)
  // Signals for the command come from the parent: we wait on, to report how it ended.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) process.on(signal, () => {})
  writeSync(TELL_FD, 'spawning\n')
  let pid: number
  try {
    pid = spawnPlain(plan.command, env, { gate: plan.gate, terminal: ttyPath })
  } catch (err) {
    const code = (err as { code?: string }).code
    if (code === 'ENOENT') end(EXIT_NOT_FOUND, `${plan.command[0]}: command not found`)
    end(EXIT_NOT_EXECUTABLE, `${plan.command[0]}: ${code === 'EACCES' ? 'permission denied (not an executable)' : (err as Error).message}`)
  }
  if (tty) close(tty.slave)
  writeSync(TELL_FD, `started ${pid}\n`)
  end(waitExitCode(pid))
}

// The slave's path in the container's /dev/pts: the command opens it as a
// new session's leader, which makes it its controlling terminal.
function ptsName(master: number): string {
  const TIOCGPTN = 0x80045430 // the pty's number, asked of its master (ptsname(3))
  const number = Buffer.alloc(4)
  ioctl(master, TIOCGPTN, number)
  return `/dev/pts/${number.readInt32LE(0)}`
}

// As step 10's child, in its order: bounding set, ambient, capset, no_new_privs, filter.
function restrict(security: NonNullable<Plan['security']>): void {
  const filter = security.seccomp ? seccompFilter(BLOCKED_CALLS, security.capabilities) : undefined
  if (filter && !security.noNewPrivileges) seccomp(filter)
  for (const bit of kernelCapabilityBits()) if (!security.capabilities.includes(CAPABILITIES[bit])) prctl(PR_CAPBSET_DROP, bit)
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
  capset({ effective: security.capabilities, permitted: security.capabilities, inheritable: [] })
  if (security.noNewPrivileges) prctl(PR_SET_NO_NEW_PRIVS, 1)
  if (filter && security.noNewPrivileges) seccomp(filter)
}

// Say why, if there is something to say, and _exit(2): after the filter,
// Node's own exit would use io_uring, which it refuses.
function end(code: number, message?: string): never {
  if (message) writeSync(2, `cfs: ${message}\n`)
  return raw._exit(code) as never
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
