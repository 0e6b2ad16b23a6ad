/**
 * Ferry's own check of a peer certificate, done on every connection whatever
 * the transport (node:tls does not enforce client verification over streams
 * that are not sockets): chain to the CA, validity dates against a clock,
 * revocation, key usage and kind, and the server's name.
 *
 * @module
 */

import {
  type CertIdentity,
  type CertKind,
  ekuOf,
  identityOf,
  normSerial,
  parseCert,
  x509,
} from "./certs.ts";
import { pemBlocks } from "./keys.ts";

/** A peer was refused; `message` says why, naming the certificate but no key material. */
export class PeerRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PeerRefused";
  }
}

/** What {@link verifyPeer} checks against. */
export interface VerifyOptions {
  /** The trusted CA certificate. */
  ca: x509.X509Certificate;
  /** The clock; defaults to the real one. */
  now?: Date;
  /** Revoked serial numbers (normalised hex, see normSerial). */
  revoked?: Set<string>;
  /** The role the peer plays: a server needs serverAuth, a client clientAuth. */
  role: "client" | "server";
  /** Require this kind of certificate. */
  kind?: CertKind;
  /** For a server: the name or address it must answer to. */
  name?: string;
}

function when(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Verify a peer's certificate (DER). Returns the identity it carries, or
 * throws {@link PeerRefused} with a clear reason.
 *
 * @example
 * ```ts ignore
 * const id = await verifyPeer(der, { ca, role: "client", revoked });
 * console.log(id.name, id.kind, id.groups);
 * ```
 */
export async function verifyPeer(
  der: Uint8Array | undefined,
  opts: VerifyOptions,
): Promise<CertIdentity> {
  const role = opts.role;
  if (!der || der.length === 0) throw new PeerRefused(`${role} presented no certificate`);
  let cert: x509.X509Certificate;
  try {
    cert = parseCert(der);
  } catch {
    throw new PeerRefused(`${role} presented a certificate that cannot be parsed`);
  }
  const cn = cert.subjectName.getField("CN")[0] ?? "(no CN)";
  const who = `${role} certificate '${cn}'`;
  let sigOk = false;
  if (cert.issuer === opts.ca.subject) {
    try {
      sigOk = await cert.verify({ publicKey: opts.ca.publicKey, signatureOnly: true });
    } catch {
      sigOk = false;
    }
  }
  if (!sigOk) {
    if (cert.issuer === cert.subject) {
      throw new PeerRefused(`${who} is self-signed, not issued by this CA`);
    }
    if (cert.issuer === opts.ca.subject) {
      throw new PeerRefused(`${who} names this CA as issuer but its signature does not verify`);
    }
    throw new PeerRefused(
      `${who} is not signed by this CA (issuer '${cert.issuer}', expected '${opts.ca.subject}')`,
    );
  }
  const now = opts.now ?? new Date();
  if (now < opts.ca.notBefore || now > opts.ca.notAfter) {
    throw new PeerRefused(`the CA certificate is outside its validity period`);
  }
  if (now < cert.notBefore) {
    throw new PeerRefused(`${who} is not valid until ${when(cert.notBefore)}`);
  }
  if (now > cert.notAfter) {
    throw new PeerRefused(`${who} expired at ${when(cert.notAfter)}`);
  }
  const serial = normSerial(cert.serialNumber);
  if (opts.revoked?.has(serial)) {
    throw new PeerRefused(`${who} (serial ${serial}) has been revoked`);
  }
  let id: CertIdentity;
  try {
    id = identityOf(cert);
  } catch (e) {
    throw new PeerRefused(`${who}: ${(e as Error).message}`);
  }
  const eku = ekuOf(cert);
  if (role === "server" && (!eku.server || id.kind !== "node")) {
    throw new PeerRefused(
      `${who} is a ${id.kind} certificate without serverAuth; a server needs a node certificate`,
    );
  }
  if (role === "client" && !eku.client) {
    throw new PeerRefused(`${who} does not allow clientAuth`);
  }
  if (opts.kind && id.kind !== opts.kind) {
    throw new PeerRefused(
      `${who} is a ${id.kind} certificate where a ${opts.kind} certificate is required`,
    );
  }
  if (opts.name !== undefined) {
    const want = opts.name.replace(/^\[|\]$/g, "");
    if (want !== id.name && !id.dns.includes(want.toLowerCase()) && !id.ips.includes(want)) {
      const names = [id.name, ...id.dns, ...id.ips].map((n) => `'${n}'`).join(", ");
      throw new PeerRefused(`${who} is for ${names}, not '${want}'`);
    }
  }
  return id;
}

/**
 * The revoked serials listed in a CRL, after checking the CA signed it.
 * Throws when it did not.
 */
export async function crlSerials(crlPem: string, ca: x509.X509Certificate): Promise<Set<string>> {
  let crl: x509.X509Crl;
  try {
    const der = pemBlocks(crlPem, "X509 CRL")[0] ?? pemBlocks(crlPem, "CRL")[0];
    if (!der) throw new Error("no PEM block");
    crl = new x509.X509Crl(der);
  } catch {
    throw new Error("CRL is not a valid X.509 CRL");
  }
  let ok = false;
  try {
    ok = await crl.verify({ publicKey: ca.publicKey });
  } catch {
    ok = false;
  }
  if (!ok) throw new Error("CRL is not signed by this CA");
  return new Set(crl.entries.map((e) => normSerial(e.serialNumber)));
}
