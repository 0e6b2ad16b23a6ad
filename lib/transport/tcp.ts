/**
 * Plain TCP connections (used as-is only under -A; otherwise wrapped in TLS).
 *
 * @module
 */

import type { Conn, Listener, Peer } from "./conn.ts";

// Reads go into the free tail of one large buffer; a fresh buffer is taken
// only when the tail gets small, so a 23-byte Tread does not cost a zeroed
// 256 KiB allocation. Returned chunks are never overwritten.
const BUF_SIZE = 1024 * 1024;
const MIN_TAIL = 128 * 1024;

function addrString(a: Deno.Addr): string {
  if (a.transport === "tcp" || a.transport === "udp") {
    return `${a.transport}!${a.hostname}!${a.port}`;
  }
  return String((a as { path?: string }).path ?? "unknown");
}

/** A Conn over a Deno TCP connection. */
export class TcpConn implements Conn {
  readonly closed: Promise<void>;
  readonly peer: Peer;
  readonly local: string;
  #resolveClosed!: () => void;
  #isClosed = false;
  #buf = new Uint8Array(BUF_SIZE);
  #pos = 0;

  constructor(readonly raw: Deno.TcpConn) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.peer = { addr: addrString(raw.remoteAddr), authenticated: false };
    this.local = addrString(raw.localAddr);
    try {
      raw.setNoDelay(true);
    } catch { /* not fatal */ }
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#isClosed) return null;
    if (this.#buf.length - this.#pos < MIN_TAIL) {
      this.#buf = new Uint8Array(BUF_SIZE);
      this.#pos = 0;
    }
    const buf = this.#buf.subarray(this.#pos);
    let n: number | null;
    try {
      n = await this.raw.read(buf);
    } catch {
      n = null;
    }
    if (n === null) {
      this.close();
      return null;
    }
    this.#pos += n;
    return buf.subarray(0, n);
  }

  async write(data: Uint8Array): Promise<void> {
    let off = 0;
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

/** Listen for TCP connections on `hostname:port` (port 0 picks a free one). */
export function tcpListen(hostname: string, port: number): Listener {
  const l = Deno.listen({ hostname, port, transport: "tcp" });
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
