// Test helpers: root-only tests skip with a reason, except in CI where a
// skip would hide a failure.

import type { Test } from 'tap'

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
