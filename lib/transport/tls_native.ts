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
 * @module
 */

import type { Conn, Peer } from "./conn.ts";
import { TcpConn } from "./tcp.ts";
import type { CertIdentity } from "../auth/certs.ts";
import { PeerRefusedError } from "../auth/verify.ts";
import type { Credentials, IdentifiedConn, LinkOptions } from "../auth/link.ts";
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
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new LinkError(`TLS handshake did not finish within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([run(), timeout]);
  } catch (e) {
    try {
      raw.close();
    } catch { /* already closed */ }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}
