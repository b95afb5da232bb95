// The isolation matrix as a table: printed in the terminal (colored), and as
// the markdown table in notes/isolation-matrix.md, which is also what the
// matrix is expected to be (test/matrix.test.ts compares them cell by cell).
// Under the table, a line for each reason cells are n/a (the kernel has no
// such thing) or a column is skipped (runc is not installed).

import chalk from 'chalk'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { repoDir } from '../../shared/settings.ts'
import { PROBES, type Cell } from './probes.ts'

/** The note that holds the expected table, between these two markers. */
export const EXPECTED_FILE = join(repoDir, 'notes/isolation-matrix.md')
const BEGIN = '<!-- matrix:begin -->'
const END = '<!-- matrix:end -->'

/** Cells by probe id, then by column (a step, or runc). */
export type Cells = Record<string, Record<string, Cell>>

/** A cell as a word: isolated, leaks, n/a, skipped, or error. */
export function word(cell: Cell | undefined): string {
  if (cell === undefined) return 'missing'
  if (typeof cell === 'string') return cell
  return 'na' in cell ? 'n/a' : 'skipped' in cell ? 'skipped' : 'error'
}

/** Why an n/a or skipped cell is one (the table's footnotes), or what went wrong; '' for the others. */
export function reason(cell: Cell | undefined): string {
  if (cell === undefined || typeof cell === 'string') return ''
  return 'na' in cell ? cell.na : 'skipped' in cell ? cell.skipped : cell.error
}

/** Whether two cells say the same: the same word, and for n/a the same reason. */
export function same(a: Cell | undefined, b: Cell | undefined): boolean {
  return word(a) === word(b) && (word(a) !== 'n/a' || reason(a) === reason(b))
}

/**
 * The lines under a table that say why cells are n/a or skipped: a column
 * skipped, once; an n/a reason once a row, with the columns it holds for
 * unless it holds for every measured one.
 */
export function footnotes(cells: Cells, columns: string[]): { id: string; kind: 'n/a' | 'skipped'; at?: string[]; reason: string }[] {
  const notes: ReturnType<typeof footnotes> = []
  const skipped = columns.filter((c) => word(Object.values(cells)[0]?.[c]) === 'skipped')
  for (const column of skipped) notes.push({ id: column, kind: 'skipped', reason: reason(Object.values(cells)[0][column]) })
  const measured = columns.filter((c) => !skipped.includes(c))
  for (const probe of PROBES) {
    const na = measured.filter((c) => word(cells[probe.id]?.[c]) === 'n/a')
    for (const why of new Set(na.map((c) => reason(cells[probe.id][c])))) {
      const at = na.filter((c) => reason(cells[probe.id][c]) === why)
      notes.push({ id: probe.id, kind: 'n/a', ...(at.length < measured.length ? { at } : {}), reason: why })
    }
  }
  return notes
}

/** The table for a terminal: probes down, columns across, leaks red, isolated green; `!` marks a cell that differs from `expected`. */
export function renderTerminal(cells: Cells, columns: string[], expected?: Cells): string {
  const titleWidth = Math.max(...PROBES.map((p) => p.title.length))
  const width = Math.max(9, ...columns.map((s) => s.length)) + 1
  const lines = [`${''.padEnd(titleWidth)}  ${columns.map((s) => s.padEnd(width)).join(' ')}`]
  for (const probe of PROBES) {
    const row = columns.map((column) => {
      const cell = cells[probe.id]?.[column]
      const text = word(cell)
      const differs = expected && text !== 'skipped' && !same(expected[probe.id]?.[column], cell)
      const padded = `${text}${differs ? '!' : ''}`.padEnd(width)
      return text === 'isolated' ? chalk.green(padded) : text === 'leaks' ? chalk.red(padded) : text === 'n/a' || text === 'skipped' ? chalk.dim(padded) : chalk.yellow(padded)
    })
    lines.push(`${probe.title.padEnd(titleWidth)}  ${row.join(' ')}`)
  }
  for (const note of footnotes(cells, columns)) {
    lines.push(chalk.dim(`${note.kind.padEnd(8)} ${note.id}${note.at ? ` at ${note.at.join(', ')}` : ''}: ${note.reason}`))
  }
  return lines.join('\n')
}

/** The markdown table: a column for the probe's id, one for what it tries, one per step and runc; under it, why cells are n/a or skipped. */
export function renderMarkdown(cells: Cells, columns: string[]): string {
  const lines = [
    `| probe | what it tries | ${columns.join(' | ')} |`,
    `|---|---|${columns.map(() => ':-:').join('|')}|`,
  ]
  for (const probe of PROBES) {
    const row = columns.map((column) => (word(cells[probe.id]?.[column]) === 'leaks' ? '**leaks**' : word(cells[probe.id]?.[column])))
    lines.push(`| \`${probe.id}\` | ${probe.title.replaceAll('|', '\\|')} | ${row.join(' | ')} |`)
  }
  const notes = footnotes(cells, columns)
  if (notes.length) lines.push('', ...notes.map((n) => `- \`${n.id}\` ${n.kind}${n.at ? ` at ${n.at.join(', ')}` : ''}: ${n.reason}`))
  return lines.join('\n')
}

/** The expected cells: the table between the markers in `text` (the note's content), with the reasons under it. */
export function parseMarkdown(text: string): { columns: string[]; cells: Cells } {
  const start = text.indexOf(BEGIN)
  const end = text.indexOf(END)
  if (start < 0 || end < start) throw new Error(`no table between ${BEGIN} and ${END}`)
  const lines = text.slice(start + BEGIN.length, end).trim().split('\n').map((line) => line.trim())
  const rows = lines.filter((line) => line.startsWith('|')).map((line) =>
    line.replace(/^\||\|$/g, '').split(/(?<!\\)\|/).map((field) => field.trim()),
  )
  const notes = lines.flatMap((line) => {
    const match = /^- `([^`]+)` (n\/a|skipped)(?: at ([^:]+))?: (.*)$/.exec(line)
    return match ? [{ id: match[1], kind: match[2], at: match[3]?.split(', '), reason: match[4] }] : []
  })
  const why = (id: string, kind: string, column: string) =>
    notes.find((n) => n.kind === kind && (kind === 'skipped' ? n.id === column : n.id === id && (!n.at || n.at.includes(column))))?.reason ?? ''
  const columns = rows[0].slice(2)
  const cells: Cells = {}
  for (const row of rows.slice(2)) {
    const id = row[0].replaceAll('`', '')
    cells[id] = Object.fromEntries(columns.map((column, i) => {
      const text = row[i + 2].replaceAll('*', '')
      const cell: Cell = text === 'n/a' ? { na: why(id, 'n/a', column) } : text === 'skipped' ? { skipped: why(id, 'skipped', column) }
        : text === 'isolated' || text === 'leaks' ? text : { error: text }
      return [column, cell]
    }))
  }
  return { columns, cells }
}

/** The expected table, read from the note. */
export function readExpected(): { columns: string[]; cells: Cells } {
  return parseMarkdown(readFileSync(EXPECTED_FILE, 'utf8'))
}

/** Put a new table between the markers of the note (`npm run matrix -- --write`). */
export function writeExpected(cells: Cells, columns: string[]): void {
  const text = readFileSync(EXPECTED_FILE, 'utf8')
  const start = text.indexOf(BEGIN)
  const end = text.indexOf(END)
  if (start < 0 || end < start) throw new Error(`${EXPECTED_FILE}: no ${BEGIN} … ${END} markers`)
  writeFileSync(EXPECTED_FILE, `${text.slice(0, start + BEGIN.length)}\n${renderMarkdown(cells, columns)}\n${text.slice(end)}`)
}
