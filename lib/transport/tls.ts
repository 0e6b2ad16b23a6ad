/**
 * Mutually authenticated TLS 1.3 links, over a real TCP port or wrapped
 * around any Conn (a tunnel through a remote /net data file).
 *
 * Whatever the transport, Ferry verifies the peer itself before a single
 * Styx byte is read: node:tls does not enforce client verification over
 * streams that are not sockets. After the TLS handshake each end sends one
 * proof line and one verdict line (see {@link LINK_PROTOCOL}):
 *
 * 1. `ferry-link/1 proof SIG` — an Ed25519 signature, by the end's
 *    certificate key, over "ferry-link/1 ROLE" ‖ client Finished ‖ server
 *    Finished. This binds the certificate to this very TLS session, so a
 *    replayed certificate without its key is refused whatever the TLS
 *    library checked.
 * 2. `ferry-link/1 ok` or `ferry-link/1 refused REASON`, after checking the
 *    peer's chain to the CA, validity dates, revocation, key usage, kind,
 *    name (client side) and the allow list (server side).
 *
 * Only when both ends said ok does the caller get a Conn, whose peer carries
 * the verified identity, kind and groups. The exchange itself, shared with
 * the `ferry-link/2` client of tls_native.ts, is in link_exchange.ts; this
 * module gives it the lines of a node:tls socket.
 *
 * @module
 */

import tls from "node:tls";
import net from "node:net";
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import type { Conn, Listener, Peer } from "./conn.ts";
import { TcpConn } from "./tcp.ts";
import type { CertIdentity } from "../auth/certs.ts";
import {
  type Credentials,
  type CredentialWatch,
  followCredentials,
  freshCreds,
  guardSessions,
  type IdentifiedConn,
  isCredentialWatch,
  type LinkOptions,
  mapAlg,
} from "../auth/link.ts";
import { nativeTlsListen } from "./tls_native.ts";
import {
  explainLinkFailure,
  type ExplainRules,
  LINK_PROTOCOL,
  LinkError,
  linkExchange,
  LinkLines,
} from "./link_exchange.ts";

export type { Credentials, LinkOptions } from "../auth/link.ts";
export { LINK_PROTOCOL, LinkError } from "./link_exchange.ts";
export { tlsDial } from "./tls_dial.ts";

const HIGH_WATER = 1 << 20;

function isIpAddr(h: string): boolean {
  return net.isIP(h.replace(/^\[|\]$/g, "")) !== 0;
}

/** node:tls's handshake errors in Ferry's words. */
const NODE_TLS_ERRORS: ExplainRules = [
  [
    /CERTIFICATE_REQUIRED|CertificateRequired|no certificates/i,
    () => "the server requires a client certificate and none was accepted",
  ],
  [
    /UnknownCA|unknown ca|BadCertificate|bad certificate|certificate unknown/i,
    (m) => `the other end refused our certificate (${m})`,
  ],
  [
    /disconnected before secure|ECONNRESET|socket hang up|EPIPE/i,
    (m) => `the connection closed during the TLS handshake (${m})`,
  ],
  [
    /wrong version|unexpected message|corrupt message|InvalidContentType|record|http request|not a tls|unsupported protocol/i,
    (m) => `the other end does not speak TLS (${m})`,
  ],
];

function explainTlsError(e: Error): string {
  return explainLinkFailure(e, NODE_TLS_ERRORS);
}

class TlsConn implements IdentifiedConn {
  readonly closed: Promise<void>;
  #resolveClosed!: () => void;
  #isClosed = false;
  #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #waiter: ((c: Uint8Array | null) => void) | null = null;

  constructor(
    readonly sock: tls.TLSSocket,
    readonly peer: Peer,
    readonly local: string,
    readonly peerCert: CertIdentity,
    leftover: Uint8Array | null,
    ended = false,
    readonly raw?: Conn,
  ) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    if (leftover && leftover.length > 0) this.#push(leftover);
    if (ended) queueMicrotask(() => this.close());
    sock.on("data", (d: Buffer) => this.#push(new Uint8Array(d.buffer, d.byteOffset, d.length)));
    // A Conn has no half-close: when the peer ends, the link is over (bytes
    // already received can still be read).
    sock.on("end", () => this.close());
    sock.on("close", () => this.close());
    sock.on("error", () => this.close());
    sock.resume();
  }

  #push(c: Uint8Array): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w(c);
      return;
    }
    this.#chunks.push(c);
    this.#queued += c.length;
    if (this.#queued >= HIGH_WATER) this.sock.pause();
  }

  #end(): void {
    this.#ended = true;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w(null);
    }
  }

  read(): Promise<Uint8Array | null> {
    const c = this.#chunks.shift();
    if (c) {
      this.#queued -= c.length;
      if (this.#queued < HIGH_WATER && this.sock.isPaused()) this.sock.resume();
      return Promise.resolve(c);
    }
    if (this.#ended || this.#isClosed) return Promise.resolve(null);
    if (this.sock.isPaused()) this.sock.resume();
    return new Promise((resolve) => (this.#waiter = resolve));
  }

  /** A write resolves only once node:tls has encrypted and sent the bytes. */
  readonly releasesWrites = true;

  write(data: Uint8Array): Promise<void> {
    if (this.#isClosed) return Promise.reject(new LinkError("write to a closed TLS link"));
    // node:tls keeps a reference to `data` until its write completes (even
    // when write() returns true), so resolve on the write's callback: the
    // caller may then reuse the buffer. Waiting for it also gives
    // backpressure, as 'drain' would.
    return new Promise((resolve, reject) => {
      const onClose = () => reject(new LinkError("TLS link closed while writing"));
      this.sock.once("close", onClose);
      this.sock.write(data, (err) => {
        this.sock.off("close", onClose);
        if (err) reject(new LinkError(`TLS write failed: ${err.message}`));
        else resolve();
      });
    });
  }

  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#end();
    finish(this.sock, this.raw);
    this.#resolveClosed();
  }
}

function bindingOf(sock: tls.TLSSocket, isServer: boolean): Uint8Array {
  const mine = sock.getFinished();
  const theirs = sock.getPeerFinished();
  if (!mine || !theirs || mine.length === 0 || theirs.length === 0) {
    throw new LinkError("TLS channel binding is unavailable on this connection");
  }
  const [c, s] = isServer ? [theirs, mine] : [mine, theirs];
  const out = new Uint8Array(c.length + s.length);
  out.set(c, 0);
  out.set(s, c.length);
  return out;
}

function peerDer(sock: tls.TLSSocket): Uint8Array | undefined {
  const pc = sock.getPeerCertificate(true) as { raw?: Buffer } | null;
  if (!pc || !pc.raw || pc.raw.length === 0) return undefined;
  return new Uint8Array(pc.raw);
}

/**
 * Run Ferry's link exchange (link_exchange.ts) on a secure socket. It
 * listens from the start, so nothing is lost between lines or when the
 * peer hangs up. Resolves with the peer identity and bytes already read
 * past the verdict; rejects (after telling the peer) when either end
 * refuses.
 */
async function confirm(
  sock: tls.TLSSocket,
  isServer: boolean,
  opts: LinkOptions & { servername?: string },
  creds: Credentials,
  peerName: string | undefined,
): Promise<{ id: CertIdentity; rest: Uint8Array; ended: boolean }> {
  // Take the channel binding first, while the session is certainly intact.
  let binding: Uint8Array | undefined;
  try {
    binding = bindingOf(sock, isServer);
  } catch { /* the exchange fails on it, after any refusal the peer sent */ }
  const ch = new LinkLines({
    write: (b) => new Promise((resolve) => sock.write(b, () => resolve())),
    explain: explainTlsError,
  });
  const onData = (d: Buffer) => ch.push(new Uint8Array(d.buffer, d.byteOffset, d.length));
  const onEnd = () => ch.end();
  const onError = (e: Error) => ch.end(e);
  sock.on("data", onData);
  sock.on("end", onEnd);
  sock.on("close", onEnd);
  sock.on("error", onError);
  sock.resume();
  const detach = () => {
    sock.off("data", onData);
    sock.off("end", onEnd);
    sock.off("close", onEnd);
    sock.off("error", onError);
  };
  try {
    const id = await linkExchange(
      ch,
      {
        role: isServer ? "server" : "client",
        dialect: LINK_PROTOCOL,
        peerDer: peerDer(sock),
        binding,
      },
      creds,
      opts,
      peerName,
    );
    detach();
    return { id, ...ch.rest() };
  } catch (e) {
    detach();
    throw e;
  }
}

function contextOptions(creds: Credentials, opts: LinkOptions): tls.SecureContextOptions {
  const suites = mapAlg(opts.alg);
  const o: tls.SecureContextOptions = {
    ca: creds.ca,
    cert: creds.cert,
    key: creds.key,
    minVersion: "TLSv1.3",
  };
  if (suites.length) o.ciphers = suites.join(":");
  return o;
}

/**
 * End a socket gracefully (so a refusal line or last reply is delivered),
 * destroying it soon after; for a wrapped Conn, close that too.
 */
function finish(sock: tls.TLSSocket, raw?: Conn): void {
  const done = () => {
    clearTimeout(t);
    sock.destroy();
    raw?.close();
  };
  const t = setTimeout(done, 2000);
  Deno.unrefTimer(t as unknown as number);
  sock.once("finish", () => setTimeout(done, 0));
  sock.once("close", done);
  try {
    sock.end();
  } catch {
    done();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new LinkError(`TLS handshake did not finish within ${ms} ms`));
    }, ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function makeConn(
  sock: tls.TLSSocket,
  id: CertIdentity,
  rest: Uint8Array,
  ended: boolean,
  addr: string,
  local: string,
  raw?: Conn,
): TlsConn {
  return new TlsConn(
    sock,
    { addr, identity: id.name, kind: id.kind, groups: id.groups, authenticated: true },
    local,
    id,
    rest,
    ended,
    raw,
  );
}

/** Wait for a client TLS socket to be secure, then confirm the link. */
async function clientSide(
  sock: tls.TLSSocket,
  opts: LinkOptions & { servername?: string },
  creds: Credentials,
  peerName: string,
  addr: string,
  local: () => string,
  raw?: Conn,
): Promise<Conn> {
  const run = async () => {
    await handshaken(sock, "secureConnect");
    sock.on("error", () => {});
    const { id, rest, ended } = await confirm(sock, false, opts, creds, peerName);
    return makeConn(sock, id, rest, ended, addr, local(), raw);
  };
  try {
    return await withTimeout(run(), opts.handshakeTimeoutMs ?? 10_000, () => sock.destroy());
  } catch (e) {
    finish(sock, raw);
    throw e;
  }
}

function clientOptions(
  creds: Credentials,
  opts: LinkOptions,
  servername: string | undefined,
): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = {
    ...contextOptions(creds, opts),
    // Ferry verifies the server itself in confirm(): chain, dates against
    // opts.now, revocation, kind and name, plus a proof bound to the session.
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
  };
  if (servername && !isIpAddr(servername)) o.servername = servername;
  return o;
}

/** Size of the buffers connDuplex reads a TcpConn into. */
const DUPLEX_READ = 64 * 1024;
/** Reads shorter than this are copied out, so the read buffer is kept for the next one. */
const DUPLEX_SMALL = 8 * 1024;

/**
 * A node Duplex stream over a Conn, so node:tls can run on top of it.
 *
 * Bulk reads are on the TLS client's hot path (every received byte passes
 * through here once, encrypted): a TCP connection reads into a fresh
 * buffer per large read, handed to node:tls as is, instead of a scratch
 * buffer copied out per read. Other Conns (a tunnelled conversation) hand
 * out chunks of their own, passed on without a copy. Writes pass node's
 * buffers on as views rather than copies.
 */
export function connDuplex(raw: Conn): Duplex {
  let reading = false;
  let spare: Uint8Array | null = null;
  const next = async (): Promise<Uint8Array | null> => {
    if (!(raw instanceof TcpConn)) return await raw.read();
    const buf = spare ?? new Uint8Array(DUPLEX_READ);
    spare = null;
    const n = await raw.readInto(buf);
    if (n === null) return null;
    if (n < DUPLEX_SMALL) {
      spare = buf;
      return buf.slice(0, n);
    }
    return buf.subarray(0, n);
  };
  const d = new Duplex({
    read() {
      if (reading) return;
      reading = true;
      const pump = async () => {
        try {
          while (true) {
            const c = await next();
            if (c === null) {
              d.push(null);
              return;
            }
            if (!d.push(Buffer.from(c.buffer, c.byteOffset, c.length))) return;
          }
        } catch (e) {
          d.destroy(e as Error);
        } finally {
          reading = false;
        }
      };
      pump();
    },
    write(chunk: Buffer, _enc, cb) {
      // A view, not a copy: the Conn has written it all before cb runs.
      raw.write(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length)).then(
        () => cb(),
        (e) => cb(e as Error),
      );
    },
    final(cb) {
      // A Conn has no half-close: once TLS has said goodbye, hang up.
      raw.close();
      cb();
    },
    destroy(err, cb) {
      raw.close();
      cb(err);
    },
  });
  raw.closed.then(() => {
    if (!d.destroyed) d.push(null);
  });
  return d;
}

/**
 * Run the client side of a TLS link over an existing Conn (e.g. a tunnel
 * through a remote /net). The server must be the node `opts.peer` (or
 * `opts.servername`).
 */
export async function tlsWrapClient(
  raw: Conn,
  opts: LinkOptions & { servername?: string },
): Promise<Conn> {
  const peerName = opts.peer ?? opts.servername;
  if (peerName === undefined) {
    throw new LinkError("a tunnelled TLS link needs the server's node name (peer or servername)");
  }
  const src = await followCredentials(opts.creds);
  try {
    const creds = src.current();
    const sock = tls.connect({ socket: connDuplex(raw), ...clientOptions(creds, opts, peerName) });
    return await clientSide(sock, opts, creds, peerName, raw.peer.addr, () => raw.local, raw);
  } finally {
    src.close();
  }
}

function refusedLog(opts: LinkOptions, addr: string, reason: string): void {
  if (opts.onRefused) opts.onRefused(addr, reason);
  else console.error(`tls: refused ${addr}: ${reason}`);
}

function revokedLog(opts: LinkOptions, c: IdentifiedConn): void {
  refusedLog(opts, c.peer.addr, `certificate of '${c.peerCert.name}' was revoked: session closed`);
}

/**
 * Run the server side of a TLS link over an existing Conn. Rejects (and
 * tells the client why) unless the client proves a valid certificate.
 * The link lives under the credentials' watch (see
 * {@link followCredentials}): it ends as soon as the peer's certificate is
 * found revoked, checked every `opts.revocationCheckMs` and whenever a new
 * CRL is loaded.
 */
export async function tlsWrapServer(raw: Conn, opts: LinkOptions): Promise<Conn> {
  let src;
  try {
    src = await followCredentials(opts.creds);
  } catch (e) {
    raw.close();
    throw e;
  }
  try {
    const c = await wrapServer(raw, opts, await freshCreds(src, src.current()));
    const guard = guardSessions(new Set([c]), src, opts, (x) => revokedLog(opts, x));
    const held = src;
    c.closed.then(() => {
      guard.stop();
      held.close();
    });
    // A CRL loaded while the link was being set up is not missed.
    await guard.check();
    return c;
  } catch (e) {
    src.close();
    throw e;
  }
}

async function wrapServer(raw: Conn, opts: LinkOptions, creds: Credentials): Promise<TlsConn> {
  const sock = new tls.TLSSocket(connDuplex(raw), {
    isServer: true,
    requestCert: true,
    // As in tlsListen: Ferry's own check decides, and tells the client why.
    rejectUnauthorized: false,
    secureContext: tls.createSecureContext(contextOptions(creds, opts)),
  } as tls.TLSSocketOptions);
  const run = async () => {
    await handshaken(sock, "secure");
    sock.on("error", () => {});
    const { id, rest, ended } = await confirm(sock, true, opts, creds, undefined);
    return makeConn(sock, id, rest, ended, raw.peer.addr, raw.local, raw);
  };
  try {
    return await withTimeout(run(), opts.handshakeTimeoutMs ?? 10_000, () => sock.destroy());
  } catch (e) {
    finish(sock, raw);
    if (e instanceof Error) refusedLog(opts, raw.peer.addr, e.message);
    throw e;
  }
}

/**
 * Listen on `host:port` for mutually authenticated TLS links. The iterator
 * yields verified Conns only; refused peers are reported through
 * `opts.onRefused` (default: a line on stderr) and never reach the caller.
 * The listener holds the shared watch of its credentials' directory (see
 * {@link followCredentials}), whether given the watch or a snapshot from
 * `loadCredentials`: new handshakes use renewed credentials without
 * dropping sessions, and sessions whose certificate is revoked are closed
 * as soon as the new CRL is loaded, and at worst within
 * `opts.revocationCheckMs`.
 *
 * @example
 * ```ts ignore
 * const watch = await watchCredentials("certs", "fileserver");
 * const l = await tlsListen("0.0.0.0", 6666, { creds: watch });
 * for await (const conn of l) serve(conn, tree);
 * ```
 */
export async function tlsListen(
  host: string,
  port: number,
  opts: LinkOptions & { reusePort?: boolean },
): Promise<Listener> {
  const engine = listenerEngine(opts);
  // Credentials that fail to reload are reported to whoever asked for the watch with onError.
  const src = await followCredentials(opts.creds);
  try {
    if (engine === "deno") {
      return await nativeTlsListen(host, port, opts, src, {
        refused: (addr, reason) => refusedLog(opts, addr, reason),
        revoked: (c) => revokedLog(opts, c),
      });
    }
    return await listenWith(host, port, opts, src);
  } catch (e) {
    src.close();
    throw e;
  }
}

/** Which TLS library serves a listener (see {@link LinkOptions.listener}). */
function listenerEngine(opts: LinkOptions): "deno" | "node" {
  let env: string | undefined;
  try {
    env = Deno.env.get("FERRY_TLS_LISTENER");
  } catch { /* no permission to read it: the default */ }
  if (env !== undefined && env !== "" && env !== "deno" && env !== "node") {
    throw new LinkError(
      `Unknown TLS listener '${env}' in FERRY_TLS_LISTENER: use 'deno' or 'node'`,
    );
  }
  if (opts.alg) {
    // Only node:tls lets a listener choose its cipher suites.
    if (opts.listener === "deno") {
      throw new LinkError(
        "Deno's TLS listener cannot choose cipher suites: drop the algorithm (-a) or use the 'node' listener",
      );
    }
    return "node";
  }
  // A function may return new credentials at any moment, and is asked at
  // every handshake: only node:tls can change certificates that often.
  if (typeof opts.creds === "function" && !isCredentialWatch(opts.creds)) return "node";
  // node:tls by default: Deno's TLS listener also completes TLS 1.2
  // handshakes (it has no minimum version; the link proof is still
  // required), it binds its port again to take renewed credentials (a dial
  // in that moment is refused), and it cannot serve ferry-link/1 peers.
  // What the default costs: node:tls in Deno builds a rustls server
  // configuration per accepted socket, with a TLS 1.2 session cache sized
  // for 256 entries (about 30 KiB), kept for the life of the connection. In
  // a 1 GiB Styx read the two cost the server about the same CPU per byte
  // (runs go either way by 10-15%).
  return opts.listener ?? (env === "deno" ? "deno" : "node");
}

async function listenWith(
  host: string,
  port: number,
  opts: LinkOptions & { reusePort?: boolean },
  src: CredentialWatch,
): Promise<Listener> {
  let creds = src.current();
  const server = tls.createServer({
    ...contextOptions(creds, opts),
    requestCert: true,
    handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
    // Ferry's own check in confirm() is authoritative on every transport;
    // node's check here would only hang up with no reason for either end.
    rejectUnauthorized: false,
  });
  const refresh = () => {
    try {
      const now = src.current();
      if (now !== creds) {
        server.setSecureContext(contextOptions(now, opts));
        creds = now;
      }
    } catch (e) {
      // Keep serving with the credentials that worked.
      refusedLog(opts, "(credentials)", `cannot use new credentials: ${(e as Error).message}`);
    }
  };
  server.prependListener("connection", (s: net.Socket) => {
    // Link lines and Styx replies are small: Nagle would hold each behind
    // the peer's delayed acknowledgement.
    s.setNoDelay(true);
    refresh();
  });
  const queue: Conn[] = [];
  let waiter: ((c: Conn | null) => void) | null = null;
  let closed = false;
  const live = new Set<IdentifiedConn>();
  const watch = guardSessions(live, src, opts, (c) => revokedLog(opts, c));
  const deliver = (c: Conn | null) => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(c);
    } else if (c) queue.push(c);
  };
  const addrOf = (s: net.Socket): string => {
    const parent = (s as unknown as { _parent?: net.Socket })._parent;
    const a = s.remoteAddress ? s : parent?.remoteAddress ? parent : undefined;
    return a ? `tcp!${a.remoteAddress}!${a.remotePort ?? 0}` : "an unknown address";
  };
  server.on("tlsClientError", (e: Error, s: tls.TLSSocket) => {
    refusedLog(opts, addrOf(s), explainTlsError(e));
    s.destroy();
  });
  server.on("secureConnection", (sock: tls.TLSSocket) => {
    const addr = addrOf(sock);
    const local = `tcp!${sock.localAddress ?? "?"}!${sock.localPort ?? 0}`;
    const presented = creds;
    sock.on("error", () => {});
    let used = presented;
    withTimeout(
      freshCreds(src, presented).then((c) => confirm(sock, true, opts, used = c, undefined)),
      opts.handshakeTimeoutMs ?? 10_000,
      () => sock.destroy(),
    ).then(({ id, rest, ended }) => {
      if (closed) {
        sock.destroy();
        return;
      }
      const c = makeConn(sock, id, rest, ended, addr, local);
      live.add(c);
      c.closed.then(() => live.delete(c));
      // Credentials that changed during the handshake may carry a new CRL.
      if (src.current() !== used) void watch.check();
      deliver(c);
    }, (e: Error) => {
      sock.destroy();
      refusedLog(opts, addr, e.message);
    });
  });
  server.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // reusePort: several listeners (one per worker) share the port.
    server.listen({ port, host, reusePort: opts.reusePort === true }, () => {
      server.off("error", reject);
      resolve();
    });
  }).catch((e) => {
    watch.stop();
    throw e;
  });
  const a = server.address() as net.AddressInfo;
  return {
    addr: `tcp!${a.address}!${a.port}`,
    close() {
      if (closed) return;
      closed = true;
      watch.stop();
      src.close();
      server.close();
      deliver(null);
    },
    async *[Symbol.asyncIterator]() {
      while (true) {
        const c = queue.shift() ??
          (closed ? null : await new Promise<Conn | null>((r) => (waiter = r)));
        if (c === null) return;
        yield c;
      }
    },
  };
}

/** Resolves when the TLS handshake on `sock` is done; rejects with the reason it failed. */
function handshaken(sock: tls.TLSSocket, done: "secure" | "secureConnect"): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onErr = (e: Error) => reject(new LinkError(explainTlsError(e)));
    sock.once("error", onErr);
    sock.once(
      "close",
      () => reject(new LinkError("the connection closed during the TLS handshake")),
    );
    sock.once(done, () => {
      sock.off("error", onErr);
      resolve();
    });
  });
}
