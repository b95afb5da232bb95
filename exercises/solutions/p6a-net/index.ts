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
  // A listens first, then says where: B must not connect before nc is up.
  const a = shell`${tsx} ${step} run sh -c ${`nc -l -p ${port} > /tmp/got & ${showAddress}; wait; cat /tmp/got`}`
  const address = await addressOf(a)
  if (!address) throw new UsageError(`container A did not say its address: ${(await a).stderr.trim()}`)
  console.log(`A: ${address}`)
  // B: its own address, then the message to A's, on the bridge.
  const b = await shell`${tsx} ${step} run sh -c ${`${showAddress}; echo "$0" | nc ${address} ${port}`} ${argv[0]}`
  console.log(`B: ${/inet ([\d.]+)\//.exec(b.stdout)?.[1] ?? `none (exit ${b.exitCode}: ${b.stderr.trim()})`}`)
  const got = await a
  console.log(`A got: ${got.stdout.trim().split('\n').at(-1)}`)
  process.exitCode = got.exitCode === 0 && b.exitCode === 0 ? 0 : 1
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
