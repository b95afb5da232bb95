// Check P1B: an init as PID 1 with the shell as its child and the prompt
// set; a root that is the container's own writable copy, bind-mounted and
// pivoted into, with the host's tree gone; nothing on the host's mount
// table; the copy removed at the end. The answers: a keyword check for
// (iv), and a person for the reasoning.
//
// Usage: npm run homework -- p1b

import { existsSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { $ } from 'zx'
import { readMountInfo } from '../../../shared/mounts.ts'
import { waitFor } from '../../../scripts/lib/wait.ts'
import { ensureImage } from '../../../shared/rootfs.ts'
import { containersDir } from '../../../shared/settings.ts'
import { Checks } from '../../../scripts/lib/verify.ts'
import { answerUnder, forAPerson, readTarget, runProgram, shownProgram, target } from '../checks.ts'

const slug = 'p1b-pivot-init'
const dir = target(slug)
const c = new Checks('Homework P1B: a bind-mounted, writable root with pivot_root, and an init')

const image = await ensureImage()
const prompt = `p1b-${process.pid}> `
const args = ['run', '--prompt', prompt]
const ran = `echo '…' | ${shownProgram(dir, args)}`

// The shell reads its commands from stdin; the first half, then a pause while the host looks.
const run = runProgram(dir, args)
let out = ''
let ended = false
run.stdout.on('data', (chunk: Buffer) => (out += chunk))
void run.finally(() => (ended = true))
run.stdin.write([
  'echo "@pid $$ $PPID"',
  `echo "@init $(tr '\\0' ' ' < /proc/1/cmdline)"`,
  'echo "@root $(awk \'$5 == "/" { print $4 }\' /proc/self/mountinfo)"',
  'echo "@ready"',
  '',
].join('\n'))
const ready = (await waitFor(() => (out.includes('@ready') ? true : ended ? false : undefined), 20_000)) === true
// Each answer is a line `@tag value`, after the prompt when sh prints it on stdout.
const said = (tag: string) => out.split('\n').map((line) => line.slice(line.indexOf(`@${tag} `))).find((line) => line.startsWith(`@${tag} `))?.slice(tag.length + 2) ?? ''
const root = said('root')
const id = /\/containers\/([0-9a-f]+)\/rootfs$/.exec(root)?.[1]
const onHost = () => readMountInfo().filter((m) => id && m.mountPoint.startsWith(`${containersDir}/${id}`)).map((m) => `${m.fstype} on ${m.mountPoint}`)
const hostDuring = onHost()
run.stdin.end([
  'echo "@ls $(ls -a / | tr \'\\n\' \' \')"',
  'echo "@write $(echo written > /p1b-probe && cat /p1b-probe)"',
  'echo "@mounts $(awk \'{ print $5 }\' /proc/self/mountinfo | tr \'\\n\' \' \')"',
  'exit 3',
  '',
].join('\n'))
const result = await run

const [pid, ppid] = said('pid').split(' ')
c.ok('the shell shows your prompt (PS1, set by the init)', (result.stdout + result.stderr).includes(prompt), {
  ran, expected: `the prompt ${JSON.stringify(prompt)}`, got: ready ? (result.stdout + result.stderr).trim().slice(-300) : `no shell came up: ${result.stderr.trim()}`,
})
c.ok('the shell is not PID 1: its parent is, the init', ready && pid !== '1' && ppid === '1', {
  ran: `${ran}  # echo $$ $PPID`, expected: 'a PID other than 1, parent 1', got: said('pid') || 'nothing',
})
c.ok('…and PID 1 is the init, not a shell', ready && said('init') !== '' && !/^(\/bin\/)?(ba)?sh\b/.test(said('init')), {
  ran: `${ran}  # cat /proc/1/cmdline`, expected: 'the init program (node … child …)', got: said('init') || 'nothing',
})
const listed = said('ls').trim().split(' ').filter((name) => name !== '.' && name !== '..' && name !== 'p1b-probe').sort()
const imageTop = readdirSync(image).filter((name) => name !== 'p1b-probe').sort()
c.equal('`ls -a /` inside lists the image, and no old root', listed, imageTop, `${ran}  # ls -a /, vs ls -a ${image}`)
c.equal('the container is writable: a file written to / reads back', said('write'), 'written', `${ran}  # echo written > /p1b-probe && cat /p1b-probe`)
c.equal('…and the image does not get it: the container has its own copy', existsSync(join(image, 'p1b-probe')), false, `ls ${image}/p1b-probe`)
const mounts = said('mounts').trim().split(' ').filter(Boolean)
const foreign = mounts.filter((m) => !/^\/$|^\/(proc|dev)(\/|$)/.test(m))
c.ok('the host\'s tree is gone: the mount table inside holds only /, /proc and /dev…', mounts.length > 0 && foreign.length === 0, {
  ran: `${ran}  # mount points in /proc/self/mountinfo`, expected: '/ /proc /dev /dev/pts …, none of the host\'s', got: foreign.length ? `also ${foreign.join(' ')}` : 'no mount table',
})
c.ok('/ is a bind mount of the container\'s own directory, <state dir>/containers/<id>/rootfs, not under /tmp', id !== undefined, {
  ran: `${ran}  # the root field of the / line of /proc/self/mountinfo`, expected: `${containersDir}/<id>/rootfs`, got: root || 'nothing',
})
c.equal('the shell\'s exit code comes back: `exit 3` exits 3', result.exitCode, 3, `${ran}  # exit 3`)
c.ok('the host\'s mount table has nothing of the container, during the run and after', ready && hostDuring.length === 0 && onHost().length === 0, {
  ran: `grep ${containersDir}/<id> /proc/self/mountinfo  # on the host`, expected: 'nothing', got: [...hostDuring, ...onHost()].join(', ') || 'the container did not start',
})
c.ok('…and the container\'s copy is removed when it ends', id !== undefined && !existsSync(dirname(root)), {
  ran: `ls ${id ? dirname(root) : `${containersDir}/<id>`}`, expected: 'No such file or directory', got: id ? 'still there' : 'no container directory seen',
})

// The answers: (iv) by keywords, the rest by a person.
const answers = readTarget(slug, 'answers.md')
const space = answerUnder(answers, '(iv)')
c.ok('answers.md (iv), keyword check: two containers take twice the image (two copies)', /twice|double|2\s*[x×]|two (full )?copies|2 copies/i.test(space), {
  ran: `cat ${dir}/answers.md`, expected: 'an answer under (iv) that says twice / double / 2 × / two copies', got: space.slice(0, 200) || 'no answer under (iv)',
})
c.ok('answers.md answers (i)', answerUnder(answers, '(i)') !== '', { ran: `cat ${dir}/answers.md`, expected: 'text under (i)', got: 'no answer under (i)' })
const size = (await $({ nothrow: true, quiet: true })`du -shx ${image}`).stdout.split('\t')[0]
forAPerson(`${dir}/answers.md: (i) why no umount brings the host back, and the reasoning of (iv); for reference, the image is ${size}, so a copy per container is ${size} each`)

c.finish()
