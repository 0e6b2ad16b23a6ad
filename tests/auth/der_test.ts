import assert from "node:assert/strict";
import { CertificateAuthority } from "../../lib/auth/ca.ts";
import { identityOf, normSerial, parseCert, x509 } from "../../lib/auth/certs.ts";
import {
  ed25519Key,
  ferryKind,
  issuedBy,
  readCert,
  readCrl,
  signedBy,
} from "../../lib/auth/der.ts";
import { pemBlocks } from "../../lib/auth/keys.ts";

Deno.test("der: readCert agrees with the X.509 library on Ferry certificates", async (t) => {
  const dir = await Deno.makeTempDir();
  const ca = await CertificateAuthority.init(`${dir}/ca`, "der-ca");
  try {
    const node = await ca.issue("node1", {
      kind: "node",
      sans: ["127.0.0.1", "::1", "2001:db8::5:0:0:1", "files.example"],
    });
    const user = await ca.issue("alice", { kind: "user" });
    const caF = readCert(ca.certPem);

    await t.step("fields match parseCert/identityOf", () => {
      for (const pem of [node.certPem, user.certPem]) {
        const f = readCert(pem);
        const x = parseCert(pem);
        const id = identityOf(x);
        assert.equal(f.cn, id.name);
        assert.equal(f.serial, id.serial);
        assert.equal(f.notBefore.getTime(), x.notBefore.getTime());
        assert.equal(f.notAfter.getTime(), x.notAfter.getTime());
        assert.deepEqual(f.dns, id.dns);
        assert.deepEqual(f.ips, id.ips);
        assert.equal(f.issuer, x.issuer);
        assert.equal(f.subject, x.subject);
        const k = ferryKind(f);
        assert.equal(k.kind, id.kind);
        assert.deepEqual(k.groups, id.groups);
      }
      assert.deepEqual(readCert(node.certPem).ips, ["127.0.0.1", "::1", "2001:db8::5:0:0:1"]);
    });

    await t.step("signature checks against the CA", async () => {
      const f = readCert(user.certPem);
      assert.ok(issuedBy(f, caF));
      assert.ok(await signedBy(f, caF));
      assert.ok(await signedBy(caF, caF));
      assert.equal(await signedBy(caF, f), false);
      // One flipped bit in the signed part (the last byte of the TBS, inside
      // a key identifier) breaks the signature.
      const der = new Uint8Array(f.der);
      der[f.tbs.byteOffset - f.der.byteOffset + f.tbs.length - 1]! ^= 1;
      assert.equal(await signedBy(readCert(der), caF), false);
      await ed25519Key(f);
    });

    await t.step("bad input is refused", () => {
      assert.throws(() => readCert("not a certificate"), /no CERTIFICATE PEM block/);
      const der = readCert(user.certPem).der;
      assert.throws(() => readCert(der.subarray(0, der.length - 1)), /truncated/);
      assert.throws(() => readCert(new Uint8Array([0x30, 0x81])), /truncated|bad DER length/);
      assert.throws(() => readCert(new Uint8Array([...der, 0])), /trailing bytes/);
    });
  } finally {
    ca.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("der: readCrl agrees with openssl and the X.509 library; a tampered CRL does not verify", async () => {
  const dir = await Deno.makeTempDir();
  const ca = await CertificateAuthority.init(`${dir}/ca`, "crl-ca");
  try {
    const caF = readCert(ca.certPem);
    // An empty CRL: no revokedCertificates at all.
    const empty = readCrl(await ca.crlPem());
    assert.deepEqual(empty.serials, []);
    assert.ok(await signedBy(empty, caF));
    const serials: string[] = [];
    for (const n of ["a", "b", "c"]) {
      serials.push((await ca.issue(n, { kind: "user" })).serial);
      await ca.revoke(n);
    }
    const pem = await ca.crlPem();
    const crl = readCrl(pem);
    assert.deepEqual([...crl.serials].sort(), [...serials].sort());
    assert.equal(crl.issuer, caF.subject);
    assert.ok(crl.nextUpdate && crl.nextUpdate > crl.thisUpdate);
    const x = new x509.X509Crl(pem);
    assert.deepEqual(crl.serials, x.entries.map((e) => normSerial(e.serialNumber)));
    // openssl's reading, independently.
    await Deno.writeTextFile(`${dir}/crl.pem`, pem);
    const o = await new Deno.Command("openssl", {
      args: ["crl", "-in", `${dir}/crl.pem`, "-noout", "-text"],
      stdout: "piped",
    }).output();
    const listed = [...new TextDecoder().decode(o.stdout).matchAll(/Serial Number: ([0-9A-F]+)/g)]
      .map((m) => normSerial(m[1]!));
    assert.deepEqual(listed, crl.serials);
    assert.ok(await signedBy(crl, caF));
    // One byte of the signed part changed: the signature no longer holds.
    const der = pemBlocks(pem, "X509 CRL")[0]!;
    const bad = der.slice();
    bad[der.length - 80] = bad[der.length - 80]! ^ 1;
    assert.equal(await signedBy(readCrl(bad), caF), false);
    assert.throws(() => readCrl(new Uint8Array([...der, 0])), /trailing bytes/);
    assert.throws(() => readCrl(ca.certPem), /no X509 CRL PEM block/);
  } finally {
    ca.close();
    await Deno.remove(dir, { recursive: true });
  }
});
