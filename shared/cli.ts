// The command line every step shares: `run [options] <command> [args...]`.

import { parseArgs, type ParseArgsConfig } from 'node:util'
import { EXIT_SETUP_FAILED, UsageError } from './errors.ts'

type OptionSpec = NonNullable<ParseArgsConfig['options']>
type OptionValues<T extends OptionSpec> = { [K in keyof T]?: T[K]['type'] extends 'boolean' ? boolean : string }

/**
 * Parse `run [options] <command> [args...]`. Options stop at the first word
 * that is not an option (or at `--`), so `run ls -la` passes `-la` to ls.
 * `--help` prints the step's usage and exits 0.
 */
export function parseRunArgs<const T extends OptionSpec>(argv: string[], options: T, usage: string) {
  const [verb, ...rest] = argv
  if (verb === '--help' || verb === '-h' || verb === 'help') exitWithUsage(usage)
  if (verb !== 'run') {
    throw new UsageError(verb ? `unknown command \`${verb}\`: expected \`run\` (see --help)` : usage.trim().split('\n')[0])
  }
  const split = firstNonOption(rest, options)
  const spec: OptionSpec = { ...options, help: { type: 'boolean', short: 'h' } }
  const { values } = parseArgs({ args: joinNegativeValues(rest.slice(0, split), options), options: spec, strict: true })
  if (values.help) exitWithUsage(usage)
  const command = rest.slice(split).filter((arg, i) => !(i === 0 && arg === '--'))
  if (command.length === 0) throw new UsageError('missing command: what should run in the container? (see --help)')
  if (process.platform !== 'linux') {
    throw new UsageError('containers need a Linux kernel: on macOS or Windows use the VM in vagrant/ (see README.md)')
  }
  return { options: values as OptionValues<T>, command }
}

/** Stop with a one-line error unless running as root. */
export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new UsageError('needs root (namespaces, mounts and cgroups are for root): rerun with sudo', EXIT_SETUP_FAILED)
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
  process.stdout.write(usage.trimStart())
  process.exit(0)
}
