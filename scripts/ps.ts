// npm run ps [-- [--all] [--format table|json]]
//
// The running containers, as `docker ps` lists them. Each step keeps a
// state file for its container while it runs (shared/state.ts): its id,
// name, step, command, PIDs and start. The rest is read live from /proc:
// the cgroup PID 1 is in, from /proc/PID/cgroup, and its addresses, from
// its network namespace's routing tables, /proc/PID/net/fib_trie; its
// published ports (-p, step 08 on), from its address lease.

import { statSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { exitOnClosedPipe, exitWithError, UsageError } from '../shared/errors.ts'
import { PREFIX, rootStateDir } from '../shared/settings.ts'
import { readStates, runDir, statusOf, type ContainerState, type Status } from '../shared/state.ts'
import { liveLeases } from '../shared/net.ts'
import { readText } from './lib/files.ts'
import { stateDirs } from './lib/containers.ts'

exitOnClosedPipe()

const usage = `Usage: npm run ps [-- [--all] [--format table|json]]

List the running containers of every step: id, --name, step, the host PID
of the container's PID 1, uptime, status, address, published ports (-p),
cgroup and command.
As root (or with sudo) root's containers and the rootless ones of the
user who ran sudo; as a user, theirs and root's.

A container's status is "running"; "parent gone" if its step was killed
(SIGKILL) and PID 1 lives on; "stopping" while its step cleans up. One
whose processes are all gone is stale: --all shows it, npm run clean
removes its state file.

  -a, --all        also stale containers
  --format FORMAT  table (the default) or json
`

/** One container, as ps shows it. */
interface Row {
  id: string
  name: string | null
  step: string
  command: string[]
  pid: number // PID 1, by the host's numbering
  parentPid: number // the step's own process
  started: string
  uptimeSeconds: number
  status: Status
  user: string // who ran it: root, or the user of a rootless step
  cgroup: string | null // relative to its hierarchy's root
  address: string | null
  ports: string[] // -p, as docker ps shows them: 8080->80/tcp
  stateFile: string
}

try {
  const { values } = parseArgs({
    options: { all: { type: 'boolean', short: 'a' }, format: { type: 'string', default: 'table' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) {
    process.stdout.write(usage)
    process.exit(0)
  }
  if (values.format !== 'table' && values.format !== 'json') throw new UsageError(`--format \`${values.format}\`: expected table or json (see --help)`)
  // Leases are root's (only root plugs a container into the bridge), whoever asks.
  const leases = liveLeases(join(rootStateDir, 'net', 'leases'))
  const rows = stateDirs()
    .flatMap((dir) => readStates(runDir(dir)).map(({ file, state }) => row(file, state, leases)))
    .filter((r) => values.all || r.status !== 'stale')
    .sort((a, b) => b.started.localeCompare(a.started)) // newest first, as docker ps
  if (values.format === 'json') console.log(JSON.stringify(rows, null, 2))
  else console.log(table(rows))
} catch (err) {
  exitWithError(err)
}

// Who ran the container: the owner of its state file (root, or the user of a rootless step), by name.
function ownerOf(file: string): string {
  let uid: number
  try {
    uid = statSync(file).uid
  } catch {
    return '?' // it ended just now
  }
  const entry = readText('/etc/passwd').split('\n').map((line) => line.split(':')).find((fields) => Number(fields[2]) === uid)
  return entry?.[0] ?? String(uid)
}

function row(file: string, state: ContainerState, leases: ReturnType<typeof liveLeases>): Row {
  const status = statusOf(state)
  const live = status === 'running' || status === 'parent gone'
  return {
    id: state.id,
    name: state.name ?? null,
    step: state.step,
    command: state.command,
    pid: state.pid1.pid,
    parentPid: state.parent.pid,
    started: state.started,
    uptimeSeconds: Math.max(0, Math.round((Date.now() - Date.parse(state.started)) / 1000)),
    status,
    user: ownerOf(file),
    cgroup: live ? cgroupOf(state.pid1.pid) : null,
    address: live ? addressOf(state.pid1.pid) : null,
    ports: live ? (leases.find((lease) => lease.id === state.id)?.publish ?? []).map((p) => `${p.hostPort}->${p.containerPort}/${p.protocol}`) : [],
    stateFile: file,
  }
}

// The cgroup PID 1 is in, relative to its hierarchy (proc(5), /proc/PID/cgroup:
// `hierarchy-id:controllers:path`, one line per hierarchy, `0::` for v2). Its
// own cfs-<id> if it has one (step 06 on), else the v2 one it was started in
// (that of whoever started the step), else the first.
function cgroupOf(pid: number): string | null {
  const entries = readText(`/proc/${pid}/cgroup`).split('\n').filter(Boolean).map((line) => {
    const [hierarchy, , ...path] = line.split(':')
    return { hierarchy, path: path.join(':') }
  })
  const own = entries.find((e) => e.path.split('/').some((part) => part.startsWith(`${PREFIX}-`)))
  return (own ?? entries.find((e) => e.hierarchy === '0') ?? entries[0])?.path ?? null
}

// PID 1's IPv4 addresses, but loopback: each `/32 host LOCAL` leaf of its
// network namespace's routing tables is one (/proc/PID/net/fib_trie, which
// shows the namespace of PID). None if they are the host's own: before step
// 08 a container has no network namespace of its own.
function addressOf(pid: number): string | null {
  const addresses = localAddresses(`/proc/${pid}/net/fib_trie`)
  if (addresses === undefined) return null
  if (addresses.join() === localAddresses('/proc/self/net/fib_trie')?.join()) return null
  return addresses.join(',') || null
}

function localAddresses(fibTrie: string): string[] | undefined {
  const text = readText(fibTrie, '\0')
  if (text === '\0') return undefined
  const found = new Set<string>()
  let last = ''
  for (const line of text.split('\n')) {
    const leaf = /\|-- (\d+\.\d+\.\d+\.\d+)$/.exec(line)
    if (leaf) last = leaf[1]
    else if (/^\s*\/32 host LOCAL/.test(line) && !last.startsWith('127.')) found.add(last)
  }
  return [...found].sort()
}

function table(rows: Row[]): string {
  const header = ['CONTAINER ID', 'NAME', 'STEP', 'PID', 'UPTIME', 'STATUS', 'ADDRESS', 'PORTS', 'CGROUP', 'COMMAND']
  const cells = rows.map((r) => [
    r.id, r.name ?? '-', r.step, String(r.pid), uptime(r.uptimeSeconds), r.status, r.address ?? '-', r.ports.join(',') || '-', r.cgroup ?? '-', shortCommand(r.command),
  ])
  const all = [header, ...cells]
  const widths = header.map((_, i) => Math.max(...all.map((line) => line[i].length)))
  return all.map((line) => line.map((cell, i) => (i === line.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n')
}

// 42s, 3m05s, 2h07m, 1d04h.
function uptime(seconds: number): string {
  const [d, h, m, s] = [Math.floor(seconds / 86400), Math.floor(seconds / 3600) % 24, Math.floor(seconds / 60) % 60, seconds % 60]
  const two = (n: number) => String(n).padStart(2, '0')
  return d ? `${d}d${two(h)}h` : h ? `${h}h${two(m)}m` : m ? `${m}m${two(s)}s` : `${s}s`
}

// The command as a shell would show it, cut at 40 characters.
function shortCommand(command: string[]): string {
  const text = command.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`)).join(' ')
  return text.length > 40 ? `${text.slice(0, 39)}…` : text
}
