// shared/terminal.ts's building blocks, on the host's own devpts (no root
// needed): a pty's two ends talk, its window size is one for both ends, an
// fd sent over a unix socket arrives as the same open file, and a receiver
// whose peer closes without sending is told so. The whole of it, inside
// containers and through a terminal, is test/interactive.test.ts's.

import t from 'tap'
import { closeSync, fstatSync, readSync, writeSync } from 'node:fs'
import { close, copyWindowSize, ioctl, isatty, openpty, receiveFd, sendFd, socketpair, TIOCGWINSZ, TIOCSWINSZ } from '../shared/terminal.ts'

t.test('openpty: what the slave writes, the master reads', async (t) => {
  const { master, slave } = openpty('/dev/ptmx')
  t.teardown(() => [master, slave].forEach((fd) => closeSync(fd)))
  t.ok(isatty(master) && isatty(slave), 'both ends are terminals')
  writeSync(slave, 'hi\n')
  const buffer = Buffer.alloc(16)
  const n = readSync(master, buffer)
  // ONLCR, on by default: the line discipline turns "\n" into "\r\n".
  t.equal(buffer.toString('utf8', 0, n), 'hi\r\n', 'the master reads what the slave wrote, through the line discipline')
})

t.test('copyWindowSize: a size set on the master is the slave\'s', async (t) => {
  const { master, slave } = openpty()
  const other = openpty()
  t.teardown(() => [master, slave, other.master, other.slave].forEach((fd) => closeSync(fd)))
  const size = Buffer.alloc(8)
  size.writeUInt16LE(33, 0) // rows
  size.writeUInt16LE(99, 2) // columns
  ioctl(master, TIOCSWINSZ, size)
  copyWindowSize(slave, other.master)
  const got = Buffer.alloc(8)
  ioctl(other.slave, TIOCGWINSZ, got)
  t.same([got.readUInt16LE(0), got.readUInt16LE(2)], [33, 99], 'the second pty\'s slave has the first one\'s size, 33 rows by 99 columns')
})

t.test('sendFd and receiveFd: the same open file arrives', async (t) => {
  const [a, b] = socketpair()
  const { master, slave } = openpty()
  t.teardown(() => [a, b, master, slave].forEach((fd) => closeSync(fd)))
  const received = receiveFd(b)
  sendFd(a, master)
  const fd = await received
  t.ok(fd !== undefined && fd !== master, `a new fd came (${fd}, sent ${master})`)
  if (fd === undefined) return
  t.equal(fstatSync(fd).rdev, fstatSync(master).rdev, 'it is the same device (the pty master)')
  // The same open file: what the slave writes, the received fd reads.
  writeSync(slave, 'x')
  const buffer = Buffer.alloc(4)
  t.equal(buffer.toString('utf8', 0, readSync(fd, buffer)), 'x', 'the received fd reads what the slave wrote')
  close(fd)
})

t.test('receiveFd: undefined when the other end closes without sending', async (t) => {
  const [a, b] = socketpair()
  const received = receiveFd(b)
  close(a)
  t.equal(await received, undefined, 'the receiver is told no fd came')
  close(b)
})
