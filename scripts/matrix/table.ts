// The isolation matrix as a table: printed in the terminal (colored), and as
// the markdown table in notes/isolation-matrix.md, which is also what the
// matrix is expected to be (test/matrix.test.ts compares them cell by cell).

import chalk from 'chalk'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { repoDir } from '../../shared/settings.ts'
import { PROBES, type Cell } from './probes.ts'

/** The note that holds the expected table, between these two markers. */
export const EXPECTED_FILE = join(repoDir, 'notes/isolation-matrix.md')
const BEGIN = '<!-- matrix:begin -->'
const END = '<!-- matrix:end -->'

/** Cells by probe id, then by step. */
export type Cells = Record<string, Record<string, Cell>>

/** A cell as a word: isolated, leaks, or error. */
export function word(cell: Cell | undefined): string {
  return cell === undefined ? 'missing' : typeof cell === 'string' ? cell : 'error'
}

/** The table for a terminal: probes down, steps across, leaks red, isolated green; `!` marks a cell that differs from `expected`. */
export function renderTerminal(cells: Cells, steps: string[], expected?: Cells): string {
  const titleWidth = Math.max(...PROBES.map((p) => p.title.length))
  const width = Math.max(9, ...steps.map((s) => s.length)) + 1
  const lines = [`${''.padEnd(titleWidth)}  ${steps.map((s) => s.padEnd(width)).join(' ')}`]
  for (const probe of PROBES) {
    const row = steps.map((step) => {
      const cell = cells[probe.id]?.[step]
      const text = word(cell)
      const differs = expected && word(expected[probe.id]?.[step]) !== text
      const padded = `${text}${differs ? '!' : ''}`.padEnd(width)
      return text === 'isolated' ? chalk.green(padded) : text === 'leaks' ? chalk.red(padded) : chalk.yellow(padded)
    })
    lines.push(`${probe.title.padEnd(titleWidth)}  ${row.join(' ')}`)
  }
  return lines.join('\n')
}

/** The markdown table: a column for the probe's id, one for what it tries, one per step. */
export function renderMarkdown(cells: Cells, steps: string[]): string {
  const lines = [
    `| probe | what it tries | ${steps.join(' | ')} |`,
    `|---|---|${steps.map(() => ':-:').join('|')}|`,
  ]
  for (const probe of PROBES) {
    const row = steps.map((step) => (word(cells[probe.id]?.[step]) === 'leaks' ? '**leaks**' : word(cells[probe.id]?.[step])))
    lines.push(`| \`${probe.id}\` | ${probe.title.replaceAll('|', '\\|')} | ${row.join(' | ')} |`)
  }
  return lines.join('\n')
}

/** The expected cells: the table between the markers in `text` (the note's content). */
export function parseMarkdown(text: string): { steps: string[]; cells: Cells } {
  const start = text.indexOf(BEGIN)
  const end = text.indexOf(END)
  if (start < 0 || end < start) throw new Error(`no table between ${BEGIN} and ${END}`)
  const rows = text.slice(start + BEGIN.length, end).trim().split('\n').map((line) =>
    line.trim().replace(/^\||\|$/g, '').split(/(?<!\\)\|/).map((field) => field.trim()),
  )
  const steps = rows[0].slice(2)
  const cells: Cells = {}
  for (const row of rows.slice(2)) {
    const id = row[0].replaceAll('`', '')
    cells[id] = Object.fromEntries(steps.map((step, i) => [step, row[i + 2].replaceAll('*', '') as Cell]))
  }
  return { steps, cells }
}

/** The expected table, read from the note. */
export function readExpected(): { steps: string[]; cells: Cells } {
  return parseMarkdown(readFileSync(EXPECTED_FILE, 'utf8'))
}

/** Put a new table between the markers of the note (`npm run matrix -- --write`). */
export function writeExpected(cells: Cells, steps: string[]): void {
  const text = readFileSync(EXPECTED_FILE, 'utf8')
  const start = text.indexOf(BEGIN)
  const end = text.indexOf(END)
  if (start < 0 || end < start) throw new Error(`${EXPECTED_FILE}: no ${BEGIN} … ${END} markers`)
  writeFileSync(EXPECTED_FILE, `${text.slice(0, start + BEGIN.length)}\n${renderMarkdown(cells, steps)}\n${text.slice(end)}`)
}
