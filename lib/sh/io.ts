/**
 * Byte streams for the shell: what a builtin reads from and writes to, the
 * in-memory pipe between builtins, and streams over files opened through a
 * namespace.
 *
 * @module
 */

import { concatBytes } from "../bytes.ts";
import type { OpenFile } from "../fs/tree.ts";
import { errorString } from "../styx/types.ts";

/** Where a builtin reads its input. */
export interface ByteReader {
  /** The next chunk, or null at end of input. */
  read(): Promise<Uint8Array | null>;
}

/** Where a builtin writes its output. */
export interface ByteWriter {
  /** Write all of `data`. */
  write(data: Uint8Array): Promise<void>;
}

/** A command's standard input, output and error. */
export interface ShIO {
  /** Standard input. */
  stdin: ByteReader;
  /** Standard output. */
  stdout: ByteWriter;
  /** Standard error. */
  stderr: ByteWriter;
}

const enc = new TextEncoder();

/** Write `text` as UTF-8. */
export function writeText(w: ByteWriter, text: string): Promise<void> {
  return w.write(enc.encode(text));
}

/** A reader that is always at end of input. */
export const emptyReader: ByteReader = { read: () => Promise.resolve(null) };

/** A writer that discards everything. */
export const nullWriter: ByteWriter = { write: () => Promise.resolve() };

/** Read everything from `r`. */
export async function readAll(r: ByteReader): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const c = await r.read();
    if (c === null) break;
    parts.push(c);
    n += c.length;
  }
  return concatBytes(parts, n);
}

/** A writer collecting everything written, for command substitution and tests. */
export class Collector implements ByteWriter {
  #parts: Uint8Array[] = [];
  /** Append a copy of `data`. */
  write(data: Uint8Array): Promise<void> {
    this.#parts.push(data.slice());
    return Promise.resolve();
  }
  /** Everything written so far, as text. */
  text(): string {
    const dec = new TextDecoder();
    return this.#parts.map((p) => dec.decode(p, { stream: true })).join("") + dec.decode();
  }
  /** Forget what was written. */
  clear(): void {
    this.#parts = [];
  }
}

/**
 * An in-memory pipe between two builtins. Writes wait while more than
 * `limit` bytes are buffered; once the reader is done, writes are dropped.
 *
 * @example
 * ```ts
 * import { BytePipe } from "./io.ts";
 * const p = new BytePipe();
 * await p.write(new TextEncoder().encode("hi"));
 * p.closeWrite();
 * const c = await p.read();
 * if (c?.length !== 2 || (await p.read()) !== null) throw new Error("pipe");
 * ```
 */
export class BytePipe implements ByteReader, ByteWriter {
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #writeClosed = false;
  #readClosed = false;
  #readWaiter: (() => void) | null = null;
  #writeWaiters: (() => void)[] = [];

  /**
   * An empty pipe.
   * @param limit bytes buffered before writers wait
   */
  constructor(readonly limit = 64 * 1024) {}

  async write(data: Uint8Array): Promise<void> {
    while (this.#buffered >= this.limit && !this.#readClosed) {
      await new Promise<void>((r) => this.#writeWaiters.push(r));
    }
    if (this.#readClosed || this.#writeClosed || data.length === 0) return;
    this.#chunks.push(data.slice());
    this.#buffered += data.length;
    this.#wakeReader();
  }

  async read(): Promise<Uint8Array | null> {
    while (this.#chunks.length === 0) {
      if (this.#writeClosed || this.#readClosed) return null;
      await new Promise<void>((r) => (this.#readWaiter = r));
    }
    const c = this.#chunks.shift()!;
    this.#buffered -= c.length;
    this.#wakeWriters();
    return c;
  }

  /** No more data will be written: the reader sees end of input. */
  closeWrite(): void {
    this.#writeClosed = true;
    this.#wakeReader();
  }

  /** The reader is done: pending and later writes are dropped. */
  closeRead(): void {
    this.#readClosed = true;
    this.#chunks = [];
    this.#buffered = 0;
    this.#wakeWriters();
    this.#wakeReader();
  }

  #wakeReader(): void {
    const w = this.#readWaiter;
    this.#readWaiter = null;
    w?.();
  }

  #wakeWriters(): void {
    const ws = this.#writeWaiters;
    this.#writeWaiters = [];
    for (const w of ws) w();
  }
}

/**
 * A file opened by a redirection, as a Plan 9 file descriptor: readable,
 * writable or both (`<>`), with one offset that reads and writes share, so
 * `{echo query >[1=0]; cat} <>/net/cs` writes a query and reads the answer
 * through the same open file. Using it the way it was not opened fails with
 * an error naming the file.
 */
export class FileStream implements ByteReader, ByteWriter {
  #offset: bigint;
  #eof = false;
  /**
   * A stream over `file`.
   * @param file an open file
   * @param opts what it was opened for, where it starts, and its name for errors
   */
  constructor(
    readonly file: OpenFile,
    readonly opts: {
      name: string;
      read: boolean;
      write: boolean;
      offset?: bigint;
      /** Aborting it interrupts a read or write in progress (a Tflush on a remote file). */
      signal?: AbortSignal;
    },
  ) {
    this.#offset = opts.offset ?? 0n;
  }
  async read(): Promise<Uint8Array | null> {
    if (!this.opts.read) throw new Error(`'${this.opts.name}' is not open for reading`);
    if (this.#eof) return null;
    const n = this.file.iounit > 0 ? Math.min(this.file.iounit, 1 << 20) : 65536;
    const data = await this.file.read(this.#offset, n, { signal: this.opts.signal });
    if (data.length === 0) {
      this.#eof = true;
      return null;
    }
    this.#offset += BigInt(data.length);
    return data;
  }
  async write(data: Uint8Array): Promise<void> {
    if (!this.opts.write) throw new Error(`'${this.opts.name}' is not open for writing`);
    const max = this.file.iounit > 0 ? this.file.iounit : 65536;
    let off = 0;
    while (off < data.length) {
      const piece = data.subarray(off, Math.min(data.length, off + max));
      const n = await this.file.write(this.#offset, piece, { signal: this.opts.signal });
      if (n <= 0) throw new Error(`short write to '${this.opts.name}'`);
      off += n;
      this.#offset += BigInt(n);
    }
    // A write may follow a read that reached the end: reading goes on.
    this.#eof = false;
  }
}

/** What `fd` holds, as a reader; reading fails clearly when it holds only a writer. */
export function asReader(x: ByteReader | ByteWriter, fd: number): ByteReader {
  if ("read" in x && typeof x.read === "function") return x;
  return {
    read: () => Promise.reject(new Error(`file descriptor ${fd} is open for writing, not reading`)),
  };
}

/** What `fd` holds, as a writer; writing fails clearly when it holds only a reader. */
export function asWriter(x: ByteReader | ByteWriter, fd: number): ByteWriter {
  if ("write" in x && typeof x.write === "function") return x;
  return {
    write: () =>
      Promise.reject(new Error(`file descriptor ${fd} is open for reading, not writing`)),
  };
}

const INTERNAL_ERRORS = [TypeError, ReferenceError, RangeError, SyntaxError, EvalError, URIError];

/**
 * The text of error `e` for the shell's user. A JavaScript error (a
 * TypeError and the like) is a bug in Ferry, not something the user did: it
 * is reported as such, its JavaScript text only when FERRY_DEBUG is set.
 *
 * @example
 * ```ts
 * import { userError } from "./io.ts";
 * if (!userError(new TypeError("x is undefined")).startsWith("internal error")) throw new Error();
 * if (userError(new Error("file does not exist")) !== "file does not exist") throw new Error();
 * ```
 */
export function userError(e: unknown): string {
  if (INTERNAL_ERRORS.some((c) => e instanceof c)) {
    let detail = "";
    try {
      if (Deno.env.get("FERRY_DEBUG")) detail = `: ${(e as Error).stack ?? String(e)}`;
    } catch { /* no env permission */ }
    return `internal error in Ferry (please report it; FERRY_DEBUG=1 shows details)${detail}`;
  }
  return errorString(e);
}

/** Reads an open file from offset 0 (or `offset`) to its end. */
export class FileReader implements ByteReader {
  #offset: bigint;
  #done = false;
  /**
   * A reader of `file` from `offset` on.
   * @param file an open file
   * @param offset where to start
   * @param count bytes per read when the file gives no iounit
   * @param signal aborting it interrupts a read in progress (a Tflush on a remote file)
   */
  constructor(
    readonly file: OpenFile,
    offset = 0n,
    readonly count = 65536,
    readonly signal?: AbortSignal,
  ) {
    this.#offset = offset;
  }
  async read(): Promise<Uint8Array | null> {
    if (this.#done) return null;
    const n = this.file.iounit > 0 ? Math.min(this.file.iounit, 1 << 20) : this.count;
    const data = await this.file.read(this.#offset, n, { signal: this.signal });
    if (data.length === 0) {
      this.#done = true;
      return null;
    }
    this.#offset += BigInt(data.length);
    return data;
  }
}

/** Writes to an open file from `offset` on, one file write per chunk (split by iounit). */
export class FileWriter implements ByteWriter {
  #offset: bigint;
  /**
   * A writer to `file` from `offset` on.
   * @param file an open file
   * @param offset where the first write goes
   */
  constructor(readonly file: OpenFile, offset = 0n) {
    this.#offset = offset;
  }
  async write(data: Uint8Array): Promise<void> {
    const max = this.file.iounit > 0 ? this.file.iounit : 65536;
    let off = 0;
    while (off < data.length) {
      const piece = data.subarray(off, Math.min(data.length, off + max));
      const n = await this.file.write(this.#offset, piece);
      if (n <= 0) throw new Error("short write");
      off += n;
      this.#offset += BigInt(n);
    }
  }
}

/** A writer onto one of the process's own streams (stdout, stderr). */
export function denoWriter(w: { write(p: Uint8Array): Promise<number> }): ByteWriter {
  return {
    async write(data: Uint8Array) {
      let off = 0;
      while (off < data.length) off += await w.write(data.subarray(off));
    },
  };
}

/** A reader over the process's own standard input. */
export function denoReader(r: { read(p: Uint8Array): Promise<number | null> }): ByteReader {
  return {
    async read() {
      const buf = new Uint8Array(16384);
      const n = await r.read(buf);
      return n === null ? null : buf.subarray(0, n);
    },
  };
}
