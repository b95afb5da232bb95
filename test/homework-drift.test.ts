// The homework builds on the steps, so its programs, as shipped
// (exercises/homework/<slug>) and as solved (exercises/solutions/<slug>),
// must do what a step does the way the step does it, not the way it once
// did. Today that is step 05's root: the image (or the container's copy of
// it) bound onto itself with MS_BIND alone, never MS_REC (a recursive bind
// carries in whatever the host has mounted inside it), and pivot_root('.',
// '.'), which stacks the old root on the new one, never a temporary
// directory to put it in (mkdtemp, .old-root-*, put_old). A pivotInto() of
// theirs is step 05's, code line for code line; one still to be written
// (TODOs only) must not ask for a temporary directory either.
//
// Step 05's -v (its `volumes` parameter and the bindVolumes() line) is
// left out of the comparison: the homework's programs take no -v.
//
// One exception, named here with its reason: a program that mounts into
// its new root before pivotInto() binds the root with MS_REC, or the bind
// would leave its own mounts behind (there is nothing of the host's in that
// root to keep out: it is the namespace's own overlay).

import t from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { repoDir } from '../shared/settings.ts'

const read = (path: string) => readFileSync(join(repoDir, path), 'utf8')

/** Problems whose root carries mounts of their own into pivotInto(), and which: they bind it with MS_BIND | MS_REC. */
const carriesOwnMounts: Record<string, string> = {
  'p5-config': 'the --mount binds, which mountExtra() makes in the new root before pivotInto()',
}

// Every program of a problem: exercises/{homework,solutions}/<slug>/index.ts.
const programs = ['exercises/homework', 'exercises/solutions'].flatMap((base) =>
  readdirSync(join(repoDir, base), { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(join(repoDir, base, entry.name, 'index.ts')))
    .map((entry) => `${base}/${entry.name}/index.ts`))

// Step 05's pivotInto(), without its -v (see above).
const step05 = pivotInto(read('steps/05-mount-ns/index.ts'))
  ?.replace('function pivotInto(rootfs: string, volumes: Volume[]): void {', 'function pivotInto(rootfs: string): void {')
  .split('\n').filter((line) => !/\bbindVolumes\(/.test(line)).join('\n')

t.ok(step05 && codeLines(step05).some((line) => line.startsWith('pivot_root(')), 'steps/05-mount-ns/index.ts has the pivotInto() the homework is compared with')
t.ok(programs.length >= 2, `found the homework's programs: ${programs.join(' ')}`)

for (const program of programs) {
  t.test(`${program} uses step 05's idioms`, async (t) => {
    const recursive = carriesOwnMounts[program.split('/')[2]]
    const bind = recursive ? `a bind of the root onto itself with MS_REC (to carry ${recursive})` : 'a bind of the root onto itself without MS_REC'
    t.same(problems(read(program), recursive !== undefined), [], `${program}: ${bind}, pivot_root('.', '.'), no temporary old root`)
  })
}

// The check itself, on the idioms it replaces: it must find each.
t.test('the check finds the old idioms', async (t) => {
  const old = `import { mkdtempSync, rmdirSync } from 'node:fs'
function pivotInto(rootfs: string): void {
  mount(rootfs, rootfs, null, MS_BIND | MS_REC)
  const oldRoot = mkdtempSync(join(rootfs, '.old-root-'))
  pivot_root(rootfs, oldRoot)
  chdir('/')
  umount2(\`/\${basename(oldRoot)}\`, MNT_DETACH)
  rmdirSync(\`/\${basename(oldRoot)}\`)
}`
  const found = problems(old).join('\n')
  t.match(found, /MS_BIND \| MS_REC\): the bind of the root onto itself is MS_BIND /, 'a recursive bind of the root onto itself')
  t.notMatch(problems(old, true).join('\n'), /the bind of the root onto itself/, '…which is right where the root carries mounts of its own')
  t.match(found, /pivot_root\(rootfs, oldRoot\)/, 'a pivot_root onto another directory')
  t.match(found, /temporary old root/, 'a temporary old-root directory')
  t.match(found, /not step 05's/, 'a pivotInto() that is not step 05\'s')
  const todo = "function pivotInto(rootfs: string): void {\n  // TODO: swap the roots, the old one onto an empty directory inside the new one.\n}"
  t.match(problems(todo).join('\n'), /asks for a directory for the old root/, 'a TODO that asks for a directory for the old root')
})

/**
 * What in a program's text is not step 05's way, one line each. With
 * `recursive` (see carriesOwnMounts), its bind of the root onto itself is
 * MS_BIND | MS_REC instead, and only that.
 */
function problems(text: string, recursive = false): string[] {
  const code = codeLines(text).join('\n')
  const found: string[] = []
  const wanted = recursive ? 'MS_BIND | MS_REC' : 'MS_BIND'
  for (const [, target, flags] of code.matchAll(/mount\(\s*([\w.]+)\s*,\s*\1\s*,\s*null\s*,\s*([^,)]*)\)/g)) {
    if (flags.includes('MS_BIND') && flags.trim() !== wanted) {
      found.push(`mount(${target}, ${target}, null, ${flags.trim()}): the bind of the root onto itself is ${wanted}${recursive ? ' (see carriesOwnMounts)' : ' (step 05: not MS_REC)'}`)
    }
  }
  for (const [call] of code.matchAll(/pivot_root\([^)]*\)/g)) {
    if (call !== "pivot_root('.', '.')") found.push(`${call}: step 05 calls pivot_root('.', '.') from inside the new root`)
  }
  for (const [word] of code.matchAll(/mkdtemp\w*|\.old-root\S*|put_?old|oldRoot/gi)) found.push(`${word}: a temporary old root (step 05 needs no directory for it)`)
  const own = pivotInto(text)
  if (own !== undefined && step05 !== undefined) {
    // Code besides the signature and the closing brace: not only TODOs.
    const lines = codeLines(own)
    const expected = codeLines(step05).map((line) => (recursive ? line.replace(/^mount\((\w+), \1, null, MS_BIND\)$/, 'mount($1, $1, null, MS_BIND | MS_REC)') : line))
    if (lines.length > 2 && lines.join('\n') !== expected.join('\n')) {
      found.push(`its pivotInto() is not step 05's${recursive ? ' (with MS_REC)' : ''}:\n  ${lines.join('\n  ')}\nstep 05:\n  ${expected.join('\n  ')}`)
    }
    for (const todo of own.split('\n').filter((line) => /^\s*\/\/ /.test(line))) {
      if (/empty directory|temporary|remove its directory|mkdtemp|old-root|put_old/i.test(todo)) found.push(`a comment (a TODO?) in its pivotInto() asks for a directory for the old root: ${todo.trim()}`)
    }
  }
  return found
}

/** The text of `function pivotInto(...) { ... }`, up to its closing brace at the start of a line; undefined if there is none. */
function pivotInto(text: string): string | undefined {
  const start = text.indexOf('function pivotInto(')
  if (start < 0) return undefined
  const end = text.indexOf('\n}', start)
  return text.slice(start, end < 0 ? undefined : end + 2)
}

/** The lines of code, trimmed, without comment lines and blank lines. */
function codeLines(text: string): string[] {
  return text.split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('//') && !line.startsWith('*') && !line.startsWith('/*'))
}
