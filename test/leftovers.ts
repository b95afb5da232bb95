// What a test's runs leave on the host, as `npm run clean` would see it,
// told apart from what others on the same machine are doing meanwhile.

import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { findLeftovers, type Leftover } from '../scripts/lib/clean.ts'
import { listDir, readText } from '../scripts/lib/files.ts'
import { descendants } from '../scripts/lib/procfs.ts'
import { containersDir } from '../shared/settings.ts'

const key = (item: Leftover): string => `${item.kind}: ${item.name}`

/** The leftovers there are now, before a run (others' running containers among them). */
export function snapshotLeftovers(): Set<string> {
  return new Set(findLeftovers().map(key))
}

/** What this test process started: every PID under it, and the container ids (cfs-<id> cgroups, container dirs) they had. */
export interface Run {
  pids: Set<number>
  ids: Set<string>
  stop: () => void
}

/** Sample the process tree under this test every 100 ms while a run goes on; stop() when it is over. */
export function watchRun(): Run {
  const run: Run = { pids: new Set(), ids: new Set(), stop: () => clearInterval(timer) }
  const sample = () => {
    // Processes of ours whose parent is gone stay in the tree, with their children.
    for (const pid of descendants([process.pid, ...run.pids])) run.pids.add(pid)
    for (const pid of run.pids) {
      const id = /\/cfs-([0-9a-f]{12})$/m.exec(readText(`/proc/${pid}/cgroup`))?.[1]
      if (id) run.ids.add(id)
    }
    for (const id of listDir(containersDir)) {
      if (run.pids.has(Number(readText(join(containersDir, id, 'parent.pid'))))) run.ids.add(id)
    }
  }
  const timer = setInterval(sample, 100)
  sample()
  return run
}

// Whether a leftover is this run's: by the PID that made it (a lease), or
// its container id. Leftovers with neither (a mount in the image, a lock)
// count as ours.
function madeBy(run: Run, item: Leftover): boolean {
  if (item.kind === 'lease') return run.pids.has(Number(readText(item.name).split(' ')[1]))
  return item.id ? run.ids.has(item.id) : true
}

// What a run left behind: leftovers (as `npm run clean` sees them) that were
// not there before it, that this run made, and that no running container
// uses (or that are only kept, with --keep). Removed here, so the next test
// starts clean. Not by `npm run clean`: on a machine others use too, it
// would also take their leftovers, and the cgroup of a container of theirs
// in the instant before its child joins it.
export async function leftoversSince(before: Set<string>, run: Run): Promise<string[]> {
  const fresh = () => findLeftovers().filter((item) => !before.has(key(item)) && madeBy(run, item) && (!item.inUse || item.inUse.startsWith('kept')))
  let found = fresh()
  if (found.length) {
    await delay(1000) // a process of ours may still be on its way out
    const again = new Set(fresh().map(key))
    found = found.filter((item) => again.has(key(item)))
  }
  for (const item of found) {
    try {
      await item.remove()
    } catch {}
  }
  return found.map(key)
}
