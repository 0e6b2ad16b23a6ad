/**
 * The Styx server: serves any {@link Tree} over one connection.
 *
 * The server keeps the per-connection fid table and checks each request
 * (fid in use, fid open, open mode, directory offsets) before the tree sees
 * it, so a tree only answers for its files. Every request runs on its own:
 * a read that blocks (a `/net` listen, a phone waiting for a call) holds up
 * nothing else, replies are written one whole frame at a time, and Tflush
 * aborts the old request's AbortSignal and drops its reply, as flush(5)
 * says. When the connection ends every fid is released, requests not yet
 * answered are abandoned and their replies dropped.
 *
 * What one client can make the server hold is bounded, so a hostile or
 * stuck client costs a fixed amount of memory: requests in flight, reply
 * bytes queued or being read for it, fids, the time a frame may take to
 * arrive, and (per process unless a listener brings its own) connections.
 * Past the first two the server stops reading requests until replies
 * drain: backpressure, never a dropped request. See {@link ServerOptions}.
 *
 * @example
 * ```ts
 * import { serve } from "./server.ts";
 * import { MemTree } from "../fs/memory.ts";
 * import { memPipe } from "../transport/pipe.ts";
 * import { decode, encode } from "./codec.ts";
 * import { FrameReader } from "./frame.ts";
 * const [client, server] = memPipe();
 * const done = serve(server, new MemTree());
 * await client.write(encode({ type: 100, tag: 0xffff, msize: 8192, version: "9P2000" }));
 * const reply = decode((await new FrameReader(client, 8192).next())!);
 * if (reply.type !== 101 || reply.msize !== 8192) throw new Error("no Rversion");
 * client.close();
 * await done;
 * ```
 *
 * @module
 */

import { concatBytes } from "../bytes.ts";
import type { Conn, Peer } from "../transport/conn.ts";
import type { Caller, Node, OpenFile, ReadOptions, Tree } from "../fs/tree.ts";
import {
  DEFAULT_MSIZE,
  type Dir,
  Ename,
  errorString,
  HEADER_SIZE,
  IOHDRSZ,
  MsgType,
  NOFID,
  OEXEC,
  ORCLOSE,
  ORDWR,
  OREAD,
  OTRUNC,
  OWRITE,
  type Qid,
  QTDIR,
  QTEXCL,
  type RMsg,
  StyxError,
  type Tattach,
  type Tcreate,
  type TMsg,
  type Topen,
  type Tread,
  type Twalk,
  type Twrite,
  type Twstat,
  VERSION,
} from "./types.ts";
import {
  CodecError,
  decode,
  encode,
  encodeDir,
  encodeHeader,
  encodeWith,
  isTMsg,
  msgName,
  RREAD_HEADER,
} from "./codec.ts";
import {
  allocReadData,
  BufferPool,
  FrameReader,
  FrameWriter,
  FramingError,
  recycleReadBuffer,
  recycleReadData,
  rreadInPlace,
} from "./frame.ts";
import { directSender } from "./direct.ts";
import { formatMsg, traceEnabled } from "./trace.ts";
import { onReclaim, sessionEnded, sessionStarted } from "./reclaim.ts";

/** The largest first message accepted: a Tversion is far smaller. */
const FIRST_FRAME_MAX = 8192;

/** The smallest msize the server accepts in Tversion. */
export const MIN_MSIZE = 256;

/** Requests one connection may have in flight by default ({@link ServerOptions.maxInFlight}). */
export const DEFAULT_MAX_IN_FLIGHT = 1024;
/** Reply bytes one connection may hold by default ({@link ServerOptions.maxReplyBytes}). */
export const DEFAULT_MAX_REPLY_BYTES = 2 * 1024 * 1024;
/** Fids one connection may hold by default ({@link ServerOptions.maxFids}). */
export const DEFAULT_MAX_FIDS = 4096;
/** Milliseconds a frame may take to arrive by default ({@link ServerOptions.frameTimeoutMs}). */
export const DEFAULT_FRAME_TIMEOUT_MS = 10_000;
/** Connections served at once by default, per process ({@link ServerOptions.connections}). */
export const DEFAULT_MAX_CONNECTIONS = 256;

/**
 * A cap on connections served at once, shared by every {@link serve} given
 * it (a listener passes one to all its sessions). A connection beyond the
 * cap has its first request answered with an Rerror naming the cap and is
 * closed.
 *
 * @example
 * ```ts
 * import { ConnectionLimit } from "./server.ts";
 * const cap = new ConnectionLimit(100);
 * if (cap.max !== 100 || cap.open !== 0) throw new Error("wrong cap");
 * ```
 */
export class ConnectionLimit {
  /** Connections open, in memory that may be shared with other workers. */
  readonly #count: Int32Array;
  #refused = 0;
  #lastLog = -Infinity;

  /**
   * Allow at most `max` connections at once (a positive integer). Limits
   * made with the same `opts.shared` (4 bytes of shared memory, as
   * {@link shared} gives it, in this worker or another) count against one
   * cap: listeners in several workers of one process share it so.
   */
  constructor(readonly max: number, opts: { shared?: SharedArrayBuffer } = {}) {
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`connection limit '${max}' is not a positive integer`);
    }
    this.#count = new Int32Array(opts.shared ?? new SharedArrayBuffer(4), 0, 1);
  }

  /** The memory the count lives in, to build the same cap in another worker. */
  get shared(): SharedArrayBuffer {
    return this.#count.buffer as SharedArrayBuffer;
  }

  /** Connections being served now. */
  get open(): number {
    return Atomics.load(this.#count, 0);
  }

  /** @internal Take a slot: false when all are taken. */
  take(): boolean {
    for (;;) {
      const n = Atomics.load(this.#count, 0);
      if (n >= this.max) return false;
      if (Atomics.compareExchange(this.#count, 0, n, n + 1) === n) return true;
    }
  }

  /** @internal Give back a slot taken by {@link take}. */
  give(): void {
    Atomics.sub(this.#count, 0, 1);
  }

  /**
   * @internal Count a refusal; returns how many to report now (0: stay
   * quiet), so a flood of refused connections logs a line every few seconds
   * instead of one each.
   */
  refused(now: number): number {
    this.#refused++;
    if (now - this.#lastLog < 5000) return 0;
    this.#lastLog = now;
    const n = this.#refused;
    this.#refused = 0;
    return n;
  }
}

/** The cap every session in this process shares unless given its own. */
const processConnections = new ConnectionLimit(DEFAULT_MAX_CONNECTIONS);

/**
 * Options for {@link serve}. The bounds (`maxInFlight`, `maxReplyBytes`,
 * `maxFids`, `frameTimeoutMs`, `connections`) have defaults that hold a
 * client that never reads its replies, or that hangs up with requests
 * queued, to a few MiB; every listener gets them without asking.
 */
export interface ServerOptions {
  /** Largest msize offered (default DEFAULT_MSIZE); a client asking for more gets this. */
  maxMsize?: number;
  /** Print every message (also switched on by FERRY_TRACE=1). */
  trace?: boolean;
  /**
   * Who an attach speaks for. The default is the peer's verified identity
   * when the transport authenticated it, else the attach's uname. Throw to
   * refuse the attach (e.g. a user not on an allow list); the error's
   * message becomes the Rerror.
   */
  callerFor?(uname: string, aname: string, peer: Peer): Caller | Promise<Caller>;
  /** Where trace lines and connection problems go (default: standard error). */
  log?(msg: string): void;
  /**
   * Requests in flight (running, or flushed but not yet finished) past
   * which no further request is read until one finishes (default
   * {@link DEFAULT_MAX_IN_FLIGHT}: far above the 8 to 16 reads Ferry's own
   * clients keep in flight per stream, so that even many blocked reads on
   * `/net` files leave room for the request that unblocks them).
   */
  maxInFlight?: number;
  /**
   * Reply bytes queued for the client, or being read from files for it,
   * plus Twrite data being written, past which no further request is read
   * until half have drained (default {@link DEFAULT_MAX_REPLY_BYTES}: four
   * reads of the largest msize, while the socket buffers hold more, so a
   * client that reads its replies never waits on it; one that never reads
   * them is held here, and twenty such cost some 40 MiB, little enough
   * that memory need not be given back for the process to stay small).
   */
  maxReplyBytes?: number;
  /**
   * Fids one connection may hold (default {@link DEFAULT_MAX_FIDS}: far
   * more than Plan 9, Inferno or Ferry clients hold, a fid for each open
   * file, directory and mount; a fid costs about 3 KiB on a host tree, so
   * the default bounds a connection's fids to about 12 MiB). Tattach and
   * Twalk to a new fid beyond it get an Rerror naming the limit.
   */
  maxFids?: number;
  /**
   * Milliseconds a frame may take to arrive once it has begun; a
   * connection whose frame stays incomplete longer is dropped (default
   * {@link DEFAULT_FRAME_TIMEOUT_MS}, the TLS handshake's limit; 0: none).
   * An idle connection, between frames, is not affected.
   */
  frameTimeoutMs?: number;
  /**
   * The cap on connections this session counts against (default: one cap
   * of {@link DEFAULT_MAX_CONNECTIONS} shared by the whole process); null
   * for none.
   */
  connections?: ConnectionLimit | null;
}

/** A reply without its tag; the request's tag is added when it is sent. */
type Reply = RMsg extends infer R ? R extends RMsg ? Omit<R, "tag"> : never : never;

/** Open files of DMEXCL files, per tree, shared by every connection serving it. */
const exclusiveOpen = new WeakMap<Tree, Set<bigint>>();

/** Buffers of large Twrite frames, shared by every session whose tree copies writes. */
const writePool = new BufferPool(32, 1, { freeExtra: true });
onReclaim(() => writePool.trim());
/** Rread data at least this large is written after its header instead of copied into it. */
const SPLIT = 16 * 1024;
/** Bytes of the buffer each session encodes its small replies into, over and over. */
const REPLY_ARENA = 4096;
/** Replies larger than this get buffers of their own. */
const REPLY_ARENA_MAX = 1024;

function defaultCaller(uname: string, _aname: string, peer: Peer): Caller {
  if (peer.authenticated && peer.identity) {
    return { user: peer.identity, groups: peer.groups ?? [], authenticated: true };
  }
  return { user: uname === "" ? "none" : uname, authenticated: false };
}

function positive(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 1) {
    throw new RangeError(`${name} '${n}' is not a positive integer`);
  }
  return n;
}

function badName(name: string): boolean {
  return name === "" || name === "." || name.includes("/") || name.includes("\0");
}

interface DirState {
  entries: Dir[];
  /** Where the entries after `entries` come from, a batch at a time (OpenFile.dirEntries). */
  more?: AsyncIterator<Dir[]>;
  /** Index of the next entry to return. */
  index: number;
  /** Offset at which the next read must start. */
  offset: bigint;
}

/** What a read answered at once is given: buffers with room for the Rread header. */
const READ_NOW: ReadOptions = { alloc: allocReadData };

/** The qid of a fid whose node is not known yet. */
const NO_QID: Qid = Object.freeze({ type: 0, version: 0, path: 0n });

/** One entry of the fid table. */
class Fid {
  node: Node | null = null;
  /** Replaced, never changed in place. */
  qid: Qid = NO_QID;
  file: OpenFile | null = null;
  omode = -1;
  /** The last state-changing request (attach, walk, open, create) still running. */
  busy: Promise<void> | null = null;
  /** Requests currently using this fid. */
  refs = 0;
  clunked = false;
  released = false;
  /** qid.path registered in the exclusive-open set. */
  excl: bigint | null = null;
  dir: DirState | null = null;
  /** Serialises directory reads on this fid (null: none has run). */
  dirLock: Promise<void> | null = null;

  constructor(readonly num: number) {}
}

/** One request in flight. */
class Req {
  /** Set by Tflush, a new Tversion or hangup: the reply must not be sent. */
  flushed = false;
  /** Set once its reply is sent or dropped: it holds nothing from then on. */
  finished = false;
  /** The fid the request uses, given back when it finishes. */
  fid: Fid | null = null;
  /** The fid's state change this request made, ended when it finishes. */
  change: { promise: Promise<void>; resolve: () => void } | null = null;
  /** Run when it finishes, before its reply is sent. */
  after: (() => void) | undefined = undefined;
  /** Made only when something asks for the signal or aborts: most requests never do. */
  #ctrl: AbortController | null = null;

  /** `held`: bytes the request holds (read buffers, Twrite data) until it finishes. */
  constructor(readonly tag: number, readonly type: number, public held: number) {}

  /** Aborted when the request is flushed or the connection goes away. */
  get signal(): AbortSignal {
    return (this.#ctrl ??= new AbortController()).signal;
  }

  /** Drop the reply and abort what the request is doing. */
  abort(reason: StyxError): void {
    this.flushed = true;
    (this.#ctrl ??= new AbortController()).abort(reason);
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const rclunk = (): Reply => ({ type: MsgType.Rclunk });

const canRead = (omode: number) => {
  const m = omode & 3;
  return m === OREAD || m === ORDWR || m === OEXEC;
};
const canWrite = (omode: number) => {
  const m = omode & 3;
  return m === OWRITE || m === ORDWR;
};

/**
 * Serve `tree` on `conn` until the connection ends or loses framing.
 * Resolves once every fid has been released and every request has
 * finished; never rejects. Throws a RangeError at once for an unusable
 * `opts.maxMsize`.
 *
 * Data a tree returns from `OpenFile.read` is written to the connection
 * as it is, without a copy: a tree must not change that buffer afterwards.
 * Each read is offered buffers (`ReadOptions.alloc`, `allocAhead`) with
 * room for the Rread header in front; data returned in one goes out as one
 * frame and the buffer is then reused.
 * A tree whose `copiesWrites` property is `true` promises to keep no
 * reference to the data given to `OpenFile.write` once that settles
 * without its signal having been aborted; the server then reuses the
 * buffers of large Twrite frames.
 */
export function serve(conn: Conn, tree: Tree, opts: ServerOptions = {}): Promise<void> {
  return new Session(conn, tree, opts).run();
}

class Session {
  readonly #conn: Conn;
  readonly #tree: Tree;
  readonly #maxMsize: number;
  readonly #trace: boolean;
  readonly #log: (msg: string) => void;
  readonly #callerFor: (uname: string, aname: string, peer: Peer) => Caller | Promise<Caller>;
  readonly #excl: Set<bigint>;
  readonly #reader: FrameReader;
  /**
   * Replies go out through it. Read buffers come back to the pool once it
   * is done with them, on a transport that has copied written bytes by the
   * time a write resolves (TCP, TLS); an in-memory pipe hands the very
   * buffer to the other end, so nothing is reused there.
   */
  readonly #writer: FrameWriter;
  /** Large Twrite frames come from {@link writePool} and go back after the write. */
  readonly #reuseWrites: boolean;
  readonly #maxInFlight: number;
  readonly #maxReplyBytes: number;
  readonly #maxFids: number;
  readonly #connections: ConnectionLimit | null;

  /** Negotiated msize; 0 until a Tversion succeeds. */
  #msize = 0;
  readonly #fids = new Map<number, Fid>();
  readonly #pending = new Map<number, Req>();
  /** Every request still running, including flushed ones not yet finished. */
  readonly #running = new Set<Req>();
  /** Releases started but maybe not finished, awaited before serve() resolves. */
  readonly #releasing = new Set<Promise<void>>();
  /** Set once the connection has ended (or is being torn down): nothing more is done for it. */
  #closing = false;

  /** Bytes held by requests still running (their {@link Req.held}). */
  #heldBytes = 0;
  /** Reading stopped at the byte bound, until half has drained. */
  #paused = false;
  /**
   * Small replies are encoded one after another into this buffer, which
   * starts over once the writer has handed all of them back; null until
   * the first reply, and for good on a connection that does not hand
   * written buffers back.
   */
  #arena: Uint8Array | null = null;
  #arenaUsed = 0;
  /** Replies in {@link #arena} the writer has not handed back yet. */
  #arenaLive = 0;
  readonly #reuseReplies: boolean;
  /** Where {@link encode} puts a reply: a fresh allocation costs more than encoding it. */
  readonly #replyBuf = (size: number): Uint8Array => {
    if (!this.#reuseReplies || size > REPLY_ARENA_MAX) return new Uint8Array(size);
    const a = this.#arena ??= new Uint8Array(REPLY_ARENA);
    const at = this.#arenaUsed;
    if (at + size > a.length) return new Uint8Array(size);
    this.#arenaUsed = at + size;
    this.#arenaLive++;
    return a.subarray(at, at + size);
  };
  /** Teardown waiting for the last request to finish. */
  #idle: { promise: Promise<void>; resolve: () => void } | null = null;
  /** The read loop waiting for room (see {@link #mustWait}). */
  #drain: { promise: Promise<void>; resolve: () => void } | null = null;

  constructor(conn: Conn, tree: Tree, opts: ServerOptions) {
    this.#conn = conn;
    this.#tree = tree;
    const max = opts.maxMsize ?? DEFAULT_MSIZE;
    if (!Number.isInteger(max) || max < MIN_MSIZE || max > 0x7fffffff) {
      throw new RangeError(`maxMsize '${max}' is not an integer from ${MIN_MSIZE} to 2^31-1`);
    }
    this.#maxMsize = max;
    this.#maxInFlight = positive("maxInFlight", opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
    this.#maxReplyBytes = positive("maxReplyBytes", opts.maxReplyBytes ?? DEFAULT_MAX_REPLY_BYTES);
    this.#maxFids = positive("maxFids", opts.maxFids ?? DEFAULT_MAX_FIDS);
    const timeout = opts.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS;
    if (!Number.isFinite(timeout) || timeout < 0) {
      throw new RangeError(`frameTimeoutMs '${timeout}' is not a number of milliseconds from 0`);
    }
    this.#connections = opts.connections === undefined ? processConnections : opts.connections;
    this.#trace = opts.trace ?? traceEnabled();
    this.#log = opts.log ?? ((m) => console.error(m));
    this.#callerFor = opts.callerFor ?? defaultCaller;
    let ex = exclusiveOpen.get(tree);
    if (!ex) exclusiveOpen.set(tree, ex = new Set());
    this.#excl = ex;
    // A tree that copies what it writes lets large Twrite frames be reused.
    this.#reuseWrites = (tree as { copiesWrites?: unknown }).copiesWrites === true;
    // Until Tversion only a small message makes sense, so a peer speaking
    // something else (a TLS ClientHello reads as a 66 KB frame) is dropped
    // at once instead of after a wait for bytes that never come.
    this.#reader = new FrameReader(
      conn,
      Math.min(max, FIRST_FRAME_MAX),
      this.#reuseWrites ? (size) => writePool.take(size) : undefined,
    );
    this.#reader.frameTimeoutMs = timeout;
    // Each frame is decoded at once, and only Twrite data outlives that
    // (copied in #write when its request has to wait).
    this.#reader.lend = true;
    this.#reuseReplies = conn.releasesWrites === true;
    // Replies finished in one turn of the event loop go out in one write.
    this.#writer = new FrameWriter(conn, {
      start: "turn",
      release: (f) => this.#released(f),
      written: () => this.#wake(),
      // The connection is gone: abandon everything it still had queued.
      failed: () => this.#hangup(),
      // On plain TCP a reply with nothing queued before it leaves in one
      // send(2), without waiting for the event loop.
      direct: directSender(conn) ?? undefined,
    });
    // However the connection ends (a failed write, the peer's hangup seen
    // by a read ahead, a close from outside), what it still had queued is
    // abandoned at once.
    conn.closed.then(() => this.#hangup());
  }

  async run(): Promise<void> {
    if (this.#connections && !this.#connections.take()) return await this.#refuse();
    sessionStarted();
    try {
      for (;;) {
        while (!this.#closing && this.#mustWait()) {
          // Replies are not being taken: read no more requests until they
          // drain, but keep watching the stream so a hangup is seen at once.
          this.#drain ??= deferred();
          const ahead = this.#reader.readAhead();
          // (A hangup from elsewhere resolves #drain through #hangup.)
          const waits: Promise<unknown>[] = [this.#drain.promise];
          if (ahead) {
            waits.push(ahead.then((more) => {
              if (!more) this.#hangup();
            }, () => this.#hangup()));
          }
          await Promise.race(waits);
        }
        if (this.#closing) break;
        const frame = await this.#reader.next();
        if (frame === null || this.#closing) break;
        let msg;
        try {
          msg = decode(frame, this.#msize || this.#maxMsize);
        } catch (e) {
          if (e instanceof CodecError && e.tag !== undefined) {
            if (this.#trace) this.#log(`<- bad message tag ${e.tag}: ${e.message}`);
            this.#send({ type: MsgType.Rerror, tag: e.tag, ename: e.message });
            continue;
          }
          throw e;
        }
        if (this.#trace) this.#log(`<- ${formatMsg(msg)}`);
        if (!isTMsg(msg)) {
          this.#send({
            type: MsgType.Rerror,
            tag: msg.tag,
            ename: `unexpected ${msgName(msg.type)}: a server accepts only T-messages`,
          });
          continue;
        }
        this.#dispatch(msg);
      }
    } catch (e) {
      // A broken frame is worth a line even when the break closed the
      // connection (a frame timeout, a hangup mid-frame).
      if (!this.#closing || e instanceof FramingError) {
        const hint = this.#msize === 0 && e instanceof FramingError
          ? " (not a Styx client? a TLS client needs a listener without -A)"
          : "";
        this.#log(
          `styx: dropping connection from ${this.#conn.peer.addr}: ${errorString(e)}${hint}`,
        );
      }
    } finally {
      await this.#teardown();
      this.#connections?.give();
      // Once enough clients have left, their memory goes back to the system.
      sessionEnded();
    }
  }

  /** True while the bounds say no further request may be read. */
  #mustWait(): boolean {
    if (this.#running.size >= this.#maxInFlight) return true;
    const bytes = this.#writer.queued + this.#heldBytes;
    if (this.#paused) {
      if (bytes > this.#maxReplyBytes / 2) return true;
      this.#paused = false;
    } else if (bytes >= this.#maxReplyBytes) {
      this.#paused = true;
      return true;
    }
    return false;
  }

  /** Let the read loop go on if it waits and the bounds now allow it. */
  #wake(): void {
    if (this.#drain && (this.#closing || !this.#mustWait())) {
      this.#drain.resolve();
      this.#drain = null;
    }
  }

  /**
   * The connection has ended: abort every request, drop every queued reply.
   * Requests not yet started never reach the tree; results still coming
   * are dropped in {@link #finish}.
   */
  #hangup(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#conn.close();
    this.#pending.clear();
    for (const req of this.#running) req.abort(new StyxError(Ename.hungup));
    this.#writer.abandon();
    this.#wake();
  }

  /**
   * Refuse a connection over the cap: answer its first request with an
   * Rerror naming the cap (reading it first, so closing does not reset the
   * connection before the answer arrives), then close.
   */
  async #refuse(): Promise<void> {
    const cap = this.#connections!;
    const n = cap.refused(Date.now());
    if (n > 0) {
      this.#log(
        `styx: refusing ${
          n === 1 ? "a connection" : `${n} connections`
        } (latest from ${this.#conn.peer.addr}): ${cap.max} connections are already being served`,
      );
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      // A silent peer is not waited for longer than a frame may take.
      const wait = this.#reader.frameTimeoutMs || DEFAULT_FRAME_TIMEOUT_MS;
      const frame = await Promise.race([
        this.#reader.next(),
        new Promise<null>((r) => timer = setTimeout(() => r(null), wait)),
      ]);
      if (frame !== null && frame.length >= 7) {
        const tag = frame[5]! | frame[6]! << 8;
        await this.#conn.write(encode({
          type: MsgType.Rerror,
          tag,
          ename: `too many connections: this server serves at most ${cap.max} at once; ` +
            "try again later",
        }));
      }
    } catch {
      // Nothing more can be said to a peer that broke off.
    } finally {
      clearTimeout(timer);
      this.#conn.close();
    }
  }

  // -------------------------------------------------------------------------
  // Replies

  #send(msg: RMsg): void {
    if (this.#closing) return this.#discard(msg);
    // No other request is running and none has arrived: no other reply
    // can join this one in a write, so it goes at once.
    const now = this.#running.size <= 1 && this.#reader.buffered === 0;
    if (msg.type === MsgType.Rread) {
      // Data read into a buffer with room for the header goes out as one
      // frame, built in place.
      const f = rreadInPlace(msg.tag, msg.data);
      if (f !== null) {
        if (this.#trace) this.#log(`-> ${formatMsg(msg)}`);
        this.#writer.write(f, now);
        return;
      }
    }
    if (msg.type === MsgType.Rread && msg.data.length >= SPLIT) {
      // Large reads go out as header and data, so the data is never copied.
      if (this.#trace) this.#log(`-> ${formatMsg(msg)}`);
      const h = new Uint8Array(RREAD_HEADER);
      encodeHeader(msg, h);
      this.#writer.write(h);
      this.#writer.write(msg.data, now);
      return;
    }
    let frame: Uint8Array;
    try {
      frame = encodeWith(msg, this.#replyBuf);
    } catch (e) {
      // A reply the codec refuses (an over-long name from a tree, say); it
      // took no reply buffer, since encodeWith checks before it allocates.
      frame = encode({
        type: MsgType.Rerror,
        tag: msg.tag,
        ename: `cannot encode ${msgName(msg.type)}: ${errorString(e)}`.slice(0, 1024),
      });
    }
    if (this.#trace) this.#log(`-> ${formatMsg(msg)}`);
    this.#writer.write(frame, now);
  }

  // -------------------------------------------------------------------------
  // Requests

  #dispatch(m: TMsg): void {
    switch (m.type) {
      case MsgType.Tversion:
        this.#version(m.tag, m.msize, m.version);
        return;
      case MsgType.Tflush:
        this.#flush(m.tag, m.oldtag);
        return;
    }
    if (this.#pending.has(m.tag)) {
      // The client reused a tag still in flight; answer without disturbing the first.
      this.#send({ type: MsgType.Rerror, tag: m.tag, ename: "tag in use" });
      return;
    }
    if (this.#msize === 0) {
      this.#send({
        type: MsgType.Rerror,
        tag: m.tag,
        ename: "no version negotiated: send Tversion first",
      });
      return;
    }
    switch (m.type) {
      case MsgType.Tauth:
        this.#send({ type: MsgType.Rerror, tag: m.tag, ename: Ename.noAuth });
        return;
      case MsgType.Tattach:
        return this.#attach(m);
      case MsgType.Twalk:
        return this.#walk(m);
      case MsgType.Topen:
        return this.#open(m);
      case MsgType.Tcreate:
        return this.#create(m);
      case MsgType.Tread:
        return this.#read(m);
      case MsgType.Twrite:
        return this.#write(m);
      case MsgType.Tclunk:
        return this.#clunk(m.tag, m.fid, false);
      case MsgType.Tremove:
        return this.#clunk(m.tag, m.fid, true);
      case MsgType.Tstat:
        return this.#stat(m.tag, m.fid);
      case MsgType.Twstat:
        return this.#wstat(m);
    }
  }

  /**
   * Run `fn` as request `tag`: registers it for Tflush, sends its reply or
   * an Rerror, and drops the reply if the request was flushed.
   */
  #run(tag: number, type: number, fn: (req: Req) => Promise<Reply>, held = 0): void {
    this.#settle(this.#begin(tag, type, held), fn);
  }

  /** Register request `tag` (for Tflush, the bounds and hangup). */
  #begin(tag: number, type: number, held: number): Req {
    const req = new Req(tag, type, held);
    this.#heldBytes += held;
    this.#pending.set(tag, req);
    this.#running.add(req);
    return req;
  }

  /** Answer `req` with what `fn` resolves to, or an Rerror with what it throws. */
  #settle(req: Req, fn: (req: Req) => Promise<Reply>): void {
    let out: Promise<Reply>;
    try {
      out = fn(req);
    } catch (e) {
      out = Promise.reject(e);
    }
    out.then((r) => this.#end(req, r, null), (e) => this.#end(req, null, e));
  }

  /** `req` is over: give back what it used, then send its reply (or drop it). */
  #end(req: Req, r: Reply | null, e: unknown): void {
    const f = req.fid;
    if (f !== null) {
      const change = req.change;
      if (change !== null) {
        change.resolve();
        if (f.busy === change.promise) f.busy = null;
      }
      this.#unref(f);
    }
    try {
      req.after?.();
    } catch (err) {
      r = null;
      e = err;
    }
    let reply: RMsg;
    if (r !== null) {
      // The reply is the handler's own new object: it takes the tag as it is.
      reply = r as RMsg;
      reply.tag = req.tag;
    } else {
      reply = { type: MsgType.Rerror, tag: req.tag, ename: errorString(e) };
    }
    this.#finish(req, reply);
    this.#running.delete(req);
    if (this.#idle !== null && this.#running.size === 0) this.#idle.resolve();
    this.#wake();
  }

  #finish(req: Req, reply: RMsg): void {
    if (this.#pending.get(req.tag) === req) this.#pending.delete(req.tag);
    // What the request held now leaves with its reply (or is dropped).
    this.#heldBytes -= req.held;
    req.held = 0;
    req.finished = true;
    if (req.flushed) return this.#discard(reply);
    this.#send(reply);
  }

  /** The writer is done with `frame`: its buffer may be used again. */
  #released(frame: Uint8Array): void {
    if (this.#arena !== null && frame.buffer === this.#arena.buffer) {
      if (--this.#arenaLive === 0) this.#arenaUsed = 0;
      return;
    }
    recycleReadData(frame);
  }

  /** Drop a reply that will never be sent, giving back its read buffer. */
  #discard(reply: RMsg): void {
    // Nothing else refers to a buffer a tree returned from a read.
    if (reply.type === MsgType.Rread) recycleReadBuffer(reply.data.buffer);
  }

  /**
   * Like {@link #run}, for a request on fid `fid`. It first waits for the
   * state changes (attach, walk, open, create, clunk) queued on the fid
   * before it; with `change`, requests queued after it wait for it in turn,
   * and without, those after it wait until it has started. The fid is
   * looked up now, in arrival order, so pipelined requests see the fids
   * reserved by those ahead of them.
   */
  #useFid(
    tag: number,
    type: number,
    fid: number,
    change: boolean,
    fn: (req: Req, f: Fid, signal: AbortSignal) => Promise<Reply>,
    after?: () => void,
    held = 0,
  ): void {
    const f = this.#fids.get(fid);
    const req = this.#begin(tag, type, held);
    req.after = after;
    if (!f) return this.#settle(req, () => Promise.reject(new StyxError(Ename.badFid)));
    const prev = f.busy;
    if (change) {
      req.change = deferred();
      f.busy = req.change.promise;
    }
    f.refs++;
    req.fid = f;
    const go = (req: Req): Promise<Reply> => {
      if (f.clunked || !f.node) throw new StyxError(Ename.badFid);
      return fn(req, f, req.signal);
    };
    if (prev === null) return this.#settle(req, go);
    // Waiting its turn behind a state change: requests after this one (a
    // Tclunk, say) wait until it has started, so it still finds the fid.
    const start = change ? null : deferred();
    if (start) f.busy = start.promise;
    const started = () => {
      if (start === null) return;
      start.resolve();
      if (f.busy === start.promise) f.busy = null;
    };
    this.#settle(req, () =>
      prev.then(() => {
        try {
          // Flushed or hung up while waiting its turn: never reaches the tree.
          if (req.flushed) throw new StyxError(Ename.interrupted);
          return go(req);
        } finally {
          started();
        }
      }));
  }

  #unref(f: Fid): void {
    f.refs--;
    if (f.refs === 0 && f.clunked) this.#release(f);
  }

  /** Close what the fid holds (once); tracked so teardown can wait for it. */
  #release(f: Fid): Promise<void> {
    if (f.released) return Promise.resolve();
    f.released = true;
    if (f.excl !== null) {
      this.#excl.delete(f.excl);
      f.excl = null;
    }
    const file = f.file;
    const node = f.node;
    f.file = null;
    f.dir = null;
    const p = file === null && node !== null
      ? this.#closeNode(f, node)
      : this.#closeBoth(f, file, node);
    this.#releasing.add(p);
    p.finally(() => this.#releasing.delete(p));
    return p;
  }

  /** Release a fid that was never opened: the common walk-then-clunk case. */
  #closeNode(f: Fid, node: Node): Promise<void> {
    let p: Promise<void>;
    try {
      p = node.close();
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.catch((e) => this.#log(`styx: releasing fid ${f.num}: ${errorString(e)}`));
  }

  /** Close the open file, then the node (either may be absent). */
  async #closeBoth(f: Fid, file: OpenFile | null, node: Node | null): Promise<void> {
    if (file) {
      try {
        await file.close();
      } catch (e) {
        this.#log(`styx: closing fid ${f.num}: ${errorString(e)}`);
      }
    }
    if (node) {
      try {
        await node.close();
      } catch (e) {
        this.#log(`styx: releasing fid ${f.num}: ${errorString(e)}`);
      }
    }
  }

  /** Take `f` out of the table and release it once no request uses it. */
  #drop(f: Fid): Promise<void> {
    f.clunked = true;
    if (this.#fids.get(f.num) === f) this.#fids.delete(f.num);
    return f.refs === 0 ? this.#release(f) : Promise.resolve();
  }

  // -------------------------------------------------------------------------
  // Individual messages

  #version(tag: number, msize: number, version: string): void {
    // A new Tversion aborts everything outstanding and clunks every fid.
    for (const req of this.#pending.values()) req.abort(new StyxError(Ename.interrupted));
    this.#pending.clear();
    for (const f of [...this.#fids.values()]) this.#drop(f);
    this.#msize = 0;
    if (!version.startsWith("9P2000")) {
      this.#send({ type: MsgType.Rversion, tag, msize: this.#maxMsize, version: "unknown" });
      return;
    }
    if (msize < MIN_MSIZE) {
      this.#send({
        type: MsgType.Rerror,
        tag,
        ename: `msize ${msize} is too small: at least ${MIN_MSIZE} is needed`,
      });
      return;
    }
    this.#msize = Math.min(msize, this.#maxMsize);
    this.#reader.msize = this.#msize;
    this.#send({ type: MsgType.Rversion, tag, msize: this.#msize, version: VERSION });
  }

  #flush(tag: number, oldtag: number): void {
    const old = this.#pending.get(oldtag);
    if (old && old.type !== MsgType.Tflush) {
      // Its reply has not been queued yet: it never will be.
      this.#pending.delete(oldtag);
      old.abort(new StyxError(Ename.interrupted));
    }
    // Either the old request is gone, or its reply is already queued ahead
    // of this Rflush: both satisfy flush(5).
    this.#send({ type: MsgType.Rflush, tag });
  }

  /** At the fid limit: answer `tag` with an Rerror naming it and say true. */
  #tooManyFids(tag: number): boolean {
    if (this.#fids.size < this.#maxFids) return false;
    this.#send({
      type: MsgType.Rerror,
      tag,
      ename: `too many fids: a connection may hold at most ${this.#maxFids}; clunk some first`,
    });
    return true;
  }

  #attach(m: Tattach): void {
    if (this.#fids.has(m.fid)) {
      this.#send({ type: MsgType.Rerror, tag: m.tag, ename: Ename.fidInUse });
      return;
    }
    if (m.afid !== NOFID) {
      this.#send({ type: MsgType.Rerror, tag: m.tag, ename: Ename.noAuth });
      return;
    }
    if (this.#tooManyFids(m.tag)) return;
    const f = new Fid(m.fid);
    const mine = deferred();
    f.busy = mine.promise;
    this.#fids.set(m.fid, f);
    this.#run(m.tag, m.type, async (req) => {
      try {
        const caller = await this.#callerFor(m.uname, m.aname, this.#conn.peer);
        const node = await this.#tree.attach(caller, m.aname);
        if (req.flushed || f.clunked) {
          await node.close();
          throw new StyxError(Ename.interrupted);
        }
        f.node = node;
        f.qid = node.qid;
        return { type: MsgType.Rattach, qid: node.qid };
      } catch (e) {
        this.#drop(f);
        throw e;
      } finally {
        mine.resolve();
        if (f.busy === mine.promise) f.busy = null;
      }
    });
  }

  #walk(m: Twalk): void {
    const src = this.#fids.get(m.fid);
    if (!src) {
      this.#send({ type: MsgType.Rerror, tag: m.tag, ename: Ename.badFid });
      return;
    }
    let names = m.wnames;
    const bad = names.findIndex(badName);
    if (bad === 0) {
      this.#send({ type: MsgType.Rerror, tag: m.tag, ename: Ename.badName });
      return;
    }
    const partialOnly = bad > 0;
    if (partialOnly) names = names.slice(0, bad);

    if (src.busy === null && !src.clunked && src.node?.walkNow) {
      return this.#walkNow(m, src, names, partialOnly);
    }

    if (m.newfid === m.fid) {
      this.#useFid(m.tag, m.type, m.fid, true, async (req, f, signal) => {
        const r = await walkFid(f, names, partialOnly, () => req.flushed || f.clunked, signal);
        if (r.node) {
          const old = f.node!;
          f.node = r.node;
          f.qid = r.qid;
          await old.close().catch(() => {});
        }
        return { type: MsgType.Rwalk, wqids: r.wqids };
      });
      return;
    }

    if (this.#fids.has(m.newfid)) {
      this.#send({ type: MsgType.Rerror, tag: m.tag, ename: Ename.fidInUse });
      return;
    }
    if (this.#tooManyFids(m.tag)) return;
    // Reserve newfid now, so requests pipelined behind this walk find it.
    const nf = new Fid(m.newfid);
    const mine = deferred();
    nf.busy = mine.promise;
    this.#fids.set(m.newfid, nf);
    let ok = false;
    this.#useFid(m.tag, m.type, m.fid, false, async (req, f, signal) => {
      const r = await walkFid(f, names, partialOnly, () => req.flushed || nf.clunked, signal);
      if (r.node) {
        nf.node = r.node;
        nf.qid = r.qid;
        ok = true;
      }
      return { type: MsgType.Rwalk, wqids: r.wqids };
    }, () => {
      // A failed or partial walk leaves newfid unused.
      if (!ok) this.#drop(nf);
      mine.resolve();
      if (nf.busy === mine.promise) nf.busy = null;
    });
  }

  /**
   * Twalk on a node that walks at once, with nothing queued on its fid:
   * answered here and now, as {@link #walk} would answer it.
   */
  #walkNow(m: Twalk, src: Fid, names: string[], partialOnly: boolean): void {
    if (m.newfid !== m.fid) {
      if (this.#fids.has(m.newfid)) {
        return this.#send({ type: MsgType.Rerror, tag: m.tag, ename: Ename.fidInUse });
      }
      if (this.#tooManyFids(m.tag)) return;
    }
    let reply: RMsg;
    try {
      const r = walkFidNow(src, names, partialOnly);
      if (r.node) {
        if (m.newfid === m.fid) {
          const old = src.node!;
          src.node = r.node;
          src.qid = r.qid;
          closeQuietly(old);
        } else {
          const nf = new Fid(m.newfid);
          nf.node = r.node;
          nf.qid = r.qid;
          this.#fids.set(m.newfid, nf);
        }
      }
      reply = { type: MsgType.Rwalk, tag: m.tag, wqids: r.wqids };
    } catch (e) {
      reply = { type: MsgType.Rerror, tag: m.tag, ename: errorString(e) };
    }
    this.#send(reply);
  }

  #stat(tag: number, fid: number): void {
    const f = this.#fids.get(fid);
    if (f !== undefined && f.busy === null && !f.clunked && f.node?.statNow) {
      // Answered at once: nothing is queued on the fid, and the tree need
      // not wait for anything.
      if (f.node.statEntryNow && !this.#trace && !this.#closing) {
        // Already encoded by the node: the reply is a header in front.
        let entry: Uint8Array;
        try {
          entry = f.node.statEntryNow();
        } catch (e) {
          return this.#send({ type: MsgType.Rerror, tag, ename: errorString(e) });
        }
        if (entry.length <= 0xffff) return this.#sendStat(tag, entry);
      }
      let reply: RMsg;
      try {
        reply = { type: MsgType.Rstat, tag, stat: f.node.statNow() };
      } catch (e) {
        reply = { type: MsgType.Rerror, tag, ename: errorString(e) };
      }
      return this.#send(reply);
    }
    this.#useFid(tag, MsgType.Tstat, fid, false, async (_req, f, signal) => {
      const stat = await f.node!.stat({ signal });
      return { type: MsgType.Rstat, stat };
    });
  }

  /** Send an Rstat for `tag` carrying the encoded stat entry `entry`. */
  #sendStat(tag: number, entry: Uint8Array): void {
    const size = HEADER_SIZE + 2 + entry.length;
    const frame = this.#replyBuf(size);
    frame[0] = size;
    frame[1] = size >>> 8;
    frame[2] = size >>> 16;
    frame[3] = size >>> 24;
    frame[4] = MsgType.Rstat;
    frame[5] = tag;
    frame[6] = tag >>> 8;
    frame[7] = entry.length;
    frame[8] = entry.length >>> 8;
    frame.set(entry, 9);
    // As #send decides: at once when no other reply can join it.
    this.#writer.write(frame, this.#running.size <= 1 && this.#reader.buffered === 0);
  }

  #iounit(file: OpenFile): number {
    const max = this.#msize - IOHDRSZ;
    return file.iounit > 0 && file.iounit < max ? file.iounit : max;
  }

  /** Reserve the exclusive-use slot for `qid` or fail. */
  #claimExclusive(f: Fid, qid: Qid): void {
    if (!(qid.type & QTEXCL)) return;
    if (this.#excl.has(qid.path)) throw new StyxError(Ename.exclusive);
    this.#excl.add(qid.path);
    f.excl = qid.path;
  }

  #unclaimExclusive(f: Fid): void {
    if (f.excl !== null) {
      this.#excl.delete(f.excl);
      f.excl = null;
    }
  }

  #open(m: Topen): void {
    this.#useFid(m.tag, m.type, m.fid, true, async (req, f, signal) => {
      if (f.file) throw new StyxError(Ename.openFid);
      if (m.mode & ~(3 | OTRUNC | ORCLOSE)) throw new StyxError(`bad open mode ${m.mode}`);
      if ((f.qid.type & QTDIR) && (m.mode & ~ORCLOSE) !== OREAD) {
        throw new StyxError(Ename.isDir);
      }
      this.#claimExclusive(f, f.qid);
      let file: OpenFile;
      try {
        file = await f.node!.open(m.mode, { signal });
      } catch (e) {
        this.#unclaimExclusive(f);
        throw e;
      }
      if (req.flushed || f.clunked) {
        this.#unclaimExclusive(f);
        await file.close().catch(() => {});
        throw new StyxError(Ename.interrupted);
      }
      f.file = file;
      f.omode = m.mode;
      f.qid = file.qid;
      return { type: MsgType.Ropen, qid: file.qid, iounit: this.#iounit(file) };
    });
  }

  #create(m: Tcreate): void {
    this.#useFid(m.tag, m.type, m.fid, true, async (req, f, signal) => {
      if (f.file) throw new StyxError(Ename.openFid);
      if (!(f.qid.type & QTDIR)) throw new StyxError(Ename.notDir);
      if (badName(m.name) || m.name === "..") throw new StyxError(Ename.badName);
      if (m.mode & ~(3 | OTRUNC | ORCLOSE)) throw new StyxError(`bad open mode ${m.mode}`);
      const c = await f.node!.create(m.name, m.perm, m.mode, { signal });
      if (req.flushed || f.clunked) {
        await c.file.close().catch(() => {});
        await c.node.close().catch(() => {});
        throw new StyxError(Ename.interrupted);
      }
      const old = f.node!;
      f.node = c.node;
      f.file = c.file;
      f.omode = m.mode;
      f.qid = c.file.qid;
      if ((f.qid.type & QTEXCL) && !this.#excl.has(f.qid.path)) {
        this.#excl.add(f.qid.path);
        f.excl = f.qid.path;
      }
      await old.close().catch(() => {});
      return { type: MsgType.Rcreate, qid: c.file.qid, iounit: this.#iounit(c.file) };
    });
  }

  #read(m: Tread): void {
    const f = this.#fids.get(m.fid);
    const file = f?.file;
    if (
      f !== undefined && file?.readNow && f.busy === null && !f.clunked &&
      !(f.qid.type & QTDIR) && canRead(f.omode)
    ) {
      // Read and answered at once when the file can: nothing is queued on
      // the fid. The data's buffer counts against the connection's bound
      // from here as queued reply bytes.
      const count = Math.min(m.count, this.#msize - IOHDRSZ);
      let reply: RMsg | null = null;
      try {
        const data = file.readNow(m.offset, count, READ_NOW);
        if (data !== undefined) {
          reply = {
            type: MsgType.Rread,
            tag: m.tag,
            data: data.length > count ? data.subarray(0, count) : data,
          };
        }
      } catch (e) {
        reply = { type: MsgType.Rerror, tag: m.tag, ename: errorString(e) };
      }
      if (reply !== null) return this.#send(reply);
    }
    this.#useFid(m.tag, m.type, m.fid, false, async (req, f, signal) => {
      const file = f.file;
      if (!file) throw new StyxError(Ename.notOpen);
      if (!canRead(f.omode)) throw new StyxError(Ename.perm);
      const count = Math.min(m.count, this.#msize - IOHDRSZ);
      if (f.qid.type & QTDIR) return await this.#readDir(f, file, m.offset, count, signal);
      const data = await file.read(m.offset, count, this.#readOptions(req, signal));
      return {
        type: MsgType.Rread,
        data: data.length > count ? data.subarray(0, count) : data,
      };
    });
  }

  /**
   * What a read is given: buffers with room for the Rread header. The one
   * for its data counts against the connection's bound from then until the
   * reply has left; one filled ahead of the read does not.
   */
  #readOptions(req: Req, signal: AbortSignal): ReadOptions {
    return {
      signal,
      alloc: (n) => {
        if (!req.finished) {
          req.held += RREAD_HEADER + n;
          this.#heldBytes += RREAD_HEADER + n;
        }
        return allocReadData(n);
      },
      allocAhead: allocReadData,
    };
  }

  async #readDir(
    f: Fid,
    file: OpenFile,
    offset: bigint,
    count: number,
    signal: AbortSignal,
  ): Promise<Reply> {
    // Directory reads on one fid run one at a time: each continues the last.
    const prev = f.dirLock;
    const mine = deferred();
    f.dirLock = mine.promise;
    try {
      await prev;
      if (offset === 0n) {
        await f.dir?.more?.return?.();
        // A file that lists in batches is read as the client goes: an open
        // directory holds one batch, not the whole listing.
        const more = file.dirEntries?.();
        f.dir = more
          ? { entries: [], more, index: 0, offset: 0n }
          : { entries: await file.readDir({ signal }), index: 0, offset: 0n };
      } else if (!f.dir || offset !== f.dir.offset) {
        throw new StyxError(Ename.badOffset);
      }
      const st = f.dir!;
      const parts: Uint8Array[] = [];
      let n = 0;
      for (;;) {
        if (st.index === st.entries.length) {
          const r = st.more ? await st.more.next() : { done: true as const, value: undefined };
          if (r.done) {
            st.more = undefined;
            break;
          }
          st.entries = r.value;
          st.index = 0;
          continue;
        }
        const b = encodeDir(st.entries[st.index]!);
        if (n + b.length > count) {
          if (parts.length === 0) {
            throw new StyxError(
              `read count ${count} is too small for a directory entry of ${b.length} bytes`,
            );
          }
          break;
        }
        parts.push(b);
        n += b.length;
        st.index++;
      }
      const data = concatBytes(parts, n);
      st.offset += BigInt(n);
      return { type: MsgType.Rread, data };
    } finally {
      mine.resolve();
    }
  }

  #write(m: Twrite): void {
    const f = this.#fids.get(m.fid);
    const file = f?.file;
    if (
      f !== undefined && file?.writeNow && f.busy === null && !f.clunked &&
      !(f.qid.type & QTDIR) && canWrite(f.omode)
    ) {
      // Written and answered at once when the file can: nothing is queued
      // on the fid, and the data is not needed afterwards.
      let reply: RMsg | null = null;
      try {
        const n = file.writeNow(m.offset, m.data);
        if (n !== undefined) reply = { type: MsgType.Rwrite, tag: m.tag, count: n };
      } catch (e) {
        reply = { type: MsgType.Rerror, tag: m.tag, ename: errorString(e) };
      }
      if (reply !== null) {
        if (this.#reuseWrites && !this.#reader.lent(m.data)) writePool.give(m.data.buffer);
        return this.#send(reply);
      }
    }
    let data = m.data;
    if (this.#reader.lent(data)) {
      // The frame was lent by the reader, which reads the next one over it.
      const copy = this.#reuseWrites ? writePool.take(data.length) : new Uint8Array(data.length);
      copy.set(data);
      data = copy;
    }
    this.#useFid(
      m.tag,
      m.type,
      m.fid,
      false,
      async (_req, f, signal) => {
        const file = f.file;
        if (!file) throw new StyxError(Ename.notOpen);
        if (f.qid.type & QTDIR) throw new StyxError(Ename.isDir);
        if (!canWrite(f.omode)) throw new StyxError(Ename.perm);
        try {
          const n = await file.write(m.offset, data, { signal });
          return { type: MsgType.Rwrite, count: n };
        } finally {
          // A write cut short by a flush or hangup may still be using the
          // data underneath (a socket write under way): its buffer is left
          // to the garbage collector rather than reused.
          if (this.#reuseWrites && !signal.aborted) writePool.give(data.buffer);
        }
      },
      undefined,
      data.length,
    );
  }

  #wstat(m: Twstat): void {
    this.#useFid(m.tag, m.type, m.fid, false, async (_req, f, signal) => {
      await f.node!.wstat(m.stat, { signal });
      return { type: MsgType.Rwstat };
    });
  }

  /** Tclunk, or Tremove when `remove`: either way the fid is gone afterwards. */
  #clunk(tag: number, fid: number, remove: boolean): void {
    const f = this.#fids.get(fid);
    if (
      f && !remove && f.busy === null && f.refs === 0 && !f.clunked && f.file === null &&
      f.excl === null && f.node?.closeNow
    ) {
      // Nothing queued on it, never opened, and its node closes at once.
      f.clunked = true;
      f.released = true;
      if (this.#fids.get(fid) === f) this.#fids.delete(fid);
      const node = f.node;
      f.node = null;
      f.dir = null;
      try {
        node.closeNow!();
      } catch (e) {
        this.#log(`styx: releasing fid ${f.num}: ${errorString(e)}`);
      }
      return this.#send({ type: MsgType.Rclunk, tag });
    }
    if (f && !remove && f.busy === null) {
      // Nothing queued on the fid: it is gone from now on.
      const req = this.#begin(tag, MsgType.Tclunk, 0);
      if (f.clunked || !f.node) {
        return this.#settle(req, () => Promise.reject(new StyxError(Ename.badFid)));
      }
      f.clunked = true;
      if (this.#fids.get(fid) === f) this.#fids.delete(fid);
      // A request still using it (a blocked read) releases it when done.
      if (f.refs > 0) return this.#settle(req, () => Promise.resolve(rclunk()));
      return this.#settle(req, () => this.#release(f).then(rclunk));
    }
    // A state change like any other: requests sent after it wait for it,
    // and so find the fid gone.
    const prev = f?.busy ?? null;
    const mine = f ? deferred() : null;
    if (f) f.busy = mine!.promise;
    this.#run(tag, remove ? MsgType.Tremove : MsgType.Tclunk, async (req) => {
      if (!f) throw new StyxError(Ename.badFid);
      try {
        return await this.#clunkNow(req, f, fid, remove, prev);
      } finally {
        mine!.resolve();
        if (f.busy === mine!.promise) f.busy = null;
      }
    });
  }

  /** The clunk or remove of `f` once the state changes queued before it are done. */
  async #clunkNow(
    req: Req,
    f: Fid,
    fid: number,
    remove: boolean,
    prev: Promise<void> | null,
  ): Promise<Reply> {
    f.refs++;
    try {
      if (prev) await prev;
    } finally {
      f.refs--;
    }
    if (f.clunked || !f.node) throw new StyxError(Ename.badFid);
    f.clunked = true;
    if (this.#fids.get(fid) === f) this.#fids.delete(fid);
    let err: unknown = null;
    if (remove) {
      try {
        await f.node.remove({ signal: req.signal });
      } catch (e) {
        err = e;
      }
    }
    // Wait for the release (an ORCLOSE removal, say) unless a request
    // still using the fid, such as a blocked read, will do it later.
    if (f.refs === 0) await this.#release(f);
    if (err !== null) throw err;
    return remove ? { type: MsgType.Rremove } : { type: MsgType.Rclunk };
  }

  // -------------------------------------------------------------------------
  // Hangup

  async #teardown(): Promise<void> {
    this.#hangup();
    if (this.#running.size > 0) await (this.#idle ??= deferred()).promise;
    for (const f of [...this.#fids.values()]) this.#drop(f);
    while (this.#releasing.size > 0) await Promise.allSettled([...this.#releasing]);
    this.#drain?.resolve();
  }
}

/** Close `node` without waiting or complaining (a node no longer needed). */
function closeQuietly(node: Node): void {
  try {
    if (node.closeNow) node.closeNow();
    else node.close().catch(() => {});
  } catch {
    // Nothing to report: the node is no longer used.
  }
}

/** {@link walkFid} on a node that walks at once ({@link Node.walkNow}). */
function walkFidNow(
  f: Fid,
  names: string[],
  partialOnly: boolean,
): { wqids: Qid[]; node?: Node; qid: Qid } {
  if (f.file) throw new StyxError(Ename.openFid);
  if (names.length > 0 && !(f.qid.type & QTDIR)) throw new StyxError(Ename.walkNoDir);
  const r = f.node!.walkNow!(names);
  if (!r.node || partialOnly) {
    if (r.node) closeQuietly(r.node);
    return { wqids: r.qids, qid: f.qid };
  }
  const qid = r.qids.length > 0 ? r.qids[r.qids.length - 1]! : r.node.qid;
  return { wqids: r.qids, node: r.node, qid };
}

/**
 * The walk both forms of Twalk share: from fid `f` along `names`. A whole
 * walk yields the node to keep (unless `partialOnly`); a walk that became
 * pointless meanwhile (`gone`: flushed, or the fid clunked) releases it.
 */
async function walkFid(
  f: Fid,
  names: string[],
  partialOnly: boolean,
  gone: () => boolean,
  signal: AbortSignal,
): Promise<{ wqids: Qid[]; node?: Node; qid: Qid }> {
  if (f.file) throw new StyxError(Ename.openFid);
  if (names.length > 0 && !(f.qid.type & QTDIR)) throw new StyxError(Ename.walkNoDir);
  const r = await f.node!.walk(names, { signal });
  if (!r.node || partialOnly) {
    await r.node?.close();
    return { wqids: r.qids, qid: f.qid };
  }
  if (gone()) {
    await r.node.close();
    throw new StyxError(Ename.interrupted);
  }
  const qid = r.qids.length > 0 ? r.qids[r.qids.length - 1]! : r.node.qid;
  return { wqids: r.qids, node: r.node, qid };
}
