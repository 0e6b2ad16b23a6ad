/**
 * The client side of a TLS link over Deno's own TLS (`Deno.startTls`),
 * used for direct TCP dials: it decrypts several times faster than
 * node:tls and buffers nothing the reader has not asked for.
 *
 * Deno's TLS neither exposes the Finished messages that `ferry-link/1`
 * signs nor sets TCP_NODELAY on a connection that presents a client
 * certificate, so this client presents its certificate inside the link
 * instead (`ferry-link/2`):
 *
 * 1. The client checks the certificate the server presented in TLS itself
 *    (chain, dates, revocation, kind, name), as `ferry-link/1` does; the TLS
 *    library has verified that the server holds its key. From here on the
 *    client knows its TLS session ends at that server.
 * 2. The server sends `ferry-link/2 challenge NONCE`, fresh per session.
 * 3. The client answers `ferry-link/2 proof CERT SIG`: its certificate and
 *    an Ed25519 signature over the label, the nonce and the SHA-256 of both
 *    certificates. It signs only nonces that arrive inside a session with
 *    the server it verified, so no one else can obtain a signature over the
 *    nonce of their own session.
 * 4. The server checks the certificate and the signature and answers
 *    `ferry-link/2 ok` or `ferry-link/2 refused REASON`.
 *
 * The server's certificate is read through the runtime's internal
 * accessor; where a Deno release lacks it, the client uses node:tls.
 *
 * {@link nativeTlsListen} is the server side on Deno's TLS: it speaks only
 * `ferry-link/2` (Deno's TLS server can neither ask for a client certificate
 * nor show the Finished messages that `ferry-link/1` signs), encrypts without
 * the copies node:tls makes, and follows its credentials as the node:tls
 * listener does.
 *
 * @module
 */

import type { Conn, Listener, Peer } from "./conn.ts";
import { TcpConn } from "./tcp.ts";
import { after } from "../deadline.ts";
import type { CertIdentity } from "../auth/certs.ts";
import { ed25519Key, readCert } from "../auth/der.ts";
import { PeerRefusedError } from "../auth/verify.ts";
import {
  type Credentials,
  type CredentialWatch,
  freshCreds,
  guardSessions,
  type IdentifiedConn,
  type LinkOptions,
} from "../auth/link.ts";
import {
  explainLinkFailure,
  type ExplainRules,
  LINK_PROTOCOL_2,
  LinkError,
  linkExchange,
  LinkLines,
} from "./link_exchange.ts";

export {
  checkPeerCert,
  LINK_PROTOCOL_2,
  linkLine,
  linkMessage,
  linkNonce,
  linkSign,
  linkSignatureOk,
  MAX_LINK_LINE,
  NONCE_BYTES,
  ownCertDer,
  takeLine,
} from "./link_exchange.ts";

/** Deno's TLS handshake errors in Ferry's words. */
const DENO_TLS_ERRORS: ExplainRules = [
  [
    /invalid peer certificate|certificate/i,
    (m) => `the server's certificate was not accepted (${m})`,
  ],
  [
    /corrupt message|InvalidContentType|InvalidMessage|unexpected message|received fatal alert: (Decode|Protocol)/i,
    (m) => `the other end does not speak TLS (${m})`,
  ],
  [
    /reset|broken pipe|closed|eof|end of file/i,
    (m) =>
      `the connection closed during the TLS handshake (${m}); does the other end listen without TLS (-A)?`,
  ],
];

/**
 * The link exchange's line channel over a Deno TLS connection: reads pulled
 * as the exchange needs them, writes queued in order.
 */
function nativeLines(conn: Deno.TlsConn): LinkLines {
  const scratch = new Uint8Array(16 * 1024);
  let queue: Promise<void> = Promise.resolve();
  const writeAll = async (b: Uint8Array) => {
    let off = 0;
    while (off < b.length) off += await conn.write(b.subarray(off));
  };
  return new LinkLines({
    read: async () => {
      const n = await conn.read(scratch);
      return n === null ? null : scratch.slice(0, n);
    },
    write: (b) => {
      const p = queue.then(() => writeAll(b));
      queue = p.catch(() => {});
      return p;
    },
    explain: explainNativeError,
  });
}

/** Why a native TLS handshake failed, in Ferry's words. */
export function explainNativeError(e: Error): string {
  return explainLinkFailure(e, DENO_TLS_ERRORS);
}

/**
 * True when Deno's TLS refused the server's certificate during the
 * handshake (worth a full diagnosis); not for Ferry's own refusals, which
 * already name what was wrong.
 */
export function isCertificateFailure(e: unknown): boolean {
  return e instanceof Error && /invalid peer certificate|certificate/i.test(e.message) &&
    !(e instanceof LinkError) && !(e instanceof PeerRefusedError);
}

/** A verified link over Deno's TLS. */
class NativeTlsConn extends TcpConn implements IdentifiedConn {
  constructor(
    raw: Deno.TlsConn,
    peer: Omit<Peer, "addr">,
    readonly peerCert: CertIdentity,
    rest: Uint8Array,
  ) {
    super(raw, peer, rest);
  }
}

type PeerCertFn = (detailed: boolean) => { raw?: Uint8Array } | null | undefined;

/** The runtime's accessor for a Deno TLS connection's peer certificate, if it has one. */
function peerCertSymbol(): symbol | undefined {
  const d = Deno as unknown as { internal?: symbol } & Record<symbol, unknown>;
  const internal = d.internal === undefined ? undefined : d[d.internal];
  const sym = (internal as { getPeerCertificate?: unknown } | undefined)?.getPeerCertificate;
  return typeof sym === "symbol" ? sym : undefined;
}

function tlsPeerDer(conn: Deno.TlsConn): Uint8Array<ArrayBuffer> | undefined {
  const sym = peerCertSymbol();
  if (!sym) return undefined;
  const fn = (conn as unknown as Record<symbol, PeerCertFn | undefined>)[sym];
  if (typeof fn !== "function") return undefined;
  try {
    const raw = fn.call(conn, true)?.raw;
    return raw && raw.length > 0 ? new Uint8Array(raw) : undefined;
  } catch {
    return undefined;
  }
}

/** Whether this runtime lets {@link nativeTlsDial} see the server's certificate. */
export function nativeTlsAvailable(): boolean {
  return peerCertSymbol() !== undefined;
}

/**
 * Dial `host:port` with Deno's TLS, present this end's certificate and run
 * `ferry-link/2`. Resolves null when the link needs `ferry-link/1` instead
 * (the runtime cannot show the server's certificate). Rejects with the TLS library's error when the handshake
 * refuses the server's certificate (see {@link isCertificateFailure}), or
 * with a LinkError / PeerRefusedError naming why the link was refused.
 */
export async function nativeTlsDial(
  host: string,
  port: number,
  opts: LinkOptions,
  creds: Credentials,
  peerName: string,
): Promise<Conn | null> {
  let raw: Deno.TlsConn;
  try {
    const tcp = await Deno.connect({ hostname: host, port });
    // Handshake flights and link lines are small: without this each waits
    // for the peer's delayed acknowledgement.
    tcp.setNoDelay(true);
    raw = await Deno.startTls(tcp, {
      hostname: host,
      caCerts: [creds.ca],
      // Ferry checks the name itself, as ferry-link/1 does, with its own message.
      unsafelyDisableHostnameVerification: true,
    });
  } catch (e) {
    if (isCertificateFailure(e)) throw e;
    throw new LinkError(`cannot connect to ${host}:${port}: ${(e as Error).message}`);
  }
  const run = async (): Promise<Conn | null> => {
    try {
      await raw.handshake();
    } catch (e) {
      if (isCertificateFailure(e)) throw e;
      throw new LinkError(explainNativeError(e as Error));
    }
    const serverDer = tlsPeerDer(raw);
    if (!serverDer) {
      raw.close();
      return null;
    }
    const lines = nativeLines(raw);
    const id = await linkExchange(
      lines,
      { role: "client", dialect: LINK_PROTOCOL_2, peerDer: serverDer },
      creds,
      opts,
      peerName,
    );
    return new NativeTlsConn(
      raw,
      { identity: id.name, kind: id.kind, groups: id.groups, authenticated: true },
      id,
      lines.rest().rest,
    );
  };
  const ms = opts.handshakeTimeoutMs ?? 10_000;
  let cancel: (() => void) | undefined;
  const timeout = new Promise<never>((_, reject) => {
    cancel = after(ms, () => {
      reject(new LinkError(`TLS handshake did not finish within ${ms} ms`));
    });
  });
  try {
    return await Promise.race([run(), timeout]);
  } catch (e) {
    try {
      raw.close();
    } catch { /* already closed */ }
    throw e;
  } finally {
    cancel?.();
  }
}

/** What {@link nativeTlsListen} reports through, shared with the node:tls listener. */
export interface ListenReports {
  /** A connection was refused (or new credentials could not be used), with the reason. */
  refused(addr: string, reason: string): void;
  /** An open session was closed because its certificate was revoked. */
  revoked(c: IdentifiedConn): void;
}

/** Deno's TLS listener for `creds`; refuses a certificate whose key is not Ed25519. */
async function bindTls(
  host: string,
  port: number,
  creds: Credentials,
  reusePort: boolean,
): Promise<Deno.TlsListener> {
  // Ferry's links use Ed25519 certificates only: a listener with another key
  // would serve clients that could never check its ferry-link proofs.
  try {
    await ed25519Key(readCert(creds.cert));
  } catch (e) {
    throw new LinkError(
      `cannot listen with the certificate of '${creds.name}': ${
        (e as Error).message
      }; issue it from Ferry's CA ('ferry ca issue ${creds.name}')`,
    );
  }
  // A listener just closed may hold its port for a moment.
  for (let i = 0;; i++) {
    try {
      return Deno.listenTls({ hostname: host, port, cert: creds.cert, key: creds.key, reusePort });
    } catch (e) {
      if (!(e instanceof Deno.errors.AddrInUse) || i >= 50 || port === 0) throw e;
      await new Promise((r) => setTimeout(r, i < 5 ? 0 : 10));
    }
  }
}

/**
 * Listen on `host:port` with Deno's TLS and run the server side of
 * `ferry-link/2` on every connection: the client proves in the link that it
 * holds the key of a certificate from the CA, which is checked (chain,
 * dates, revocation, kind, allow list) before the connection is yielded,
 * so no Styx byte is read from an unverified peer. A client that speaks
 * only `ferry-link/1` is refused with a reason naming that.
 *
 * The listener holds `src`, the watch of its credentials: renewed
 * credentials take effect for new handshakes (the port is bound again
 * with them; open sessions stay), and sessions whose certificate is
 * revoked are closed when the new CRL is loaded, and at worst within
 * `opts.revocationCheckMs`. Closing the listener closes `src`.
 */
export async function nativeTlsListen(
  host: string,
  port: number,
  opts: LinkOptions & { reusePort?: boolean },
  src: CredentialWatch,
  reports: ListenReports,
): Promise<Listener> {
  let creds = src.current();
  let tls = await bindTls(host, port, creds, opts.reusePort === true);
  const bound = tls.addr as Deno.NetAddr;
  const queue: Conn[] = [];
  let waiter: ((c: Conn | null) => void) | null = null;
  let closed = false;
  const live = new Set<IdentifiedConn>();
  const watch = guardSessions(live, src, opts, reports.revoked);
  const deliver = (c: Conn | null) => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(c);
    } else if (c) queue.push(c);
  };

  // New credentials: bind again with them. Deno's TLS listener keeps the
  // certificate it was made with; sessions already open are not touched.
  let rebinding: Promise<void> = Promise.resolve();
  const renew = (next: Credentials) => {
    if (next.cert === creds.cert && next.key === creds.key) {
      creds = next;
      return;
    }
    rebinding = rebinding.then(async () => {
      if (closed) return;
      const old = tls;
      const prev = creds;
      try {
        await ed25519Key(readCert(next.cert));
      } catch (e) {
        reports.refused("(credentials)", `cannot use new credentials: ${(e as Error).message}`);
        return;
      }
      try {
        old.close();
      } catch { /* already closed */ }
      try {
        tls = await bindTls(host, bound.port, next, opts.reusePort === true);
        creds = next;
      } catch (e) {
        reports.refused("(credentials)", `cannot use new credentials: ${(e as Error).message}`);
        // Keep serving with the credentials that worked.
        tls = await bindTls(host, bound.port, prev, opts.reusePort === true);
      }
    }).catch((e) => {
      reports.refused("(credentials)", `cannot listen again: ${(e as Error).message}`);
    });
  };
  const offChange = src.onChange(renew);
  // Credentials that changed while the port was being bound.
  if (src.current() !== creds) renew(src.current());

  const admit = async (raw: Deno.TlsConn) => {
    const addr = `tcp!${raw.remoteAddr.hostname}!${raw.remoteAddr.port}`;
    const used = creds;
    const ms = opts.handshakeTimeoutMs ?? 10_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LinkError(`TLS handshake did not finish within ${ms} ms`)),
        ms,
      );
    });
    const run = async (): Promise<NativeTlsConn> => {
      try {
        await raw.handshake();
      } catch (e) {
        throw new LinkError(explainServerError(e as Error));
      }
      const lines = nativeLines(raw);
      const id = await linkExchange(
        lines,
        { role: "server" },
        await freshCreds(src, used),
        opts,
        undefined,
      );
      // The verdict must be out before the Styx session writes.
      await lines.flush();
      return new NativeTlsConn(
        raw,
        { identity: id.name, kind: id.kind, groups: id.groups, authenticated: true },
        id,
        lines.rest().rest,
      );
    };
    let c: NativeTlsConn;
    try {
      c = await Promise.race([run(), timeout]);
    } catch (e) {
      try {
        raw.close();
      } catch { /* already closed */ }
      reports.refused(addr, (e as Error).message);
      return;
    } finally {
      clearTimeout(timer);
    }
    if (closed) {
      c.close();
      return;
    }
    live.add(c);
    c.closed.then(() => live.delete(c));
    // Credentials that changed during the handshake may carry a new CRL.
    if (src.current() !== used) await watch.check();
    if (!c.isClosed) deliver(c);
  };

  (async () => {
    while (!closed) {
      const l = tls;
      let raw: Deno.TlsConn;
      try {
        raw = await l.accept();
      } catch (e) {
        if (closed) break;
        // Bound again with new credentials: accept from the new listener.
        if (l !== tls) continue;
        await rebinding;
        if (l !== tls) continue;
        if (e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) break;
        // Out of file descriptors and the like: try again shortly.
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      void admit(raw);
    }
    deliver(null);
  })();

  return {
    addr: `tcp!${bound.hostname}!${bound.port}`,
    close() {
      if (closed) return;
      closed = true;
      offChange();
      watch.stop();
      src.close();
      try {
        tls.close();
      } catch { /* already closed */ }
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

/** Deno's TLS server-side handshake errors in Ferry's words. */
const DENO_TLS_SERVER_ERRORS: ExplainRules = [
  [
    /corrupt message|InvalidContentType|InvalidMessage|unexpected message|received fatal alert: (Decode|Protocol)|peer is incompatible|no (shared|common)/i,
    (m) => `the other end does not speak TLS 1.3 with Ed25519 (${m})`,
  ],
  [
    /reset|broken pipe|closed|eof|end of file/i,
    (m) => `the connection closed during the TLS handshake (${m})`,
  ],
];

function explainServerError(e: Error): string {
  return explainLinkFailure(e, DENO_TLS_SERVER_ERRORS);
}
