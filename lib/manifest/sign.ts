/**
 * Signed manifests: an Ed25519 signature by the CA's key over the manifest's
 * SHA-256 and a serial number, kept beside it in FILE.sig. Nodes refuse a
 * manifest whose signature is missing, made by another key, or does not
 * match its bytes, unless started with --insecure-manifest.
 *
 * FILE.sig is text:
 *
 * ```
 * ferry-manifest-signature 2
 * ca sha256:<hex fingerprint of the CA certificate>
 * serial <decimal, from 1>
 * sha256 <hex digest of the manifest bytes>
 * ed25519 <base64 signature of the four lines above, newlines included>
 * ```
 *
 * The serial stops an older signed manifest from being put back: `ferry
 * sign` takes the next one from CADIR/manifest.serial, and every node (and
 * `ferry logon`) keeps the highest serial it has applied in its credentials
 * directory (manifest.applied, one line per CA) and refuses a lower one.
 * A version 1 signature (the manifest bytes alone, from before serials) is
 * taken as serial 0: accepted only while no serial above 0 has been applied
 * with that CA, so re-signing once with `ferry sign` closes the door on
 * every older copy.
 *
 * @module
 */

import { decryptKeyPem, fromBase64, isEncryptedKey, pemBlocks, toBase64 } from "../auth/keys.ts";
import { askPassphrase, checkDirMode, readKeyFile } from "../auth/keys.ts";
import { readCert } from "../auth/der.ts";

const MAGIC_V1 = "ferry-manifest-signature 1";
const MAGIC = "ferry-manifest-signature 2";

/** The file in a CA directory holding the last serial `ferry sign` gave. */
export const SERIAL_FILE = "manifest.serial";
/** The file in a credentials directory holding the highest serial applied, per CA. */
export const APPLIED_FILE = "manifest.applied";

/** A manifest whose signature checked out. */
export interface SignedManifest {
  /** Its bytes, read once: what was checked is what is used. */
  bytes: Uint8Array;
  /** The serial its signature covers (0 for a version 1 signature, which has none). */
  serial: number;
  /** The signing CA as "sha256:HEX". */
  ca: string;
}

/** The bytes a version 2 signature is made over. */
function signedText(ca: string, serial: number, digest: string): string {
  return `${MAGIC}\nca ${ca}\nserial ${serial}\nsha256 ${digest}\n`;
}

/** A manifest's signature did not check out; the message says why. */
export class SignatureError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SignatureError";
  }
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

async function sha256(b: Uint8Array): Promise<string> {
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>)));
}

/** The 32-byte Ed25519 seed inside a PKCS#8 PEM private key. */
function seedOf(keyPem: string, what: string): Uint8Array {
  const der = pemBlocks(keyPem, "PRIVATE KEY")[0];
  // PKCS#8 for Ed25519 is 48 bytes: a fixed prefix, then OCTET STRING(32).
  if (!der || der.length !== 48 || der[14] !== 0x04 || der[15] !== 0x20) {
    throw new SignatureError(`${what} is not an Ed25519 private key`);
  }
  return der.subarray(16);
}

// Certificates are read with the small DER reader, and signatures checked
// with WebCrypto: loading the X.509 library costs every logon ~100 ms.

/** The raw 32-byte Ed25519 public key of a certificate. */
function publicKeyOfCert(certPem: string, what: string): Uint8Array {
  let cert;
  try {
    cert = readCert(certPem);
  } catch {
    throw new SignatureError(`${what} is not a valid X.509 certificate`);
  }
  if (cert.publicKey.length !== 32) {
    throw new SignatureError(`${what} does not hold an Ed25519 key`);
  }
  return cert.publicKey;
}

/** The SHA-256 fingerprint of a certificate's DER, in hex. */
async function certFingerprint(certPem: string, what: string): Promise<string> {
  let der: Uint8Array;
  try {
    der = readCert(certPem).der;
  } catch {
    throw new SignatureError(`${what} is not a valid X.509 certificate`);
  }
  return hex(new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(der))));
}

/**
 * Sign `bytes` as serial `serial` with the CA key (PKCS#8 PEM) whose
 * certificate is `caCertPem`; returns the text of the .sig file.
 *
 * @example
 * ```ts ignore
 * const sig = await signManifest(bytes, await Deno.readTextFile("ca.key"), await Deno.readTextFile("ca.pem"), 7);
 * await Deno.writeTextFile("cluster.toml.sig", sig);
 * ```
 */
export async function signManifest(
  bytes: Uint8Array,
  caKeyPem: string,
  caCertPem: string,
  serial: number,
): Promise<string> {
  if (!Number.isSafeInteger(serial) || serial < 1) {
    throw new SignatureError(`Bad manifest serial '${serial}': expected a whole number from 1`);
  }
  const seed = seedOf(caKeyPem, "the CA key");
  // Loaded only to sign: checking a signature (every logon) uses WebCrypto.
  const ed = await import("@noble/ed25519");
  const pub = await ed.getPublicKeyAsync(seed);
  const certPub = publicKeyOfCert(caCertPem, "the CA certificate");
  if (hex(pub) !== hex(certPub)) {
    throw new SignatureError("The CA key does not match the CA certificate");
  }
  const fp = await certFingerprint(caCertPem, "the CA certificate");
  const head = signedText(`sha256:${fp}`, serial, await sha256(bytes));
  const sig = await ed.signAsync(new TextEncoder().encode(head), seed);
  return `${head}ed25519 ${toBase64(sig)}\n`;
}

/**
 * Check that `sigText` is the CA's signature of exactly `bytes` and return
 * the serial it covers (0 for a version 1 signature). Throws a
 * {@link SignatureError} saying what is wrong: malformed, signed by another
 * CA, or the manifest altered since it was signed.
 */
export async function verifyManifest(
  bytes: Uint8Array,
  sigText: string,
  caCertPem: string,
): Promise<number> {
  const fields = new Map<string, string>();
  const lines = sigText.trim().split("\n");
  if (lines[0] !== MAGIC && lines[0] !== MAGIC_V1) {
    throw new SignatureError(`Not a Ferry manifest signature (first line '${lines[0] ?? ""}')`);
  }
  const v1 = lines[0] === MAGIC_V1;
  for (const l of lines.slice(1)) {
    const sp = l.indexOf(" ");
    if (sp > 0) fields.set(l.slice(0, sp), l.slice(sp + 1).trim());
  }
  const fp = await certFingerprint(caCertPem, "the CA certificate");
  const ca = fields.get("ca");
  if (ca !== `sha256:${fp}`) {
    throw new SignatureError(
      `The manifest was signed by another CA ('${ca ?? "none"}', this node trusts 'sha256:${fp}')`,
    );
  }
  let serial = 0;
  if (!v1) {
    const text = fields.get("serial") ?? "";
    serial = /^[1-9][0-9]{0,15}$/.test(text) ? Number(text) : 0;
    if (!Number.isSafeInteger(serial) || serial < 1) {
      throw new SignatureError(`The signature file holds no readable serial line ('${text}')`);
    }
  }
  const sigB64 = fields.get("ed25519");
  let sig: Uint8Array;
  try {
    sig = fromBase64(sigB64 ?? "");
  } catch {
    throw new SignatureError("The signature file holds no readable ed25519 line");
  }
  if (sig.length !== 64) {
    throw new SignatureError("The signature file holds no readable ed25519 line");
  }
  const pub = publicKeyOfCert(caCertPem, "the CA certificate");
  const digest = await sha256(bytes);
  // Version 2 signs the header (serial and digest); version 1 the bytes.
  const signed = v1
    ? bytes
    : new TextEncoder().encode(signedText(ca, serial, fields.get("sha256") ?? ""));
  let ok = false;
  try {
    const key = await crypto.subtle.importKey("raw", new Uint8Array(pub), "Ed25519", false, [
      "verify",
    ]);
    ok = await crypto.subtle.verify("Ed25519", key, new Uint8Array(sig), new Uint8Array(signed));
  } catch {
    ok = false;
  }
  const altered = fields.get("sha256") !== digest;
  if (!ok) {
    throw new SignatureError(
      v1 && altered
        ? "The manifest was altered after it was signed (its SHA-256 no longer matches)"
        : "The manifest's signature is not valid",
    );
  }
  if (altered) {
    throw new SignatureError(
      "The manifest was altered after it was signed (its SHA-256 no longer matches)",
    );
  }
  return serial;
}

/**
 * A {@link LoadOptions.readFile} for signed manifests: namespace files a
 * manifest names are not covered by its signature, so they are refused.
 */
export function refuseUnsigned(file: string): string {
  throw new Error(
    `'${file}' is not covered by the manifest's signature: write the namespace into the manifest, or use --insecure-manifest`,
  );
}

/** Read a CA key file, decrypting it when it is passphrase-protected. */
export async function readCaKey(path: string): Promise<string> {
  let pem = await readKeyFile(path);
  if (isEncryptedKey(pem)) pem = await decryptKeyPem(pem, askPassphrase(`'${path}'`), `'${path}'`);
  return pem;
}

/** The whole of a small open file, as text. */
async function readAll(f: Deno.FsFile): Promise<string> {
  let buf = new Uint8Array(4096);
  let n = 0;
  for (;;) {
    if (n === buf.length) {
      const more = new Uint8Array(buf.length * 2);
      more.set(buf);
      buf = more;
    }
    const got = await f.read(buf.subarray(n));
    if (got === null) break;
    n += got;
  }
  return new TextDecoder().decode(buf.subarray(0, n));
}

/**
 * Take the next manifest serial from `caDir`/manifest.serial (1 when it is
 * missing), under a lock so two signers never share one. The serial is
 * spent before the signature is written: a failed signing skips a number,
 * never repeats one.
 */
export async function nextSerial(caDir: string): Promise<number> {
  const path = `${caDir}/${SERIAL_FILE}`;
  const f = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  try {
    await f.lock(true);
    const text = (await readAll(f)).trim();
    if (text !== "" && !/^[0-9]{1,15}$/.test(text)) {
      throw new SignatureError(
        `'${path}' does not hold a serial number ('${
          text.slice(0, 20)
        }'): put back the last serial 'ferry sign' printed`,
      );
    }
    const next = (text === "" ? 0 : Number(text)) + 1;
    await f.truncate(0);
    await f.seek(0, Deno.SeekMode.Start);
    await f.write(new TextEncoder().encode(`${next}\n`));
    await f.syncData();
    return next;
  } finally {
    f.close();
  }
}

/**
 * Sign manifest `file` with the CA in `caDir` (ca.key, ca.pem) under the
 * next serial, writing `file`.sig; returns the .sig path and the serial.
 */
export async function signFile(
  file: string,
  caDir: string,
): Promise<{ path: string; serial: number }> {
  const bytes = await Deno.readFile(file);
  checkDirMode(caDir, (await Deno.stat(caDir)).mode, "CA directory");
  const key = await readCaKey(`${caDir}/ca.key`);
  const cert = await Deno.readTextFile(`${caDir}/ca.pem`);
  const serial = await nextSerial(caDir);
  const path = `${file}.sig`;
  // Replaced whole, so a node polling for changes never reads half a signature.
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(tmp, await signManifest(bytes, key, cert, serial));
  await Deno.rename(tmp, path);
  return { path, serial };
}

/**
 * Check `file` against `file`.sig with the CA certificate `caCertPem`;
 * returns the verified bytes with the serial and CA the signature names.
 */
export async function readSigned(file: string, caCertPem: string): Promise<SignedManifest> {
  const bytes = await Deno.readFile(file);
  let sig: string;
  try {
    sig = await Deno.readTextFile(`${file}.sig`);
  } catch {
    throw new SignatureError(
      `The manifest '${file}' is not signed (no '${file}.sig'): sign it with 'ferry sign ${file}' or start with --insecure-manifest`,
    );
  }
  try {
    const serial = await verifyManifest(bytes, sig, caCertPem);
    return {
      bytes,
      serial,
      ca: `sha256:${await certFingerprint(caCertPem, "the CA certificate")}`,
    };
  } catch (e) {
    throw new SignatureError(`Refusing manifest '${file}': ${(e as Error).message}`);
  }
}

/**
 * Check `file` against `file`.sig with the CA certificate `caCertPem`; returns
 * the verified bytes (read once, so what was checked is what is used).
 */
export async function readVerified(file: string, caCertPem: string): Promise<Uint8Array> {
  return (await readSigned(file, caCertPem)).bytes;
}

/** A signed manifest older than one already applied. */
export class RollbackError extends SignatureError {
  constructor(message: string) {
    super(message);
    this.name = "RollbackError";
  }
}

function parseApplied(path: string, text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const m = line.match(/^(sha256:[0-9a-f]{64}) ([0-9]{1,15})$/);
    if (!m) {
      throw new SignatureError(
        `'${path}' is damaged (line '${
          line.slice(0, 40)
        }'): it should hold 'sha256:HEX SERIAL' lines; restore it, or remove it only if the manifest in place is known good`,
      );
    }
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/**
 * The highest manifest serial applied with CA `ca` ("sha256:HEX"), as kept
 * in `dir`/manifest.applied; 0 when none was.
 */
export async function appliedSerial(dir: string, ca: string): Promise<number> {
  const path = `${dir}/${APPLIED_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
  return parseApplied(path, text).get(ca) ?? 0;
}

/**
 * Refuse `s` (read from `file`) when a higher serial has been applied with
 * its CA, as kept in `dir`; the message names both serials.
 */
export async function checkSerial(s: SignedManifest, file: string, dir: string): Promise<void> {
  const high = await appliedSerial(dir, s.ca);
  if (s.serial >= high) return;
  const what = s.serial === 0
    ? "its signature has no serial (signed before serials, so taken as serial 0), which is"
    : `its serial ${s.serial} is`;
  throw new RollbackError(
    `Refusing manifest '${file}': ${what} lower than serial ${high}, already applied here ('${dir}/${APPLIED_FILE}'). Was an older signed copy put back? Sign the current manifest with 'ferry sign' and put that in place`,
  );
}

/**
 * Remember in `dir`/manifest.applied that `s` was applied, unless a higher
 * serial already was. The file is rewritten in place under a lock, so two
 * processes sharing `dir` never lower it.
 */
export async function recordSerial(s: SignedManifest, dir: string): Promise<void> {
  const path = `${dir}/${APPLIED_FILE}`;
  const f = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  try {
    await f.lock(true);
    const map = parseApplied(path, await readAll(f));
    if ((map.get(s.ca) ?? -1) >= s.serial) return;
    map.set(s.ca, s.serial);
    const text = [...map].map(([ca, n]) => `${ca} ${n}\n`).join("");
    await f.truncate(0);
    await f.seek(0, Deno.SeekMode.Start);
    const out = new TextEncoder().encode(text);
    for (let off = 0; off < out.length;) off += await f.write(out.subarray(off));
    await f.syncData();
  } finally {
    f.close();
  }
}
