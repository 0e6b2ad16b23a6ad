/**
 * Cutting a byte stream into Styx frames.
 *
 * A frame starts with its own size[4]. {@link FrameReader} reads a
 * {@link Conn} and yields one whole frame at a time: frames that arrived
 * together in one chunk come back as views of that chunk (no copy), and a
 * large frame that arrives in many chunks is copied once into a buffer
 * allocated when its size is known.
 *
 * @module
 */

import type { Conn } from "../transport/conn.ts";
import { HEADER_SIZE } from "./types.ts";

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
  readonly #conn: Conn;
  /** Unconsumed chunks, the first starting at #off. */
  #chunks: Uint8Array[] = [];
  #off = 0;
  #avail = 0;
  #eof = false;

  /** Read frames from `conn`, refusing any larger than `msize`. */
  constructor(conn: Conn, msize: number) {
    this.#conn = conn;
    this.msize = msize;
  }

  /** Bytes received but not yet returned as part of a frame. */
  get buffered(): number {
    return this.#avail;
  }

  /** Read one more chunk into the queue; false at end of stream. */
  async #fill(): Promise<boolean> {
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
  async next(): Promise<Uint8Array | null> {
    while (this.#avail < 4) {
      if (!(await this.#fill())) {
        if (this.#avail === 0) return null;
        throw new FramingError(
          `connection ended inside a frame header (${this.#avail} of 4 size bytes)`,
        );
      }
    }
    const size = this.#peekSize();
    if (size < HEADER_SIZE) {
      throw new FramingError(`frame size ${size} is below the minimum of ${HEADER_SIZE}`);
    }
    if (size > this.msize) {
      throw new FramingError(`frame size ${size} exceeds msize ${this.msize}`);
    }
    const first = this.#chunks[0]!;
    if (first.length - this.#off >= size) {
      // The whole frame is inside the first chunk: hand out a view.
      const frame = first.subarray(this.#off, this.#off + size);
      this.#consume(size);
      return frame;
    }
    // Spread over several chunks: allocate once, copy each piece once.
    const frame = new Uint8Array(size);
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
      if (!(await this.#fill())) {
        throw new FramingError(
          `connection ended inside a frame (${have} of ${size} bytes received)`,
        );
      }
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
