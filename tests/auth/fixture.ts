/**
 * Shared test fixtures: a throwaway CA in a temp directory and credentials
 * of every shape the tests need, good and bad.
 *
 * @module
 */

import { CertificateAuthority } from "../../lib/auth/ca.ts";
import { type CertKind, x509 } from "../../lib/auth/certs.ts";
import { exportKeyPem, generateKeyPair } from "../../lib/auth/keys.ts";
import type { Credentials } from "../../lib/auth/link.ts";

/** A CA in a temp dir plus helpers. */
export interface Fixture {
  dir: string;
  ca: CertificateAuthority;
  /** Issue credentials from the fixture's CA. */
  creds(
    name: string,
    kind: CertKind,
    o?: { groups?: string[]; sans?: string[]; now?: Date; ttlMs?: number },
  ): Promise<Credentials & { serial: string }>;
  cleanup(): Promise<void>;
}

/** Make a CA named `name` in a new temp dir. */
export async function makeFixture(name = "testca"): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-ca-" });
  const ca = await CertificateAuthority.init(`${dir}/certs`, name);
  return {
    dir,
    ca,
    async creds(n, kind, o = {}) {
      const r = await ca.issue(n, { kind, ...o });
      return { ca: ca.certPem, cert: r.certPem, key: r.keyPem, name: n, serial: r.serial };
    },
    async cleanup() {
      ca.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/**
 * A self-signed certificate that copies what a real one says: CN, kind
 * SAN, EKU, and (if given) the issuer name of the real CA.
 */
export async function selfSigned(
  name: string,
  kind: CertKind,
  caPem: string,
  o: { issuerLike?: string; sans?: string[] } = {},
): Promise<Credentials> {
  const keys = await generateKeyPair();
  const subject = o.issuerLike ?? `CN=${name}, OU=${kind}, O=Ferry`;
  const names: x509.JsonGeneralName[] = [
    ...(o.sans ?? []).map((v) => ({ type: "ip" as const, value: v })),
    { type: "url", value: `ferry:${kind}/${name}` },
  ];
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: "0badc0de",
    name: subject.includes(`CN=${name}`) ? subject : `CN=${name}, OU=${kind}, O=Ferry`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3600e3),
    signingAlgorithm: { name: "Ed25519" },
    keys,
    extensions: [
      new x509.ExtendedKeyUsageExtension([
        x509.ExtendedKeyUsage.serverAuth,
        x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(names),
    ],
  });
  return {
    ca: caPem,
    cert: cert.toString("pem") + "\n",
    key: await exportKeyPem(keys.privateKey),
    name,
  };
}

/** Run openssl with `args`; returns exit code and combined output. */
export async function openssl(args: string[]): Promise<{ code: number; out: string }> {
  const r = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" }).output();
  const td = new TextDecoder();
  return { code: r.code, out: td.decode(r.stdout) + td.decode(r.stderr) };
}
