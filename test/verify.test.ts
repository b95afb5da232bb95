// Runs every step's verify.ts as a learner would and turns each printed
// claim (✔ or ✘) into a tap assertion.

import t from 'tap'
import { readdirSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { repoDir } from '../shared/settings.ts'
import { rootOnly, runTool } from './helpers.ts'

const steps = readdirSync(join(repoDir, 'steps')).filter((name) => existsSync(join(repoDir, 'steps', name, 'verify.ts'))).sort()

for (const step of steps) {
  t.test(`steps/${step}/verify.ts`, rootOnly(), async (t) => {
    // `env -u NODE_OPTIONS`: run steps as a learner does, without tap's
    // preloads. tap puts them back on every spawn from Node, and its
    // processinfo would write .tap/ files inside the image when a step's
    // child exits after chroot (a missing command, say).
    const result = await runTool(`steps/${step}/verify.ts`)
    const lines = result.stdout.split('\n')
    let claims = 0
    for (const [i, line] of lines.entries()) {
      const mark = line[0]
      if (mark !== '✔' && mark !== '✘') continue
      claims++
      // The lines under a failed claim say what ran, what was expected and what came back.
      const detail = lines.slice(i + 1).filter((_, j, rest) => rest.slice(0, j + 1).every((l) => l.startsWith('    '))).join('\n')
      t.ok(mark === '✔', line.slice(2), { diagnostic: mark === '✘', detail })
    }
    t.ok(claims > 0, `verify printed its checks (stderr: ${result.stderr.trim().slice(0, 500)})`)
    t.equal(result.exitCode, 0, `verify exits 0 (stderr: ${result.stderr.trim().slice(0, 500)})`)
  })
}
