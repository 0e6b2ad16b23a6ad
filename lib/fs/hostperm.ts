/**
 * Whose permissions a host directory tree checks. The Ferry process may run
 * as root, so the tree itself applies the host's owner, group and other bits
 * for the caller, on top of whatever the process may do:
 *
 * - a caller verified by TLS whose name is a host account acts as that
 *   account (its uid, primary group and the groups listing it); "root"
 *   passes every check, as on the host;
 * - a verified caller with no host account, and every caller under `-A`
 *   (whose name nobody checked), keeps the exporting process's rights: limit
 *   who gets in with `--allow` or a manifest's access list.
 *
 * @module
 */

import type { Caller } from "./tree.ts";
import type { HostAccount, HostUsers } from "./users.ts";
import { Ename, StyxError } from "../styx/types.ts";

/** Read permission, as in the 0o7 mode bits. */
export const AREAD = 4;
/** Write permission. */
export const AWRITE = 2;
/** Execute (search, for a directory) permission. */
export const AEXEC = 1;

/**
 * The host account `caller` is checked as, or undefined when the tree checks
 * nothing beyond the process's own rights (see the module notes).
 *
 * @example
 * ```ts
 * import { HostUsers } from "./users.ts";
 * import { accountFor } from "./hostperm.ts";
 * const u = new HostUsers("root:x:0:0::/:/bin/sh\nglenda:x:1000:100::/:/bin/sh\n", "");
 * if (accountFor(u, { user: "glenda", authenticated: true })?.uid !== 1000) throw new Error();
 * if (accountFor(u, { user: "glenda" }) !== undefined) throw new Error("-A is not checked");
 * if (accountFor(u, { user: "root", authenticated: true }) !== undefined) throw new Error();
 * ```
 */
export function accountFor(users: HostUsers, caller: Caller | undefined): HostAccount | undefined {
  if (!caller?.authenticated) return undefined;
  const a = users.account(caller.user);
  return a === undefined || a.uid === 0 ? undefined : a;
}

/** What the checks read of a file's stat. */
export interface Owned {
  /** st_mode (only the permission bits are read). */
  mode: number;
  uid: number;
  gid: number;
}

/** The access bits (AREAD|AWRITE|AEXEC) `a` has to a file with stat `st`. */
export function accessBits(a: HostAccount, st: Owned): number {
  if (st.uid === a.uid) return (st.mode >> 6) & 7;
  if (a.gids.has(st.gid)) return (st.mode >> 3) & 7;
  return st.mode & 7;
}

/** Throw "permission denied" unless `a` (when checked at all) has `bits` to `st`. */
export function need(a: HostAccount | undefined, st: Owned, bits: number): void {
  if (a && (accessBits(a, st) & bits) !== bits) throw new StyxError(Ename.perm);
}

/** Throw "permission denied" unless `a` (when checked at all) owns `st`. */
export function mustOwn(a: HostAccount | undefined, st: Owned): void {
  if (a && st.uid !== a.uid) throw new StyxError(Ename.perm);
}
