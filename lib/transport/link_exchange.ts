/**
 * Ferry's link exchange: the lines both ends of a TLS connection trade
 * after the handshake and before a single Styx byte, in which each proves
 * it holds the key of the certificate it presents and the other checks
 * that certificate (chain to the CA, validity dates, revocation, key
 * usage, kind, name, allow list). One state machine, {@link linkExchange},
 * runs both dialects over a {@link LinkLines} channel, whatever TLS
 * library carries it:
 *
 * - `ferry-link/1` (node:tls, see tls.ts): each end signs
 *   "ferry-link/1 ROLE" ‖ client Finished ‖ server Finished, binding its
 *   certificate, presented in TLS, to this very session. Then each sends
 *   its verdict, `ferry-link/1 ok` or `ferry-link/1 refused REASON`.
 * - `ferry-link/2` (Deno's TLS, see tls_native.ts), for a client that
 *   cannot see the Finished messages: the server sends
 *   `ferry-link/2 challenge NONCE`, the client answers
 *   `ferry-link/2 proof CERT SIG` (its certificate and a signature over the
 *   label, the nonce and both certificates' SHA-256), and the server
 *   answers `ferry-link/2 ok` or `ferry-link/2 refused REASON`.
 *
 * A server speaks both: it sends the challenge alongside its own
 * `ferry-link/1` proof, and a client with no TLS certificate gets the
 * challenge alone.
 *
 * @module
 */

import { concatBytes } from "../bytes.ts";
import type { CertIdentity, CertKind } from "../auth/certs.ts";
import { ed25519Key, readCert } from "../auth/der.ts";
import { fromBase64, importKeyPem, pemBlocks, toBase64 } from "../auth/keys.ts";
import { PeerRefusedError, verifyPeer } from "../auth/verify.ts";
import { allowed, type Credentials, type LinkOptions, revokedSerials } from "../auth/link.ts";

/** The version tag of the exchange bound to the TLS session's Finished messages. */
export const LINK_PROTOCOL = "ferry-link/1";

/** The version tag of the exchange for clients without channel binding. */
export const LINK_PROTOCOL_2 = "ferry-link/2";

/** Longest link line either end accepts (a line may carry a certificate). */
export const MAX_LINK_LINE = 8192;

/** The length of a `ferry-link/2` challenge nonce. */
export const NONCE_BYTES = 32;

/** A TLS link failed or was refused; the message says why. */
export class LinkError extends Error {
  /** Make the error; `message` says what went wrong. */
  constructor(message: string) {
    super(message);
    this.name = "LinkError";
  }
}

/**
 * How one TLS library's handshake errors read in Ferry's words: the first
 * rule whose pattern matches the message (and error code) gives the
 * explanation. See {@link explainLinkFailure}.
 */
export type ExplainRules = ReadonlyArray<readonly [RegExp, (message: string) => string]>;

/**
 * Why a TLS handshake or link failed, in Ferry's words, by `rules`; the
 * library's own message when no rule matches.
 *
 * @example
 * ```ts
 * import { explainLinkFailure } from "./link_exchange.ts";
 * const rules = [[/ECONNRESET/, (m: string) => `the connection closed (${m})`]] as const;
 * console.log(explainLinkFailure(new Error("read ECONNRESET"), rules));
 * ```
 */
export function explainLinkFailure(e: Error, rules: ExplainRules): string {
  const m = e.message;
  const code = (e as { code?: unknown }).code;
  const text = m + (typeof code === "string" ? code : "");
  for (const [re, say] of rules) if (re.test(text)) return say(m);
  return m;
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

/** What a {@link LinkLines} channel reads from and writes to. */
export interface LineIo {
  /**
   * Pull the next bytes (null at the end). Absent for a source that pushes
   * them instead, through {@link LinkLines.push} and {@link LinkLines.end}.
   */
  read?(): Promise<Uint8Array | null>;
  /** Write `bytes` after everything written before; resolves once they are taken. */
  write(bytes: Uint8Array): Promise<void>;
  /** The TLS library's errors in Ferry's words. */
  explain(e: Error): string;
}

/**
 * The line channel the exchange runs over: lines in (pulled from the
 * transport, or pushed by it as they arrive), lines out in order, and the
 * bytes that came after the last line, which belong to the Styx session.
 */
export class LinkLines {
  #buf = new Uint8Array(0);
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  #written: Promise<void> = Promise.resolve();

  /** A channel over `io`. */
  constructor(readonly io: LineIo) {}

  /** Bytes arrived (for a source without {@link LineIo.read}). */
  push(d: Uint8Array): void {
    const nb = new Uint8Array(this.#buf.length + d.length);
    nb.set(this.#buf, 0);
    nb.set(d, this.#buf.length);
    this.#buf = nb;
    this.#notify();
  }

  /** The source ended, or failed with `error`. */
  end(error?: Error): void {
    if (error) this.#error ??= error;
    else this.#ended = true;
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /** Wait for more bytes, the end or an error. */
  async #more(): Promise<void> {
    if (!this.io.read) {
      await new Promise<void>((r) => (this.#wake = r));
      return;
    }
    let d: Uint8Array | null;
    try {
      d = await this.io.read();
    } catch (e) {
      this.end(e as Error);
      return;
    }
    if (d === null) this.end();
    else this.push(d);
  }

  /** The next line; rejects with a LinkError when none can come. */
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
      if (this.#error) throw new LinkError(this.io.explain(this.#error));
      if (this.#ended) {
        throw new LinkError("the other end closed the connection before confirming the link");
      }
      await this.#more();
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
      await this.#more();
    }
  }

  /** Send one line (flattened, as {@link linkLine}); lines go out in order. */
  send(text: string): void {
    const p = this.io.write(new TextEncoder().encode(linkLine(text)));
    // A failed write shows as the peer's silence on the next read.
    this.#written = p.catch(() => {});
  }

  /** Resolves once every line sent has been taken by the transport. */
  flush(): Promise<void> {
    return this.#written;
  }

  /** Bytes received past the last line read, and whether the peer hung up. */
  rest(): { rest: Uint8Array; ended: boolean } {
    return { rest: this.#buf, ended: this.#ended || this.#error !== null };
  }
}

/** What the exchange needs to know about the TLS session under it. */
export interface LinkSession {
  /** This end's role. */
  role: "client" | "server";
  /**
   * The dialect a client speaks: `ferry-link/1` needs {@link binding};
   * `ferry-link/2` answers the server's challenge. A server speaks both.
   */
  dialect?: typeof LINK_PROTOCOL | typeof LINK_PROTOCOL_2;
  /** The DER of the certificate the peer presented in TLS, if any. */
  peerDer?: Uint8Array;
  /** Client Finished ‖ server Finished, when the TLS library shows them. */
  binding?: Uint8Array;
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
  return concatBytes([label, nonce, await sha256(clientDer), await sha256(serverDer)]);
}

/** What a `ferry-link/1` end signs: the label with its role, then the channel binding. */
function proofMessage(role: "client" | "server", binding: Uint8Array): Uint8Array<ArrayBuffer> {
  return concatBytes([new TextEncoder().encode(`${LINK_PROTOCOL} ${role} `), binding]);
}

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
  if (!der) throw new LinkError("this end's certificate file holds no certificate");
  return der;
}

/**
 * Check a peer's certificate as both dialects do: chain to the CA,
 * validity dates (by `opts.now`), revocation, key usage, kind and, for a
 * server, its name. Throws PeerRefusedError, or an Error naming what could not
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

const B64 = "([A-Za-z0-9+/=]+)";
const REFUSED = /^ferry-link\/\d+ refused (.*)$/;
const V1_PROOF = new RegExp(`^${LINK_PROTOCOL} proof ${B64}$`);
const V2_CHALLENGE = new RegExp(`^${LINK_PROTOCOL_2} challenge ${B64}$`);
const V2_PROOF = new RegExp(`^${LINK_PROTOCOL_2} proof ${B64} ${B64}$`);

/** One run of the exchange: the channel, who is who, and the steps both dialects share. */
class Exchange {
  readonly theirRole: "client" | "server";
  constructor(
    readonly ch: LinkLines,
    readonly s: LinkSession,
    readonly creds: Credentials,
    readonly opts: LinkOptions,
    readonly peerName: string | undefined,
  ) {
    this.theirRole = s.role === "server" ? "client" : "server";
  }

  /** Tell the peer why, under the tag of the dialect under way, and fail. */
  async refuse(tag: string, reason: string): Promise<never> {
    this.ch.send(`${tag} refused ${reason}`);
    await this.ch.flush();
    throw new PeerRefusedError(reason);
  }

  /** Fail when `line` is the peer's refusal. */
  refusedBy(line: string): void {
    const r = REFUSED.exec(line);
    if (r) throw new LinkError(`the other end refused the link: ${r[1]}`);
  }

  /** Fail unless `line` is the verdict `tag ok`. */
  verdict(tag: string, line: string): void {
    if (line === `${tag} ok`) return;
    const v = REFUSED.exec(line);
    throw new LinkError(
      v ? `the other end refused the link: ${v[1]}` : "the other end sent a bad link verdict",
    );
  }

  /** The peer's certificate, checked; refused (under `tag`) when it does not pass. */
  async check(tag: string, der: Uint8Array | undefined): Promise<CertIdentity> {
    const server = this.s.role === "server";
    try {
      const kind = server ? this.opts.peerKind : "node";
      const id = await checkPeerCert(
        der,
        this.creds,
        this.opts,
        this.theirRole,
        kind,
        this.peerName,
      );
      if (server && !allowed(id, this.opts.allow)) {
        throw new PeerRefusedError(`'${id.name}' is not allowed to connect here`);
      }
      return id;
    } catch (e) {
      const reason = e instanceof PeerRefusedError
        ? e.message
        : `cannot verify ${this.theirRole}: ${(e as Error).message}`;
      return await this.refuse(tag, reason);
    }
  }

  /** The channel binding, or the peer's refusal / our failure when there is none. */
  async binding(): Promise<Uint8Array> {
    if (this.s.binding) return this.s.binding;
    this.refusedBy(await this.ch.line().catch(() => ""));
    throw new LinkError("TLS channel binding is unavailable on this connection");
  }

  /** Send our `ferry-link/1` proof over `binding`. */
  async proveBound(binding: Uint8Array): Promise<void> {
    const key = await importKeyPem(this.creds.key, "this end's key");
    const sig = new Uint8Array(
      await crypto.subtle.sign("Ed25519", key, proofMessage(this.s.role, binding)),
    );
    this.ch.send(`${LINK_PROTOCOL} proof ${toBase64(sig)}`);
  }

  /** Check the peer's `ferry-link/1` proof (the match of {@link V1_PROOF}). */
  async checkBound(
    m: RegExpExecArray | null,
    id: CertIdentity,
    der: Uint8Array,
    binding: Uint8Array,
  ): Promise<void> {
    if (!m) {
      return await this.refuse(
        LINK_PROTOCOL,
        `${this.theirRole} is not a Ferry peer (no link proof)`,
      );
    }
    let good = false;
    try {
      const pub = await ed25519Key(readCert(der));
      good = await crypto.subtle.verify(
        "Ed25519",
        pub,
        fromBase64(m[1]!),
        proofMessage(this.theirRole, binding),
      );
    } catch {
      good = false;
    }
    if (!good) {
      await this.refuse(
        LINK_PROTOCOL,
        `${this.theirRole} '${id.name}' did not prove possession of its certificate key`,
      );
    }
  }
}

/**
 * A client with channel binding: `ferry-link/1`, or `ferry-link/2` when the
 * server opens with a challenge instead of its proof (a server on Deno's
 * TLS, which cannot bind to the session). Either way the server's
 * certificate, presented in TLS, is checked first, so the challenge is
 * answered only inside a session with that server.
 */
async function boundClient(x: Exchange): Promise<CertIdentity> {
  const id = await x.check(LINK_PROTOCOL, x.s.peerDer);
  const binding = await x.binding();
  // Every server speaks first: its proof, or only a challenge.
  const proof = await x.ch.line();
  x.refusedBy(proof);
  if (V2_CHALLENGE.test(proof)) return await answerChallenge(x, id, proof);
  await x.proveBound(binding);
  await x.checkBound(V1_PROOF.exec(proof), id, x.s.peerDer!, binding);
  x.ch.send(`${LINK_PROTOCOL} ok`);
  let verdict: string;
  // A client skips the server's challenge to clients of the other dialect.
  do verdict = await x.ch.line(); while (verdict.startsWith(`${LINK_PROTOCOL_2} `));
  x.verdict(LINK_PROTOCOL, verdict);
  return id;
}

/** A client speaking `ferry-link/2`. */
async function challengedClient(x: Exchange): Promise<CertIdentity> {
  // The server's certificate, as presented in TLS.
  const id = await x.check(LINK_PROTOCOL_2, x.s.peerDer);
  const line = await x.ch.line();
  x.refusedBy(line);
  return await answerChallenge(x, id, line);
}

/** Answer the server's `ferry-link/2` challenge `line`; `id` is the server, already checked. */
async function answerChallenge(x: Exchange, id: CertIdentity, line: string): Promise<CertIdentity> {
  const serverDer = x.s.peerDer;
  const m = V2_CHALLENGE.exec(line);
  let nonce: Uint8Array | undefined;
  try {
    nonce = m ? fromBase64(m[1]!) : undefined;
  } catch { /* malformed */ }
  if (!nonce || nonce.length !== NONCE_BYTES) {
    return await x.refuse(
      LINK_PROTOCOL_2,
      "server is not a Ferry peer (no ferry-link/2 challenge)",
    );
  }
  const own = ownCertDer(x.creds);
  const sig = await linkSign(x.creds, await linkMessage(nonce, own, new Uint8Array(serverDer!)));
  x.ch.send(`${LINK_PROTOCOL_2} proof ${toBase64(own)} ${sig}`);
  x.verdict(LINK_PROTOCOL_2, await x.ch.line());
  // The Styx session writes next: our lines must be out first.
  await x.ch.flush();
  return id;
}

/** A server: `ferry-link/1` with a client that presented a certificate in TLS, else `ferry-link/2`. */
async function server(x: Exchange): Promise<CertIdentity> {
  const der = x.s.peerDer;
  const nonce = linkNonce();
  const challenge = `${LINK_PROTOCOL_2} challenge ${toBase64(nonce)}`;
  const challenged = async (m: RegExpExecArray): Promise<CertIdentity> => {
    let cDer: Uint8Array<ArrayBuffer>;
    try {
      cDer = fromBase64(m[1]!);
    } catch {
      return await x.refuse(LINK_PROTOCOL_2, "client sent a malformed ferry-link/2 proof");
    }
    if (der && !sameBytes(der, cDer)) {
      return await x.refuse(
        LINK_PROTOCOL_2,
        "client presented one certificate in TLS and another in the link",
      );
    }
    const id = await x.check(LINK_PROTOCOL_2, cDer);
    const msg = await linkMessage(nonce, cDer, ownCertDer(x.creds));
    if (!(await linkSignatureOk(cDer, m[2]!, msg))) {
      return await x.refuse(
        LINK_PROTOCOL_2,
        `client '${id.name}' did not prove possession of its certificate key`,
      );
    }
    x.ch.send(`${LINK_PROTOCOL_2} ok`);
    return id;
  };
  if (!der) {
    // No certificate in TLS: the client may still prove itself in the link.
    x.ch.send(challenge);
    const first = await x.ch.lineStartingWith(`${LINK_PROTOCOL_2} `);
    if (first !== null) x.refusedBy(first);
    const m = first === null ? null : V2_PROOF.exec(first);
    if (!m) {
      // A client that refused this server (its certificate) says so in ferry-link/1.
      const no = await x.ch.lineStartingWith(`${LINK_PROTOCOL} refused `).catch(() => null);
      if (no !== null) x.refusedBy(no);
      const v1 = await x.ch.lineStartingWith(`${LINK_PROTOCOL} proof `).catch(() => null);
      return await x.refuse(
        LINK_PROTOCOL,
        v1 !== null && !x.s.binding
          ? "client speaks only ferry-link/1, which this listener (Deno's TLS) cannot check: update the client, or serve it from a node:tls listener (unset FERRY_TLS_LISTENER)"
          : "client presented no certificate",
      );
    }
    return await challenged(m);
  }
  const id = await x.check(LINK_PROTOCOL, der);
  const binding = await x.binding();
  await x.proveBound(binding);
  x.ch.send(challenge);
  const proof = await x.ch.line();
  x.refusedBy(proof);
  const v2 = V2_PROOF.exec(proof);
  if (v2) return await challenged(v2);
  await x.checkBound(V1_PROOF.exec(proof), id, der, binding);
  x.ch.send(`${LINK_PROTOCOL} ok`);
  x.verdict(LINK_PROTOCOL, await x.ch.line());
  return id;
}

/**
 * Run the link exchange on `ch` as `session.role`, checking the peer
 * against `creds` and `opts` (and, for a client, that the server is the
 * node `peerName`). Resolves with the peer's verified identity; rejects
 * with PeerRefusedError after telling the peer why, or with a LinkError naming
 * what the peer refused or what went wrong.
 *
 * @example
 * ```ts ignore
 * const ch = new LinkLines({ read, write, explain: (e) => e.message });
 * const id = await linkExchange(ch, { role: "client", dialect: LINK_PROTOCOL_2, peerDer }, creds, opts, "fileserver");
 * ```
 */
export async function linkExchange(
  ch: LinkLines,
  session: LinkSession,
  creds: Credentials,
  opts: LinkOptions,
  peerName: string | undefined,
): Promise<CertIdentity> {
  const x = new Exchange(ch, session, creds, opts, peerName);
  if (session.role === "server") return await server(x);
  if (session.dialect === LINK_PROTOCOL_2) return await challengedClient(x);
  return await boundClient(x);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
