// The command line every step shares: `run [options] <command> [args...]`.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { accessSync, closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs'
import { constants as osConstants } from 'node:os'
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { exitWithError, RerunUnderSudo, UsageError } from './errors.ts'
import { DEFAULT_PATH, prctl, PR_SET_PDEATHSIG, SIGHUP } from './process.ts'
import { ARCHITECTURES } from './seccomp.ts'
import { setName } from './state.ts'
import type { Volume } from './volumes.ts'

type OptionSpec = NonNullable<ParseArgsConfig['options']>
type OptionValues<T extends OptionSpec> = {
  [K in keyof T]?: T[K]['type'] extends 'boolean' ? boolean : T[K] extends { multiple: true } ? string[] : string
}

/**
 * Parse `run [options] <command> [args...]`. Options stop at the first word
 * that is not an option (or at `--`), so `run ls -la` passes `-la` to ls.
 * `--help` prints the step's usage (see helpText) and exits 0. The options
 * that arrive in a step and stay in every later one are checked here, each
 * in one line: --hostname (02), --workdir (03), --volume (05, returned as
 * `volumes`). `commandFromImage` (steps 07 on): no command is no error
 * here, but an empty `command`, for the image's Entrypoint or Cmd
 * (shared/image-config.ts, withImageConfig).
 */
export function parseRunArgs<const T extends OptionSpec>(argv: string[], options: T, usage: string, { commandFromImage = false } = {}) {
  checkNodeVersion()
  const [verb, ...rest] = argv
  // Not -h: from step 02 on it is --hostname, as in Docker.
  if (verb === '--help' || verb === 'help') exitWithUsage(usage)
  if (verb !== 'run') {
    throw new UsageError(verb ? `unknown command \`${verb}\`: expected \`run\` (see --help)` : usage.trim().split('\n')[0])
  }
  const all = { ...options, ...commonOptions }
  const split = firstNonOption(rest, all)
  const parsed = parseArgs({ args: joinNegativeValues(rest.slice(0, split), all), options: all, strict: true, tokens: true })
  const { tokens } = parsed
  const values = parsed.values as Record<string, unknown>
  if (values.help) exitWithUsage(usage)
  const command = rest.slice(split).filter((arg, i) => !(i === 0 && arg === '--'))
  if (command.length === 0 && !commandFromImage) throw new UsageError('missing command: what should run in the container? (see --help)')
  if (process.platform !== 'linux') {
    throw new UsageError('containers need a Linux kernel: on macOS or Windows use the VM in vagrant/ (see README.md)')
  }
  const env = ((values.env ?? []) as string[]).flatMap(hostValue)
  if (values.hostname !== undefined) checkHostname(values.hostname as string)
  if (values.workdir !== undefined) checkWorkdir(values.workdir as string)
  const volumes = ((values.volume ?? []) as string[]).map(parseVolume)
  // Only the parent knows the name: it claims it and writes it in the state file, the child never sees it.
  if (values.name !== undefined) setName(values.name as string)
  // If requireRoot() re-runs this under sudo, the host's values of `-e KEY`
  // go along as `-e KEY=VALUE`: sudo gives the new process a fresh environment.
  rerunArgs = ['run', ...tokens.flatMap((token) => {
    if (token.kind === 'option' && token.name === 'env') return hostValue(token.value!).flatMap((pair) => ['--env', pair])
    if (token.kind === 'option') return token.value === undefined ? [token.rawName] : [token.rawName, token.value]
    return []
  }), '--', ...command]
  return { options: values as OptionValues<T>, command, env, volumes }
}

/** Docker's rule for -h/--hostname: RFC 1123 names (labels of letters, digits and inner `-`, joined by dots), at most 64 characters, as sethostname(2) takes. */
export const HOSTNAME_PATTERN = /^(?=.{1,64}$)([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$/

function checkHostname(name: string): void {
  if (!HOSTNAME_PATTERN.test(name)) {
    throw new UsageError(`--hostname \`${name}\`: expected letters, digits and \`-\`, in labels joined by dots, at most 64 characters (see --help)`)
  }
}

// -w/--workdir: a path inside the container, absolute as Docker requires (the command has no other directory to start from).
function checkWorkdir(dir: string): void {
  if (!isAbsolute(dir)) throw new UsageError(`--workdir \`${dir}\`: expected an absolute path inside the container, such as /tmp (see --help)`)
}

/**
 * One -v/--volume HOST:CTR[:ro|:rw]: both paths absolute, HOST there on
 * this host (Docker would make a missing one; a typo would then bind an
 * empty directory), CTR not `/`. Anything else is a UsageError.
 */
export function parseVolume(spec: string): Volume {
  const [source, target, mode, ...rest] = spec.split(':')
  const bad = (why: string) => new UsageError(`--volume \`${spec}\`: ${why} (see --help)`)
  if (target === undefined || rest.length > 0 || (mode !== undefined && mode !== 'ro' && mode !== 'rw')) throw bad('expected HOST:CONTAINER, or HOST:CONTAINER:ro for read-only')
  if (!isAbsolute(source)) throw bad(`the host path \`${source}\` must be absolute`)
  if (!existsSync(source)) throw bad(`\`${source}\` does not exist on this host`)
  if (!isAbsolute(target)) throw bad(`the container path \`${target}\` must be absolute`)
  if (resolve(target) === '/') throw bad('the container path cannot be / (the image is the root)')
  return { source: resolve(source), target: resolve(target), readonly: mode === 'ro' }
}

/**
 * Docker's --security-opt values the workshop knows (step 10):
 * `seccomp=unconfined` and `no-new-privileges[=true|false]`, with `=` or
 * Docker's older `:`. Anything else is a UsageError.
 */
export function securityOptions(opts: string[] = []): { seccomp: boolean; noNewPrivileges: boolean } {
  const result = { seccomp: true, noNewPrivileges: true }
  for (const opt of opts) {
    const nnp = /^no-new-privileges(?:[=:](true|false))?$/.exec(opt)
    if (/^seccomp[=:]unconfined$/.test(opt)) result.seccomp = false
    else if (nnp) result.noNewPrivileges = nnp[1] !== 'false'
    else throw new UsageError(`--security-opt ${opt}: expected seccomp=unconfined or no-new-privileges[=true|false] (see --help)`)
  }
  if (result.seccomp && !(process.arch in ARCHITECTURES)) {
    throw new UsageError(`seccomp: no system call table for ${process.arch} (x64 and arm64 only): add --security-opt seccomp=unconfined`)
  }
  return result
}

/** The options every step takes besides its own. */
const commonOptions = {
  help: { type: 'boolean' },
  env: { type: 'string', short: 'e', multiple: true },
  name: { type: 'string' },
} as const satisfies OptionSpec

// The common options in --help, after each step's own (see helpText).
const COMMON_HELP: [string, string][] = [
  ['-e, --env KEY[=VALUE]', 'set a variable for the command (KEY alone: the host\'s value)'],
  ['--name NAME', 'a name for the container, unique among running ones (see npm run ps)'],
  ['--help', 'print this help'],
]

// What a step's exit code means, the same at every step: shared/container.ts
// (waitForExit), shared/process.ts (execCommand), shared/errors.ts.
const EXIT_CODES = `Exit codes, as Docker's:
  N      the command's own (0 when it succeeds)
  125    the step itself failed: bad input (an option, the image…) or a set-up error
  126    the command cannot run (not an executable)
  127    the command was not found (in the container's PATH)
  128+N  the command was killed by signal N: 130 is SIGINT, which Ctrl-C sends where the
         container has no terminal of its own (the step passes it on); 137 is SIGKILL,
         also when SIGTERM or that Ctrl-C did not stop it within 2 s (a PID 1 ignores
         signals it has no handler for)
`

// `-e KEY=VALUE` as it is; `-e KEY` takes the host's value, or nothing if
// the host has none (as Docker does).
function hostValue(arg: string): string[] {
  const [key] = arg.split('=', 1)
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new UsageError(`-e ${arg}: expected KEY=VALUE or KEY, with KEY a variable name (see --help)`)
  if (arg.includes('=')) return [arg]
  return process.env[key] === undefined ? [] : [`${key}=${process.env[key]}`]
}

/** The arguments to re-run this program with (see requireRoot); undefined: its own. */
let rerunArgs: string[] | undefined

/** The oldest Node that runs the workshop: it runs .ts files itself (type stripping). */
export const MIN_NODE = [22, 18] as const

/** Stop with one line if this Node is older than MIN_NODE. */
export function checkNodeVersion(version = process.versions.node): void {
  const [major, minor] = version.split('.').map(Number)
  if (major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1])) return
  // Typed with sudo, whose secure_path finds the system's Node, not the one in the learner's home.
  const sudo = process.getuid?.() === 0 && process.env.SUDO_USER ? '; under sudo, PATH is sudo\'s: leave sudo out (steps re-run themselves under it), or keep your PATH with sudo env "PATH=$PATH" …' : ''
  throw new UsageError(`Node ${version} is too old: the workshop needs Node ${MIN_NODE.join('.')} or newer, which runs TypeScript itself (see README.md)${sudo}`)
}

/**
 * Go on as root: return at once if we are root, else run the same program
 * again under `sudo` (same Node binary by its full path, so a Node installed
 * in a home directory works; same loader, script, arguments and working
 * directory), and never return: this process waits for sudo and exits with
 * its exit code. If that cannot be, one line and exit 125.
 *
 * A child, not an exec: `npx tsx` sends a signal on to its child and, if the
 * child does not say within 30 ms that it got it, SIGKILLs it. sudo cannot
 * say so, and a killed sudo tears its command down 2 s later (SIGKILL), in
 * the middle of its clean-up: the container's cgroup would be left behind.
 * This Node says so (tsx's hook in it does), and passes SIGTERM and SIGHUP
 * on to sudo, which passes them on to the root run (sudo 1.9.13 and newer
 * do, from a process of their own process group). Ctrl-C and Ctrl-\ are
 * not passed on: the terminal sends them to sudo too. If our own parent
 * dies first, the kernel sends us SIGHUP (PR_SET_PDEATHSIG), passed on too.
 *
 * sudo resets the environment, so what only the user's shell knows goes
 * along explicitly (through env(1)): the CFS_* settings, `-e KEY`'s host
 * value (in the arguments, see parseRunArgs), and this Node's directory
 * first in PATH, so that tools started by name (tsx, npm) run on the same
 * Node.
 */
export function requireRoot(args = rerunArgs ?? process.argv.slice(2)): void {
  let rerun: ChildProcess
  try {
    checkNodeVersion()
    if (process.getuid?.() === 0) return watchInvoker()
    const why = 'needs root (namespaces, mounts and cgroups are for root)'
    // Our own mark, so a sudo that does not make us root cannot loop.
    if (process.env.CFS_SUDO) throw new UsageError(`${why}, and sudo ran it as uid ${process.getuid?.()}: run it as root`)
    const sudo = findInPath('sudo')
    if (!sudo) throw new UsageError(`${why}, and there is no sudo: run it as root`)
    const without = 'steps 01, 09 and 10 run without it'
    if (!hasTerminal() && spawnSync(sudo, ['-n', 'true'], { stdio: 'ignore' }).status !== 0) {
      throw new UsageError(`${why}, and sudo wants a password (or does not let you in) with no terminal to ask on: run \`sudo -v\` first, or run it as root; ${without}`)
    }
    // Ask sudo first, as a child: if it says no (no sudo rights, no password), we still get to say so in one line.
    if (hasTerminal() && spawnSync(sudo, ['-v'], { stdio: 'inherit' }).status !== 0) {
      throw new UsageError(`${why}, and sudo did not let you in: run it as root, or as a user with sudo rights; ${without}`)
    }
    process.stderr.write(`cfs: ${why}: re-running under sudo\n`)
    const settings = Object.entries(process.env).filter(([key]) => key.startsWith('CFS_')).map(([key, value]) => `${key}=${value}`)
    const path = `PATH=${dirname(process.execPath)}:${DEFAULT_PATH}`
    // If our own parent ends first (`npx tsx` killed, even by SIGKILL), the
    // kernel sends us SIGHUP, which goes on to sudo: the container stops, clean.
    prctl(PR_SET_PDEATHSIG, SIGHUP)
    // CFS_SUDO: our PID, for watchInvoker in the root run.
    rerun = spawn(sudo, ['--', 'env', ...settings, `CFS_SUDO=${process.pid}`, path, process.execPath, ...process.execArgv, process.argv[1], ...args], { stdio: 'inherit' })
  } catch (err) {
    exitWithError(err)
  }
  const sudo = rerun
  for (const signal of ['SIGTERM', 'SIGHUP'] as const) process.on(signal, () => sudo.kill(signal))
  for (const signal of ['SIGINT', 'SIGQUIT'] as const) process.on(signal, () => {})
  sudo.on('error', (err) => exitWithError(new UsageError(`could not start sudo: ${err.message}`)))
  sudo.on('exit', (code, signal) => process.exit(code ?? 128 + osConstants.signals[signal!]))
  // Stop the caller here: whatever follows requireRoot() runs as root, under sudo.
  process.on('uncaughtException', (err) => err instanceof RerunUnderSudo || exitWithError(err))
  process.on('unhandledRejection', (err) => err instanceof RerunUnderSudo || exitWithError(err))
  throw new RerunUnderSudo()
}

/**
 * The root run, re-run by requireRoot: if the process that ran sudo ends
 * first, even by SIGKILL, stop as on SIGHUP, with the clean-up. sudo,
 * set-user-ID, cannot have a parent-death signal (execve clears it), and
 * would run on; so look every half second whether that process, CFS_SUDO,
 * is still the one that started us (its start time, from /proc).
 */
function watchInvoker(): void {
  const pid = Number(process.env.CFS_SUDO)
  if (!(pid > 1)) return
  const started = startTime(pid)
  if (!started) return
  setInterval(() => startTime(pid) !== started && process.kill(process.pid, 'SIGHUP'), 500).unref()
}

// A process's start time (proc(5), /proc/PID/stat, field 22), or '' if it is gone.
function startTime(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[0] === 'Z' ? '' : fields[19] // a zombie is gone too
  } catch {
    return ''
  }
}

// The first executable `name` in PATH, as a shell would find it.
function findInPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    try {
      accessSync(join(dir, name), constants.X_OK)
      return join(dir, name)
    } catch {}
  }
  return undefined
}

/** True if this process has a controlling terminal: /dev/tty opens only then (sudo asks for a password there). */
export function hasTerminal(): boolean {
  try {
    closeSync(openSync('/dev/tty', 'r'))
    return true
  } catch {
    return false
  }
}

// The index of the first argument that is the command, not an option.
// An option that takes a value (`--memory 100M`, `-m 100M`) takes the next word.
function firstNonOption(args: string[], options: OptionSpec): number {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    if (arg === '--' || arg === '-' || !arg.startsWith('-')) return i
    const name = arg.startsWith('--')
      ? arg.slice(2)
      : Object.keys(options).find((key) => arg === `-${options[key].short}`)
    if (name !== undefined && options[name]?.type === 'string') i++
  }
  return args.length
}

// `--pids-limit -1`: a value that looks like an option. Pass it as
// `--pids-limit=-1`, so the option's own check can say what is wrong with it.
function joinNegativeValues(args: string[], options: OptionSpec): string[] {
  const joined: string[] = []
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith('--') ? args[i].slice(2) : undefined
    if (name && options[name]?.type === 'string' && /^-\d/.test(args[i + 1] ?? '')) joined.push(`${args[i]}=${args[++i]}`)
    else joined.push(args[i])
  }
  return joined
}

function exitWithUsage(usage: string): never {
  process.stdout.write(helpText(usage))
  process.exit(0)
}

/**
 * A step's --help, the same layout at every step: its usage line and what
 * it does, its own options, then the common ones (-e, --name, --help), in
 * one column; its two examples; the exit codes. The step's text has all
 * but the common options and the exit codes.
 */
export function helpText(usage: string): string {
  const lines = usage.trim().split('\n')
  const start = lines.indexOf('Options:')
  if (start < 0) return `${lines.join('\n')}\n\n${EXIT_CODES}`
  let end = start + 1
  while (end < lines.length && lines[end].trim() !== '') end++
  // `  --flag VALUE  what it does`; a line with no two-space gap goes on the line above.
  const own = lines.slice(start + 1, end).map((line): [string, string] => {
    const match = /^\s*(\S.*?)\s{2,}(\S.*)$/.exec(line)
    return match ? [match[1], match[2]] : ['', line.trim()]
  })
  const rows = [...own, ...COMMON_HELP]
  const width = Math.max(...rows.map(([flag]) => flag.length))
  const options = rows.map(([flag, what]) => `  ${flag.padEnd(width)}  ${what}`)
  return `${[...lines.slice(0, start + 1), ...options, ...lines.slice(end)].join('\n')}\n\n${EXIT_CODES}`
}
