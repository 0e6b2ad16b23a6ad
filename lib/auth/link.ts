/**
 * The seam between credentials on disk and authenticated links: where
 * credentials live, loading and watching them (so a running listener picks
 * up renewed certificates), link options, the allow list, Inferno algorithm
 * names, and ending sessions whose certificate has been revoked.
 *
 * @module
 */

import type { Conn } from "../transport/conn.ts";
// certs.ts (and the X.509 library behind it) loads only when needed: a
// dialling client reads its certificates with der.ts.
import type { CertIdentity, CertKind } from "./certs.ts";
import { readCert } from "./der.ts";
import { askPassphrase, decryptKeyPem, isEncryptedKey, readKeyFile } from "./keys.ts";
import { crlSerials } from "./verify.ts";

/** A node's or user's credentials, all PEM. */
export interface Credentials {
  /** The CA certificate. */
  ca: string;
  /** This end's certificate. */
  cert: string;
  /** This end's private key (PKCS#8, decrypted). */
  key: string;
  /** The CA's current CRL, if known. */
  crl?: string;
  /** This end's identity (the certificate's CN). */
  name: string;
}

/** Options shared by every TLS link function. */
export interface LinkOptions {
  /** Credentials, or a function returning the current ones (so rotation can swap them). */
  creds: Credentials | (() => Credentials);
  /** For a client: the node name the server must have (default: the dial host). */
  peer?: string;
  /** For a server: who may connect: user or node names and "group:NAME"; default anyone. */
  allow?: string[];
  /** Inferno -C / listen -a algorithm names, see {@link mapAlg}. */
  alg?: string;
  /** The clock for validity checks. */
  now?: () => Date;
  /** Extra revoked serials, beside the CRL in the credentials. */
  revoked?: () => Set<string> | Promise<Set<string>>;
  /** The kind of certificate the peer must present (a server always needs "node"). */
  peerKind?: CertKind;
  /** Told about every refused connection, with the reason (default: console.error). */
  onRefused?: (addr: string, reason: string) => void;
  /** Give up on a handshake after this long (default 10 s). */
  handshakeTimeoutMs?: number;
  /**
   * For a listener: how often open sessions are re-checked against the
   * revocation list (default 5000 ms; 0 disables).
   */
  revocationCheckMs?: number;
}

/**
 * The default credentials directory: $FERRY_CERTS, else `.ferry/certs` in
 * the home directory (never the current directory, so the same command finds
 * the same credentials wherever it is run).
 */
export function defaultCertsDir(): string {
  const env = Deno.env.get("FERRY_CERTS");
  if (env && env !== "") return env;
  const home = Deno.env.get("HOME");
  if (!home) {
    throw new Error("No home directory ($HOME is unset): set $FERRY_CERTS or give the directory");
  }
  return `${home.replace(/\/+$/, "")}/.ferry/certs`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The names with both NAME.pem and NAME.key in `dir`. */
export async function credentialNames(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isFile || !e.name.endsWith(".pem")) continue;
      const n = e.name.slice(0, -4);
      if (n === "ca" || n === "crl") continue;
      if (await exists(`${dir}/${n}.key`)) out.push(n);
    }
  } catch { /* missing dir: no names */ }
  return out.sort();
}

async function pickName(dir: string): Promise<string> {
  const env = Deno.env.get("FERRY_NAME");
  if (env) return env;
  const names = await credentialNames(dir);
  if (names.length === 1) return names[0]!;
  const host = Deno.hostname();
  if (names.includes(host)) return host;
  if (names.length === 0) {
    throw new Error(
      `no credentials in '${dir}': run 'ferry ca issue NAME --dir ${dir}' or 'ferry enroll ADDR TOKEN --dir ${dir}'`,
    );
  }
  throw new Error(
    `several credentials in '${dir}' (${names.join(", ")}): choose one with --name or FERRY_NAME`,
  );
}

/**
 * Load credentials from `dir`: ca.pem, NAME.pem, NAME.key and crl.pem if
 * present. Without `name`, uses FERRY_NAME, the only pair in `dir`, or the
 * host name. Encrypted keys are decrypted with FERRY_PASSPHRASE or a prompt.
 *
 * @example
 * ```ts ignore
 * const creds = await loadCredentials("certs", "alice");
 * ```
 */
export async function loadCredentials(dir: string, name?: string): Promise<Credentials> {
  const n = name ?? await pickName(dir);
  let ca: string;
  let cert: string;
  try {
    ca = await Deno.readTextFile(`${dir}/ca.pem`);
    cert = await Deno.readTextFile(`${dir}/${n}.pem`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        `no credentials for '${n}' in '${dir}': run 'ferry ca issue ${n} --dir ${dir}' or 'ferry enroll ADDR TOKEN --dir ${dir}'`,
      );
    }
    throw e;
  }
  let key: string;
  try {
    key = await readKeyFile(`${dir}/${n}.key`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`no key for '${n}' in '${dir}': expected '${dir}/${n}.key'`);
    }
    throw e;
  }
  if (isEncryptedKey(key)) {
    key = await decryptKeyPem(key, askPassphrase(`'${dir}/${n}.key'`), `'${dir}/${n}.key'`);
  }
  checkCert(ca, `'${dir}/ca.pem'`);
  checkCert(cert, `'${dir}/${n}.pem'`);
  const creds: Credentials = { ca, cert, key, name: n };
  try {
    creds.crl = await Deno.readTextFile(`${dir}/crl.pem`);
  } catch { /* no CRL yet */ }
  return creds;
}

function checkCert(pem: string, what: string): void {
  try {
    readCert(pem);
  } catch {
    throw new Error(`${what} is not a valid X.509 certificate`);
  }
}

/** Credentials that follow their files on disk. */
export interface CredentialWatch {
  /** The latest successfully loaded credentials. */
  current(): Credentials;
  /** Reload now (also done every interval); keeps the old ones on error. */
  reload(): Promise<void>;
  /** Stop watching. */
  close(): void;
}

/**
 * Load credentials and reload them whenever their files change (checked
 * every `intervalMs`, default 2000). Pass `() => w.current()` as
 * {@link LinkOptions.creds} so new handshakes use renewed credentials while
 * open sessions carry on.
 */
export async function watchCredentials(
  dir: string,
  name?: string,
  opts: { intervalMs?: number; onError?: (e: Error) => void } = {},
): Promise<CredentialWatch> {
  let cur = await loadCredentials(dir, name);
  const n = cur.name;
  const stamp = async () => {
    const parts: string[] = [];
    for (const f of ["ca.pem", `${n}.pem`, `${n}.key`, "crl.pem"]) {
      try {
        const st = await Deno.stat(`${dir}/${f}`);
        parts.push(`${st.mtime?.getTime()}:${st.size}`);
      } catch {
        parts.push("-");
      }
    }
    return parts.join("|");
  };
  let last = await stamp();
  let busy = false;
  const reload = async () => {
    if (busy) return;
    busy = true;
    try {
      const s = await stamp();
      if (s === last) return;
      const next = await loadCredentials(dir, n);
      const { keyMatchesCert } = await import("./certs.ts");
      if (!(await keyMatchesCert(next.key, next.cert))) {
        throw new Error(
          `'${dir}/${n}.key' does not match '${dir}/${n}.pem' (renewal in progress?)`,
        );
      }
      cur = next;
      last = s;
    } catch (e) {
      opts.onError?.(e as Error);
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(reload, opts.intervalMs ?? 2000);
  Deno.unrefTimer(timer);
  return {
    current: () => cur,
    reload: async () => {
      last = "";
      await reload();
    },
    close: () => clearInterval(timer),
  };
}

/** The current credentials from link options. */
export function currentCreds(opts: LinkOptions): Credentials {
  return typeof opts.creds === "function" ? opts.creds() : opts.creds;
}

const crlCache = new WeakMap<object, { crl: string; ca: string; set: Set<string> }>();

/**
 * Every revoked serial known to `opts`: the CRL in the credentials (its CA
 * signature checked) plus `opts.revoked()`.
 */
export async function revokedSerials(opts: LinkOptions, creds = currentCreds(opts)): Promise<
  Set<string>
> {
  let set = new Set<string>();
  if (creds.crl) {
    const hit = crlCache.get(creds);
    if (hit && hit.crl === creds.crl && hit.ca === creds.ca) {
      set = hit.set;
    } else {
      const { parseCert } = await import("./certs.ts");
      set = await crlSerials(creds.crl, parseCert(creds.ca));
      crlCache.set(creds, { crl: creds.crl, ca: creds.ca, set });
    }
  }
  if (opts.revoked) {
    const extra = await opts.revoked();
    if (extra.size) set = new Set([...set, ...extra]);
  }
  return set;
}

/** True when `id` may connect under `allow` (names and "group:NAME"). */
export function allowed(id: Pick<CertIdentity, "name" | "groups">, allow?: string[]): boolean {
  if (!allow || allow.length === 0) return true;
  for (const a of allow) {
    if (a === id.name || a === "*") return true;
    if (a.startsWith("group:") && id.groups.includes(a.slice(6))) return true;
  }
  return false;
}

/** Parse "alice,bob,group:admins" into an allow list. */
export function parseAllow(s: string): string[] {
  return s.split(",").map((x) => x.trim()).filter((x) => x !== "");
}

const SUITES: Record<string, string> = {
  aes_128_gcm: "TLS_AES_128_GCM_SHA256",
  aes_256_gcm: "TLS_AES_256_GCM_SHA384",
  chacha20_poly1305: "TLS_CHACHA20_POLY1305_SHA256",
};

/**
 * Map Inferno's `-C alg` / `listen -a alg` names onto TLS 1.3 cipher suites.
 * Inferno names an encryption algorithm and a digest ("rc4_256 sha1",
 * "aes_128_cbc md5"); TLS 1.3 suites are AEADs, so the digest part is always
 * satisfied and dropped. "aes*128*" → AES-128-GCM, other "aes*" and
 * "rc4*", "des*", "idea*" → AES-256-GCM, "chacha*" → ChaCha20-Poly1305;
 * digest-only names ("sha1", "md5", "sha256") keep the default order.
 * "clear" and "none" (no encryption) are refused: use -A for that.
 * Returns the suites in preference order (empty: the default).
 *
 * @example
 * ```ts
 * import { mapAlg } from "./link.ts";
 * if (mapAlg("aes_128_cbc sha1")[0] !== "TLS_AES_128_GCM_SHA256") throw new Error("bad map");
 * ```
 */
export function mapAlg(alg?: string): string[] {
  if (alg === undefined || alg.trim() === "") return [];
  const out: string[] = [];
  for (const word of alg.toLowerCase().split(/[\s/,]+/).filter((w) => w !== "")) {
    if (word === "clear" || word === "none") {
      throw new Error(
        `Algorithm '${word}' means no encryption, which TLS links never do: use -A for an unauthenticated, unencrypted link`,
      );
    }
    if (/^(sha1|sha256|md4|md5|sha)$/.test(word)) continue;
    let suite: string | undefined;
    if (word.startsWith("chacha")) suite = SUITES.chacha20_poly1305;
    else if (word.startsWith("aes") && word.includes("128")) suite = SUITES.aes_128_gcm;
    else if (/^(aes|rc4|des|3des|idea|blowfish)/.test(word)) suite = SUITES.aes_256_gcm;
    else if (Object.values(SUITES).includes(word.toUpperCase())) suite = word.toUpperCase();
    if (!suite) {
      throw new Error(
        `Unknown algorithm '${word}': use e.g. aes_256_gcm, aes_128_gcm, chacha20_poly1305, rc4_256, sha1`,
      );
    }
    if (!out.includes(suite)) out.push(suite);
  }
  return out;
}

/** A connection that knows the certificate identity of its peer. */
export interface IdentifiedConn extends Conn {
  /** The verified peer certificate's identity. */
  readonly peerCert: CertIdentity;
}

/**
 * Close every connection in `conns` whose peer certificate is now revoked,
 * checking every `intervalMs`. A session therefore ends at most
 * `intervalMs` (plus the time to learn of the new CRL) after revocation.
 * Closed connections are removed from `conns`.
 */
export function watchRevocation(
  conns: Set<IdentifiedConn>,
  getRevoked: () => Set<string> | Promise<Set<string>>,
  intervalMs: number,
  onClose?: (c: IdentifiedConn) => void,
): { stop(): void; check(): Promise<void> } {
  const check = async () => {
    let set: Set<string>;
    try {
      set = await getRevoked();
    } catch {
      return;
    }
    for (const c of [...conns]) {
      if (set.has(c.peerCert.serial)) {
        conns.delete(c);
        onClose?.(c);
        c.close();
      }
    }
  };
  const timer = setInterval(check, intervalMs);
  Deno.unrefTimer(timer);
  return { stop: () => clearInterval(timer), check };
}
