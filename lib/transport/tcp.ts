/**
 * Plain TCP connections (used as-is only under -A; otherwise wrapped in TLS).
 *
 * @module
 */

import type { Conn, Listener, Peer } from "./conn.ts";

// read() fills a reused scratch buffer and hands out an exact-size copy, so
// a chunk never keeps a larger buffer alive. Frame readers that know how
// many bytes they want use readInto() instead and receive large frames
// straight into their final buffer, without a copy.
const SCRATCH = 64 * 1024;

function addrString(a: Deno.Addr): string {
  if (a.transport === "tcp" || a.transport === "udp") {
    return `${a.transport}!${a.hostname}!${a.port}`;
  }
  return String((a as { path?: string }).path ?? "unknown");
}

/**
 * A Conn over a Deno TCP connection (or another Deno stream over TCP, such
 * as a TLS connection, given with what is known of its peer and any bytes
 * already read from it).
 */
export class TcpConn implements Conn {
  readonly closed: Promise<void>;
  readonly peer: Peer;
  readonly local: string;
  /** A write resolves once the kernel (or the TLS layer) has copied the bytes. */
  readonly releasesWrites = true;
  #resolveClosed!: () => void;
  #isClosed = false;
  #scratch: Uint8Array | null = null;
  #first: Uint8Array | null;

  constructor(
    readonly raw: Deno.TcpConn | Deno.Conn,
    peer?: Omit<Peer, "addr">,
    first?: Uint8Array,
  ) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.peer = { addr: addrString(raw.remoteAddr), authenticated: false, ...peer };
    this.local = addrString(raw.localAddr);
    this.#first = first && first.length > 0 ? first : null;
    if ("setNoDelay" in raw) {
      try {
        raw.setNoDelay(true);
      } catch { /* not fatal */ }
    }
  }

  /** True once {@link close} has run (from either side). */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  async read(): Promise<Uint8Array | null> {
    const buf = this.#scratch ??= new Uint8Array(SCRATCH);
    const n = await this.readInto(buf);
    return n === null ? null : buf.slice(0, n);
  }

  /**
   * Read at most `buf.length` bytes into `buf`; resolves with the number
   * read (at least 1 for a non-empty `buf`), or null at end of stream. Like
   * {@link read}, only one read at a time.
   */
  readInto(buf: Uint8Array): Promise<number | null> {
    if (this.#first !== null || this.#isClosed) return this.#readIntoRest(buf);
    // One promise between the socket and the caller: this is every request's path.
    return this.raw.read(buf).then(this.#afterRead, this.#readFailed);
  }

  readonly #afterRead = (n: number | null): number | null => {
    if (n === null) this.close();
    return n;
  };

  readonly #readFailed = (): null => {
    this.close();
    return null;
  };

  /** {@link readInto} with bytes read ahead of the connection, or once it is closed. */
  #readIntoRest(buf: Uint8Array): Promise<number | null> {
    if (this.#first) {
      const n = Math.min(buf.length, this.#first.length);
      buf.set(this.#first.subarray(0, n), 0);
      this.#first = n === this.#first.length ? null : this.#first.subarray(n);
      return Promise.resolve(n);
    }
    return Promise.resolve(null);
  }

  async write(data: Uint8Array): Promise<void> {
    if (data.length === 0) return;
    let off = await this.raw.write(data);
    while (off < data.length) {
      off += await this.raw.write(data.subarray(off));
    }
  }

  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    try {
      this.raw.close();
    } catch { /* already closed */ }
    this.#resolveClosed();
  }
}

/** Connect to `hostname:port` over TCP. */
export async function tcpDial(hostname: string, port: number): Promise<TcpConn> {
  const raw = await Deno.connect({ hostname, port, transport: "tcp" });
  return new TcpConn(raw);
}

/**
 * Listen for TCP connections on `hostname:port` (port 0 picks a free one).
 * With `opts.reusePort`, other listeners that ask for it too may share the
 * port (SO_REUSEPORT: the kernel spreads connections over them); this needs
 * Deno's `--unstable-net` (Ferry's deno.json asks for it).
 */
export function tcpListen(
  hostname: string,
  port: number,
  opts: { reusePort?: boolean } = {},
): Listener {
  const l = Deno.listen({
    hostname,
    port,
    transport: "tcp",
    ...(opts.reusePort ? { reusePort: true } : {}),
  });
  return {
    addr: addrString(l.addr),
    close() {
      try {
        l.close();
      } catch { /* already closed */ }
    },
    async *[Symbol.asyncIterator]() {
      while (true) {
        let c: Deno.TcpConn;
        try {
          c = await l.accept();
        } catch {
          return;
        }
        yield new TcpConn(c);
      }
    },
  };
}
