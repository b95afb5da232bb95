// The UTS namespace holds the hostname (and NIS domain name).

import { check, raw } from './libc.ts'

/** sethostname(2): set the hostname of the caller's UTS namespace. */
export function sethostname(name: string): void {
  check('sethostname', raw.sethostname(name, Buffer.byteLength(name)), name)
}
