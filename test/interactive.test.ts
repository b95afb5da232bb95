// `run sh` through a real terminal, as a learner uses it. Each step runs in
// a detached tmux session (on the project's own tmux server, socket
// `cfs-test`) whose pane is an interactive bash: the learner's host shell.
// The shell in the container gets a prompt, Ctrl-C and job control;
// `exit 3` comes back as the step's exit code, and the host terminal is
// left as it was.

import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync, realpathSync } from 'node:fs'
import { join } from 'node:path'
import { unmountIfMounted } from '../shared/mounts.ts'
import { findProcesses } from '../scripts/lib/procfs.ts'
import { isRunning } from '../shared/procfs.ts'
import { waitFor } from '../scripts/lib/wait.ts'
import { ensureImage } from '../shared/rootfs.ts'
import { repoDir } from '../shared/settings.ts'
import { rootOnly } from './helpers.ts'

const steps = ['01-exec', '02-uts', '03-chroot', '04-pid-proc']
const prompt = 'cfs-prompt#'

// Declared before the tests: tap starts the first one right away.
/** A detached tmux session on the project's own tmux server, running an interactive bash. */
class Pane {
  static options = ['-L', 'cfs-test', '-f', '/dev/null']
  // `env -i`: the tmux server, and so the pane, gets a clean environment.
  // Not tap's: tap adds its preloads to NODE_OPTIONS on every spawn from Node.
  static env = ['-i', `PATH=${process.env.PATH}`, `HOME=${process.env.HOME}`, 'LANG=C.UTF-8']
  readonly pid: number
  readonly session: string

  constructor(session: string) {
    this.session = session
    this.tmux('new-session', '-d', '-s', session, '-x', '160', '-y', '50', '-c', repoDir, 'bash --norc --noprofile -i')
    this.pid = Number(this.tmux('display-message', '-p', '-t', session, '#{pane_pid}'))
  }

  /** Type a line and press Enter. */
  type(line: string): void {
    this.tmux('send-keys', '-t', this.session, '-l', line)
    this.tmux('send-keys', '-t', this.session, 'Enter')
  }

  /** Press a key, such as C-c. */
  key(name: string): void {
    this.tmux('send-keys', '-t', this.session, name)
  }

  /** The whole pane, history included, one entry per line (wrapped lines joined). */
  lines(): string[] {
    return this.tmux('capture-pane', '-p', '-J', '-S', '-', '-t', this.session).split('\n').map((line) => line.trimEnd())
  }

  /** Poll the pane until `test` returns something truthy, or `timeoutMs` passes (then undefined). */
  until<T>(test: (lines: string[]) => T, timeoutMs = 10_000): Promise<T | undefined> {
    return waitFor(() => test(this.lines()) || undefined, timeoutMs)
  }

  /** The pane's last lines, for a failed assertion's diagnostics. */
  shown(): { pane: string } {
    return { pane: this.lines().filter(Boolean).slice(-15).join('\n') }
  }

  /** End the session, then anything from it that is still running, and step 04's /proc mount. */
  async close(step: string): Promise<void> {
    this.tmux('kill-session', '-t', this.session)
    const left = () => readdirSync('/proc').filter((name) => /^\d+$/.test(name)).map(Number).filter((pid) => sessionOf(pid) === this.pid)
    await waitFor(() => (left().length ? undefined : true), 5000)
    for (const pid of left()) process.kill(pid, 'SIGKILL')
    if (step === '04-pid-proc') unmountIfMounted(join(realpathSync(await ensureImage()), 'proc'))
  }

  private tmux(...args: string[]): string {
    return execFileSync('env', [...Pane.env, 'tmux', ...Pane.options, ...args], { encoding: 'utf8' }).trim()
  }
}

for (const step of steps) {
  t.test(`steps/${step}: run sh in a terminal`, rootOnly(), async (t) => {
    const pane = new Pane(`cfs-test-${step}`)
    t.teardown(() => pane.close(step))
    // The wrapper prints the step's exit code, then the stat line of a
    // process in the wrapper's process group: field 5 is that group, field
    // 8 the terminal's foreground group.
    pane.type(`sh -c 'PS1="${prompt} " node_modules/.bin/tsx steps/${step} run -e PS1 sh; echo "exit=$?"; cat /proc/self/stat'`)

    const started = await pane.until((lines) => lines.some((line) => line.startsWith(prompt)), 30_000)
    t.ok(started, 'a prompt appears', pane.shown())

    pane.type('echo hi')
    t.ok(await pane.until((lines) => lines.includes('hi')), '`echo hi` prints hi', pane.shown())

    // If the step saw this SIGINT it would pass it on and SIGKILL the
    // container 2 s later: `sleep 3` outlasts that.
    pane.key('C-c')
    pane.type('sleep 3; echo survived')
    t.ok(await pane.until((lines) => lines.includes('survived')), 'Ctrl-C at the prompt does not end the container', pane.shown())

    pane.type('sleep 30 &')
    pane.type('jobs')
    const listed = await pane.until((lines) => lines.some((line) => /^\[1\].*Running.*sleep 30/.test(line)))
    t.ok(listed, '`sleep 30 &` then `jobs` lists the job', pane.shown())
    pane.type('kill %1') // without a PID namespace (steps 01-03) it would outlive the container

    const seconds = `29.${process.pid}`
    pane.type(`sleep ${seconds}`)
    const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === seconds)[0])
    pane.key('C-c')
    pane.type('echo back')
    const back = sleep !== undefined && (await pane.until((lines) => lines.includes('back'), 5000))
    t.ok(back && !isRunning(sleep), `Ctrl-C during \`sleep ${seconds}\` stops it and the prompt comes back`, pane.shown())

    pane.type('exit 3')
    t.ok(await pane.until((lines) => lines.includes('exit=3')), '`exit 3` in the container: the step exits 3', pane.shown())

    const stat = (await pane.until((lines) => lines.find((line) => /^\d+ \(cat\) /.test(line))))?.split(' ') ?? []
    // From step 04 the shell is PID 1 of a PID namespace and cannot see our
    // process group; the step's parent takes the terminal back (reclaimTerminal).
    t.ok(stat.length > 8 && stat[4] === stat[7], `the host's process group has the terminal again (its group ${stat[4]}, the terminal's ${stat[7]})`, pane.shown())

    pane.type('stty -a; echo stty=done')
    const stty = await pane.until((lines) => (lines.includes('stty=done') ? lines.join(' ') : undefined))
    const modes = (stty ?? '').split(/[\s;]+/)
    t.ok(modes.includes('echo') && modes.includes('icanon'), 'afterwards, `stty -a` in the host shell shows echo and icanon on', pane.shown())
  })
}

// The session a process belongs to (field 6 of /proc/PID/stat), or 0 if it is gone.
function sessionOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3])
  } catch {
    return 0
  }
}
