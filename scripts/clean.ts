// npm run clean [-- --all]
//
// Remove what a crashed or killed container left behind. Leaves running
// containers alone unless --all is given; safe to run any number of times.

import chalk from 'chalk'
import { parseArgs } from 'node:util'
import { clean } from './lib/clean.ts'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { requireRoot } from '../shared/cli.ts'
import { stateDir } from '../shared/settings.ts'

exitOnClosedPipe()

try {
  const { values } = parseArgs({ options: { all: { type: 'boolean' }, rootless: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } })
  if (values.help) {
    console.log(`Usage: npm run clean [-- --all]

Remove what containers left behind after a crash: mounts under ${stateDir},
cfs-* cgroups, cfs* interfaces and netns, the nftables table inet cfs and the forwarding
it turned on, container directories, stale leases
and state files (npm run ps), an image import's temporary directories, and
the isolation matrix's runc containers, cfsm-* keys and shared memory.
Anything a running container still uses is left alone. Images and layers
stay: npm run images -- rm NAME, and -- prune, remove those.

  --all        also stop running containers and remove directories kept with --keep
  --rootless   without sudo: only what your own rootless runs (steps 09 and 10)
               left, in your state dir and in a cgroup delegated to you`)
    process.exit(0)
  }
  if (values.rootless && process.getuid?.() === 0) throw new UsageError('--rootless is for a user without sudo: as root, npm run clean covers the rootless runs of the user who ran sudo too')
  if (!values.rootless) requireRoot()
  const { removed, kept, failed } = await clean(values.all, values.rootless)
  for (const item of removed) console.log(`${chalk.green('removed')}   ${item.kind}: ${item.name}`)
  for (const item of kept) console.log(`${chalk.yellow('left')}      ${item.kind}: ${item.name} (${item.inUse})`)
  for (const { item, error } of failed) console.log(`${chalk.red('failed')}    ${item.kind}: ${item.name}: ${error}`)
  if (removed.length + kept.length + failed.length === 0) console.log('nothing to clean')
  else console.log(`removed ${removed.length}, left ${kept.length} in use, ${failed.length} failed`)
  process.exitCode = failed.length ? 1 : 0
} catch (err) {
  exitWithError(err)
}
