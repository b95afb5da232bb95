// Check P2: run the four commands in a throwaway mount namespace and
// compare each listing with the prediction, without printing the kernel's
// answer unless asked (--show). The explanation is for a person.
//
// Usage: npm run homework -- p2 [--show]

import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import chalk from 'chalk'
import { $ } from 'zx'
import { Checks } from '../../../scripts/lib/verify.ts'
import { answerUnder, forAPerson, readTarget, target, tempDir } from '../checks.ts'

const slug = 'p2-propagation'
const dirs = ['smt', 'smt/1', 'smt/1/1', 'smt/1/1/1', 'tmp']
const show = process.env.CFS_HOMEWORK_SHOW === '1'
const c = new Checks('Homework P2: the mount propagation puzzle')

// The starting point: smt/ with 1/ and file, tmp/ with tmp-file.
const work = tempDir('p2')
mkdirSync(join(work, 'smt', '1'), { recursive: true })
mkdirSync(join(work, 'tmp'))
writeFileSync(join(work, 'smt', 'file'), '')
writeFileSync(join(work, 'tmp', 'tmp-file'), '')

const commands = ['mount --bind smt smt', 'mount --make-shared smt', 'mount --bind smt tmp', 'mount --move tmp smt/1']
// Everything happens in a mount namespace that dies with this shell: nothing is left on the host.
const script = `cd "$1" && ${commands.join(' && ')} || exit
for d in ${dirs.join(' ')}; do echo "$d: $(ls "$d" | tr '\\n' ' ')"; done
echo ---
grep " $1/" /proc/self/mountinfo | awk '{ print $5, $7 }' | sed "s|$1/||"`
const ran = `unshare --mount --propagation private sh -c 'cd <tmp dir>; ${commands.join('; ')}; ls …'`
const kernel = await $({ nothrow: true, quiet: true })`unshare --mount --propagation private sh -c ${script} sh ${work}`
const [listings, mounts] = kernel.stdout.split('---\n')
const actual = parse(listings ?? '')
if (kernel.exitCode !== 0 || actual.size !== dirs.length) {
  c.ok('the four commands ran in a throwaway mount namespace', false, { ran, expected: 'exit 0 and five listings', got: `exit ${kernel.exitCode}: ${kernel.stderr.trim()}` })
} else {
  const prediction = parse(readTarget(slug, 'prediction.txt').split('\n## ')[0])
  for (const dir of dirs) {
    const predicted = prediction.get(dir)
    c.ok(`${dir}: your prediction matches what ls prints`, predicted !== undefined && same(predicted, actual.get(dir)!), {
      ran,
      ...(show ? { expected: actual.get(dir)!.join(' ') || '(empty)' } : {}),
      got: predicted === undefined ? `no prediction for ${dir} in ${target(slug)}/prediction.txt (still ?)` : predicted.join(' ') || '(empty)',
    })
  }
}
if (show) {
  console.log(chalk.bold('\nWhat the kernel did:'))
  console.log((listings ?? '').trim())
  console.log(chalk.bold('Mount points and their propagation (mountinfo, under the temporary directory):'))
  console.log((mounts ?? '').trim())
  const shared = await $({ nothrow: true, quiet: true })`unshare --mount --propagation shared sh -c ${`cd "$1" && ${commands.join(' && ')}`} sh ${work}`
  console.log(chalk.bold('The same where / is shared (unshare --propagation shared):'))
  console.log(`exit ${shared.exitCode}: ${shared.stderr.trim().split('\n')[0]}`)
} else {
  console.log(chalk.dim('(npm run homework -- p2 --show prints what the kernel did)'))
}

const why = answerUnder(readTarget(slug, 'prediction.txt'), 'Why')
c.ok('prediction.txt explains the listings', why !== '', { ran: `cat ${target(slug)}/prediction.txt`, expected: 'text under the heading', got: 'no explanation' })
forAPerson(`${target(slug)}/prediction.txt: the explanation (peer groups, propagation of the move, and why the move fails when / is shared)`)

c.finish()

// `dir: name name …` lines; `?` means no prediction yet.
function parse(text: string): Map<string, string[]> {
  const found = new Map<string, string[]>()
  for (const line of text.split('\n')) {
    const match = /^\s*(smt(?:\/1)*|tmp)\s*:(.*)$/.exec(line)
    if (match && match[2].trim() !== '?') found.set(match[1], match[2].trim().split(/\s+/).filter(Boolean))
  }
  return found
}

function same(a: string[], b: string[]): boolean {
  return JSON.stringify([...a].sort()) === JSON.stringify([...b].sort())
}
