// Extended attributes (xattr(7)): name=value pairs a file carries beside its
// data. overlayfs keeps its notes in them (shared/overlay.ts): `trusted.*`
// when host root mounts it, `user.*` with the overlay's userxattr option, in
// a user namespace (step 09), such as `overlay.opaque` on a directory.

import { SyscallError } from './errors.ts'
import { check, raw } from './libc.ts'

/** lsetxattr(2): set `name` on `path` itself (a symlink is not followed). */
export function lsetxattr(path: string, name: string, value: string): void {
  const bytes = Buffer.from(value)
  check('lsetxattr', raw.lsetxattr(path, name, bytes, bytes.length, 0), path, {
    EPERM: 'trusted.* attributes are for host root only; in a user namespace, user.*',
    EOPNOTSUPP: `this file system keeps no ${name.split('.')[0]}.* attributes`,
  })
}

/** lgetxattr(2): the value of `name` on `path`, or undefined if it has none (ENODATA) or cannot have one (ENOTSUP). */
export function lgetxattr(path: string, name: string): string | undefined {
  const buffer = Buffer.alloc(4096)
  try {
    return buffer.toString('utf8', 0, Number(check('lgetxattr', raw.lgetxattr(path, name, buffer, buffer.length), path)))
  } catch (err) {
    if (err instanceof SyscallError && ['ENODATA', 'ENOTSUP', 'EOPNOTSUPP'].includes(err.code)) return undefined
    throw err
  }
}
