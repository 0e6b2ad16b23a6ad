/**
 * Styx (9P2000) constants and message shapes, as intro(5) defines them.
 *
 * Sizes and offsets that can exceed 2^53 are `bigint`; everything else is a
 * checked `number`.
 *
 * @module
 */

/** The only protocol version Ferry speaks. */
export const VERSION = "9P2000";
/** Tag used by Tversion. */
export const NOTAG = 0xffff;
/** "No fid", used as afid when no authentication is wanted. */
export const NOFID = 0xffffffff;
/** Maximum number of names in one Twalk. */
export const MAXWELEM = 16;
/** size[4] type[1] tag[2] */
export const HEADER_SIZE = 7;
/** Overhead of Rread/Twrite around their data: size[4] type[1] tag[2] fid[4] offset[8] count[4]. */
export const IOHDRSZ = 24;
/**
 * Default maximum message size Ferry offers and accepts: 512 KiB of data a
 * message (as Linux v9fs offers). Relayed streams and large reads cost
 * fewer messages and system calls than with 256 KiB.
 */
export const DEFAULT_MSIZE = 512 * 1024 + IOHDRSZ;

// Open modes (open(5)).
export const OREAD = 0;
export const OWRITE = 1;
export const ORDWR = 2;
export const OEXEC = 3;
export const OTRUNC = 0x10;
export const ORCLOSE = 0x40;

// Qid types.
export const QTDIR = 0x80;
export const QTAPPEND = 0x40;
export const QTEXCL = 0x20;
export const QTAUTH = 0x08;
export const QTFILE = 0x00;

// Dir.mode bits.
export const DMDIR = 0x80000000;
export const DMAPPEND = 0x40000000;
export const DMEXCL = 0x20000000;
export const DMAUTH = 0x08000000;

/** Message type numbers. */
export const MsgType = {
  Tversion: 100,
  Rversion: 101,
  Tauth: 102,
  Rauth: 103,
  Tattach: 104,
  Rattach: 105,
  Rerror: 107,
  Tflush: 108,
  Rflush: 109,
  Twalk: 110,
  Rwalk: 111,
  Topen: 112,
  Ropen: 113,
  Tcreate: 114,
  Rcreate: 115,
  Tread: 116,
  Rread: 117,
  Twrite: 118,
  Rwrite: 119,
  Tclunk: 120,
  Rclunk: 121,
  Tremove: 122,
  Rremove: 123,
  Tstat: 124,
  Rstat: 125,
  Twstat: 126,
  Rwstat: 127,
} as const;

/** A qid: the server's unique identity for a file. */
export interface Qid {
  /** QTDIR, QTAPPEND, ... */
  type: number;
  version: number;
  path: bigint;
}

/** A directory entry (stat(5)). Fields set to "don't touch" in Twstat use ~0 / "". */
export interface Dir {
  type: number;
  dev: number;
  qid: Qid;
  mode: number;
  atime: number;
  mtime: number;
  length: bigint;
  name: string;
  uid: string;
  gid: string;
  muid: string;
}

interface Base {
  tag: number;
}

export interface Tversion extends Base {
  type: 100;
  msize: number;
  version: string;
}
export interface Rversion extends Base {
  type: 101;
  msize: number;
  version: string;
}
export interface Tauth extends Base {
  type: 102;
  afid: number;
  uname: string;
  aname: string;
}
export interface Rauth extends Base {
  type: 103;
  aqid: Qid;
}
export interface Tattach extends Base {
  type: 104;
  fid: number;
  afid: number;
  uname: string;
  aname: string;
}
export interface Rattach extends Base {
  type: 105;
  qid: Qid;
}
export interface Rerror extends Base {
  type: 107;
  ename: string;
}
export interface Tflush extends Base {
  type: 108;
  oldtag: number;
}
export interface Rflush extends Base {
  type: 109;
}
export interface Twalk extends Base {
  type: 110;
  fid: number;
  newfid: number;
  wnames: string[];
}
export interface Rwalk extends Base {
  type: 111;
  wqids: Qid[];
}
export interface Topen extends Base {
  type: 112;
  fid: number;
  mode: number;
}
export interface Ropen extends Base {
  type: 113;
  qid: Qid;
  iounit: number;
}
export interface Tcreate extends Base {
  type: 114;
  fid: number;
  name: string;
  perm: number;
  mode: number;
}
export interface Rcreate extends Base {
  type: 115;
  qid: Qid;
  iounit: number;
}
export interface Tread extends Base {
  type: 116;
  fid: number;
  offset: bigint;
  count: number;
}
export interface Rread extends Base {
  type: 117;
  data: Uint8Array;
}
export interface Twrite extends Base {
  type: 118;
  fid: number;
  offset: bigint;
  data: Uint8Array;
}
export interface Rwrite extends Base {
  type: 119;
  count: number;
}
export interface Tclunk extends Base {
  type: 120;
  fid: number;
}
export interface Rclunk extends Base {
  type: 121;
}
export interface Tremove extends Base {
  type: 122;
  fid: number;
}
export interface Rremove extends Base {
  type: 123;
}
export interface Tstat extends Base {
  type: 124;
  fid: number;
}
export interface Rstat extends Base {
  type: 125;
  stat: Dir;
}
export interface Twstat extends Base {
  type: 126;
  fid: number;
  stat: Dir;
}
export interface Rwstat extends Base {
  type: 127;
}

/** Any T-message. */
export type TMsg =
  | Tversion
  | Tauth
  | Tattach
  | Tflush
  | Twalk
  | Topen
  | Tcreate
  | Tread
  | Twrite
  | Tclunk
  | Tremove
  | Tstat
  | Twstat;

/** Any R-message. */
export type RMsg =
  | Rversion
  | Rauth
  | Rattach
  | Rerror
  | Rflush
  | Rwalk
  | Ropen
  | Rcreate
  | Rread
  | Rwrite
  | Rclunk
  | Rremove
  | Rstat
  | Rwstat;

/** Any 9P2000 message. */
export type Msg = TMsg | RMsg;

/** Plan 9's wording for common errors; 9pfuse maps these words to errno values. */
export const Ename = {
  notFound: "file does not exist",
  perm: "permission denied",
  exists: "file exists",
  notEmpty: "directory not empty",
  isDir: "is a directory",
  notDir: "not a directory",
  badFid: "unknown fid",
  fidInUse: "fid already in use",
  openFid: "fid is already open",
  notOpen: "fid not open for I/O",
  badOffset: "bad offset in directory read",
  badName: "illegal name",
  exclusive: "exclusive use file already open",
  noAuth: "authentication not required",
  noCreate: "create prohibited",
  noRemove: "remove prohibited",
  noWstat: "wstat prohibited",
  badCtl: "bad ctl message",
  io: "i/o error",
  interrupted: "interrupted",
  tooLong: "name too long",
  walkNoDir: "walk in non-directory",
  hungup: "i/o on hungup channel",
} as const;

/**
 * An error that travels over the wire as Rerror: its message is the ename.
 *
 * @example
 * ```ts
 * import { StyxError, Ename } from "./types.ts";
 * const e = new StyxError(Ename.notFound);
 * if (e.message !== "file does not exist") throw new Error("wrong");
 * ```
 */
export class StyxError extends Error {
  constructor(ename: string) {
    super(ename);
    this.name = "StyxError";
  }
}

/** Turn any thrown value into the string a Rerror carries. */
export function errorString(e: unknown): string {
  if (e instanceof StyxError) return e.message;
  if (e instanceof Deno.errors.NotFound) return Ename.notFound;
  if (e instanceof Deno.errors.PermissionDenied) return Ename.perm;
  if (e instanceof Deno.errors.AlreadyExists) return Ename.exists;
  if (e instanceof Deno.errors.IsADirectory) return Ename.isDir;
  if (e instanceof Deno.errors.NotADirectory) return Ename.notDir;
  if (e instanceof Error) {
    const code = (e as Error & { code?: string }).code;
    switch (code) {
      case "ENOENT":
        return Ename.notFound;
      case "EACCES":
      case "EPERM":
        return Ename.perm;
      case "EEXIST":
        return Ename.exists;
      case "EISDIR":
        return Ename.isDir;
      case "ENOTDIR":
        return Ename.notDir;
      case "ENOTEMPTY":
        return Ename.notEmpty;
    }
    return e.message || Ename.io;
  }
  return String(e);
}

/** A Dir with every field set to "don't touch", the starting point of a Twstat. */
export function nullDir(): Dir {
  return {
    type: 0xffff,
    dev: 0xffffffff,
    qid: { type: 0xff, version: 0xffffffff, path: 0xffffffffffffffffn },
    mode: 0xffffffff,
    atime: 0xffffffff,
    mtime: 0xffffffff,
    length: 0xffffffffffffffffn,
    name: "",
    uid: "",
    gid: "",
    muid: "",
  };
}
