/**
 * The Styx (9P2000) codec: every message, qid and stat (Dir) to and from
 * bytes, as intro(5) and the message pages lay them out.
 *
 * All messages are described by ONE table keyed by the type byte; each entry
 * gives the message's name, the size of its body, how to write the body and
 * how to read it back. Encoding computes the whole frame size first and
 * allocates once. Decoding checks every length against the frame before
 * using it, so hostile bytes only ever produce a {@link CodecError} and never
 * an allocation sized by the peer.
 *
 * @example
 * ```ts
 * import { decode, encode } from "./codec.ts";
 * import { MsgType, NOTAG } from "./types.ts";
 * const bytes = encode({ type: MsgType.Tversion, tag: NOTAG, msize: 8216, version: "9P2000" });
 * if (bytes.length !== 19) throw new Error("wrong size");
 * const back = decode(bytes);
 * if (back.type !== MsgType.Tversion || back.msize !== 8216) throw new Error("wrong message");
 * ```
 *
 * @module
 */

import { utf8Length } from "../bytes.ts";
import {
  type Dir,
  HEADER_SIZE,
  MAXWELEM,
  type Msg,
  MsgType,
  type Qid,
  type Rclunk,
  type RMsg,
  type Rread,
  type Rwalk,
  type Rwrite,
  type TMsg,
  type Twrite,
} from "./types.ts";

/**
 * A message that cannot be encoded, or bytes that are not a valid message.
 * When the header (size, type, tag) parsed, `tag` is set so a server can
 * still answer Rerror to that request.
 *
 * @example
 * ```ts
 * import { CodecError, decode } from "./codec.ts";
 * try {
 *   decode(new Uint8Array([7, 0, 0, 0, 42, 1, 0]));
 * } catch (e) {
 *   if (!(e instanceof CodecError) || e.tag !== 1) throw e;
 * }
 * ```
 */
export class CodecError extends Error {
  /** The tag of the offending message, when its header could be read. */
  readonly tag?: number;
  /** The type byte of the offending message, when its header could be read. */
  readonly msgType?: number;

  /** Make an error; `tag` and `msgType` are given once the header parsed. */
  constructor(message: string, tag?: number, msgType?: number) {
    super(message);
    this.name = "CodecError";
    if (tag !== undefined) this.tag = tag;
    if (msgType !== undefined) this.msgType = msgType;
  }
}

/** Size of a qid on the wire: type[1] version[4] path[8]. */
export const QID_SIZE = 13;
/**
 * Size of a stat entry with four empty strings, including its own size[2]:
 * size[2] type[2] dev[4] qid[13] mode[4] atime[4] mtime[4] length[8] + 4 × len[2].
 */
export const STAT_FIXED_SIZE = 49;

const MAX_U16 = 0xffff;
const MAX_U64 = 0xffffffffffffffffn;

// ---------------------------------------------------------------------------
// UTF-8 helpers

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function strSize(s: string, what: string): number {
  if (typeof s !== "string") throw new CodecError(`${what} is not a string`);
  const n = utf8Length(s);
  // intro(5): NUL is illegal in all 9P text strings.
  if (s.indexOf("\0") >= 0) {
    throw new CodecError(`${what} '${s.replaceAll("\0", "\\0")}' contains NUL`);
  }
  if (n > MAX_U16) {
    throw new CodecError(`${what} is ${n} bytes long; a Styx string holds at most 65535`);
  }
  return 2 + n;
}

// ---------------------------------------------------------------------------
// Writer and reader

class Writer {
  readonly buf: Uint8Array;
  pos = 0;

  /** Write into `buf` from its start (bytes by hand: no DataView per frame). */
  constructor(buf: Uint8Array) {
    this.buf = buf;
  }

  u8(v: number): void {
    this.buf[this.pos++] = v;
  }
  u16(v: number): void {
    this.patch16(this.pos, v);
    this.pos += 2;
  }
  /** Write `v` as a u16 at `at` (a size known only once what follows is written). */
  patch16(at: number, v: number): void {
    const b = this.buf;
    b[at] = v;
    b[at + 1] = v >>> 8;
  }
  u32(v: number): void {
    const b = this.buf;
    const p = this.pos;
    b[p] = v;
    b[p + 1] = v >>> 8;
    b[p + 2] = v >>> 16;
    b[p + 3] = v >>> 24;
    this.pos = p + 4;
  }
  u64(v: bigint): void {
    if (v >= 0n && v <= 0x1fffffffffffffn) {
      // Below 2^53 (nearly every offset, length and qid path): as a number.
      const n = Number(v);
      this.u32(n >>> 0);
      this.u32(Math.floor(n / 0x100000000));
    } else {
      this.u32(Number(BigInt.asUintN(32, v)));
      this.u32(Number(BigInt.asUintN(32, v >> 32n)));
    }
  }
  str(s: string): void {
    const start = this.pos;
    const buf = this.buf;
    const n = s.length;
    // ASCII, the common case, is written directly; anything else goes
    // through TextEncoder from the start of the string.
    let p = start + 2;
    let i = 0;
    for (; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) break;
      buf[p++] = c;
    }
    if (i < n) {
      p = start + 2 + textEncoder.encodeInto(s, buf.subarray(start + 2)).written;
    }
    this.patch16(start, p - start - 2);
    this.pos = p;
  }
  qid(q: Qid): void {
    this.u8(q.type);
    this.u32(q.version);
    this.u64(q.path);
  }
  bytes(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

/** The little-endian u32 at `p` in `b` (no DataView: a frame is read once). */
function getU32(b: Uint8Array, p: number): number {
  return (b[p]! | b[p + 1]! << 8 | b[p + 2]! << 16) + b[p + 3]! * 0x1000000;
}

/** The little-endian u64 at `p` in `b`. */
function getU64(b: Uint8Array, p: number): bigint {
  const lo = getU32(b, p);
  const hi = getU32(b, p + 4);
  // Below 2^53 (every offset and qid path in practice) one conversion does.
  return hi < 0x200000 ? BigInt(hi * 0x100000000 + lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

class Reader {
  readonly buf: Uint8Array;
  pos: number;
  readonly end: number;
  /** Set while decoding a message, for error messages and CodecError.tag. */
  tag: number | undefined;
  msgType: number | undefined;
  what: string;

  constructor(buf: Uint8Array, pos: number, end: number, what: string) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
    this.what = what;
  }

  fail(message: string): never {
    throw new CodecError(`${this.what}: ${message}`, this.tag, this.msgType);
  }

  need(n: number, field: string): void {
    if (this.pos + n > this.end) {
      this.fail(
        `truncated at ${field}: needs ${n} bytes at offset ${this.pos}, only ${
          this.end - this.pos
        } left`,
      );
    }
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++]!;
  }
  u16(field: string): number {
    this.need(2, field);
    const p = this.pos;
    this.pos = p + 2;
    return this.buf[p]! | this.buf[p + 1]! << 8;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = getU32(this.buf, this.pos);
    this.pos += 4;
    return v;
  }
  u64(field: string): bigint {
    this.need(8, field);
    const v = getU64(this.buf, this.pos);
    this.pos += 8;
    return v;
  }
  str(field: string): string {
    const n = this.u16(field);
    if (this.pos + n > this.end) {
      this.fail(`string ${field} claims ${n} bytes but only ${this.end - this.pos} remain`);
    }
    const start = this.pos;
    this.pos += n;
    return decodeUtf8(this, start, start + n, field);
  }
  qid(field: string): Qid {
    this.need(QID_SIZE, field);
    const b = this.buf;
    const p = this.pos;
    this.pos += QID_SIZE;
    return { type: b[p]!, version: getU32(b, p + 1), path: getU64(b, p + 5) };
  }
  /** A view of the next `n` bytes (no copy). */
  bytes(n: number, field: string): Uint8Array {
    if (this.pos + n > this.end) {
      this.fail(`${field} claims ${n} bytes but only ${this.end - this.pos} remain`);
    }
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
}

/** The string field `field` at [start, end) of what `r` reads. */
function decodeUtf8(r: Reader, start: number, end: number, field: string): string {
  const buf = r.buf;
  const n = end - start;
  if (n === 0) return "";
  if (n <= 32) {
    // Short names are the common case: build ASCII ones directly.
    let s = "";
    let i = start;
    for (; i < end; i++) {
      const c = buf[i]!;
      if (c >= 0x80) break;
      if (c === 0) return r.fail(`${field} contains NUL`);
      s += String.fromCharCode(c);
    }
    if (i === end) return s;
  }
  const bytes = buf.subarray(start, end);
  // intro(5): NUL is illegal in all 9P text strings.
  if (bytes.indexOf(0) >= 0) return r.fail(`${field} contains NUL`);
  try {
    return textDecoder.decode(bytes);
  } catch {
    return r.fail(`${field} is not valid UTF-8`);
  }
}

// ---------------------------------------------------------------------------
// Field checks for encoding: a wrong value is a bug in the caller, reported
// plainly rather than silently wrapped by DataView.

function checkInt(v: number, max: number, field: string, name: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new CodecError(`${name} ${field} '${v}' is out of range 0..${max}`);
  }
}
const u8 = (v: number, f: string, n: string) => checkInt(v, 0xff, f, n);
const u16 = (v: number, f: string, n: string) => checkInt(v, 0xffff, f, n);
const u32 = (v: number, f: string, n: string) => checkInt(v, 0xffffffff, f, n);
function u64(v: bigint, f: string, n: string): void {
  if (typeof v !== "bigint" || v < 0n || v > MAX_U64) {
    throw new CodecError(`${n} ${f} '${v}' is not a u64 bigint`);
  }
}
function checkQid(q: Qid, f: string, n: string): void {
  if (q === null || typeof q !== "object") throw new CodecError(`${n} ${f} is missing`);
  // The field names are built only for the error (this runs for every qid sent).
  const t = q.type;
  if (!Number.isInteger(t) || t < 0 || t > 0xff) u8(t, `${f}.type`, n);
  const v = q.version;
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) u32(v, `${f}.version`, n);
  const p = q.path;
  if (typeof p !== "bigint" || p < 0n || p > MAX_U64) u64(p, `${f}.path`, n);
}

// ---------------------------------------------------------------------------
// Dir (stat(5))

/**
 * Bytes `d` takes on the wire, including the entry's own size[2].
 *
 * @example
 * ```ts
 * import { sizeofDir } from "./codec.ts";
 * import { nullDir } from "./types.ts";
 * if (sizeofDir(nullDir()) !== 49) throw new Error("wrong size");
 * ```
 */
export function sizeofDir(d: Dir): number {
  const n = STAT_FIXED_SIZE - 8 + strSize(d.name, "stat name") + strSize(d.uid, "stat uid") +
    strSize(d.gid, "stat gid") + strSize(d.muid, "stat muid");
  if (n - 2 > MAX_U16) throw new CodecError(`stat entry is ${n} bytes; at most 65537 fit`);
  return n;
}

function checkDir(d: Dir, n: string): void {
  if (d === null || typeof d !== "object") throw new CodecError(`${n} stat is missing`);
  u16(d.type, "stat.type", n);
  u32(d.dev, "stat.dev", n);
  checkQid(d.qid, "stat.qid", n);
  u32(d.mode, "stat.mode", n);
  u32(d.atime, "stat.atime", n);
  u32(d.mtime, "stat.mtime", n);
  u64(d.length, "stat.length", n);
}

/** Write `d` with its own size[2], back-patched once the entry is written. */
function writeDir(w: Writer, d: Dir): void {
  const start = w.pos;
  w.u16(0);
  w.u16(d.type);
  w.u32(d.dev);
  w.qid(d.qid);
  w.u32(d.mode);
  w.u32(d.atime);
  w.u32(d.mtime);
  w.u64(d.length);
  w.str(d.name);
  w.str(d.uid);
  w.str(d.gid);
  w.str(d.muid);
  w.patch16(start, w.pos - start - 2);
}

/** Write `d` with the extra nstat[2] that Rstat and Twstat put in front (stat(5)). */
function writeStat(w: Writer, d: Dir): void {
  const start = w.pos;
  w.u16(0);
  writeDir(w, d);
  w.patch16(start, w.pos - start - 2);
}

function readDir(r: Reader): Dir {
  const n = r.u16("stat size");
  const start = r.pos;
  if (start + n > r.end) r.fail(`stat entry claims ${n} bytes but only ${r.end - start} remain`);
  // Read the entry within its own bounds, so its fields cannot run past it.
  const inner = new Reader(r.buf, start, start + n, r.what);
  inner.tag = r.tag;
  inner.msgType = r.msgType;
  const d: Dir = {
    type: inner.u16("stat.type"),
    dev: inner.u32("stat.dev"),
    qid: inner.qid("stat.qid"),
    mode: inner.u32("stat.mode"),
    atime: inner.u32("stat.atime"),
    mtime: inner.u32("stat.mtime"),
    length: inner.u64("stat.length"),
    name: inner.str("stat.name"),
    uid: inner.str("stat.uid"),
    gid: inner.str("stat.gid"),
    muid: inner.str("stat.muid"),
  };
  if (inner.pos !== inner.end) {
    r.fail(`stat entry has ${inner.end - inner.pos} bytes of trailing garbage`);
  }
  r.pos = inner.end;
  return d;
}

/**
 * Encode one directory entry as stat(5) lays it out (with its own size[2]
 * in front), as a directory read returns it.
 *
 * @example
 * ```ts
 * import { decodeDir, encodeDir } from "./codec.ts";
 * import { nullDir } from "./types.ts";
 * const d = { ...nullDir(), name: "hello" };
 * const { dir, next } = decodeDir(encodeDir(d), 0);
 * if (dir.name !== "hello" || next !== 54) throw new Error("round trip failed");
 * ```
 */
export function encodeDir(d: Dir): Uint8Array {
  checkDir(d, "directory entry");
  const size = sizeofDir(d);
  const w = new Writer(new Uint8Array(size));
  writeDir(w, d);
  return w.buf;
}

/**
 * Decode the directory entry that starts at `offset` in `buf`; `next` is the
 * offset just past it.
 */
export function decodeDir(buf: Uint8Array, offset = 0): { dir: Dir; next: number } {
  if (!Number.isInteger(offset) || offset < 0 || offset > buf.length) {
    throw new CodecError(`stat offset '${offset}' is outside a ${buf.length}-byte buffer`);
  }
  const r = new Reader(buf, offset, buf.length, "stat");
  const dir = readDir(r);
  return { dir, next: r.pos };
}

/**
 * Decode the payload of a directory read: whole stat entries back to back.
 *
 * @example
 * ```ts
 * import { decodeDirs, encodeDir } from "./codec.ts";
 * import { nullDir } from "./types.ts";
 * const a = encodeDir({ ...nullDir(), name: "a" });
 * const b = encodeDir({ ...nullDir(), name: "b" });
 * const both = new Uint8Array([...a, ...b]);
 * if (decodeDirs(both).map((d) => d.name).join() !== "a,b") throw new Error("wrong");
 * ```
 */
export function decodeDirs(buf: Uint8Array): Dir[] {
  const r = new Reader(buf, 0, buf.length, "directory read");
  const dirs: Dir[] = [];
  while (r.pos < r.end) dirs.push(readDir(r));
  return dirs;
}

// ---------------------------------------------------------------------------
// The message table

type ByType<T extends number> = Extract<Msg, { type: T }>;

interface Spec<M extends Msg = Msg> {
  /** "Tversion", "Rread", ... */
  name: string;
  /** Checks field ranges and returns the body size (after size[4] type[1] tag[2]). */
  size(m: M): number;
  /** Writes the body. */
  write(w: Writer, m: M): void;
  /** For a message that ends in data (Rread, Twrite): writes the body up to the data. */
  head?(w: Writer, m: M): void;
  /** Reads the body; the reader's tag is the message tag. */
  read(r: Reader, tag: number): M;
}

const table: (Spec | undefined)[] = new Array(256);

function def<T extends Msg["type"]>(
  type: T,
  name: string,
  spec: Omit<Spec<ByType<T>>, "name">,
): void {
  table[type] = { name, ...spec } as unknown as Spec;
}

// Helpers for the many messages shaped alike. Their bodies are typed by the
// fields they touch; `put` files them under the type byte.
function put<M>(type: number, name: string, spec: Omit<Spec<Msg & M>, "name">): void {
  table[type] = { name, ...spec } as unknown as Spec;
}
function fidOnly(type: 120 | 122 | 124, name: string): void {
  put<{ fid: number }>(type, name, {
    size(m) {
      u32(m.fid, "fid", name);
      return 4;
    },
    write(w, m) {
      w.u32(m.fid);
    },
    read: (r, tag) => ({ type, tag, fid: r.u32("fid") }) as Msg & { fid: number },
  });
}
function empty(type: 109 | 121 | 123 | 127, name: string): void {
  put<unknown>(type, name, {
    size: () => 0,
    write() {},
    read: (_r, tag) => ({ type, tag }) as Msg,
  });
}
function version(type: 100 | 101, name: string): void {
  put<{ msize: number; version: string }>(type, name, {
    size(m) {
      u32(m.msize, "msize", name);
      return 4 + strSize(m.version, `${name} version`);
    },
    write(w, m) {
      w.u32(m.msize);
      w.str(m.version);
    },
    read: (r, tag) => ({ type, tag, msize: r.u32("msize"), version: r.str("version") }),
  });
}
function qidOnly(type: 103 | 105, name: string, field: "aqid" | "qid"): void {
  put<Record<string, Qid>>(type, name, {
    size(m) {
      checkQid(m[field]!, field, name);
      return QID_SIZE;
    },
    write(w, m) {
      w.qid(m[field]!);
    },
    read: (r, tag) =>
      ({ type, tag, [field]: r.qid(field) }) as unknown as Msg & Record<string, Qid>,
  });
}
function qidIounit(type: 113 | 115, name: string): void {
  put<{ qid: Qid; iounit: number }>(type, name, {
    size(m) {
      checkQid(m.qid, "qid", name);
      u32(m.iounit, "iounit", name);
      return QID_SIZE + 4;
    },
    write(w, m) {
      w.qid(m.qid);
      w.u32(m.iounit);
    },
    read: (r, tag) => ({ type, tag, qid: r.qid("qid"), iounit: r.u32("iounit") }),
  });
}

version(MsgType.Tversion, "Tversion");
version(MsgType.Rversion, "Rversion");

def(MsgType.Tauth, "Tauth", {
  size(m) {
    u32(m.afid, "afid", "Tauth");
    return 4 + strSize(m.uname, "Tauth uname") + strSize(m.aname, "Tauth aname");
  },
  write(w, m) {
    w.u32(m.afid);
    w.str(m.uname);
    w.str(m.aname);
  },
  read: (r, tag) => ({
    type: MsgType.Tauth,
    tag,
    afid: r.u32("afid"),
    uname: r.str("uname"),
    aname: r.str("aname"),
  }),
});
qidOnly(MsgType.Rauth, "Rauth", "aqid");

def(MsgType.Tattach, "Tattach", {
  size(m) {
    u32(m.fid, "fid", "Tattach");
    u32(m.afid, "afid", "Tattach");
    return 8 + strSize(m.uname, "Tattach uname") + strSize(m.aname, "Tattach aname");
  },
  write(w, m) {
    w.u32(m.fid);
    w.u32(m.afid);
    w.str(m.uname);
    w.str(m.aname);
  },
  read: (r, tag) => ({
    type: MsgType.Tattach,
    tag,
    fid: r.u32("fid"),
    afid: r.u32("afid"),
    uname: r.str("uname"),
    aname: r.str("aname"),
  }),
});
qidOnly(MsgType.Rattach, "Rattach", "qid");

def(MsgType.Rerror, "Rerror", {
  size: (m) => strSize(m.ename, "Rerror ename"),
  write(w, m) {
    w.str(m.ename);
  },
  read: (r, tag) => ({ type: MsgType.Rerror, tag, ename: r.str("ename") }),
});

def(MsgType.Tflush, "Tflush", {
  size(m) {
    u16(m.oldtag, "oldtag", "Tflush");
    return 2;
  },
  write(w, m) {
    w.u16(m.oldtag);
  },
  read: (r, tag) => ({ type: MsgType.Tflush, tag, oldtag: r.u16("oldtag") }),
});
empty(MsgType.Rflush, "Rflush");

/** Field names for errors, made once rather than per name decoded. */
const WNAME = Array.from({ length: MAXWELEM }, (_, i) => `wname[${i}]`);
const WQID = Array.from({ length: MAXWELEM }, (_, i) => `wqid[${i}]`);

def(MsgType.Twalk, "Twalk", {
  size(m) {
    u32(m.fid, "fid", "Twalk");
    u32(m.newfid, "newfid", "Twalk");
    if (!Array.isArray(m.wnames)) throw new CodecError("Twalk wnames is not an array");
    if (m.wnames.length > MAXWELEM) {
      throw new CodecError(`Twalk has ${m.wnames.length} names; at most ${MAXWELEM} fit`);
    }
    let n = 10;
    for (const s of m.wnames) n += strSize(s, "Twalk wname");
    return n;
  },
  write(w, m) {
    w.u32(m.fid);
    w.u32(m.newfid);
    w.u16(m.wnames.length);
    for (const s of m.wnames) w.str(s);
  },
  read(r, tag) {
    const fid = r.u32("fid");
    const newfid = r.u32("newfid");
    const n = r.u16("nwname");
    if (n > MAXWELEM) r.fail(`nwname ${n} exceeds the maximum of ${MAXWELEM}`);
    const wnames: string[] = [];
    for (let i = 0; i < n; i++) wnames.push(r.str(WNAME[i]!));
    return { type: MsgType.Twalk, tag, fid, newfid, wnames };
  },
});
def(MsgType.Rwalk, "Rwalk", {
  size(m) {
    if (!Array.isArray(m.wqids)) throw new CodecError("Rwalk wqids is not an array");
    if (m.wqids.length > MAXWELEM) {
      throw new CodecError(`Rwalk has ${m.wqids.length} qids; at most ${MAXWELEM} fit`);
    }
    for (const q of m.wqids) checkQid(q, "wqid", "Rwalk");
    return 2 + QID_SIZE * m.wqids.length;
  },
  write(w, m) {
    w.u16(m.wqids.length);
    for (const q of m.wqids) w.qid(q);
  },
  read(r, tag) {
    const n = r.u16("nwqid");
    if (n > MAXWELEM) r.fail(`nwqid ${n} exceeds the maximum of ${MAXWELEM}`);
    const wqids: Qid[] = [];
    for (let i = 0; i < n; i++) wqids.push(r.qid(WQID[i]!));
    return { type: MsgType.Rwalk, tag, wqids };
  },
});

def(MsgType.Topen, "Topen", {
  size(m) {
    u32(m.fid, "fid", "Topen");
    u8(m.mode, "mode", "Topen");
    return 5;
  },
  write(w, m) {
    w.u32(m.fid);
    w.u8(m.mode);
  },
  read: (r, tag) => ({ type: MsgType.Topen, tag, fid: r.u32("fid"), mode: r.u8("mode") }),
});
qidIounit(MsgType.Ropen, "Ropen");

def(MsgType.Tcreate, "Tcreate", {
  size(m) {
    u32(m.fid, "fid", "Tcreate");
    u32(m.perm, "perm", "Tcreate");
    u8(m.mode, "mode", "Tcreate");
    return 9 + strSize(m.name, "Tcreate name");
  },
  write(w, m) {
    w.u32(m.fid);
    w.str(m.name);
    w.u32(m.perm);
    w.u8(m.mode);
  },
  read: (r, tag) => ({
    type: MsgType.Tcreate,
    tag,
    fid: r.u32("fid"),
    name: r.str("name"),
    perm: r.u32("perm"),
    mode: r.u8("mode"),
  }),
});
qidIounit(MsgType.Rcreate, "Rcreate");

def(MsgType.Tread, "Tread", {
  size(m) {
    u32(m.fid, "fid", "Tread");
    u64(m.offset, "offset", "Tread");
    u32(m.count, "count", "Tread");
    return 16;
  },
  write(w, m) {
    w.u32(m.fid);
    w.u64(m.offset);
    w.u32(m.count);
  },
  read: (r, tag) => ({
    type: MsgType.Tread,
    tag,
    fid: r.u32("fid"),
    offset: r.u64("offset"),
    count: r.u32("count"),
  }),
});
// Rread and Twrite write the fields before their data with one function,
// used alone by encodeHeader, so a header built in place is this encoder's.
function rreadHead(w: Writer, m: Rread): void {
  w.u32(m.data.length);
}
def(MsgType.Rread, "Rread", {
  size(m) {
    if (!(m.data instanceof Uint8Array)) throw new CodecError("Rread data is not a Uint8Array");
    return 4 + m.data.length;
  },
  head: rreadHead,
  write(w, m) {
    rreadHead(w, m);
    w.bytes(m.data);
  },
  read(r, tag) {
    const count = r.u32("count");
    return { type: MsgType.Rread, tag, data: r.bytes(count, "data") };
  },
});

function twriteHead(w: Writer, m: Twrite): void {
  w.u32(m.fid);
  w.u64(m.offset);
  w.u32(m.data.length);
}
def(MsgType.Twrite, "Twrite", {
  size(m) {
    u32(m.fid, "fid", "Twrite");
    u64(m.offset, "offset", "Twrite");
    if (!(m.data instanceof Uint8Array)) throw new CodecError("Twrite data is not a Uint8Array");
    return 16 + m.data.length;
  },
  head: twriteHead,
  write(w, m) {
    twriteHead(w, m);
    w.bytes(m.data);
  },
  read(r, tag) {
    const fid = r.u32("fid");
    const offset = r.u64("offset");
    const count = r.u32("count");
    return { type: MsgType.Twrite, tag, fid, offset, data: r.bytes(count, "data") };
  },
});
def(MsgType.Rwrite, "Rwrite", {
  size(m) {
    u32(m.count, "count", "Rwrite");
    return 4;
  },
  write(w, m) {
    w.u32(m.count);
  },
  read: (r, tag) => ({ type: MsgType.Rwrite, tag, count: r.u32("count") }),
});

fidOnly(MsgType.Tclunk, "Tclunk");
empty(MsgType.Rclunk, "Rclunk");
fidOnly(MsgType.Tremove, "Tremove");
empty(MsgType.Rremove, "Rremove");
fidOnly(MsgType.Tstat, "Tstat");

// Rstat and Twstat carry the stat with an extra size[2] in front of the
// entry's own size[2] (stat(5)).
def(MsgType.Rstat, "Rstat", {
  size(m) {
    checkDir(m.stat, "Rstat");
    return 2 + sizeofDir(m.stat);
  },
  write(w, m) {
    writeStat(w, m.stat);
  },
  read(r, tag) {
    return { type: MsgType.Rstat, tag, stat: readStat(r) };
  },
});
def(MsgType.Twstat, "Twstat", {
  size(m) {
    u32(m.fid, "fid", "Twstat");
    checkDir(m.stat, "Twstat");
    return 6 + sizeofDir(m.stat);
  },
  write(w, m) {
    w.u32(m.fid);
    writeStat(w, m.stat);
  },
  read(r, tag) {
    const fid = r.u32("fid");
    return { type: MsgType.Twstat, tag, fid, stat: readStat(r) };
  },
});
empty(MsgType.Rwstat, "Rwstat");

function readStat(r: Reader): Dir {
  const n = r.u16("nstat");
  const start = r.pos;
  if (start + n > r.end) r.fail(`nstat ${n} overruns the message by ${start + n - r.end} bytes`);
  const d = readDir(r);
  if (r.pos !== start + n) {
    r.fail(`nstat ${n} disagrees with the stat entry's own size ${r.pos - start - 2}`);
  }
  return d;
}

// ---------------------------------------------------------------------------
// Public entry points

/**
 * The name of a message type ("Tversion", "Rread", ...), or "unknown type N".
 *
 * @example
 * ```ts
 * import { msgName } from "./codec.ts";
 * if (msgName(117) !== "Rread") throw new Error("wrong name");
 * ```
 */
export function msgName(type: number): string {
  return table[type]?.name ?? `unknown type ${type}`;
}

/**
 * True for T-messages (requests); a type guard.
 *
 * @example
 * ```ts
 * import { isTMsg } from "./codec.ts";
 * import { MsgType } from "./types.ts";
 * if (!isTMsg({ type: MsgType.Tclunk, tag: 1, fid: 2 })) throw new Error("wrong");
 * ```
 */
export function isTMsg(msg: Msg): msg is TMsg {
  return (msg.type & 1) === 0;
}

/** True for R-messages (replies); a type guard. */
export function isRMsg(msg: Msg): msg is RMsg {
  return (msg.type & 1) === 1;
}

/**
 * The size of the frame `encode(msg)` would produce, including size[4].
 * Throws CodecError for a message that cannot be encoded.
 */
export function sizeofMsg(msg: Msg): number {
  return HEADER_SIZE + specFor(msg).size(msg);
}

function specFor(msg: Msg): Spec {
  const spec = msg === null || typeof msg !== "object" ? undefined : table[msg.type];
  if (!spec) {
    throw new CodecError(`cannot encode a message of unknown type '${msg?.type}'`);
  }
  u16(msg.tag, "tag", spec.name);
  return spec;
}

/**
 * Encode `msg` as one whole frame, size[4] included. Strings are written as
 * UTF-8 with their byte lengths; Rread/Twrite data is copied once, straight
 * into the frame.
 *
 * @example
 * ```ts
 * import { encode } from "./codec.ts";
 * import { MsgType } from "./types.ts";
 * const f = encode({ type: MsgType.Tclunk, tag: 1, fid: 2 });
 * if (f.join() !== "11,0,0,0,120,1,0,2,0,0,0") throw new Error("wrong bytes");
 * ```
 */
export function encode(msg: Msg): Uint8Array {
  return encodeWith(msg, newBuffer);
}

const newBuffer = (size: number) => new Uint8Array(size);

/**
 * Like {@link encode}, into the buffer `alloc` returns for the frame's
 * size, which must be exactly that many bytes: a view into a larger buffer
 * the caller reuses, say. `alloc` is called only once `msg` has been
 * checked.
 *
 * @example
 * ```ts
 * import { encodeWith } from "./codec.ts";
 * import { MsgType } from "./types.ts";
 * const arena = new Uint8Array(64);
 * const f = encodeWith({ type: MsgType.Rclunk, tag: 3 }, (n) => arena.subarray(8, 8 + n));
 * if (f.buffer !== arena.buffer || arena[8] !== 7) throw new Error("not in place");
 * ```
 */
export function encodeWith(msg: Msg, alloc: (size: number) => Uint8Array): Uint8Array {
  // The replies a server sends most, written by hand: the same bytes and
  // checks as below, without the general machinery.
  const type = msg?.type;
  if (type === MsgType.Rclunk || type === MsgType.Rwrite || type === MsgType.Rwalk) {
    return encodeCommon(msg as Rclunk | Rwrite | Rwalk, alloc);
  }
  const spec = specFor(msg);
  const size = HEADER_SIZE + spec.size(msg);
  if (size > 0xffffffff) throw new CodecError(`${spec.name} of ${size} bytes is too large`);
  const w = new Writer(alloc(size));
  w.u32(size);
  w.u8(msg.type);
  w.u16(msg.tag);
  spec.write(w, msg);
  if (w.pos !== size) {
    // Only reachable if a size function and its writer disagree.
    throw new CodecError(`${spec.name} encoded to ${w.pos} bytes, expected ${size}`);
  }
  return w.buf;
}

/** {@link encodeWith} for Rclunk, Rwrite and Rwalk. */
function encodeCommon(
  msg: Rclunk | Rwrite | Rwalk,
  alloc: (size: number) => Uint8Array,
): Uint8Array {
  const spec = table[msg.type]!;
  checkInt(msg.tag, 0xffff, "tag", spec.name);
  const size = HEADER_SIZE + spec.size(msg);
  const b = alloc(size);
  b[0] = size;
  b[1] = size >>> 8;
  b[2] = size >>> 16;
  b[3] = size >>> 24;
  b[4] = msg.type;
  b[5] = msg.tag;
  b[6] = msg.tag >>> 8;
  if (msg.type === MsgType.Rwrite) {
    const c = msg.count;
    b[7] = c;
    b[8] = c >>> 8;
    b[9] = c >>> 16;
    b[10] = c >>> 24;
  } else if (msg.type === MsgType.Rwalk) {
    const qids = msg.wqids;
    b[7] = qids.length;
    b[8] = 0;
    let p = 9;
    for (const q of qids) {
      b[p] = q.type;
      const v = q.version;
      b[p + 1] = v;
      b[p + 2] = v >>> 8;
      b[p + 3] = v >>> 16;
      b[p + 4] = v >>> 24;
      const path = q.path;
      let lo: number, hi: number;
      if (path <= 0x1fffffffffffffn) {
        const n = Number(path);
        lo = n >>> 0;
        hi = Math.floor(n / 0x100000000);
      } else {
        lo = Number(BigInt.asUintN(32, path));
        hi = Number(BigInt.asUintN(32, path >> 32n));
      }
      b[p + 5] = lo;
      b[p + 6] = lo >>> 8;
      b[p + 7] = lo >>> 16;
      b[p + 8] = lo >>> 24;
      b[p + 9] = hi;
      b[p + 10] = hi >>> 8;
      b[p + 11] = hi >>> 16;
      b[p + 12] = hi >>> 24;
      p += QID_SIZE;
    }
  }
  return b;
}

/** Bytes an Rread carries before its data: size[4] type[1] tag[2] count[4]. */
export const RREAD_HEADER = 11;
/** Bytes a Twrite carries before its data: size[4] type[1] tag[2] fid[4] offset[8] count[4]. */
export const TWRITE_HEADER = 23;

/**
 * Encode all of `msg` but its data (an Rread's or a Twrite's: the
 * {@link RREAD_HEADER} or {@link TWRITE_HEADER} bytes in front of it) into
 * the start of `into`, which must have room. The frame is this header
 * followed by the data, so a caller can send data where it lies: in room
 * kept in front of it in the same buffer, or in a write of its own after
 * the header. Returns the header's length. Fields are checked as
 * {@link encode} checks them.
 *
 * @example
 * ```ts
 * import { encode, encodeHeader, RREAD_HEADER } from "./codec.ts";
 * import { MsgType } from "./types.ts";
 * const buf = new Uint8Array(RREAD_HEADER + 3);
 * buf.set([1, 2, 3], RREAD_HEADER);
 * const msg = { type: MsgType.Rread, tag: 5, data: buf.subarray(RREAD_HEADER) } as const;
 * encodeHeader(msg, buf);
 * if (buf.join() !== encode(msg).join()) throw new Error("wrong bytes");
 * ```
 */
export function encodeHeader(msg: Rread | Twrite, into: Uint8Array): number {
  const spec = specFor(msg);
  const size = HEADER_SIZE + spec.size(msg);
  if (size > 0xffffffff) throw new CodecError(`${spec.name} of ${size} bytes is too large`);
  const n = size - msg.data.length;
  if (into.length < n) {
    throw new CodecError(`${spec.name} header needs ${n} bytes; the buffer has ${into.length}`);
  }
  const w = new Writer(into);
  w.u32(size);
  w.u8(msg.type);
  w.u16(msg.tag);
  spec.head!(w, msg);
  return n;
}

/**
 * Decode `frame`, which must hold exactly one message including its size[4].
 * Rread and Twrite data is returned as a view into `frame` (no copy).
 * `msize`, when given, is the negotiated maximum message size.
 *
 * Throws {@link CodecError} for anything malformed; when the header could be
 * read, the error carries the message's tag.
 *
 * @example
 * ```ts
 * import { decode } from "./codec.ts";
 * const m = decode(new Uint8Array([11, 0, 0, 0, 120, 1, 0, 2, 0, 0, 0]));
 * if (m.type !== 120 || m.fid !== 2) throw new Error("wrong message");
 * ```
 */
export function decode(frame: Uint8Array, msize?: number): Msg {
  if (!(frame instanceof Uint8Array)) throw new CodecError("frame is not a Uint8Array");
  const len = frame.length;
  if (len < HEADER_SIZE) {
    throw new CodecError(`frame of ${len} bytes is shorter than the 7-byte header`);
  }
  const size = getU32(frame, 0);
  if (size < HEADER_SIZE) throw new CodecError(`message size ${size} is below the minimum of 7`);
  if (msize !== undefined && size > msize) {
    throw new CodecError(`message size ${size} exceeds msize ${msize}`);
  }
  if (size !== len) {
    throw new CodecError(`message size field says ${size} bytes but the frame has ${len}`);
  }
  const type = frame[4]!;
  const tag = frame[5]! | frame[6]! << 8;
  const spec = table[type];
  if (!spec) throw new CodecError(`unknown message type ${type}`, tag, type);
  const r = new Reader(frame, HEADER_SIZE, len, spec.name);
  r.tag = tag;
  r.msgType = type;
  const msg = spec.read(r, tag);
  if (r.pos !== len) r.fail(`${len - r.pos} bytes of trailing garbage`);
  return msg;
}
