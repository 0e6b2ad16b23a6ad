/**
 * A small DER reader for the certificates Ferry issues (Ed25519, X.509 v3):
 * just enough to verify a peer on every connection without loading a full
 * X.509 library, which costs a one-shot command more than its whole
 * network exchange; it reads CRLs for the same reason. Issuing, CSRs and
 * making CRLs stay in certs.ts.
 *
 * @module
 */

import type { CertKind } from "./certs.ts";
import { pemBlocks } from "./keys.ts";

/** One DER element: its tag and where its value lies in the buffer. */
interface Tlv {
  tag: number;
  /** Start of the whole element (tag byte). */
  start: number;
  /** Start of the value. */
  vs: number;
  /** End of the value (and of the element). */
  end: number;
}

function tlv(b: Uint8Array, off: number, limit = b.length): Tlv {
  if (off + 2 > limit) throw new Error("truncated DER element");
  const tag = b[off]!;
  if ((tag & 0x1f) === 0x1f) throw new Error("multi-byte DER tags are not supported");
  let len = b[off + 1]!;
  let vs = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || vs + n > limit) throw new Error("bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[vs + i]!;
    vs += n;
  }
  const end = vs + len;
  if (end > limit) throw new Error("truncated DER element");
  return { tag, start: off, vs, end };
}

/** The elements inside a constructed element. */
function children(b: Uint8Array, t: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let off = t.vs; off < t.end;) {
    const c = tlv(b, off, t.end);
    out.push(c);
    off = c.end;
  }
  return out;
}

function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t || t.tag !== tag) throw new Error(`expected ${what}`);
  return t;
}

function oidString(b: Uint8Array, t: Tlv): string {
  const parts: number[] = [];
  let v = 0;
  for (let i = t.vs; i < t.end; i++) {
    const x = b[i]!;
    v = v * 128 + (x & 0x7f);
    if (!(x & 0x80)) {
      if (parts.length === 0) {
        const first = v < 80 ? Math.floor(v / 40) : 2;
        parts.push(first, v - first * 40);
      } else parts.push(v);
      v = 0;
    }
  }
  return parts.join(".");
}

const dec = new TextDecoder();

function text(b: Uint8Array, t: Tlv): string {
  return dec.decode(b.subarray(t.vs, t.end));
}

function time(b: Uint8Array, t: Tlv): Date {
  const s = text(b, t);
  let m: RegExpExecArray | null;
  let year: number;
  if (t.tag === 0x17 && (m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s))) {
    const yy = Number(m[1]);
    year = yy < 50 ? 2000 + yy : 1900 + yy;
  } else if (t.tag === 0x18 && (m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s))) {
    year = Number(m[1]);
  } else {
    throw new Error(`bad certificate time '${s}'`);
  }
  const [, , mo, d, h, mi, se] = m.map(Number) as number[];
  return new Date(Date.UTC(year, mo! - 1, d!, h!, mi!, se!));
}

const DN_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
};

/** A Name as "CN=…, OU=…, O=…", and its CN. */
function name(b: Uint8Array, t: Tlv): { str: string; cn?: string } {
  const parts: string[] = [];
  let cn: string | undefined;
  for (const set of children(b, expect(t, 0x30, "a name"))) {
    for (const atv of children(b, expect(set, 0x31, "a name component"))) {
      const [o, v] = children(b, expect(atv, 0x30, "a name attribute"));
      const oid = oidString(b, expect(o, 0x06, "an attribute type"));
      if (!v) throw new Error("expected an attribute value");
      const val = text(b, v);
      if (oid === "2.5.4.3" && cn === undefined) cn = val;
      parts.push(`${DN_NAMES[oid] ?? oid}=${val}`);
    }
  }
  return { str: parts.join(", "), cn };
}

function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

function ipString(b: Uint8Array): string {
  if (b.length === 4) return [...b].join(".");
  if (b.length !== 16) throw new Error("bad IP address in subjectAltName");
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  // The longest run of zero groups becomes "::".
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === "0") j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (bestLen < 2) return g.join(":");
  return `${g.slice(0, best).join(":")}::${g.slice(best + bestLen).join(":")}`;
}

/** Ed25519's algorithm identifier (1.3.101.112). */
const OID_ED25519 = "1.3.101.112";

/** The fields of a certificate that Ferry checks. */
export interface CertFields {
  /** The whole certificate, DER. */
  der: Uint8Array;
  /** The signed part (TBSCertificate), DER. */
  tbs: Uint8Array;
  /** The signature algorithm's OID. */
  sigAlg: string;
  /** The signature bytes. */
  signature: Uint8Array;
  /** Serial number, normalised hex (lowercase, no leading zeros). */
  serial: string;
  /** Issuer name, DER (compared byte for byte). */
  issuerDer: Uint8Array;
  /** Issuer name as "CN=…, O=…". */
  issuer: string;
  /** Subject name, DER. */
  subjectDer: Uint8Array;
  /** Subject name as "CN=…, O=…". */
  subject: string;
  /** Subject CN, when present. */
  cn?: string;
  notBefore: Date;
  notAfter: Date;
  /** The subject key's algorithm OID. */
  keyAlg: string;
  /** The raw subject public key. */
  publicKey: Uint8Array;
  /** subjectAltName entries. */
  dns: string[];
  ips: string[];
  uris: string[];
  /** extendedKeyUsage OIDs. */
  eku: string[];
}

function eq(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Read a certificate's fields from DER (or the first CERTIFICATE block of
 * PEM text). Throws on anything it cannot read.
 *
 * @example
 * ```ts ignore
 * const c = readCert(await Deno.readTextFile("certs/ca.pem"));
 * console.log(c.subject, c.notAfter);
 * ```
 */
export function readCert(pemOrDer: string | Uint8Array): CertFields {
  let b: Uint8Array;
  if (typeof pemOrDer === "string") {
    const d = pemBlocks(pemOrDer, "CERTIFICATE")[0];
    if (!d) throw new Error("no CERTIFICATE PEM block");
    b = d;
  } else b = pemOrDer;
  const top = expect(tlv(b, 0), 0x30, "a certificate");
  if (top.end !== b.length) throw new Error("trailing bytes after the certificate");
  const [tbsT, algT, sigT] = children(b, top);
  expect(tbsT, 0x30, "a TBSCertificate");
  const alg0 = children(b, expect(algT, 0x30, "a signature algorithm"))[0];
  const sigAlg = oidString(b, expect(alg0, 0x06, "an algorithm OID"));
  expect(sigT, 0x03, "a signature");
  if (b[sigT!.vs] !== 0) throw new Error("signature has unused bits");
  const f = children(b, tbsT!);
  let i = 0;
  if (f[0]?.tag === 0xa0) i++; // [0] version
  const serialT = expect(f[i++], 0x02, "a serial number");
  const innerAlg = children(b, expect(f[i++], 0x30, "a TBS signature algorithm"))[0];
  if (oidString(b, expect(innerAlg, 0x06, "an algorithm OID")) !== sigAlg) {
    throw new Error("the two signature algorithms differ");
  }
  const issuerT = f[i++]!;
  const issuer = name(b, issuerT);
  const [nb, na] = children(b, expect(f[i++], 0x30, "a validity period"));
  if (!nb || !na) throw new Error("expected notBefore and notAfter");
  const subjectT = f[i++]!;
  const subject = name(b, subjectT);
  const [kaT, pkT] = children(b, expect(f[i++], 0x30, "a subject public key"));
  const keyAlg = oidString(
    b,
    expect(children(b, expect(kaT, 0x30, "a key algorithm"))[0], 0x06, "an OID"),
  );
  expect(pkT, 0x03, "a public key");
  const dns: string[] = [];
  const ips: string[] = [];
  const uris: string[] = [];
  const eku: string[] = [];
  for (; i < f.length; i++) {
    const t = f[i]!;
    if (t.tag !== 0xa3) continue; // issuer/subject unique IDs
    const exts = children(b, expect(children(b, t)[0], 0x30, "extensions"));
    for (const e of exts) {
      const parts = children(b, expect(e, 0x30, "an extension"));
      const oid = oidString(b, expect(parts[0], 0x06, "an extension OID"));
      const val = expect(parts[parts.length - 1], 0x04, "an extension value");
      if (oid === "2.5.29.17") {
        for (const g of children(b, expect(tlv(b, val.vs, val.end), 0x30, "subjectAltName"))) {
          if (g.tag === 0x82) dns.push(text(b, g));
          else if (g.tag === 0x86) uris.push(text(b, g));
          else if (g.tag === 0x87) ips.push(ipString(b.subarray(g.vs, g.end)));
        }
      } else if (oid === "2.5.29.37") {
        for (const o of children(b, expect(tlv(b, val.vs, val.end), 0x30, "extKeyUsage"))) {
          eku.push(oidString(b, expect(o, 0x06, "a key usage OID")));
        }
      }
    }
  }
  const serial = hex(b.subarray(serialT.vs, serialT.end)).replace(/^0+/, "") || "0";
  return {
    der: b,
    tbs: b.subarray(tbsT!.start, tbsT!.end),
    sigAlg,
    signature: b.subarray(sigT!.vs + 1, sigT!.end),
    serial,
    issuerDer: b.subarray(issuerT.start, issuerT.end),
    issuer: issuer.str,
    subjectDer: b.subarray(subjectT.start, subjectT.end),
    subject: subject.str,
    cn: subject.cn,
    notBefore: time(b, nb),
    notAfter: time(b, na),
    keyAlg,
    publicKey: b.subarray(pkT!.vs + 1, pkT!.end),
    dns,
    ips,
    uris,
    eku,
  };
}

/** The fields of a CRL that Ferry checks. */
export interface CrlFields {
  /** The signed part (TBSCertList), DER. */
  tbs: Uint8Array;
  /** The signature algorithm's OID. */
  sigAlg: string;
  /** The signature bytes. */
  signature: Uint8Array;
  /** Issuer name as "CN=…, O=…". */
  issuer: string;
  thisUpdate: Date;
  nextUpdate?: Date;
  /** Revoked serial numbers, normalised hex (lowercase, no leading zeros). */
  serials: string[];
}

/**
 * Read a CRL's fields from DER (or the first "X509 CRL" or "CRL" block of
 * PEM text). Throws on anything it cannot read.
 *
 * @example
 * ```ts ignore
 * const crl = readCrl(await Deno.readTextFile("certs/crl.pem"));
 * console.log(crl.issuer, crl.serials);
 * ```
 */
export function readCrl(pemOrDer: string | Uint8Array): CrlFields {
  let b: Uint8Array;
  if (typeof pemOrDer === "string") {
    const d = pemBlocks(pemOrDer, "X509 CRL")[0] ?? pemBlocks(pemOrDer, "CRL")[0];
    if (!d) throw new Error("no X509 CRL PEM block");
    b = d;
  } else b = pemOrDer;
  const top = expect(tlv(b, 0), 0x30, "a CRL");
  if (top.end !== b.length) throw new Error("trailing bytes after the CRL");
  const [tbsT, algT, sigT] = children(b, top);
  expect(tbsT, 0x30, "a TBSCertList");
  const alg0 = children(b, expect(algT, 0x30, "a signature algorithm"))[0];
  const sigAlg = oidString(b, expect(alg0, 0x06, "an algorithm OID"));
  expect(sigT, 0x03, "a signature");
  if (b[sigT!.vs] !== 0) throw new Error("signature has unused bits");
  const f = children(b, tbsT!);
  let i = 0;
  if (f[0]?.tag === 0x02) i++; // version
  const innerAlg = children(b, expect(f[i++], 0x30, "a TBS signature algorithm"))[0];
  if (oidString(b, expect(innerAlg, 0x06, "an algorithm OID")) !== sigAlg) {
    throw new Error("the two signature algorithms differ");
  }
  const issuer = name(b, f[i++]!);
  const thisT = f[i++];
  if (!thisT || (thisT.tag !== 0x17 && thisT.tag !== 0x18)) throw new Error("expected thisUpdate");
  const thisUpdate = time(b, thisT);
  let nextUpdate: Date | undefined;
  if (f[i]?.tag === 0x17 || f[i]?.tag === 0x18) nextUpdate = time(b, f[i++]!);
  const serials: string[] = [];
  if (f[i]?.tag === 0x30) {
    for (const entry of children(b, f[i++]!)) {
      const serialT = expect(
        children(b, expect(entry, 0x30, "a revoked entry"))[0],
        0x02,
        "a serial",
      );
      serials.push(hex(b.subarray(serialT.vs, serialT.end)).replace(/^0+/, "") || "0");
    }
  }
  return {
    tbs: b.subarray(tbsT!.start, tbsT!.end),
    sigAlg,
    signature: b.subarray(sigT!.vs + 1, sigT!.end),
    issuer: issuer.str,
    thisUpdate,
    nextUpdate,
    serials,
  };
}

/** True when `cert` names `ca`'s subject as its issuer. */
export function issuedBy(cert: CertFields, ca: CertFields): boolean {
  return eq(cert.issuerDer, ca.subjectDer) || cert.issuer === ca.subject;
}

/** The certificate's Ed25519 public key as a WebCrypto verify key. */
export async function ed25519Key(cert: CertFields): Promise<CryptoKey> {
  if (cert.keyAlg !== OID_ED25519) throw new Error("certificate key is not Ed25519");
  return await crypto.subtle.importKey("raw", new Uint8Array(cert.publicKey), "Ed25519", true, [
    "verify",
  ]);
}

/** True when `ca`'s key made the signature of `cert` (or of a CRL); Ed25519 only. */
export async function signedBy(
  cert: Pick<CertFields, "sigAlg" | "signature" | "tbs">,
  ca: CertFields,
): Promise<boolean> {
  if (cert.sigAlg !== OID_ED25519) return false;
  try {
    return await crypto.subtle.verify(
      "Ed25519",
      await ed25519Key(ca),
      new Uint8Array(cert.signature),
      new Uint8Array(cert.tbs),
    );
  } catch {
    return false;
  }
}

/** Ferry's identity fields from the SAN URIs (ferry:user/NAME, ferry:node/NAME, ferry:group/G). */
export function ferryKind(cert: CertFields): { kind?: CertKind; groups: string[] } {
  const groups: string[] = [];
  let kind: CertKind | undefined;
  for (const u of cert.uris) {
    const m = /^ferry:(user|node|group)\/(.+)$/.exec(u);
    if (!m) continue;
    if (m[1] === "group") groups.push(m[2]!);
    else if (m[2] === cert.cn) kind = m[1] as CertKind;
  }
  return { kind, groups };
}
