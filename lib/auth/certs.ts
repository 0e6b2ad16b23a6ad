/**
 * X.509 certificates for Ferry: an Ed25519 CA, node and user leaf
 * certificates, CSRs and CRLs, and reading a verified identity back out.
 *
 * How a certificate says who and what it is:
 * - the identity is the subject CN (`CN=alice`);
 * - the kind is a SAN URI `ferry:user/NAME` or `ferry:node/NAME`, mirrored in
 *   the subject as `OU=user` / `OU=node` for people reading `openssl x509 -text`;
 * - each group is a SAN URI `ferry:group/NAME`;
 * - node certificates carry extended key usage serverAuth + clientAuth,
 *   user certificates clientAuth only; both have keyUsage digitalSignature.
 *
 * @module
 */

import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { importKeyPem, pemBlocks, publicKeyOf, toPem } from "./keys.ts";

x509.cryptoProvider.set(crypto);

export { x509 };

/** What a certificate is for. */
export type CertKind = "user" | "node";

const ED25519 = { name: "Ed25519" } as const;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** The identity a verified certificate carries. */
export interface CertIdentity {
  /** Subject CN. */
  name: string;
  kind: CertKind;
  groups: string[];
  /** Serial number, lowercase hex without leading zeros. */
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** DNS names and IP addresses from the SAN. */
  dns: string[];
  ips: string[];
}

/** Throw unless `name` is usable as an identity, group or file name. */
export function checkName(name: string, what = "name"): void {
  if (!NAME_RE.test(name) || name === "ca" || name === "crl") {
    throw new Error(
      `Invalid ${what} '${name}': use 1-63 letters, digits, '.', '_' or '-', not starting with a punctuation mark, and not 'ca' or 'crl'`,
    );
  }
}

/** Normalise a serial number: lowercase hex, no leading zeros. */
export function normSerial(s: string): string {
  const t = s.toLowerCase().replace(/[^0-9a-f]/g, "").replace(/^0+/, "");
  return t === "" ? "0" : t;
}

/** A fresh random positive 128-bit serial number, as hex. */
export function randomSerial(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0]! & 0x7f) | 0x10;
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** Parse a duration like "24h", "10m", "30d", "90s" into milliseconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(s.trim());
  if (!m) throw new Error(`Invalid duration '${s}': use a number and a unit, e.g. 24h, 10m, 30d`);
  const n = Number(m[1]);
  const unit = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as "ms"];
  const ms = n * unit;
  if (!(ms > 0)) throw new Error(`Invalid duration '${s}': must be positive`);
  return ms;
}

/** Parse the first certificate in PEM text (or DER bytes). */
export function parseCert(
  pemOrDer: string | Uint8Array,
  what = "certificate",
): x509.X509Certificate {
  try {
    if (typeof pemOrDer === "string") {
      const der = pemBlocks(pemOrDer, "CERTIFICATE")[0];
      if (!der) throw new Error("no PEM block");
      return new x509.X509Certificate(der);
    }
    return new x509.X509Certificate(new Uint8Array(pemOrDer));
  } catch {
    throw new Error(`${what} is not a valid X.509 certificate`);
  }
}

/** SHA-256 fingerprint of a certificate (hex). */
export async function fingerprint(cert: x509.X509Certificate): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", cert.rawData));
  return [...h].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** Make a self-signed CA certificate for `name` valid for `ttlMs`. */
export async function createCaCert(
  name: string,
  keys: CryptoKeyPair,
  opts: { ttlMs?: number; now?: Date } = {},
): Promise<x509.X509Certificate> {
  const now = opts.now ?? new Date();
  return await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${name}, OU=ca, O=Ferry`,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (opts.ttlMs ?? 10 * 365 * 86400e3)),
    signingAlgorithm: ED25519,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
}

/**
 * How far before issue a leaf's notBefore is set, to allow for clock skew:
 * a minute, or a tenth of the lifetime for certificates shorter than ten
 * minutes (so renewal at two thirds still falls after issue).
 */
export function backdateFor(ttlMs: number): number {
  return Math.min(60_000, ttlMs / 10);
}

/** The lifetime a leaf was issued with, undoing {@link backdateFor}. */
export function ttlOf(notBefore: Date, notAfter: Date): number {
  const total = notAfter.getTime() - notBefore.getTime();
  return total >= 660_000 ? total - 60_000 : total / 1.1;
}

/** What to put in a leaf certificate. */
export interface LeafSpec {
  name: string;
  kind: CertKind;
  groups?: string[];
  /** Extra DNS names or IP addresses. */
  sans?: string[];
  ttlMs: number;
  /** Defaults to a fresh random serial. */
  serial?: string;
  now?: Date;
}

function isIp(s: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(s) || (s.includes(":") && /^[0-9a-fA-F:.]+$/.test(s));
}

/**
 * A subject alternative name as it goes into a certificate: an IP address
 * (brackets dropped) or a DNS name. Throws for anything else.
 *
 * @example
 * ```ts
 * import { sanOf } from "./certs.ts";
 * if (sanOf("[::1]").type !== "ip" || sanOf("files.example").type !== "dns") throw new Error();
 * ```
 */
export function sanOf(s: string): { type: "ip" | "dns"; value: string } {
  const bare = s.replace(/^\[(.*)\]$/, "$1");
  if (isIp(bare)) return { type: "ip", value: bare };
  if (/^[A-Za-z0-9*-]+(\.[A-Za-z0-9-]+)*$/.test(s)) return { type: "dns", value: s.toLowerCase() };
  throw new Error(`Invalid --san '${s}': give a DNS name or an IP address`);
}

/** Issue a leaf certificate for `publicKey`, signed by the CA. */
export async function issueLeaf(
  ca: { cert: x509.X509Certificate; key: CryptoKey },
  publicKey: CryptoKey,
  spec: LeafSpec,
): Promise<x509.X509Certificate> {
  checkName(spec.name);
  for (const g of spec.groups ?? []) checkName(g, "group name");
  const now = spec.now ?? new Date();
  const sans: x509.JsonGeneralName[] = [];
  if (spec.kind === "node" && /^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(spec.name)) {
    sans.push({ type: "dns", value: spec.name });
  }
  for (const s of spec.sans ?? []) {
    const n = sanOf(s);
    if (!sans.some((x) => x.type === n.type && x.value === n.value)) sans.push(n);
  }
  sans.push({ type: "url", value: `ferry:${spec.kind}/${spec.name}` });
  for (const g of spec.groups ?? []) sans.push({ type: "url", value: `ferry:group/${g}` });
  const eku = spec.kind === "node"
    ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
    : [x509.ExtendedKeyUsage.clientAuth];
  const notBefore = new Date(now.getTime() - backdateFor(spec.ttlMs));
  let notAfter = new Date(now.getTime() + spec.ttlMs);
  if (notAfter > ca.cert.notAfter) notAfter = ca.cert.notAfter;
  return await x509.X509CertificateGenerator.create({
    serialNumber: spec.serial ?? randomSerial(),
    subject: `CN=${spec.name}, OU=${spec.kind}, O=Ferry`,
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    signingAlgorithm: ED25519,
    publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(eku, false),
      new x509.SubjectAlternativeNameExtension(sans, false),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert, false),
    ],
  });
}

/**
 * Read the Ferry identity out of a certificate (no verification here: see
 * verify.ts). Throws when the certificate carries no Ferry kind.
 */
export function identityOf(cert: x509.X509Certificate): CertIdentity {
  const cn = cert.subjectName.getField("CN")[0];
  if (!cn) throw new Error("certificate has no subject CN");
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const dns: string[] = [];
  const ips: string[] = [];
  const groups: string[] = [];
  let kind: CertKind | undefined;
  for (const n of san?.names.toJSON() ?? []) {
    if (n.type === "dns") dns.push(n.value);
    else if (n.type === "ip") ips.push(n.value);
    else if (n.type === "url") {
      const m = /^ferry:(user|node|group)\/(.+)$/.exec(n.value);
      if (!m) continue;
      if (m[1] === "group") groups.push(m[2]!);
      else if (m[2] === cn) kind = m[1] as CertKind;
    }
  }
  if (!kind) throw new Error(`certificate for '${cn}' is not a Ferry user or node certificate`);
  return {
    name: cn,
    kind,
    groups,
    serial: normSerial(cert.serialNumber),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    dns,
    ips,
  };
}

/**
 * Make a PKCS#10 request for `name`, signed by the requester's key, asking
 * for the extra names or addresses `sans` (which only the CA grants).
 */
export async function createCsr(
  name: string,
  keys: CryptoKeyPair,
  sans: string[] = [],
): Promise<string> {
  checkName(name);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${name}`,
    keys,
    signingAlgorithm: ED25519,
    extensions: sans.length > 0
      ? [new x509.SubjectAlternativeNameExtension(sans.map(sanOf), false)]
      : [],
  });
  return csr.toString("pem");
}

/** The names and addresses a PKCS#10 request asks for (IP and DNS SANs). */
export function csrSans(pem: string): string[] {
  const csr = new x509.Pkcs10CertificateRequest(pem);
  const raw = csr.getExtension("2.5.29.17");
  if (!raw) return [];
  const ext = new x509.SubjectAlternativeNameExtension(raw.rawData);
  return ext.names.toJSON()
    .filter((n) => n.type === "ip" || n.type === "dns")
    .map((n) => n.value);
}

/**
 * Parse and check a PKCS#10 request: its self-signature must verify and its
 * CN must be `expectName`. Returns the requester's public key.
 */
export async function checkCsr(pem: string, expectName: string): Promise<CryptoKey> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(pem);
  } catch {
    throw new Error("request is not a valid PKCS#10 certificate request");
  }
  if (csr.signatureAlgorithm.name !== "Ed25519") {
    throw new Error("request must use an Ed25519 key");
  }
  let ok = false;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) throw new Error("request signature does not verify (tampered request?)");
  const cn = csr.subjectName.getField("CN")[0];
  if (cn !== expectName) {
    throw new Error(`request is for '${cn ?? ""}' but the token is for '${expectName}'`);
  }
  return await csr.publicKey.export(ED25519, ["verify"]);
}

/** One revoked certificate in a CRL. */
export interface RevokedEntry {
  serial: string;
  date: Date;
}

/** PEM of a CRL, with the "X509 CRL" label openssl expects. */
export function crlToPem(crl: x509.X509Crl): string {
  return toPem("X509 CRL", new Uint8Array(crl.rawData));
}

/** Make a CRL signed by the CA listing `revoked`. */
export async function createCrl(
  ca: { cert: x509.X509Certificate; key: CryptoKey },
  revoked: RevokedEntry[],
  opts: { now?: Date; nextUpdateMs?: number } = {},
): Promise<x509.X509Crl> {
  const now = opts.now ?? new Date();
  return await x509.X509CrlGenerator.create({
    issuer: ca.cert.subject,
    thisUpdate: now,
    nextUpdate: new Date(now.getTime() + (opts.nextUpdateMs ?? 7 * 86400e3)),
    entries: revoked.map((r) => ({ serialNumber: r.serial, revocationDate: r.date })),
    signingAlgorithm: ED25519,
    signingKey: ca.key,
  });
}

/** True when public key `a` is the key certified by `cert`. */
export async function sameKey(a: CryptoKey, cert: x509.X509Certificate): Promise<boolean> {
  const ra = new Uint8Array(await crypto.subtle.exportKey("raw", a));
  const rb = new Uint8Array(
    await crypto.subtle.exportKey(
      "raw",
      await cert.publicKey.export({ name: "Ed25519" }, ["verify"]),
    ),
  );
  return ra.length === rb.length && ra.every((x, i) => x === rb[i]);
}

/** True when the private key in `keyPem` belongs to the certificate in `certPem`. */
export async function keyMatchesCert(keyPem: string, certPem: string): Promise<boolean> {
  try {
    return await sameKey(await publicKeyOf(await importKeyPem(keyPem)), parseCert(certPem));
  } catch {
    return false;
  }
}
