// The command line every step shares: `run [options] <command> [args...]`.

import { spawnSync } from 'node:child_process'
import { accessSync, closeSync, constants, openSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { exitWithError, UsageError } from './errors.ts'
import { DEFAULT_PATH, execvp, keepStdio } from './process.ts'
import { ARCHITECTURES } from './seccomp.ts'
import { setName } from './state.ts'

type OptionSpec = NonNullable<ParseArgsConfig['options']>
type OptionValues<T extends OptionSpec> = {
  [K in keyof T]?: T[K]['type'] extends 'boolean' ? boolean : T[K] extends { multiple: true } ? string[] : string
}

/**
 * Parse `run [options] <command> [args...]`. Options stop at the first word
 * that is not an option (or at `--`), so `run ls -la` passes `-la` to ls.
 * `--help` prints the step's usage and exits 0.
 */
export function parseRunArgs<const T extends OptionSpec>(argv: string[], options: T, usage: string) {
  checkNodeVersion()
  const [verb, ...rest] = argv
  if (verb === '--help' || verb === '-h' || verb === 'help') exitWithUsage(usage)
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
  if (command.length === 0) throw new UsageError('missing command: what should run in the container? (see --help)')
  if (process.platform !== 'linux') {
    throw new UsageError('containers need a Linux kernel: on macOS or Windows use the VM in vagrant/ (see README.md)')
  }
  const env = ((values.env ?? []) as string[]).flatMap(hostValue)
  // Only the parent knows the name: it claims it and writes it in the state file, the child never sees it.
  if (values.name !== undefined) setName(values.name as string)
  // If requireRoot() re-runs this under sudo, the host's values of `-e KEY`
  // go along as `-e KEY=VALUE`: sudo gives the new process a fresh environment.
  rerunArgs = ['run', ...tokens.flatMap((token) => {
    if (token.kind === 'option' && token.name === 'env') return hostValue(token.value!).flatMap((pair) => ['--env', pair])
    if (token.kind === 'option') return token.value === undefined ? [token.rawName] : [token.rawName, token.value]
    return []
  }), '--', ...command]
  return { options: values as OptionValues<T>, command, env }
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
  help: { type: 'boolean', short: 'h' },
  env: { type: 'string', short: 'e', multiple: true },
  name: { type: 'string' },
} as const satisfies OptionSpec

// --name, which steps' usage texts do not list: exitWithUsage adds it after their -e line.
const NAME_HELP = ['--name NAME', 'a name for the container, unique among running ones (see npm run ps)'] as const

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
  throw new UsageError(`Node ${version} is too old: the workshop needs Node ${MIN_NODE.join('.')} or newer, which runs TypeScript itself (see README.md)`)
}

/**
 * Go on as root: return at once if we are root, else replace this process
 * with `sudo` running the same program again (same Node binary by its full
 * path, so a Node installed in a home directory works; same loader, script,
 * arguments and working directory). If that cannot be, one line and exit 125.
 *
 * exec, not a child process: whatever waits for us (a shell, `npx tsx`) then
 * waits for sudo, and its signals reach sudo, which passes them on. sudo
 * resets the environment, so what only the user's shell knows goes along
 * explicitly (through env(1)): the CFS_* settings, `-e KEY`'s host value (in
 * the arguments, see parseRunArgs), and this Node's directory first in PATH,
 * so that tools started by name (tsx, npm) run on the same Node.
 */
export function requireRoot(args = rerunArgs ?? process.argv.slice(2)): void {
  try {
    checkNodeVersion()
    if (process.getuid?.() === 0) return
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
    keepStdio()
    execvp(sudo, ['--', 'env', ...settings, 'CFS_SUDO=1', path, process.execPath, ...process.execArgv, process.argv[1], ...args])
  } catch (err) {
    exitWithError(err)
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

// sudo asks for a password on the controlling terminal, /dev/tty, if there is one.
function hasTerminal(): boolean {
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
  process.stdout.write(withCommonOptions(usage).trimStart())
  process.exit(0)
}

// A step's usage text with --name added below its -e line, its description in the same column.
function withCommonOptions(usage: string): string {
  const lines = usage.split('\n')
  const at = lines.findIndex((line) => /^\s+-e KEY\[=VALUE\]\s/.test(line))
  if (at < 0) return `${usage.trimEnd()}\n  ${NAME_HELP.join('  ')}\n`
  const column = /^\s+-e KEY\[=VALUE\]\s+/.exec(lines[at])![0].length
  lines.splice(at + 1, 0, `  ${NAME_HELP[0]}`.padEnd(column) + NAME_HELP[1])
  return lines.join('\n')
}
