// Moved to scripts/lib/verify.ts: verify machinery is a tool, not a kernel
// area. Only bench/bench.ts still imports from here; remove this file once
// it imports from scripts/lib/verify.ts.
export { findStepProcess, tsx } from '../scripts/lib/verify.ts'
