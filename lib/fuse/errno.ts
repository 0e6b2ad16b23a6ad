/**
 * Errors of a FUSE request: the errno value a Styx error string stands for,
 * and local failures that carry their errno directly.
 *
 * @module
 */

import { Ename, errorString } from "../styx/types.ts";
import { Errno } from "./ffi.ts";

/**
 * The errno value a Styx error string stands for, matched on Plan 9's
 * wording (as 9pfuse does): "file does not exist" is ENOENT, "permission
 * denied" EACCES, "file exists" EEXIST, "directory not empty" ENOTEMPTY,
 * "is a directory" EISDIR, "not a directory" ENOTDIR; anything else EIO.
 *
 * @example
 * ```ts
 * import { errnoOf } from "./errno.ts";
 * if (errnoOf(new Error("file does not exist")) !== 2) throw new Error("wrong");
 * ```
 */
export function errnoOf(e: unknown): number {
  if (e instanceof ErrnoError) return e.errno;
  const s = errorString(e).toLowerCase();
  if (s.includes("does not exist") || s.includes("not found") || s.includes("no such")) {
    return Errno.ENOENT;
  }
  if (s.includes("permission denied") || s.includes("prohibited")) return Errno.EACCES;
  if (s.includes("not empty")) return Errno.ENOTEMPTY;
  if (s.includes("not a directory") || s.includes("walk in non-directory")) return Errno.ENOTDIR;
  if (s.includes("is a directory")) return Errno.EISDIR;
  if (s.includes("exists")) return Errno.EEXIST;
  if (s === Ename.interrupted) return Errno.EINTR;
  if (s.includes("name too long")) return Errno.ENAMETOOLONG;
  if (s.includes("illegal name")) return Errno.EINVAL;
  if (s.includes("read-only") || s.includes("read only")) return Errno.EROFS;
  if (s.includes("no space")) return Errno.ENOSPC;
  return Errno.EIO;
}

/** A local failure of a request, carrying its errno directly. */
export class ErrnoError extends Error {
  /** Fail with `errno` (a positive errno value). */
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
    this.name = "ErrnoError";
  }
}
