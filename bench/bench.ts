// npm run bench [-- --runs N]
//
// What a container start costs, side by side in one run, as medians, all
// timed from outside (the steps carry no timing hooks):
//   - `tsx steps/NN run /bin/true` for every step, against the floor: the
//     same launcher running an empty .ts file, then one bare `node -e 0`
//     (a parent started by tsx plus a child), and against util-linux
//     `unshare … chroot IMAGE /bin/true`, runc and crun where they run;
//   - where the time goes, if strace is installed: from the execve(2)s it
//     sees, the parent until it starts the child, and the child until it
//     execs the command;
//   - from step 09 on, the same start rootless: as a user, without sudo;
//   - overlay start and per-container disk, small image vs a 200 MB one,
//     against copying the image per container;
//   - an image of 10 layers against the same files as 1 layer (step 07).
// Prints a table and writes bench/results.json.

import chalk from 'chalk'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { cgroupLayout, parseCount } from '../shared/cgroups.ts'
import { requireRoot } from '../shared/cli.ts'
import { exitOnClosedPipe, exitWithError, RerunUnderSudo, UsageError } from '../shared/errors.ts'
import { handBack } from '../scripts/lib/owner.ts'
import { ensureImage } from '../shared/rootfs.ts'
import { containersDir, repoDir } from '../shared/settings.ts'
import { findStepProcess, tsx } from '../scripts/lib/verify.ts'

exitOnClosedPipe()

// Bad options: one line and exit 125, as everywhere else; root: the steps need it.
const runs = (() => {
  try {
    const { values } = parseArgs({ options: { runs: { type: 'string', default: '9' } } })
    const count = parseCount(values.runs!, '--runs')!
    requireRoot()
    return count
  } catch (err) {
    if (err instanceof RerunUnderSudo) throw err // see requireRoot
    exitWithError(err instanceof UsageError ? err : new UsageError(`${(err as Error).message} (usage: npm run bench [-- --runs N])`), 'bench')
  }
})()
const steps = readdirSync(join(repoDir, 'steps')).filter((name) => /^\d\d-/.test(name)).sort()
const image = await ensureImage()
const strace = spawnSync('strace', ['-V']).status === 0

/** Run a command `runs` times; the median wall time in ms and the stderr of the last run. */
function time(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; before?: () => void } = {}) {
  const samples: number[] = []
  let stderr = ''
  let status: number | null = 0
  for (let i = 0; i < runs; i++) {
    options.before?.()
    const started = performance.now()
    const result = spawnSync(command, args, { cwd: repoDir, encoding: 'utf8', env: { ...process.env, ...options.env } })
    samples.push(performance.now() - started)
    stderr = result.stderr
    status = result.status
  }
  return { ms: median(samples), stderr, status }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

/** One command to time; `name` labels it. */
interface Subject {
  name: string
  command: string
  args: string[]
  env?: NodeJS.ProcessEnv
}

/**
 * Time every subject `runs` times, in rounds (one run of each per round), so
 * that whatever else the machine is doing meanwhile weighs on all of them
 * alike; per subject, the median wall time and every run's stderr.
 */
function measure(subjects: Subject[]): Map<string, { ms: number; ok: boolean }> {
  const results = new Map(subjects.map((s) => [s.name, { samples: [] as number[], ok: true }]))
  for (const s of subjects) spawnSync(s.command, s.args, { cwd: repoDir, env: { ...process.env, ...s.env } }) // warm: image, compile caches
  for (let i = 0; i < runs; i++) {
    for (const s of subjects) {
      const started = performance.now()
      const result = spawnSync(s.command, s.args, { cwd: repoDir, encoding: 'utf8', env: { ...process.env, ...s.env } })
      const r = results.get(s.name)!
      r.samples.push(performance.now() - started)
      r.ok &&= result.status === 0
    }
  }
  return new Map([...results].map(([name, r]) => [name, { ms: median(r.samples), ok: r.ok }]))
}

// The floor: tsx running an empty file, then a bare Node, as one unit.
const empty = join(mkdtempSync(join(tmpdir(), 'cfs-bench-')), 'empty.ts')
writeFileSync(empty, '')
const floorSubjects: Subject[] = [
  { name: 'floor', command: 'sh', args: ['-c', `${tsx} ${empty} && node -e 0`] },
  { name: 'node', command: 'node', args: ['-e', '0'] },
  { name: 'tsx', command: tsx, args: [empty] },
]
const stepSubject = (step: string): Subject => ({ name: step, command: tsx, args: [`steps/${step}`, 'run', '/bin/true'] })

// From 09 on a step also runs rootless: as the user who ran sudo (or
// nobody), with no sudo, a state dir of its own and the image it prepares
// there (the warm-up run makes it), in the same rounds.
const rootlessUid = Number(process.env.SUDO_UID || 65534)
const rootlessHome = mkdtempSync(join(tmpdir(), 'cfs-bench-rootless-'))
chownSync(rootlessHome, rootlessUid, rootlessUid)
const rootlessSteps = steps.filter((step) => step >= '09')
const rootlessSubject = (step: string): Subject => ({
  name: `${step} rootless`,
  command: 'setpriv',
  args: [`--reuid=${rootlessUid}`, `--regid=${rootlessUid}`, '--clear-groups', tsx, `steps/${step}`, 'run', '/bin/true'],
  env: { HOME: rootlessHome, CFS_HOME: join(rootlessHome, 'state'), XDG_CACHE_HOME: join(rootlessHome, 'cache') },
})

// Every step, against the floor, timed from outside: the steps carry no
// timing hooks.
const main = measure([...floorSubjects, ...steps.map(stepSubject), ...rootlessSteps.map(rootlessSubject)])
rmSync(rootlessHome, { recursive: true, force: true })
const floor = main.get('floor')!.ms
const bareNode = main.get('node')!.ms
const tsxEmpty = main.get('tsx')!.ms
const phases = strace ? tracePhases(steps) : new Map<string, Phases>()
const stepRows = steps.map((step) => stepRow(step, main.get(step)!, floor))
const rootlessRows = rootlessSteps.map((step) => ({ ...stepRow(`${step} rootless`, main.get(`${step} rootless`)!, floor), parentMs: undefined, childMs: undefined }))

// Step 08 once more with the bridge kept up by another container, as in a
// class where several run: then no container pays for making the bridge or
// for deleting it (which waits for the kernel, see notes/08-net.md). Against
// a floor measured in the same rounds.
// And, into that container, npm run exec's start (scripts/exec.ts): a
// command in its namespaces and cgroup (notes/exec.md).
const holder = await startBridgeHolder()
const bridgeUp = measure([floorSubjects[0], stepSubject('08-net'), { name: 'exec', command: tsx, args: ['scripts/exec.ts', holder.name, '/bin/true'] }])
await holder.stop()
const bridgeUpRow = { ...stepRow('08-net', bridgeUp.get('08-net')!, bridgeUp.get('floor')!.ms), step: '08-net, bridge up' }
const execRow = { ...stepRow('exec', bridgeUp.get('exec')!, bridgeUp.get('floor')!.ms), step: 'exec into 08' }
rmSync(join(empty, '..'), { recursive: true })

function stepRow(step: string, result: { ms: number; ok: boolean }, floorMs: number) {
  return { step, ms: result.ms, ratio: result.ms / floorMs, ...phases.get(step), ok: result.ok }
}

/** Where a start's time goes, from the execve(2)s strace sees: the parent until it starts the child, the child until it execs the command. */
interface Phases {
  parentMs: number // the step's own node process: its exec → the child's exec
  childMs: number // the child: its exec (node … child) → the command's exec
}

// Each step `runs` times under `strace -f --seccomp-bpf -e trace=execve`: only
// execve stops the traced processes, so the timings barely move.
function tracePhases(names: string[]): Map<string, Phases> {
  const samples = new Map(names.map((step) => [step, { parentMs: [] as number[], childMs: [] as number[] }]))
  const log = join(tmpdir(), `cfs-bench-strace-${process.pid}`)
  for (let i = 0; i < runs; i++) {
    for (const step of names) {
      spawnSync('strace', ['-f', '-qq', '-ttt', '--seccomp-bpf', '-e', 'trace=execve', '-o', log, tsx, `steps/${step}`, 'run', '/bin/true'], { cwd: repoDir })
      const execs = readFileSync(log, 'utf8').split('\n').filter((line) => / execve\(.* = 0$/.test(line)).map((line) => ({ t: Number(line.split(/\s+/)[1]) * 1000, line }))
      const parent = execs.find((e) => e.line.includes(`"steps/${step}", "run"`) && !e.line.includes('/tsx"'))
      const child = execs.find((e) => e.line.includes('"child", "{'))
      const command = execs.find((e) => /execve\("[^"]*\/true"/.test(e.line))
      if (parent && child && command) {
        samples.get(step)!.parentMs.push(child.t - parent.t)
        samples.get(step)!.childMs.push(command.t - child.t)
      }
    }
  }
  rmSync(log, { force: true })
  return new Map([...samples].map(([step, s]) => [step, { parentMs: median(s.parentMs), childMs: median(s.childMs) }]))
}

// A step-08 container that sleeps until told to stop (SIGTERM, which its PID 1 traps).
async function startBridgeHolder(): Promise<{ name: string; stop: () => Promise<void> }> {
  const marker = `cfs-bench-${process.pid}` // $0 of the shell: a word of the step's argv, to find it by; and its --name
  const child = spawn(tsx, ['steps/08-net', 'run', '--name', marker, 'sh', '-c', 'trap "exit 0" TERM; echo up; sleep 600 & wait', marker], { cwd: repoDir, stdio: ['ignore', 'pipe', 'inherit'] })
  const ended = new Promise<void>((resolve) => child.on('close', () => resolve()))
  await new Promise<void>((resolve) => child.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('up') && resolve()))
  return {
    name: marker,
    stop: async () => {
      const step = findStepProcess('08-net', marker)
      if (step) process.kill(step, 'SIGTERM')
      await ended
    },
  }
}

// Other tools doing the same, where they can run here.
const others: { tool: string; ms?: number; skipped?: string }[] = []
others.push({ tool: 'unshare --uts --pid --mount --ipc --net --fork --mount-proc chroot IMAGE /bin/true', ...timeOrSkip('unshare', ['--uts', '--pid', '--mount', '--ipc', '--net', '--fork', '--mount-proc', 'chroot', image, '/bin/true']) })
for (const runtime of ['runc', 'crun']) others.push({ tool: `${runtime} run`, ...ociRuntime(runtime) })

function timeOrSkip(command: string, args: string[]): { ms?: number; skipped?: string } {
  const probe = spawnSync(command, args, { encoding: 'utf8' })
  if (probe.error || probe.status !== 0) return { skipped: (probe.error?.message ?? probe.stderr.trim().split('\n').at(-1) ?? `exit ${probe.status}`).slice(0, 120) }
  return { ms: time(command, args).ms }
}

// An OCI bundle over the same image, for runc and crun (cgroup named with our prefix).
function ociRuntime(runtime: string): { ms?: number; skipped?: string } {
  if (spawnSync('which', [runtime]).status !== 0) return { skipped: 'not installed' }
  const bundle = mkdtempSync(join(tmpdir(), `cfs-bench-${runtime}-`))
  try {
    execFileSync(runtime, ['spec'], { cwd: bundle })
    const spec = JSON.parse(execFileSync('cat', [join(bundle, 'config.json')], { encoding: 'utf8' }))
    spec.process.args = ['/bin/true']
    spec.process.terminal = false
    spec.root = { path: image, readonly: true }
    spec.linux.cgroupsPath = `/cfs-bench-${runtime}`
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec))
    const id = `cfs-bench-${runtime}-${process.pid}`
    return timeOrSkip(runtime, ['run', '--bundle', bundle, id])
  } finally {
    rmSync(bundle, { recursive: true, force: true })
  }
}

// Overlay vs copy, small image vs large: start time and disk per container.
const large = join(mkdtempSync(join(tmpdir(), 'cfs-bench-image-')), 'rootfs')
cpSync(image, large, { recursive: true, verbatimSymlinks: true })
mkdirSync(join(large, 'usr/share/big'), { recursive: true })
for (let i = 0; i < 4; i++) execFileSync('dd', ['if=/dev/urandom', `of=${join(large, `usr/share/big/blob${i}`)}`, 'bs=1M', 'count=50', 'status=none'])
const du = (path: string) => Number(execFileSync('du', ['-sk', path], { encoding: 'utf8' }).split('\t')[0])
const images = [['small', image], ['large', large]]
const overlayStarts = measure(images.map(([name, rootfs]) => ({ name, command: tsx, args: ['steps/07-overlay', 'run', '--image', rootfs, '/bin/true'] })))
const overlayRows = images.map(([name, rootfs]) => {
  const start = overlayStarts.get(name)!.ms
  const kept = spawnSync(tsx, ['steps/07-overlay', 'run', '--keep', '--image', rootfs, 'sh', '-c', 'echo $HOSTNAME > /etc/hostname'], { cwd: repoDir, encoding: 'utf8' })
  const dir = /kept the container's changes in (\S+)\/upper/.exec(kept.stderr)?.[1]
  const perContainerKiB = dir ? du(dir) : NaN
  if (dir) rmSync(dir, { recursive: true, force: true })
  const copy = join(tmpdir(), `cfs-bench-copy-${process.pid}`)
  const copyMs = time('cp', ['-a', rootfs, copy], { before: () => rmSync(copy, { recursive: true, force: true }) }).ms
  const copyKiB = du(copy)
  rmSync(copy, { recursive: true, force: true })
  return { image: name, imageKiB: du(rootfs), overlayStartMs: start, overlayPerContainerKiB: perContainerKiB, copyMs, copyPerContainerKiB: copyKiB }
})
rmSync(join(large, '..'), { recursive: true, force: true })

// Layers: the image as 1 layer, and as 10 (the same plus 9 of one file
// each), in a store of the bench's own (CFS_HOME), by image.json's contract
// (shared/layers.ts): what stacking more lowerdirs costs a start.
const layerHome = mkdtempSync(join(tmpdir(), 'cfs-bench-layers-'))
const layerIds = Array.from({ length: 10 }, (_, i) => createHash('sha256').update(`cfs-bench-layer-${i}`).digest('hex'))
cpSync(image, join(layerHome, 'layers', layerIds[0]), { recursive: true, verbatimSymlinks: true })
for (const [i, hex] of layerIds.entries()) {
  if (i > 0) {
    mkdirSync(join(layerHome, 'layers', hex), { recursive: true })
    writeFileSync(join(layerHome, 'layers', hex, `layer-${i}`), `${i}\n`)
  }
}
for (const [name, count] of [['one', 1], ['ten', 10]] as const) {
  mkdirSync(join(layerHome, 'images', name), { recursive: true })
  writeFileSync(join(layerHome, 'images', name, 'image.json'), JSON.stringify({ name, source: 'bench', created: new Date().toISOString(), layers: layerIds.slice(0, count).map((hex) => `sha256:${hex}`), config: {} }))
}
const layerStarts = measure([1, 10].map((count) => ({ name: `${count}`, command: tsx, args: ['steps/07-overlay', 'run', '--image', count === 1 ? 'one' : 'ten', '/bin/true'], env: { CFS_HOME: layerHome } })))
const layerRows = [1, 10].map((count) => ({ layers: count, ms: layerStarts.get(`${count}`)!.ms, ok: layerStarts.get(`${count}`)!.ok }))
rmSync(layerHome, { recursive: true, force: true })

// Report.
const f = (ms: number) => `${ms.toFixed(0)} ms`
console.log(chalk.bold(`\nContainer start, median of ${runs} runs, taken in rounds (${cpus().length} × ${cpus()[0]?.model.trim()}, Linux ${release()}, cgroups ${cgroupLayout()})\n`))
console.log(`floor: tsx empty.ts + node -e 0 = ${f(floor)}   (tsx empty.ts ${f(tsxEmpty)}, node -e 0 ${f(bareNode)})\n`)
console.log(`${'step'.padEnd(21)}   total   ×floor${strace ? '  parent → child  child → command' : ''}`)
for (const r of [...stepRows, bridgeUpRow, ...rootlessRows, execRow]) {
  const ratio = r.ratio <= 1.3 ? chalk.green(`${r.ratio.toFixed(2)}×`) : chalk.red(`${r.ratio.toFixed(2)}×`)
  const traced = r.childMs === undefined ? '' : `${f(r.parentMs!).padStart(14)}  ${f(r.childMs).padStart(15)}`
  console.log(`${r.step.padEnd(21)} ${f(r.ms).padStart(7)}   ${ratio.padEnd(14)}${traced}${r.ok ? '' : chalk.red('  (failed)')}`)
}
console.log(strace
  ? chalk.dim(`from strace's execve times: the step's node process until it execs the child, and the child (its own Node start, ${f(bareNode)} for node -e 0, then its set-up and its wait for the parent) until it execs the command`)
  : chalk.dim('install strace for where the time goes: the parent until it starts the child, the child until it execs the command'))
console.log('\nothers')
for (const o of others) console.log(`  ${o.tool}: ${o.ms !== undefined ? f(o.ms) : chalk.dim(`skipped (${o.skipped})`)}`)
console.log('\noverlay vs copy (step 07)')
for (const o of overlayRows) {
  console.log(`  ${o.image} image (${(o.imageKiB / 1024).toFixed(1)} MiB): overlay start ${f(o.overlayStartMs)}, ${o.overlayPerContainerKiB} KiB per container; copy ${f(o.copyMs)}, ${(o.copyPerContainerKiB / 1024).toFixed(1)} MiB per container`)
}
console.log('\nlayers (step 07, the same files as 1 layer or as 10)')
for (const l of layerRows) console.log(`  ${String(l.layers).padStart(2)} layer${l.layers === 1 ? ' ' : 's'}: ${f(l.ms)}${l.ok ? '' : chalk.red('  (failed)')}`)
const results = { date: new Date().toISOString(), runs, machine: { cpus: cpus().length, model: cpus()[0]?.model, kernel: release(), cgroups: cgroupLayout(), node: process.versions.node }, floor: { ms: floor, tsxEmptyMs: tsxEmpty, bareNodeMs: bareNode }, steps: stepRows, bridgeUp: bridgeUpRow, rootless: rootlessRows, exec: execRow, others, overlay: overlayRows, layers: layerRows }
writeFileSync(join(repoDir, 'bench', 'results.json'), JSON.stringify(results, null, 2) + '\n')
handBack(join(repoDir, 'bench', 'results.json'))
console.log(chalk.dim('\nwritten to bench/results.json'))
if (existsSync(containersDir) && readdirSync(containersDir).length) console.log(chalk.yellow(`note: ${containersDir} is not empty`))
