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
import { resolve } from "../hostpath.ts";
import { every } from "../deadline.ts";

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
  /**
   * A {@link CredentialWatch} (what listeners should hold), credentials, or
   * a function returning the current ones. Credentials loaded from disk are
   * followed through their directory's watch whichever form is given.
   */
  creds: CredentialWatch | Credentials | (() => Credentials);
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
  /**
   * For a listener: the TLS library that serves it. "node" (node:tls)
   * speaks both link dialects and honours {@link alg}; "deno" (Deno's own
   * TLS) speaks only `ferry-link/2`, so it refuses peers that speak only
   * `ferry-link/1`. Default: $FERRY_TLS_LISTENER if set, else "node".
   * Credentials given as a function and {@link alg} always need "node".
   */
  listener?: "deno" | "node";
  /** Give up on a handshake after this long (default 10 s). */
  handshakeTimeoutMs?: number;
  /**
   * For a listener: how often open sessions are re-checked against the
   * revocation list (default 5000 ms). They are also re-checked as soon as
   * a new CRL is loaded; 0 leaves only that.
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

/** The files credentials are loaded from, in the order {@link Stamp} keeps them. */
function credentialFiles(n: string): string[] {
  return ["ca.pem", `${n}.pem`, `${n}.key`, "crl.pem"];
}

/** Each credentials file's mtime and size ("-" when missing), in {@link credentialFiles} order. */
type Stamp = string[];

/** Where the key file's part sits in a {@link Stamp}. */
const KEY_STAMP = 2;

async function stampOf(dir: string, n: string): Promise<Stamp> {
  return await Promise.all(
    credentialFiles(n).map(async (f) => {
      try {
        const st = await Deno.stat(`${dir}/${f}`);
        return `${st.mtime?.getTime()}:${st.size}`;
      } catch {
        return "-";
      }
    }),
  );
}

/** Where loaded credentials came from, and their files' stamp just before they were read. */
interface Origin {
  dir: string;
  name: string;
  stamp: Stamp;
}

// Kept beside the object, not in it: a copy made with `{ ...creds }` (to
// change something in memory) no longer claims to be what is on disk.
const origins = new WeakMap<Credentials, Origin>();

/**
 * Load credentials from `dir`: ca.pem, NAME.pem, NAME.key and crl.pem if
 * present. Without `name`, uses FERRY_NAME, the only pair in `dir`, or the
 * host name. Encrypted keys are decrypted with FERRY_PASSPHRASE or a prompt.
 *
 * The result is a snapshot, but it remembers its directory: every TLS
 * listener and dialer given it follows that directory's shared watch (see
 * {@link watchCredentials}), so renewed certificates and a new CRL still
 * reach it.
 *
 * @example
 * ```ts ignore
 * const creds = await loadCredentials("certs", "alice");
 * ```
 */
export async function loadCredentials(dir: string, name?: string): Promise<Credentials> {
  return await loadFrom(dir, name ?? await pickName(dir));
}

async function loadFrom(
  dir: string,
  n: string,
  prev?: { stamp: Stamp; creds: Credentials },
): Promise<Credentials> {
  // Stamped before reading: a change made while reading shows as a new stamp later.
  const stamp = await stampOf(dir, n);
  // The key file has not changed: no second passphrase prompt for a new CRL.
  const kept = prev && prev.stamp[KEY_STAMP] === stamp[KEY_STAMP] && stamp[KEY_STAMP] !== "-"
    ? prev.creds.key
    : undefined;
  // Read together (small files, each a trip to the file system's thread);
  // their errors are told in the order they were before.
  const [caR, certR, keyR, crlR] = await Promise.allSettled([
    Deno.readTextFile(`${dir}/ca.pem`),
    Deno.readTextFile(`${dir}/${n}.pem`),
    kept ?? readKeyFile(`${dir}/${n}.key`),
    Deno.readTextFile(`${dir}/crl.pem`),
  ]);
  for (const r of [caR, certR]) {
    if (r.status === "fulfilled") continue;
    if (r.reason instanceof Deno.errors.NotFound) {
      throw new Error(
        `no credentials for '${n}' in '${dir}': run 'ferry ca issue ${n} --dir ${dir}' or 'ferry enroll ADDR TOKEN --dir ${dir}'`,
      );
    }
    throw r.reason;
  }
  const ca = (caR as PromiseFulfilledResult<string>).value;
  const cert = (certR as PromiseFulfilledResult<string>).value;
  if (keyR.status === "rejected") {
    if (keyR.reason instanceof Deno.errors.NotFound) {
      throw new Error(`no key for '${n}' in '${dir}': expected '${dir}/${n}.key'`);
    }
    throw keyR.reason;
  }
  let key = keyR.value;
  if (kept === undefined && isEncryptedKey(key)) {
    key = await decryptKeyPem(key, askPassphrase(`'${dir}/${n}.key'`), `'${dir}/${n}.key'`);
  }
  checkCert(ca, `'${dir}/ca.pem'`);
  checkCert(cert, `'${dir}/${n}.pem'`);
  const creds: Credentials = { ca, cert, key, name: n };
  // No CRL yet: none.
  if (crlR.status === "fulfilled") creds.crl = crlR.value;
  origins.set(creds, { dir, name: n, stamp });
  return creds;
}

function checkCert(pem: string, what: string): void {
  try {
    readCert(pem);
  } catch {
    throw new Error(`${what} is not a valid X.509 certificate`);
  }
}

/**
 * Credentials that follow their files on disk. Each is a handle on the one
 * watch a process keeps per credentials directory and name; closing the
 * last handle stops that watch.
 */
export interface CredentialWatch {
  /** The latest successfully loaded credentials. */
  current(): Credentials;
  /** Reload now (also done every interval); keeps the old ones on error. */
  reload(): Promise<void>;
  /** Look at the files now and reload what changed (a few stats when nothing did). */
  refresh?(): Promise<void>;
  /**
   * Call `fn` whenever new credentials take effect (a renewed certificate,
   * a new CRL); returns a function that stops calling it.
   */
  onChange(fn: (creds: Credentials) => void): () => void;
  /** Release this handle (the watch stops when no handle is left). */
  close(): void;
}

/** How often a credentials directory is checked for changes, by default. */
export const CREDENTIALS_POLL_MS = 2000;

/** The one watch of a directory and name, shared by every handle on it. */
class SharedWatch {
  #cur: Credentials;
  #stamp: Stamp;
  /** Stops the poll (see {@link pollEvery}). */
  #stop: (() => void) | undefined;
  #intervalMs = Infinity;
  #busy: Promise<void> | null = null;
  #changed = new Set<(c: Credentials) => void>();
  #errors = new Set<(e: Error) => void>();
  refs = 0;

  constructor(
    readonly key: string,
    readonly dir: string,
    readonly name: string,
    seed: Credentials,
  ) {
    this.#cur = seed;
    this.#stamp = origins.get(seed)?.stamp ?? [];
  }

  current(): Credentials {
    return this.#cur;
  }

  /** Poll at least every `ms`. */
  pollEvery(ms: number): void {
    if (ms >= this.#intervalMs) return;
    this.#intervalMs = ms;
    this.#stop?.();
    // Like an unref'd interval: a watch alone does not keep a process alive.
    this.#stop = every(ms, () => {
      if (!this.#busy) this.check().catch(() => {});
    });
  }

  /** Reload when a file changed (or always, with `force`); one check at a time. */
  check(force = false): Promise<void> {
    const run = async () => {
      const s = await stampOf(this.dir, this.name);
      if (!force && s.join("|") === this.#stamp.join("|")) return;
      try {
        const next = await loadFrom(this.dir, this.name, { stamp: this.#stamp, creds: this.#cur });
        if (next.cert !== this.#cur.cert || next.key !== this.#cur.key) {
          const { keyMatchesCert } = await import("./certs.ts");
          if (!(await keyMatchesCert(next.key, next.cert))) {
            throw new Error(
              `'${this.dir}/${this.name}.key' does not match '${this.dir}/${this.name}.pem' (renewal in progress?)`,
            );
          }
        }
        this.#cur = next;
        this.#stamp = origins.get(next)!.stamp;
      } catch (e) {
        for (const f of this.#errors) f(e as Error);
        return;
      }
      for (const f of this.#changed) {
        try {
          f(this.#cur);
        } catch { /* one subscriber's failure is not another's */ }
      }
    };
    const p = (this.#busy ?? Promise.resolve()).then(run).finally(() => {
      if (this.#busy === p) this.#busy = null;
    });
    this.#busy = p;
    return p;
  }

  handle(opts: { intervalMs?: number; onError?: (e: Error) => void }): CredentialWatch {
    this.refs++;
    this.pollEvery(opts.intervalMs ?? CREDENTIALS_POLL_MS);
    const mine = new Set<(c: Credentials) => void>();
    const onError = opts.onError;
    if (onError) this.#errors.add(onError);
    let open = true;
    const h: CredentialWatch = {
      current: () => this.#cur,
      reload: () => this.check(true),
      refresh: () => this.check(),
      onChange: (fn) => {
        const f = (c: Credentials) => fn(c);
        mine.add(f);
        this.#changed.add(f);
        return () => {
          mine.delete(f);
          this.#changed.delete(f);
        };
      },
      close: () => {
        if (!open) return;
        open = false;
        for (const f of mine) this.#changed.delete(f);
        if (onError) this.#errors.delete(onError);
        if (--this.refs === 0) {
          this.#stop?.();
          if (watches.get(this.key) === this) watches.delete(this.key);
        }
      },
    };
    handles.set(h, this);
    return h;
  }
}

const watches = new Map<string, SharedWatch>();
const handles = new WeakMap<CredentialWatch, SharedWatch>();

function watchKey(dir: string, name: string): string {
  return `${resolve(dir)}\0${name}`;
}

/**
 * Load credentials and reload them whenever their files change (checked
 * every `intervalMs`, default 2000): a renewed certificate and key, a new
 * CA certificate or a new CRL. Every caller in a process that watches the
 * same directory and name shares one watch, so a listener, the dialers
 * beside it and the sessions they opened all see the same credentials at
 * the same moment. Pass the handle as {@link LinkOptions.creds}; close it
 * when done.
 *
 * @example
 * ```ts ignore
 * const w = await watchCredentials("certs", "fileserver");
 * const l = await tlsListen("0.0.0.0", 6666, { creds: w });
 * ```
 */
export async function watchCredentials(
  dir: string,
  name?: string,
  opts: { intervalMs?: number; onError?: (e: Error) => void } = {},
): Promise<CredentialWatch> {
  const n = name ?? await pickName(dir);
  const key = watchKey(dir, n);
  let w = watches.get(key);
  if (!w) {
    const seed = await loadFrom(dir, n);
    // Another caller may have started the same watch while this one loaded.
    w = watches.get(key) ?? new SharedWatch(key, dir, n, seed);
    watches.set(key, w);
  }
  return w.handle(opts);
}

/** True for a {@link CredentialWatch} handle rather than plain credentials. */
export function isCredentialWatch(x: unknown): x is CredentialWatch {
  return typeof (x as CredentialWatch | undefined)?.current === "function";
}

/**
 * A handle on the credentials source behind `creds`, for a listener or a
 * dialer to hold while it works: a watch handle shares that watch;
 * credentials loaded from disk (or a function returning them) share the
 * watch of their directory, started if need be and checked at once, so a
 * stale snapshot can never be used by accident; credentials made in memory
 * stay as they are. Close the handle when done.
 */
export async function followCredentials(
  creds: LinkOptions["creds"],
  opts: { intervalMs?: number; onError?: (e: Error) => void } = {},
): Promise<CredentialWatch> {
  if (isCredentialWatch(creds)) {
    const w = handles.get(creds);
    if (w && w.refs > 0) return w.handle(opts);
    return { ...creds, close: () => {} };
  }
  const c = typeof creds === "function" ? creds() : creds;
  const o = origins.get(c);
  if (!o) {
    return {
      current: () => typeof creds === "function" ? creds() : creds,
      reload: () => Promise.resolve(),
      onChange: () => () => {},
      close: () => {},
    };
  }
  const key = watchKey(o.dir, o.name);
  let w = watches.get(key);
  if (w) return w.handle(opts);
  w = new SharedWatch(key, o.dir, o.name, c);
  watches.set(key, w);
  const h = w.handle(opts);
  // The snapshot may be older than the files: look now, not in 2 s.
  await w.check();
  return h;
}

const withLatest = new WeakMap<Credentials, WeakMap<Credentials, Credentials>>();

/**
 * The credentials to check a new peer with on a listener that presented
 * `used` in its handshake: the CA and CRL on disk, looked at now, so that a
 * CRL written a moment ago (seen first by another thread, or before this
 * thread's next poll) already counts, with `used`'s own certificate and
 * key (the ones the handshake presented, even while a renewal is taken up).
 */
export async function freshCreds(src: CredentialWatch, used: Credentials): Promise<Credentials> {
  await src.refresh?.().catch(() => {});
  const now = src.current();
  if (now.cert === used.cert && now.key === used.key) return now;
  // One object per pair, so that the CRL's parsed serials stay cached.
  let m = withLatest.get(now);
  if (!m) withLatest.set(now, m = new WeakMap());
  let c = m.get(used);
  if (!c) m.set(used, c = { ...used, ca: now.ca, crl: now.crl });
  return c;
}

/** The current credentials from link options. */
export function currentCreds(opts: LinkOptions): Credentials {
  const c = opts.creds;
  if (isCredentialWatch(c)) return c.current();
  return typeof c === "function" ? c() : c;
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
      set = await crlSerials(creds.crl, readCert(creds.ca));
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
 * checking every `intervalMs` (0: only when `check()` is called). A
 * session therefore ends at most `intervalMs` (plus the time to learn of
 * the new CRL) after revocation. Closed connections are removed from
 * `conns`.
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
  if (intervalMs <= 0) return { stop: () => {}, check };
  const timer = setInterval(check, intervalMs);
  Deno.unrefTimer(timer);
  return { stop: () => clearInterval(timer), check };
}

/**
 * Keep the server-side sessions in `conns` under revocation: re-check them
 * every `opts.revocationCheckMs` (default 5000) and at once whenever
 * `source` loads new credentials (a new CRL), closing those whose
 * certificate is revoked. Every listener runs this; stop() when it closes.
 */
export function guardSessions(
  conns: Set<IdentifiedConn>,
  source: CredentialWatch,
  opts: LinkOptions,
  onClose?: (c: IdentifiedConn) => void,
): { stop(): void; check(): Promise<void> } {
  const w = watchRevocation(
    conns,
    () => revokedSerials(opts, source.current()),
    opts.revocationCheckMs ?? 5000,
    onClose,
  );
  const off = source.onChange(() => void w.check());
  return {
    stop: () => {
      off();
      w.stop();
    },
    check: w.check,
  };
}
