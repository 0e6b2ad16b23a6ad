/**
 * The one connection interface every transport (TCP, TLS, a tunnel through a
 * /net data file, an in-memory pipe) implements. Styx code sees only this.
 *
 * @module
 */

/** What is known about the other end of a connection. */
export interface Peer {
  /** Address as a dial string, e.g. "tcp!127.0.0.1!40312"; "pipe" for memory pipes. */
  addr: string;
  /** Identity verified by the transport (certificate CN), if any. */
  identity?: string;
  /** "user" or "node", from the verified certificate. */
  kind?: "user" | "node";
  /** Groups carried by the verified certificate. */
  groups?: string[];
  /** True only when the transport verified `identity` itself. */
  authenticated: boolean;
}

/** A bidirectional byte stream. */
export interface Conn {
  /** The next chunk of bytes, or null at end of stream. Only one read at a time. */
  read(): Promise<Uint8Array | null>;
  /**
   * Write all of `data`. Resolves once the transport has taken it (so
   * callers get backpressure). The caller must not reuse `data` afterwards.
   */
  write(data: Uint8Array): Promise<void>;
  /** Close both directions; pending reads resolve null. Safe to call twice. */
  close(): void;
  /** Resolves once the connection is closed, from either side. */
  readonly closed: Promise<void>;
  /**
   * True when a resolved write() has finished with `data` (the transport
   * copied or sent it), so the caller may reuse the buffer. Absent or false:
   * the transport may still read it later.
   */
  readonly releasesWrites?: boolean;
  /** The other end. */
  readonly peer: Peer;
  /** This end's address as a dial string. */
  readonly local: string;
}

/** Accepts connections; closing it stops accepting. */
export interface Listener extends AsyncIterable<Conn> {
  /** The address actually bound, as a dial string ("tcp!0.0.0.0!8000"). */
  readonly addr: string;
  close(): void;
}
