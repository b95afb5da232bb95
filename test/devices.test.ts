// The minimal /dev of steps 05-10: its nodes are 0666 whatever the umask,
// so a user other than root in the container can write /dev/null, as in
// Docker (mknod's mode goes through the umask: 0644 before the fix).

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { repoDir } from '../shared/settings.ts'
import { rootOnly } from './helpers.ts'

const env = { ...process.env, NODE_OPTIONS: '' } // tap's preloads are for test files

for (const step of ['05-mount-ns', '08-net', '10-security']) {
  t.test(`steps/${step}: /dev's nodes are 0666, and nobody can write /dev/null`, rootOnly(), async (t) => {
    const command = 'stat -c "%a %n" /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; su -s /bin/sh nobody -c "echo x > /dev/null" && echo nobody-wrote'
    const run = spawnSync(join(repoDir, 'node_modules/.bin/tsx'), [`steps/${step}`, 'run', 'sh', '-c', command], { cwd: repoDir, env, encoding: 'utf8' })
    const modes = run.stdout.split('\n').filter((line) => line.startsWith('/') || /^\d+ \//.test(line))
    t.same(modes.map((line) => line.split(' ')[0]), ['666', '666', '666', '666', '666', '666'], `every node is 0666 (${modes.join(', ')})`, { stderr: run.stderr })
    t.match(run.stdout, /^nobody-wrote$/m, 'nobody writes /dev/null inside', { stdout: run.stdout, stderr: run.stderr })
  })
}
