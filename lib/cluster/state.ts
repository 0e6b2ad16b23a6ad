/**
 * The cluster's state as the signer serves it: the CA certificate, the
 * CA's current CRL (CADIR/crl.pem, which `ferry ca revoke` rewrites) and
 * the published manifest with its signature (CADIR/published/, which
 * `ferry sign` fills), plus one `serial` line that changes whenever any of
 * them does:
 *
 * ```
 * manifest 7 crl 3f9c2a01d4e5b6a7
 * ```
 *
 * (the manifest's signed serial, 0 before one is published, and the first
 * 16 hex digits of the CRL's SHA-256). The signer follows the CA directory
 * with inotify (and a slow re-read as a backstop), so what `ferry sign` or
 * `ferry ca revoke` writes is served at once, without a restart. A
 * published manifest is served only when its signature checks out and its
 * serial is above the one already served: a half-written or older copy is
 * logged and ignored.
 *
 * @module
 */

import { verifyManifest } from "../manifest/sign.ts";
import { parseCert } from "../auth/certs.ts";
import { crlSerials } from "../auth/verify.ts";

/** The directory inside the CA directory that `ferry sign` publishes into. */
export const PUBLISHED_DIR = "published";
/** The published manifest's name there (and in the signer's tree). */
export const MANIFEST_NAME = "manifest.toml";

const enc = new TextEncoder();
/** How long a published pair must stay refused before the refusal is logged. */
const SETTLE_MS = 250;

async function sha256Hex(b: Uint8Array): Promise<string> {
  const d = new Uint8Array(
    await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>),
  );
  return [...d].map((x) => x.toString(16).padStart(2, "0")).join("");
}

async function replaceFile(path: string, data: Uint8Array, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeFile(tmp, data, { mode, createNew: true });
  await Deno.rename(tmp, path);
}

/**
 * Publish manifest `file` and its signature `file`.sig into `caDir`, for
 * the signer serving that CA directory. The manifest is replaced first and
 * the signature last, each whole: the signer serves the pair only once the
 * signature matches the bytes, so it never serves half an update.
 */
export async function publishManifest(caDir: string, file: string): Promise<string> {
  const bytes = await Deno.readFile(file);
  const sig = await Deno.readFile(`${file}.sig`);
  const dir = `${caDir}/${PUBLISHED_DIR}`;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await replaceFile(`${dir}/${MANIFEST_NAME}`, bytes, 0o600);
  await replaceFile(`${dir}/${MANIFEST_NAME}.sig`, sig, 0o600);
  return dir;
}

/** One consistent view of what the signer serves. */
export interface ClusterSnapshot {
  /** The CA certificate (PEM). */
  ca: string;
  /** The CA's CRL (PEM); empty when the CA directory has none. */
  crl: string;
  /** The published manifest's bytes, if one is published. */
  manifest?: Uint8Array;
  /** Its signature file's text. */
  sig?: string;
  /** The manifest's signed serial (0 when none is published). */
  serial: number;
  /** The `serial` file's line, newline included. */
  line: string;
}

/** Options for {@link ClusterState.open}. */
export interface ClusterStateOptions {
  /** Told what is served and what is refused. */
  log?: (msg: string) => void;
  /** Re-read the CA directory this often even without a change notice (default 2000 ms). */
  pollMs?: number;
}

/** The signer's view of its CA directory, kept current. */
export class ClusterState {
  #dir: string;
  #log: (msg: string) => void;
  #snap: ClusterSnapshot;
  #waiters = new Set<() => void>();
  #watcher: Deno.FsWatcher | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #refreshing: Promise<void> | undefined;
  #again = false;
  #caCert: ReturnType<typeof parseCert>;
  #refused = { key: "", at: 0 };
  #loggedRefused = "";

  private constructor(dir: string, ca: string, opts: ClusterStateOptions) {
    this.#dir = dir;
    this.#log = opts.log ?? ((m) => console.error(`signer: ${m}`));
    this.#caCert = parseCert(ca, `'${dir}/ca.pem'`);
    this.#snap = { ca, crl: "", serial: 0, line: "" };
  }

  /** Read `caDir` and keep following it. */
  static async open(caDir: string, opts: ClusterStateOptions = {}): Promise<ClusterState> {
    const ca = await Deno.readTextFile(`${caDir}/ca.pem`);
    const s = new ClusterState(caDir, ca, opts);
    await s.refresh();
    try {
      s.#watcher = Deno.watchFs(caDir, { recursive: true });
      (async () => {
        for await (const ev of s.#watcher!) {
          if (ev.paths.some((p) => !p.includes(".tmp-") && !p.endsWith("ca.db-journal"))) {
            void s.refresh();
          }
        }
      })().catch(() => {});
    } catch { /* no inotify here: the poll below still finds changes */ }
    const ms = opts.pollMs ?? 2000;
    if (ms > 0) s.#timer = setInterval(() => void s.refresh(), ms);
    return s;
  }

  /** What is served now. */
  get current(): ClusterSnapshot {
    return this.#snap;
  }

  /**
   * Resolves at the next change of the served state; rejects with
   * `signal`'s reason's message ("interrupted") when it aborts first.
   */
  changed(signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(new Error("interrupted"));
      const done = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        this.#waiters.delete(done);
        reject(new Error("interrupted"));
      };
      this.#waiters.add(done);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Number of readers waiting for a change (the watchers of the cluster). */
  get waiting(): number {
    return this.#waiters.size;
  }

  /** Re-read the CA directory now; concurrent calls coalesce into one more pass. */
  refresh(): Promise<void> {
    if (this.#refreshing) {
      this.#again = true;
      return this.#refreshing;
    }
    const run = async (): Promise<void> => {
      do {
        this.#again = false;
        await this.#read().catch((e) => this.#log(`cannot read '${this.#dir}': ${e.message}`));
      } while (this.#again);
    };
    this.#refreshing = run().finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  async #read(): Promise<void> {
    const old = this.#snap;
    let crl = old.crl;
    try {
      const text = await Deno.readTextFile(`${this.#dir}/crl.pem`);
      if (text !== old.crl) {
        await crlSerials(text, this.#caCert); // only a CRL the CA signed, read whole
        crl = text;
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        this.#log(`keeping the CRL served: '${this.#dir}/crl.pem': ${(e as Error).message}`);
      }
    }
    let manifest = old.manifest;
    let sig = old.sig;
    let serial = old.serial;
    const pub = `${this.#dir}/${PUBLISHED_DIR}/${MANIFEST_NAME}`;
    try {
      const bytes = await Deno.readFile(pub);
      const text = await Deno.readTextFile(`${pub}.sig`);
      if (text !== old.sig || !sameBytes(bytes, old.manifest)) {
        const key = `${text}\n${await sha256Hex(bytes)}`;
        try {
          const n = await verifyManifest(bytes, text, old.ca);
          if (old.manifest !== undefined && n <= old.serial) {
            throw new Error(
              `its serial ${n} is not above serial ${old.serial}, served now: sign the manifest again with 'ferry sign'`,
            );
          }
          manifest = bytes;
          sig = text;
          serial = n;
          this.#log(`serving manifest serial ${n}`);
        } catch (e) {
          // A pair caught between its two writes fails for a moment: say so
          // only when the same pair is still refused a little later.
          const at = Date.now();
          if (key !== this.#refused.key) this.#refused = { key, at };
          if (at - this.#refused.at < SETTLE_MS) {
            setTimeout(() => void this.refresh(), SETTLE_MS);
          } else if (key !== this.#loggedRefused) {
            this.#loggedRefused = key;
            this.#log(`not serving the manifest in '${pub}': ${(e as Error).message}`);
          }
        }
      }
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    const crlTag = crl === "" ? "none" : (await sha256Hex(enc.encode(crl))).slice(0, 16);
    const line = `manifest ${serial} crl ${crlTag}\n`;
    if (line === old.line && crl === old.crl && sig === old.sig) return;
    if (crl !== old.crl && old.line !== "") this.#log(`serving a new CRL (${crlTag})`);
    this.#snap = { ca: old.ca, crl, manifest, sig, serial, line };
    const ws = [...this.#waiters];
    this.#waiters.clear();
    for (const w of ws) w();
  }

  /** Stop following the CA directory; readers waiting for a change are released. */
  close(): void {
    clearInterval(this.#timer);
    try {
      this.#watcher?.close();
    } catch { /* already closed */ }
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array | undefined): boolean {
  if (!b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
