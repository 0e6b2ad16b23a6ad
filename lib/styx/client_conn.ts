/**
 * The connection layer of the Styx client: version negotiation, tag and fid
 * allocation, pipelined RPCs with one reader loop, reply checking, Tflush on
 * abort, and the path helpers built on the remote tree.
 *
 * @module
 */

import { decode, encode, encodeHeader, msgName, TWRITE_HEADER } from "./codec.ts";
import { BufferPool, FrameReader, FrameWriter, FramingError, recycleReadBuffer } from "./frame.ts";
import { formatMsg, traceEnabled } from "./trace.ts";
import {
  DEFAULT_MSIZE,
  type Dir,
  Ename,
  IOHDRSZ,
  MsgType,
  NOFID,
  NOTAG,
  OREAD,
  OTRUNC,
  OWRITE,
  type Qid,
  QTDIR,
  type Rattach,
  type Rauth,
  type Rclunk,
  type Rcreate,
  type Rflush,
  type RMsg,
  type Ropen,
  type Rread,
  type Rremove,
  type Rstat,
  type Rversion,
  type Rwalk,
  type Rwrite,
  type Rwstat,
  StyxError,
  type TMsg,
  type Twrite,
  VERSION,
} from "./types.ts";
import type { Conn } from "../transport/conn.ts";
import { RemoteFile, RemoteNode } from "./client_tree.ts";
import { HangupError } from "./client_lost.ts";

export { ConnectionLostError, HangupError, lostAs, type Origin } from "./client_lost.ts";
import {
  readAll,
  readStream,
  type ReadStreamOptions,
  writeFrom,
  type WriteFromOptions,
} from "./client_io.ts";

/** A T-message without its tag: the client assigns tags. */
export type Untagged<T extends TMsg = TMsg> = T extends TMsg ? Omit<T, "tag"> : never;

interface ReplyMap {
  100: Rversion;
  102: Rauth;
  104: Rattach;
  108: Rflush;
  110: Rwalk;
  112: Ropen;
  114: Rcreate;
  116: Rread;
  118: Rwrite;
  120: Rclunk;
  122: Rremove;
  124: Rstat;
  126: Rwstat;
}

/** The reply type that answers a request of type `T` (Twalk → Rwalk, ...). */
export type ReplyTo<T extends { type: TMsg["type"] }> = ReplyMap[T["type"]];

/** Options of {@link StyxClient.connect}. */
export interface StyxClientOptions {
  /** Largest message to offer; the server may lower it (default DEFAULT_MSIZE). */
  msize?: number;
  /** Protocol version to offer (default "9P2000"). */
  version?: string;
  /** Print every message to stderr (default: on when FERRY_TRACE=1). */
  trace?: boolean;
  /** Aborts the version exchange. */
  signal?: AbortSignal;
}

/** Options of {@link StyxClient.rpc}. */
export interface RpcOptions {
  /** Aborting sends Tflush; the request then rejects with {@link InterruptedError}. */
  signal?: AbortSignal;
}

/**
 * The error an aborted request rejects with (its message is "interrupted").
 * When the server answered the request before it answered the Tflush, the
 * request did happen (flush(5)); `reply` then holds that answer so the caller
 * can undo it (for example clunk a walk's new fid).
 */
export class InterruptedError extends StyxError {
  /** The original request's reply, when it arrived before Rflush. */
  reply?: RMsg;
  /** Make the error, with the late reply if there was one. */
  constructor(reply?: RMsg) {
    super(Ename.interrupted);
    this.name = "InterruptedError";
    if (reply !== undefined) this.reply = reply;
  }
}

interface Pending {
  t: TMsg;
  resolve: (r: RMsg) => void;
  reject: (e: Error) => void;
  /** Set once a Tflush went out for this request. */
  flushing: boolean;
  /** The reply, if it arrived while a Tflush was outstanding. */
  late?: RMsg;
  signal?: AbortSignal;
  onAbort?: () => void;
}

const MAXTAG = 0xfffe;
const MAXFID = 0xfffffffe;
/** Twrites with at least this much data are built in reused buffers. */
const BIG_WRITE = 64 * 1024;
const MAX_OFFSET = (1n << 64n) - 1n;
/** Smallest msize worth using: room for a Twalk of long names and some data. */
const MIN_MSIZE = 256;
/**
 * Inferno's export caps msize at IOHDRSZ + 64 KiB but keeps a Tstat's buffer
 * size in 16 bits (msize - 9 in a `ushort nstat`), so above this msize every
 * stat it answers fails with "stat buffer too small".
 */
const STAT16_MSIZE = 65544;
/** The msize Inferno's export answers when offered more (IOHDRSZ + 64 KiB). */
const INFERNO_MAX_MSIZE = 65560;

function splitPath(path: string): string[] {
  return path.split("/").filter((p) => p !== "" && p !== ".");
}

/**
 * One Styx connection seen from the client side.
 *
 * Requests are pipelined: any number may be in flight, one reader loop
 * dispatches replies by tag, and writes to the transport are serialised
 * (small frames issued together are coalesced into one write). A fid number
 * is reused only after the server has answered its Tclunk or Tremove.
 *
 * @example
 * ```ts
 * import { StyxClient } from "./client.ts";
 * import { serve } from "./server.ts";
 * import { MemTree } from "../fs/memory.ts";
 * import { memPipe } from "../transport/pipe.ts";
 * import { MsgType } from "./types.ts";
 *
 * const [a, b] = memPipe();
 * serve(b, new MemTree());
 * const client = await StyxClient.connect(a);
 * const root = await client.attach("glenda");
 * const r = await client.rpc({ type: MsgType.Tstat, fid: root.fid });
 * if (r.stat.qid.type !== 0x80) throw new Error("root is not a directory");
 * await client.close();
 * ```
 */
export class StyxClient {
  readonly #conn: Conn;
  #msize: number;
  #version = "";
  readonly #trace: boolean;

  readonly #pending = new Map<number, Pending>();
  readonly #freeTags: number[] = [];
  #nextTag = 0;
  #tagWaiters: Array<{ resolve: (tag: number) => void; reject: (e: Error) => void }> = [];

  readonly #freeFids: number[] = [];
  #nextFid = 0;
  #fidsInUse = 0;

  readonly #writer: FrameWriter;

  #hungup: StyxError | null = null;
  /** Set by {@link close}: the hangup is ours, not the server's. */
  #closing = false;
  #frames: FrameReader | null = null;
  /**
   * Buffers of large replies, given back by {@link recycle}; sizes are
   * rounded up to 64 KiB, since relayed socket reads vary in length.
   */
  readonly #replyPool = new BufferPool(16, 64 * 1024);
  /** Buffers of large Twrites, reused once the transport has copied them. */
  readonly #writePool = new BufferPool(16);
  /** True when a resolved transport write has finished with its bytes (TCP, TLS). */
  readonly #reuseWrites: boolean;
  readonly #done: Promise<void>;

  private constructor(conn: Conn, msize: number, trace: boolean) {
    this.#conn = conn;
    this.#msize = msize;
    this.#trace = trace;
    this.#reuseWrites = conn.releasesWrites === true;
    this.#writer = new FrameWriter(conn, {
      // The transport has finished with a Twrite buffer: it can carry the next one.
      release: (frame) => this.#writePool.give(frame.buffer),
      failed: (e) => {
        this.#fail(this.#hangup(`cannot write: ${(e as Error).message ?? e}`));
        this.#conn.close();
      },
    });
    this.#done = this.#readLoop();
  }

  /**
   * Start a session on `conn`: sends Tversion (tag NOTAG) and adopts the
   * server's msize. Rejects if the server does not speak 9P2000.
   */
  static async connect(conn: Conn, opts: StyxClientOptions = {}): Promise<StyxClient> {
    const want = opts.msize ?? DEFAULT_MSIZE;
    if (!Number.isInteger(want) || want < MIN_MSIZE || want > 0xffffffff) {
      throw new RangeError(`Message size ${want} is out of range (${MIN_MSIZE} to 4294967295)`);
    }
    let trace = opts.trace ?? false;
    if (opts.trace === undefined) {
      try {
        trace = traceEnabled();
      } catch {
        trace = false;
      }
    }
    const c = new StyxClient(conn, want, trace);
    const version = opts.version ?? VERSION;
    const negotiate = async (msize: number): Promise<Rversion> => {
      try {
        return await c.#request({ type: MsgType.Tversion, tag: NOTAG, msize, version }, {
          signal: opts.signal,
        }) as Rversion;
      } catch (e) {
        conn.close();
        await c.#done;
        throw e;
      }
    };
    let r = await negotiate(want);
    if (
      r.version === version && r.msize > STAT16_MSIZE && r.msize <= INFERNO_MAX_MSIZE &&
      r.msize < want
    ) {
      // A server that capped our offer at Inferno's limit is taken to be an
      // Inferno export, whose stats only work up to STAT16_MSIZE: a fresh
      // Tversion (which resets the session, as version(5) allows) asks for that.
      r = await negotiate(STAT16_MSIZE);
    }
    if (r.version !== version) {
      await c.close();
      throw new StyxError(`server does not speak ${version}: it answered version '${r.version}'`);
    }
    if (r.msize < MIN_MSIZE || r.msize > want) {
      await c.close();
      throw new StyxError(
        `server chose msize ${r.msize}, outside the range ${MIN_MSIZE} to ${want} that was offered`,
      );
    }
    c.#msize = r.msize;
    if (c.#frames) c.#frames.msize = r.msize;
    c.#version = r.version;
    return c;
  }

  /** The negotiated maximum message size. */
  get msize(): number {
    return this.#msize;
  }

  /** The negotiated protocol version ("9P2000"). */
  get version(): string {
    return this.#version;
  }

  /** Largest data count one Tread or Twrite can carry: msize - IOHDRSZ. */
  get maxIo(): number {
    return this.#msize - IOHDRSZ;
  }

  /** Number of fids currently allocated (walked, attached or open). */
  get fidsInUse(): number {
    return this.#fidsInUse;
  }

  /** Number of requests waiting for a reply. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** True once the connection is gone; every later request fails at once. */
  get hungup(): boolean {
    return this.#hungup !== null;
  }

  /** Why the connection is gone (a {@link HangupError} as a rule), or null while it is up. */
  get failure(): StyxError | null {
    return this.#hungup;
  }

  /** The server's address as a dial string (as the transport reports it). */
  get address(): string {
    return this.#conn.peer.addr;
  }

  /** Resolves once the connection is gone and every request has settled. */
  get closed(): Promise<void> {
    return this.#done;
  }

  /**
   * Attach to the server's tree as `uname`, selecting `aname` (default "").
   * No authentication is done at this layer (afid is NOFID): the transport
   * carries the verified identity.
   */
  async attach(uname: string, aname = "", opts: RpcOptions = {}): Promise<RemoteNode> {
    const fid = this.allocFid();
    let r: Rattach;
    try {
      r = await this.rpc({ type: MsgType.Tattach, fid, afid: NOFID, uname, aname }, opts);
    } catch (e) {
      // An interrupted attach that did happen left the fid behind: clunk it.
      const late = e instanceof InterruptedError ? e.reply : undefined;
      if (late?.type === MsgType.Rattach) this.clunk(fid).catch(() => {});
      else if (!this.#hungup) this.releaseFid(fid);
      throw e;
    }
    return new RemoteNode(this, fid, r.qid, {});
  }

  /**
   * Send `t` and wait for its reply. The reply is checked against the
   * request: Rerror rejects with a StyxError carrying the server's ename,
   * and a reply of any other type than the one that answers `t` rejects
   * with an error naming both. Aborting `opts.signal` sends Tflush and
   * rejects with {@link InterruptedError} once the server has answered it.
   */
  rpc<T extends Untagged>(t: T, opts: RpcOptions = {}): Promise<ReplyTo<T>> {
    if (t.type === MsgType.Tversion) {
      return Promise.reject(new StyxError("Tversion is sent only by StyxClient.connect"));
    }
    if (t.type === MsgType.Tflush) {
      return Promise.reject(new StyxError("Tflush is sent by aborting a request's signal"));
    }
    return this.#rpc(t, opts);
  }

  #rpc<T extends Untagged>(t: T, opts: RpcOptions): Promise<ReplyTo<T>> {
    if (this.#hungup) return Promise.reject(this.#hungup);
    if (opts.signal?.aborted) return Promise.reject(new InterruptedError());
    let tag = this.#freeTags.pop();
    if (tag === undefined && this.#nextTag <= MAXTAG) tag = this.#nextTag++;
    if (tag !== undefined) {
      return this.#request({ ...t, tag } as TMsg, opts) as Promise<ReplyTo<T>>;
    }
    // Every tag is in use: wait for one.
    return this.#allocTag().then((tag) =>
      this.#request({ ...t, tag } as TMsg, opts) as Promise<ReplyTo<T>>
    );
  }

  #request(t: TMsg, opts: RpcOptions): Promise<RMsg> {
    return new Promise<RMsg>((resolve, reject) => {
      if (this.#hungup) {
        this.#freeTag(t.tag);
        reject(this.#hungup);
        return;
      }
      const p: Pending = { t, resolve, reject, flushing: false };
      const signal = opts.signal;
      if (signal) {
        if (signal.aborted) {
          this.#freeTag(t.tag);
          reject(new InterruptedError());
          return;
        }
        p.signal = signal;
        p.onAbort = () => this.#flush(p);
        signal.addEventListener("abort", p.onAbort, { once: true });
      }
      this.#pending.set(t.tag, p);
      this.#send(t);
    });
  }

  /** Send a Tflush for `p` (once); `p` settles when Rflush arrives. */
  #flush(p: Pending): void {
    if (p.flushing || this.#pending.get(p.t.tag) !== p || this.#hungup) return;
    p.flushing = true;
    if (p.t.tag === NOTAG) {
      // Nothing can flush a Tversion: drop the connection instead.
      this.#fail(new InterruptedError());
      return;
    }
    const oldtag = p.t.tag;
    this.#allocTag().then((tag) => {
      const f: TMsg = { type: MsgType.Tflush, tag, oldtag };
      return this.#request(f, {});
    }).then(
      () => this.#finishFlush(oldtag),
      () => this.#finishFlush(oldtag),
    );
  }

  #finishFlush(oldtag: number): void {
    const p = this.#pending.get(oldtag);
    if (!p) return;
    this.#pending.delete(oldtag);
    this.#freeTag(oldtag);
    this.#detach(p);
    p.reject(new InterruptedError(p.late));
  }

  #detach(p: Pending): void {
    if (p.signal && p.onAbort) p.signal.removeEventListener("abort", p.onAbort);
  }

  // -- tags and fids --------------------------------------------------------

  #allocTag(): Promise<number> {
    const t = this.#freeTags.pop();
    if (t !== undefined) return Promise.resolve(t);
    if (this.#nextTag <= MAXTAG) return Promise.resolve(this.#nextTag++);
    if (this.#hungup) return Promise.reject(this.#hungup);
    return new Promise((resolve, reject) => this.#tagWaiters.push({ resolve, reject }));
  }

  #freeTag(tag: number): void {
    if (tag === NOTAG) return;
    const w = this.#tagWaiters.shift();
    if (w) w.resolve(tag);
    else this.#freeTags.push(tag);
  }

  /**
   * Reserve a fid number for a new Tattach or Twalk. Give it back with
   * {@link releaseFid} only when the server does not hold it (a failed walk)
   * or has answered its Tclunk or Tremove.
   */
  allocFid(): number {
    if (this.#hungup) throw this.#hungup;
    let f = this.#freeFids.pop();
    if (f === undefined) {
      if (this.#nextFid > MAXFID) throw new StyxError("no free fids left on this connection");
      f = this.#nextFid++;
    }
    this.#fidsInUse++;
    return f;
  }

  /** Return a fid number that the server no longer holds. */
  releaseFid(fid: number): void {
    this.#fidsInUse--;
    this.#freeFids.push(fid);
  }

  /**
   * Clunk `fid` and free its number once Rclunk (or Rerror) arrives. Errors
   * are swallowed: the fid is gone either way (clunk(5)).
   */
  async clunk(fid: number): Promise<void> {
    if (this.#hungup) return;
    try {
      await this.#rpc({ type: MsgType.Tclunk, fid }, {});
    } catch (e) {
      if (this.#hungup) return; // the server dropped every fid with the connection
      if (!(e instanceof StyxError)) throw e;
    }
    this.releaseFid(fid);
  }

  /** Remove the file `fid` refers to; the fid is gone afterwards, success or not. */
  async removeFid(fid: number, opts: RpcOptions = {}): Promise<void> {
    try {
      await this.#rpc({ type: MsgType.Tremove, fid }, opts);
    } catch (e) {
      if (e instanceof InterruptedError && e.reply === undefined) {
        // Flushed before the server acted (flush(5)): the fid still exists.
        await this.clunk(fid);
      } else if (!this.#hungup) this.releaseFid(fid);
      throw e;
    }
    this.releaseFid(fid);
  }

  /**
   * Walk `fid` by `names` (at most 16) to `newfid`. Resolves with the qids;
   * when fewer qids than names came back, `newfid` was not created and its
   * number has been released. Frees or clunks `newfid` on failure.
   * @internal
   */
  async walkFid(
    fid: number,
    newfid: number,
    names: string[],
    opts: RpcOptions = {},
  ): Promise<Qid[]> {
    let r: Rwalk;
    try {
      r = await this.#rpc({ type: MsgType.Twalk, fid, newfid, wnames: names }, opts);
    } catch (e) {
      if (newfid !== fid && !this.#hungup) {
        // An interrupted walk whose Rwalk arrived before Rflush did happen:
        // newfid exists if every name was walked, and must be clunked.
        const late = e instanceof InterruptedError ? e.reply : undefined;
        if (late?.type === MsgType.Rwalk && late.wqids.length === names.length) {
          this.clunk(newfid).catch(() => {});
        } else {
          this.releaseFid(newfid);
        }
      }
      throw e;
    }
    if (r.wqids.length > names.length) {
      if (newfid !== fid) this.clunk(newfid).catch(() => {});
      throw new StyxError(
        `server answered a walk of ${names.length} names with ${r.wqids.length} qids`,
      );
    }
    if (names.length > 0 && r.wqids.length === 0) {
      // walk(5) requires Rerror here; treat a bare empty Rwalk the same way.
      if (newfid !== fid) this.releaseFid(newfid);
      throw new StyxError(Ename.notFound);
    }
    if (r.wqids.length < names.length && newfid !== fid) this.releaseFid(newfid);
    return r.wqids;
  }

  // -- path helpers ---------------------------------------------------------

  /**
   * Walk from `root` along a slash-separated `path` ("" or "/" clones
   * `root`). Rejects with "file does not exist" when any element is missing.
   */
  async walkPath(root: RemoteNode, path: string, opts: RpcOptions = {}): Promise<RemoteNode> {
    const w = await root.walk(splitPath(path), opts);
    if (!w.node) throw new StyxError(Ename.notFound);
    return w.node as RemoteNode;
  }

  /** Open the file at `path` with `mode`. */
  async openPath(
    root: RemoteNode,
    path: string,
    mode: number,
    opts: RpcOptions = {},
  ): Promise<RemoteFile> {
    const names = splitPath(path);
    const fid = this.allocFid();
    if (names.length <= 16 && opts.signal === undefined) {
      return await this.walkOpen(root.fid, fid, names, mode);
    }
    const qids = await this.#walkLong(root.fid, fid, names, opts);
    if (qids.length < names.length) throw new StyxError(Ename.notFound);
    return await this.openFid(fid, mode, opts);
  }

  /**
   * Twalk and Topen sent together, saving a round trip. A server that
   * handles them in order (as Ferry's does) answers both; one that ran the
   * Topen first refuses it, and it is then sent again after the walk. The
   * fid number is given back only once both replies are in, so a late Topen
   * can never reach a fid that was reused meanwhile.
   * @internal
   */
  async walkOpen(fid: number, newfid: number, names: string[], mode: number): Promise<RemoteFile> {
    const w = await this.walkThenOpen(fid, newfid, names, mode);
    if (w.qids.length < names.length) throw new StyxError(Ename.notFound);
    if (!(w.open instanceof StyxError)) {
      return new RemoteFile(this, newfid, w.open.qid, w.open.iounit);
    }
    // Refused: maybe only because it overtook the walk. Ask again.
    return await this.openFid(newfid, mode);
  }

  /**
   * Twalk `fid` by `names` (at most 16) to `newfid` with a Topen of
   * `newfid` sent along, in one round trip. Resolves once both replies are
   * in: the qids, and the Ropen or the StyxError refusing it (which may
   * only mean the server ran the Topen before the walk). When the walk fell
   * short, `newfid` has been released; when it succeeded, the caller owns
   * `newfid`, open or not. Other failures (an interrupt included) reject,
   * with `newfid` released or clunked.
   *
   * With `opts.readAhead`, a Tread of that many bytes (at most
   * {@link maxIo}) at offset 0 follows the Topen: `head` resolves with its
   * data, or null when it failed. `newfid` is given back only once every
   * reply is in, so a late request never reaches a fid reused meanwhile.
   * @internal
   */
  async walkThenOpen(
    fid: number,
    newfid: number,
    names: string[],
    mode: number,
    opts: RpcOptions & { readAhead?: number } = {},
  ): Promise<{ qids: Qid[]; open: Ropen | StyxError; head?: Promise<Uint8Array | null> }> {
    const o = opts.signal ? { signal: opts.signal } : {};
    const walk = this.#rpc({ type: MsgType.Twalk, fid, newfid, wnames: names }, o);
    const open = this.#rpc({ type: MsgType.Topen, fid: newfid, mode }, o);
    const count = Math.min(opts.readAhead ?? 0, this.maxIo);
    const head = count > 0
      ? this.#rpc({ type: MsgType.Tread, fid: newfid, offset: 0n, count }, o).then(
        (r) => r.data.length > count ? null : r.data,
        () => null,
      )
      : undefined;
    const [w, op] = await Promise.allSettled([walk, open]);
    // An interrupted walk whose Rwalk arrived before Rflush did happen.
    const wr = w.status === "fulfilled"
      ? w.value
      : w.reason instanceof InterruptedError && w.reason.reply?.type === MsgType.Rwalk
      ? w.reason.reply
      : undefined;
    const walked = wr !== undefined && wr.wqids.length === names.length;
    if (w.status === "rejected" || !walked) {
      await head;
      if (walked || op.status === "fulfilled") {
        // The fid exists (or is even open, which a correct server never does
        // after a failed walk): clunk it.
        this.clunk(newfid).catch(() => {});
      } else if (!this.#hungup) {
        this.releaseFid(newfid);
      }
      if (w.status === "rejected") throw w.reason;
      if (w.value.wqids.length > names.length) {
        throw new StyxError(
          `server answered a walk of ${names.length} names with ${w.value.wqids.length} qids`,
        );
      }
      if (names.length > 0 && w.value.wqids.length === 0) throw new StyxError(Ename.notFound);
      return { qids: w.value.wqids, open: new StyxError(Ename.notFound) };
    }
    if (op.status === "fulfilled") return { qids: w.value.wqids, open: op.value, head };
    if (
      this.#hungup || !(op.reason instanceof StyxError) || op.reason instanceof InterruptedError
    ) {
      this.clunk(newfid).catch(() => {});
      throw op.reason;
    }
    return { qids: w.value.wqids, open: op.reason, head };
  }

  /**
   * Walk `names` (any number) from `fid` to `newfid`, splitting into Twalks
   * of at most 16 names; later pieces walk `newfid` in place. Resolves with
   * all qids walked; when short, `newfid` has been released.
   * @internal
   */
  async walkLong(
    fid: number,
    newfid: number,
    names: string[],
    opts: RpcOptions = {},
  ): Promise<Qid[]> {
    return await this.#walkLong(fid, newfid, names, opts);
  }

  async #walkLong(
    fid: number,
    newfid: number,
    names: string[],
    opts: RpcOptions,
  ): Promise<Qid[]> {
    const first = names.slice(0, 16);
    const qids = await this.walkFid(fid, newfid, first, opts);
    if (qids.length < first.length) return qids;
    for (let i = 16; i < names.length; i += 16) {
      const piece = names.slice(i, i + 16);
      let got: Qid[];
      try {
        got = await this.walkFid(newfid, newfid, piece, opts);
      } catch (e) {
        await this.clunk(newfid);
        if (e instanceof StyxError && !(e instanceof InterruptedError) && !this.#hungup) {
          return qids; // a later element failed: a partial walk
        }
        throw e;
      }
      qids.push(...got);
      if (got.length < piece.length) {
        await this.clunk(newfid);
        return qids;
      }
    }
    return qids;
  }

  /**
   * Topen an already-walked `fid` with `mode`, clunking it on failure.
   * @internal
   */
  async openFid(fid: number, mode: number, opts: RpcOptions = {}): Promise<RemoteFile> {
    let r: Ropen;
    try {
      r = await this.#rpc({ type: MsgType.Topen, fid, mode }, opts);
    } catch (e) {
      this.clunk(fid).catch(() => {});
      throw e;
    }
    return new RemoteFile(this, fid, r.qid, r.iounit);
  }

  /**
   * Read the whole file at `path`, several Treads in flight at a time.
   *
   * @example
   * ```ts ignore
   * const bytes = await client.readFile(root, "/lib/ndb/local");
   * ```
   */
  async readFile(root: RemoteNode, path: string, signal?: AbortSignal): Promise<Uint8Array> {
    const f = await this.openPath(root, path, OREAD, { signal });
    try {
      return await readAll(f, signal);
    } finally {
      f.close().catch(() => {});
    }
  }

  /**
   * Write `data` (bytes or a stream) to the file at `path`, truncating it,
   * or creating it (perm 0666) when it does not exist. Resolves with the
   * number of bytes written.
   */
  async writeFile(
    root: RemoteNode,
    path: string,
    data: Uint8Array | ReadableStream<Uint8Array>,
    opts: { perm?: number; signal?: AbortSignal } = {},
  ): Promise<bigint> {
    const names = splitPath(path);
    if (names.length === 0) throw new StyxError(Ename.isDir);
    let f: RemoteFile;
    try {
      f = await this.openPath(root, path, OWRITE | OTRUNC, { signal: opts.signal });
    } catch (e) {
      if (!(e instanceof StyxError) || e.message !== Ename.notFound) throw e;
      f = await this.#createPath(root, names, opts.perm ?? 0o666, OWRITE, opts.signal);
    }
    try {
      return await writeFrom(f, data, { signal: opts.signal });
    } finally {
      await f.close();
    }
  }

  async #createPath(
    root: RemoteNode,
    names: string[],
    perm: number,
    mode: number,
    signal?: AbortSignal,
  ): Promise<RemoteFile> {
    const name = names[names.length - 1]!;
    const fid = this.allocFid();
    const parent = names.slice(0, -1);
    const qids = await this.#walkLong(root.fid, fid, parent, { signal });
    if (qids.length < parent.length) throw new StyxError(Ename.notFound);
    let r: Rcreate;
    try {
      r = await this.#rpc({ type: MsgType.Tcreate, fid, name, perm: perm >>> 0, mode }, {
        signal,
      });
    } catch (e) {
      this.clunk(fid).catch(() => {});
      throw e;
    }
    return new RemoteFile(this, fid, r.qid, r.iounit);
  }

  /** {@link readStream} on `file`: its bytes from `opts.offset` to the end, read ahead. */
  readStream(file: RemoteFile, opts: ReadStreamOptions = {}): ReadableStream<Uint8Array> {
    return readStream(file, opts);
  }

  /** {@link writeFrom}: write all of `source` to `file`, several Twrites in flight. */
  writeFrom(
    file: RemoteFile,
    source: ReadableStream<Uint8Array> | Uint8Array,
    opts: WriteFromOptions = {},
  ): Promise<bigint> {
    return writeFrom(file, source, opts);
  }

  /** List the directory at `path` (or stat the file there, as ls does). */
  async ls(root: RemoteNode, path: string, signal?: AbortSignal): Promise<Dir[]> {
    const node = await this.walkPath(root, path, { signal });
    if ((node.qid.type & QTDIR) === 0) {
      try {
        return [await node.stat({ signal })];
      } finally {
        node.close().catch(() => {});
      }
    }
    // Open the walked fid itself (no clone): the open file now owns it.
    node.release();
    const f = await this.openFid(node.fid, OREAD, { signal });
    try {
      return await f.readDir({ signal });
    } finally {
      f.close().catch(() => {});
    }
  }

  /** Stat the file at `path`. */
  async stat(root: RemoteNode, path: string, signal?: AbortSignal): Promise<Dir> {
    const node = await this.walkPath(root, path, { signal });
    try {
      return await node.stat({ signal });
    } finally {
      node.close().catch(() => {});
    }
  }

  /**
   * Create the file (or, with DMDIR in `perm`, the directory) at `path`.
   * Resolves with its qid. Default perm 0666, mode OREAD.
   */
  async create(
    root: RemoteNode,
    path: string,
    opts: { perm?: number; mode?: number; signal?: AbortSignal } = {},
  ): Promise<Qid> {
    const names = splitPath(path);
    if (names.length === 0) throw new StyxError(Ename.exists);
    const f = await this.#createPath(
      root,
      names,
      opts.perm ?? 0o666,
      opts.mode ?? OREAD,
      opts.signal,
    );
    await f.close();
    return f.qid;
  }

  /** Remove the file or empty directory at `path`. */
  async remove(root: RemoteNode, path: string, signal?: AbortSignal): Promise<void> {
    const node = await this.walkPath(root, path, { signal });
    await node.remove({ signal });
  }

  // -- the wire -------------------------------------------------------------

  #send(t: TMsg): void {
    let frame: Uint8Array;
    try {
      frame = t.type === MsgType.Twrite && this.#reuseWrites && t.data.length >= BIG_WRITE &&
          t.offset >= 0n && t.offset <= MAX_OFFSET
        ? this.#twrite(t)
        : encode(t);
    } catch (e) {
      const p = this.#pending.get(t.tag);
      this.#pending.delete(t.tag);
      this.#freeTag(t.tag);
      if (p) {
        this.#detach(p);
        p.reject(e instanceof Error ? e : new Error(String(e)));
      }
      return;
    }
    if (frame.length > this.#msize) {
      const p = this.#pending.get(t.tag);
      this.#pending.delete(t.tag);
      this.#freeTag(t.tag);
      if (p) {
        this.#detach(p);
        p.reject(
          new StyxError(
            `${
              msgName(t.type)
            } of ${frame.length} bytes exceeds the negotiated msize ${this.#msize}`,
          ),
        );
      }
      return;
    }
    if (this.#trace) this.#traceMsg("->", t);
    this.#writer.write(frame);
  }

  /**
   * Give back the memory of `data`, a chunk of Rread data this client
   * received, for a later reply to reuse. Only for a caller that owns the
   * chunk and keeps no reference to it (see `ReadStreamOptions.reuse`);
   * anything else is ignored.
   * @internal
   */
  recycle(data: Uint8Array): void {
    if (this.#replyPool.owns(data.buffer)) this.#replyPool.give(data.buffer);
    else recycleReadBuffer(data.buffer); // a server's buffer, over an in-memory pipe
  }

  /** A Twrite frame in a reused buffer (the codec would allocate a new one each time). */
  #twrite(t: Twrite): Uint8Array {
    const f = this.#writePool.take(TWRITE_HEADER + t.data.length);
    encodeHeader(t, f);
    f.set(t.data, TWRITE_HEADER);
    return f;
  }

  #traceMsg(dir: string, m: TMsg | RMsg): void {
    try {
      console.error(`styx ${dir} ${formatMsg(m)}`);
    } catch {
      console.error(`styx ${dir} ${msgName(m.type)} tag ${m.tag}`);
    }
  }

  async #readLoop(): Promise<void> {
    // Whole frames are handed on as they come from the reader (views of a
    // transport chunk, or buffers of their own), so Rread data reaches the
    // caller without a further copy.
    const frames = new FrameReader(this.#conn, this.#msize, (size) => this.#replyPool.take(size));
    this.#frames = frames;
    try {
      for (;;) {
        const f = await frames.next();
        if (f === null) break;
        this.#dispatch(f);
      }
      this.#fail(this.#hangup("the server closed the connection"));
    } catch (e) {
      this.#fail(
        e instanceof FramingError
          ? new StyxError(`bad message from server: ${e.message}; connection dropped`)
          : e instanceof StyxError
          ? e
          : this.#hangup((e as Error).message ?? String(e)),
      );
      this.#conn.close();
    }
  }

  #dispatch(frame: Uint8Array): void {
    const tag = frame[5]! | frame[6]! << 8;
    const p = this.#pending.get(tag);
    let r: RMsg;
    try {
      r = decode(frame, this.#msize) as RMsg;
    } catch (e) {
      if (p && !p.flushing) {
        this.#pending.delete(tag);
        this.#freeTag(tag);
        this.#detach(p);
        p.reject(new StyxError(`bad reply to ${msgName(p.t.type)}: ${(e as Error).message}`));
      }
      return;
    }
    if (this.#trace) this.#traceMsg("<-", r);
    if (!p) return; // a reply nobody waits for (e.g. after a bad one): ignore it
    if (p.flushing && p.t.type !== MsgType.Tflush) {
      // The request completed before the server saw our Tflush: remember
      // the reply; the tag stays reserved until Rflush (flush(5)).
      if (r.type === p.t.type + 1) p.late = r;
      return;
    }
    this.#pending.delete(tag);
    this.#freeTag(tag);
    this.#detach(p);
    if (r.type === p.t.type + 1) {
      p.resolve(r);
    } else if (r.type === MsgType.Rerror) {
      p.reject(new StyxError(r.ename));
    } else {
      p.reject(
        new StyxError(
          `server answered ${msgName(p.t.type)} (tag ${tag}) with ${msgName(r.type)}`,
        ),
      );
    }
  }

  /** The error for a lost connection; one closed by this end says so. */
  #hangup(reason: string): HangupError {
    return new HangupError(this.#conn.peer.addr, this.#closing ? "closed by this end" : reason);
  }

  /** Fail every pending request and every later one with `err`. */
  #fail(err: StyxError): void {
    if (this.#hungup) return;
    this.#hungup = err;
    this.#writer.abandon();
    const all = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of all) {
      this.#detach(p);
      p.reject(p.flushing && p.t.type !== MsgType.Tflush ? new InterruptedError(p.late) : err);
    }
    for (const w of this.#tagWaiters) w.reject(err);
    this.#tagWaiters = [];
  }

  /** Close the connection; pending requests reject with "i/o on hungup channel". */
  async close(): Promise<void> {
    this.#closing = true;
    this.#conn.close();
    await this.#done;
  }
}
