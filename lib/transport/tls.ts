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
 * the verified identity, kind and groups.
 *
 * @module
 */

import tls from "node:tls";
import net from "node:net";
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import type { Conn, Listener, Peer } from "./conn.ts";
import { TcpConn, tcpDial } from "./tcp.ts";
import type { CertIdentity } from "../auth/certs.ts";
import { ed25519Key, readCert } from "../auth/der.ts";
import { fromBase64, importKeyPem, toBase64 } from "../auth/keys.ts";
import { PeerRefused } from "../auth/verify.ts";
import {
  allowed,
  type Credentials,
  type CredentialWatch,
  followCredentials,
  guardSessions,
  type IdentifiedConn,
  type LinkOptions,
  mapAlg,
} from "../auth/link.ts";
import {
  checkPeerCert,
  isCertificateFailure,
  LINK_PROTOCOL_2,
  linkLine,
  linkMessage,
  linkNonce,
  linkSignatureOk,
  MAX_LINK_LINE,
  nativeTlsDial,
  ownCertDer,
  takeLine,
} from "./tls_native.ts";

export type { Credentials, LinkOptions } from "../auth/link.ts";

/** The version tag of Ferry's post-handshake exchange. */
export const LINK_PROTOCOL = "ferry-link/1";

const HIGH_WATER = 1 << 20;

/** A TLS link failed or was refused; the message says why. */
export class LinkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LinkError";
  }
}

function isIpAddr(h: string): boolean {
  return net.isIP(h.replace(/^\[|\]$/g, "")) !== 0;
}

function explainTlsError(e: Error): string {
  const m = e.message;
  const code = (e as { code?: string }).code ?? "";
  if (/CERTIFICATE_REQUIRED|CertificateRequired|no certificates/i.test(m + code)) {
    return "the server requires a client certificate and none was accepted";
  }
  if (/UnknownCA|unknown ca|BadCertificate|bad certificate|certificate unknown/i.test(m + code)) {
    return `the other end refused our certificate (${m})`;
  }
  if (/disconnected before secure|ECONNRESET|socket hang up|EPIPE/i.test(m + code)) {
    return `the connection closed during the TLS handshake (${m})`;
  }
  if (
    /wrong version|unexpected message|corrupt message|InvalidContentType|record|http request|not a tls|unsupported protocol/i
      .test(m + code)
  ) {
    return `the other end does not speak TLS (${m})`;
  }
  return m;
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

/**
 * Collects a socket's bytes during the post-handshake exchange and hands
 * out lines; detach() gives back whatever came after them. It listens from
 * the start, so nothing is lost between lines or when the peer hangs up.
 */
class LineReader {
  #buf = new Uint8Array(0);
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  readonly #onData = (d: Buffer) => {
    const nb = new Uint8Array(this.#buf.length + d.length);
    nb.set(this.#buf, 0);
    nb.set(d, this.#buf.length);
    this.#buf = nb;
    this.#notify();
  };
  readonly #onEnd = () => {
    this.#ended = true;
    this.#notify();
  };
  readonly #onError = (e: Error) => {
    this.#error = e;
    this.#notify();
  };

  constructor(readonly sock: tls.TLSSocket) {
    sock.on("data", this.#onData);
    sock.on("end", this.#onEnd);
    sock.on("close", this.#onEnd);
    sock.on("error", this.#onError);
    sock.resume();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  async line(): Promise<string> {
    while (true) {
      const got = takeLine(this.#buf);
      if (got) {
        this.#buf = got[1];
        return got[0];
      }
      if (this.#buf.length > MAX_LINK_LINE) {
        throw new LinkError("the other end sent an overlong link line (not a Ferry peer?)");
      }
      if (this.#error) throw new LinkError(explainTlsError(this.#error));
      if (this.#ended) {
        throw new LinkError("the other end closed the connection before confirming the link");
      }
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  /**
   * The next line if it starts with `prefix`; null as soon as the bytes
   * received show it does not (so a peer that never sends a newline is
   * answered at once).
   */
  async lineStartingWith(prefix: string): Promise<string | null> {
    const want = new TextEncoder().encode(prefix);
    while (true) {
      const n = Math.min(want.length, this.#buf.length);
      for (let i = 0; i < n; i++) if (this.#buf[i] !== want[i]) return null;
      if (n === want.length) return await this.line();
      if (this.#buf.indexOf(10) >= 0) return null;
      if (this.#error || this.#ended) return null;
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  /** Stop listening; returns bytes not yet consumed and whether the peer hung up. */
  detach(): { rest: Uint8Array; ended: boolean } {
    this.sock.off("data", this.#onData);
    this.sock.off("end", this.#onEnd);
    this.sock.off("close", this.#onEnd);
    this.sock.off("error", this.#onError);
    return { rest: this.#buf, ended: this.#ended || this.#error !== null };
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

function proofMessage(role: "client" | "server", binding: Uint8Array): Uint8Array<ArrayBuffer> {
  const label = new TextEncoder().encode(`${LINK_PROTOCOL} ${role} `);
  const out = new Uint8Array(label.length + binding.length);
  out.set(label, 0);
  out.set(binding, label.length);
  return out;
}

/** Write one link line; resolves once the TLS layer has taken it. */
function writeLine(sock: tls.TLSSocket, line: string): Promise<void> {
  return new Promise((resolve) => {
    sock.write(linkLine(line), () => resolve());
  });
}

function peerDer(sock: tls.TLSSocket): Uint8Array | undefined {
  const pc = sock.getPeerCertificate(true) as { raw?: Buffer } | null;
  if (!pc || !pc.raw || pc.raw.length === 0) return undefined;
  return new Uint8Array(pc.raw);
}

/**
 * Run Ferry's post-handshake exchange on a secure socket. Resolves with the
 * peer identity and bytes already read past the verdict; rejects (after
 * telling the peer) when either end refuses.
 */
async function confirm(
  sock: tls.TLSSocket,
  isServer: boolean,
  opts: LinkOptions & { servername?: string },
  creds: Credentials,
  peerName: string | undefined,
): Promise<{ id: CertIdentity; rest: Uint8Array; ended: boolean }> {
  const lines = new LineReader(sock);
  try {
    const id = await exchange(sock, lines, isServer, opts, creds, peerName);
    return { id, ...lines.detach() };
  } catch (e) {
    lines.detach();
    throw e;
  }
}

async function exchange(
  sock: tls.TLSSocket,
  lines: LineReader,
  isServer: boolean,
  opts: LinkOptions & { servername?: string },
  creds: Credentials,
  peerName: string | undefined,
): Promise<CertIdentity> {
  const myRole = isServer ? "server" : "client";
  const theirRole = isServer ? "client" : "server";
  // Take the channel binding first, while the session is certainly intact.
  let binding: Uint8Array | undefined;
  try {
    binding = bindingOf(sock, isServer);
  } catch { /* checked below, after any refusal the peer sent */ }
  // Refusals carry the tag of the exchange under way (a ferry-link/2 client has no TLS certificate).
  let tag = LINK_PROTOCOL;
  const refuse = async (reason: string): Promise<never> => {
    await writeLine(sock, `${tag} refused ${reason}`);
    throw new PeerRefused(reason);
  };
  const reasonOf = (e: unknown) =>
    e instanceof PeerRefused ? e.message : `cannot verify ${theirRole}: ${(e as Error).message}`;
  // The peer's certificate: chain, dates, revocation, usage, kind, name, allow list.
  const check = async (der: Uint8Array | undefined): Promise<CertIdentity> => {
    try {
      const kind = isServer ? opts.peerKind : "node";
      const id = await checkPeerCert(der, creds, opts, theirRole, kind, peerName);
      if (isServer && !allowed(id, opts.allow)) {
        throw new PeerRefused(`'${id.name}' is not allowed to connect here`);
      }
      return id;
    } catch (e) {
      return await refuse(reasonOf(e));
    }
  };
  const refusedRe = /^ferry-link\/\d+ refused (.*)$/;
  const der = peerDer(sock);
  // A client without a TLS certificate may still prove itself in the link
  // (ferry-link/2, see tls_native.ts), answering a fresh challenge.
  const nonce = isServer ? linkNonce() : undefined;
  const v2Re = new RegExp(`^${LINK_PROTOCOL_2} proof ([A-Za-z0-9+/=]+) ([A-Za-z0-9+/=]+)$`);
  const linkV2 = async (m: RegExpExecArray): Promise<CertIdentity> => {
    tag = LINK_PROTOCOL_2;
    let cDer: Uint8Array<ArrayBuffer>;
    try {
      cDer = fromBase64(m[1]!);
    } catch {
      return await refuse("client sent a malformed ferry-link/2 proof");
    }
    if (der && !sameBytes(der, cDer)) {
      return await refuse("client presented one certificate in TLS and another in the link");
    }
    const id = await check(cDer);
    const msg = await linkMessage(nonce!, cDer, ownCertDer(creds));
    if (!(await linkSignatureOk(cDer, m[2]!, msg))) {
      return await refuse(`client '${id.name}' did not prove possession of its certificate key`);
    }
    writeLine(sock, `${LINK_PROTOCOL_2} ok`);
    return id;
  };
  if (isServer && !der) {
    writeLine(sock, `${LINK_PROTOCOL_2} challenge ${toBase64(nonce!)}`);
    const first = await lines.lineStartingWith(`${LINK_PROTOCOL_2} `);
    const r0 = first === null ? null : refusedRe.exec(first);
    if (r0) throw new LinkError(`the other end refused the link: ${r0[1]}`);
    const m = first === null ? null : v2Re.exec(first);
    if (!m) return await refuse("client presented no certificate");
    return await linkV2(m);
  }

  // 1. The certificate presented in TLS.
  const id = await check(der);

  // 2. Proofs of key possession bound to this TLS session, both ways.
  if (!binding) {
    const early = await lines.line().catch(() => "");
    const r0 = refusedRe.exec(early);
    if (r0) throw new LinkError(`the other end refused the link: ${r0[1]}`);
    throw new LinkError("TLS channel binding is unavailable on this connection");
  }
  const key = await importKeyPem(creds.key, "this end's key");
  const sig = new Uint8Array(
    await crypto.subtle.sign("Ed25519", key, proofMessage(myRole, binding)),
  );
  writeLine(sock, `${LINK_PROTOCOL} proof ${toBase64(sig)}`);
  if (isServer) writeLine(sock, `${LINK_PROTOCOL_2} challenge ${toBase64(nonce!)}`);
  const proofLine = await lines.line();
  const r = refusedRe.exec(proofLine);
  if (r) throw new LinkError(`the other end refused the link: ${r[1]}`);
  const v2 = isServer ? v2Re.exec(proofLine) : null;
  if (v2) return await linkV2(v2);
  const m = new RegExp(`^${LINK_PROTOCOL} proof ([A-Za-z0-9+/=]+)$`).exec(proofLine);
  if (!m) return await refuse(`${theirRole} is not a Ferry peer (no link proof)`);
  let good = false;
  try {
    const pub = await ed25519Key(readCert(der!));
    good = await crypto.subtle.verify(
      "Ed25519",
      pub,
      fromBase64(m[1]!),
      proofMessage(theirRole, binding),
    );
  } catch {
    good = false;
  }
  if (!good) {
    return await refuse(
      `${theirRole} '${id.name}' did not prove possession of its certificate key`,
    );
  }

  // 3. Verdicts.
  writeLine(sock, `${LINK_PROTOCOL} ok`);
  let verdict: string;
  // A client skips the server's challenge to clients of the other version.
  do verdict = await lines.line(); while (!isServer && verdict.startsWith(`${LINK_PROTOCOL_2} `));
  if (verdict !== `${LINK_PROTOCOL} ok`) {
    const v = refusedRe.exec(verdict);
    throw new LinkError(
      v ? `the other end refused the link: ${v[1]}` : "the other end sent a bad link verdict",
    );
  }
  return id;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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

/**
 * Dial `host:port` and set up a mutually authenticated TLS link. The server
 * must present a node certificate for `opts.peer` (default: `host`).
 *
 * @example
 * ```ts ignore
 * const creds = await loadCredentials("certs");
 * const conn = await tlsDial("fileserver", 6666, { creds });
 * console.log(conn.peer.identity);
 * ```
 */
export async function tlsDial(host: string, port: number, opts: LinkOptions): Promise<Conn> {
  // The credentials as their directory has them now (a renewed certificate, the latest CRL).
  const src = await followCredentials(opts.creds);
  try {
    return await dialWith(host, port, { ...opts, creds: src.current() });
  } finally {
    src.close();
  }
}

async function dialWith(
  host: string,
  port: number,
  opts: LinkOptions & { creds: Credentials },
): Promise<Conn> {
  const bare = host.replace(/^\[|\]$/g, "");
  if (!opts.alg) {
    // Deno's own TLS first: several times faster to read from. When it
    // refuses the server's certificate, dial again through node:tls below,
    // whose ferry-link/1 tells both ends precisely what was wrong.
    try {
      const c = await nativeTlsDial(bare, port, opts, opts.creds, opts.peer ?? host);
      if (c) return c;
    } catch (e) {
      if (!isCertificateFailure(e)) {
        throw e instanceof PeerRefused ? e : new LinkError((e as Error).message);
      }
    }
  }
  // TLS runs over a Deno TCP connection rather than node:tls's own socket:
  // the same code path as a tunnel, and reads from the network stop when the
  // reader stops (node:tls's own socket kept buffering: hundreds of MiB for
  // one bulk transfer).
  let raw: Conn;
  try {
    raw = await tcpDial(bare, port);
  } catch (e) {
    throw new LinkError(`cannot connect to ${host}:${port}: ${(e as Error).message}`);
  }
  return await tlsWrapClient(raw, { ...opts, peer: opts.peer ?? host });
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
    const c = await wrapServer(raw, opts, src.current());
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
export async function tlsListen(host: string, port: number, opts: LinkOptions): Promise<Listener> {
  // Credentials that fail to reload are reported to whoever asked for the watch with onError.
  const src = await followCredentials(opts.creds);
  try {
    return await listenWith(host, port, opts, src);
  } catch (e) {
    src.close();
    throw e;
  }
}

async function listenWith(
  host: string,
  port: number,
  opts: LinkOptions,
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
    const used = creds;
    sock.on("error", () => {});
    withTimeout(
      confirm(sock, true, opts, used, undefined),
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
    server.listen(port, host, () => {
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
