/**
 * Ferry's own check of a peer certificate, done on every connection whatever
 * the transport (node:tls does not enforce client verification over streams
 * that are not sockets): chain to the CA, validity dates against a clock,
 * revocation, key usage and kind, and the server's name.
 *
 * @module
 */

// Only types come from certs.ts here: verifying a peer reads certificates
// with der.ts, so a dialling client never loads the X.509 library.
import type { CertIdentity, CertKind, x509 } from "./certs.ts";
import {
  type CertFields,
  type CrlFields,
  ferryKind,
  issuedBy,
  readCert,
  readCrl,
  signedBy,
} from "./der.ts";

const OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

/** A peer was refused; `message` says why, naming the certificate but no key material. */
export class PeerRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PeerRefusedError";
  }
}

/** What {@link verifyPeer} checks against. */
export interface VerifyOptions {
  /** The trusted CA certificate (parsed, DER, or fields read by der.ts). */
  ca: x509.X509Certificate | Uint8Array | CertFields;
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

function caFields(ca: VerifyOptions["ca"]): CertFields {
  if (ca instanceof Uint8Array) return readCert(ca);
  if ("issuerDer" in ca) return ca;
  return readCert(new Uint8Array(ca.rawData));
}

function when(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * Verify a peer's certificate (DER). Returns the identity it carries, or
 * throws {@link PeerRefusedError} with a clear reason.
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
  if (!der || der.length === 0) throw new PeerRefusedError(`${role} presented no certificate`);
  let cert: CertFields;
  try {
    cert = readCert(der);
  } catch {
    throw new PeerRefusedError(`${role} presented a certificate that cannot be parsed`);
  }
  const ca = caFields(opts.ca);
  const cn = cert.cn ?? "(no CN)";
  const who = `${role} certificate '${cn}'`;
  let sigOk = false;
  if (issuedBy(cert, ca)) sigOk = await signedBy(cert, ca);
  if (!sigOk) {
    if (cert.issuer === cert.subject) {
      throw new PeerRefusedError(`${who} is self-signed, not issued by this CA`);
    }
    if (issuedBy(cert, ca)) {
      throw new PeerRefusedError(
        `${who} names this CA as issuer but its signature does not verify`,
      );
    }
    throw new PeerRefusedError(
      `${who} is not signed by this CA (issuer '${cert.issuer}', expected '${ca.subject}')`,
    );
  }
  const now = opts.now ?? new Date();
  if (now < ca.notBefore || now > ca.notAfter) {
    throw new PeerRefusedError(`the CA certificate is outside its validity period`);
  }
  if (now < cert.notBefore) {
    throw new PeerRefusedError(`${who} is not valid until ${when(cert.notBefore)}`);
  }
  if (now > cert.notAfter) {
    throw new PeerRefusedError(`${who} expired at ${when(cert.notAfter)}`);
  }
  const serial = cert.serial;
  if (opts.revoked?.has(serial)) {
    throw new PeerRefusedError(`${who} (serial ${serial}) has been revoked`);
  }
  if (cert.cn === undefined) throw new PeerRefusedError(`${who}: certificate has no subject CN`);
  const fk = ferryKind(cert);
  if (!fk.kind) {
    throw new PeerRefusedError(
      `${who}: certificate for '${cn}' is not a Ferry user or node certificate`,
    );
  }
  const id: CertIdentity = {
    name: cert.cn,
    kind: fk.kind,
    groups: fk.groups,
    serial,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    dns: cert.dns,
    ips: cert.ips,
  };
  const eku = {
    server: cert.eku.includes(OID_SERVER_AUTH),
    client: cert.eku.includes(OID_CLIENT_AUTH),
  };
  if (role === "server" && (!eku.server || id.kind !== "node")) {
    throw new PeerRefusedError(
      `${who} is a ${id.kind} certificate without serverAuth; a server needs a node certificate`,
    );
  }
  if (role === "client" && !eku.client) {
    throw new PeerRefusedError(`${who} does not allow clientAuth`);
  }
  if (opts.kind && id.kind !== opts.kind) {
    throw new PeerRefusedError(
      `${who} is a ${id.kind} certificate where a ${opts.kind} certificate is required`,
    );
  }
  if (opts.name !== undefined) {
    const want = opts.name.replace(/^\[|\]$/g, "");
    if (want !== id.name && !id.dns.includes(want.toLowerCase()) && !id.ips.includes(want)) {
      // A node's CN is also its first DNS name: each name is listed once.
      const names = [...new Set([id.name, ...id.dns, ...id.ips])].map((n) => `'${n}'`).join(", ");
      throw new PeerRefusedError(`${who} is for ${names}, not '${want}'`);
    }
  }
  return id;
}

/**
 * The revoked serials listed in a CRL (PEM), after checking the CA signed
 * it. Throws when it did not. Read with der.ts, as certificates are: a
 * one-shot command with a CRL at hand never loads the X.509 library.
 */
export async function crlSerials(crlPem: string, ca: VerifyOptions["ca"]): Promise<Set<string>> {
  let crl: CrlFields;
  try {
    crl = readCrl(crlPem);
  } catch {
    throw new Error("CRL is not a valid X.509 CRL");
  }
  if (!(await signedBy(crl, caFields(ca)))) throw new Error("CRL is not signed by this CA");
  return new Set(crl.serials);
}
