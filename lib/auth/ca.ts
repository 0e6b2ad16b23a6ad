/**
 * Ferry's certificate authority (Inferno's createsignerkey and signer,
 * grown up): an Ed25519 CA key and certificate in a credentials directory,
 * issuing, listing and revoking certificates, writing the CRL, and making
 * single-use enrolment tokens.
 *
 * Files in DIR: ca.pem (CA certificate), ca.key (CA key, 0600), ca.db (the
 * record, with token hashes: 0600), crl.pem (current CRL), NAME.pem /
 * NAME.key (issued credentials), manifest.serial (the last serial `ferry
 * sign` gave a manifest). DIR itself must be closed to group and
 * others (0700): a CA in a looser directory is refused with the `chmod`
 * that fixes it.
 *
 * @module
 */

import {
  type CertKind,
  checkCsr,
  checkName,
  createCaCert,
  createCrl,
  crlToPem,
  fingerprint,
  issueLeaf,
  normSerial,
  parseCert,
  sanOf,
  type x509,
} from "./certs.ts";
import {
  checkDirMode,
  ensurePrivateDir,
  exportKeyPem,
  generateKeyPair,
  importKeyPem,
  readKeyFile,
  writePublicFile,
  writeSecretFile,
} from "./keys.ts";
import { CaStore, type IssuedRecord, type TokenGrant } from "./store.ts";
import { makeToken, parseToken, tokenId } from "./token.ts";

/** Default lifetime of issued certificates: 24 hours. */
export const DEFAULT_CERT_TTL_MS = 24 * 3600e3;
/** Default lifetime of an enrolment token: 10 minutes. */
export const DEFAULT_TOKEN_TTL_MS = 10 * 60e3;

/** Options for {@link CertificateAuthority.issue}. */
export interface IssueOptions {
  kind?: CertKind;
  groups?: string[];
  sans?: string[];
  ttlMs?: number;
  now?: Date;
  via?: string;
}

/** An issued key and certificate. */
export interface Issued {
  serial: string;
  certPem: string;
  /** PKCS#8 PEM; absent when the requester kept its own key. */
  keyPem?: string;
}

/** A CA opened from its directory. */
export class CertificateAuthority {
  private constructor(
    readonly dir: string,
    readonly cert: x509.X509Certificate,
    readonly key: CryptoKey,
    readonly store: CaStore,
  ) {}

  /** The CA certificate as PEM. */
  get certPem(): string {
    return this.cert.toString("pem") + "\n";
  }

  /**
   * Create a new CA named `name` in `dir`. Refuses to replace an existing
   * CA key unless `force`.
   */
  static async init(
    dir: string,
    name: string,
    opts: { force?: boolean; now?: Date } = {},
  ): Promise<CertificateAuthority> {
    checkName(name, "CA name");
    await ensurePrivateDir(dir);
    await checkCaDir(dir);
    if (!opts.force) {
      try {
        await Deno.lstat(`${dir}/ca.key`);
        throw new Error(`A CA key already exists in '${dir}': use --force to replace it`);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    const keys = await generateKeyPair();
    const cert = await createCaCert(name, keys, { now: opts.now });
    await writeSecretFile(`${dir}/ca.key`, await exportKeyPem(keys.privateKey), {
      force: opts.force,
    });
    await writePublicFile(`${dir}/ca.pem`, cert.toString("pem") + "\n");
    if (opts.force) {
      for (const f of ["ca.db", "crl.pem"]) {
        await Deno.remove(`${dir}/${f}`).catch(() => {});
      }
    }
    const ca = new CertificateAuthority(dir, cert, keys.privateKey, new CaStore(`${dir}/ca.db`));
    await ca.writeCrl(opts.now);
    return ca;
  }

  /** Open the CA in `dir` (needs ca.pem and ca.key). */
  static async open(dir: string): Promise<CertificateAuthority> {
    let certPem: string;
    try {
      certPem = await Deno.readTextFile(`${dir}/ca.pem`);
    } catch {
      throw new Error(`No CA in '${dir}': run 'ferry ca init NAME --dir ${dir}' first`);
    }
    await checkCaDir(dir);
    let keyPem: string;
    try {
      keyPem = await readKeyFile(`${dir}/ca.key`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new Error(`No CA key in '${dir}': this is not the CA host`);
      }
      throw e;
    }
    const cert = parseCert(certPem, `'${dir}/ca.pem'`);
    const key = await importKeyPem(keyPem, `'${dir}/ca.key'`);
    return new CertificateAuthority(dir, cert, key, new CaStore(`${dir}/ca.db`));
  }

  /** SHA-256 fingerprint of the CA certificate (hex). */
  async fingerprint(): Promise<string> {
    return await fingerprint(this.cert);
  }

  /** Sign a certificate for `publicKey` and record it. */
  async sign(name: string, publicKey: CryptoKey, opts: IssueOptions = {}): Promise<Issued> {
    const now = opts.now ?? new Date();
    const kind = opts.kind ?? "user";
    const groups = [...new Set(opts.groups ?? [])];
    const cert = await issueLeaf({ cert: this.cert, key: this.key }, publicKey, {
      name,
      kind,
      groups,
      sans: opts.sans,
      ttlMs: opts.ttlMs ?? DEFAULT_CERT_TTL_MS,
      now,
    });
    const serial = normSerial(cert.serialNumber);
    this.store.addCert({
      serial,
      name,
      kind,
      groups,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
      issuedAt: now,
      via: opts.via ?? "issue",
    });
    return { serial, certPem: cert.toString("pem") + "\n" };
  }

  /** Make a key pair and certificate for `name`. */
  async issue(name: string, opts: IssueOptions = {}): Promise<Issued & { keyPem: string }> {
    checkName(name);
    const keys = await generateKeyPair();
    const res = await this.sign(name, keys.publicKey, opts);
    return { ...res, keyPem: await exportKeyPem(keys.privateKey) };
  }

  /** Sign a PKCS#10 request whose CN must be `name`. */
  async signCsr(csrPem: string, name: string, opts: IssueOptions = {}): Promise<Issued> {
    const pub = await checkCsr(csrPem, name);
    return await this.sign(name, pub, opts);
  }

  /** Everything issued. */
  list(): IssuedRecord[] {
    return this.store.list();
  }

  /** Revoke by name or serial, rewrite the CRL, return the serials revoked. */
  async revoke(nameOrSerial: string, now = new Date()): Promise<string[]> {
    const key = /^[0-9a-fA-F:]+$/.test(nameOrSerial) && this.store.get(normSerial(nameOrSerial))
      ? normSerial(nameOrSerial)
      : nameOrSerial;
    const out = this.store.revoke(key, now);
    await this.writeCrl(now);
    return out;
  }

  /** True when `serial` has been revoked. */
  isRevoked(serial: string): boolean {
    return this.store.get(normSerial(serial))?.revokedAt !== undefined;
  }

  /** The current CRL as PEM. */
  async crlPem(now = new Date()): Promise<string> {
    const crl = await createCrl({ cert: this.cert, key: this.key }, this.store.revoked(), { now });
    return crlToPem(crl);
  }

  /** Write DIR/crl.pem and return its path. */
  async writeCrl(now = new Date()): Promise<string> {
    const path = `${this.dir}/crl.pem`;
    await writePublicFile(path, await this.crlPem(now));
    return path;
  }

  /**
   * Make a single-use enrolment token for `name`; the certificate it yields
   * carries the extra DNS names and IP addresses `sans`, and no others.
   */
  async token(
    name: string,
    opts: {
      ttlMs?: number;
      kind?: CertKind;
      groups?: string[];
      certTtlMs?: number;
      now?: Date;
      sans?: string[];
    } = {},
  ): Promise<string> {
    checkName(name);
    for (const g of opts.groups ?? []) checkName(g, "group name");
    const sans = [...new Set((opts.sans ?? []).map((s) => sanOf(s).value))];
    const now = opts.now ?? new Date();
    const expires = new Date(now.getTime() + (opts.ttlMs ?? DEFAULT_TOKEN_TTL_MS));
    const { token, secret } = makeToken(name, expires, await this.fingerprint(), sans);
    this.store.addToken(
      await tokenId(secret, sans),
      {
        name,
        kind: opts.kind ?? "node",
        groups: opts.groups ?? [],
        ttlMs: opts.certTtlMs ?? DEFAULT_CERT_TTL_MS,
      },
      expires,
      now,
    );
    return token;
  }

  /**
   * Use up `token` (once, before expiry) and return what it grants,
   * including the extra names it carries (bound to it, see tokenId).
   */
  async redeem(token: string, now = new Date()): Promise<TokenGrant & { sans: string[] }> {
    const t = parseToken(token);
    if (t.fingerprint !== await this.fingerprint()) {
      throw new Error("Enrolment token was made by a different CA");
    }
    const g = this.store.redeemToken(await tokenId(t.secret, t.sans), t.name, now);
    return { ...g, sans: t.sans };
  }

  /** Close the database. */
  close(): void {
    this.store.close();
  }
}

/**
 * Throw unless the CA directory `dir` is closed to group and others; the
 * message gives the `chmod` that fixes it.
 */
export async function checkCaDir(dir: string): Promise<void> {
  checkDirMode(dir, (await Deno.stat(dir)).mode, "CA directory");
}

/** Write issued credentials as DIR/NAME.pem and DIR/NAME.key. */
export async function writeCredentials(
  dir: string,
  name: string,
  certPem: string,
  keyPem: string,
  opts: { force?: boolean } = {},
): Promise<void> {
  await ensurePrivateDir(dir);
  await writeSecretFile(`${dir}/${name}.key`, keyPem, opts);
  await writePublicFile(`${dir}/${name}.pem`, certPem);
}
