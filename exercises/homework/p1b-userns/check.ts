// Check P1B's user namespace: the command runs as root of a user
// namespace of its own, whose maps the parent wrote; as root, container
// root is host uid and gid 100000 and the host's supplementary groups are
// gone; rootless, root inside is the user, and setgroups is denied. All
// read from the host, in /proc/<pid>/ of the running command, and from
// `id` inside.
//
// Usage: npm run homework -- p1b-userns

import { chownSync, readFileSync } from 'node:fs'
import { findProcesses } from '../../../scripts/lib/procfs.ts'
import { waitFor } from '../../../scripts/lib/wait.ts'
import { Checks } from '../../../scripts/lib/verify.ts'
import { isRunning } from '../../../shared/procfs.ts'
import { usernsForbidden } from '../../../shared/userns.ts'
import { runProgram, shownProgram, target, tempDir } from '../checks.ts'

const dir = target('p1b-userns')
const c = new Checks('Homework P1B, its user namespace: root inside, someone else outside')

/** What the host and the command itself say while the command runs. */
interface Look {
  ran: string
  inside: string // `id -u` `id -g`, then `id -G`
  uidMap: string
  gidMap: string
  setgroups: string
  uid: string // real uid as the host sees it (Uid: in /proc/<pid>/status)
  gid: string
  groups: string // supplementary groups as the host sees them
  stderr: string
}

// The command reports `id`, then waits on its stdin while the host reads its /proc/<pid>/ files.
async function look(name: string, prefix: string[]): Promise<Look> {
  const marker = `p1b-userns-${process.pid}-${name}`
  const args = ['run', 'sh', '-c', 'echo "@id $(id -u) $(id -g) / $(id -G)"; read line', marker]
  const run = runProgram(dir, args, { prefix })
  let out = ''
  run.stdout.on('data', (chunk: Buffer) => (out += chunk))
  const pid = await waitFor(() => (out.includes('@id') ? findProcesses((argv) => argv[0] === 'sh' && argv[3] === marker).find(isRunning) : undefined), 20_000)
  const read = (file: string) => {
    try {
      return pid === undefined ? '' : readFileSync(`/proc/${pid}/${file}`, 'utf8').trim().replace(/\s+/g, ' ')
    } catch {
      return ''
    }
  }
  const status = read('status')
  const field = (key: string) => new RegExp(`${key}: (\\d*)`).exec(status)?.[1] ?? ''
  const seen = { uidMap: read('uid_map'), gidMap: read('gid_map'), setgroups: read('setgroups'), uid: field('Uid'), gid: field('Gid') }
  const groups = /Groups:([\d ]*?) ?(NSpid|[A-Z]\w+):/.exec(status)?.[1].trim() ?? ''
  run.stdin.end('go\n')
  const result = await run
  return {
    ran: `${prefix.join(' ')} ${shownProgram(dir, args)}`.trim(), inside: /@id (.*)/.exec(out)?.[1].trim() ?? '', ...seen, groups, stderr: result.stderr.trim(),
  }
}

// As root, with a supplementary group of the host's (4242) that the container must not keep.
const root = await look('root', ['setpriv', '--groups', '4242'])
const gotMaps = (l: Look) => (l.uidMap ? `uid_map ${l.uidMap}, gid_map ${l.gidMap}` : `no command seen (stderr: ${l.stderr.slice(0, 300)})`)
c.ok('as root: from the host, the command\'s /proc/<pid>/uid_map and gid_map map root inside to 100000, 65536 ids', root.uidMap === '0 100000 65536' && root.gidMap === '0 100000 65536', {
  ran: `${root.ran}  # cat /proc/<pid>/uid_map /proc/<pid>/gid_map on the host`, expected: 'uid_map 0 100000 65536, gid_map 0 100000 65536', got: gotMaps(root),
})
c.ok('as root: inside, `id -u` and `id -g` are 0, and the host sees the same process as uid 100000, gid 100000', root.inside.startsWith('0 0 /') && root.uid === '100000' && root.gid === '100000', {
  ran: `${root.ran}  # id inside; Uid:, Gid: in /proc/<pid>/status on the host`, expected: 'inside 0 0, on the host 100000 100000', got: `inside ${root.inside || 'nothing'}, on the host ${root.uid || '?'} ${root.gid || '?'}`,
})
c.ok('as root: the host\'s supplementary groups are dropped (setgroups): the one it ran with, 4242, is gone', root.setgroups === 'allow' && root.groups === '' && root.inside.endsWith('/ 0'), {
  ran: `${root.ran}  # Groups: in /proc/<pid>/status on the host; id -G inside`,
  expected: 'no groups seen from the host; id -G inside: 0 (nobody\'s 65534 would be a group kept)',
  got: root.uidMap ? `on the host Groups: ${root.groups || '(none)'}, setgroups ${root.setgroups}; inside id -G: ${root.inside.split('/ ')[1] ?? '?'}` : gotMaps(root),
})

// Rootless: the same program run by a user, nobody (65534), without sudo.
const user = 65534
const forbidden = usernsForbidden()
if (forbidden) {
  c.ok('rootless: this host lets users make user namespaces', false, { expected: 'allowed', got: forbidden })
} else {
  const home = tempDir('p1b-userns-home')
  chownSync(home, user, user)
  const asUser = ['setpriv', `--reuid=${user}`, `--regid=${user}`, '--clear-groups', 'env', `HOME=${home}`, `XDG_CACHE_HOME=${home}/cache`, `CFS_HOME=${home}/state`]
  const rootless = await look('rootless', asUser)
  c.ok(`rootless (uid ${user}): from the host, uid_map and gid_map map root inside to that user, one id`, rootless.uidMap === `0 ${user} 1` && rootless.gidMap === `0 ${user} 1`, {
    ran: `${rootless.ran}  # cat /proc/<pid>/uid_map /proc/<pid>/gid_map on the host`, expected: `uid_map 0 ${user} 1, gid_map 0 ${user} 1`, got: gotMaps(rootless),
  })
  c.ok('rootless: /proc/<pid>/setgroups is `deny` (or the user could drop a group that shuts them out), and `id -u` inside is 0', rootless.setgroups === 'deny' && rootless.inside.startsWith('0 0 /'), {
    ran: `${rootless.ran}  # cat /proc/<pid>/setgroups on the host; id inside`, expected: 'deny; inside 0 0', got: `${rootless.setgroups || 'nothing'}; inside ${rootless.inside || 'nothing'}`,
  })
}

c.finish()
