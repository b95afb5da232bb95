// npm test: the test suite (tap), as root.
//
// package.json runs the typecheck and `tap build` first, as whoever typed
// `npm test`; this re-runs itself under sudo if need be, runs tap, and gives
// tap's results directory (.tap/) back to the learner, so their checkout
// holds nothing root-owned afterwards.

import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { requireRoot } from '../shared/cli.ts'
import { repoDir } from '../shared/settings.ts'
import { handBack } from './lib/owner.ts'

requireRoot() // containers, mounts, cgroups
const tap = spawn(join(repoDir, 'node_modules/.bin/tap'), process.argv.slice(2), { cwd: repoDir, stdio: 'inherit' })
// Ctrl-C reaches tap through the terminal; tap stops its tests itself.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => tap.kill(signal))
tap.on('exit', (code, signal) => {
  handBack(join(repoDir, '.tap'))
  process.exit(code ?? 128 + (signal === 'SIGINT' ? 2 : 15))
})
