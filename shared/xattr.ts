// Extended attributes (xattr(7)): name=value pairs a file carries beside its
// data. overlayfs keeps its notes in them (shared/overlay.ts): `trusted.*`,
// which only host root may read or write, or `user.*` with the overlay's
// userxattr option, in a user namespace (step 09).

import { check, raw } from './libc.ts'

/** lgetxattr(2): the attribute's value, or undefined if the file has none of that name (ENODATA) or cannot have one. */
export function lgetxattr(path: string, name: string): Buffer | undefined {
  const value = Buffer.alloc(256) // overlayfs's values are a few bytes ("y")
  const length = Number(raw.lgetxattr(path, name, value, value.length))
  if (length >= 0) return value.subarray(0, length)
  try {
    check('lgetxattr', length, path)
  } catch (err) {
    // ENODATA: no such attribute; ENOTSUP: none on this filesystem or file type.
    if (['ENODATA', 'ENOTSUP', 'EOPNOTSUPP'].includes((err as { code?: string }).code ?? '')) return undefined
    throw err
  }
  return undefined
}

/** lsetxattr(2): set attribute `name` of `path` (not of a symlink's target). */
export function lsetxattr(path: string, name: string, value: string): void {
  const bytes = Buffer.from(value)
  check('lsetxattr', raw.lsetxattr(path, name, bytes, bytes.length, 0), path, {
    EPERM: 'trusted.* attributes are for host root only; in a user namespace, user.*',
  })
}
