/**
 * Ed25519 key pairs, PEM encoding, optional passphrase encryption at rest, and
 * careful key files: written 0600 inside 0700 directories, never overwritten
 * by accident, and refused when group or others can read them.
 *
 * Error messages name files but never include key material.
 *
 * @module
 */

const ED25519 = { name: "Ed25519" } as const;

/** PEM label of a plain PKCS#8 private key. */
export const PRIVATE_KEY_LABEL = "PRIVATE KEY";
/** PEM label of a passphrase-encrypted key (Ferry's own format, see {@link encryptKeyPem}). */
export const ENCRYPTED_KEY_LABEL = "FERRY ENCRYPTED PRIVATE KEY";
const PBKDF2_ROUNDS = 310_000;

/** Raised for a key that cannot be read or used; never carries key bytes. */
export class KeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KeyError";
  }
}

/**
 * Make a new extractable Ed25519 key pair.
 *
 * @example
 * ```ts
 * import { generateKeyPair } from "./keys.ts";
 * const kp = await generateKeyPair();
 * if (kp.privateKey.algorithm.name !== "Ed25519") throw new Error("wrong algorithm");
 * ```
 */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey(ED25519, true, ["sign", "verify"]) as CryptoKeyPair;
}

/** Base64 of bytes. */
export function toBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Bytes of base64 text (whitespace ignored). */
export function fromBase64(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s.replace(/\s+/g, ""));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Wrap DER bytes as PEM with `label`. */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = toBase64(der);
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** The DER bytes of every PEM block labelled `label` in `text`. */
export function pemBlocks(text: string, label: string): Uint8Array<ArrayBuffer>[] {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, "g");
  const out: Uint8Array<ArrayBuffer>[] = [];
  for (const m of text.matchAll(re)) out.push(fromBase64(m[1] ?? ""));
  return out;
}

/** PKCS#8 PEM of a private key. */
export async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = new Uint8Array(await crypto.subtle.exportKey("pkcs8", key));
  return toPem(PRIVATE_KEY_LABEL, der);
}

/** True when `pem` is a passphrase-encrypted Ferry key. */
export function isEncryptedKey(pem: string): boolean {
  return pem.includes(`-----BEGIN ${ENCRYPTED_KEY_LABEL}-----`);
}

/**
 * Import a PKCS#8 PEM Ed25519 private key. `what` names the key in errors
 * (e.g. the file it came from).
 */
export async function importKeyPem(pem: string, what = "key"): Promise<CryptoKey> {
  if (isEncryptedKey(pem)) {
    throw new KeyError(`${what} is encrypted: set FERRY_PASSPHRASE or enter the passphrase`);
  }
  const der = pemBlocks(pem, PRIVATE_KEY_LABEL)[0];
  if (!der) throw new KeyError(`${what} holds no PKCS#8 private key`);
  try {
    return await crypto.subtle.importKey("pkcs8", der, ED25519, true, ["sign"]);
  } catch {
    throw new KeyError(`${what} is not a usable Ed25519 private key`);
  }
}

/** The public half of an Ed25519 private key. */
export async function publicKeyOf(priv: CryptoKey): Promise<CryptoKey> {
  const jwk = await crypto.subtle.exportKey("jwk", priv);
  delete jwk.d;
  jwk.key_ops = ["verify"];
  return await crypto.subtle.importKey("jwk", jwk, ED25519, true, ["verify"]);
}

async function deriveKey(pass: string, salt: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(pass),
    "PBKDF2",
    false,
    ["deriveKey"],
  );
  return await crypto.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations: PBKDF2_ROUNDS },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

/**
 * Encrypt a PKCS#8 PEM key with a passphrase: PBKDF2-SHA256 (310,000
 * rounds) derives an AES-256-GCM key; the PEM body is salt(16) ‖ iv(12) ‖
 * ciphertext under the label {@link ENCRYPTED_KEY_LABEL}.
 *
 * @example
 * ```ts
 * import { decryptKeyPem, encryptKeyPem, exportKeyPem, generateKeyPair } from "./keys.ts";
 * const pem = await exportKeyPem((await generateKeyPair()).privateKey);
 * const enc = await encryptKeyPem(pem, "correct horse");
 * if (await decryptKeyPem(enc, "correct horse") !== pem) throw new Error("round trip failed");
 * ```
 */
export async function encryptKeyPem(pem: string, passphrase: string): Promise<string> {
  if (passphrase === "") throw new KeyError("Passphrase is empty");
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const k = await deriveKey(passphrase, salt);
  const ct = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv }, k, new TextEncoder().encode(pem)),
  );
  const body = new Uint8Array(28 + ct.length);
  body.set(salt, 0);
  body.set(iv, 16);
  body.set(ct, 28);
  return toPem(ENCRYPTED_KEY_LABEL, body);
}

/** Undo {@link encryptKeyPem}; a wrong passphrase gives a clear error. */
export async function decryptKeyPem(
  pem: string,
  passphrase: string,
  what = "key",
): Promise<string> {
  const body = pemBlocks(pem, ENCRYPTED_KEY_LABEL)[0];
  if (!body || body.length < 29) throw new KeyError(`${what} is not an encrypted Ferry key`);
  const k = await deriveKey(passphrase, body.subarray(0, 16));
  try {
    const pt = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: body.subarray(16, 28) },
      k,
      body.subarray(28),
    );
    return new TextDecoder().decode(pt);
  } catch {
    throw new KeyError(`Wrong passphrase for ${what}`);
  }
}

/** Make `dir` (and parents) if missing; a directory Ferry makes is 0700. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    const st = await Deno.stat(dir);
    if (!st.isDirectory) throw new KeyError(`'${dir}' exists and is not a directory`);
    return;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.chmod(dir, 0o700);
}

/**
 * Write a secret (a key) to `path` with mode 0600, in a 0700 directory.
 * Refuses to replace an existing file unless `force`.
 */
export async function writeSecretFile(
  path: string,
  text: string,
  opts: { force?: boolean } = {},
): Promise<void> {
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
  await ensurePrivateDir(dir);
  if (!opts.force) {
    try {
      await Deno.lstat(path);
      throw new KeyError(`'${path}' already exists: use --force to replace it`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(tmp, text, { mode: 0o600, createNew: true });
  await Deno.chmod(tmp, 0o600);
  await Deno.rename(tmp, path);
}

/** Write a public file (certificate, CRL) atomically with mode 0644. */
export async function writePublicFile(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(tmp, text, { mode: 0o644, createNew: true });
  await Deno.rename(tmp, path);
}

/** Throw unless `path` is readable by its owner only. */
export function checkKeyMode(path: string, mode: number | null): void {
  if (mode !== null && (mode & 0o077) !== 0) {
    throw new KeyError(
      `key file '${path}' is readable by group or others (mode ${
        (mode & 0o777).toString(8).padStart(4, "0")
      }): run 'chmod 600 ${path}'`,
    );
  }
}

/**
 * Throw unless directory `path` (mode `mode`, from stat) is closed to group
 * and others; `what` names it in the message ("CA directory").
 */
export function checkDirMode(path: string, mode: number | null, what = "directory"): void {
  if (mode !== null && (mode & 0o077) !== 0) {
    throw new KeyError(
      `${what} '${path}' is open to group or others (mode ${
        (mode & 0o777).toString(8).padStart(4, "0")
      }): run 'chmod 700 ${path}'`,
    );
  }
}

/**
 * Make sure `path` exists as a file only its owner can read or write (0600),
 * creating it empty if missing and tightening it if it was looser: for files
 * that a library fills in, such as a database.
 */
export function ensureSecretFileSync(path: string): void {
  Deno.openSync(path, { create: true, write: true, mode: 0o600 }).close();
  Deno.chmodSync(path, 0o600);
}

/** Read a key file's PEM text after checking its mode. */
export async function readKeyFile(path: string): Promise<string> {
  const st = await Deno.stat(path);
  checkKeyMode(path, st.mode);
  return await Deno.readTextFile(path);
}

/**
 * Where a passphrase comes from: FERRY_PASSPHRASE, else a prompt on the
 * terminal (echoed only if stdin is not a terminal), else an error.
 */
export function askPassphrase(what: string): string {
  const env = Deno.env.get("FERRY_PASSPHRASE");
  if (env !== undefined && env !== "") return env;
  if (!Deno.stdin.isTerminal()) {
    throw new KeyError(`${what} needs a passphrase: set FERRY_PASSPHRASE`);
  }
  const p = prompt(`Passphrase for ${what}:`);
  if (!p) throw new KeyError(`No passphrase given for ${what}`);
  return p;
}
