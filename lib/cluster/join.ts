/**
 * Joining a cluster: fetch the signed manifest and the CRL from the
 * signer's tree (see tree.ts), check them, keep the last good ones on disk,
 * and follow the signer's `serial` file to apply each change as it is
 * published.
 *
 * What a node or user keeps, in its credentials directory:
 *
 * - `cluster/manifest.toml` and `cluster/manifest.toml.sig`: the last
 *   manifest that passed every check (signature by the CA in ca.pem, a
 *   serial not below the highest applied here, a manifest that loads and
 *   checks and names this node). A node restarts from them while the
 *   signer is down.
 * - `crl.pem`: the CA's newest CRL, checked against ca.pem. Writing it is
 *   what ends revoked sessions: every listener follows its credentials
 *   directory's watch, which is told to reload at once.
 *
 * A manifest that fails a check is reported and not cached; the one in
 * force stays. When the signer goes away the watcher redials with backoff
 * (0.1 s doubling to 3 s, with jitter) and on reconnecting fetches whatever
 * changed meanwhile.
 *
 * @module
 */

import { concatBytes } from "../bytes.ts";
import { type ClusterTreeSession, openClusterTree } from "../auth/enroll.ts";
import { type Credentials, loadCredentials } from "../auth/link.ts";
import { fingerprint, parseCert, x509 } from "../auth/certs.ts";
import { crlSerials } from "../auth/verify.ts";
import { writePublicFile } from "../auth/keys.ts";
import { parseDialString } from "../net/dial.ts";
import {
  checkSerial,
  refuseUnsigned,
  type SignedManifest,
  verifyManifest,
} from "../manifest/sign.ts";
import { loadBytes } from "../manifest/load.ts";
import { checkManifest } from "../manifest/check.ts";
import { ManifestError } from "../manifest/schema.ts";
import { OREAD } from "../styx/types.ts";
import type { RemoteFile } from "../styx/client.ts";
import { MANIFEST_NAME } from "./state.ts";

/** Where the last good manifest is kept, inside the credentials directory. */
export const CACHE_DIR = "cluster";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** The cached manifest's path for credentials directory `certDir`. */
export function cachedManifest(certDir: string): string {
  return `${certDir}/${CACHE_DIR}/${MANIFEST_NAME}`;
}

/** The signer's `serial` line, parsed. */
export interface SerialLine {
  manifest: number;
  crl: string;
}

/** Parse a `serial` line ("manifest N crl HASH"). */
export function parseSerialLine(line: string): SerialLine {
  const m = /^manifest ([0-9]{1,15}) crl ([0-9a-f]{16}|none)\n?$/.exec(line);
  if (!m) throw new Error(`the signer sent a malformed serial line '${line.trim().slice(0, 60)}'`);
  return { manifest: Number(m[1]), crl: m[2]! };
}

async function crlTag(crl: string): Promise<string> {
  if (crl === "") return "none";
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(crl)));
  return [...d].map((x) => x.toString(16).padStart(2, "0")).join("").slice(0, 16);
}

async function readAllOf(f: RemoteFile): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let off = 0n;
  for (;;) {
    const b = await f.readOnce(off, f.iounit);
    if (b.length === 0) break;
    parts.push(b.slice());
    off += BigInt(b.length);
  }
  return concatBytes(parts);
}

async function readTreeFile(s: ClusterTreeSession, name: string): Promise<Uint8Array> {
  const f = await s.client.openPath(s.root, name, OREAD);
  try {
    return await readAllOf(f);
  } finally {
    f.close().catch(() => {});
  }
}

/** The `serial` line now (one read at offset 0: reading on would wait for a change). */
async function readSerialNow(s: ClusterTreeSession): Promise<string> {
  const f = await s.client.openPath(s.root, "serial", OREAD);
  try {
    return dec.decode(await f.readOnce(0n, 256));
  } finally {
    f.close().catch(() => {});
  }
}

/**
 * Check a manifest fetched from the signer as a node or user would before
 * using it; returns the verified manifest. `node`, when given, must be in it.
 */
export async function checkFetched(
  bytes: Uint8Array,
  sig: string,
  certDir: string,
  caPem: string,
  node?: string,
): Promise<SignedManifest> {
  const where = `the signer's ${MANIFEST_NAME}`;
  let serial: number;
  try {
    serial = await verifyManifest(bytes, sig, caPem);
  } catch (e) {
    throw new Error(`Refusing ${where}: ${(e as Error).message}`);
  }
  const signed = { bytes, serial, ca: `sha256:${await fingerprint(parseCert(caPem))}` };
  await checkSerial(signed, where, certDir);
  const m = loadBytes(bytes, where, { readFile: refuseUnsigned });
  const problems = checkManifest(m);
  if (problems.length) throw new ManifestError(problems);
  if (node !== undefined && !m.nodes.has(node)) {
    throw new Error(
      `Refusing ${where} (serial ${serial}): it has no node '${node}' (nodes: ${
        [...m.nodes.keys()].join(", ") || "none"
      })`,
    );
  }
  return signed;
}

async function replace(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeFile(tmp, data, { mode: 0o644, createNew: true });
  await Deno.rename(tmp, path);
}

/** Keep `bytes` and `sig` as the last good manifest (the signature last, each whole). */
export async function writeCache(certDir: string, bytes: Uint8Array, sig: string): Promise<string> {
  const path = cachedManifest(certDir);
  await Deno.mkdir(`${certDir}/${CACHE_DIR}`, { recursive: true, mode: 0o700 });
  await replace(path, bytes);
  await replace(`${path}.sig`, enc.encode(sig));
  return path;
}

/** When a CRL was made (its thisUpdate), or undefined when it cannot be read. */
function madeAt(pem: string): Date | undefined {
  try {
    return new x509.X509Crl(pem).thisUpdate;
  } catch {
    return undefined;
  }
}

/**
 * Write `crl` to `certDir`/crl.pem if the CA in `caPem` signed it and it is
 * newer than what is there; true when it was written. An older CRL, even
 * one the CA signed, is never put back: it could list fewer revocations.
 */
export async function writeCrl(certDir: string, crl: string, caPem: string): Promise<boolean> {
  if (crl === "") return false;
  const old = await Deno.readTextFile(`${certDir}/crl.pem`).catch(() => "");
  if (old === crl) return false;
  await crlSerials(crl, parseCert(caPem));
  const was = old === "" ? undefined : madeAt(old);
  const now = madeAt(crl);
  if (was !== undefined && now !== undefined && now < was) return false;
  await writePublicFile(`${certDir}/crl.pem`, crl);
  return true;
}

function hostPort(addr: string): { host: string; port: number } {
  const a = parseDialString(addr, { net: "tcp", service: "signer" });
  return { host: a.host.replace(/^\[(.*)\]$/, "$1"), port: a.port };
}

/** What one fetch from the signer gave. */
export interface Fetched {
  /** The cached manifest's path (also when the signer serves none or an older one). */
  file: string;
  /** The serial of the manifest fetched, when a new one was taken. */
  serial?: number;
  /** True when a new CRL was written. */
  crl: boolean;
  /** Why the signer's CRL was not taken, when it was refused. */
  crlRefused?: string;
}

/**
 * Fetch the manifest and CRL once from the signer at `addr` with the
 * credentials of `name` in `certDir`, check them and keep them (see the
 * module doc). Throws when the signer cannot be reached or its manifest is
 * refused; the cache is then left as it was.
 */
export async function fetchCluster(
  addr: string,
  certDir: string,
  name: string,
  node?: string,
): Promise<Fetched> {
  const creds = await loadCredentials(certDir, name);
  const { host, port } = hostPort(addr);
  const s = await openClusterTree(host, port, creds);
  try {
    return await syncOnce(s, creds, certDir, node, undefined);
  } finally {
    await s.close();
  }
}

/**
 * The manifest to start from when joining: fetched from the signer at
 * `addr` (see {@link fetchCluster}), or the cached one when the signer
 * cannot be reached or serves one refused here. Returns its path.
 */
export async function joinedManifest(
  addr: string,
  certDir: string,
  name: string,
  opts: { node?: string; log: (line: string) => void },
): Promise<string> {
  try {
    const f = await fetchCluster(addr, certDir, name, opts.node);
    if (f.serial !== undefined) opts.log(`manifest serial ${f.serial} from ${addr}`);
    return f.file;
  } catch (e) {
    const file = cachedManifest(certDir);
    try {
      await Deno.stat(`${file}.sig`);
    } catch {
      throw new Error(
        `Cannot take the manifest from the signer at ${addr}, and none is cached in '${file}': ${
          (e as Error).message
        }`,
      );
    }
    opts.log(
      `cannot take the manifest from the signer at ${addr} (${
        (e as Error).message
      }): starting from the cached manifest '${file}'`,
    );
    return file;
  }
}

async function syncOnce(
  s: ClusterTreeSession,
  creds: Credentials,
  certDir: string,
  node: string | undefined,
  line: SerialLine | undefined,
  applied?: number,
): Promise<Fetched> {
  const file = cachedManifest(certDir);
  const state = line ?? parseSerialLine(await readSerialNow(s));
  // The CRL first: a revocation takes effect even if the manifest is refused.
  let crl = false;
  let crlRefused: string | undefined;
  const local = await Deno.readTextFile(`${certDir}/crl.pem`).catch(() => "");
  if (state.crl !== "none" && state.crl !== await crlTag(local)) {
    const text = dec.decode(await readTreeFile(s, "crl.pem"));
    try {
      crl = await writeCrl(certDir, text, creds.ca);
    } catch (e) {
      crlRefused = (e as Error).message;
    }
  }
  if (applied !== undefined && state.manifest === applied) return { file, crl, crlRefused };
  if (state.manifest === 0) {
    throw new Error("the signer serves no manifest yet: publish one with 'ferry sign FILE'");
  }
  const bytes = await readTreeFile(s, MANIFEST_NAME);
  const sig = dec.decode(await readTreeFile(s, `${MANIFEST_NAME}.sig`));
  const signed = await checkFetched(bytes, sig, certDir, creds.ca, node);
  await writeCache(certDir, bytes, sig);
  return { file, serial: signed.serial, crl, crlRefused };
}

/** Options for {@link ClusterWatcher}. */
export interface WatcherOptions {
  /** The signer's address. */
  addr: string;
  /** The credentials directory (also where the cache goes). */
  certDir: string;
  /** The credentials' name. */
  name: string;
  /** The node the manifest must name, if any. */
  node?: string;
  /** The serial of the manifest in force (nothing is fetched for it again). */
  applied: number;
  /** Apply a newly cached manifest; resolve true when it took effect. */
  onManifest(file: string, serial: number): Promise<boolean>;
  /** A new crl.pem was written. */
  onCrl(): void | Promise<void>;
  /** Status lines. */
  log(line: string): void;
}

/** Follows the signer's `serial` file and applies each change (see the module doc). */
export class ClusterWatcher {
  #o: WatcherOptions;
  #closed = false;
  #session: ClusterTreeSession | undefined;
  #applied: number;
  /** A serial refused here: not fetched again until the signer serves another. */
  #refused = -1;
  #run: Promise<void>;
  #wake: (() => void) | undefined;

  /** Start watching at once. */
  constructor(opts: WatcherOptions) {
    this.#o = opts;
    this.#applied = opts.applied;
    this.#run = this.#loop();
  }

  /** The serial of the manifest in force. */
  get applied(): number {
    return this.#applied;
  }

  async #loop(): Promise<void> {
    const { host, port } = hostPort(this.#o.addr);
    let delay = 100;
    let lost = "";
    while (!this.#closed) {
      try {
        const creds = await loadCredentials(this.#o.certDir, this.#o.name);
        const s = await openClusterTree(host, port, creds);
        this.#session = s;
        if (this.#closed) break;
        if (lost !== "") this.#o.log(`join: reconnected to the signer at ${this.#o.addr}`);
        lost = "";
        delay = 100;
        const f = await s.client.openPath(s.root, "serial", OREAD);
        let off = 0n;
        for (;;) {
          // The first read returns the state now; each next one waits for a change.
          const b = await f.readOnce(off, 256);
          if (b.length === 0) throw new Error("the signer ended the serial file");
          off += BigInt(b.length);
          await this.#sync(s, creds, parseSerialLine(dec.decode(b)));
        }
      } catch (e) {
        const why = (e as Error).message;
        await this.#session?.close();
        this.#session = undefined;
        if (this.#closed) break;
        if (lost === "") {
          this.#o.log(`join: lost the signer at ${this.#o.addr} (${why}): redialling`);
        }
        lost = why;
        await new Promise<void>((r) => {
          const t = setTimeout(r, delay * (0.75 + Math.random() / 2));
          this.#wake = () => {
            clearTimeout(t);
            r();
          };
        });
        delay = Math.min(delay * 2, 3000);
      }
    }
  }

  async #sync(s: ClusterTreeSession, creds: Credentials, line: SerialLine): Promise<void> {
    let got: Fetched;
    try {
      if (line.manifest !== 0 && line.manifest < this.#applied) {
        this.#o.log(
          `join: the signer serves manifest serial ${line.manifest}, below serial ${this.#applied} in force here: keeping it`,
        );
      }
      if (line.manifest <= this.#applied || line.manifest === this.#refused) {
        line = { ...line, manifest: this.#applied };
      }
      got = await syncOnce(s, creds, this.#o.certDir, this.#o.node, line, this.#applied);
    } catch (e) {
      if (e instanceof ManifestError || e instanceof Error && /^Refusing/.test(e.message)) {
        this.#o.log(
          `join: manifest serial ${line.manifest} refused, keeping serial ${this.#applied}:\n${e.message}`,
        );
        this.#refused = line.manifest;
        return;
      }
      throw e;
    }
    if (got.crlRefused !== undefined) {
      this.#o.log(`join: not taking the signer's crl.pem: ${got.crlRefused}`);
    }
    if (got.crl) {
      this.#o.log("join: new CRL from the signer");
      await this.#o.onCrl();
    }
    if (got.serial !== undefined) {
      if (await this.#o.onManifest(got.file, got.serial)) this.#applied = got.serial;
      else this.#refused = got.serial;
    }
  }

  /** Stop watching. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    await this.#session?.close();
    await this.#run.catch(() => {});
  }
}
