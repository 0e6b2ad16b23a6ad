/**
 * Enrolment and renewal (Inferno's signer and getauthinfo; step-ca's
 * one-time tokens), over TLS, one JSON line each way.
 *
 * The signer runs on the CA host with a one-off node certificate issued by
 * the CA. A new device holds only a token (name, expiry, secret, CA
 * fingerprint): it asks the signer for the CA certificate, checks its
 * SHA-256 against the token and that the signer's TLS certificate chains to
 * it, and only then sends the token with a PKCS#10 request signed by a key
 * it made itself. A fake signer cannot hand it another CA, and never sees
 * the token. Renewal presents the current certificate over TLS, proves
 * possession of its key with a signature bound to the TLS session, and gets
 * a certificate for a fresh key pair.
 *
 * Requests: `{"op":"ca"}`, `{"op":"enroll","token","csr"}`,
 * `{"op":"renew","csr","proof"}`, `{"op":"crl"}`, `{"op":"tree","proof"}`.
 * Replies: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
 *
 * Enrolment and the cluster's state share the signer's one port: a device
 * without a certificate can only enrol, so the first line decides. After
 * `{"op":"tree"}` (a client certificate that chains to the CA and is not
 * revoked, plus a signature by its key over the TLS session, as for
 * renewal) and the signer's `{"ok":true}`, the same TLS connection carries
 * Styx: the read-only tree of lib/cluster/tree.ts, attached as the
 * certificate's name. The signer ends such a session as soon as the CRL it
 * serves revokes the certificate.
 *
 * @module
 */

import tls from "node:tls";
import type { Buffer } from "node:buffer";
import { type CertificateAuthority, DEFAULT_CERT_TTL_MS } from "./ca.ts";
import {
  checkCsr,
  createCsr,
  csrSans,
  fingerprint,
  identityOf,
  issueLeaf,
  normSerial,
  parseCert,
  sameKey,
  sanOf,
  ttlOf,
  type x509,
} from "./certs.ts";
import {
  ensurePrivateDir,
  exportKeyPem,
  fromBase64,
  generateKeyPair,
  importKeyPem,
  toBase64,
  writePublicFile,
  writeSecretFile,
} from "./keys.ts";
import { type Credentials, loadCredentials } from "./link.ts";
import { crlSerials, verifyPeer } from "./verify.ts";
import { parseToken } from "./token.ts";
import type { Conn, Listener, Peer } from "../transport/conn.ts";
import { tlsListen } from "../transport/tls.ts";
import type { Tree } from "../fs/tree.ts";
import { serve } from "../styx/server.ts";
import { StyxClient } from "../styx/client.ts";
import type { RemoteNode } from "../styx/client.ts";

const MAX_MSG = 64 * 1024;
const RENEW_LABEL = "ferry-renew/1 ";
const TREE_LABEL = "ferry-tree/1 ";

/** Options for {@link startSigner}. */
export interface SignerOptions {
  now?: () => Date;
  /** Told about every request served or refused. */
  log?: (msg: string) => void;
  /** Extra names/addresses for the signer's own certificate. */
  sans?: string[];
  /**
   * The cluster's tree, served to `{"op":"tree"}` (see the module doc);
   * without it that request is refused.
   */
  tree?: Tree;
  /**
   * Resolves when the served state changes (a new CRL, say), so open tree
   * sessions are checked against the revocation list at once.
   */
  changed?: (signal: AbortSignal) => Promise<void>;
  /**
   * Also serve the tree on this address as an ordinary Ferry TLS listener,
   * so `mount`, `ferry 9p` and the shell can read it (`--peer signer`).
   */
  treeListen?: { host: string; port: number };
  /** How often open tree sessions are checked for expired certificates (default 60 s). */
  expiryCheckMs?: number;
}

/** A running signer. */
export interface Signer {
  /** "tcp!HOST!PORT" actually bound. */
  addr: string;
  port: number;
  /** Sessions reading the cluster's tree now. */
  readonly watchers: number;
  /** The address of the plain tree listener ({@link SignerOptions.treeListen}), if any. */
  treeAddr?: string;
  close(): void;
}

type Json = Record<string, unknown>;

function readJsonLine(sock: tls.TLSSocket): Promise<Json> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const cleanup = () => {
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("close", onEnd);
      sock.off("error", onErr);
    };
    const onData = (d: Buffer) => {
      buf += d.toString("utf8");
      const i = buf.indexOf("\n");
      if (i >= 0) {
        cleanup();
        try {
          const v = JSON.parse(buf.slice(0, i));
          if (typeof v !== "object" || v === null) throw new Error("not an object");
          resolve(v as Json);
        } catch {
          reject(new Error("malformed message (not a JSON object)"));
        }
      } else if (buf.length > MAX_MSG) {
        cleanup();
        reject(new Error("message too long"));
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new Error("the other end closed the connection"));
    };
    const onErr = (e: Error) => {
      cleanup();
      reject(new Error(e.message));
    };
    sock.on("data", onData);
    sock.on("end", onEnd);
    sock.on("close", onEnd);
    sock.on("error", onErr);
  });
}

function sendJson(sock: tls.TLSSocket, v: Json): Promise<void> {
  return new Promise((resolve) => sock.write(JSON.stringify(v) + "\n", () => resolve()));
}

function binding(
  sock: tls.TLSSocket,
  isServer: boolean,
  what = RENEW_LABEL,
): Uint8Array<ArrayBuffer> {
  const mine = sock.getFinished();
  const theirs = sock.getPeerFinished();
  if (!mine || !theirs) throw new Error("TLS channel binding is unavailable");
  const [c, s] = isServer ? [theirs, mine] : [mine, theirs];
  const label = new TextEncoder().encode(what);
  const out = new Uint8Array(label.length + c.length + s.length);
  out.set(label, 0);
  out.set(c, label.length);
  out.set(s, label.length + c.length);
  return out;
}

/**
 * Serve enrolment and renewal for `ca` on `host:port` (0 picks a port).
 *
 * @example
 * ```ts ignore
 * const ca = await CertificateAuthority.open("certs");
 * const s = await startSigner(ca, "0.0.0.0", 6670);
 * ```
 */
export async function startSigner(
  ca: CertificateAuthority,
  host: string,
  port: number,
  opts: SignerOptions = {},
): Promise<Signer> {
  const log = opts.log ?? ((m: string) => console.error(`signer: ${m}`));
  const now = opts.now ?? (() => new Date());
  const keys = await generateKeyPair();
  const sans = [...(opts.sans ?? [])];
  if (host !== "0.0.0.0" && host !== "::" && host !== "*" && !sans.includes(host)) sans.push(host);
  const own = await issueLeaf({ cert: ca.cert, key: ca.key }, keys.publicKey, {
    name: SIGNER_NAME,
    kind: "node",
    sans,
    ttlMs: 7 * 86400e3,
    now: now(),
  });
  const ownKey = await exportKeyPem(keys.privateKey);
  const server = tls.createServer({
    cert: own.toString("pem"),
    key: ownKey,
    ca: ca.certPem,
    minVersion: "TLSv1.3",
    requestCert: true,
    // Enrolling devices have no certificate yet; renewals are checked below.
    rejectUnauthorized: false,
  });
  server.on("tlsClientError", () => {});
  const watchers = new Set<{ serial: string; notAfter: Date; conn: Conn }>();
  const stopping = new AbortController();
  server.on("secureConnection", (sock: tls.TLSSocket) => {
    const who = `${sock.remoteAddress ?? "?"}:${sock.remotePort ?? 0}`;
    sock.on("error", () => {});
    const t = setTimeout(() => sock.destroy(), 30_000);
    let handedOver = false;
    (async () => {
      for (let i = 0; i < 4; i++) {
        let req: Json;
        try {
          req = await readJsonLine(sock);
        } catch {
          return;
        }
        if (req.op === "tree") {
          let id: Awaited<ReturnType<typeof treePeer>>;
          try {
            id = await treePeer(req, sock);
          } catch (e) {
            log(`refused tree from ${who}: ${(e as Error).message}`);
            await sendJson(sock, { ok: false, error: (e as Error).message });
            continue;
          }
          clearTimeout(t);
          handedOver = true;
          await sendJson(sock, { ok: true });
          sock.setKeepAlive(true, 30_000);
          const conn = new SocketConn(sock, {
            addr: `tcp!${sock.remoteAddress ?? "?"}!${sock.remotePort ?? 0}`,
            identity: id.name,
            kind: id.kind,
            groups: id.groups,
            authenticated: true,
          }, `tcp!${sock.localAddress ?? "?"}!${sock.localPort ?? 0}`);
          const w = { serial: id.serial, notAfter: id.notAfter, conn };
          watchers.add(w);
          serve(conn, opts.tree!).finally(() => {
            watchers.delete(w);
            conn.close();
          });
          return;
        }
        let reply: Json;
        try {
          reply = await handle(req, sock);
        } catch (e) {
          reply = { ok: false, error: (e as Error).message };
          log(`refused ${String(req.op)} from ${who}: ${(e as Error).message}`);
        }
        await sendJson(sock, reply);
      }
    })().finally(() => {
      if (handedOver) return;
      clearTimeout(t);
      sock.end();
    });
  });

  /**
   * The client's certificate, once it is valid and unrevoked and its key
   * signed this TLS session's binding under `label` (`proof`); else throws
   * saying which `key` was not proven.
   */
  async function provenPeer(sock: tls.TLSSocket, proof: string, label: string, key: string) {
    const pc = sock.getPeerCertificate(true) as { raw?: Buffer } | null;
    const der = pc?.raw ? new Uint8Array(pc.raw) : undefined;
    const revoked = new Set(ca.store.revoked().map((r) => r.serial));
    const id = await verifyPeer(der, { ca: ca.cert, now: now(), revoked, role: "client" });
    const cert = parseCert(der!);
    const pub = await cert.publicKey.export({ name: "Ed25519" }, ["verify"]);
    let good = false;
    try {
      good = await crypto.subtle.verify(
        "Ed25519",
        pub,
        fromBase64(proof),
        binding(sock, true, label),
      );
    } catch {
      good = false;
    }
    if (!good) throw new Error(`'${id.name}' did not prove possession of its ${key}`);
    return { id, cert };
  }

  /** Who asks for the tree: a valid, unrevoked certificate whose key signed this session. */
  async function treePeer(req: Json, sock: tls.TLSSocket) {
    if (!opts.tree) throw new Error("this signer serves no cluster tree");
    if (typeof req.proof !== "string") throw new Error("tree needs a proof");
    return (await provenPeer(sock, req.proof, TREE_LABEL, "certificate key")).id;
  }

  // A revoked certificate loses its view of the cluster as soon as the CRL changes.
  if (opts.changed && opts.tree) {
    const changed = opts.changed;
    (async () => {
      while (!stopping.signal.aborted) {
        await changed(stopping.signal);
        if (watchers.size === 0) continue;
        const revoked = new Set(ca.store.revoked().map((r) => r.serial));
        for (const w of watchers) {
          if (revoked.has(w.serial)) {
            log(
              `ending the tree session of '${w.conn.peer.identity}': its certificate was revoked`,
            );
            w.conn.close();
          }
        }
      }
    })().catch(() => {});
  }
  // Nor does a certificate that expires while its session is open keep it.
  const expiry = setInterval(() => {
    for (const w of watchers) {
      if (now() > w.notAfter) {
        log(`ending the tree session of '${w.conn.peer.identity}': its certificate expired`);
        w.conn.close();
      }
    }
  }, opts.expiryCheckMs ?? 60_000);
  Deno.unrefTimer(expiry);

  async function handle(req: Json, sock: tls.TLSSocket): Promise<Json> {
    switch (req.op) {
      case "ca":
        return { ok: true, ca: ca.certPem };
      case "crl":
        return { ok: true, crl: await ca.crlPem(now()) };
      case "enroll": {
        if (typeof req.token !== "string" || typeof req.csr !== "string") {
          throw new Error("enroll needs a token and a csr");
        }
        const t = parseToken(req.token);
        // Check the request before using the token up, so a tampered request
        // does not burn it.
        await checkCsr(req.csr, t.name);
        const g = await ca.redeem(req.token, now());
        // The names come from the token, which the CA made; names the
        // device asks for in its request are never granted on its say-so.
        const asked = csrSans(req.csr).filter((n) => !g.sans.includes(n));
        const r = await ca.signCsr(req.csr, g.name, {
          kind: g.kind,
          groups: g.groups,
          sans: g.sans,
          ttlMs: g.ttlMs,
          now: now(),
          via: "enroll",
        });
        const names = g.sans.length > 0 ? ` for ${g.sans.map((n) => `'${n}'`).join(", ")}` : "";
        log(`enrolled ${g.kind} '${g.name}' serial ${r.serial}${names}`);
        if (asked.length > 0) {
          log(
            `'${g.name}' also asked for ${
              asked.map((n) => `'${n}'`).join(", ")
            }, which its token does not grant`,
          );
        }
        return { ok: true, cert: r.certPem, ca: ca.certPem, crl: await ca.crlPem(now()) };
      }
      case "renew": {
        if (typeof req.csr !== "string" || typeof req.proof !== "string") {
          throw new Error("renew needs a csr and a proof");
        }
        const { id, cert: cur } = await provenPeer(sock, req.proof, RENEW_LABEL, "current key");
        const rec = ca.store.get(normSerial(cur.serialNumber));
        const life = Math.round(ttlOf(cur.notBefore, cur.notAfter));
        const r = await ca.signCsr(req.csr, id.name, {
          kind: id.kind,
          groups: id.groups,
          sans: [...id.dns.filter((d) => d !== id.name), ...id.ips],
          ttlMs: life > 0 ? life : DEFAULT_CERT_TTL_MS,
          now: now(),
          via: "renew",
        });
        log(`renewed ${id.kind} '${id.name}' serial ${rec?.serial ?? id.serial} -> ${r.serial}`);
        return { ok: true, cert: r.certPem, ca: ca.certPem, crl: await ca.crlPem(now()) };
      }
      default:
        throw new Error(`unknown request '${String(req.op)}'`);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host === "*" ? "0.0.0.0" : host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  let treeListener: Listener | undefined;
  if (opts.treeListen && opts.tree) {
    const tree = opts.tree;
    treeListener = await tlsListen(opts.treeListen.host, opts.treeListen.port, {
      creds: { ca: ca.certPem, cert: own.toString("pem"), key: ownKey, name: SIGNER_NAME },
      // The CA's database is the newest revocation list there is.
      revoked: () => new Set(ca.store.revoked().map((r) => r.serial)),
      onRefused: (addr, reason) => log(`refused ${addr}: ${reason}`),
    });
    const l = treeListener;
    (async () => {
      for await (const conn of l) serve(conn, tree).finally(() => conn.close());
    })().catch(() => {});
  }
  const a = server.address() as { address: string; port: number };
  return {
    addr: `tcp!${a.address}!${a.port}`,
    port: a.port,
    treeAddr: treeListener?.addr,
    get watchers() {
      return watchers.size;
    },
    close: () => {
      stopping.abort();
      clearInterval(expiry);
      server.close();
      treeListener?.close();
      for (const w of watchers) w.conn.close();
    },
  };
}

/**
 * A Conn over a TLS socket that has already carried the JSON lines above:
 * the cluster tree's Styx runs on it from then on.
 */
class SocketConn implements Conn {
  readonly closed: Promise<void>;
  #done!: () => void;
  #isClosed = false;
  #chunks: Uint8Array[] = [];
  #waiter: ((c: Uint8Array | null) => void) | null = null;

  constructor(readonly sock: tls.TLSSocket, readonly peer: Peer, readonly local: string) {
    this.closed = new Promise((r) => (this.#done = r));
    sock.on("data", (d: Buffer) => {
      const c = new Uint8Array(d.buffer, d.byteOffset, d.length);
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = null;
        w(c);
      } else this.#chunks.push(c);
    });
    sock.on("end", () => this.close());
    sock.on("close", () => this.close());
    sock.on("error", () => this.close());
    sock.resume();
  }

  read(): Promise<Uint8Array | null> {
    const c = this.#chunks.shift();
    if (c) return Promise.resolve(c);
    if (this.#isClosed) return Promise.resolve(null);
    return new Promise((resolve) => (this.#waiter = resolve));
  }

  write(data: Uint8Array): Promise<void> {
    if (this.#isClosed) return Promise.reject(new Error("write to a closed connection"));
    return new Promise((resolve, reject) => {
      this.sock.write(data, (err) => err ? reject(err) : resolve());
    });
  }

  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    const w = this.#waiter;
    this.#waiter = null;
    w?.(null);
    this.sock.destroy();
    this.#done();
  }
}

/** A session reading the signer's cluster tree (see {@link openClusterTree}). */
export interface ClusterTreeSession {
  client: StyxClient;
  root: RemoteNode;
  /** Resolves once the connection is gone. */
  closed: Promise<void>;
  close(): Promise<void>;
}

/**
 * Open the signer's cluster tree at `host:port` with `creds` (whose CA the
 * signer's certificate must chain to), attached as the certificate's name.
 */
export async function openClusterTree(
  host: string,
  port: number,
  creds: Credentials,
  opts: { now?: () => Date } = {},
): Promise<ClusterTreeSession> {
  const now = opts.now ?? (() => new Date());
  const ca = parseCert(creds.ca, "the CA certificate");
  const sock = await open(host, port, creds);
  let conn: SocketConn | undefined;
  try {
    let name: string;
    try {
      name = await checkSigner(sock, ca, now());
    } catch (e) {
      throw new Error(`the signer's certificate is not from our CA: ${(e as Error).message}`);
    }
    // Any node holds a certificate from the CA: only the signer's may speak for the cluster.
    if (name !== SIGNER_NAME) {
      throw new Error(
        `${host}:${port} answered with the certificate of '${name}', not the signer's: check the address`,
      );
    }
    const key = await importKeyPem(creds.key, `the key of '${creds.name}'`);
    const proof = new Uint8Array(
      await crypto.subtle.sign("Ed25519", key, binding(sock, false, TREE_LABEL)),
    );
    await ask(sock, { op: "tree", proof: toBase64(proof) });
    sock.setKeepAlive(true, 30_000);
    conn = new SocketConn(sock, {
      addr: `tcp!${host}!${port}`,
      identity: "signer",
      kind: "node",
      authenticated: true,
    }, `tcp!${sock.localAddress ?? "?"}!${sock.localPort ?? 0}`);
    const client = await StyxClient.connect(conn);
    const root = await client.attach(creds.name);
    const c = conn;
    return {
      client,
      root,
      closed: c.closed,
      close: async () => {
        await client.close().catch(() => {});
        c.close();
      },
    };
  } catch (e) {
    if (conn) conn.close();
    else sock.destroy();
    throw e;
  }
}

async function open(
  host: string,
  port: number,
  creds?: { cert: string; key: string },
): Promise<tls.TLSSocket> {
  const sock = tls.connect({
    host,
    port,
    minVersion: "TLSv1.3",
    rejectUnauthorized: false, // checked against the pinned CA below
    checkServerIdentity: () => undefined,
    ...(creds ? { cert: creds.cert, key: creds.key } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    sock.once(
      "error",
      (e) => reject(new Error(`cannot reach the signer at ${host}:${port}: ${e.message}`)),
    );
    sock.once("secureConnect", () => resolve());
  });
  sock.on("error", () => {});
  return sock;
}

async function ask(sock: tls.TLSSocket, req: Json): Promise<Json> {
  await sendJson(sock, req);
  const r = await readJsonLine(sock);
  if (r.ok !== true) {
    throw new Error(`the signer refused: ${typeof r.error === "string" ? r.error : "no reason"}`);
  }
  return r;
}

async function checkSigner(
  sock: tls.TLSSocket,
  ca: x509.X509Certificate,
  now: Date,
): Promise<string> {
  const pc = sock.getPeerCertificate(true) as { raw?: Buffer } | null;
  const der = pc?.raw ? new Uint8Array(pc.raw) : undefined;
  return (await verifyPeer(der, { ca, now, role: "server" })).name;
}

/** The name of the certificate every signer presents (see {@link startSigner}). */
export const SIGNER_NAME = "signer";

async function checkIssued(
  certPem: string,
  ca: x509.X509Certificate,
  name: string,
  pub: CryptoKey,
  now: Date,
): Promise<void> {
  const cert = parseCert(certPem, "the issued certificate");
  const ok = await cert.verify({ publicKey: ca.publicKey, signatureOnly: true }).catch(() => false);
  if (!ok) throw new Error("the signer returned a certificate not signed by the pinned CA");
  const id = identityOf(cert);
  if (id.name !== name) {
    throw new Error(`the signer returned a certificate for '${id.name}', not '${name}'`);
  }
  if (!(await sameKey(pub, cert))) {
    throw new Error("the signer returned a certificate for another key");
  }
  if (now > cert.notAfter) throw new Error("the signer returned an expired certificate");
}

/** What {@link enroll} stored. */
export interface Enrolled {
  name: string;
  kind: string;
  serial: string;
  dir: string;
  /** The extra DNS names and IP addresses the certificate carries. */
  sans: string[];
  /** Names asked for (`opts.sans`) that the CA did not grant. */
  notGranted: string[];
}

/**
 * Enrol this device: make a key locally, send a CSR with `token` to the
 * signer at `host:port`, and store DIR/NAME.key, DIR/NAME.pem, DIR/ca.pem,
 * DIR/crl.pem and DIR/signer (the signer's address, for renewals). The
 * request asks for the names `opts.sans`; the certificate carries the
 * names the token grants, and {@link Enrolled.notGranted} says which of
 * those asked for are missing.
 */
export async function enroll(
  host: string,
  port: number,
  token: string,
  dir: string,
  opts: {
    now?: () => Date;
    force?: boolean;
    encryptKey?: (pem: string) => Promise<string>;
    sans?: string[];
  } = {},
): Promise<Enrolled> {
  const t = parseToken(token);
  const now = opts.now ?? (() => new Date());
  if (t.expires <= now()) throw new Error("Enrolment token has expired: ask for a new one");
  if (!opts.force) {
    try {
      await Deno.lstat(`${dir}/${t.name}.key`);
      throw new Error(`'${dir}/${t.name}.key' already exists: use --force to replace it`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  const sock = await open(host, port);
  try {
    const hello = await ask(sock, { op: "ca" });
    if (typeof hello.ca !== "string") throw new Error("the signer sent no CA certificate");
    const ca = parseCert(hello.ca, "the signer's CA certificate");
    if (await fingerprint(ca) !== t.fingerprint) {
      throw new Error(
        "the signer's CA does not match the fingerprint in the token: not the right signer, refusing to enrol",
      );
    }
    try {
      await checkSigner(sock, ca, now());
    } catch (e) {
      throw new Error(
        `the signer's own certificate is not from the pinned CA: ${(e as Error).message}`,
      );
    }
    const keys = await generateKeyPair();
    const csr = await createCsr(t.name, keys, opts.sans ?? []);
    const r = await ask(sock, { op: "enroll", token, csr });
    if (typeof r.cert !== "string") throw new Error("the signer sent no certificate");
    await checkIssued(r.cert, ca, t.name, keys.publicKey, now());
    await ensurePrivateDir(dir);
    let keyPem = await exportKeyPem(keys.privateKey);
    if (opts.encryptKey) keyPem = await opts.encryptKey(keyPem);
    await writeSecretFile(`${dir}/${t.name}.key`, keyPem, { force: true });
    await writePublicFile(`${dir}/${t.name}.pem`, r.cert);
    await writePublicFile(`${dir}/ca.pem`, hello.ca);
    if (typeof r.crl === "string") await writeCrlIfValid(dir, r.crl, ca);
    await writePublicFile(`${dir}/signer`, `tcp!${host}!${port}\n`);
    const id = identityOf(parseCert(r.cert));
    const sans = [...id.dns.filter((d) => d !== t.name.toLowerCase()), ...id.ips];
    const notGranted = (opts.sans ?? []).filter((n) => !sans.includes(sanOf(n).value));
    return { name: t.name, kind: id.kind, serial: id.serial, dir, sans, notGranted };
  } finally {
    sock.end();
  }
}

async function writeCrlIfValid(dir: string, crl: string, ca: x509.X509Certificate): Promise<void> {
  await crlSerials(crl, ca); // throws unless the CA signed it
  await writePublicFile(`${dir}/crl.pem`, crl);
}

/** What {@link renew} did. */
export interface Renewed {
  name: string;
  oldSerial: string;
  serial: string;
  notAfter: Date;
}

/**
 * Renew this end's certificate: connect to the signer with the current
 * credentials, prove possession, and store a new key and certificate (key
 * and certificate replaced together) plus the current CRL.
 */
export async function renew(
  host: string,
  port: number,
  dir: string,
  name?: string,
  opts: { now?: () => Date; creds?: Credentials } = {},
): Promise<Renewed> {
  const now = opts.now ?? (() => new Date());
  const creds = opts.creds ?? await loadCredentials(dir, name);
  const ca = parseCert(creds.ca, `'${dir}/ca.pem'`);
  const old = identityOf(parseCert(creds.cert));
  const sock = await open(host, port, creds);
  try {
    try {
      await checkSigner(sock, ca, now());
    } catch (e) {
      throw new Error(`the signer's certificate is not from our CA: ${(e as Error).message}`);
    }
    const key = await importKeyPem(creds.key, `'${dir}/${creds.name}.key'`);
    const proof = new Uint8Array(await crypto.subtle.sign("Ed25519", key, binding(sock, false)));
    const keys = await generateKeyPair();
    const csr = await createCsr(creds.name, keys);
    const r = await ask(sock, { op: "renew", csr, proof: toBase64(proof) });
    if (typeof r.cert !== "string") throw new Error("the signer sent no certificate");
    await checkIssued(r.cert, ca, creds.name, keys.publicKey, now());
    // Replace the key first: a reader that sees a mismatched pair retries.
    await writeSecretFile(`${dir}/${creds.name}.key`, await exportKeyPem(keys.privateKey), {
      force: true,
    });
    await writePublicFile(`${dir}/${creds.name}.pem`, r.cert);
    if (typeof r.crl === "string") await writeCrlIfValid(dir, r.crl, ca);
    const id = identityOf(parseCert(r.cert));
    return { name: creds.name, oldSerial: old.serial, serial: id.serial, notAfter: id.notAfter };
  } finally {
    sock.end();
  }
}

/** Fetch the CA's current CRL from the signer into DIR/crl.pem. */
export async function fetchCrl(host: string, port: number, dir: string): Promise<void> {
  const ca = parseCert(await Deno.readTextFile(`${dir}/ca.pem`), `'${dir}/ca.pem'`);
  const sock = await open(host, port);
  try {
    await checkSigner(sock, ca, new Date());
    const r = await ask(sock, { op: "crl" });
    if (typeof r.crl !== "string") throw new Error("the signer sent no CRL");
    await writeCrlIfValid(dir, r.crl, ca);
  } finally {
    sock.end();
  }
}

/**
 * When to renew a certificate: two thirds into its lifetime, minus a random
 * jitter of up to a tenth of the lifetime (so a fleet does not renew at
 * once). `rand` is in [0, 1).
 */
export function renewalTime(notBefore: Date, notAfter: Date, rand = Math.random()): Date {
  const life = notAfter.getTime() - notBefore.getTime();
  return new Date(notBefore.getTime() + (2 * life) / 3 - rand * (life / 10));
}
