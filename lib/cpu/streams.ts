/**
 * Byte queues between a process's pipes (or a socket) and Styx reads: the
 * producer runs ahead of the reader up to a bound, so a read finds as
 * much as is ready and one round trip carries it, and a reader that stops
 * reading stops the producer (backpressure) instead of growing memory.
 * Also {@link newestOnly}, which keeps a burst of settings (window sizes)
 * in order on their way to the node.
 *
 * @module
 */

import { withSignal } from "../fs/tree.ts";

/** How far a producer may run ahead of its reader. */
export const AHEAD_BYTES = 4 << 20;

/** How much one read from a byte stream may take. */
const READ_CHUNK = 1 << 20;

/**
 * A bounded queue of byte chunks read from a source by a pump of its own;
 * {@link read} takes what is ready, up to a count, and waits when nothing is.
 */
export class ByteQueue {
  #chunks: Uint8Array[] = [];
  #bytes = 0;
  #ended = false;
  #wakeReaders: (() => void)[] = [];
  #wakePump: (() => void) | null = null;
  /** Resolves once the source has ended (and its pump stopped). */
  readonly pumped: Promise<void>;

  /** Pump `next` (null at the end of the source) until it ends. */
  constructor(next: () => Promise<Uint8Array | null>, readonly limit = AHEAD_BYTES) {
    this.pumped = this.#pump(next);
  }

  /**
   * A queue fed from a web stream (a child's stdout). A byte stream is read
   * into buffers of `chunk` bytes of its own, so one read takes all a pipe
   * holds rather than the stream's default 64 KiB.
   */
  static of(stream: ReadableStream<Uint8Array>, limit?: number, chunk = READ_CHUNK): ByteQueue {
    let byob: ReadableStreamBYOBReader | undefined;
    try {
      byob = stream.getReader({ mode: "byob" });
    } catch { /* not a byte stream */ }
    if (byob) {
      const r = byob;
      let buf = new Uint8Array(chunk);
      return new ByteQueue(async () => {
        const { value, done } = await r.read(buf);
        if (done || !value) return null;
        // A short read is copied out and the buffer read into again, so a
        // queue of small reads does not hold a large buffer for each.
        if (value.length >= chunk / 2) {
          buf = new Uint8Array(chunk);
          return value;
        }
        buf = new Uint8Array(value.buffer);
        return value.slice();
      }, limit);
    }
    const r = stream.getReader();
    return new ByteQueue(async () => {
      const { value, done } = await r.read();
      return done ? null : value;
    }, limit);
  }

  async #pump(next: () => Promise<Uint8Array | null>): Promise<void> {
    try {
      for (;;) {
        while (this.#bytes >= this.limit) await new Promise<void>((r) => (this.#wakePump = r));
        const b = await next();
        if (b === null) break;
        if (b.length === 0) continue;
        this.#chunks.push(b);
        this.#bytes += b.length;
        this.#wake();
      }
    } catch {
      // A broken source ends like a closed one.
    } finally {
      this.#ended = true;
      this.#wake();
    }
  }

  #wake(): void {
    for (const f of this.#wakeReaders.splice(0)) f();
  }

  /** Bytes ready and not yet read. */
  get buffered(): number {
    return this.#bytes;
  }

  /**
   * Up to `count` bytes, waiting until some are ready; an empty array once
   * the source has ended and everything was read. `alloc` gives the buffer
   * the bytes are copied into (the Styx server's, with room for the reply's
   * header in front, where it offers one).
   */
  async read(
    count: number,
    signal?: AbortSignal,
    alloc: (n: number) => Uint8Array = (n) => new Uint8Array(n),
  ): Promise<Uint8Array> {
    while (this.#bytes === 0 && !this.#ended) {
      await withSignal(new Promise<void>((r) => this.#wakeReaders.push(r)), signal);
    }
    if (this.#bytes === 0 || count <= 0) return new Uint8Array(0);
    const n = Math.min(count, this.#bytes);
    const out = alloc(n);
    let at = 0;
    while (at < n) {
      const c = this.#chunks[0]!;
      const take = Math.min(c.length, n - at);
      out.set(take === c.length ? c : c.subarray(0, take), at);
      at += take;
      if (take === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(take);
    }
    this.#bytes -= out.length;
    const f = this.#wakePump;
    if (f && this.#bytes < this.limit) {
      this.#wakePump = null;
      f();
    }
    return out;
  }
}

/**
 * Wrap `apply` so that calls run one at a time and, while one runs, only
 * the newest value waits: a burst of window sizes ends at the last one,
 * never at whichever of several overlapping calls finished last.
 *
 * @param apply what to do with a value; its failures are dropped
 * @returns a function that resolves once its value, or a newer one, is applied
 *
 * @example
 * ```ts
 * import { newestOnly } from "./streams.ts";
 * import assert from "node:assert/strict";
 * const seen: number[] = [];
 * const set = newestOnly(async (n: number) => {
 *   await new Promise((r) => setTimeout(r, 5));
 *   seen.push(n);
 * });
 * await Promise.all([set(1), set(2), set(3)]);
 * assert.deepEqual(seen, [1, 3]);
 * ```
 */
export function newestOnly<T>(apply: (v: T) => Promise<void>): (v: T) => Promise<void> {
  let waiting: { v: T } | null = null;
  let running: Promise<void> | null = null;
  return (v) => {
    waiting = { v };
    running ??= (async () => {
      try {
        while (waiting) {
          const next = waiting;
          waiting = null;
          await apply(next.v).catch(() => {});
        }
      } finally {
        running = null;
      }
    })();
    return running;
  };
}
