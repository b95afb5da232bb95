// Test helpers: root-only tests skip with a reason, except in CI where a
// skip would hide a failure.

import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import { repoDir } from '../shared/settings.ts'
import { readResults, resultsFile, sortResults, type ClaimResult } from '../scripts/lib/results.ts'
import { tsx } from '../scripts/lib/verify.ts'

/** Skip reason for tests that need root, or false; in CI, missing root is an error. */
export function needsRoot(): string | false {
  if (process.getuid?.() === 0) return false
  if (process.env.CI === 'true') throw new Error('CI=true but not root: these tests must run as root in CI')
  return 'needs root (namespaces, mounts, cgroups): run `sudo npm test`'
}

/** Pass a tap test's skip option for root-only tests. */
export function rootOnly(): { skip: string | false } {
  return { skip: needsRoot() }
}

export type { Test }

/** How a tool run ended. */
export interface ToolResult {
  stdout: string
  stderr: string
  exitCode: number | null
}

/**
 * Run `tsx <script> <args…>` from the repository root as a learner would:
 * without tap's NODE_OPTIONS preloads (they are for test files, not for
 * what the tests run). Never throws on a non-zero exit.
 *
 * Not zx's `$`: under tap's process-info loader on Node 24, zx's named
 * exports arrive as undefined in a test file.
 */
export function runTool(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ToolResult> {
  // `env -u`: tap hooks spawn and puts its preloads back into NODE_OPTIONS.
  const child = spawn('env', ['-u', 'NODE_OPTIONS', tsx, script, ...args], {
    cwd: repoDir, env: { ...process.env, FORCE_COLOR: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => (stdout += chunk))
  child.stderr.on('data', (chunk) => (stderr += chunk))
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (exitCode) => resolve({ stdout, stderr, exitCode }))
  })
}

/**
 * runTool for a check script (a verify.ts, a homework checker, or a tool that
 * runs one): what it recorded (CFS_VERIFY_JSON, see scripts/lib/results.ts),
 * its claims and what it left to a person, besides what it printed.
 */
export async function runWithResults(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<ToolResult & { claims: ClaimResult[]; person: string[] }> {
  const results = resultsFile()
  try {
    const result = await runTool(script, args, { ...env, CFS_VERIFY_JSON: results.file })
    const { claims, person } = sortResults(readResults(results.file))
    return { ...result, claims, person }
  } finally {
    results.remove()
  }
}

/** A failed claim's details, for a tap assertion's diagnostics. */
export function detailOf(claim: ClaimResult): { ran?: string; expected?: unknown; got?: unknown } {
  return { ran: claim.ran, expected: claim.expected, got: claim.got }
}
