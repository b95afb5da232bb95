// npm run test:vm [busybox|systemd]... [--ci]
//
// Both VM guests, one after the other (each keeps a host core busy for
// minutes under TCG): the busybox guest (scripts/test-cgroup2.ts: a
// v2-only kernel, cgroup_no_v1=all, no systemd; the v2 files themselves
// and a delegation made by hand) and the systemd guest
// (scripts/test-systemd.ts: Debian with systemd as PID 1, the learner's
// login, every step's verify from 05 on). Name one to run it alone; --ci
// gives the systemd guest's CI subset, what `npm test` runs. What each
// proves and how long it takes: notes/cgroup2-vm.md.
//
// The guests' results as data go to this run's CFS_VERIFY_JSON, if set.

import chalk from 'chalk'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { requireRoot } from '../shared/cli.ts'
import { exitWithError, UsageError } from '../shared/errors.ts'
import { repoDir } from '../shared/settings.ts'

const guests = { busybox: 'scripts/test-cgroup2.ts', systemd: 'scripts/test-systemd.ts' }

async function main(): Promise<void> {
  const args = process.argv.slice(2)
  const unknown = args.filter((arg) => !(arg in guests) && arg !== '--ci')
  if (unknown.length) throw new UsageError(`npm run test:vm: unknown ${unknown.join(' ')}: expected busybox, systemd or --ci`)
  requireRoot()
  const chosen = (Object.keys(guests) as (keyof typeof guests)[]).filter((name) => args.includes(name) || !args.some((arg) => arg in guests))
  const verdicts: string[] = []
  for (const name of chosen) {
    const started = Date.now()
    console.log(chalk.bold(`== the ${name} guest (${guests[name]})`))
    const code = await new Promise<number | null>((resolve) => {
      // The same Node and loader (tsx's, in execArgv) as this script.
      spawn(process.execPath, [...process.execArgv, join(repoDir, guests[name]), ...(name === 'systemd' && args.includes('--ci') ? ['--ci'] : [])], { stdio: 'inherit' })
        .on('close', resolve)
    })
    verdicts.push(`${name} ${code === 0 ? 'passed' : `FAILED (exit ${code})`} in ${((Date.now() - started) / 1000).toFixed(0)} s`)
    if (code !== 0) process.exitCode = 1
  }
  console.log((process.exitCode ? chalk.red : chalk.green)(`test:vm: ${verdicts.join(', ')}`))
}

main().catch((err) => exitWithError(err, 'test:vm'))
