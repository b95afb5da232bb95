// Terminals (pty(7)): a pseudo-terminal of the container's own, from step 05
// on, as `docker run -it` gives one. A pty is a pair: the slave side is the
// terminal programs see (/dev/pts/N, with its line discipline: echo, line
// editing, Ctrl-C turned into SIGINT for the foreground process group), the
// master side is where a terminal emulator, or here the parent, reads what
// programs print and writes what the user types.
//
// Why not simply the learner's terminal: from step 05 the container has a
// devpts of its own, where the learner's /dev/pts/N does not exist (`tty`
// says "not a tty"), and a process that holds the learner's terminal can
// push keystrokes into it with ioctl(TIOCSTI), to run in the learner's shell
// once the container ends. So the child opens a pty in the container's
// devpts, makes it the command's controlling terminal and fds 0-2, and sends
// the master to the parent, which relays between it and the learner's
// terminal in raw mode. notes/05-mount-ns.md tells the story.
//
// The building blocks are exported on their own, for any program that puts
// a terminal into a container: openpty, login_tty, sendFd and receiveFd,
// relayTerminal; the steps use TerminalRelay (parent) and
// openContainerTerminal (child).

import type { ChildProcess, StdioOptions } from 'node:child_process'
import type { Readable, Writable } from 'node:stream'
import { ReadStream } from 'node:tty'
import { addressOf, check, raw } from './libc.ts'
import { SyscallError } from './errors.ts'

// ioctl(2) requests, from <asm-generic/ioctls.h> (the same on x86-64 and arm64).
export const TIOCSTI = 0x5412 // push a byte into a terminal's input
export const TIOCGWINSZ = 0x5413
export const TIOCSWINSZ = 0x5414
export const TIOCSCTTY = 0x540e
export const TIOCSPTLCK = 0x40045431 // lock or unlock a pty's slave
export const TIOCGPTPEER = 0x5441 // open a pty's slave from its master (Linux 4.13)

const AT_FDCWD = -100
const O_RDWR = 0o2
const O_NOCTTY = 0o400
const O_CLOEXEC = 0o2000000
const AF_UNIX = 1
const SOCK_STREAM = 1
const SOCK_CLOEXEC = 0o2000000
const SOL_SOCKET = 1
const SCM_RIGHTS = 1
const MSG_CMSG_CLOEXEC = 0x40000000
const SHUT_RDWR = 2

/** The fd a child finds the socket on that takes its terminal's master to the parent (after the sync pipe's 3). */
export const TERMINAL_FD = 4

/** ioctl(2), with an int argument or a pointer to a buffer. */
export function ioctl(fd: number, request: number, arg: number | Buffer = 0): number {
  const result = typeof arg === 'number' ? raw.ioctl(fd, request, 'int', arg) : raw.ioctl(fd, request, 'void *', arg)
  return check('ioctl', result as number, `fd ${fd}, request 0x${request.toString(16)}`)
}

/** close(2) */
export function close(fd: number): void {
  check('close', raw.close(fd), `fd ${fd}`)
}

/** isatty(3): is `fd` a terminal? */
export function isatty(fd: number): boolean {
  return raw.isatty(fd) === 1
}

/**
 * Does this process have a terminal to give a container? Its stdin and its
 * stdout both are one. With either a pipe or a file (`run ls > list`,
 * `$(run hostname)`, CI), pipes stay pipes: a pty would turn every "\n" of
 * the output into "\r\n".
 */
export function hasTerminal(): boolean {
  return isatty(0) && isatty(1)
}

/**
 * openpty(3), on a ptmx of our choosing: open a new pty's master through
 * `ptmx` (a path, or a name relative to `dirfd`: `ptmx` in a devpts), unlock
 * its slave, and open the slave with TIOCGPTPEER, which finds the peer from
 * the master itself, with no path to look up in a /dev/pts that might not
 * be this devpts's (pty(7), ioctl_tty(2)). Both fds close on exec.
 */
export function openpty(ptmx = '/dev/ptmx', dirfd = AT_FDCWD): { master: number; slave: number } {
  // O_NOCTTY: opening a terminal must not make it ours by chance; login_tty does that on purpose.
  const master = check('openat', raw.openat(dirfd, ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC) as number, ptmx)
  try {
    // A new slave is locked until its master says so, so no one opens it first (unlockpt(3)).
    ioctl(master, TIOCSPTLCK, Buffer.alloc(4)) // int 0: unlock
    const slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)
    return { master, slave }
  } catch (err) {
    close(master)
    throw err
  }
}

/**
 * login_tty(3): make `slave` the controlling terminal of the calling process
 * and its fds 0-2. setsid(2) first: only a session leader without a
 * controlling terminal may take one (TIOCSCTTY), and it leaves the session,
 * and so the terminal, it was in. The slave's own fd is closed.
 */
export function login_tty(slave: number): void {
  check('setsid', raw.setsid() as number, undefined, { EPERM: 'a process group leader cannot start a session' })
  // Arg 0: take it only if no other session has it as its terminal.
  ioctl(slave, TIOCSCTTY, 0)
  for (const fd of [0, 1, 2]) check('dup2', raw.dup2(slave, fd) as number, `fd ${slave} onto ${fd}`)
  if (slave > 2) close(slave)
}

/** Copy a terminal's window size (rows, columns) to another (TIOCGWINSZ, TIOCSWINSZ): the kernel sends SIGWINCH to `to`'s foreground group if it changed. */
export function copyWindowSize(from: number, to: number): void {
  const size = Buffer.alloc(8) // struct winsize: four unsigned shorts
  ioctl(from, TIOCGWINSZ, size)
  ioctl(to, TIOCSWINSZ, size)
}

/** socketpair(2): two connected unix stream sockets, both close-on-exec. */
export function socketpair(): [number, number] {
  const fds = new Int32Array(2)
  check('socketpair', raw.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) as number)
  return [fds[0], fds[1]]
}

// A struct msghdr (socket(7), cmsg(3)) for one byte of data and room for
// one fd in an SCM_RIGHTS control message, as laid out on 64-bit Linux:
// msghdr { name, namelen, iov, iovlen, control, controllen, flags }: 56 bytes;
// iovec { base, len }; cmsghdr { len, level, type } then the int: 16 + 4,
// padded to 24. The buffers are returned too: their memory must stay alive.
function message(fd?: number) {
  const data = Buffer.from('\0')
  const iov = Buffer.alloc(16)
  iov.writeBigUInt64LE(addressOf(data), 0)
  iov.writeBigUInt64LE(1n, 8)
  const control = Buffer.alloc(24)
  control.writeBigUInt64LE(20n, 0) // CMSG_LEN(sizeof(int))
  control.writeInt32LE(SOL_SOCKET, 8)
  control.writeInt32LE(SCM_RIGHTS, 12)
  control.writeInt32LE(fd ?? -1, 16)
  const msghdr = Buffer.alloc(56)
  msghdr.writeBigUInt64LE(addressOf(iov), 16)
  msghdr.writeBigUInt64LE(1n, 24)
  msghdr.writeBigUInt64LE(addressOf(control), 32)
  msghdr.writeBigUInt64LE(BigInt(control.length), 40)
  return { msghdr, data, iov, control }
}

/**
 * sendmsg(2) with SCM_RIGHTS (unix(7)): send a copy of `fd` over a unix
 * socket. The receiver gets a new fd for the same open file, as dup(2)
 * would give, even in another mount or PID namespace.
 */
export function sendFd(socket: number, fd: number): void {
  const msg = message(fd)
  check('sendmsg', Number(raw.sendmsg(socket, msg.msghdr, 0)), `fd ${socket}`)
}

/**
 * recvmsg(2): wait for an fd sent with sendFd, without blocking the event
 * loop (koffi runs the call on a thread of libuv's pool). Resolves to the
 * new fd (close-on-exec), or undefined when the other end closed without
 * sending one. Node waits for that thread before it exits: a socket whose
 * other end may stay open needs `shutdown` to let this end.
 */
export function receiveFd(socket: number): Promise<number | undefined> {
  const msg = message()
  return new Promise((resolve, reject) => {
    raw.recvmsg.async(socket, msg.msghdr, MSG_CMSG_CLOEXEC, (err: unknown, n: number | bigint) => {
      if (err) return reject(err)
      if (Number(n) < 0) return reject(new SyscallError('recvmsg', 'EIO', 5, 'the fd did not come', `fd ${socket}`))
      const got = msg.msghdr.readBigUInt64LE(40) >= 20n && msg.control.readInt32LE(12) === SCM_RIGHTS
      resolve(Number(n) > 0 && got ? msg.control.readInt32LE(16) : undefined)
    })
  })
}

/** shutdown(2) both ways: a recvmsg waiting on `socket` returns at once. */
export function shutdown(socket: number): void {
  raw.shutdown(socket, SHUT_RDWR)
}

/**
 * The parent's side of a terminal relay, as `docker run -it` and node-pty
 * do it: our terminal in raw mode (no echo, no line editing, Ctrl-C a byte
 * like any other: the pty's own line discipline does all that for the
 * programs inside), what we type written to the master, what comes out of
 * it written to our stdout, and the window size copied to the pty at the
 * start and on every SIGWINCH. The promise settles once the pty has no
 * writer left (reading the master says EIO: every slave fd is closed) and
 * its output is all written; our terminal is back as it was then, and at
 * exit whatever happens (Node's own reset of stdio at exit too). The
 * master is closed at the end.
 *
 * `stop`, if given: once it settles, the relay also ends after 100 ms
 * without output, though a slave is still open (`npm run exec`: its command
 * has ended, and a job it left in the background keeps the terminal).
 */
export function relayTerminal(master: number, stop?: Promise<unknown>): Promise<void> {
  const { stdin, stdout } = process
  const pty = new ReadStream(master) // a net.Socket on the fd: it writes too
  const rawMode = stdin.isTTY === true
  const restore = () => {
    if (rawMode) stdin.setRawMode(false)
  }
  if (rawMode) stdin.setRawMode(true)
  process.once('exit', restore)
  const resize = () => {
    if (isatty(0)) copyWindowSize(0, master)
  }
  resize()
  process.on('SIGWINCH', resize)
  const input = (chunk: Buffer) => pty.write(chunk)
  stdin.on('data', input)
  const quiet = quietAfter(stop)
  pty.on('data', (chunk: Buffer) => {
    quiet.heard()
    if (!stdout.write(chunk)) {
      pty.pause()
      stdout.once('drain', () => pty.resume())
    }
  })
  return new Promise((resolve, reject) => {
    let ended = false
    const end = (err?: Error) => {
      if (ended) return
      ended = true
      quiet.cancel()
      stdin.off('data', input)
      stdin.pause()
      process.off('SIGWINCH', resize)
      process.off('exit', restore)
      restore()
      pty.destroy()
      stdout.write('', () => (err ? reject(err) : resolve()))
    }
    // EIO: the last slave fd closed, all that was written read. The normal end.
    pty.on('error', (err: NodeJS.ErrnoException) => end(err.code === 'EIO' ? undefined : err))
    pty.on('end', () => end())
    quiet.settled.then(() => end())
  })
}

/**
 * The parent's side when only some of fds 0-2 are our terminal (`run sh >
 * out`: stdin and stderr; `echo x | run sh`: stdout and stderr): the child
 * got a pipe for each of those (TerminalRelay.stdio), and we copy between
 * them and our own, as Docker's `-i` without `-t` does. Our terminal stays
 * as it is (cooked: the kernel's line editing, Ctrl-C a SIGINT for our
 * process group). Settles once the child has exited and the outputs have
 * closed (every holder gone: from step 05 the PID namespace sees to it),
 * or, with `stop`, 100 ms without output after it (see relayTerminal).
 */
export async function relayPipes(child: ChildProcess, fds: number[], stop?: Promise<unknown>): Promise<void> {
  const input = fds.includes(0) ? (child.stdin as Writable) : undefined
  if (input) {
    input.on('error', () => {}) // EPIPE: nothing in there reads any more
    process.stdin.pipe(input)
  }
  const quiet = quietAfter(stop)
  const outputs = ([[1, process.stdout], [2, process.stderr]] as const).filter(([fd]) => fds.includes(fd)).map(([fd, to]) => {
    const from = child.stdio[fd] as Readable
    from.on('data', () => quiet.heard())
    from.pipe(to, { end: false })
    return new Promise<void>((resolve) => from.once('close', resolve))
  })
  const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await Promise.race([Promise.all([exited, ...outputs]), quiet.settled])
  quiet.cancel()
  if (input) {
    process.stdin.unpipe(input)
    process.stdin.pause() // or our pending read of the terminal keeps Node alive
    input.destroy()
  }
  for (const fd of [1, 2]) if (fds.includes(fd)) (child.stdio[fd] as Readable).destroy()
}

// Settles once `stop` has and then 100 ms pass without a call to heard(); never without a `stop`.
function quietAfter(stop?: Promise<unknown>) {
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  let done = () => {}
  const settled = new Promise<void>((resolve) => (done = resolve))
  const heard = () => {
    if (!stopped) return
    clearTimeout(timer)
    timer = setTimeout(done, 100)
  }
  const cancel = () => {
    stopped = false
    clearTimeout(timer)
  }
  stop?.then(() => {
    stopped = true
    heard()
  }, () => {})
  return { settled, heard, cancel }
}

/**
 * Parent (steps 05 on): a terminal for the container, if we have one
 * (hasTerminal). Before the child starts, a socketpair: its child end goes
 * to the child as TERMINAL_FD (stdio()), where openContainerTerminal sends
 * the master of the container's pty back; we relay from then on.
 *
 * Why SCM_RIGHTS, not pidfd_getfd(2): the child sends and goes on without
 * waiting for us, which fits step 05, where nothing else passes between
 * the two; and it needs no ptrace rights over the child, which Yama or a
 * rootless step 09 might not give. With only part of one (a redirection),
 * pipes for that part; with none at all, nothing: the child gets our
 * stdin, stdout and stderr as they are.
 */
export class TerminalRelay {
  private sockets?: [ours: number, childs: number]
  private received?: Promise<number | undefined>
  /** Which of fds 0-2 are our terminal, when we have no whole terminal to give (see the constructor). */
  private piped: number[] = []

  constructor() {
    if (!hasTerminal()) {
      // Some of 0-2 may still be our terminal (`run sh > out`): with the
      // terminal itself the command could push keystrokes into it
      // (TIOCSTI) as well as with a pty of its own; it gets pipes for
      // those instead, and we copy (relayPipes).
      this.piped = [0, 1, 2].filter(isatty)
      return
    }
    const sockets = (this.sockets = socketpair())
    this.received = receiveFd(sockets[0])
    // A child that died before sending closes its end, and receiveFd ends;
    // but if we exit before it does (an error during setup), our pending
    // recvmsg would keep Node from exiting: end it.
    process.once('exit', () => shutdown(sockets[0]))
  }

  /** Whether the child is to open a pty of the container's and send its master (openContainerTerminal). */
  get pty(): boolean {
    return this.sockets !== undefined
  }

  /**
   * The child's stdio: `base`, with a pipe for each of fds 0-2 that is our
   * terminal without a pty, or with the child's end of the socket as
   * TERMINAL_FD with one.
   */
  stdio(base: StdioOptions = 'inherit'): StdioOptions {
    if (!this.sockets && this.piped.length === 0) return base
    const list = typeof base === 'string' ? [base, base, base] : [...base]
    for (const fd of this.piped) list[fd] = 'pipe'
    if (!this.sockets) return list
    while (list.length < TERMINAL_FD) list.push('ignore')
    list[TERMINAL_FD] = this.sockets[1]
    return list
  }

  /**
   * Once the child has started: relay its pipes, or close our copy of its
   * end of the socket (so that its death ends receiveFd) and relay the pty
   * when its master comes. Settles once the container's output is all
   * written and our terminal restored, or at once if there is nothing to
   * relay. `stop`: see relayTerminal.
   */
  async relay(child: ChildProcess, stop?: Promise<unknown>): Promise<void> {
    if (!this.sockets && this.piped.length === 0) return
    surviveHangup()
    if (this.piped.length) return relayPipes(child, this.piped, stop)
    if (!this.sockets) return
    close(this.sockets[1])
    const master = await this.received
    close(this.sockets[0])
    if (master !== undefined) await relayTerminal(master, stop)
  }
}

/**
 * When the learner closes the window, the kernel hangs our terminal up: from
 * then on reads and writes of it say EIO. The container is on its way out
 * then (SIGHUP), and its clean-up must still run: what it prints goes
 * nowhere, instead of an unhandled 'error' ending this process half-way.
 */
function surviveHangup(): void {
  for (const stream of [process.stdin, process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EIO' && err.code !== 'EPIPE') throw err
    })
  }
}

/**
 * Child (steps 05 on), in the container, after its /dev is mounted: if the
 * parent relays a terminal (the same test as its: hasTerminal, on the fds
 * we got from it), open a pty in the container's devpts and make it the
 * controlling terminal and fds 0-2 of this process, and so of the command:
 * from here on nothing in the container holds the learner's terminal. The
 * window size is the learner's from the start, before the command can ask.
 * The master goes to the parent over TERMINAL_FD; both are closed here, so
 * nothing of it reaches the command.
 */
export function openContainerTerminal(ptmx = '/dev/ptmx'): void {
  if (!hasTerminal()) return
  const { master, slave } = openpty(ptmx)
  copyWindowSize(0, master)
  login_tty(slave)
  sendFd(TERMINAL_FD, master)
  close(master)
  close(TERMINAL_FD)
}
