/**
 * An in-memory connection pair, for tests and for wiring a server to a
 * client inside one process.
 *
 * @module
 */

import type { Conn, Peer } from "./conn.ts";

class Queue {
  #chunks: Uint8Array[] = [];
  #waiter: ((c: Uint8Array | null) => void) | null = null;
  #ended = false;

  push(c: Uint8Array): void {
    if (this.#ended) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w(c);
    } else {
      this.#chunks.push(c);
    }
  }

  end(): void {
    this.#ended = true;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w(null);
    }
  }

  next(): Promise<Uint8Array | null> {
    const c = this.#chunks.shift();
    if (c) return Promise.resolve(c);
    if (this.#ended) return Promise.resolve(null);
    return new Promise((resolve) => (this.#waiter = resolve));
  }
}

class PipeEnd implements Conn {
  readonly closed: Promise<void>;
  #resolveClosed!: () => void;
  #isClosed = false;
  other!: PipeEnd;
  readonly inbox = new Queue();

  constructor(readonly peer: Peer, readonly local: string) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
  }

  read(): Promise<Uint8Array | null> {
    return this.inbox.next();
  }

  write(data: Uint8Array): Promise<void> {
    if (this.#isClosed) return Promise.reject(new Error("write to a closed pipe"));
    this.other.inbox.push(data);
    return Promise.resolve();
  }

  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.inbox.end();
    this.#resolveClosed();
    this.other.close();
  }
}

/**
 * Make two connected ends. Bytes written to one are read from the other.
 *
 * @example
 * ```ts
 * import { memPipe } from "./pipe.ts";
 * const [a, b] = memPipe();
 * await a.write(new Uint8Array([1, 2, 3]));
 * const got = await b.read();
 * if (got?.length !== 3) throw new Error("lost bytes");
 * a.close();
 * ```
 */
export function memPipe(
  peers: { a?: Partial<Peer>; b?: Partial<Peer> } = {},
): [Conn, Conn] {
  const a = new PipeEnd({ addr: "pipe!b", authenticated: false, ...peers.b }, "pipe!a");
  const b = new PipeEnd({ addr: "pipe!a", authenticated: false, ...peers.a }, "pipe!b");
  a.other = b;
  b.other = a;
  return [a, b];
}
