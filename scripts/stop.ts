// npm run stop -- [-t SECONDS] ID|NAME [ID|NAME...]
//
// Stop running containers, as `docker stop` does: SIGTERM to each one's
// PID 1, then SIGKILL if it is still there after -t seconds (default 10).
// The kernel gives PID 1 of a PID namespace only the signals it has a
// handler for (and SIGKILL from outside), so a command with none, as
// busybox's httpd or sleep, lives through Ctrl-C and SIGTERM; here it ends
// at the SIGKILL. Its step sees its container end and cleans up, as after
// any exit, and this waits for that, so `npm run ps` no longer lists it.

import { parseArgs } from 'node:util'
import { requireRoot } from '../shared/cli.ts'
import { exitWithError, UsageError } from '../shared/errors.ts'
import { alive, type ContainerState } from '../shared/state.ts'
import { findContainer } from './lib/containers.ts'
import { pollFor } from './lib/wait.ts'

const usage = `Usage: npm run stop -- [-t SECONDS] ID|NAME [ID|NAME...]

Stop running containers (see npm run ps): SIGTERM to each one's PID 1, and
SIGKILL if it has not ended after SECONDS. A PID 1 gets only the signals it
has a handler for, so one with none (busybox's httpd, sleep) ignores Ctrl-C
and SIGTERM, and ends at the SIGKILL. Its step then cleans up as ever.

Options:
  -t, --time SECONDS  how long to wait before SIGKILL (default 10; 0: at once)

Examples:
  npm run stop -- web          the container named web
  npm run stop -- -t 0 3f2a9c  by id, SIGKILL at once

Exit codes:
  0 every container stopped; 125 stop itself failed (no such container, bad option)
`

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv, allowPositionals: true,
    options: { time: { type: 'string', short: 't', default: '10' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) {
    process.stdout.write(usage)
    process.exit(0)
  }
  if (!/^\d+(\.\d+)?$/.test(values.time)) throw new UsageError(`-t \`${values.time}\`: expected a number of seconds (see --help)`)
  const seconds = Number(values.time)
  if (positionals.length === 0) throw new UsageError('which container? give its id or name (see npm run ps, and --help)')
  const found = positionals.map((target) => findContainer(target, 'nothing to stop'))
  // Root's containers need root to signal; a user's (rootless 09-10) their user, or root.
  if (found.some(({ owner }) => owner === 0)) requireRoot(argv)
  const uid = process.getuid?.()
  const foreign = found.find(({ owner }) => uid !== 0 && owner !== uid)
  if (foreign) throw new UsageError(`container ${foreign.state.id} is user ${foreign.owner}'s: only they, or root, can stop it`)
  await Promise.all(found.map(({ state }, i) => stop(state, seconds).then(() => console.log(positionals[i]))))
}

async function stop(state: ContainerState, seconds: number): Promise<void> {
  // Its step killed with SIGKILL ("parent gone" in ps): no one is left to clean up after it.
  const orphaned = !alive(state.parent)
  signal(state, 'SIGTERM')
  if (!(await until(() => !alive(state.pid1), seconds * 1000))) signal(state, 'SIGKILL')
  // Its step removes the cgroup, overlay, lease and state file once PID 1 is gone.
  if (!(await until(() => !alive(state.parent) && !alive(state.pid1), 15_000))) {
    throw new UsageError(`container ${state.id}: its step (PID ${state.parent.pid}) has not ended 15 s after its PID 1 was killed (npm run clean removes what it leaves)`)
  }
  if (orphaned) process.stderr.write(`cfs: container ${state.id} had lost its step, which cleans up: npm run clean removes what it left\n`)
}

// Signal the container's PID 1, unless it has ended (and its PID may be someone else's now).
function signal(state: ContainerState, name: NodeJS.Signals): void {
  if (!alive(state.pid1)) return
  try {
    process.kill(state.pid1.pid, name)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
  }
}

// Whether `done` came true within `ms` (polled every 50 ms).
async function until(done: () => boolean, ms: number): Promise<boolean> {
  return (await pollFor(() => done() || undefined, ms)) === true
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
