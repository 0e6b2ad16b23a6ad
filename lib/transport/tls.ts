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
import { type CertIdentity, parseCert } from "../auth/certs.ts";
import { fromBase64, importKeyPem, toBase64 } from "../auth/keys.ts";
import { PeerRefused, verifyPeer } from "../auth/verify.ts";
import {
  allowed,
  type Credentials,
  currentCreds,
  type IdentifiedConn,
  type LinkOptions,
  mapAlg,
  revokedSerials,
  watchRevocation,
} from "../auth/link.ts";

export type { Credentials, LinkOptions } from "../auth/link.ts";

/** The version tag of Ferry's post-handshake exchange. */
export const LINK_PROTOCOL = "ferry-link/1";

const HIGH_WATER = 1 << 20;
const MAX_LINE = 1024;

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
  ) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    if (leftover && leftover.length > 0) this.#push(leftover);
    sock.on("data", (d: Buffer) => this.#push(new Uint8Array(d.buffer, d.byteOffset, d.length)));
    sock.on("end", () => this.#end());
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

  write(data: Uint8Array): Promise<void> {
    if (this.#isClosed) return Promise.reject(new LinkError("write to a closed TLS link"));
    return new Promise((resolve, reject) => {
      const ok = this.sock.write(data, (err) => {
        if (err) reject(new LinkError(`TLS write failed: ${err.message}`));
      });
      if (ok) {
        resolve();
        return;
      }
      const onDrain = () => {
        this.sock.off("close", onClose);
        resolve();
      };
      const onClose = () => {
        this.sock.off("drain", onDrain);
        reject(new LinkError("TLS link closed while writing"));
      };
      this.sock.once("drain", onDrain);
      this.sock.once("close", onClose);
    });
  }

  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#end();
    try {
      this.sock.destroy();
    } catch { /* already gone */ }
    this.#resolveClosed();
  }
}

/** Read one line (without "\n") from a socket; returns it and any bytes after it. */
function readLine(sock: tls.TLSSocket): Promise<{ line: string; rest: Uint8Array }> {
  return new Promise((resolve, reject) => {
    let buf = new Uint8Array(0);
    const cleanup = () => {
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("close", onEnd);
      sock.off("error", onError);
    };
    const onData = (d: Buffer) => {
      const nb = new Uint8Array(buf.length + d.length);
      nb.set(buf, 0);
      nb.set(d, buf.length);
      buf = nb;
      const i = buf.indexOf(10);
      if (i >= 0) {
        cleanup();
        sock.pause();
        resolve({ line: new TextDecoder().decode(buf.subarray(0, i)), rest: buf.slice(i + 1) });
      } else if (buf.length > MAX_LINE) {
        cleanup();
        reject(new LinkError("the other end sent an overlong link line (not a Ferry peer?)"));
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new LinkError("the other end closed the connection before confirming the link"));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(new LinkError(explainTlsError(e)));
    };
    sock.on("data", onData);
    sock.on("end", onEnd);
    sock.on("close", onEnd);
    sock.on("error", onError);
    sock.resume();
  });
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

function writeLine(sock: tls.TLSSocket, line: string): void {
  sock.write(line.replace(/[\r\n]+/g, " ").slice(0, MAX_LINE - 2) + "\n");
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
): Promise<{ id: CertIdentity; rest: Uint8Array }> {
  const myRole = isServer ? "server" : "client";
  const theirRole = isServer ? "client" : "server";
  const binding = bindingOf(sock, isServer);
  const key = await importKeyPem(creds.key, "this end's key");
  const sig = new Uint8Array(
    await crypto.subtle.sign("Ed25519", key, proofMessage(myRole, binding)),
  );
  writeLine(sock, `${LINK_PROTOCOL} proof ${toBase64(sig)}`);
  const proof = await readLine(sock);
  sock.unshift(Buffer.from(proof.rest));
  let refusal: string | undefined;
  let id: CertIdentity | undefined;
  try {
    const m = new RegExp(`^${LINK_PROTOCOL} proof ([A-Za-z0-9+/=]+)$`).exec(proof.line);
    if (!m) {
      const r = new RegExp(`^${LINK_PROTOCOL} refused (.*)$`).exec(proof.line);
      if (r) throw new LinkError(`the other end refused the link: ${r[1]}`);
      throw new PeerRefused(`${theirRole} is not a Ferry peer (no link proof)`);
    }
    const ca = parseCert(creds.ca, "the CA certificate");
    const der = peerDer(sock);
    id = await verifyPeer(der, {
      ca,
      now: opts.now?.(),
      revoked: await revokedSerials(opts, creds),
      role: theirRole,
      kind: isServer ? opts.peerKind : "node",
      name: peerName,
    });
    const pub = await parseCert(der!).publicKey.export({ name: "Ed25519" }, ["verify"]);
    let good = false;
    try {
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
      throw new PeerRefused(
        `${theirRole} '${id.name}' did not prove possession of its certificate key`,
      );
    }
    if (isServer && !allowed(id, opts.allow)) {
      throw new PeerRefused(`'${id.name}' is not allowed to connect here`);
    }
  } catch (e) {
    if (e instanceof LinkError) throw e;
    refusal = e instanceof PeerRefused
      ? e.message
      : `cannot verify ${theirRole}: ${(e as Error).message}`;
  }
  if (refusal !== undefined) {
    writeLine(sock, `${LINK_PROTOCOL} refused ${refusal}`);
    sock.end();
    throw new PeerRefused(refusal);
  }
  writeLine(sock, `${LINK_PROTOCOL} ok`);
  const verdict = await readLine(sock);
  if (verdict.line !== `${LINK_PROTOCOL} ok`) {
    const r = new RegExp(`^${LINK_PROTOCOL} refused (.*)$`).exec(verdict.line);
    throw new LinkError(
      r ? `the other end refused the link: ${r[1]}` : "the other end sent a bad link verdict",
    );
  }
  return { id: id!, rest: verdict.rest };
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
  addr: string,
  local: string,
): TlsConn {
  return new TlsConn(
    sock,
    { addr, identity: id.name, kind: id.kind, groups: id.groups, authenticated: true },
    local,
    id,
    rest,
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
): Promise<Conn> {
  const run = async () => {
    await new Promise<void>((resolve, reject) => {
      const onErr = (e: Error) => reject(new LinkError(explainTlsError(e)));
      sock.once("error", onErr);
      sock.once(
        "close",
        () => reject(new LinkError("the connection closed during the TLS handshake")),
      );
      sock.once("secureConnect", () => {
        sock.off("error", onErr);
        resolve();
      });
    });
    sock.on("error", () => {});
    const { id, rest } = await confirm(sock, false, opts, creds, peerName);
    return makeConn(sock, id, rest, addr, local());
  };
  try {
    return await withTimeout(run(), opts.handshakeTimeoutMs ?? 10_000, () => sock.destroy());
  } catch (e) {
    sock.destroy();
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
  const creds = currentCreds(opts);
  const peerName = opts.peer ?? host;
  const sock = tls.connect({ host, port, ...clientOptions(creds, opts, peerName) });
  return await clientSide(
    sock,
    opts,
    creds,
    peerName,
    `tcp!${host}!${port}`,
    () => `tcp!${sock.localAddress ?? "?"}!${sock.localPort ?? 0}`,
  );
}

/** A node Duplex stream over a Conn, so node:tls can run on top of it. */
export function connDuplex(raw: Conn): Duplex {
  let reading = false;
  const d = new Duplex({
    read() {
      if (reading) return;
      reading = true;
      const pump = async () => {
        try {
          while (true) {
            const c = await raw.read();
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
      raw.write(new Uint8Array(chunk)).then(() => cb(), (e) => cb(e as Error));
    },
    final(cb) {
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
  const creds = currentCreds(opts);
  const peerName = opts.peer ?? opts.servername;
  if (peerName === undefined) {
    throw new LinkError("a tunnelled TLS link needs the server's node name (peer or servername)");
  }
  const sock = tls.connect({ socket: connDuplex(raw), ...clientOptions(creds, opts, peerName) });
  return await clientSide(sock, opts, creds, peerName, raw.peer.addr, () => raw.local);
}

function refusedLog(opts: LinkOptions, addr: string, reason: string): void {
  if (opts.onRefused) opts.onRefused(addr, reason);
  else console.error(`tls: refused ${addr}: ${reason}`);
}

/**
 * Run the server side of a TLS link over an existing Conn. Rejects (and
 * tells the client why) unless the client proves a valid certificate.
 */
export async function tlsWrapServer(raw: Conn, opts: LinkOptions): Promise<Conn> {
  const creds = currentCreds(opts);
  const sock = new tls.TLSSocket(connDuplex(raw), {
    isServer: true,
    requestCert: true,
    rejectUnauthorized: true,
    secureContext: tls.createSecureContext(contextOptions(creds, opts)),
  } as tls.TLSSocketOptions);
  const run = async () => {
    await new Promise<void>((resolve, reject) => {
      const onErr = (e: Error) => reject(new LinkError(explainTlsError(e)));
      sock.once("error", onErr);
      sock.once(
        "close",
        () => reject(new LinkError("the connection closed during the TLS handshake")),
      );
      sock.once("secure", () => {
        sock.off("error", onErr);
        resolve();
      });
    });
    sock.on("error", () => {});
    const { id, rest } = await confirm(sock, true, opts, creds, undefined);
    return makeConn(sock, id, rest, raw.peer.addr, raw.local);
  };
  try {
    return await withTimeout(run(), opts.handshakeTimeoutMs ?? 10_000, () => sock.destroy());
  } catch (e) {
    sock.destroy();
    raw.close();
    if (e instanceof Error) refusedLog(opts, raw.peer.addr, e.message);
    throw e;
  }
}

/**
 * Listen on `host:port` for mutually authenticated TLS links. The iterator
 * yields verified Conns only; refused peers are reported through
 * `opts.onRefused` (default: a line on stderr) and never reach the caller.
 * New handshakes use the current `opts.creds()`, so renewed credentials
 * take effect without dropping sessions; sessions whose certificate is
 * revoked are closed within `opts.revocationCheckMs`.
 *
 * @example
 * ```ts ignore
 * const l = await tlsListen("0.0.0.0", 6666, { creds: () => watch.current() });
 * for await (const conn of l) serve(conn, tree);
 * ```
 */
export async function tlsListen(host: string, port: number, opts: LinkOptions): Promise<Listener> {
  let creds = currentCreds(opts);
  const server = tls.createServer({
    ...contextOptions(creds, opts),
    requestCert: true,
    rejectUnauthorized: true,
  });
  const refresh = () => {
    const now = currentCreds(opts);
    if (now !== creds) {
      creds = now;
      server.setSecureContext(contextOptions(creds, opts));
    }
  };
  server.prependListener("connection", refresh);
  const queue: Conn[] = [];
  let waiter: ((c: Conn | null) => void) | null = null;
  let closed = false;
  const live = new Set<IdentifiedConn>();
  const deliver = (c: Conn | null) => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(c);
    } else if (c) queue.push(c);
  };
  const addrOf = (s: net.Socket) => `tcp!${s.remoteAddress ?? "?"}!${s.remotePort ?? 0}`;
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
    ).then(({ id, rest }) => {
      if (closed) {
        sock.destroy();
        return;
      }
      const c = makeConn(sock, id, rest, addr, local);
      live.add(c);
      c.closed.then(() => live.delete(c));
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
  });
  const watch = (opts.revocationCheckMs ?? 5000) > 0
    ? watchRevocation(
      live,
      () => revokedSerials(opts),
      opts.revocationCheckMs ?? 5000,
      (c) =>
        refusedLog(
          opts,
          c.peer.addr,
          `certificate of '${c.peerCert.name}' was revoked: session closed`,
        ),
    )
    : undefined;
  const a = server.address() as net.AddressInfo;
  return {
    addr: `tcp!${a.address}!${a.port}`,
    close() {
      if (closed) return;
      closed = true;
      watch?.stop();
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
