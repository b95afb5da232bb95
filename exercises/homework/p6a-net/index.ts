// Homework P6A: two containers talking over the network
//
// Goal: two containers of step 08, and a message from one to the other over
// the host's cfs0 bridge. Each has a network namespace of its own, with its
// own eth0 and address; neither can see the other's interfaces, yet B
// reaches A's address through the veth pairs and the bridge. A listens with
// nc, B connects and sends the message, A prints what it got.
//
// Usage: npx tsx exercises/homework/p6a-net <message>
//
// Prints `A: <address>`, `B: <address>` and `A got: <message>`.
//
// Homework: fill in the TODOs, then check with `npm run homework -- p6a`
// (add --hint for a hint). The problem is in README.md, next to this file.

import { $, type ProcessPromise } from 'zx'
import { requireRoot } from '../../../shared/cli.ts'
import { exitWithError, UsageError } from '../../../shared/errors.ts'
import { waitFor } from '../../../scripts/lib/wait.ts'
import { repoDir } from '../../../shared/settings.ts'
import { tsx } from '../../../scripts/lib/verify.ts'

const step = 'steps/08-net'
const port = 7000
// Prints the container's address on eth0, as `… inet 10.77.0.2/24 …`.
const showAddress = 'ip -4 -o addr show dev eth0'

async function main(argv: string[]): Promise<void> {
  if (argv.length !== 1) throw new UsageError('usage: npx tsx exercises/homework/p6a-net <message>')
  requireRoot()
  const shell = $({ cwd: repoDir, quiet: true, nothrow: true, timeout: 30_000 })
  // TODO: start container A (`shell` runs `${tsx} ${step} run …`) listening on
  // `port` with nc, and printing its address (`showAddress`) once it listens;
  // do not await it yet: it runs until B has talked. addressOf() reads the
  // address from its output. Print `A: <address>`.
  // TODO: start container B, which prints its own address and sends the
  // message (argv[0]) to A's address and port with nc. Print `B: <address>`.
  // TODO: wait for A, print `A got: <what nc received>`, and exit non-zero
  // if either container failed.
  throw new UsageError('not written yet: see the TODOs in main()')
}

// The address a container prints on its stdout (up to 15 s).
async function addressOf(run: ProcessPromise): Promise<string | undefined> {
  let out = ''
  let ended = false
  run.stdout.on('data', (chunk: Buffer) => (out += chunk))
  void run.finally(() => (ended = true))
  return waitFor(() => /inet ([\d.]+)\//.exec(out)?.[1] ?? (ended ? '' : undefined), 15_000)
}

main(process.argv.slice(2)).catch((err) => exitWithError(err))
