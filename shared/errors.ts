// Errors the project raises, and how they end the program.
//
// Two kinds, kept apart on purpose:
//   SyscallError - the kernel said no. Carries the syscall, the errno name and
//                  a hint, and reads like `mount \`proc\` on \`/proc\`: EPERM (...)`.
//   UsageError   - the learner asked for something that cannot work (a bad
//                  option, no root, no image). One plain sentence, no stack.

/** Exit codes, following Docker: 125 for our own failures, 126/127 for exec. */
export const EXIT_SETUP_FAILED = 125
export const EXIT_NOT_EXECUTABLE = 126
export const EXIT_NOT_FOUND = 127

/** The kernel refused a system call (see errno(3) for the codes). */
export class SyscallError extends Error {
  override name = 'SyscallError'
  readonly syscall: string
  readonly code: string
  readonly errno: number
  readonly description: string
  readonly path?: string
  readonly hint?: string

  constructor(syscall: string, code: string, errno: number, description: string, path?: string, hint?: string) {
    super(`${syscall}${path ? ` \`${path}\`` : ''}: ${code} (${description})`)
    this.syscall = syscall
    this.code = code
    this.errno = errno
    this.description = description
    this.path = path
    this.hint = hint
  }
}

/** A mistake in how the program was called or prepared: one line, no stack. */
export class UsageError extends Error {
  override name = 'UsageError'
  readonly exitCode: number
  readonly hint?: string

  constructor(message: string, exitCode = EXIT_SETUP_FAILED, hint?: string) {
    super(message)
    this.exitCode = exitCode
    this.hint = hint
  }
}

/**
 * Not an error: thrown by requireRoot() once sudo runs the program again as
 * root, to stop the caller's own run of it here. This process only waits for
 * sudo now, and exits with its code; exitWithError() passes it on, and the
 * handlers requireRoot() installs swallow it.
 */
export class RerunUnderSudo extends Error {
  override name = 'RerunUnderSudo'
}

/** Print an error as one line and exit; a stack only for real bugs. */
export function exitWithError(err: unknown, prefix = 'cfs'): never {
  if (err instanceof RerunUnderSudo) throw err
  if (err instanceof SyscallError || err instanceof UsageError) {
    process.stderr.write(`${prefix}: ${err.message}${err.hint ? ` (${err.hint})` : ''}\n`)
    process.exit(err instanceof UsageError ? err.exitCode : EXIT_SETUP_FAILED)
  }
  const system = err as NodeJS.ErrnoException
  if (system?.syscall && system.code && /^E[A-Z]+$/.test(system.code)) {
    // Node's own calls (fs, child_process) failing: the kernel said no there too.
    const what = `${system.syscall}${system.path ? ` \`${system.path}\`` : ''}`
    process.stderr.write(`${prefix}: ${what}: ${system.code} (${system.message.split(': ')[1]?.split(',')[0] ?? system.message})\n`)
    process.exit(EXIT_SETUP_FAILED)
  }
  if (String(system?.code).startsWith('ERR_PARSE_ARGS')) {
    // node:util parseArgs: an unknown option or a missing value, a usage error.
    const message = (err as Error).message
    const ambiguous = /^Option '([^']+)' argument is ambiguous/.exec(message)
    // `--name -x`: -x looks like an option. Node's hint (`--name=-x`) is left out: no value here may start with a dash.
    const line = ambiguous ? `${ambiguous[1]} needs a value, and the next word starts with a dash, as an option does` : message.split(/\.(\s|$)/)[0]
    process.stderr.write(`${prefix}: ${line} (see --help)\n`)
    process.exit(EXIT_SETUP_FAILED)
  }
  process.stderr.write(`${prefix}: internal error (a bug, please report it):\n`)
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`)
  process.exit(EXIT_SETUP_FAILED)
}

/**
 * When whoever reads our output goes away (`npm run diff | head`), stop
 * quietly, as a shell tool does, not with an EPIPE stack trace.
 */
export function exitOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err
      process.exit(0)
    })
  }
}
