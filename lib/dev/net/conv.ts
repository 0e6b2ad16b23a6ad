/**
 * TCP conversations of the /net device, as ip(3) describes them: each one is
 * a numbered directory holding ctl, data, listen, local, remote and status,
 * backed by a host socket (Deno.connect / Deno.listen).
 *
 * A conversation lives while any of its ctl, data or listen files is open
 * (the clone file and an accepted listen file count as its ctl); when the
 * last one closes, its socket is closed and its directory disappears.
 *
 * @module
 */

import { Ename, StyxError } from "../../styx/types.ts";
import { withSignal } from "../../fs/tree.ts";

/** State names as status shows them. */
export type ConvState = "Closed" | "Connecting" | "Established" | "Announced" | "Hungup";

interface ReadWaiter {
  count: number;
  resolve: (b: Uint8Array) => void;
  reject: (e: unknown) => void;
}

interface AcceptWaiter {
  resolve: (c: Deno.TcpConn) => void;
  reject: (e: unknown) => void;
}

const READ_MIN = 64 * 1024;
const READ_MAX = 1024 * 1024;
/**
 * Bytes read from the socket ahead of any reader. Once a data file has been
 * read, the conversation keeps reading until this much waits, so a read
 * that arrives while an Rread is on the wire finds everything that came in
 * meanwhile rather than one socket read's worth; past it, TCP's own window
 * holds the sender back.
 */
const READ_AHEAD = 1024 * 1024;
/** A first queued chunk this large is answered alone rather than joined with the next. */
const JOIN_MAX = 32 * 1024;
/** A socket read filling less than 1/SMALL_READ of its buffer is copied out of it. */
const SMALL_READ = 4;

/** Turn a host socket error into Plan 9 wording. */
export function netError(e: unknown): StyxError {
  if (e instanceof StyxError) return e;
  if (e instanceof Deno.errors.ConnectionRefused) return new StyxError("connection refused");
  if (e instanceof Deno.errors.AddrInUse) return new StyxError("address in use");
  if (e instanceof Deno.errors.TimedOut) return new StyxError("connection timed out");
  if (e instanceof Deno.errors.ConnectionReset) return new StyxError("connection reset");
  if (e instanceof Deno.errors.AddrNotAvailable) return new StyxError("address not available");
  if (e instanceof Deno.errors.BrokenPipe) return new StyxError(Ename.hungup);
  if (e instanceof Deno.errors.NotConnected) return new StyxError("not connected");
  if (e instanceof Deno.errors.PermissionDenied) return new StyxError(Ename.perm);
  const msg = e instanceof Error ? e.message : String(e);
  if (/unreachable/i.test(msg)) return new StyxError("network unreachable");
  if (/no route/i.test(msg)) return new StyxError("no route to host");
  return new StyxError(msg.replace(/ \(os error \d+\)$/, ""));
}

/** Split "addr!port" (or just "port") into host and port; '*' means any address. */
export function parseHostPort(s: string, what: string): { host: string; port: number } {
  const bang = s.lastIndexOf("!");
  const host = bang < 0 ? "*" : s.slice(0, bang);
  const portText = bang < 0 ? s : s.slice(bang + 1);
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw new StyxError(`bad ctl message '${what}': bad port '${portText}' in '${s}'`);
  }
  if (host === "" || /[\s!]/.test(host)) {
    throw new StyxError(`bad ctl message '${what}': bad address '${s}'`);
  }
  return { host: host.replace(/^\[(.*)\]$/, "$1"), port: Number(portText) };
}

function addrText(a: Deno.Addr | undefined): string {
  if (a && (a.transport === "tcp" || a.transport === "udp")) return `${a.hostname}!${a.port}`;
  return "::!0";
}

/** One TCP conversation: /net/tcp/N. */
export class TcpConv {
  /** The conversation's state as status shows it. */
  state: ConvState = "Closed";
  /** Open ctl, data and listen files. */
  refs = 0;
  /** "addr!port" of this end. */
  local = "::!0";
  /** "addr!port" of the other end. */
  remote = "::!0";
  #sock: Deno.TcpConn | null = null;
  #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr> | null = null;
  /** Received and not yet read, oldest first; none is empty. */
  #chunks: Uint8Array[] = [];
  /** Total length of #chunks. */
  #queued = 0;
  /** The socket read buffer, reused while reads stay small. */
  #scratch: Uint8Array | null = null;
  /** The count of the latest read, the size of socket reads made ahead. */
  #lastCount = READ_MIN;
  /** Where socket reads get their buffers: the last reader's, if it offered one. */
  #allocAhead: ((n: number) => Uint8Array) | null = null;
  #eof = false;
  #readErr: StyxError | null = null;
  #reading = false;
  #readers: ReadWaiter[] = [];
  #wchain: Promise<unknown> = Promise.resolve();
  #backlog: Deno.TcpConn[] = [];
  #accepters: AcceptWaiter[] = [];
  #gone = false;

  /** A closed conversation; `onGone` is called once when it is torn down. */
  constructor(
    /** The conversation number N. */
    readonly id: number,
    /** Who may use it. */
    readonly owner: string,
    /** Different for each conversation ever made. */
    readonly gen: number,
    private onGone: (c: TcpConv) => void,
  ) {}

  /** True once torn down. */
  get gone(): boolean {
    return this.#gone;
  }

  /** Bytes received and not yet read. */
  get queued(): number {
    return this.#queued;
  }

  /** The status line. */
  status(): string {
    return `${this.state} qin ${this.#queued}\n`;
  }

  /** Take a reference (an open ctl, data or listen file). */
  ref(): void {
    this.refs++;
  }

  /** Drop a reference; the last one tears the conversation down. */
  unref(): void {
    if (--this.refs <= 0) this.teardown();
  }

  /** Use an accepted socket: the conversation becomes Established. */
  adopt(sock: Deno.TcpConn): void {
    this.#sock = sock;
    this.state = "Established";
    this.local = addrText(sock.localAddr);
    this.remote = addrText(sock.remoteAddr);
    try {
      sock.setNoDelay(true);
    } catch { /* not fatal */ }
  }

  /** ctl "connect addr!port": dial; rejects (leaving the conversation Closed) on failure. */
  async connect(target: string, signal?: AbortSignal): Promise<void> {
    if (this.state !== "Closed") {
      throw new StyxError(`bad ctl message 'connect': conversation is ${this.state}`);
    }
    const { host, port } = parseHostPort(target, "connect");
    if (host === "*") throw new StyxError(`bad ctl message 'connect': no address in '${target}'`);
    if (port === 0) throw new StyxError(`bad ctl message 'connect': port 0 in '${target}'`);
    this.state = "Connecting";
    const p = Deno.connect({ hostname: host, port, transport: "tcp" });
    let sock: Deno.TcpConn;
    try {
      sock = await withSignal(p, signal);
    } catch (e) {
      p.then((s) => s.close(), () => {});
      if (this.state === "Connecting") this.state = "Closed";
      throw netError(e);
    }
    if (this.#gone || this.state !== "Connecting") {
      sock.close();
      throw new StyxError(Ename.hungup);
    }
    this.adopt(sock);
  }

  /** ctl "announce [addr!]port": listen; '*' is every address, port 0 picks one. */
  announce(target: string): void {
    if (this.state !== "Closed") {
      throw new StyxError(`bad ctl message 'announce': conversation is ${this.state}`);
    }
    const { host, port } = parseHostPort(target, "announce");
    const hostname = host === "*" ? "0.0.0.0" : host;
    let l: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
    try {
      l = Deno.listen({ hostname, port, transport: "tcp" });
    } catch (e) {
      throw netError(e);
    }
    this.#listener = l;
    this.state = "Announced";
    this.local = `${l.addr.hostname}!${l.addr.port}`;
    this.#acceptLoop(l);
  }

  async #acceptLoop(l: Deno.Listener<Deno.TcpConn, Deno.NetAddr>): Promise<void> {
    for (;;) {
      let c: Deno.TcpConn;
      try {
        c = await l.accept();
      } catch (e) {
        const err = this.#gone ? new StyxError(Ename.hungup) : netError(e);
        for (const w of this.#accepters.splice(0)) w.reject(err);
        return;
      }
      const w = this.#accepters.shift();
      if (w) w.resolve(c);
      else this.#backlog.push(c);
    }
  }

  /** Wait for the next incoming call (opening listen). */
  accept(signal?: AbortSignal): Promise<Deno.TcpConn> {
    if (this.state !== "Announced" || !this.#listener) {
      return Promise.reject(new StyxError(`not announced: conversation is ${this.state}`));
    }
    const c = this.#backlog.shift();
    if (c) return Promise.resolve(c);
    if (signal?.aborted) return Promise.reject(new StyxError(Ename.interrupted));
    return new Promise((resolve, reject) => {
      const w: AcceptWaiter = {
        resolve: (c) => {
          signal?.removeEventListener("abort", onAbort);
          if (signal?.aborted) {
            // Flushed as it arrived: keep the call for the next listener.
            this.#backlog.unshift(c);
            reject(new StyxError(Ename.interrupted));
          } else resolve(c);
        },
        reject: (e) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      const onAbort = () => {
        const i = this.#accepters.indexOf(w);
        if (i >= 0) this.#accepters.splice(i, 1);
        reject(new StyxError(Ename.interrupted));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#accepters.push(w);
    });
  }

  /** ctl "hangup": close the socket or listener; data I/O fails afterwards. */
  hangup(): void {
    this.#closeSockets();
    this.state = "Hungup";
    const err = new StyxError(Ename.hungup);
    this.#readErr = err;
    this.#chunks = [];
    this.#queued = 0;
    for (const r of this.#readers.splice(0)) r.reject(err);
    for (const w of this.#accepters.splice(0)) w.reject(err);
  }

  /** ctl "keepalive [ms]". */
  keepalive(on: boolean): void {
    if (!this.#sock) throw new StyxError("bad ctl message 'keepalive': not connected");
    try {
      this.#sock.setKeepAlive(on);
    } catch (e) {
      throw netError(e);
    }
  }

  /**
   * Read what is available, up to `count` bytes; empty at end of stream.
   * `allocAhead`, if given, supplies the socket's read buffers from now on
   * (see ReadOptions.allocAhead).
   */
  read(
    count: number,
    signal?: AbortSignal,
    allocAhead?: (n: number) => Uint8Array,
  ): Promise<Uint8Array> {
    if (allocAhead) this.#allocAhead = allocAhead;
    if (this.state === "Hungup" || this.#gone) return Promise.reject(new StyxError(Ename.hungup));
    if (!this.#sock) return Promise.reject(new StyxError("not connected"));
    if (signal?.aborted) return Promise.reject(new StyxError(Ename.interrupted));
    return new Promise((resolve, reject) => {
      const w: ReadWaiter = {
        count,
        resolve: (b) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(b);
        },
        reject: (e) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      const onAbort = () => {
        const i = this.#readers.indexOf(w);
        if (i >= 0) this.#readers.splice(i, 1);
        reject(new StyxError(Ename.interrupted));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#readers.push(w);
      this.#lastCount = count;
      this.#serve();
    });
  }

  /**
   * Take up to `count` queued bytes: the first chunk itself when it fits
   * in `count` or is large anyway (copying it would cost more than a
   * shorter reply), else small chunks joined by one copy.
   *
   * A whole chunk read by the socket is handed out as it is: it lies in a
   * buffer from the reader's allocAhead, so the Styx server sends it as one Rread
   * frame without a copy and then reuses the buffer. Only a whole chunk
   * may go that way; a part of one, whose rest still waits in the queue,
   * is copied out so that the buffer is never reused under the rest.
   */
  #take(count: number): Uint8Array {
    const head = this.#chunks[0]!;
    if (head.length >= count || head.length >= JOIN_MAX || this.#chunks.length === 1) {
      if (head.length <= count) {
        this.#chunks.shift();
        this.#queued -= head.length;
        return head;
      }
      const out = head.slice(0, count);
      this.#chunks[0] = head.subarray(count);
      this.#queued -= count;
      return out;
    }
    const out = new Uint8Array(Math.min(count, this.#queued));
    let off = 0;
    while (off < out.length) {
      const c = this.#chunks[0]!;
      const n = Math.min(c.length, out.length - off);
      out.set(n === c.length ? c : c.subarray(0, n), off);
      off += n;
      if (n === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(n);
    }
    this.#queued -= out.length;
    return out;
  }

  /**
   * Hand queued bytes to waiting readers in order, each getting as much as
   * is queued up to its count; keep a socket read going while readers wait
   * or less than READ_AHEAD is queued.
   */
  #serve(): void {
    while (this.#readers.length > 0) {
      if (this.#queued > 0) {
        const w = this.#readers.shift()!;
        w.resolve(this.#take(w.count));
        continue;
      }
      if (this.#readErr) {
        for (const w of this.#readers.splice(0)) w.reject(this.#readErr);
        return;
      }
      if (this.#eof) {
        for (const w of this.#readers.splice(0)) w.resolve(new Uint8Array(0));
        return;
      }
      break;
    }
    if (this.#reading || !this.#sock || this.#eof || this.#readErr) return;
    if (this.#readers.length === 0 && this.#queued >= READ_AHEAD) return;
    this.#reading = true;
    const sock = this.#sock;
    const want = this.#readers[0]?.count ?? this.#lastCount;
    const size = Math.min(READ_MAX, Math.max(READ_MIN, want));
    if (!this.#scratch || this.#scratch.length !== size) {
      this.#scratch = this.#allocAhead?.(size) ?? new Uint8Array(size);
    }
    const buf = this.#scratch;
    sock.read(buf).then((n) => {
      if (n === null) this.#eof = true;
      else if (n > 0) {
        // A small read is copied out and the buffer kept for the next one;
        // a large one keeps the buffer (it may go out as an Rread in place),
        // and the next read gets another.
        if (n < buf.length / SMALL_READ) this.#chunks.push(buf.slice(0, n));
        else {
          this.#chunks.push(buf.subarray(0, n));
          this.#scratch = null;
        }
        this.#queued += n;
      }
    }, (e) => {
      if (this.state === "Hungup" || this.#gone) this.#readErr = new StyxError(Ename.hungup);
      else if (e instanceof Deno.errors.ConnectionReset) this.#eof = true;
      else this.#readErr = netError(e);
    }).finally(() => {
      this.#reading = false;
      this.#serve();
    });
  }

  /** Write all of `data` in order with other writes; resolves once the socket took it. */
  write(data: Uint8Array): Promise<number> {
    if (this.state === "Hungup" || this.#gone) return Promise.reject(new StyxError(Ename.hungup));
    const sock = this.#sock;
    if (!sock) return Promise.reject(new StyxError("not connected"));
    const copy = data;
    const p = this.#wchain.then(async () => {
      if (this.state === "Hungup" || this.#gone) throw new StyxError(Ename.hungup);
      let off = 0;
      try {
        while (off < copy.length) off += await sock.write(copy.subarray(off));
      } catch (e) {
        throw (this.state as ConvState) === "Hungup" || this.#gone
          ? new StyxError(Ename.hungup)
          : netError(e);
      }
      return copy.length;
    });
    this.#wchain = p.catch(() => {});
    return p;
  }

  #closeSockets(): void {
    try {
      this.#sock?.close();
    } catch { /* already closed */ }
    try {
      this.#listener?.close();
    } catch { /* already closed */ }
    for (const c of this.#backlog.splice(0)) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    this.#listener = null;
  }

  /** Close everything and leave the table. */
  teardown(): void {
    if (this.#gone) return;
    this.hangup();
    this.#gone = true;
    this.onGone(this);
  }
}
