// The isolation matrix's rows: what a process inside each step's container
// tries to do to, or see of, the host (one probe a row), the shell script
// that tries all of them in one container run (with probe.c, a static C
// helper), and how each row is judged, from what the run printed and what
// the host saw meanwhile. The targets are host.ts's; the runs, runner.ts's.

import { SHM_KEY_BASE } from '../lib/kernel-objects.ts'
import type { Host } from './host.ts'
import type { TiocstiRun } from './tty.ts'

/**
 * A cell of the matrix: the probe could not do it, it could; the kernel has
 * no such thing to try (why: n/a); the column was not measured (why:
 * skipped, runc missing); or the probe itself failed (why).
 */
export type Cell = 'isolated' | 'leaks' | { na: string } | { skipped: string } | { error: string }

/** What one container run of the probe script produced, with what the host saw meanwhile. */
export interface StepRun {
  step: string // the column: a step, or runc
  u: string // unique name part of this run: <pid>-<step number>, or <pid>-runc
  out: Record<string, string> // KEY=VALUE lines the script printed
  stdout: string
  stderr: string
  exitCode: number | null
  timedOut: boolean
  ready: boolean // the script reached the handshake
  hostnameLeaked: boolean // at the handshake, the host's hostname was the one set inside
  mountLeaked: boolean // at the handshake, the host's mount table had the tmpfs mounted inside
  killedHostSleep: boolean // the host's target sleep died of SIGTERM
  reachedListener: boolean // the host's 127.0.0.1 listener got this run's token
  reachedAnyListener: boolean // the host's 0.0.0.0 listener got this run's token
  limited: boolean // the run asked for --pids-limit and --memory (the step accepts them), or runc for the same in its config
  injected: string // at the handshake, the host bind-mounted its file in: `ok`, or why not
  ownIpcNamespace?: boolean // at the handshake, the script's IPC namespace was not the host's
  hostFileChanged: boolean // after the run, the host's file had other content or mode
  tiocsti?: TiocstiRun | { na: string } | { skipped: string } // a second run, in a terminal (tty.ts)
}

/** One probe: a row of the matrix. */
export interface Probe {
  id: string
  title: string
  judge: (run: StepRun, host: Host) => Cell
}

/** The container-level limits the exhaustion probes ask for (steps 06+), and what they try to use. */
export const LIMITS = { pids: 50, memoryMiB: 50, forks: 100, allocMiB: 200 }

/** What the host exports to every step (as a cloud token would be): the container must not see it. */
export const ENV_SECRET = `cfsm-env-secret-${process.pid}`

const value = (run: StepRun, key: string): string | undefined => run.out[key]
const missing = (run: StepRun, key: string): Cell => ({
  error: `the probe printed no ${key}= line (exit ${run.exitCode}${run.timedOut ? ', timed out' : ''}; stderr: ${run.stderr.trim().slice(-300) || 'empty'})`,
})
const flag = (run: StepRun, key: string): Cell => {
  const v = value(run, key)
  return v === undefined ? missing(run, key) : v === '1' ? 'leaks' : 'isolated'
}
const atHandshake = (run: StepRun, leaked: boolean): Cell =>
  run.ready ? (leaked ? 'leaks' : 'isolated') : { error: `the probe never reached its handshake (exit ${run.exitCode}; stderr: ${run.stderr.trim().slice(-300) || 'empty'})` }

/** The kernel's answers that mean "not allowed": no capability, no permission, a read-only mount. */
const REFUSED = ['EPERM', 'EACCES', 'EROFS']

/**
 * A call the probe made, judged by what the kernel answered (KEY=ok or an
 * errno name): it worked, leaks; refused, isolated. `absent` is the answer
 * when there is no such thing (ENOENT, ENOSYS): n/a, and why, if the host's
 * kernel has none either (Host['kernel']); if it has, the container's view
 * hid it or a seccomp filter answered: isolated. Anything else is the
 * probe's own failure.
 */
const answer = (run: StepRun, key: string, { leaks = ['ok'], refused = REFUSED, absent }: {
  leaks?: string[]
  refused?: string[]
  absent?: { answer: string; onHost: boolean; reason: string }
} = {}): Cell => {
  const v = value(run, key)
  if (v === undefined) return missing(run, key)
  if (leaks.includes(v)) return 'leaks'
  if (refused.includes(v)) return 'isolated'
  if (absent && v === absent.answer) return absent.onHost ? 'isolated' : { na: absent.reason }
  return { error: `${key}=${v}: not an answer this probe knows` }
}

/**
 * The rows: roughly in the order the steps fix them; then what the kernel
 * itself guards (capabilities, user namespace), what no step fixes yet, and
 * what this kernel may not have at all (n/a).
 */
export const PROBES: Probe[] = [
  {
    id: 'env',
    title: "read a secret from the host's environment (a token the step was started with)",
    judge: (run) => flag(run, 'env_secret'),
  },
  {
    id: 'hostname',
    title: "change the host's hostname",
    judge: (run) => atHandshake(run, run.hostnameLeaked),
  },
  {
    id: 'see-process',
    title: 'see a host process (a `sleep` in ps/proc)',
    judge: (run) => flag(run, 'see_process'),
  },
  {
    id: 'signal-process',
    title: 'kill a host process (SIGTERM to that sleep)',
    judge: (run) => (value(run, 'kill_rc') === undefined ? missing(run, 'kill_rc') : run.killedHostSleep ? 'leaks' : 'isolated'),
  },
  {
    id: 'see-mounts',
    title: "see a host-only mount in /proc/*/mountinfo",
    judge: (run) => flag(run, 'see_mount'),
  },
  {
    id: 'make-mount',
    title: 'mount a tmpfs that shows in the host\'s mount table',
    judge: (run) => atHandshake(run, run.mountLeaked),
  },
  {
    id: 'read-file',
    title: 'read a host file by its path (/tmp/…)',
    judge: (run, host) => (value(run, 'read_file') === undefined ? missing(run, 'read_file') : value(run, 'read_file') === host.secret ? 'leaks' : 'isolated'),
  },
  {
    id: 'chroot-escape',
    title: 'chroot escape (fchdir out, `..`, chroot .), then read that file',
    judge: (run, host) => (value(run, 'escape') === undefined ? missing(run, 'escape') : value(run, 'escape') === host.secret ? 'leaks' : 'isolated'),
  },
  {
    id: 'tiocsti',
    title: "push a command into the learner's terminal (TIOCSTI) for their shell to run",
    judge: (run) => {
      const r = run.tiocsti
      if (!r) return { error: 'the terminal run did not happen' }
      if ('na' in r || 'skipped' in r) return r
      if (r.error) return { error: r.error }
      if (r.leaked) return 'leaks'
      return r.answer ? 'isolated' : { error: 'the probe printed no tiocsti= line' }
    },
  },
  {
    id: 'see-disk',
    title: "see the host's disk in /dev",
    judge: (run) => flag(run, 'see_disk'),
  },
  {
    id: 'read-disk',
    title: 'mknod a host block device (a loop device) and read it',
    judge: (run, host) => (value(run, 'read_disk') === undefined ? missing(run, 'read_disk') : value(run, 'read_disk') === host.loop.token ? 'leaks' : 'isolated'),
  },
  {
    id: 'see-interfaces',
    title: "see the host's network interface (its MAC in `ip link`)",
    judge: (run, host) => (value(run, 'links') === undefined ? missing(run, 'links') : value(run, 'links')!.toLowerCase().includes(host.mac) ? 'leaks' : 'isolated'),
  },
  {
    id: 'host-loopback',
    title: 'connect to a listener on the host\'s 127.0.0.1',
    judge: (run) => (value(run, 'nc_rc') === undefined ? missing(run, 'nc_rc') : run.reachedListener ? 'leaks' : 'isolated'),
  },
  {
    id: 'host-any-address',
    title: 'connect to a host service on all addresses (0.0.0.0)',
    judge: (run) => (value(run, 'any_rc') === undefined ? missing(run, 'any_rc') : run.reachedAnyListener ? 'leaks' : 'isolated'),
  },
  {
    id: 'pids',
    title: `fork ${LIMITS.forks} processes (limit asked for: ${LIMITS.pids})`,
    judge: (run) => {
      const forked = value(run, 'forked')
      if (forked === undefined) return missing(run, 'forked')
      return Number(forked) >= LIMITS.forks ? 'leaks' : 'isolated'
    },
  },
  {
    id: 'memory',
    title: `allocate ${LIMITS.allocMiB} MiB (limit asked for: ${LIMITS.memoryMiB} MiB)`,
    judge: (run) => {
      const rc = value(run, 'alloc_rc')
      if (rc === undefined) return missing(run, 'alloc_rc')
      // OOM-killed (137) or malloc gave up: the container stayed within its limit.
      return Number(value(run, 'allocated') ?? 0) >= LIMITS.allocMiB ? 'leaks' : 'isolated'
    },
  },
  {
    id: 'ipc',
    title: 'find a System V shared memory segment of the host\'s, by its key',
    judge: (run, host) => answer(run, 'ipc', { leaks: ['found'], refused: ['ENOENT'], absent: { answer: 'ENOSYS', onHost: host.kernel.sysvipc, reason: 'this kernel has no System V IPC' } }),
  },
  {
    id: 'host-file',
    title: 'append to or chmod a root-owned host file bind-mounted in',
    judge: (run) => {
      if (value(run, 'host_file_write') === undefined) return missing(run, 'host_file_write')
      if (run.injected !== 'ok') return { error: `the host could not bind-mount its file into the container: ${run.injected || 'it never tried'}` }
      if (value(run, 'host_file_seen') !== '1') return { error: 'the host\'s file was mounted, but the container did not see its content' }
      return run.hostFileChanged ? 'leaks' : 'isolated'
    },
  },
  {
    id: 'clock',
    title: "set the host's clock (clock_adjtime by an offset of 0)",
    judge: (run) => answer(run, 'clock'),
  },
  {
    id: 'sysctl',
    title: 'write a kernel setting (printk_ratelimit_burst, its own value back)',
    judge: (run) => answer(run, 'sysctl'),
  },
  {
    id: 'proc-keys',
    title: "see a key of the host's root in /proc/keys",
    judge: (run, host) => answer(run, 'proc_keys', { leaks: ['shown'], refused: ['hidden', ...REFUSED], absent: { answer: 'ENOENT', onHost: host.kernel.keys, reason: 'this kernel has no keyrings (no /proc/keys)' } }),
  },
  {
    id: 'mount-tmpfs',
    title: 'mount a tmpfs (in its own mount table or not)',
    judge: (run) => answer(run, 'mount_tmpfs'),
  },
  {
    id: 'nested-userns',
    title: 'make a user namespace of its own (unshare(CLONE_NEWUSER))',
    // ENOSPC: user.max_user_namespaces is 0; EUSERS: 32 levels deep already.
    judge: (run) => answer(run, 'userns', { refused: [...REFUSED, 'ENOSPC', 'EUSERS'] }),
  },
  {
    id: 'keyctl',
    title: "add a key to the kernel's keyrings (add_key)",
    judge: (run, host) => answer(run, 'keyctl', { refused: [...REFUSED, 'EDQUOT'], absent: { answer: 'ENOSYS', onHost: host.kernel.keys, reason: 'this kernel has no keyrings (no /proc/keys)' } }),
  },
  {
    id: 'raw-socket',
    title: 'open a raw socket (AF_INET, SOCK_RAW, ICMP)',
    judge: (run) => answer(run, 'raw_socket'),
  },
  {
    id: 'chown',
    title: 'chown a file of its own to uid 1234',
    judge: (run) => answer(run, 'chown'),
  },
  {
    id: 'ptrace',
    title: 'ptrace another process in the container (PTRACE_ATTACH)',
    judge: (run) => answer(run, 'ptrace'),
  },
  {
    id: 'kcore',
    title: "read the kernel's memory (/proc/kcore)",
    judge: (run, host) => answer(run, 'kcore', { leaks: ['read'], refused: ['empty', ...REFUSED], absent: { answer: 'ENOENT', onHost: host.kernel.kcore, reason: 'this kernel has no /proc/kcore' } }),
  },
  {
    id: 'sysrq',
    title: 'open /proc/sysrq-trigger for writing (writes nothing)',
    judge: (run, host) => answer(run, 'sysrq', { absent: { answer: 'ENOENT', onHost: host.kernel.sysrq, reason: 'this kernel has no /proc/sysrq-trigger' } }),
  },
  {
    id: 'module',
    title: 'load a kernel module (init_module, with no module)',
    // ENOEXEC: past the permission check, the kernel found the (empty) module too short.
    judge: (run, host) => answer(run, 'module', {
      leaks: ['ok', 'ENOEXEC', 'EFAULT', 'EINVAL'],
      absent: { answer: 'ENOSYS', onHost: host.kernel.modules, reason: 'modules are off: init_module returns ENOSYS' },
    }),
  },
]

/** The file in the container's root the host bind-mounts its own file onto (with -<u> after it). */
export const HOST_FILE_TARGET = 'cfsm-file'

/** What the host's file for run `u` holds: the container must see it, and must not change it. */
export function hostFileToken(u: string): string {
  return `cfsm-host-file-${u}`
}

/**
 * The probes, as the container runs them. $B is the script's directory as the
 * container sees it: `/` from step 03 on, the private image's host path before.
 * Values that must not show in any process's argv (the marker of the host's
 * sleep) are only in this file, never on a command line.
 */
export function probeScript(host: Host, u: string, targetPid: number): string {
  const { disk, loop } = host
  return `# The isolation matrix's probes (scripts/matrix/probes.ts), run ${u}.
B=$1
# hostname: the host judges it at the handshake below.
busybox hostname cfsm-h-${u} 2>/dev/null
# A mount of our own: does the host see it? Judged at the handshake.
busybox mkdir -p $B/cfsm-in-${u} && busybox mount -t tmpfs -o size=16k cfsm-in-${u} $B/cfsm-in-${u}
# At the handshake the host bind-mounts a file of its own onto this one.
busybox touch $B/${HOST_FILE_TARGET}-${u}
echo CFS_MATRIX_READY
read _
busybox umount $B/cfsm-in-${u} 2>/dev/null; busybox rmdir $B/cfsm-in-${u} 2>/dev/null
# A /proc: the container's, or a fresh one (root may mount proc when there is none).
P=/proc
if [ ! -e /proc/self/mountinfo ]; then
  busybox mkdir -p $B/cfsm-proc-${u} && busybox mount -t proc proc $B/cfsm-proc-${u} && P=$B/cfsm-proc-${u}
fi
all=$(busybox cat $P/[0-9]*/cmdline 2>/dev/null | busybox tr '\\0' ' ')
case "$all" in *"${host.seeMarker}"*) echo see_process=1 ;; *) echo see_process=0 ;; esac
mi=$(busybox cat $P/self/mountinfo $P/1/mountinfo 2>/dev/null)
case "$mi" in *" ${host.hostMountSource} "*) echo see_mount=1 ;; *) echo see_mount=0 ;; esac
busybox kill -TERM ${targetPid} 2>/dev/null; echo kill_rc=$?
echo "read_file=$(busybox cat ${host.secretFile} 2>/dev/null)"
case "$(busybox env)" in *"${ENV_SECRET}"*) echo env_secret=1 ;; *) echo env_secret=0 ;; esac
$B/cfs-probe escape $B cfsm-jail-${u} ${host.secretFile}
[ -b /dev/${disk} ] && echo see_disk=1 || echo see_disk=0
if busybox mknod $B/cfsm-blk-${u} b ${loop.major} ${loop.minor} 2>/dev/null; then
  echo "read_disk=$(busybox head -n 1 $B/cfsm-blk-${u} 2>/dev/null)"
  busybox rm -f $B/cfsm-blk-${u}
else
  echo read_disk=mknod-failed
fi
echo "links=$(busybox ip -o link 2>&1 | busybox tr '\\n' ' ')"
echo cfsm-tcp-${u} | busybox nc -w 3 127.0.0.1 ${host.port} >/dev/null 2>&1; echo nc_rc=$?
# A service on all of the host's addresses: by loopback, or else by the default gateway (step 08: the bridge).
echo cfsm-any-${u} | busybox nc -w 3 127.0.0.1 ${host.anyPort} >/dev/null 2>&1; any_rc=$?
gw=$(busybox ip route 2>/dev/null | busybox awk '/^default/ { print $3 }')
if [ $any_rc != 0 ] && [ -n "$gw" ]; then echo cfsm-any-${u} | busybox nc -w 3 $gw ${host.anyPort} >/dev/null 2>&1; any_rc=$?; fi
echo any_rc=$any_rc
# What root may do to the kernel: answers are KEY=ok or the errno name.
$B/cfs-probe host-file $B/${HOST_FILE_TARGET}-${u} ${hostFileToken(u)}
$B/cfs-probe shm ${host.shm?.key ?? SHM_KEY_BASE}
$B/cfs-probe clock
$B/cfs-probe sysctl $P/sys/kernel/printk_ratelimit_burst
$B/cfs-probe proc-keys $P ${host.key?.description ?? 'cfsm-hostkey'}
$B/cfs-probe mount-tmpfs $B/cfsm-tmpfs-${u}
$B/cfs-probe userns
$B/cfs-probe keyctl cfsm-probekey-${u}
$B/cfs-probe raw-socket
$B/cfs-probe chown $B/cfsm-chown-${u} 1234
$B/cfs-probe ptrace
$B/cfs-probe kcore $P
$B/cfs-probe sysrq $P
$B/cfs-probe module
if [ "$P" != /proc ]; then busybox umount $P; busybox rmdir $P; fi
# Last, as they may get the container killed: PIDs, then memory.
$B/cfs-probe fork ${LIMITS.forks}
$B/cfs-probe alloc ${LIMITS.allocMiB}; echo alloc_rc=$?
echo done=1
`
}
