/**
 * File attributes as the kernel sees them, made from a Styx {@link Dir}.
 *
 * @module
 */

import { type Dir, DMDIR, QTDIR } from "../styx/types.ts";
import { type Attr, entryOut } from "./proto.ts";

/** st_mode type bits of a directory. */
export const S_IFDIR = 0o040000;
/** st_mode type bits of a regular file. */
export const S_IFREG = 0o100000;

/**
 * The attributes of `d`, owned by `uid` and `gid`. The inode number is the
 * qid path (qid path 0 would hide the file from ls: it becomes another).
 *
 * @example
 * ```ts
 * import { attrOf } from "./attrs.ts";
 * import { nullDir } from "../styx/types.ts";
 * const d = { ...nullDir(), mode: 0o644, length: 1000n, qid: { type: 0, version: 0, path: 7n } };
 * console.log(attrOf(d, 0, 0).blocks); // 2n
 * ```
 */
export function attrOf(d: Dir, uid: number, gid: number): Attr {
  const isDir = (d.qid.type & QTDIR) !== 0 || (d.mode & DMDIR) !== 0;
  const size = d.length;
  return {
    ino: d.qid.path === 0n ? 0xffffffffffffn : d.qid.path,
    size,
    blocks: (size + 511n) / 512n,
    atime: d.atime,
    mtime: d.mtime,
    ctime: d.mtime,
    mode: (isDir ? S_IFDIR : S_IFREG) | (d.mode & 0o777),
    nlink: isDir ? 2 : 1,
    uid,
    gid,
    blksize: 128 * 1024,
  };
}

/** A lookup's answer "no such name", which the kernel may remember for `ms`. */
export function negativeEntry(ms: number): Uint8Array {
  const a: Attr = {
    ino: 0n,
    size: 0n,
    blocks: 0n,
    atime: 0,
    mtime: 0,
    ctime: 0,
    mode: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    blksize: 0,
  };
  return entryOut(0n, a, { entryMs: Math.max(0, ms), attrMs: 0 });
}
