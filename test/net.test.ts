// The child's side of step 08's network, done with ioctls (shared/net.ts):
// in a throwaway network namespace, what ip(8) then reports; and, with a
// --pids-limit smaller than Node's own thread count, steps 08-10 still set
// up eth0 (no program is started after the cgroup join), and the limit
// holds for the command.

import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { repoDir } from '../shared/settings.ts'
import { rootOnly } from './helpers.ts'

const env = { ...process.env, NODE_OPTIONS: '' } // tap's preloads are for test files

t.test('linkUp, addAddress, addDefaultRoute: what ip(8) sees afterwards', rootOnly(), async (t) => {
  // A veth pair, both ends in a new network namespace that goes when the shell ends.
  const script = 'ip link add v1 type veth peer name v2 && ip link set v2 up && "$0" --import tsx test/fixtures/net-ioctls.ts && ip -o -4 addr show && ip route show && ip -o link show'
  const out = execFileSync('unshare', ['--net', 'sh', '-c', script, process.execPath], { cwd: repoDir, encoding: 'utf8', env })
  t.match(out, /\blo\s+inet 127\.0\.0\.1\/8/, 'lo is up with 127.0.0.1/8', { out })
  t.match(out, /\bv1\s+inet 198\.51\.100\.2\/24/, 'v1 has 198.51.100.2/24', { out })
  t.match(out, /^default via 198\.51\.100\.1 dev v1/m, 'the default route goes via 198.51.100.1 on v1', { out })
  t.match(out, /^198\.51\.100\.0\/24 dev v1 .*src 198\.51\.100\.2/m, 'the subnet route came with the address', { out })
  t.match(out, /\d+: v1@v2: <[^>]*\bUP\b[^>]*>/, 'v1 is up', { out })
})

for (const step of ['08-net', '09-userns', '10-security']) {
  t.test(`steps/${step} --pids-limit 5: eth0 is set up, and the limit holds`, rootOnly(), async (t) => {
    // Six processes at once in there (the shell and five sleeps): one too many.
    const command = 'ip addr show eth0; sleep 1 & sleep 1 & sleep 1 & sleep 1 & sleep 1 & wait'
    const run = spawnSync(join(repoDir, 'node_modules/.bin/tsx'), [`steps/${step}`, 'run', '--pids-limit', '5', 'sh', '-c', command], { cwd: repoDir, env, encoding: 'utf8' })
    const ran = `npx tsx steps/${step} run --pids-limit 5 sh -c '${command}'`
    t.match(run.stdout, /inet 10\.\d+\.\d+\.\d+\/\d+/, 'eth0 has its address', { ran, stdout: run.stdout, stderr: run.stderr })
    t.match(run.stderr, /can't fork|Resource temporarily unavailable/, 'the sixth process cannot be made: pids.max is 5 for the command', { ran, stderr: run.stderr })
    t.notMatch(run.stderr, /^cfs: /m, 'the step itself said nothing', { ran, stderr: run.stderr })
  })
}
