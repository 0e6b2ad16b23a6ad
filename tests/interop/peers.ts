/**
 * Scripted 9P2000 peers that reproduce, message for message, what Inferno's
 * `emu` (`mount -A`), Inferno's `export`, plan9port's `9p` and plan9port's
 * `9pfuse` put on the wire.
 *
 * The peers do not use Ferry's codec: they build and parse frames with the
 * small, separate encoder below, written from intro(5), so a mistake shared
 * by Ferry's encoder and decoder cannot hide itself.
 *
 * @module
 */

import { serve } from "../../lib/styx/server.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";

// ---------------------------------------------------------------------------
// Constants (intro(5), open(5), stat(5))

/** Tag of Tversion. */
export const NOTAG = 0xffff;
/** "No fid". */
export const NOFID = 0xffffffff;
/** size[4] type[1] tag[2] fid[4] offset[8] count[4]. */
export const IOHDRSZ = 24;
export const OREAD = 0;
export const OWRITE = 1;
export const ORDWR = 2;
export const OTRUNC = 0x10;
export const DMDIR = 0x80000000;
export const QTDIR = 0x80;

/** Message type numbers, by name. */
export const T = {
  version: 100,
  auth: 102,
  attach: 104,
  error: 107,
  flush: 108,
  walk: 110,
  open: 112,
  create: 114,
  read: 116,
  write: 118,
  clunk: 120,
  remove: 122,
  stat: 124,
  wstat: 126,
} as const;

const te = new TextEncoder();
const td = new TextDecoder();

// ---------------------------------------------------------------------------
// Encoding

/** Little-endian byte builder. */
class Out {
  #b: number[] = [];
  #tail: Uint8Array[] = [];
  u8(n: number): this {
    this.#b.push(n & 0xff);
    return this;
  }
  u16(n: number): this {
    return this.u8(n).u8(n >>> 8);
  }
  u32(n: number): this {
    return this.u16(n & 0xffff).u16(n >>> 16);
  }
  u64(n: bigint): this {
    return this.u32(Number(n & 0xffffffffn)).u32(Number((n >> 32n) & 0xffffffffn));
  }
  str(s: string): this {
    const b = te.encode(s);
    this.u16(b.length);
    for (const x of b) this.#b.push(x);
    return this;
  }
  bytes(b: Uint8Array): this {
    for (const x of b) this.#b.push(x);
    return this;
  }
  /** Data appended after everything else without going through the number array. */
  tail(b: Uint8Array): this {
    this.#tail.push(b);
    return this;
  }
  done(): Uint8Array {
    const n = this.#b.length + this.#tail.reduce((s, x) => s + x.length, 0);
    const r = new Uint8Array(n);
    r.set(this.#b, 0);
    let o = this.#b.length;
    for (const t of this.#tail) {
      r.set(t, o);
      o += t.length;
    }
    return r;
  }
}

/** A qid as the wire carries it. */
export interface WQid {
  type: number;
  version: number;
  path: bigint;
}

/** A stat(5) entry as the wire carries it. */
export interface WDir {
  type: number;
  dev: number;
  qid: WQid;
  mode: number;
  atime: number;
  mtime: number;
  length: bigint;
  name: string;
  uid: string;
  gid: string;
  muid: string;
}

/** A stat entry with every field "don't touch" (wstat(5)). */
export function nullDir(): WDir {
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

function putQid(o: Out, q: WQid): Out {
  return o.u8(q.type).u32(q.version).u64(q.path);
}

/** A stat entry with its leading size[2]. */
export function statBytes(d: WDir): Uint8Array {
  const body = new Out().u16(d.type).u32(d.dev);
  putQid(body, d.qid).u32(d.mode).u32(d.atime).u32(d.mtime).u64(d.length)
    .str(d.name).str(d.uid).str(d.gid).str(d.muid);
  const b = body.done();
  return new Out().u16(b.length).bytes(b).done();
}

/** size[4] type[1] tag[2] body. */
function frame(type: number, tag: number, body: Out = new Out()): Uint8Array {
  const b = body.done();
  return new Out().u32(7 + b.length).u8(type).u16(tag).tail(b).done();
}

/** Builders of T-messages, field by field as intro(5) lists them. */
export const tmsg = {
  version: (tag: number, msize: number, version: string) =>
    frame(T.version, tag, new Out().u32(msize).str(version)),
  auth: (tag: number, afid: number, uname: string, aname: string) =>
    frame(T.auth, tag, new Out().u32(afid).str(uname).str(aname)),
  attach: (tag: number, fid: number, afid: number, uname: string, aname: string) =>
    frame(T.attach, tag, new Out().u32(fid).u32(afid).str(uname).str(aname)),
  flush: (tag: number, oldtag: number) => frame(T.flush, tag, new Out().u16(oldtag)),
  walk: (tag: number, fid: number, newfid: number, names: string[]) => {
    const o = new Out().u32(fid).u32(newfid).u16(names.length);
    for (const n of names) o.str(n);
    return frame(T.walk, tag, o);
  },
  open: (tag: number, fid: number, mode: number) => frame(T.open, tag, new Out().u32(fid).u8(mode)),
  create: (tag: number, fid: number, name: string, perm: number, mode: number) =>
    frame(T.create, tag, new Out().u32(fid).str(name).u32(perm).u8(mode)),
  read: (tag: number, fid: number, offset: bigint, count: number) =>
    frame(T.read, tag, new Out().u32(fid).u64(offset).u32(count)),
  write: (tag: number, fid: number, offset: bigint, data: Uint8Array) =>
    frame(T.write, tag, new Out().u32(fid).u64(offset).u32(data.length).tail(data)),
  clunk: (tag: number, fid: number) => frame(T.clunk, tag, new Out().u32(fid)),
  remove: (tag: number, fid: number) => frame(T.remove, tag, new Out().u32(fid)),
  stat: (tag: number, fid: number) => frame(T.stat, tag, new Out().u32(fid)),
  wstat: (tag: number, fid: number, d: WDir) => {
    const s = statBytes(d);
    return frame(T.wstat, tag, new Out().u32(fid).u16(s.length).bytes(s));
  },
};

/** Builders of R-messages, for the scripted server. */
export const rmsg = {
  version: (tag: number, msize: number, version: string) =>
    frame(T.version + 1, tag, new Out().u32(msize).str(version)),
  error: (tag: number, ename: string) => frame(T.error, tag, new Out().str(ename)),
  flush: (tag: number) => frame(T.flush + 1, tag),
  attach: (tag: number, q: WQid) => frame(T.attach + 1, tag, putQid(new Out(), q)),
  walk: (tag: number, qids: WQid[]) => {
    const o = new Out().u16(qids.length);
    for (const q of qids) putQid(o, q);
    return frame(T.walk + 1, tag, o);
  },
  open: (tag: number, q: WQid, iounit: number) =>
    frame(T.open + 1, tag, putQid(new Out(), q).u32(iounit)),
  create: (tag: number, q: WQid, iounit: number) =>
    frame(T.create + 1, tag, putQid(new Out(), q).u32(iounit)),
  read: (tag: number, data: Uint8Array) =>
    frame(T.read + 1, tag, new Out().u32(data.length).tail(data)),
  write: (tag: number, count: number) => frame(T.write + 1, tag, new Out().u32(count)),
  clunk: (tag: number) => frame(T.clunk + 1, tag),
  remove: (tag: number) => frame(T.remove + 1, tag),
  stat: (tag: number, d: WDir) => {
    const s = statBytes(d);
    return frame(T.stat + 1, tag, new Out().u16(s.length).bytes(s));
  },
  wstat: (tag: number) => frame(T.wstat + 1, tag),
};

// ---------------------------------------------------------------------------
// Decoding

/** Little-endian reader that throws on overrun. */
class In {
  off: number;
  readonly #dv: DataView;
  constructor(readonly buf: Uint8Array, off = 0) {
    this.off = off;
    this.#dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  #need(n: number): void {
    if (this.off + n > this.buf.length) {
      throw new Error(
        `message overrun: need ${n} bytes at offset ${this.off} of ${this.buf.length}`,
      );
    }
  }
  u8(): number {
    this.#need(1);
    return this.buf[this.off++]!;
  }
  u16(): number {
    this.#need(2);
    const v = this.#dv.getUint16(this.off, true);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.#need(4);
    const v = this.#dv.getUint32(this.off, true);
    this.off += 4;
    return v;
  }
  u64(): bigint {
    this.#need(8);
    const v = this.#dv.getBigUint64(this.off, true);
    this.off += 8;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.#need(n);
    const b = this.buf.slice(this.off, this.off + n);
    this.off += n;
    return b;
  }
  str(): string {
    return td.decode(this.bytes(this.u16()));
  }
  qid(): WQid {
    return { type: this.u8(), version: this.u32(), path: this.u64() };
  }
}

/** Parse one stat entry (with its size[2]) at `off`; returns it and the next offset. */
export function parseStat(buf: Uint8Array, off = 0): { dir: WDir; next: number } {
  const i = new In(buf, off);
  const size = i.u16();
  const end = i.off + size;
  const dir: WDir = {
    type: i.u16(),
    dev: i.u32(),
    qid: i.qid(),
    mode: i.u32(),
    atime: i.u32(),
    mtime: i.u32(),
    length: i.u64(),
    name: i.str(),
    uid: i.str(),
    gid: i.str(),
    muid: i.str(),
  };
  if (i.off !== end) throw new Error(`stat entry size ${size} does not match its fields`);
  return { dir, next: end };
}

/** Parse the concatenated entries of a directory read. */
export function parseStats(buf: Uint8Array): WDir[] {
  const out: WDir[] = [];
  let off = 0;
  while (off < buf.length) {
    const { dir, next } = parseStat(buf, off);
    out.push(dir);
    off = next;
  }
  return out;
}

/** Any message, parsed: the fields its type carries are set. */
export interface Parsed {
  type: number;
  tag: number;
  /** The frame exactly as it travelled. */
  raw: Uint8Array;
  msize?: number;
  version?: string;
  ename?: string;
  afid?: number;
  fid?: number;
  newfid?: number;
  uname?: string;
  aname?: string;
  oldtag?: number;
  names?: string[];
  qid?: WQid;
  qids?: WQid[];
  iounit?: number;
  mode?: number;
  perm?: number;
  name?: string;
  offset?: bigint;
  count?: number;
  data?: Uint8Array;
  stat?: WDir;
}

/** Parse a whole frame, T or R. Throws on anything malformed. */
export function parse(raw: Uint8Array): Parsed {
  const i = new In(raw);
  const size = i.u32();
  if (size !== raw.length) throw new Error(`frame size ${size} but ${raw.length} bytes`);
  const type = i.u8();
  const m: Parsed = { type, tag: i.u16(), raw };
  switch (type) {
    case T.version:
    case T.version + 1:
      m.msize = i.u32();
      m.version = i.str();
      break;
    case T.auth:
      m.afid = i.u32();
      m.uname = i.str();
      m.aname = i.str();
      break;
    case T.auth + 1:
    case T.attach + 1:
      m.qid = i.qid();
      break;
    case T.attach:
      m.fid = i.u32();
      m.afid = i.u32();
      m.uname = i.str();
      m.aname = i.str();
      break;
    case T.error:
      m.ename = i.str();
      break;
    case T.flush:
      m.oldtag = i.u16();
      break;
    case T.walk: {
      m.fid = i.u32();
      m.newfid = i.u32();
      const n = i.u16();
      m.names = [];
      for (let k = 0; k < n; k++) m.names.push(i.str());
      break;
    }
    case T.walk + 1: {
      const n = i.u16();
      m.qids = [];
      for (let k = 0; k < n; k++) m.qids.push(i.qid());
      break;
    }
    case T.open:
      m.fid = i.u32();
      m.mode = i.u8();
      break;
    case T.open + 1:
    case T.create + 1:
      m.qid = i.qid();
      m.iounit = i.u32();
      break;
    case T.create:
      m.fid = i.u32();
      m.name = i.str();
      m.perm = i.u32();
      m.mode = i.u8();
      break;
    case T.read:
      m.fid = i.u32();
      m.offset = i.u64();
      m.count = i.u32();
      break;
    case T.read + 1:
      m.data = i.bytes(i.u32());
      break;
    case T.write:
      m.fid = i.u32();
      m.offset = i.u64();
      m.data = i.bytes(i.u32());
      break;
    case T.write + 1:
      m.count = i.u32();
      break;
    case T.clunk:
    case T.remove:
    case T.stat:
      m.fid = i.u32();
      break;
    case T.stat + 1: {
      const n = i.u16();
      const s = i.bytes(n);
      m.stat = parseStat(s).dir;
      break;
    }
    case T.wstat: {
      m.fid = i.u32();
      const n = i.u16();
      m.stat = parseStat(i.bytes(n)).dir;
      break;
    }
    case T.flush + 1:
    case T.clunk + 1:
    case T.remove + 1:
    case T.wstat + 1:
      break;
    default:
      throw new Error(`unknown message type ${type}`);
  }
  if (i.off !== raw.length) {
    throw new Error(`type ${type}: ${raw.length - i.off} bytes left over after the fields`);
  }
  return m;
}

// ---------------------------------------------------------------------------
// A framed TCP connection

/** One side of a TCP connection that sends and receives whole 9P frames. */
export class Wire {
  #buf = new Uint8Array(0);
  #closed = false;
  /** Every frame sent ("T" for a client, "R" for a server) and received, in order. */
  readonly log: Array<{ dir: "out" | "in"; msg: Parsed }> = [];

  constructor(readonly conn: Deno.Conn) {}

  /** Dial `port` on 127.0.0.1. */
  static async dial(port: number): Promise<Wire> {
    return new Wire(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Send one frame. */
  async send(f: Uint8Array): Promise<void> {
    this.log.push({ dir: "out", msg: parse(f) });
    let off = 0;
    while (off < f.length) off += await this.conn.write(f.subarray(off));
  }

  async #fill(n: number): Promise<boolean> {
    while (this.#buf.length < n) {
      const chunk = new Uint8Array(64 * 1024);
      let k: number | null;
      try {
        k = await this.conn.read(chunk);
      } catch {
        k = null;
      }
      if (k === null) return false;
      const nb = new Uint8Array(this.#buf.length + k);
      nb.set(this.#buf);
      nb.set(chunk.subarray(0, k), this.#buf.length);
      this.#buf = nb;
    }
    return true;
  }

  /** True when a whole frame has already arrived and can be received at once. */
  hasFrame(): boolean {
    if (this.#buf.length < 4) return false;
    const size = new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(0, true);
    return this.#buf.length >= size;
  }

  /** The next whole frame, or null at end of stream. */
  async recvRaw(): Promise<Uint8Array | null> {
    if (!await this.#fill(4)) return null;
    const size = new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(0, true);
    if (size < 7) throw new Error(`frame size ${size} is below 7`);
    if (!await this.#fill(size)) return null;
    const f = this.#buf.slice(0, size);
    this.#buf = this.#buf.slice(size);
    return f;
  }

  /** The next frame, parsed; throws at end of stream. */
  async recv(): Promise<Parsed> {
    const f = await this.recvRaw();
    if (f === null) throw new Error("connection closed by the other end");
    const m = parse(f);
    this.log.push({ dir: "in", msg: m });
    return m;
  }

  /** Send a T-message and return its reply, checking the tag and the type. */
  async rpc(f: Uint8Array): Promise<Parsed> {
    await this.send(f);
    const t = this.log[this.log.length - 1]!.msg;
    const r = await this.recv();
    if (r.tag !== t.tag) throw new Error(`reply tag ${r.tag} to a request with tag ${t.tag}`);
    if (r.type !== T.error && r.type !== t.type + 1) {
      throw new Error(`reply type ${r.type} to a request of type ${t.type}`);
    }
    return r;
  }

  /** Close the connection (as a process exiting does). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** An Rerror, as an exception. */
export class WireError extends Error {
  constructor(readonly ename: string) {
    super(ename);
    this.name = "WireError";
  }
}

function ok(r: Parsed): Parsed {
  if (r.type === T.error) throw new WireError(r.ename ?? "");
  return r;
}

/** Split a path into names, dropping empty names and "." (as lib9pclient does). */
function names(path: string): string[] {
  return path.split("/").filter((n) => n !== "" && n !== ".");
}

/** What a sequence of reads returned: all the data, each reply's count, each reply's data. */
export interface Reads {
  data: Uint8Array;
  counts: number[];
  parts: Uint8Array[];
}

// ---------------------------------------------------------------------------
// Inferno emu, `mount -A 'tcp!host!port' /n/ferry`

/**
 * Inferno's `emu` as a 9P client. Tversion goes first with tag NOTAG and
 * msize 8216, then Tattach with afid NOFID and the host user, never Tauth.
 * Everything after Tversion uses tag 1, one request at a time; directories
 * are read 2048 bytes at a time and files 8192; files are created with perm
 * 0666 and mode OWRITE and then written.
 */
export class InfernoMount {
  static readonly MSIZE = 8216;
  static readonly TAG = 1;
  static readonly DIRREAD = 2048;
  static readonly FILEREAD = 8192;
  #nextFid = 1;
  /** Fid of the attached root. */
  root = 0;
  /** The negotiated msize. */
  msize = 0;
  /** The Rversion exactly as it arrived. */
  rversion: Uint8Array | null = null;

  private constructor(readonly wire: Wire) {}

  /** Dial, send Tversion and Tattach. */
  static async mount(port: number, user: string): Promise<InfernoMount> {
    const m = new InfernoMount(await Wire.dial(port));
    try {
      const r = ok(await m.wire.rpc(tmsg.version(NOTAG, InfernoMount.MSIZE, "9P2000")));
      m.rversion = r.raw;
      m.msize = r.msize!;
      m.root = m.#fid();
      ok(await m.rpc(tmsg.attach(InfernoMount.TAG, m.root, NOFID, user, "")));
    } catch (e) {
      m.wire.close();
      throw e;
    }
    return m;
  }

  #fid(): number {
    return this.#nextFid++;
  }

  /** Send a request with tag 1 and wait for its reply. */
  rpc(f: Uint8Array): Promise<Parsed> {
    return this.wire.rpc(f);
  }

  /** Walk a new fid to `path`; throws WireError when any name is missing. */
  async walk(path: string): Promise<{ fid: number; qids: WQid[] }> {
    const fid = this.#fid();
    const ns = names(path);
    const r = ok(await this.rpc(tmsg.walk(InfernoMount.TAG, this.root, fid, ns)));
    if (r.qids!.length !== ns.length) throw new WireError("file does not exist");
    return { fid, qids: r.qids! };
  }

  async #readAll(fid: number, count: number): Promise<Reads> {
    const parts: Uint8Array[] = [];
    const counts: number[] = [];
    let off = 0n;
    for (;;) {
      const r = ok(await this.rpc(tmsg.read(InfernoMount.TAG, fid, off, count)));
      counts.push(r.data!.length);
      if (r.data!.length === 0) break;
      parts.push(r.data!);
      off += BigInt(r.data!.length);
    }
    const n = parts.reduce((s, p) => s + p.length, 0);
    const data = new Uint8Array(n);
    let o = 0;
    for (const p of parts) {
      data.set(p, o);
      o += p.length;
    }
    return { data, counts, parts };
  }

  /** `ls`: open the directory and read it 2048 bytes at a time. */
  async ls(path: string): Promise<Reads & { dirs: WDir[] }> {
    const { fid } = await this.walk(path);
    try {
      ok(await this.rpc(tmsg.open(InfernoMount.TAG, fid, OREAD)));
      const r = await this.#readAll(fid, InfernoMount.DIRREAD);
      return { ...r, dirs: parseStats(r.data) };
    } finally {
      await this.rpc(tmsg.clunk(InfernoMount.TAG, fid));
    }
  }

  /** `cat`: open the file and read it 8192 bytes at a time. */
  async cat(path: string): Promise<Reads> {
    const { fid } = await this.walk(path);
    try {
      ok(await this.rpc(tmsg.open(InfernoMount.TAG, fid, OREAD)));
      return await this.#readAll(fid, InfernoMount.FILEREAD);
    } finally {
      await this.rpc(tmsg.clunk(InfernoMount.TAG, fid));
    }
  }

  /** Create `name` in `dir` (perm 0666, mode OWRITE) and write `data` into it. */
  async create(dir: string, name: string, data: Uint8Array): Promise<Parsed> {
    const { fid } = await this.walk(dir);
    try {
      const r = ok(await this.rpc(tmsg.create(InfernoMount.TAG, fid, name, 0o666, OWRITE)));
      for (let off = 0; off < data.length; off += InfernoMount.FILEREAD) {
        const piece = data.subarray(off, off + InfernoMount.FILEREAD);
        const w = ok(await this.rpc(tmsg.write(InfernoMount.TAG, fid, BigInt(off), piece)));
        if (w.count !== piece.length) throw new Error(`short write: ${w.count} of ${piece.length}`);
      }
      return r;
    } finally {
      await this.rpc(tmsg.clunk(InfernoMount.TAG, fid));
    }
  }

  /** `rm`: walk and Tremove (the fid is gone either way). */
  async remove(path: string): Promise<void> {
    const { fid } = await this.walk(path);
    ok(await this.rpc(tmsg.remove(InfernoMount.TAG, fid)));
  }

  /** Stat the file at `path`. */
  async stat(path: string): Promise<WDir> {
    const { fid } = await this.walk(path);
    try {
      return ok(await this.rpc(tmsg.stat(InfernoMount.TAG, fid))).stat!;
    } finally {
      await this.rpc(tmsg.clunk(InfernoMount.TAG, fid));
    }
  }

  /** Twstat the file at `path` with `change` applied to a "don't touch" entry. */
  async wstat(path: string, change: Partial<WDir>): Promise<void> {
    const { fid } = await this.walk(path);
    try {
      ok(await this.rpc(tmsg.wstat(InfernoMount.TAG, fid, { ...nullDir(), ...change })));
    } finally {
      await this.rpc(tmsg.clunk(InfernoMount.TAG, fid));
    }
  }

  /** Hang up. */
  unmount(): void {
    this.wire.close();
  }
}

// ---------------------------------------------------------------------------
// plan9port 9p(1), `9p -a 'tcp!host!port' ls|read|write|stat NAME`

/**
 * plan9port's `9p` command (lib9pclient). Each invocation dials, sends
 * Tversion (tag NOTAG, msize 8192), tries Tauth (afid 0), and on its
 * Rerror attaches with fid 0 and afid NOFID; later requests all use tag 0.
 * Fids come from a free list, most recently freed first. A path is walked
 * with up to 16 names per Twalk from a fresh fid; `read` reads 4096 bytes
 * at a time, `write` writes what each read of standard input gave (at most
 * 4096), and directory reads ask for the most a Rread can carry. The command
 * exits without clunking the file it read or wrote.
 */
export class P9p {
  static readonly MSIZE = 8192;
  static readonly TAG = 0;
  /** sizeof buf in read and write. */
  static readonly BUF = 4096;
  #free: number[] = [];
  #next = 0;
  msize = 0;
  root = 0;
  /** The Rerror that Tauth got. */
  authError = "";

  private constructor(readonly wire: Wire, readonly user: string) {}

  /** Dial and mount as fsamount does. */
  static async mount(port: number, user: string, aname = ""): Promise<P9p> {
    const p = new P9p(await Wire.dial(port), user);
    try {
      const v = ok(await p.wire.rpc(tmsg.version(NOTAG, P9p.MSIZE, "9P2000")));
      p.msize = v.msize!;
      const afid = p.#getFid();
      const a = await p.wire.rpc(tmsg.auth(P9p.TAG, afid, user, aname));
      if (a.type !== T.error) throw new Error("expected Tauth to be refused");
      p.authError = a.ename!;
      p.#putFid(afid);
      p.root = p.#getFid();
      ok(await p.wire.rpc(tmsg.attach(P9p.TAG, p.root, NOFID, user, aname)));
    } catch (e) {
      p.wire.close();
      throw e;
    }
    return p;
  }

  #getFid(): number {
    return this.#free.pop() ?? this.#next++;
  }

  #putFid(f: number): void {
    this.#free.push(f);
  }

  async #clunk(fid: number): Promise<void> {
    await this.wire.rpc(tmsg.clunk(P9p.TAG, fid));
    this.#putFid(fid);
  }

  /** _fswalk: up to 16 names per Twalk, continuing from the new fid. */
  async walk(path: string): Promise<number> {
    const wfid = this.#getFid();
    const all = names(path);
    let n = 0;
    do {
      const batch = all.slice(n, n + 16);
      const r = await this.wire.rpc(
        tmsg.walk(P9p.TAG, n > 0 ? wfid : this.root, wfid, batch),
      );
      if (r.type === T.error || r.qids!.length !== batch.length) {
        if (n > 0) await this.#clunk(wfid);
        else this.#putFid(wfid);
        throw new WireError(r.type === T.error ? r.ename! : `file '${path}' not found`);
      }
      n += batch.length;
    } while (n < all.length);
    return wfid;
  }

  /** fsopen: walk, then Topen, clunking on failure. */
  async open(path: string, mode: number): Promise<number> {
    const fid = await this.walk(path);
    const r = await this.wire.rpc(tmsg.open(P9p.TAG, fid, mode));
    if (r.type === T.error) {
      await this.#clunk(fid);
      throw new WireError(r.ename!);
    }
    return fid;
  }

  /** fsdirstat: walk, Tstat, clunk. */
  async stat(path: string): Promise<WDir> {
    const fid = await this.walk(path);
    try {
      return ok(await this.wire.rpc(tmsg.stat(P9p.TAG, fid))).stat!;
    } finally {
      await this.#clunk(fid);
    }
  }

  /** `9p ls`: dirstat, then open and read the whole directory. */
  async ls(path: string): Promise<{ dirs: WDir[]; counts: number[] }> {
    const d = await this.stat(path);
    if (!(d.mode & DMDIR)) return { dirs: [d], counts: [] };
    const fid = await this.open(path, OREAD);
    const parts: WDir[] = [];
    const counts: number[] = [];
    let off = 0n;
    try {
      for (;;) {
        // DIRMAX (sizeof(Dir)+STATMAX) is always more than msize-IOHDRSZ.
        const r = ok(await this.wire.rpc(tmsg.read(P9p.TAG, fid, off, this.msize - IOHDRSZ)));
        counts.push(r.count ?? r.data!.length);
        if (r.data!.length === 0) break;
        parts.push(...parseStats(r.data!));
        off += BigInt(r.data!.length);
      }
    } finally {
      await this.#clunk(fid);
    }
    return { dirs: parts, counts };
  }

  /** `9p read`: open OREAD, read 4096 bytes at a time until a 0-byte reply, exit. */
  async read(path: string): Promise<{ data: Uint8Array; counts: number[] }> {
    const fid = await this.open(path, OREAD);
    const chunks: Uint8Array[] = [];
    const counts: number[] = [];
    let off = 0n;
    for (;;) {
      const r = ok(
        await this.wire.rpc(
          tmsg.read(P9p.TAG, fid, off, Math.min(P9p.BUF, this.msize - IOHDRSZ)),
        ),
      );
      counts.push(r.data!.length);
      if (r.data!.length === 0) break;
      chunks.push(r.data!);
      off += BigInt(r.data!.length);
    }
    this.wire.close();
    const total = chunks.reduce((s, c) => s + c.length, 0);
    const data = new Uint8Array(total);
    let o = 0;
    for (const c of chunks) {
      data.set(c, o);
      o += c.length;
    }
    return { data, counts };
  }

  /**
   * `9p write`: open OWRITE|OTRUNC and write each piece standard input gave
   * (a 0-byte Twrite when there was nothing), then exit.
   */
  async write(path: string, pieces: Uint8Array[]): Promise<void> {
    const fid = await this.open(path, OWRITE | OTRUNC);
    let off = 0n;
    const list = pieces.length === 0 ? [new Uint8Array(0)] : pieces;
    for (const p of list) {
      if (p.length > P9p.BUF) throw new Error("a read of standard input gives at most 4096 bytes");
      const r = ok(await this.wire.rpc(tmsg.write(P9p.TAG, fid, off, p)));
      off += BigInt(r.count!);
    }
    this.wire.close();
  }

  /** Exit without unmounting. */
  close(): void {
    this.wire.close();
  }
}

// ---------------------------------------------------------------------------
// plan9port 9pfuse

/** The errno values 9pfuse can produce from an error string. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EPIPE: 32,
  ERANGE: 34,
  EROFS: 30,
  ETIMEDOUT: 110,
  EPROTO: 71,
} as const;

/**
 * How 9pfuse turns an Rerror string into an errno: the first of these words
 * found in the string (ignoring case) decides, in this order; ERANGE when
 * none matches. ("directory not empty" therefore becomes ENOTDIR.)
 */
const ERRWORDS: Array<[string, number]> = [
  ["permitted", Errno.EPERM],
  ["permission", Errno.EACCES],
  ["access", Errno.EACCES],
  ["exists", Errno.EEXIST],
  ["exist", Errno.ENOENT],
  ["no such", Errno.ENOENT],
  ["not found", Errno.ENOENT],
  ["input/output", Errno.EIO],
  ["timeout", Errno.ETIMEDOUT],
  ["timed out", Errno.ETIMEDOUT],
  ["i/o", Errno.EIO],
  ["too long", Errno.E2BIG],
  ["interrupt", Errno.EINTR],
  ["bad file", Errno.EBADF],
  [" fid ", Errno.EBADF],
  ["temporar", Errno.EAGAIN],
  ["memory", Errno.ENOMEM],
  ["is a directory", Errno.EISDIR],
  ["directory", Errno.ENOTDIR],
  ["argument", Errno.EINVAL],
  ["pipe", Errno.EPIPE],
  ["in use", Errno.EBUSY],
  ["busy", Errno.EBUSY],
  ["illegal", Errno.EINVAL],
  ["read-only", Errno.EROFS],
  ["read only", Errno.EROFS],
  ["proto", Errno.EPROTO],
  ["entry", Errno.ENOENT],
];

/** The errno 9pfuse reports for an Rerror string. */
export function errnoFor(ename: string): number {
  const e = ename.toLowerCase();
  for (const [w, n] of ERRWORDS) if (e.includes(w)) return n;
  return Errno.ERANGE;
}

/** The inode number 9pfuse gives a file: qid.path with qid.type in the top byte. */
export function inodeOf(q: WQid): bigint {
  return (q.path | (BigInt(q.type) << 56n)) & 0xffffffffffffffffn;
}

/** Fields of a FUSE setattr that 9pfuse passes on. */
export interface SetAttr {
  size?: bigint;
  atime?: number;
  mtime?: number;
  /** The st_mode the kernel passes: file-type bits included (e.g. 0o100644). */
  mode?: number;
}

/**
 * plan9port's 9pfuse as a 9P client: Tversion with msize 8192, Tattach
 * (no Tauth), and each FUSE request turned into the messages 9pfuse sends
 * for it. Fids stand in for FUSE node ids and file handles.
 */
export class NinePFuse {
  static readonly MSIZE = 8192;
  static readonly TAG = 0;
  /** Largest FUSE write (and read) 9pfuse accepts from the kernel. */
  static readonly MAXWRITE = 4096;
  #free: number[] = [];
  #next = 0;
  msize = 0;
  root = 0;

  private constructor(readonly wire: Wire) {}

  /** Dial and fsmount: Tversion, Tattach. */
  static async mount(port: number, user: string, aname = ""): Promise<NinePFuse> {
    const f = new NinePFuse(await Wire.dial(port));
    try {
      const v = ok(await f.wire.rpc(tmsg.version(NOTAG, NinePFuse.MSIZE, "9P2000")));
      f.msize = v.msize!;
      f.root = f.#getFid();
      ok(await f.wire.rpc(tmsg.attach(NinePFuse.TAG, f.root, NOFID, user, aname)));
    } catch (e) {
      f.wire.close();
      throw e;
    }
    return f;
  }

  #getFid(): number {
    return this.#free.pop() ?? this.#next++;
  }

  rpc(f: Uint8Array): Promise<Parsed> {
    return this.wire.rpc(f);
  }

  /** Tclunk a fid (FUSE forget or release). */
  async clunk(fid: number): Promise<void> {
    await this.rpc(tmsg.clunk(NinePFuse.TAG, fid));
    this.#free.push(fid);
  }

  async #walk(from: number, ns: string[]): Promise<{ fid: number; qid: WQid | null }> {
    const fid = this.#getFid();
    const r = await this.rpc(tmsg.walk(NinePFuse.TAG, from, fid, ns));
    if (r.type === T.error || r.qids!.length !== ns.length) {
      this.#free.push(fid);
      throw new WireError(r.type === T.error ? r.ename! : "file not found");
    }
    return { fid, qid: r.qids!.length > 0 ? r.qids![r.qids!.length - 1]! : null };
  }

  async #stat(fid: number): Promise<WDir> {
    return ok(await this.rpc(tmsg.stat(NinePFuse.TAG, fid))).stat!;
  }

  /** FUSE_LOOKUP: walk one name from `dir` and stat it; the fid is the node id. */
  async lookup(dir: number, name: string): Promise<{ fid: number; dir: WDir }> {
    const { fid } = await this.#walk(dir, [name]);
    try {
      return { fid, dir: await this.#stat(fid) };
    } catch (e) {
      await this.clunk(fid);
      throw e;
    }
  }

  /** FUSE_GETATTR. */
  getattr(fid: number): Promise<WDir> {
    return this.#stat(fid);
  }

  /**
   * FUSE_SETATTR: a size of 0 alone becomes clone + open(OWRITE|OTRUNC) +
   * clunk; anything else is one Twstat with every other field "don't touch".
   * Then Tstat.
   */
  async setattr(fid: number, a: SetAttr): Promise<WDir> {
    const keys = Object.keys(a).filter((k) => a[k as keyof SetAttr] !== undefined);
    if (keys.length === 1 && a.size === 0n) {
      const { fid: nfid } = await this.#walk(fid, []);
      try {
        ok(await this.rpc(tmsg.open(NinePFuse.TAG, nfid, OWRITE | OTRUNC)));
      } finally {
        await this.clunk(nfid);
      }
    } else {
      const d = nullDir();
      if (a.size !== undefined) d.length = a.size;
      if (a.atime !== undefined) d.atime = a.atime;
      if (a.mtime !== undefined) d.mtime = a.mtime;
      if (a.mode !== undefined) d.mode = a.mode;
      ok(await this.rpc(tmsg.wstat(NinePFuse.TAG, fid, d)));
    }
    return this.#stat(fid);
  }

  /** FUSE_OPEN / FUSE_OPENDIR: clone the node's fid and open the clone. */
  async open(node: number, mode: number): Promise<number> {
    const { fid } = await this.#walk(node, []);
    const r = await this.rpc(tmsg.open(NinePFuse.TAG, fid, mode));
    if (r.type === T.error) {
      await this.clunk(fid);
      throw new WireError(r.ename!);
    }
    return fid;
  }

  /** FUSE_READ: one Tread at the kernel's offset, at most 4096 bytes. */
  async read(fh: number, offset: bigint, size: number): Promise<Uint8Array> {
    const n = Math.min(size, NinePFuse.MAXWRITE, this.msize - IOHDRSZ);
    return ok(await this.rpc(tmsg.read(NinePFuse.TAG, fh, offset, n))).data!;
  }

  /** FUSE_WRITE: one Twrite of at most 4096 bytes at the kernel's offset. */
  async write(fh: number, offset: bigint, data: Uint8Array): Promise<number> {
    if (data.length > NinePFuse.MAXWRITE) throw new Error("FUSE writes are at most 4096 bytes");
    return ok(await this.rpc(tmsg.write(NinePFuse.TAG, fh, offset, data))).count!;
  }

  /**
   * FUSE_READDIR from offset 0: walk ".." from the open directory fid (which
   * a server refuses; 9pfuse ignores that), then read until a 0-byte reply.
   */
  async readdir(fh: number): Promise<{ dirs: WDir[]; dotdot: Parsed }> {
    const probe = this.#getFid();
    const dotdot = await this.rpc(tmsg.walk(NinePFuse.TAG, fh, probe, [".."]));
    if (dotdot.type === T.error) this.#free.push(probe);
    else await this.clunk(probe);
    const dirs: WDir[] = [];
    let off = 0n;
    for (;;) {
      const r = ok(await this.rpc(tmsg.read(NinePFuse.TAG, fh, off, this.msize - IOHDRSZ)));
      if (r.data!.length === 0) break;
      dirs.push(...parseStats(r.data!));
      off += BigInt(r.data!.length);
    }
    return { dirs, dotdot };
  }

  /**
   * FUSE_CREATE (or FUSE_MKDIR with `mkdir`): clone the directory, Tcreate
   * with perm & 0777 (| DMDIR), Tstat it, then walk a second, unopened fid
   * to the new name for the node id.
   */
  async create(
    dir: number,
    name: string,
    perm: number,
    mode: number,
    mkdir = false,
  ): Promise<{ fh: number; node: number; dir: WDir }> {
    const { fid } = await this.#walk(dir, []);
    const p = (perm & 0o777) | (mkdir ? DMDIR : 0);
    const r = await this.rpc(tmsg.create(NinePFuse.TAG, fid, name, p, mkdir ? OREAD : mode));
    if (r.type === T.error) {
      await this.clunk(fid);
      throw new WireError(r.ename!);
    }
    const d = await this.#stat(fid);
    const { fid: node } = await this.#walk(dir, [name]);
    if (mkdir) {
      await this.clunk(fid);
      return { fh: -1, node, dir: d };
    }
    return { fh: fid, node, dir: d };
  }

  /** FUSE_UNLINK / FUSE_RMDIR: walk to the name and Tremove. */
  async remove(dir: number, name: string): Promise<void> {
    const { fid } = await this.#walk(dir, [name]);
    const r = await this.rpc(tmsg.remove(NinePFuse.TAG, fid));
    this.#free.push(fid);
    ok(r);
  }

  /** FUSE_RENAME within one directory: walk to `before`, Twstat with only the name. */
  async rename(dir: number, before: string, after: string): Promise<void> {
    const { fid } = await this.#walk(dir, [before]);
    try {
      ok(await this.rpc(tmsg.wstat(NinePFuse.TAG, fid, { ...nullDir(), name: after })));
    } finally {
      await this.clunk(fid);
    }
  }

  /** FUSE_FSYNC: a Twstat with every field "don't touch". */
  async fsync(fh: number): Promise<void> {
    ok(await this.rpc(tmsg.wstat(NinePFuse.TAG, fh, nullDir())));
  }

  /** Unmount: hang up. */
  close(): void {
    this.wire.close();
  }
}

// ---------------------------------------------------------------------------
// Inferno `export` (emu's exportfs) as a 9P server

interface ExNode {
  name: string;
  qid: WQid;
  mode: number;
  mtime: number;
  data: Uint8Array;
  children: Map<string, ExNode> | null;
  parent: ExNode | null;
}

interface ExFid {
  node: ExNode;
  omode: number;
  /** Where the next directory read must start, and the entry it starts at. */
  dirOff: bigint;
  dirIndex: number;
}

/** Where a scripted server listens and how to stop it. */
export interface ScriptedServer {
  port: number;
  /** Every T-message received, per connection, in order. */
  received: Parsed[][];
  /** How many groups of requests that arrived together were served last first. */
  reordered: number;
  /** The file at a slash-separated path, or undefined. */
  file(path: string): Uint8Array | undefined;
  close(): Promise<void>;
}

/**
 * A scripted Inferno `export` server (emu/port/exportfs.c behaviour): msize
 * is the client's, capped at 65560 (IOHDRSZ + 64 KiB), so 65536 comes back
 * unchanged; a version whose part before any "." is "9P2000" is answered
 * "9P2000" (so "9P2000.L" and "9P2000.u" get "9P2000"), anything else
 * "unknown"; Tauth gets "authentication not required". Requests are served
 * in arrival order, or, with `overtake`, requests that arrived together are
 * served last first (emu runs each request on whichever of several kernel
 * processes is free, so a pipelined request can overtake the one before it).
 * A Tstat gets a buffer of msize - 9 bytes whose size is kept in 16 bits, as
 * exportfs.c does, so above msize 65544 stats fail with "stat buffer too
 * small". Errors use Inferno's wording.
 */
export function startInfernoExport(
  files: Record<string, string | Uint8Array>,
  opts: { overtake?: boolean } = {},
): ScriptedServer {
  const MAXRPC = IOHDRSZ + 64 * 1024;
  let nextPath = 1n;
  const now = Math.floor(Date.now() / 1000);
  const mk = (name: string, dir: boolean, parent: ExNode | null): ExNode => ({
    name,
    qid: { type: dir ? QTDIR : 0, version: 0, path: nextPath++ },
    mode: dir ? (DMDIR | 0o775) >>> 0 : 0o664,
    mtime: now,
    data: new Uint8Array(0),
    children: dir ? new Map() : null,
    parent,
  });
  const root = mk("/", true, null);
  const lookup = (path: string): ExNode | undefined => {
    let n: ExNode | undefined = root;
    for (const name of names(path)) n = n?.children?.get(name);
    return n;
  };
  for (const [path, content] of Object.entries(files)) {
    const ns = names(path);
    let d = root;
    for (const name of ns.slice(0, -1)) {
      let c = d.children!.get(name);
      if (!c) d.children!.set(name, c = mk(name, true, d));
      d = c;
    }
    const f = mk(ns[ns.length - 1]!, false, d);
    f.data = typeof content === "string" ? te.encode(content) : content;
    d.children!.set(f.name, f);
  }
  const dirOf = (n: ExNode): WDir => ({
    type: 0x4d, // 'M'
    dev: 1,
    qid: n.qid,
    mode: n.mode,
    atime: n.mtime,
    mtime: n.mtime,
    length: n.children ? 0n : BigInt(n.data.length),
    name: n.name,
    uid: "inferno",
    gid: "inferno",
    muid: "inferno",
  });

  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received: Parsed[][] = [];
  const sessions: Promise<void>[] = [];
  const wires = new Set<Wire>();

  async function session(w: Wire, log: Parsed[]): Promise<void> {
    let msize = 0;
    const fids = new Map<number, ExFid>();
    for (;;) {
      const batch: Parsed[] = [];
      try {
        do batch.push(await w.recv()); while (w.hasFrame());
      } catch {
        return;
      }
      log.push(...batch);
      if (opts.overtake && batch.length > 1) {
        batch.reverse();
        server.reordered++;
      }
      for (const t of batch) {
        let reply: Uint8Array;
        try {
          reply = handle(t);
        } catch (e) {
          reply = rmsg.error(t.tag, (e as Error).message);
        }
        try {
          await w.send(reply);
        } catch {
          return;
        }
      }
    }

    function fidOf(n: number | undefined): ExFid {
      const f = fids.get(n ?? -1);
      if (!f) throw new Error("no such fid");
      return f;
    }

    function handle(t: Parsed): Uint8Array {
      switch (t.type) {
        case T.version: {
          let m = Math.min(t.msize!, MAXRPC);
          if (m < 64) throw new Error("message size too small");
          const v = t.version!.split(".")[0]!;
          fids.clear();
          if (v.startsWith("9P") && "9P2000" <= v) {
            msize = m;
            return rmsg.version(t.tag, m, "9P2000");
          }
          m = t.msize!;
          return rmsg.version(t.tag, Math.min(m, MAXRPC), "unknown");
        }
        case T.auth:
          throw new Error("authentication not required");
        case T.flush:
          return rmsg.flush(t.tag);
        case T.attach: {
          if (fids.has(t.fid!)) throw new Error("fid in use");
          fids.set(t.fid!, { node: root, omode: -1, dirOff: 0n, dirIndex: 0 });
          return rmsg.attach(t.tag, root.qid);
        }
        case T.walk: {
          const f = fidOf(t.fid);
          if (f.omode >= 0) throw new Error("walk of open fid");
          if (t.newfid !== t.fid && fids.has(t.newfid!)) throw new Error("fid in use");
          let n = f.node;
          const qids: WQid[] = [];
          for (const name of t.names!) {
            let next: ExNode | undefined;
            if (name === "..") next = n.parent ?? n;
            else if (!n.children) next = undefined;
            else next = n.children.get(name);
            if (!next) {
              if (qids.length === 0) {
                throw new Error(n.children ? "file does not exist" : "not a directory");
              }
              return rmsg.walk(t.tag, qids);
            }
            n = next;
            qids.push(n.qid);
          }
          fids.set(t.newfid!, { node: n, omode: -1, dirOff: 0n, dirIndex: 0 });
          return rmsg.walk(t.tag, qids);
        }
        case T.open: {
          const f = fidOf(t.fid);
          if (f.omode >= 0) throw new Error("open/create -- unknown mode");
          const m = t.mode! & 3;
          if (f.node.children && m !== OREAD) throw new Error("is a directory");
          if (t.mode! & OTRUNC) f.node.data = new Uint8Array(0);
          f.omode = t.mode!;
          return rmsg.open(t.tag, f.node.qid, msize - IOHDRSZ);
        }
        case T.create: {
          const f = fidOf(t.fid);
          if (f.omode >= 0) throw new Error("open/create -- unknown mode");
          if (!f.node.children) throw new Error("not a directory");
          const name = t.name!;
          if (name === "" || name === "." || name === ".." || name.includes("/")) {
            throw new Error("file name syntax");
          }
          if (f.node.children.has(name)) throw new Error("file exists");
          const isDir = (t.perm! & DMDIR) !== 0;
          const c = mk(name, isDir, f.node);
          c.mode = isDir
            ? (DMDIR | (t.perm! & 0o777 & f.node.mode)) >>> 0
            : t.perm! & (0o666 & f.node.mode | ~0o666) & 0o777;
          f.node.children.set(name, c);
          f.node = c;
          f.omode = t.mode!;
          return rmsg.create(t.tag, c.qid, msize - IOHDRSZ);
        }
        case T.read: {
          const f = fidOf(t.fid);
          if (f.omode < 0) throw new Error("open/create -- unknown mode");
          const m = f.omode & 3;
          if (m !== OREAD && m !== ORDWR) {
            throw new Error("read/write -- not open in suitable mode");
          }
          if (t.count! > msize - IOHDRSZ) throw new Error("read/write -- count too big");
          if (f.node.children) {
            if (t.offset === 0n) {
              f.dirOff = 0n;
              f.dirIndex = 0;
            } else if (t.offset !== f.dirOff) throw new Error("can't seek on a directory");
            const entries = [...f.node.children.values()];
            const parts: Uint8Array[] = [];
            let n = 0;
            while (f.dirIndex < entries.length) {
              const s = statBytes(dirOf(entries[f.dirIndex]!));
              if (n + s.length > t.count!) break;
              parts.push(s);
              n += s.length;
              f.dirIndex++;
            }
            const out = new Uint8Array(n);
            let o = 0;
            for (const p of parts) {
              out.set(p, o);
              o += p.length;
            }
            f.dirOff += BigInt(n);
            return rmsg.read(t.tag, out);
          }
          const off = Number(t.offset!);
          return rmsg.read(t.tag, f.node.data.slice(off, off + t.count!));
        }
        case T.write: {
          const f = fidOf(t.fid);
          if (f.omode < 0) throw new Error("open/create -- unknown mode");
          const m = f.omode & 3;
          if (m !== OWRITE && m !== ORDWR) {
            throw new Error("read/write -- not open in suitable mode");
          }
          if (t.data!.length > msize - IOHDRSZ) throw new Error("read/write -- count too big");
          const off = Number(t.offset!);
          const end = off + t.data!.length;
          if (end > f.node.data.length) {
            const nd = new Uint8Array(end);
            nd.set(f.node.data);
            f.node.data = nd;
          }
          f.node.data.set(t.data!, off);
          f.node.qid.version++;
          f.node.mtime = Math.floor(Date.now() / 1000);
          return rmsg.write(t.tag, t.data!.length);
        }
        case T.clunk:
          fidOf(t.fid);
          fids.delete(t.fid!);
          return rmsg.clunk(t.tag);
        case T.remove: {
          const f = fidOf(t.fid);
          fids.delete(t.fid!);
          if (!f.node.parent) throw new Error("permission denied");
          if (f.node.children && f.node.children.size > 0) throw new Error("directory not empty");
          f.node.parent.children!.delete(f.node.name);
          return rmsg.remove(t.tag);
        }
        case T.stat: {
          // exportfs.c hands the stat a buffer of msize - 9 bytes, kept in
          // a ushort (fcall.h's nstat): above msize 65544 the size wraps.
          const nstat = (msize - 9) & 0xffff;
          const d = dirOf(fidOf(t.fid).node);
          if (statBytes(d).length > nstat) throw new Error("stat buffer too small");
          return rmsg.stat(t.tag, d);
        }
        case T.wstat: {
          const f = fidOf(t.fid);
          const d = t.stat!;
          const n = f.node;
          if (d.name !== "" && d.name !== n.name) {
            if (!n.parent) throw new Error("permission denied");
            if (n.parent.children!.has(d.name)) throw new Error("file exists");
            n.parent.children!.delete(n.name);
            n.name = d.name;
            n.parent.children!.set(n.name, n);
          }
          if (d.length !== 0xffffffffffffffffn) {
            if (n.children) throw new Error("is a directory");
            const nd = new Uint8Array(Number(d.length));
            nd.set(n.data.subarray(0, nd.length));
            n.data = nd;
          }
          if (d.mode !== 0xffffffff) n.mode = ((n.mode & DMDIR) | (d.mode & 0o777)) >>> 0;
          if (d.mtime !== 0xffffffff) n.mtime = d.mtime;
          return rmsg.wstat(t.tag);
        }
      }
      throw new Error(`unknown message: type ${t.type}`);
    }
  }

  const accepting = (async () => {
    for (;;) {
      let c: Deno.Conn;
      try {
        c = await listener.accept();
      } catch {
        return;
      }
      const w = new Wire(c);
      wires.add(w);
      const log: Parsed[] = [];
      received.push(log);
      sessions.push(
        session(w, log).finally(() => {
          w.close();
          wires.delete(w);
        }),
      );
    }
  })();

  const server: ScriptedServer = {
    port: (listener.addr as Deno.NetAddr).port,
    received,
    reordered: 0,
    file(path: string) {
      const n = lookup(path);
      return n && !n.children ? n.data : undefined;
    },
    async close() {
      try {
        listener.close();
      } catch { /* closed */ }
      await accepting;
      for (const w of wires) w.close();
      await Promise.all(sessions);
    },
  };
  return server;
}

// ---------------------------------------------------------------------------
// Ferry servers for the peers to talk to

/** A Ferry server on 127.0.0.1 and the means to stop it. */
export interface FerryServer {
  port: number;
  close(): Promise<void>;
}

/** Serve `dir` as a HostTree with `serve()` on real TCP (port 0). */
export function serveHost(dir: string, opts: { readOnly?: boolean } = {}): FerryServer {
  const tree = new HostTree(dir, { readOnly: opts.readOnly === true });
  const l = tcpListen("127.0.0.1", 0);
  const sessions: Promise<void>[] = [];
  const conns: Conn[] = [];
  const accepting = (async () => {
    for await (const c of l) {
      conns.push(c);
      sessions.push(serve(c, tree, { log: () => {} }));
    }
  })();
  return {
    port: Number(l.addr.split("!")[2]),
    async close() {
      l.close();
      await accepting;
      for (const c of conns) c.close();
      await Promise.all(sessions);
    },
  };
}

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;

/** Run `ferry ARGS...` to completion. */
export async function ferry(
  args: string[],
  stdin?: Uint8Array,
): Promise<{ code: number; stdout: Uint8Array; stderr: string }> {
  const p = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", FERRY, ...args],
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const w = p.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const out = await p.output();
  return { code: out.code, stdout: out.stdout, stderr: td.decode(out.stderr) };
}

/**
 * Start `ferry listen -A 'tcp!127.0.0.1!0' DIR` as a child process and wait
 * for the address it prints.
 */
export async function listenChild(dir: string): Promise<FerryServer> {
  const p = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", FERRY, "listen", "-A", "tcp!127.0.0.1!0", dir],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(p.stderr).text();
  const reader = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let port = 0;
  while (port === 0) {
    const { value, done } = await reader.read();
    if (done) {
      await p.status;
      throw new Error(`ferry listen exited before listening: ${await stderr}`);
    }
    text += value;
    const m = /listening on tcp!127\.0\.0\.1!(\d+)/.exec(text);
    if (m) port = Number(m[1]);
  }
  const draining = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  return {
    port,
    async close() {
      try {
        p.kill("SIGTERM");
      } catch { /* already gone */ }
      await p.status;
      await draining;
      await stderr;
    },
  };
}

/**
 * Register `session` as two tests: against serve() on a host directory in
 * this process, and against a `ferry listen -A` child process, each over a
 * fresh directory from `fixture` (removed afterwards). `title` names each
 * test from the server it runs against.
 */
export function againstBothServers(
  title: (server: string) => string,
  fixture: () => Promise<string>,
  session: (t: Deno.TestContext, port: number, dir: string) => Promise<void>,
): void {
  const servers: [string, (dir: string) => FerryServer | Promise<FerryServer>][] = [
    ["serve() on a host directory", serveHost],
    ["`ferry listen -A` (child process)", listenChild],
  ];
  for (const [server, start] of servers) {
    Deno.test(title(server), async (t) => {
      const dir = await fixture();
      const srv = await start(dir);
      try {
        await session(t, srv.port, dir);
      } finally {
        await srv.close();
        await Deno.remove(dir, { recursive: true });
      }
    });
  }
}
