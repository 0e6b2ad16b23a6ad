/**
 * Signed manifests: an Ed25519 signature by the CA's key over the manifest's
 * exact bytes, kept beside it in FILE.sig. Nodes refuse a manifest whose
 * signature is missing, made by another key, or does not match its bytes,
 * unless started with --insecure-manifest.
 *
 * FILE.sig is text:
 *
 * ```
 * ferry-manifest-signature 1
 * ca sha256:<hex fingerprint of the CA certificate>
 * sha256 <hex digest of the manifest bytes>
 * ed25519 <base64 signature of the manifest bytes>
 * ```
 *
 * @module
 */

import * as ed from "@noble/ed25519";
import { decryptKeyPem, fromBase64, isEncryptedKey, pemBlocks, toBase64 } from "../auth/keys.ts";
import { askPassphrase, readKeyFile } from "../auth/keys.ts";
import { fingerprint, parseCert } from "../auth/certs.ts";

const MAGIC = "ferry-manifest-signature 1";

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

/** The raw 32-byte Ed25519 public key of a certificate. */
function publicKeyOfCert(certPem: string, what: string): Uint8Array {
  const cert = parseCert(certPem, what);
  const spki = new Uint8Array(cert.publicKey.rawData);
  if (spki.length !== 44) throw new SignatureError(`${what} does not hold an Ed25519 key`);
  return spki.subarray(12);
}

/**
 * Sign `bytes` with the CA key (PKCS#8 PEM) whose certificate is `caCertPem`;
 * returns the text of the .sig file.
 *
 * @example
 * ```ts ignore
 * const sig = await signManifest(bytes, await Deno.readTextFile("ca.key"), await Deno.readTextFile("ca.pem"));
 * await Deno.writeTextFile("cluster.toml.sig", sig);
 * ```
 */
export async function signManifest(
  bytes: Uint8Array,
  caKeyPem: string,
  caCertPem: string,
): Promise<string> {
  const seed = seedOf(caKeyPem, "the CA key");
  const pub = await ed.getPublicKeyAsync(seed);
  const certPub = publicKeyOfCert(caCertPem, "the CA certificate");
  if (hex(pub) !== hex(certPub)) {
    throw new SignatureError("The CA key does not match the CA certificate");
  }
  const sig = await ed.signAsync(bytes, seed);
  const fp = await fingerprint(parseCert(caCertPem));
  return `${MAGIC}\nca sha256:${fp}\nsha256 ${await sha256(bytes)}\ned25519 ${toBase64(sig)}\n`;
}

/**
 * Check that `sigText` is the CA's signature of exactly `bytes`. Throws a
 * {@link SignatureError} saying what is wrong: malformed, signed by another
 * CA, or the manifest altered since it was signed.
 */
export async function verifyManifest(
  bytes: Uint8Array,
  sigText: string,
  caCertPem: string,
): Promise<void> {
  const fields = new Map<string, string>();
  const lines = sigText.trim().split("\n");
  if (lines[0] !== MAGIC) {
    throw new SignatureError(`Not a Ferry manifest signature (first line '${lines[0] ?? ""}')`);
  }
  for (const l of lines.slice(1)) {
    const sp = l.indexOf(" ");
    if (sp > 0) fields.set(l.slice(0, sp), l.slice(sp + 1).trim());
  }
  const fp = await fingerprint(parseCert(caCertPem, "the CA certificate"));
  const ca = fields.get("ca");
  if (ca !== `sha256:${fp}`) {
    throw new SignatureError(
      `The manifest was signed by another CA ('${ca ?? "none"}', this node trusts 'sha256:${fp}')`,
    );
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
  let ok = false;
  try {
    ok = await ed.verifyAsync(sig, bytes, pub);
  } catch {
    ok = false;
  }
  if (!ok) {
    const digest = await sha256(bytes);
    throw new SignatureError(
      fields.get("sha256") !== digest
        ? "The manifest was altered after it was signed (its SHA-256 no longer matches)"
        : "The manifest's signature is not valid",
    );
  }
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

/**
 * Sign manifest `file` with the CA in `caDir` (ca.key, ca.pem), writing
 * `file`.sig; returns the .sig path.
 */
export async function signFile(file: string, caDir: string): Promise<string> {
  const bytes = await Deno.readFile(file);
  const key = await readCaKey(`${caDir}/ca.key`);
  const cert = await Deno.readTextFile(`${caDir}/ca.pem`);
  const out = `${file}.sig`;
  await Deno.writeTextFile(out, await signManifest(bytes, key, cert));
  return out;
}

/**
 * Check `file` against `file`.sig with the CA certificate `caCertPem`; returns
 * the verified bytes (read once, so what was checked is what is used).
 */
export async function readVerified(file: string, caCertPem: string): Promise<Uint8Array> {
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
    await verifyManifest(bytes, sig, caCertPem);
  } catch (e) {
    throw new SignatureError(`Refusing manifest '${file}': ${(e as Error).message}`);
  }
  return bytes;
}
