/**
 * One FUSE connection serving a {@link Node}'s tree: reads kernel requests
 * from /dev/fuse, hands each to its handler (handlers.ts, ops.ts) and
 * writes the replies. Requests run concurrently; an INTERRUPT aborts the
 * matching request's signal (a remote tree turns that into Tflush).
 *
 * @module
 */

import { errorString } from "../styx/types.ts";
import type { Node } from "../fs/tree.ts";
import { Errno, readFd, waitReadable, waitReadableNow, writeParts } from "./ffi.ts";
import { ErrnoError, errnoOf } from "./errno.ts";
import { FuseOps, type Late } from "./ops.ts";
import { HANDLERS } from "./handlers.ts";
import {
  decodeBatchForgetIn,
  decodeForgetIn,
  decodeInHeader,
  decodeInitIn,
  decodeInterruptIn,
  IN_HEADER,
  type InHeader,
  InitFlag,
  initOut,
  KERNEL_MAJOR,
  KERNEL_MINOR,
  Op,
  OUT_HEADER,
} from "./proto.ts";

export { errnoOf } from "./errno.ts";

/** Tuning of a {@link FuseSession}. */
export interface SessionOptions {
  /** How long the kernel may trust a name lookup, in seconds (default 1). */
  entryTimeout?: number;
  /** How long the kernel may trust file attributes, in seconds (default 1). */
  attrTimeout?: number;
  /** Bypass the page cache for every file (default: only for files of length 0). */
  directIo?: boolean;
  /** Largest READ/WRITE the kernel sends, in bytes (default 1 MiB). */
  maxIo?: number;
  /** Owner shown for every file (default: this process's uid). */
  uid?: number;
  /** Group shown for every file (default: this process's gid). */
  gid?: number;
  /** Print each request and its result on stderr. */
  debug?: boolean;
}

/**
 * How long the loop waits for the next request on its own thread, when
 * nothing else is in flight, before handing the wait to a worker thread.
 * A program doing one call after another (tar, git, ls) sends its next
 * request within microseconds of a reply; the worker thread's hand-over
 * costs more than the request itself.
 */
const IDLE_WAIT_MS = 2;
/** Microtask turns given to requests answered without waiting on anything. */
const SETTLE_TURNS = 16;

/**
 * Serves `root` on an open, mounted /dev/fuse descriptor until the kernel
 * ends the connection (unmount) or {@link FuseSession.stop} is called.
 */
export class FuseSession {
  readonly #fd: number;
  readonly #opts: SessionOptions;
  readonly #maxIo: number;
  readonly #ops: FuseOps;
  readonly #inflight = new Map<bigint, AbortController>();
  readonly #headerBytes = new Uint8Array(OUT_HEADER);
  readonly #header = new DataView(this.#headerBytes.buffer);
  #stopped = false;
  /** A request other than FUSE_INIT has come: someone uses the mount. */
  #used = false;
  readonly #done: Promise<void>;
  #resolveInit!: () => void;
  /** Resolves once the kernel's FUSE_INIT has been answered. */
  readonly initialised: Promise<void>;
  /** Requests answered at once, without a reply of their own (or before any other). */
  readonly #immediate = new Map<number, (h: InHeader, body: Uint8Array) => void>([
    [Op.FORGET, (h, b) => this.#ops.inodes.forget(h.nodeid, decodeForgetIn(b))],
    [Op.BATCH_FORGET, (_h, b) => {
      for (const [id, n] of decodeBatchForgetIn(b)) this.#ops.inodes.forget(id, n);
    }],
    [Op.INTERRUPT, (_h, b) => this.#inflight.get(decodeInterruptIn(b))?.abort()],
    [Op.INIT, (h, b) => this.#init(h.unique, b)],
  ]);

  /** Serve `root` on the mounted device `fd`; the loop starts at once. */
  constructor(fd: number, root: Node, opts: SessionOptions = {}) {
    this.#fd = fd;
    this.#opts = opts;
    const t = {
      entryMs: (opts.entryTimeout ?? 1) * 1000,
      attrMs: (opts.attrTimeout ?? 1) * 1000,
    };
    this.#maxIo = opts.maxIo ?? 1024 * 1024;
    const uid = opts.uid ?? Deno.uid() ?? 0;
    const gid = opts.gid ?? Deno.gid() ?? 0;
    this.#ops = new FuseOps(root, t, uid, gid, opts.directIo === true);
    this.initialised = new Promise((r) => (this.#resolveInit = r));
    this.#done = this.#loop();
  }

  /** Resolves when the connection has ended. */
  get done(): Promise<void> {
    return this.#done;
  }

  /** Stop reading requests (the caller unmounts and closes the descriptor). */
  stop(): void {
    this.#stopped = true;
    for (const c of this.#inflight.values()) c.abort();
  }

  async #loop(): Promise<void> {
    const buf = new Uint8Array(this.#maxIo + 64 * 1024);
    try {
      while (!this.#stopped) {
        const r = readFd(this.#fd, buf);
        if ("n" in r) {
          if (r.n === 0) break;
          try {
            this.#dispatch(buf.slice(0, r.n));
          } catch (e) {
            // A request that cannot be decoded: answer it if it can be named.
            if (r.n >= IN_HEADER) this.#reply(decodeInHeader(buf).unique, Errno.EIO);
            if (this.#opts.debug) console.error(`fuse: bad request: ${(e as Error).message}`);
          }
          // Requests answered from what is at hand write their replies first.
          for (let i = 0; i < SETTLE_TURNS && this.#inflight.size > 0; i++) await null;
          if (this.#inflight.size > 0) continue; // maybe more queued; else wait below
          const w = await this.#waitIdle();
          if (w === "gone") break;
          continue;
        }
        if (r.errno === Errno.EINTR || r.errno === Errno.ENOENT) continue;
        if (r.errno === Errno.EAGAIN) {
          for (let i = 0; i < SETTLE_TURNS && this.#inflight.size > 0; i++) await null;
          const w = this.#inflight.size === 0
            ? await this.#waitIdle()
            : await waitReadable(this.#fd);
          if (w === "gone") break;
          continue;
        }
        break; // ENODEV: unmounted; anything else: the connection is unusable
      }
    } finally {
      this.#stopped = true;
      this.#resolveInit();
      for (const c of this.#inflight.values()) c.abort();
      await this.#ops.shutdown();
    }
  }

  /**
   * Wait for the next request when no request is in flight: here, on the
   * loop's own thread, for a moment (nothing waits on the event loop), then
   * on a worker thread so that the event loop runs meanwhile.
   */
  #waitIdle(): Promise<"ready" | "gone"> | "ready" | "gone" {
    // Not before the mount is first used: right after mounting, the
    // thread has other mounts to make and a command to start.
    if (!this.#used) return waitReadable(this.#fd);
    const w = waitReadableNow(this.#fd, IDLE_WAIT_MS);
    if (w !== "timeout") return w;
    return waitReadable(this.#fd);
  }

  #reply(unique: bigint, err: number, parts: Uint8Array[] = []): void {
    let len = OUT_HEADER;
    for (const p of parts) len += p.length;
    // One header, reused: writev has copied it by the time it returns.
    const hv = this.#header;
    hv.setUint32(0, len, true);
    hv.setInt32(4, err === 0 ? 0 : -err, true);
    hv.setBigUint64(8, unique, true);
    const e = writeParts(this.#fd, [this.#headerBytes, ...parts]);
    // ENOENT: the request was interrupted and is gone; others: connection over.
    if (e !== 0 && e !== Errno.ENOENT && this.#opts.debug) {
      console.error(`fuse: reply to ${unique} failed: errno ${e}`);
    }
  }

  #dispatch(req: Uint8Array): void {
    const h = decodeInHeader(req);
    if (h.opcode !== Op.INIT) this.#used = true;
    const body = req.subarray(IN_HEADER, h.len);
    const now = this.#immediate.get(h.opcode);
    if (now) {
      now(h, body);
      return;
    }
    const handler = HANDLERS.get(h.opcode);
    const ac = new AbortController();
    this.#inflight.set(h.unique, ac);
    const started = this.#opts.debug ? performance.now() : 0;
    const late: Late = { after: null };
    const run = async () => {
      // Not in Styx (xattrs, links, locks...): ENOSYS tells the kernel to stop asking.
      if (!handler) throw new ErrnoError(Errno.ENOSYS);
      return await handler(this.#ops, { nodeid: h.nodeid, body, signal: ac.signal, late });
    };
    run().then(
      (parts) => {
        this.#inflight.delete(h.unique);
        if (this.#opts.debug) {
          const ms = (performance.now() - started).toFixed(1);
          console.error(`fuse: op ${h.opcode} node ${h.nodeid} ok (${ms} ms)`);
        }
        if (parts !== null) this.#reply(h.unique, 0, parts);
        late.after?.();
      },
      (e) => {
        this.#inflight.delete(h.unique);
        const err = e instanceof ErrnoError
          ? e.errno
          : ac.signal.aborted
          ? Errno.EINTR
          : errnoOf(e);
        if (this.#opts.debug) {
          console.error(`fuse: op ${h.opcode} node ${h.nodeid} error ${err}: ${errorString(e)}`);
        }
        this.#reply(h.unique, err);
      },
    );
  }

  #init(unique: bigint, body: Uint8Array): void {
    const i = decodeInitIn(body);
    if (i.major !== KERNEL_MAJOR || i.minor < 12) {
      this.#reply(unique, Errno.EIO);
      return;
    }
    const want = InitFlag.ASYNC_READ | InitFlag.ATOMIC_O_TRUNC | InitFlag.BIG_WRITES |
      InitFlag.AUTO_INVAL_DATA | InitFlag.DO_READDIRPLUS | InitFlag.ASYNC_DIO |
      InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES;
    const pages = Math.max(1, Math.floor(this.#maxIo / 4096));
    this.#reply(unique, 0, [
      initOut({
        minor: Math.min(i.minor, KERNEL_MINOR),
        maxReadahead: i.maxReadahead,
        flags: i.flags & want,
        maxBackground: 64,
        congestionThreshold: 48,
        maxWrite: this.#maxIo,
        maxPages: Math.min(pages, 256),
      }),
    ]);
    this.#resolveInit();
  }
}
