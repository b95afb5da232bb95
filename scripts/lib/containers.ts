// The containers the tools can see: the state files in root's state dir and
// in the user's (shared/state.ts), for `npm run ps`, `exec` and `stop`.

import { statSync } from 'node:fs'
import { UsageError } from '../../shared/errors.ts'
import { rootStateDir, stateDir } from '../../shared/settings.ts'
import { readStates, runDir, statusOf, type ContainerState } from '../../shared/state.ts'
import { invokingUserDataDir } from './owner.ts'

/**
 * Whose state files to read: ours; as root under sudo also the invoking
 * user's (rootless steps 09-10), as a user also root's (steps 02-10 with sudo).
 */
export function stateDirs(): string[] {
  const other = process.getuid?.() === 0 ? invokingUserDataDir() : rootStateDir
  return [...new Set([stateDir, other ?? stateDir])]
}

/** A running container, by its id, a prefix of it that only it has, or its --name; else one line. */
export function findContainer(idOrName: string, nothing = 'there is nothing to run a command in'): { state: ContainerState; owner: number } {
  const all = stateDirs().flatMap((dir) => readStates(runDir(dir)).map(({ file, state }) => ({ file, state })))
  const byName = all.filter(({ state }) => state.name === idOrName)
  const matches = byName.length ? byName : all.filter(({ state }) => state.id.startsWith(idOrName))
  if (matches.length > 1) {
    // Names are unique per state dir: root's container and a user's rootless one may share one.
    if (byName.length) throw new UsageError(`${matches.length} containers are named \`${idOrName}\` (${matches.map(({ state }) => state.id).join(', ')}: root's and a rootless one): give its id (see npm run ps)`)
    throw new UsageError(`\`${idOrName}\` is the start of ${matches.length} container ids: give more of it (see npm run ps)`)
  }
  const [found] = matches
  if (!found) throw new UsageError(`no such container: \`${idOrName}\` (see npm run ps)`)
  const status = statusOf(found.state)
  if (status !== 'running' && status !== 'parent gone') {
    throw new UsageError(`container ${found.state.id} has ended (${status}): ${nothing}`)
  }
  let owner: number
  try {
    owner = statSync(found.file).uid
  } catch {
    throw new UsageError(`container ${found.state.id} has ended: ${nothing}`)
  }
  return { state: found.state, owner }
}
