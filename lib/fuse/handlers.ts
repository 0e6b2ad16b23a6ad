/**
 * The opcode table of a FUSE session: for each request the kernel may
 * send, how its body is decoded (proto.ts) and which operation answers it
 * (ops.ts). An opcode missing from the table is answered ENOSYS, which
 * also tells the kernel to stop sending it.
 *
 * @module
 */

import { Errno } from "./ffi.ts";
import { ErrnoError } from "./errno.ts";
import type { FuseOps, Late, Reply } from "./ops.ts";
import {
  decodeCreateIn,
  decodeFhIn,
  decodeMkdirIn,
  decodeNameIn,
  decodeOpenIn,
  decodeReadIn,
  decodeRenameIn,
  decodeSetattrIn,
  decodeWriteIn,
  Op,
} from "./proto.ts";

/** One request as a handler sees it. */
export interface Request {
  nodeid: bigint;
  /** The body after struct fuse_in_header. */
  body: Uint8Array;
  /** Aborted by INTERRUPT or when the session stops. */
  signal: AbortSignal;
  late: Late;
}

/** Answers one kind of request: the reply's parts, or null for none. */
export type Handler = (ops: FuseOps, r: Request) => Reply | Promise<Reply>;

function enosys(): never {
  throw new ErrnoError(Errno.ENOSYS);
}

/** Every request answered here, by opcode (FORGET, INTERRUPT and INIT are the session's own). */
export const HANDLERS: ReadonlyMap<number, Handler> = new Map<number, Handler>([
  [Op.LOOKUP, (o, r) => o.lookup(r.nodeid, decodeNameIn(r.body), r.signal)],
  [Op.GETATTR, (o, r) => o.getattr(r.nodeid, r.signal)],
  [Op.SETATTR, (o, r) => o.setattr(r.nodeid, decodeSetattrIn(r.body), r.signal)],
  // The server decides; the kernel stops asking.
  [Op.ACCESS, enosys],
  [Op.STATFS, (o) => o.statfs()],
  [Op.OPEN, (o, r) => o.open(r.nodeid, decodeOpenIn(r.body), r.signal)],
  [Op.OPENDIR, (o, r) => o.opendir(r.nodeid, r.signal)],
  [Op.READ, (o, r) => o.read(decodeReadIn(r.body), r.signal, r.late)],
  [Op.WRITE, (o, r) => o.write(decodeWriteIn(r.body), r.signal)],
  [Op.READDIR, (o, r) => o.readdir(decodeReadIn(r.body), false, r.signal)],
  [Op.READDIRPLUS, (o, r) => o.readdir(decodeReadIn(r.body), true, r.signal)],
  [Op.RELEASE, (o, r) => o.release(decodeFhIn(r.body))],
  [Op.RELEASEDIR, (o, r) => o.release(decodeFhIn(r.body))],
  // Writes reach the server before WRITE is answered: nothing to flush at
  // close. ENOSYS tells the kernel to stop sending FLUSH at all.
  [Op.FLUSH, enosys],
  [Op.FSYNC, (o, r) => o.fsync(decodeFhIn(r.body))],
  [Op.FSYNCDIR, (o, r) => o.fsync(decodeFhIn(r.body))],
  [Op.CREATE, (o, r) => o.create(r.nodeid, decodeCreateIn(r.body), r.signal)],
  [Op.MKDIR, (o, r) => {
    const m = decodeMkdirIn(r.body);
    return o.mkdir(r.nodeid, m.perm, m.name, r.signal);
  }],
  [Op.UNLINK, (o, r) => o.remove(r.nodeid, decodeNameIn(r.body), false, r.signal)],
  [Op.RMDIR, (o, r) => o.remove(r.nodeid, decodeNameIn(r.body), true, r.signal)],
  [Op.RENAME, (o, r) => o.rename(r.nodeid, decodeRenameIn(r.body, false), r.signal)],
  [Op.RENAME2, (o, r) => o.rename(r.nodeid, decodeRenameIn(r.body, true), r.signal)],
  [Op.DESTROY, () => []],
  // Anything else (xattrs, links, locks, ioctl, poll, fallocate, lseek...) is not in Styx.
]);
