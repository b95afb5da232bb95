// The matrix's `tiocsti` row, which needs a terminal: each step runs from
// an interactive bash in a tmux pane (the project's own tmux server, socket
// `cfs-test`), the learner's shell, and the probe inside pushes a command
// into fd 0's terminal with TIOCSTI. Where that terminal is the learner's
// (steps 01-04), the shell runs the command once the step has ended, and a
// marker file appears on the host; where the container has a pty of its
// own (05 on), the text stays in there and goes with it.

import { execFileSync } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { repoDir } from '../../shared/settings.ts'
import { onPath } from '../lib/files.ts'
import { waitFor } from '../lib/wait.ts'
import { tsx } from '../lib/verify.ts'
import type { Host } from './host.ts'

/** What one tiocsti run found: the probe's answer (ok or an errno name), and whether the host's shell ran the pushed command. */
export interface TiocstiRun {
  answer?: string
  leaked: boolean
  error?: string
}

/** Why the tiocsti row cannot be measured on this host; undefined if it can. */
export function tmuxMissing(): string | undefined {
  return onPath('tmux') ? undefined : 'tmux is not installed (apt-get install tmux)'
}

/** Run `step` in a tmux pane with the tiocsti probe; `image`: the step takes --image. */
export async function probeTiocsti(host: Host, step: string, u: string, image: boolean): Promise<TiocstiRun> {
  const session = `cfs-matrix-${u}`
  const marker = join(host.dir, `tiocsti-${u}`)
  // `env -i`: a clean environment, without a test runner's NODE_OPTIONS.
  const tmux = (...args: string[]) => execFileSync('env', [
    '-i', `PATH=${process.env.PATH}`, `HOME=${process.env.HOME}`, 'LANG=C.UTF-8', 'HISTFILE=',
    'tmux', '-L', 'cfs-test', '-f', '/dev/null', ...args,
  ], { encoding: 'utf8' })
  const type = (line: string) => {
    tmux('send-keys', '-t', session, '-l', line)
    tmux('send-keys', '-t', session, 'Enter')
  }
  const shows = (line: string, timeoutMs = 60_000) => waitFor(() => (paneLines().includes(line) ? true : undefined), timeoutMs)
  const paneLines = () => tmux('capture-pane', '-p', '-J', '-S', '-', '-t', session).split('\n').map((line) => line.trimEnd())
  try {
    tmux('new-session', '-d', '-s', session, '-x', '160', '-y', '50', '-c', repoDir, 'bash --norc --noprofile -i')
    // From 03 the probe is /cfs-probe in the image; before, found by its host path.
    const push = `touch ${marker}`
    const probe = `p=/cfs-probe; [ -x $p ] || p=${host.helper}; exec $p tiocsti '${push}'`
    const args = [...(image ? ['--image', host.rootfs] : []), 'sh', '-c', probe].map((a) => `'${a.replaceAll("'", "'\\''")}'`)
    type(`${tsx} steps/${step} run ${args.join(' ')}; echo cfsm-tiocsti-done-${u}`)
    if (!(await shows(`cfsm-tiocsti-done-${u}`))) return { leaked: false, error: `the step did not end in a minute: ${paneLines().filter(Boolean).slice(-5).join(' | ')}` }
    // Whatever was pushed is in the shell's input before this line: once
    // this line has run, so has the pushed command, if it reached the shell.
    type(`echo cfsm-tiocsti-after-${u}`)
    if (!(await shows(`cfsm-tiocsti-after-${u}`, 10_000))) return { leaked: false, error: 'the host shell did not answer after the step' }
    const answer = /^tiocsti=(\S+)$/m.exec(paneLines().join('\n'))?.[1]
    return { answer, leaked: existsSync(marker) }
  } finally {
    try {
      tmux('kill-session', '-t', session)
    } catch {}
    rmSync(marker, { force: true })
  }
}
