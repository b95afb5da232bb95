// Rootless: run by a user, without sudo, the step keeps its images and
// containers where that user can write, ~/.local/share/containers-from-scratch
// (or under $XDG_DATA_HOME), unless CFS_HOME says otherwise. This module
// only sets CFS_HOME, and must be the step's first import: shared/settings.ts
// reads CFS_HOME once, when it is first imported.

import { homedir } from 'node:os'
import { join } from 'node:path'

if (process.getuid?.() !== 0 && !process.env.CFS_HOME) {
  process.env.CFS_HOME = join(process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'containers-from-scratch')
}
