// `run sh` through a real terminal, as a learner uses it. Each step runs in
// a detached tmux session (on the project's own tmux server, socket
// `cfs-test`) whose pane is an interactive bash: the learner's host shell.
// The shell in the container gets a prompt, Ctrl-C and job control;
// `exit 3` comes back as the step's exit code, and the host terminal is
// left as it was. From step 05 the container has a terminal of its own
// (shared/terminal.ts): `tty`, the window size and its changes, a
// full-screen program, Ctrl-C for the container's foreground group, and
// the host's terminal settings as they were, also after a SIGTERM. Without
// a terminal, pipes stay pipes.

import t, { type Test } from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { chownSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { unmountIfMounted } from '../shared/mounts.ts'
import { findProcesses } from '../scripts/lib/procfs.ts'
import { isRunning, parentPid } from '../shared/procfs.ts'
import { usernsForbidden } from '../shared/userns.ts'
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
  // For a user's pane: that user's own tmux server, so the pane's terminal is
  // theirs, as a learner's is; its socket and HOME in a directory of theirs.
  private env = Pane.env
  private user: string[] = []

  constructor(session: string, user?: { uid: number; home: string }) {
    this.session = session
    if (user) {
      this.env = ['-i', `PATH=${process.env.PATH}`, `HOME=${user.home}`, `TMUX_TMPDIR=${user.home}`, 'SHELL=/bin/bash', 'HISTFILE=', 'LANG=C.UTF-8']
      this.user = ['setpriv', `--reuid=${user.uid}`, `--regid=${user.uid}`, '--clear-groups']
    }
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

  /** Type text without pressing Enter. */
  typeOnly(text: string): void {
    this.tmux('send-keys', '-t', this.session, '-l', text)
  }

  /** Resize the window, as a learner dragging its corner does. */
  resize(columns: number, rows: number): void {
    this.tmux('resize-window', '-t', this.session, '-x', String(columns), '-y', String(rows))
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
    return execFileSync('env', [...this.env, ...this.user, 'tmux', ...Pane.options, ...args], { encoding: 'utf8' }).trim()
  }
}

for (const step of steps) {
  t.test(`steps/${step}: run sh in a terminal`, rootOnly(), async (t) => {
    const pane = new Pane(`cfs-test-${step}`)
    t.teardown(() => pane.close(step))
    await pane.until((lines) => lines.some((line) => /^bash-[\d.]+[#$]/.test(line)), 10_000) // see newPane
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

// From step 05 on: a terminal of the container's own. 09 also rootless,
// run by a user in a tmux server of their own (their terminal is theirs).
const ptySteps: { step: string; user?: number }[] = [
  { step: '05-mount-ns' }, { step: '10-security' }, { step: '09-userns', user: Number(process.env.SUDO_UID || 65534) },
]

for (const { step, user } of ptySteps) {
  const as = user === undefined ? '' : ` (rootless, uid ${user})`
  const skip = rootOnly().skip || (user !== undefined && usernsForbidden()) || false

  t.test(`steps/${step}${as}: a terminal of the container's own`, { skip }, async (t) => {
    const pane = await newPane(t, step, user)
    const before = await settings(pane)
    pane.type(`PS1="${prompt} " node_modules/.bin/tsx steps/${step} run -e PS1 sh; echo "exit=$?"; echo "after=$(stty -g)"`)
    t.ok(await pane.until((lines) => lines.some((line) => line.startsWith(prompt)), 30_000), 'a prompt appears', pane.shown())

    pane.type('tty; test -e "$(tty)" && echo tty-exists')
    const tty = await pane.until((lines) => (lines.includes('tty-exists') ? lines.find((line) => /^\/dev\/pts\/\d+$/.test(line)) : undefined))
    t.ok(tty, `\`tty\` prints a terminal of the container's devpts that exists (${tty})`, pane.shown())

    // Every fd of PID 1 (the shell) is the container's terminal: none is the host's.
    // A pipeline, not $(…): the shell would hold the pipe's read end itself meanwhile.
    pane.type('echo -n fds=; for f in /proc/1/fd/*; do readlink $f; done | sort -u | tr "\\n" " "; echo')
    const fds = (await pane.until((lines) => lines.find((line) => line.startsWith('fds=/'))))?.slice(4).trim().split(' ') ?? []
    // A pipe is the shell's own, for the pipeline above: ash may still hold one end as it forks.
    const terminals = fds.filter((fd) => !/^pipe:\[\d+\]$/.test(fd))
    t.ok(terminals.length > 0 && terminals.every((fd) => fd === tty || fd === '/dev/tty'), `the shell's fds are ${tty} and /dev/tty only, besides its pipeline's (${fds.join(', ')})`, pane.shown())

    pane.type('echo "size=$(stty size)"')
    t.ok(await pane.until((lines) => lines.includes('size=50 160')), '`stty size` is the window\'s: 50 160', pane.shown())
    pane.resize(100, 30)
    pane.type('echo "size=$(stty size)"')
    t.ok(await pane.until((lines) => lines.includes('size=30 100')), 'after the window is resized to 100x30, `stty size` says 30 100', pane.shown())

    // busybox vi draws its screen (`~` lines, its status line), and :q! ends it.
    pane.type('vi /cfs-vi-test')
    const drawn = await pane.until((lines) => lines.some((line) => line.startsWith('~')) && lines.some((line) => line.includes('/cfs-vi-test')))
    t.ok(drawn, '`vi` draws its screen', pane.shown())
    pane.type(':q!')
    pane.type('echo vi-done')
    t.ok(await pane.until((lines) => lines.includes('vi-done')), '`:q!` ends vi and the prompt is back', pane.shown())

    const seconds = `29.${process.pid}`
    pane.type(`sleep ${seconds}`)
    const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === seconds)[0])
    pane.key('C-c')
    pane.type('echo back')
    const back = sleep !== undefined && (await pane.until((lines) => lines.includes('back'), 5000))
    t.ok(back && !isRunning(sleep), `Ctrl-C during \`sleep ${seconds}\` in the shell stops it, and the prompt comes back`, pane.shown())

    pane.type('exit 3')
    t.ok(await pane.until((lines) => lines.includes('exit=3')), '`exit 3` in the container: the step exits 3', pane.shown())
    await sameSettings(t, pane, before)
  })

  t.test(`steps/${step}${as}: Ctrl-C and SIGTERM with \`sleep\` as PID 1`, { skip }, async (t) => {
    const pane = await newPane(t, step, user)
    const seconds = `28.${process.pid}`
    const before = await settings(pane)
    pane.type(`node_modules/.bin/tsx steps/${step} run sleep ${seconds}; printf '\\nexit=%s\\n' $?; echo "after=$(stty -g)"`)
    const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === seconds)[0], 30_000)
    t.ok(sleep, `\`sleep ${seconds}\` runs`, pane.shown())
    if (!sleep) return
    // Ctrl-C is a byte for the container's terminal, whose line discipline
    // makes it SIGINT for its foreground group: sleep, PID 1, without a
    // handler, so the kernel drops it. What is typed after it is echoed by
    // that same terminal: once it shows, the Ctrl-C has been dealt with.
    pane.key('C-c')
    pane.typeOnly('typed-after')
    t.ok(await pane.until((lines) => lines.some((line) => line.includes('typed-after'))), 'what is typed after Ctrl-C is echoed by the container\'s terminal', pane.shown())
    t.ok(isRunning(sleep), 'Ctrl-C does not end a `sleep` that is PID 1 (as in Docker)', pane.shown())
    // The step: sleep's parent, or (09, 10) the launcher's.
    let stepPid = parentPid(sleep)
    if (readFileSync(`/proc/${stepPid}/comm`, 'utf8').trim() === 'unshare') stepPid = parentPid(stepPid)
    process.kill(stepPid, 'SIGTERM')
    // SIGTERM is passed on, ignored as well, and SIGKILL follows: 128+9.
    t.ok(await pane.until((lines) => lines.includes('exit=137')), 'SIGTERM to the step ends it: exit 137', pane.shown())
    t.notOk(isRunning(sleep), 'the sleep is gone')
    await sameSettings(t, pane, before)
  })
}

// npm run exec from a second terminal into a container started in a first:
// the exec'd shell gets a pty of the container's own too (notes/exec.md).
t.test('npm run exec into step 10, from a second terminal: a terminal of the container\'s own', rootOnly(), async (t) => {
  const name = `cfs-exec-tty-${process.pid}`
  const first = await newPane(t, '10-security', undefined, 'run')
  first.type(`node_modules/.bin/tsx steps/10-security run --name ${name} sh`)
  t.ok(await first.until((lines) => lines.some((line) => line.startsWith('/ #')), 30_000), 'the container\'s shell is up in the first terminal', first.shown())
  const second = await newPane(t, '10-security', undefined, 'exec')
  const before = await settings(second)
  second.type(`PS1="${prompt} " node_modules/.bin/tsx scripts/exec.ts -e PS1 ${name} sh; echo "exit=$?"; echo "after=$(stty -g)"`)
  t.ok(await second.until((lines) => lines.some((line) => line.startsWith(prompt)), 30_000), 'exec\'s shell prompt appears in the second', second.shown())
  second.type('tty; test -e "$(tty)" && echo tty-exists; echo "pid=$$"')
  const tty = await second.until((lines) => (lines.includes('tty-exists') ? lines.find((line) => /^\/dev\/pts\/\d+$/.test(line)) : undefined))
  t.ok(tty, `\`tty\` prints a terminal of the container's devpts that exists (${tty})`, second.shown())
  const pid = Number(second.lines().find((line) => line.startsWith('pid='))?.slice(4))
  t.ok(pid > 1, `the exec'd shell is not PID 1 (it is ${pid})`, second.shown())
  second.resize(100, 30)
  second.type('echo "size=$(stty size)"')
  t.ok(await second.until((lines) => lines.includes('size=30 100')), 'after a resize to 100x30, `stty size` says 30 100', second.shown())
  const seconds = `27.${process.pid}`
  second.type(`sleep ${seconds}`)
  const sleep = await waitFor(() => findProcesses((argv) => argv[0] === 'sleep' && argv[1] === seconds)[0])
  second.key('C-c')
  second.type('echo back')
  t.ok(sleep !== undefined && (await second.until((lines) => lines.includes('back'), 5000)) && !isRunning(sleep), 'Ctrl-C stops a sleep in the exec\'d shell', second.shown())
  second.type('exit 4')
  t.ok(await second.until((lines) => lines.includes('exit=4')), '`exit 4`: exec exits 4', second.shown())
  await sameSettings(t, second, before)
  first.type('exit')
})

// A terminal on stdin but not on stdout (`run sh > out`): no pty, and the
// terminal itself is not handed in either (TIOCSTI works on any fd of it):
// pipes for the fds that were the terminal, copied by the step.
t.test('steps/05-mount-ns with its output redirected: pipes, not the learner\'s terminal', rootOnly(), async (t) => {
  const pane = await newPane(t, '05-mount-ns', undefined, 'redirect')
  const out = join(tmpdir(), `cfs-redirect-${process.pid}`)
  t.teardown(() => rmSync(out, { force: true }))
  pane.type(`node_modules/.bin/tsx steps/05-mount-ns run sh -c 'readlink /proc/self/fd/0; readlink /proc/self/fd/2; read line; echo "got=$line"' > ${out}; echo "exit=$?"`)
  // What is typed goes in through the pipe, line-edited by the host's terminal as before.
  await waitFor(() => findProcesses((argv) => argv[0] === 'sh' && argv[2]?.startsWith('readlink'))[0], 30_000)
  pane.type('typed-in')
  t.ok(await pane.until((lines) => lines.includes('exit=0'), 30_000), 'the step ends with 0', pane.shown())
  const lines = readFileSync(out, 'utf8').trim().split('\n')
  t.ok(lines.length === 3 && lines.slice(0, 2).every((line) => /^socket:\[\d+\]$/.test(line)), `the command's stdin and stderr are pipes (Node's: unix socketpairs), not the terminal (${lines.slice(0, 2).join(', ')})`)
  t.equal(lines[2], 'got=typed-in', 'a line typed in the terminal reaches the command')
})

// exec with a terminal ends when its command does, though the command left
// a job in the background that still holds the container's terminal.
t.test('npm run exec with a terminal: it ends with its command, a background job left or not', rootOnly(), async (t) => {
  const name = `cfs-exec-bg-${process.pid}`
  const first = await newPane(t, '05-mount-ns', undefined, 'bg-run')
  first.type(`node_modules/.bin/tsx steps/05-mount-ns run --name ${name} sh`)
  t.ok(await first.until((lines) => lines.some((line) => line.startsWith('/ #')), 30_000), 'the container\'s shell is up', first.shown())
  const second = await newPane(t, '05-mount-ns', undefined, 'bg-exec')
  const seconds = `26.${process.pid}`
  // trap '' HUP: the job outlives the terminal's hangup, as under nohup, and keeps it open.
  second.type(`node_modules/.bin/tsx scripts/exec.ts ${name} sh -c 'trap "" HUP; sleep ${seconds} & echo started-bg; exit 5'; echo "exit=$?"`)
  t.ok(await second.until((lines) => lines.includes('exit=5'), 20_000), 'exec exits 5 while the background sleep still runs', second.shown())
  const sleep = findProcesses((argv) => argv[0] === 'sleep' && argv[1] === seconds)[0]
  t.ok(sleep !== undefined && isRunning(sleep), 'the background sleep is still running in the container', second.shown())
  first.type('exit')
})

t.test('steps/05-mount-ns without a terminal: pipes stay pipes', rootOnly(), async (t) => {
  const env = { ...process.env }
  delete env.NODE_OPTIONS // tap's preloads, not a learner's
  const step = (args: string[], input: string) => spawnSync(join(repoDir, 'node_modules/.bin/tsx'), ['steps/05-mount-ns', 'run', ...args], { cwd: repoDir, env, input, encoding: 'utf8' })
  const cat = step(['cat'], 'hi\n')
  t.same([cat.stdout, cat.status], ['hi\n', 0], `\`echo hi | npx tsx steps/05-mount-ns run cat\` prints hi (stderr: ${cat.stderr.trim()})`)
  const tty = step(['tty'], '')
  t.same([tty.stdout.trim(), tty.status], ['not a tty', 1], '`npx tsx steps/05-mount-ns run tty </dev/null` says not a tty, exit 1')
})

// A pane for `step`, as root or (rootless) as `user` in a HOME of theirs; closed when the test ends.
async function newPane(t: Test, step: string, user?: number, suffix = ''): Promise<Pane> {
  const home = user === undefined ? undefined : mkdtempSync(join(tmpdir(), 'cfs-tty-'))
  if (home) chownSync(home, user!, user!)
  const pane = new Pane(`cfs-test-tty-${step}${suffix && `-${suffix}`}`, home ? { uid: user!, home } : undefined)
  t.teardown(async () => {
    await pane.close(step)
    if (home) rmSync(home, { recursive: true, force: true })
  })
  // Type only once bash shows its prompt: on a busy machine a line typed
  // before bash reads its terminal can be lost.
  await pane.until((lines) => lines.some((line) => /^bash-[\d.]+[#$]/.test(line)), 10_000)
  return pane
}

// The host shell's terminal settings (`stty -g`), read before the step
// runs: kept here, not looked up at the end, when a full-screen program may
// have cleared them from the pane's history.
async function settings(pane: Pane): Promise<string | undefined> {
  pane.type('echo "before=$(stty -g)"')
  return (await pane.until((lines) => lines.find((line) => line.startsWith('before='))))?.slice(7)
}

// The host shell's terminal settings (`stty -g`) after the step are those of before.
async function sameSettings(t: Test, pane: Pane, before: string | undefined): Promise<void> {
  const after = (await pane.until((lines) => lines.find((line) => line.startsWith('after='))))?.slice(6)
  t.ok(before !== undefined && after === before, `the host shell's \`stty -g\` is the same after the step as before (${before} / ${after})`, pane.shown())
}
