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
import type { CertIdentity, CertKind } from "../auth/certs.ts";
import { ed25519Key, readCert } from "../auth/der.ts";
import { fromBase64, importKeyPem, pemBlocks, toBase64 } from "../auth/keys.ts";
import { PeerRefused, verifyPeer } from "../auth/verify.ts";
import {
  type Credentials,
  type IdentifiedConn,
  type LinkOptions,
  revokedSerials,
} from "../auth/link.ts";

/** The version tag of the exchange for clients without channel binding. */
export const LINK_PROTOCOL_2 = "ferry-link/2";

/** Longest link line either end accepts (a line may carry a certificate). */
export const MAX_LINK_LINE = 8192;

/** A link was refused or failed during Ferry's post-handshake exchange. */
export class NativeLinkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LinkError";
  }
}

async function sha256(b: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", b));
}

/**
 * What a `ferry-link/2` client signs: the label, the server's nonce and the
 * SHA-256 of both certificates (client's first).
 */
export async function linkMessage(
  nonce: Uint8Array,
  clientDer: Uint8Array<ArrayBuffer>,
  serverDer: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  const label = new TextEncoder().encode(`${LINK_PROTOCOL_2} client `);
  const parts = [label, nonce, await sha256(clientDer), await sha256(serverDer)];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The length of a `ferry-link/2` challenge nonce. */
export const NONCE_BYTES = 32;

/** A fresh random nonce for {@link linkMessage}. */
export function linkNonce(): Uint8Array<ArrayBuffer> {
  return crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
}

/** Check a peer's signature over a {@link linkMessage}; false on any malformed input. */
export async function linkSignatureOk(
  der: Uint8Array,
  sigB64: string,
  msg: Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  try {
    return await crypto.subtle.verify(
      "Ed25519",
      await ed25519Key(readCert(der)),
      fromBase64(sigB64),
      msg,
    );
  } catch {
    return false;
  }
}

/** Sign a {@link linkMessage} with this end's key. */
export async function linkSign(creds: Credentials, msg: Uint8Array<ArrayBuffer>): Promise<string> {
  const key = await importKeyPem(creds.key, "this end's key");
  return toBase64(new Uint8Array(await crypto.subtle.sign("Ed25519", key, msg)));
}

/** The DER of this end's certificate. */
export function ownCertDer(creds: Credentials): Uint8Array<ArrayBuffer> {
  const der = pemBlocks(creds.cert, "CERTIFICATE")[0];
  if (!der) throw new NativeLinkError("this end's certificate file holds no certificate");
  return der;
}

/** The first whole line of `buf` and the bytes after it, or null while no line is whole. */
export function takeLine(buf: Uint8Array): [string, Uint8Array<ArrayBuffer>] | null {
  const i = buf.indexOf(10);
  if (i < 0) return null;
  return [new TextDecoder().decode(buf.subarray(0, i)), buf.slice(i + 1)];
}

/** `text` as one link line: line breaks flattened, at most {@link MAX_LINK_LINE} bytes. */
export function linkLine(text: string): string {
  return text.replace(/[\r\n]+/g, " ").slice(0, MAX_LINK_LINE - 2) + "\n";
}

/** Line I/O over a Deno TLS connection during the exchange. */
class Lines {
  #buf = new Uint8Array(0);
  #scratch = new Uint8Array(16 * 1024);
  constructor(readonly conn: Deno.TlsConn) {}

  async line(): Promise<string> {
    while (true) {
      const got = takeLine(this.#buf);
      if (got) {
        this.#buf = got[1];
        return got[0];
      }
      if (this.#buf.length > MAX_LINK_LINE) {
        throw new NativeLinkError("the other end sent an overlong link line (not a Ferry peer?)");
      }
      let n: number | null;
      try {
        n = await this.conn.read(this.#scratch);
      } catch (e) {
        throw new NativeLinkError(explainNativeError(e as Error));
      }
      if (n === null) {
        throw new NativeLinkError("the other end closed the connection before confirming the link");
      }
      const nb = new Uint8Array(this.#buf.length + n);
      nb.set(this.#buf, 0);
      nb.set(this.#scratch.subarray(0, n), this.#buf.length);
      this.#buf = nb;
    }
  }

  async write(line: string): Promise<void> {
    const b = new TextEncoder().encode(linkLine(line));
    let off = 0;
    while (off < b.length) off += await this.conn.write(b.subarray(off));
  }

  rest(): Uint8Array {
    return this.#buf;
  }
}

/** Why a native TLS handshake failed, in Ferry's words. */
export function explainNativeError(e: Error): string {
  const m = e.message;
  if (/invalid peer certificate|certificate/i.test(m)) {
    return `the server's certificate was not accepted (${m})`;
  }
  if (
    /corrupt message|InvalidContentType|InvalidMessage|unexpected message|received fatal alert: (Decode|Protocol)/i
      .test(m)
  ) {
    return `the other end does not speak TLS (${m})`;
  }
  if (/reset|broken pipe|closed|eof|end of file/i.test(m)) {
    return `the connection closed during the TLS handshake (${m}); does the other end listen without TLS (-A)?`;
  }
  return m;
}

/**
 * True when Deno's TLS refused the server's certificate during the
 * handshake (worth a full diagnosis); not for Ferry's own refusals, which
 * already name what was wrong.
 */
export function isCertificateFailure(e: unknown): boolean {
  return e instanceof Error && /invalid peer certificate|certificate/i.test(e.message) &&
    !(e instanceof NativeLinkError) && !(e instanceof PeerRefused);
}

const refusedRe = /^ferry-link\/\d+ refused (.*)$/;

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

/**
 * Check a peer's certificate as both link exchanges do: chain to the CA,
 * validity dates (by `opts.now`), revocation, key usage, kind and, for a
 * server, its name. Throws PeerRefused, or an Error naming what could not
 * be checked.
 */
export async function checkPeerCert(
  der: Uint8Array | undefined,
  creds: Credentials,
  opts: LinkOptions,
  role: "client" | "server",
  kind: CertKind | undefined,
  name: string | undefined,
): Promise<CertIdentity> {
  let ca;
  try {
    ca = readCert(creds.ca);
  } catch {
    throw new Error("the CA certificate is not a valid X.509 certificate");
  }
  return await verifyPeer(der, {
    ca,
    now: opts.now?.(),
    revoked: await revokedSerials(opts, creds),
    role,
    kind,
    name,
  });
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
 * with a NativeLinkError / PeerRefused naming why the link was refused.
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
    throw new NativeLinkError(`cannot connect to ${host}:${port}: ${(e as Error).message}`);
  }
  const run = async (): Promise<Conn | null> => {
    try {
      await raw.handshake();
    } catch (e) {
      if (isCertificateFailure(e)) throw e;
      throw new NativeLinkError(explainNativeError(e as Error));
    }
    const serverDer = tlsPeerDer(raw);
    if (!serverDer) {
      raw.close();
      return null;
    }
    const lines = new Lines(raw);
    const id = await exchange(lines, opts, creds, peerName, serverDer);
    return new NativeTlsConn(
      raw,
      { identity: id.name, kind: id.kind, groups: id.groups, authenticated: true },
      id,
      lines.rest(),
    );
  };
  const ms = opts.handshakeTimeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new NativeLinkError(`TLS handshake did not finish within ${ms} ms`));
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

async function exchange(
  lines: Lines,
  opts: LinkOptions,
  creds: Credentials,
  peerName: string,
  serverDer: Uint8Array<ArrayBuffer>,
): Promise<CertIdentity> {
  const refuse = async (reason: string): Promise<never> => {
    await lines.write(`${LINK_PROTOCOL_2} refused ${reason}`).catch(() => {});
    throw new PeerRefused(reason);
  };
  // 1. The server's certificate, as presented in TLS.
  let id: CertIdentity;
  try {
    id = await checkPeerCert(serverDer, creds, opts, "server", "node", peerName);
  } catch (e) {
    return await refuse(
      e instanceof PeerRefused ? e.message : `cannot verify server: ${(e as Error).message}`,
    );
  }
  // 2. The server's challenge.
  const line = await lines.line();
  const r = refusedRe.exec(line);
  if (r) throw new NativeLinkError(`the other end refused the link: ${r[1]}`);
  const m = new RegExp(`^${LINK_PROTOCOL_2} challenge ([A-Za-z0-9+/=]+)$`).exec(line);
  let nonce: Uint8Array | undefined;
  try {
    nonce = m ? fromBase64(m[1]!) : undefined;
  } catch { /* malformed */ }
  if (!nonce || nonce.length !== NONCE_BYTES) {
    return await refuse("server is not a Ferry peer (no ferry-link/2 challenge)");
  }
  // 3. Our proof; 4. the verdict.
  const own = ownCertDer(creds);
  const sig = await linkSign(creds, await linkMessage(nonce, own, serverDer));
  await lines.write(`${LINK_PROTOCOL_2} proof ${toBase64(own)} ${sig}`);
  const verdict = await lines.line();
  if (verdict !== `${LINK_PROTOCOL_2} ok`) {
    const v = refusedRe.exec(verdict);
    throw new NativeLinkError(
      v ? `the other end refused the link: ${v[1]}` : "the other end sent a bad link verdict",
    );
  }
  return id;
}
