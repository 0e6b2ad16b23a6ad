/**
 * Cutting a byte stream into Styx frames, and writing frames to one.
 *
 * A frame starts with its own size[4]. {@link FrameReader} reads a
 * {@link Conn} and yields one whole frame at a time: frames that arrived
 * together in one chunk come back as views of that chunk (no copy), and a
 * large frame that arrives in many chunks is copied once into a buffer
 * allocated when its size is known. On a connection that can read into a
 * buffer it is given ({@link ReadIntoConn}, such as a TCP connection), small
 * frames are read through a reused buffer and copied out at their exact
 * size, and the body of a large frame is read straight into the frame's own
 * buffer. The reused buffer is small (1 KiB) while the connection is idle:
 * a burst of frames, or a frame too big for it, moves to a larger buffer
 * shared with other connections, given back as soon as every byte in it
 * has been taken, so a thousand idle connections do not hold a thousand
 * large buffers. {@link FrameWriter} is the other direction: frames queued are
 * written in order, one write at a time, small ones gathered into one write.
 *
 * @module
 */

import type { Conn } from "../transport/conn.ts";
import { encodeHeader, RREAD_HEADER } from "./codec.ts";
import { HEADER_SIZE, MsgType } from "./types.ts";
import { onReclaim } from "./reclaim.ts";

/**
 * The byte stream no longer divides into frames (a size below 7 or above
 * msize, or end of stream in the middle of a frame). The connection cannot
 * be resynchronised and should be dropped.
 */
export class FramingError extends Error {
  /** Make an error with a message saying what was wrong. */
  constructor(message: string) {
    super(message);
    this.name = "FramingError";
  }
}

/**
 * A connection that can also read into a buffer its caller provides (a
 * {@link import("../transport/tcp.ts").TcpConn} can). Reads of both kinds
 * take bytes from the same stream, one at a time.
 */
export interface ReadIntoConn extends Conn {
  /** Read at most `buf.length` bytes into `buf`: the count, or null at end of stream. */
  readInto(buf: Uint8Array): Promise<number | null>;
}

/** True when `conn` offers {@link ReadIntoConn.readInto}. */
export function canReadInto(conn: Conn): conn is ReadIntoConn {
  return typeof (conn as Partial<ReadIntoConn>).readInto === "function";
}

/**
 * Size of the buffer each connection keeps for reading: while it is idle,
 * a read waits with this buffer, so it is what an idle connection costs.
 * Requests a client pipelines in one go (a window of Treads, a walk and
 * open) fit in it.
 */
const IDLE_READ = 1024;

/**
 * The idle buffer grows, up to this, to hold whole the frames its
 * connection sends (4 KiB Twrites, say): one read per request rather than
 * a piece in the idle buffer and the rest in a work buffer.
 */
const IDLE_READ_MAX = 16 * 1024;

/** Most bytes read ahead of the frames taken, and the largest frame gathered in a work buffer. */
const SCRATCH = 64 * 1024;
/**
 * Frames at least this large are copied out of the reused buffer into one
 * from the reader's `alloc` (a pool, say) rather than a fresh one.
 */
const ALLOC_MIN = 1024;

/** Bytes of each slab small frames are cut from (see {@link copySmall}). */
const SLAB = 8 * 1024;
let slab = new Uint8Array(0);
let slabAt = 0;

/**
 * A copy of the small frame at `buf[p, p + size)`: for most types, a piece
 * of a slab shared by every reader, since a buffer of its own costs more
 * than the rest of a walk or stat. A slab is never written again where a
 * frame was cut, so a frame stays as it is for as long as it is kept; it is
 * dropped once none of its frames is referred to. Frames whose decoded
 * message keeps a view of them (Twrite and Rread data, which a tree or a
 * reader may hold for long) get buffers of their own, so as not to keep a
 * slab alive.
 */
function copySmall(buf: Uint8Array, p: number, size: number): Uint8Array {
  const type = buf[p + 4];
  if (type === MsgType.Twrite || type === MsgType.Rread) return buf.slice(p, p + size);
  if (slabAt + size > slab.length) {
    slab = new Uint8Array(SLAB);
    slabAt = 0;
  }
  const at = slabAt;
  slabAt += size;
  for (let i = 0; i < size; i++) slab[at + i] = buf[p + i]!;
  return slab.subarray(at, at + size);
}

/**
 * Reads whole Styx frames from a connection.
 *
 * @example
 * ```ts
 * import { FrameReader } from "./frame.ts";
 * import { encode } from "./codec.ts";
 * import { memPipe } from "../transport/pipe.ts";
 * const [a, b] = memPipe();
 * await a.write(encode({ type: 120, tag: 1, fid: 7 }));
 * a.close();
 * const frames = new FrameReader(b, 8192);
 * const f = await frames.next();
 * if (f?.length !== 11 || (await frames.next()) !== null) throw new Error("wrong frames");
 * ```
 */
export class FrameReader {
  /** The largest frame accepted; may be lowered after Tversion. */
  msize: number;
  /**
   * Milliseconds a frame may take to arrive once its first byte is in
   * (0, the default: no limit). Past it the connection is closed and
   * {@link next} throws a {@link FramingError}, so a peer that starts a
   * frame and stalls cannot hold the reader (and the frame's buffer) forever.
   */
  frameTimeoutMs = 0;
  /**
   * Lend frames rather than copy them: a frame gathered in the reused
   * buffer comes back as a view of it, valid only until the next call to
   * {@link next} or {@link readAhead} (check with {@link lent}). For a
   * caller that decodes each frame at once and copies the little it keeps
   * (a server: only Twrite data outlives the decoding), this saves a
   * buffer and a copy per frame.
   */
  lend = false;
  /** The buffer the last lent frame lies in. */
  #lentFrom: ArrayBufferLike | null = null;
  readonly #conn: Conn;
  /** Unconsumed chunks, the first starting at #off. */
  #chunks: Uint8Array[] = [];
  #off = 0;
  #avail = 0;
  #eof = false;
  /** A read under way that {@link readAhead} started. */
  #filling: Promise<boolean> | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timedOut = false;
  #inNext = false;
  /**
   * With readInto: the buffer read into, its unread bytes at [#start,
   * #end): {@link #own}, or a work buffer from {@link workPool} during a
   * burst.
   */
  readonly #into: ReadIntoConn | null;
  #buf: Uint8Array | null = null;
  #start = 0;
  #end = 0;
  /** This reader's idle buffer ({@link IDLE_READ} bytes), made at the first read. */
  #own: Uint8Array | null = null;
  /** What the idle buffer grows to when next empty (see {@link IDLE_READ_MAX}). */
  #ownWant = IDLE_READ;
  /** The last read filled the idle buffer: more is likely waiting, read it into a work buffer. */
  #burst = false;

  readonly #alloc: (size: number) => Uint8Array;

  /**
   * Read frames from `conn`, refusing any larger than `msize`. `alloc`, if
   * given, supplies the buffer (of exactly `size` bytes) for each frame of
   * 1 KiB or more, and for every frame too large to come back as a view.
   */
  constructor(conn: Conn, msize: number, alloc?: (size: number) => Uint8Array) {
    this.#conn = conn;
    this.msize = msize;
    this.#into = canReadInto(conn) ? conn : null;
    this.#alloc = alloc ?? ((size) => new Uint8Array(size));
  }

  /** Bytes received but not yet returned as part of a frame. */
  get buffered(): number {
    return this.#avail + this.#end - this.#start;
  }

  /** Read one more chunk into the queue; false at end of stream. */
  #fill(): Promise<boolean> {
    return this.#filling ?? this.#fillChunk();
  }

  async #fillChunk(): Promise<boolean> {
    if (this.#eof) return false;
    for (;;) {
      const c = await this.#conn.read();
      if (c === null) {
        this.#eof = true;
        return false;
      }
      if (c.length === 0) continue;
      this.#chunks.push(c);
      this.#avail += c.length;
      return true;
    }
  }

  /** The little-endian u32 at the front of the queued bytes (needs 4 available). */
  #peekSize(): number {
    let v = 0;
    let k = 0;
    let off = this.#off;
    for (const c of this.#chunks) {
      for (let i = off; i < c.length && k < 4; i++, k++) v += c[i]! * 2 ** (8 * k);
      if (k === 4) break;
      off = 0;
    }
    return v;
  }

  /**
   * The next whole frame (size[4] included), or null when the stream ended
   * cleanly between frames. Throws {@link FramingError} when the stream ends
   * mid-frame or announces a size below 7 or above `msize`.
   */
  next(): Promise<Uint8Array | null> {
    this.#inNext = true;
    const conn = this.#into;
    if (conn === null) return this.#nextChunked();
    if (this.#filling === null && !this.#eof && this.#start === this.#end) {
      // Nothing buffered, as after each request of a client that waits
      // for every reply: one read, and the frame it brings taken as it
      // lands, without the general loop's chain of promises.
      const buf = this.#room();
      return conn.readInto(buf).then(this.#landed, this.#readFailed);
    }
    return this.#nextInto(conn);
  }

  /**
   * The read {@link next} made into an empty buffer has landed: a whole
   * frame in it is returned now; anything else (end of stream, part of a
   * frame, a size to refuse) goes on in the general loop, which finds the
   * bytes where this read put them.
   */
  readonly #landed = (n: number | null): Uint8Array | null | Promise<Uint8Array | null> => {
    const buf = this.#buf!;
    if (n === null) {
      this.#eof = true;
      this.#done();
      return null;
    }
    this.#end += n;
    this.#burst = n === buf.length && buf === this.#own;
    const p = this.#start;
    const have = this.#end - p;
    if (have >= 4) {
      const size = (buf[p]! | buf[p + 1]! << 8 | buf[p + 2]! << 16) + buf[p + 3]! * 0x1000000;
      if (size <= have && size >= HEADER_SIZE && size <= this.msize && size <= SCRATCH) {
        if (size > this.#ownWant && size <= IDLE_READ_MAX) {
          this.#ownWant = Math.min(IDLE_READ_MAX, 2 ** Math.ceil(Math.log2(size)));
        }
        let frame: Uint8Array;
        try {
          frame = this.#cut(buf, p, size);
        } catch (e) {
          return this.#readFailed(e);
        }
        this.#start += size;
        this.#taken();
        this.#done();
        return frame;
      }
    }
    return this.#nextInto(this.#into!);
  };

  /** The frame at `buf[p, p + size)`, lent or copied out of the reused buffer. */
  #cut(buf: Uint8Array, p: number, size: number): Uint8Array {
    if (this.lend) {
      this.#lentFrom = buf.buffer;
      return buf.subarray(p, p + size);
    }
    if (size < ALLOC_MIN) return copySmall(buf, p, size);
    const frame = this.#alloc(size);
    frame.set(buf.subarray(p, p + size));
    return frame;
  }

  /**
   * True when `bytes` lie in the buffer the last frame was lent from (see
   * {@link lend}): they change once {@link next} or {@link readAhead} is
   * called again, so whatever is to be kept must be copied first.
   */
  lent(bytes: Uint8Array): boolean {
    return this.#lentFrom !== null && bytes.buffer === this.#lentFrom;
  }

  /** The read {@link next} made failed: as the general loop ends on a failure. */
  readonly #readFailed = (e: unknown): never => {
    if (this.#filling === null) this.#giveBack();
    this.#done();
    throw this.#failure(e);
  };

  /** What next() ends with, however it ends: the frame deadline is over. */
  #done(): void {
    this.#inNext = false;
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  /** The error next() throws for `e`: a timeout says so rather than "connection ended". */
  #failure(e: unknown): unknown {
    if (!this.#timedOut) return e;
    return new FramingError(
      `frame still incomplete after ${this.frameTimeoutMs} ms: the peer stalled mid-frame`,
    );
  }

  /**
   * Start the frame deadline, if there is one: called before waiting for
   * more bytes of a frame already begun. On expiry the connection is closed,
   * which ends the wait.
   */
  #arm(): void {
    if (this.frameTimeoutMs <= 0 || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#conn.close();
    }, this.frameTimeoutMs);
  }

  /**
   * Read what the peer sends next into the buffer without returning a
   * frame, so a caller that has stopped taking frames (to let replies
   * drain) still learns at once when the stream ends. Resolves false at end
   * of stream, true once bytes arrived. Null when there is no room left to
   * read ahead into (64 KiB are waiting) or {@link next} is under way.
   */
  readAhead(): Promise<boolean> | null {
    if (this.#eof) return Promise.resolve(false);
    if (this.#filling) return this.#filling;
    if (this.#inNext) return null;
    if (this.#into) {
      const buf = this.#room();
      if (this.#end === buf.length) return null;
      return this.#ahead(this.#fillScratch(this.#into));
    }
    if (this.#avail >= SCRATCH) return null;
    return this.#ahead(this.#fillChunk());
  }

  /** Note a read started ahead, which next() then waits for instead of starting its own. */
  #ahead(p: Promise<boolean>): Promise<boolean> {
    return this.#filling = p.finally(() => this.#filling = null);
  }

  #checkSize(size: number): void {
    if (size < HEADER_SIZE) {
      throw new FramingError(`frame size ${size} is below the minimum of ${HEADER_SIZE}`);
    }
    if (size > this.msize) {
      throw new FramingError(`frame size ${size} exceeds msize ${this.msize}`);
    }
  }

  /** Read more into the reused buffer after #end; false at end of stream. */
  #fillInto(conn: ReadIntoConn): Promise<boolean> {
    return this.#filling ?? this.#fillScratch(conn);
  }

  async #fillScratch(conn: ReadIntoConn): Promise<boolean> {
    if (this.#eof) return false;
    const buf = this.#buf!;
    for (;;) {
      const room = buf.length - this.#end;
      const n = await conn.readInto(buf.subarray(this.#end));
      if (n === null) {
        this.#eof = true;
        return false;
      }
      if (n > 0) {
        this.#end += n;
        this.#burst = n === room && buf === this.#own;
        return true;
      }
    }
  }

  /**
   * The buffer to read into next, with room after #end unless it is a
   * full work buffer: the idle buffer when nothing is left unread (a work
   * buffer goes back), else the unread bytes moved to the front, or into a
   * work buffer when the idle buffer is full or the last read filled it.
   * Never called while a read is under way: nothing may move under it.
   */
  #room(): Uint8Array {
    let own = this.#own ??= new Uint8Array(IDLE_READ);
    let buf = this.#buf ?? own;
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      if (buf !== own) this.#giveBack();
      if (own.length < this.#ownWant) own = this.#own = new Uint8Array(this.#ownWant);
      this.#buf = own;
      return own;
    }
    if (buf === own && (this.#burst || (this.#end === buf.length && this.#start === 0))) {
      this.#toWork();
      buf = this.#buf!;
    }
    if (this.#end === buf.length && this.#start > 0) this.#compact();
    return buf;
  }

  /**
   * Move the unread bytes to the front of a work buffer. It is as large
   * whatever the msize: it is shared, and a burst of frames smaller than
   * the msize still comes in with a few reads.
   */
  #toWork(): void {
    const old = this.#buf!;
    const work = workPool.take(SCRATCH);
    work.set(old.subarray(this.#start, this.#end));
    this.#end -= this.#start;
    this.#start = 0;
    if (old !== this.#own) workPool.give(old.buffer);
    this.#buf = work;
    this.#burst = false;
  }

  /** Give the work buffer back (everything in it has been taken) and return to the idle one. */
  #giveBack(): void {
    const buf = this.#buf;
    if (buf === null || buf === this.#own) return;
    this.#buf = this.#own;
    this.#start = this.#end = 0;
    workPool.give(buf.buffer);
  }

  /** After a frame was taken: with nothing left unread, hand the work buffer back now. */
  #taken(): void {
    if (this.#start === this.#end && this.#filling === null) this.#giveBack();
  }

  async #nextInto(conn: ReadIntoConn): Promise<Uint8Array | null> {
    try {
      // A read started by readAhead fills the buffer after #end: a frame
      // already whole before it is taken at once, else the read lands before
      // anything in the buffer moves.
      if (this.#filling && !(this.#buf && this.#whole(this.#buf))) await this.#filling;
      let buf = this.#filling ? this.#buf! : this.#room();
      while (this.#end - this.#start < 4) {
        buf = this.#room();
        if (this.#end > this.#start) this.#arm();
        if (!(await this.#fillInto(conn))) {
          const have = this.#end - this.#start;
          if (have === 0) return null;
          throw new FramingError(
            `connection ended inside a frame header (${have} of 4 size bytes)`,
          );
        }
      }
      const p = this.#start;
      const size = (buf[p]! | buf[p + 1]! << 8 | buf[p + 2]! << 16) + buf[p + 3]! * 0x1000000;
      this.#checkSize(size);
      if (size > this.#ownWant && size <= IDLE_READ_MAX) {
        this.#ownWant = Math.min(IDLE_READ_MAX, 2 ** Math.ceil(Math.log2(size)));
      }
      if (size <= SCRATCH) {
        // Small enough for a reused buffer: gather it there, copy it out.
        while (this.#end - this.#start < size) {
          buf = this.#room();
          if (buf.length < size) this.#toWork();
          else if (buf.length - this.#start < size) this.#compact();
          buf = this.#buf!;
          this.#arm();
          if (!(await this.#fillInto(conn))) {
            throw new FramingError(
              `connection ended inside a frame (${
                this.#end - this.#start
              } of ${size} bytes received)`,
            );
          }
        }
        const frame = this.#cut(buf, this.#start, size);
        this.#start += size;
        this.#taken();
        return frame;
      }
      // Large: what has arrived is copied, the rest is read into place.
      const frame = this.#alloc(size);
      let have = this.#end - this.#start;
      frame.set(buf.subarray(this.#start, this.#end));
      this.#start = this.#end = 0;
      this.#taken();
      while (have < size) {
        this.#arm();
        const n = this.#eof ? null : await conn.readInto(frame.subarray(have));
        if (n === null) {
          this.#eof = true;
          throw new FramingError(
            `connection ended inside a frame (${have} of ${size} bytes received)`,
          );
        }
        have += n;
      }
      return frame;
    } catch (e) {
      // The stream is unusable now: nothing in the buffers will be taken.
      if (this.#filling === null) this.#giveBack();
      throw this.#failure(e);
    } finally {
      this.#done();
    }
  }

  /** True when a whole frame waits in the reused buffer. */
  #whole(buf: Uint8Array): boolean {
    const p = this.#start;
    const have = this.#end - p;
    if (have < 4) return false;
    return (buf[p]! | buf[p + 1]! << 8 | buf[p + 2]! << 16) + buf[p + 3]! * 0x1000000 <= have;
  }

  /** Move the unread bytes to the front of the reused buffer. */
  #compact(): void {
    const buf = this.#buf!;
    buf.copyWithin(0, this.#start, this.#end);
    this.#end -= this.#start;
    this.#start = 0;
  }

  async #nextChunked(): Promise<Uint8Array | null> {
    try {
      while (this.#avail < 4) {
        if (this.#avail > 0) this.#arm();
        if (!(await this.#fill())) {
          if (this.#avail === 0) return null;
          throw new FramingError(
            `connection ended inside a frame header (${this.#avail} of 4 size bytes)`,
          );
        }
      }
      const size = this.#peekSize();
      this.#checkSize(size);
      const first = this.#chunks[0]!;
      if (first.length - this.#off >= size) {
        // The whole frame is inside the first chunk: hand out a view.
        const frame = first.subarray(this.#off, this.#off + size);
        this.#consume(size);
        return frame;
      }
      // Spread over several chunks: allocate once, copy each piece once.
      const frame = this.#alloc(size);
      let have = 0;
      for (;;) {
        while (have < size && this.#chunks.length > 0) {
          const c = this.#chunks[0]!;
          const n = Math.min(c.length - this.#off, size - have);
          frame.set(c.subarray(this.#off, this.#off + n), have);
          have += n;
          this.#consume(n);
        }
        if (have === size) return frame;
        this.#arm();
        if (!(await this.#fill())) {
          throw new FramingError(
            `connection ended inside a frame (${have} of ${size} bytes received)`,
          );
        }
      }
    } catch (e) {
      throw this.#failure(e);
    } finally {
      this.#done();
    }
  }

  /** Drop `n` bytes from the front of the queue. */
  #consume(n: number): void {
    this.#avail -= n;
    while (n > 0) {
      const c = this.#chunks[0]!;
      const left = c.length - this.#off;
      if (n < left) {
        this.#off += n;
        return;
      }
      n -= left;
      this.#chunks.shift();
      this.#off = 0;
    }
  }

  /** Yields frames until the stream ends cleanly. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    for (;;) {
      const f = await this.next();
      if (f === null) return;
      yield f;
    }
  }
}

/** Frames smaller than this are gathered with those queued behind them into one write. */
const GATHER = 64 * 1024;

/** Options of {@link FrameWriter}. */
export interface FrameWriterOptions {
  /**
   * When writing starts once a frame is queued on an idle writer:
   * "microtask" (the default) as soon as the code that queued it is done,
   * so frames issued together go out together; "turn" at the next turn of
   * the event loop, so that frames queued by separate callbacks finishing
   * in one turn (a server's replies) also share a write.
   */
  start?: "microtask" | "turn";
  /**
   * Called with each buffer the writer has finished with while nothing else
   * reads it any more, so that it may be reused: on a connection whose
   * `releasesWrites` is true, a frame once copied into a gathered write or
   * written, and each gathered write once written; on any connection, a
   * frame {@link FrameWriter.abandon} drops unwritten.
   */
  release?(frame: Uint8Array): void;
  /** Called after each completed write (so {@link FrameWriter.queued} fell). */
  written?(): void;
  /** Called once when a write fails; the writer has abandoned its queue by then. */
  failed?(e: unknown): void;
  /**
   * Sends bytes on the connection at once, when it can (see
   * {@link import("./direct.ts").directSender}): a frame written `now` on
   * an idle writer goes through it first, and only what it did not take
   * through the connection's own write.
   */
  direct?(data: Uint8Array): number;
}

/**
 * Writes whole frames to a connection in the order queued, one write at a
 * time. Small frames queued together are gathered into one write of up to
 * 64 KiB; larger ones are written as they are, without a copy.
 *
 * @example
 * ```ts
 * import { FrameReader, FrameWriter } from "./frame.ts";
 * import { encode } from "./codec.ts";
 * import { memPipe } from "../transport/pipe.ts";
 * const [a, b] = memPipe();
 * const out = new FrameWriter(a);
 * out.write(encode({ type: 120, tag: 1, fid: 7 }));
 * out.write(encode({ type: 120, tag: 2, fid: 8 }));
 * const frames = new FrameReader(b, 8192);
 * if ((await frames.next())?.[5] !== 1 || (await frames.next())?.[5] !== 2) {
 *   throw new Error("wrong frames");
 * }
 * a.close();
 * ```
 */
export class FrameWriter {
  readonly #conn: Conn;
  /** Set for `start: "turn"`: how the next turn of the event loop is awaited. */
  readonly #turn: ((f: () => void) => unknown) | undefined;
  /** True when a resolved write has finished with its buffer (see Conn.releasesWrites). */
  readonly #releases: boolean;
  readonly #release: ((frame: Uint8Array) => void) | undefined;
  readonly #written: (() => void) | undefined;
  readonly #failed: ((e: unknown) => void) | undefined;
  readonly #direct: ((data: Uint8Array) => number) | undefined;
  #queue: Uint8Array[] = [];
  #bytes = 0;
  #writing = false;
  /** A start is scheduled and has not happened yet. */
  #due = false;
  #abandoned = false;

  /** Write frames to `conn`. */
  constructor(conn: Conn, opts: FrameWriterOptions = {}) {
    this.#conn = conn;
    // Looked up only for a writer that needs it: the first use of
    // setImmediate loads Node's timers, milliseconds of a client's start-up.
    this.#turn = opts.start === "turn" ? (f) => setImmediate(f) : undefined;
    this.#releases = conn.releasesWrites === true;
    this.#release = opts.release;
    this.#written = opts.written;
    this.#failed = opts.failed;
    this.#direct = opts.direct;
  }

  /** Bytes queued or being written. */
  get queued(): number {
    return this.#bytes;
  }

  /**
   * Queue `frame` (a whole frame, or a piece of one when the rest follows
   * at once, such as data after its header). The writer owns it from now
   * on. After {@link abandon} the frame is dropped. With `now`, writing
   * starts at once (with whatever is queued) instead of when the options'
   * `start` says: for a caller that knows nothing else will be queued
   * before then, such as a server with no other request to answer, so the
   * frame does not wait for a turn of the event loop for nothing.
   */
  write(frame: Uint8Array, now = false): void {
    if (this.#abandoned) {
      this.#release?.(frame);
      return;
    }
    this.#queue.push(frame);
    this.#bytes += frame.length;
    if (now && this.#due) {
      // Queued frames were waiting for the turn: they go now, with this one.
      this.#due = false;
      this.#pump();
      return;
    }
    if (this.#writing) return;
    this.#writing = true;
    if (now) {
      if (this.#queue.length === 1) {
        // One frame and nothing behind it (one request at a time): written
        // without the loop, which the next frame queued meanwhile restarts.
        this.#queue.pop();
        const sent = this.#direct?.(frame) ?? 0;
        if (sent === frame.length) {
          // The kernel has it all: nothing is left to wait for.
          this.#writing = false;
          this.#bytes -= frame.length;
          this.#release?.(frame);
          this.#written?.();
          return;
        }
        let p: Promise<void>;
        try {
          p = this.#conn.write(sent === 0 ? frame : frame.subarray(sent));
        } catch (e) {
          p = Promise.reject(e);
        }
        p.then(() => this.#wrote(frame), (e) => this.#writeFailed(frame, e));
        return;
      }
      this.#pump();
      return;
    }
    this.#due = true;
    const go = () => {
      if (!this.#due) return;
      this.#due = false;
      this.#pump();
    };
    if (this.#turn) this.#turn(go);
    else queueMicrotask(go);
  }

  /**
   * Write nothing more: drop every frame still queued (releasing it) and
   * the count of queued bytes. A write under way finishes on its own.
   */
  abandon(): void {
    this.#abandoned = true;
    const q = this.#queue;
    this.#queue = [];
    this.#bytes = 0;
    // Never written, so nothing else refers to them.
    if (this.#release) { for (const f of q) this.#release(f); }
  }

  /** The single frame written at once is out: carry on as the loop would. */
  #wrote(frame: Uint8Array): void {
    if (!this.#abandoned) this.#bytes -= frame.length;
    if (this.#releases) this.#release?.(frame);
    if (this.#abandoned) {
      this.#writing = false;
      return;
    }
    this.#written?.();
    if (this.#queue.length > 0 && !this.#abandoned) this.#pump();
    else this.#writing = false;
  }

  #writeFailed(frame: Uint8Array, e: unknown): void {
    if (this.#releases) this.#release?.(frame);
    this.abandon();
    this.#writing = false;
    this.#failed?.(e);
  }

  async #pump(): Promise<void> {
    let buf: Uint8Array | null = null;
    try {
      while (this.#queue.length > 0 && !this.#abandoned) {
        const out = this.#queue;
        buf = out[0]!;
        let n = 1;
        if (buf.length < GATHER && out.length > 1) {
          let total = buf.length;
          while (n < out.length && total + out[n]!.length <= GATHER) {
            total += out[n]!.length;
            n++;
          }
          if (n > 1) {
            const joined = new Uint8Array(total);
            let off = 0;
            for (let i = 0; i < n; i++) {
              const part = out[i]!;
              joined.set(part, off);
              off += part.length;
              if (this.#releases) this.#release?.(part);
            }
            buf = joined;
          }
        }
        if (n === 1) out.shift();
        else out.splice(0, n);
        await this.#conn.write(buf);
        // (Abandoning meanwhile has zeroed the count already.)
        if (!this.#abandoned) this.#bytes -= buf.length;
        if (this.#releases) this.#release?.(buf);
        buf = null;
        if (this.#abandoned) break;
        this.#written?.();
      }
    } catch (e) {
      // A failed write has finished with its buffer too.
      if (buf !== null && this.#releases) this.#release?.(buf);
      this.abandon();
      this.#failed?.(e);
    } finally {
      this.#writing = false;
    }
  }
}

/**
 * Large buffers kept for reuse. Allocating a fresh large buffer costs page
 * faults, zeroing and later garbage collection, about as much as moving its
 * bytes over loopback TCP; a bulk transfer reuses a few buffers instead.
 * Buffers are kept by exact size, or, with a `granule`, by size rounded up
 * to a multiple of it, so that replies of varying sizes (socket reads
 * relayed as they came) still find a buffer. Only buffers made by
 * {@link take} are accepted back, each at most once until it is taken again.
 * @internal
 */
export class BufferPool {
  readonly #free = new Map<number, Uint8Array[]>();
  readonly #mine = new WeakSet<ArrayBufferLike>();
  readonly #pooled = new WeakSet<ArrayBufferLike>();
  readonly #max: number;
  readonly #granule: number;
  readonly #freeExtra: boolean;
  #count = 0;

  /**
   * Keep at most `max` buffers; capacities are multiples of `granule` (1:
   * exact sizes). With `opts.freeExtra`, a buffer given back when the pool
   * is full is freed at once rather than left to the garbage collector,
   * which an idle process may not run for a long time: after a burst (many
   * connections, or a hostile client) the memory goes back to the system.
   */
  constructor(max: number, granule = 1, opts: { freeExtra?: boolean } = {}) {
    this.#max = max;
    this.#granule = granule;
    this.#freeExtra = opts.freeExtra === true;
  }

  /** A buffer of exactly `size` bytes (not necessarily zeroed), at offset 0 of its ArrayBuffer. */
  take(size: number): Uint8Array {
    // Below one granule, exact: a small frame should not cost a large buffer.
    const cap = size < this.#granule ? size : Math.ceil(size / this.#granule) * this.#granule;
    const b = this.#free.get(cap)?.pop();
    if (b !== undefined) {
      this.#count--;
      this.#pooled.delete(b.buffer);
      return b.length === size ? b : b.subarray(0, size);
    }
    const fresh = new Uint8Array(cap);
    this.#mine.add(fresh.buffer);
    return cap === size ? fresh : fresh.subarray(0, size);
  }

  /** True when `buf` was made by this pool. */
  owns(buf: ArrayBufferLike): boolean {
    return this.#mine.has(buf);
  }

  /**
   * Free every buffer kept for reuse now (with `freeExtra`), or let the
   * garbage collector have them: memory goes back once the pool's users
   * have gone.
   */
  trim(): void {
    for (const free of this.#free.values()) {
      for (const b of free) {
        this.#pooled.delete(b.buffer);
        if (this.#freeExtra && b.buffer instanceof ArrayBuffer && !b.buffer.detached) {
          b.buffer.transfer(0);
        }
      }
    }
    this.#free.clear();
    this.#count = 0;
  }

  /** Give back `buf` (the whole buffer under some view) once nothing refers to it. */
  give(buf: ArrayBufferLike): void {
    if (!this.#mine.has(buf) || this.#pooled.has(buf)) return;
    if (this.#count >= this.#max) {
      // Detaching frees the memory now.
      if (this.#freeExtra && buf instanceof ArrayBuffer && !buf.detached) buf.transfer(0);
      return;
    }
    let free = this.#free.get(buf.byteLength);
    if (free === undefined) this.#free.set(buf.byteLength, free = []);
    free.push(new Uint8Array(buf));
    this.#pooled.add(buf);
    this.#count++;
  }
}

/**
 * Work buffers of up to 64 KiB bytes, shared by every reader: taken
 * when a burst overflows a connection's idle buffer by a FrameReader, given back once the
 * burst has been taken. A few are kept for the next burst; the rest are
 * freed at once, so memory goes back after many connections were busy.
 */
const workPool = new BufferPool(16, 1, { freeExtra: true });
onReclaim(() => workPool.trim());

/** Buffers made by {@link allocReadData}: their first RREAD_HEADER bytes are free. */
const readPool = new BufferPool(32, 1, { freeExtra: true });
onReclaim(() => readPool.trim());

/**
 * A buffer of `n` bytes with room kept in front of it for an Rread header,
 * from a pool of reused buffers. The Styx server hands it to trees (as
 * `ReadOptions.alloc`) to read file data into and return from
 * `OpenFile.read`, whole or a prefix of it; it then writes the Rread header
 * into the room in front ({@link rreadInPlace}), sends header and data as
 * one write without copying the data, and afterwards reuses the buffer for
 * a later read. Its contents are not guaranteed to be zero.
 *
 * @example
 * ```ts
 * import { allocReadData } from "./frame.ts";
 * const buf = allocReadData(8192);
 * if (buf.length !== 8192) throw new Error("wrong size");
 * ```
 * @internal
 */
export function allocReadData(n: number): Uint8Array {
  return readPool.take(RREAD_HEADER + n).subarray(RREAD_HEADER);
}

/**
 * The whole Rread frame for `data` with tag `tag`, its header written in
 * place by the codec when `data` came from {@link allocReadData} (no copy),
 * else null.
 * @internal
 */
export function rreadInPlace(tag: number, data: Uint8Array): Uint8Array | null {
  if (data.byteOffset !== RREAD_HEADER || !readPool.owns(data.buffer)) return null;
  const f = new Uint8Array(data.buffer, 0, RREAD_HEADER + data.length);
  encodeHeader({ type: MsgType.Rread, tag, data }, f);
  return f;
}

/**
 * Give back the buffer under a frame made by {@link rreadInPlace} once it
 * has been written and nothing refers to it any more.
 * @internal
 */
export function recycleReadData(frame: Uint8Array): void {
  if (frame.byteOffset === 0) readPool.give(frame.buffer);
}

/**
 * Give back the buffer under Rread data that reached a client in the same
 * process (through an in-memory pipe) still inside the server's buffer,
 * once its consumer is done with it. Other buffers are ignored.
 * @internal
 */
export function recycleReadBuffer(buf: ArrayBufferLike): void {
  readPool.give(buf);
}
