// Check P6C: build a Containerfile and check the layer (copied files, what
// RUN wrote, a whiteout for a deletion, nothing unchanged), the base image
// untouched, nothing mounted on the host, and the layer working on top of
// the base; a failing RUN fails the build, a bad instruction is refused.
//
// Usage: npm run homework -- p6c

import { createHash } from 'node:crypto'
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { $ } from 'zx'
import { readMountInfo } from '../../../shared/mounts.ts'
import { ensureImage } from '../../../shared/rootfs.ts'
import { Checks } from '../../../scripts/lib/verify.ts'
import { runProgram, shownProgram, target, tempDir } from '../checks.ts'

const dir = target('p6c-build')
const c = new Checks('Homework P6C: a tiny Containerfile, one overlay layer on top of an image')
const base = await ensureImage('busybox')
const token = `p6c-${process.pid}`
const hostsBefore = hash(join(base, 'etc/hosts'))
const topBefore = readdirSync(base).sort()

// The context: a Containerfile, a file and a directory to copy.
const context = tempDir('p6c-context')
writeFileSync(join(context, 'hello.txt'), `${token}\n`)
mkdirSync(join(context, 'app'))
writeFileSync(join(context, 'app', 'run.sh'), 'echo app\n')
writeFileSync(join(context, 'Containerfile'), [
  '# a build for the checker',
  'FROM busybox',
  'COPY hello.txt /hello.txt',
  'COPY app /opt/app',
  'RUN echo "built $(cat /hello.txt)" > /built.txt && rm /etc/hosts',
  '',
].join('\n'))
const out = join(tempDir('p6c-out'), 'layer')
const build = await runProgram(dir, [context, out])
const diff = join(out, 'diff')
const ran = shownProgram(dir, ['<context>', '<out>'])
const read = (path: string) => (existsSync(path) ? readFileSync(path, 'utf8') : 'no such file')

c.equal('the build exits 0', build.exitCode, 0, `${ran}  # ${build.stderr.trim().split('\n').at(-1) ?? ''}`)
c.equal('COPY of a file: it is in the layer', read(join(diff, 'hello.txt')), `${token}\n`, `cat <out>/diff/hello.txt`)
c.equal('COPY of a directory: it is in the layer', read(join(diff, 'opt/app/run.sh')), 'echo app\n', `cat <out>/diff/opt/app/run.sh`)
c.equal('RUN ran in the image, after the COPY: its file is in the layer', read(join(diff, 'built.txt')), `built ${token}\n`, `cat <out>/diff/built.txt`)
const whiteout = lstatSync(join(diff, 'etc/hosts'), { throwIfNoEntry: false })
c.ok('the file RUN deleted is a whiteout in the layer: a character device 0,0', whiteout?.isCharacterDevice() === true && whiteout.rdev === 0, {
  ran: 'ls -l <out>/diff/etc/hosts', expected: 'c--------- … 0, 0 … hosts', got: whiteout ? `${whiteout.isCharacterDevice() ? 'a character device' : 'not a character device'}, rdev ${whiteout.rdev}` : 'no such file',
})
const top = existsSync(diff) ? readdirSync(diff).sort() : []
c.equal('the layer holds only what changed: none of the base\'s untouched files', top, ['built.txt', 'etc', 'hello.txt', 'opt'], 'ls <out>/diff')
c.ok('the base image is unchanged', hash(join(base, 'etc/hosts')) === hostsBefore && JSON.stringify(readdirSync(base).sort()) === JSON.stringify(topBefore), {
  ran: `ls ${base}; sha256sum ${base}/etc/hosts  # before and after`, expected: 'the same', got: `top level ${readdirSync(base).join(' ')}; /etc/hosts ${hash(join(base, 'etc/hosts')) === hostsBefore ? 'same' : 'changed or gone'}`,
})
const mounted = readMountInfo().filter((m) => m.mountPoint.startsWith(out) || m.superOptions.includes(out)).map((m) => m.mountPoint)
c.equal('nothing of the build is mounted on the host', mounted, [], `grep ${out} /proc/self/mountinfo`)

// The layer on top of the base, in a throwaway mount namespace: the new image.
const image = tempDir('p6c-image')
const stack = `mount -t overlay overlay -o "lowerdir=$1/diff:$2" "$3" && chroot "$3" /bin/sh -c 'cat /built.txt; ls /opt/app; cat /etc/hosts 2>&1 || true'`
const stacked = await $({ nothrow: true, quiet: true })`unshare --mount --propagation private sh -c ${stack} sh ${out} ${base} ${image}`
c.ok('the layer on top of the base is the new image: RUN\'s file, the copied app, no /etc/hosts', stacked.stdout.startsWith(`built ${token}\nrun.sh\n`) && /no such file/i.test(stacked.stdout), {
  ran: 'unshare --mount sh -c \'mount -t overlay overlay -o lowerdir=<out>/diff:<base> <dir>; chroot <dir> …\'',
  expected: `built ${token}, run.sh, then cat: can't open '/etc/hosts': No such file or directory`,
  got: `${stacked.stdout.trim()} ${stacked.stderr.trim()}`.trim(),
})

// A failing RUN fails the build; a bad instruction is refused with one line.
for (const [what, lines, oneLine] of [['a failing RUN fails the build', ['FROM busybox', 'RUN exit 3'], false], ['an unknown instruction is refused: one line on stderr', ['FROM busybox', 'FROB x'], true]] as const) {
  const ctx = tempDir('p6c-context')
  writeFileSync(join(ctx, 'Containerfile'), `${lines.join('\n')}\n`)
  const failed = await runProgram(dir, [ctx, join(tempDir('p6c-out'), 'layer')])
  c.ok(what, failed.exitCode !== 0 && (!oneLine || failed.stderr.trim().split('\n').length === 1), {
    ran: `${ran}  # Containerfile: ${lines.join('; ')}`, expected: `a non-zero exit${oneLine ? ', one line on stderr' : ''}`, got: `exit ${failed.exitCode}: ${failed.stderr.trim()}`,
  })
}

c.finish()

function hash(path: string): string {
  return existsSync(path) ? createHash('sha256').update(readFileSync(path)).digest('hex') : 'missing'
}
