/**
 * Bulk transfer through a {@link RemoteFile}: several Tread or Twrite
 * requests in flight at once, with backpressure, so a copy is never one
 * round trip at a time and never buffers a whole file.
 *
 * These helpers address the file by offset, so they suit regular files. For
 * stream files whose offsets mean nothing (a /net data file), pass
 * `window: 1` to keep requests in order.
 *
 * @module
 */

import { StyxError } from "./types.ts";
import { concat, type RemoteFile } from "./client_tree.ts";

/** Options of {@link readStream}. */
export interface ReadStreamOptions {
  /** Most Treads in flight, each of `iounit` bytes (default 8). */
  window?: number;
  /** Where to start reading (default 0). */
  offset?: bigint;
  /** Aborting flushes the outstanding Treads and errors the stream. */
  signal?: AbortSignal;
  /**
   * Reuse the memory of each chunk for a later one once the consumer asks
   * for the next chunk (or the stream ends or is cancelled). A consumer
   * that keeps chunks must copy them; one that writes each chunk out before
   * reading the next (a copy to a file or to stdout) need not. Saves
   * allocating, zeroing and collecting a buffer per Tread: bulk reads run
   * faster and memory stays flat. Default false.
   */
  reuse?: boolean;
}

/** Options of {@link writeFrom}. */
export interface WriteFromOptions {
  /** Most Twrites in flight, each of `iounit` bytes (default 8). */
  window?: number;
  /** Where to start writing (default 0). */
  offset?: bigint;
  /** Aborting flushes the outstanding Twrites and rejects. */
  signal?: AbortSignal;
}

const DEFAULT_WINDOW = 8;

function checkWindow(w: number | undefined): number {
  const n = w ?? DEFAULT_WINDOW;
  if (!Number.isInteger(n) || n < 1 || n > 1024) {
    throw new RangeError(`Window ${w} is not a whole number from 1 to 1024`);
  }
  return n;
}

interface Slot {
  off: bigint;
  count: number;
  p: Promise<Uint8Array>;
}

/**
 * The read-ahead engine behind {@link readStream} and {@link readAll}:
 * Treads of `iounit` bytes at increasing offsets, up to `max` in flight
 * (starting at 2 and doubling while replies come back full), delivered in
 * order. A short reply ends the file if the block after it is empty;
 * otherwise reading goes on right after the data that came back.
 */
class ReadAhead {
  readonly #file: RemoteFile;
  readonly #max: number;
  readonly #io: number;
  readonly #signal: AbortSignal | undefined;
  #win: number;
  #next: bigint;
  #queue: Slot[] = [];
  #done = false;

  constructor(file: RemoteFile, max: number, offset: bigint, signal: AbortSignal | undefined) {
    this.#file = file;
    this.#max = max;
    this.#io = file.iounit;
    this.#signal = signal;
    this.#win = Math.min(2, max);
    this.#next = offset;
  }

  /** Issue Treads until the window is full. */
  fill(): void {
    if (this.#done) return;
    const io = this.#io;
    const opts = this.#signal ? { signal: this.#signal } : {};
    while (this.#queue.length < this.#win) {
      const off = this.#next;
      this.#next += BigInt(io);
      const p = this.#file.readOnce(off, io, opts);
      p.catch(() => {}); // observed when its turn comes; never unhandled
      this.#queue.push({ off, count: io, p });
    }
  }

  /** Stop: replies still in flight arrive and are dropped. */
  stop(): void {
    this.#done = true;
    this.#queue = [];
  }

  /** The next block in order, or null at the end of the file. */
  async next(): Promise<Uint8Array | null> {
    if (this.#done) return null;
    this.fill();
    const h = this.#queue.shift()!;
    let data: Uint8Array;
    try {
      data = await h.p;
      if (data.length === 0) {
        this.stop();
        return null;
      }
      if (data.length < h.count) {
        const nx = this.#queue[0];
        if (nx !== undefined && nx.off === h.off + BigInt(h.count)) {
          if ((await nx.p).length === 0) {
            this.stop();
            return data;
          }
        }
        // Not the end after all (a hole or a growing file): go on from here.
        this.#queue = [];
        this.#next = h.off + BigInt(data.length);
        this.#win = Math.min(2, this.#max);
        this.fill();
        return data;
      }
    } catch (e) {
      this.stop();
      throw e;
    }
    if (this.#win < this.#max) this.#win = Math.min(this.#max, this.#win * 2);
    this.fill();
    return data;
  }
}

/**
 * Read `file` from `opts.offset` to its end as a stream. Up to `window`
 * Treads are in flight (starting with 2 and doubling while replies come
 * back full, so small files cost one round trip); nothing more is asked
 * for until the consumer takes data, so memory stays within
 * `window × iounit` bytes however slowly the stream is read. The end is a
 * Tread that returns no data. The file stays open: close it afterwards.
 *
 * @example
 * ```ts ignore
 * const f = await client.openPath(root, "/big", OREAD);
 * for await (const chunk of readStream(f)) await out.write(chunk);
 * await f.close();
 * ```
 */
export function readStream(
  file: RemoteFile,
  opts: ReadStreamOptions = {},
): ReadableStream<Uint8Array> {
  const max = checkWindow(opts.window);
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  const ra = new ReadAhead(file, max, opts.offset ?? 0n, signal);
  const reuse = opts.reuse === true;
  let lent: Uint8Array | null = null;
  const giveBack = () => {
    if (lent !== null) file.client.recycle(lent);
    lent = null;
  };
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      giveBack();
      let data: Uint8Array | null;
      try {
        data = await ra.next();
      } catch (e) {
        stop.abort();
        c.error(e);
        return;
      }
      if (data === null) c.close();
      else {
        if (reuse) lent = data;
        c.enqueue(data);
      }
    },
    cancel() {
      ra.stop();
      stop.abort(); // flush what is still outstanding
    },
  }, { highWaterMark: 0 });
}

/**
 * Read `file` to its end into one buffer, with several Treads in flight
 * (as {@link readStream}, without the stream).
 */
export async function readAll(file: RemoteFile, signal?: AbortSignal): Promise<Uint8Array> {
  const ra = new ReadAhead(file, DEFAULT_WINDOW, 0n, signal);
  const parts: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const d = await ra.next();
    if (d === null) break;
    parts.push(d);
    total += d.length;
  }
  return parts.length === 0 ? new Uint8Array(0) : concat(parts, total);
}

/**
 * Write everything from `source` (a stream or bytes) to `file` starting at
 * `opts.offset`, in Twrites of `iounit` bytes with up to `window` in
 * flight. The source is read only while the window has room, so a slow
 * server slows the reader instead of filling memory. A short Rwrite is
 * continued from where it stopped; a Twrite that writes nothing fails.
 * Resolves with the number of bytes written.
 *
 * @example
 * ```ts ignore
 * const f = await client.openPath(root, "/big", OWRITE | OTRUNC);
 * const n = await writeFrom(f, (await Deno.open("big")).readable);
 * await f.close();
 * ```
 */
export async function writeFrom(
  file: RemoteFile,
  source: ReadableStream<Uint8Array> | Uint8Array,
  opts: WriteFromOptions = {},
): Promise<bigint> {
  const max = checkWindow(opts.window);
  const io = file.iounit;
  const stop = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal;
  const inflight: Promise<void>[] = [];
  let failure: unknown = null;
  let off = opts.offset ?? 0n;
  const start = off;

  const put = async (piece: Uint8Array, at: bigint): Promise<void> => {
    let done = 0;
    while (done < piece.length) {
      const n = await file.writeOnce(at + BigInt(done), piece.subarray(done), { signal });
      if (n === 0) {
        throw new StyxError(
          `short write at offset ${at + BigInt(done)}: the server accepted no bytes`,
        );
      }
      done += n;
    }
  };
  const submit = async (piece: Uint8Array): Promise<void> => {
    while (inflight.length >= max) await inflight.shift();
    if (failure !== null) throw failure;
    const p = put(piece, off).catch((e) => {
      if (failure === null) {
        failure = e;
        stop.abort();
      }
    });
    inflight.push(p);
    off += BigInt(piece.length);
  };

  try {
    if (source instanceof Uint8Array) {
      for (let p = 0; p < source.length; p += io) await submit(source.subarray(p, p + io));
    } else {
      let acc: Uint8Array | null = null;
      let accLen = 0;
      const reader = source.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          let p = 0;
          while (p < value.length) {
            if (accLen === 0 && value.length - p >= io) {
              await submit(value.subarray(p, p + io));
              p += io;
              continue;
            }
            const k = Math.min(io - accLen, value.length - p);
            acc ??= new Uint8Array(io);
            acc.set(value.subarray(p, p + k), accLen);
            accLen += k;
            p += k;
            if (accLen === io) {
              await submit(acc);
              acc = null;
              accLen = 0;
            }
          }
        }
        if (acc !== null && accLen > 0) await submit(acc.subarray(0, accLen));
      } catch (e) {
        reader.cancel(e).catch(() => {});
        throw e;
      } finally {
        reader.releaseLock();
      }
    }
    await Promise.all(inflight);
  } catch (e) {
    if (failure === null) failure = e;
    stop.abort();
    await Promise.all(inflight);
  }
  if (failure !== null) throw failure;
  return off - start;
}
