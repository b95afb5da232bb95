// Files the tools write for the learner (hint progress, test results, bench
// figures) must stay the learner's, also when a tool runs as root through
// sudo: a root-owned file in their checkout or home breaks the next `npm ci`
// or `--hint` they run as themselves.

import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/** The user who ran sudo, or undefined if we are not running under sudo. */
export function invokingUser(): { uid: number; gid: number; home: string } | undefined {
  const uid = Number(process.env.SUDO_UID)
  const gid = Number(process.env.SUDO_GID)
  if (process.getuid?.() !== 0 || !Number.isInteger(uid) || uid === 0 || !Number.isInteger(gid)) return undefined
  const entry = readFileSync('/etc/passwd', 'utf8').split('\n').map((line) => line.split(':')).find((fields) => Number(fields[2]) === uid)
  return { uid, gid, home: entry?.[5] ?? `/home/${process.env.SUDO_USER}` }
}

/** Give `path` (and all below it) back to the user who ran sudo; nothing if there was none. */
export function handBack(path: string): void {
  const user = invokingUser()
  if (user) spawnSync('chown', ['-R', '--no-dereference', `${user.uid}:${user.gid}`, path], { stdio: 'ignore' })
}

/**
 * The learner's own state directory for the workshop's tools, as the XDG
 * base directory spec has it: $XDG_STATE_HOME, else ~/.local/state; the
 * invoking user's, under sudo.
 */
export function userStateDir(): string {
  const user = invokingUser()
  const base = user ? join(user.home, '.local', 'state') : process.env.XDG_STATE_HOME || join(process.env.HOME ?? '/tmp', '.local', 'state')
  return join(base, 'containers-from-scratch')
}

/**
 * Under sudo, the invoking user's own state dir for containers (stateDir, as
 * they would see it: the rootless steps 09-10 keep theirs there); undefined
 * without sudo. XDG_DATA_HOME is theirs to set and sudo drops it: the default.
 */
export function invokingUserDataDir(): string | undefined {
  const user = invokingUser()
  return user && (process.env.CFS_HOME || join(user.home, '.local', 'share', 'containers-from-scratch'))
}
