import assert from "node:assert/strict";
import { CertificateAuthority, writeCredentials } from "../../lib/auth/ca.ts";
import {
  checkCsr,
  createCsr,
  identityOf,
  parseCert,
  parseDuration,
  x509,
} from "../../lib/auth/certs.ts";
import {
  decryptKeyPem,
  encryptKeyPem,
  exportKeyPem,
  generateKeyPair,
  importKeyPem,
} from "../../lib/auth/keys.ts";
import { loadCredentials, mapAlg, watchCredentials } from "../../lib/auth/link.ts";
import { makeToken, parseToken } from "../../lib/auth/token.ts";
import { crlSerials } from "../../lib/auth/verify.ts";
import { CaStore } from "../../lib/auth/store.ts";
import { ferryArgv } from "../../lib/self.ts";
import { openssl } from "./fixture.ts";

Deno.test("certificate authority", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-ca-test-" });
  const dir = `${tmp}/certs`;
  let ca = await CertificateAuthority.init(dir, "testca");
  try {
    await t.step("init makes a 0600 key in a 0700 dir and refuses to overwrite", async () => {
      assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
      assert.equal((await Deno.stat(`${dir}/ca.key`)).mode! & 0o777, 0o600);
      const before = await Deno.readTextFile(`${dir}/ca.key`);
      await assert.rejects(
        CertificateAuthority.init(dir, "other"),
        /A CA key already exists in '.*': use --force/,
      );
      assert.equal(await Deno.readTextFile(`${dir}/ca.key`), before);
      const r = await openssl(["x509", "-in", `${dir}/ca.pem`, "-noout", "-text"]);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /CA:TRUE/);
      assert.match(r.out, /Certificate Sign, CRL Sign/);
    });

    await t.step("--force replaces the CA", async () => {
      const before = await Deno.readTextFile(`${dir}/ca.pem`);
      ca.close();
      ca = await CertificateAuthority.init(dir, "testca", { force: true });
      assert.notEqual(await Deno.readTextFile(`${dir}/ca.pem`), before);
    });

    await t.step("issued certificates pass openssl verify and read well", async () => {
      const node = await ca.issue("srv1", { kind: "node", sans: ["127.0.0.1", "srv1.lan"] });
      const user = await ca.issue("alice", { kind: "user", groups: ["admins", "ops"] });
      await writeCredentials(dir, "srv1", node.certPem, node.keyPem);
      await writeCredentials(dir, "alice", user.certPem, user.keyPem);
      assert.equal((await Deno.stat(`${dir}/alice.key`)).mode! & 0o777, 0o600);
      const v = await openssl([
        "verify",
        "-CAfile",
        `${dir}/ca.pem`,
        `${dir}/srv1.pem`,
        `${dir}/alice.pem`,
      ]);
      assert.equal(v.code, 0, v.out);
      assert.match(v.out, /srv1.pem: OK/);
      assert.match(v.out, /alice.pem: OK/);
      const p = await openssl([
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        `${dir}/ca.pem`,
        `${dir}/alice.pem`,
      ]);
      assert.notEqual(p.code, 0, "a user certificate must not be usable by a TLS server");
      const n = await openssl(["x509", "-in", `${dir}/srv1.pem`, "-noout", "-text"]);
      assert.match(n.out, /Subject: CN = srv1, OU = node, O = Ferry/);
      assert.match(n.out, /TLS Web Server Authentication, TLS Web Client Authentication/);
      assert.match(n.out, /DNS:srv1, IP Address:127.0.0.1, DNS:srv1.lan, URI:ferry:node\/srv1/);
      const u = await openssl(["x509", "-in", `${dir}/alice.pem`, "-noout", "-text"]);
      assert.match(u.out, /URI:ferry:user\/alice, URI:ferry:group\/admins, URI:ferry:group\/ops/);
      assert.doesNotMatch(u.out, /TLS Web Server Authentication/);
      const id = identityOf(parseCert(user.certPem));
      assert.deepEqual([id.name, id.kind, id.groups], ["alice", "user", ["admins", "ops"]]);
      const life = id.notAfter.getTime() - Date.now();
      assert.ok(life > 23 * 3600e3 && life <= 24 * 3600e3, "default lifetime is 24 h");
    });

    await t.step("bad names and SANs are refused with the value quoted", async () => {
      await assert.rejects(ca.issue("../etc", { kind: "user" }), /Invalid name '..\/etc'/);
      await assert.rejects(ca.issue("ca", { kind: "user" }), /Invalid name 'ca'/);
      await assert.rejects(
        ca.issue("bob", { kind: "node", sans: ["not a name"] }),
        /Invalid --san 'not a name'/,
      );
      await assert.rejects(
        ca.issue("bob", { kind: "user", groups: ["a b"] }),
        /Invalid group name 'a b'/,
      );
      assert.throws(() => parseDuration("soon"), /Invalid duration 'soon'/);
      assert.equal(parseDuration("10m"), 600_000);
    });

    await t.step("list, revoke by name and serial, CRL checked by openssl", async () => {
      const bob = await ca.issue("bob", { kind: "user" });
      await writeCredentials(dir, "bob", bob.certPem, bob.keyPem);
      assert.deepEqual(ca.list().map((r) => r.name), ["srv1", "alice", "bob"]);
      assert.deepEqual(await ca.revoke("alice"), [ca.list()[1]!.serial]);
      assert.deepEqual(await ca.revoke(bob.serial.toUpperCase()), [bob.serial]);
      assert.deepEqual(await ca.revoke("bob"), []);
      await assert.rejects(ca.revoke("nobody"), /No certificate with name or serial 'nobody'/);
      const crl = await Deno.readTextFile(`${dir}/crl.pem`);
      const serials = await crlSerials(crl, ca.cert);
      assert.ok(serials.has(bob.serial));
      assert.equal(serials.size, 2);
      const r = await openssl([
        "verify",
        "-crl_check",
        "-CAfile",
        `${dir}/ca.pem`,
        "-CRLfile",
        `${dir}/crl.pem`,
        `${dir}/alice.pem`,
      ]);
      assert.notEqual(r.code, 0);
      assert.match(r.out, /certificate revoked/);
      const ok = await openssl([
        "verify",
        "-crl_check",
        "-CAfile",
        `${dir}/ca.pem`,
        "-CRLfile",
        `${dir}/crl.pem`,
        `${dir}/srv1.pem`,
      ]);
      assert.equal(ok.code, 0, ok.out);
      // A CRL from another CA is not believed.
      const other = await CertificateAuthority.init(`${tmp}/other`, "testca");
      await assert.rejects(
        crlSerials(await other.crlPem(), ca.cert),
        /CRL is not signed by this CA/,
      );
      other.close();
    });

    await t.step("tokens: single use, expiring, bound to a name and the CA", async () => {
      const now = new Date();
      const tok = await ca.token("pi", { ttlMs: 60_000, now });
      const parsed = parseToken(tok);
      assert.equal(parsed.name, "pi");
      assert.equal(parsed.fingerprint, await ca.fingerprint());
      const g = await ca.redeem(tok, now);
      assert.deepEqual(g, { name: "pi", kind: "node", groups: [], ttlMs: 24 * 3600e3, sans: [] });
      await assert.rejects(ca.redeem(tok, now), /Enrolment token was already used/);
      const late = await ca.token("pi2", { ttlMs: 1000, now });
      await assert.rejects(
        ca.redeem(late, new Date(now.getTime() + 2000)),
        /Enrolment token has expired/,
      );
      await assert.rejects(ca.redeem("ferry1.garbage"), /Malformed enrolment token/);
      await assert.rejects(ca.redeem("hello"), /Malformed enrolment token/);
      // A token the CA never made (right fingerprint, unknown secret) is refused.
      const forged = makeToken("pi", new Date(now.getTime() + 60_000), parsed.fingerprint).token;
      await assert.rejects(ca.redeem(forged, now), /Unknown enrolment token/);
      const otherCa = makeToken("pi", new Date(now.getTime() + 60_000), "00".repeat(32)).token;
      await assert.rejects(ca.redeem(otherCa, now), /made by a different CA/);
    });

    await t.step("CSRs: signed by the requester, tampering refused", async () => {
      const keys = await generateKeyPair();
      const csr = await createCsr("dev1", keys);
      const pub = await checkCsr(csr, "dev1");
      assert.equal(pub.algorithm.name, "Ed25519");
      await assert.rejects(
        checkCsr(csr, "dev2"),
        /request is for 'dev1' but the token is for 'dev2'/,
      );
      // Flip a byte inside the signed part.
      const der = new x509.Pkcs10CertificateRequest(csr).rawData;
      const bytes = new Uint8Array(der.slice(0));
      const i = bytes.length - 80;
      bytes[i] = bytes[i]! ^ 1;
      const tampered = new x509.Pkcs10CertificateRequest(bytes).toString("pem");
      await assert.rejects(checkCsr(tampered, "dev1"), /tampered|not a valid PKCS#10/);
      await assert.rejects(checkCsr("junk", "dev1"), /not a valid PKCS#10/);
      const r = await ca.signCsr(csr, "dev1", { kind: "node" });
      assert.equal(identityOf(parseCert(r.certPem)).name, "dev1");
      assert.equal(r.keyPem, undefined);
    });

    await t.step("key files: refuse group/world-readable, never leak key bytes", async () => {
      const creds = await loadCredentials(dir, "srv1");
      assert.equal(creds.name, "srv1");
      assert.ok(creds.crl?.includes("X509 CRL"));
      await Deno.chmod(`${dir}/srv1.key`, 0o644);
      const err = await loadCredentials(dir, "srv1").then(() => null, (e: Error) => e);
      assert.ok(err);
      assert.match(
        err.message,
        /key file '.*srv1.key' is readable by group or others \(mode 0644\): run 'chmod 600 .*srv1.key'/,
      );
      assert.ok(!err.message.includes("PRIVATE KEY"));
      await Deno.chmod(`${dir}/srv1.key`, 0o600);
      await assert.rejects(
        loadCredentials(dir, "nobody"),
        /no credentials for 'nobody' in '.*': run 'ferry ca issue nobody/,
      );
      await assert.rejects(
        loadCredentials(`${tmp}/empty`),
        /no credentials in '.*empty': run 'ferry ca issue NAME/,
      );
      await Deno.writeTextFile(
        `${dir}/junk.key`,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        { mode: 0o600 },
      );
      const e2 = await importKeyPem(await Deno.readTextFile(`${dir}/junk.key`), "'junk.key'").then(
        () => null,
        (e: Error) => e,
      );
      assert.match(e2!.message, /'junk.key' is not a usable Ed25519 private key/);
    });

    await t.step("passphrase-encrypted keys", async () => {
      const pem = await exportKeyPem((await generateKeyPair()).privateKey);
      const enc = await encryptKeyPem(pem, "s3cret");
      assert.ok(!enc.includes(pem.split("\n")[1]!));
      assert.equal(await decryptKeyPem(enc, "s3cret"), pem);
      await assert.rejects(decryptKeyPem(enc, "wrong", "'k'"), /Wrong passphrase for 'k'/);
      await assert.rejects(importKeyPem(enc, "'k'"), /'k' is encrypted: set FERRY_PASSPHRASE/);
      const u = await ca.issue("carol", { kind: "user" });
      await writeCredentials(dir, "carol", u.certPem, await encryptKeyPem(u.keyPem, "pw"));
      Deno.env.set("FERRY_PASSPHRASE", "pw");
      try {
        assert.equal((await loadCredentials(dir, "carol")).key, u.keyPem);
        Deno.env.set("FERRY_PASSPHRASE", "nope");
        await assert.rejects(loadCredentials(dir, "carol"), /Wrong passphrase for '.*carol.key'/);
      } finally {
        Deno.env.delete("FERRY_PASSPHRASE");
      }
    });

    await t.step("watchCredentials follows renewed files", async () => {
      const w = await watchCredentials(dir, "srv1", { intervalMs: 60_000 });
      try {
        const first = w.current();
        const r = await ca.issue("srv1", { kind: "node" });
        await writeCredentials(dir, "srv1", r.certPem, r.keyPem, { force: true });
        await w.reload();
        assert.notEqual(w.current(), first);
        assert.equal(w.current().cert, r.certPem);
      } finally {
        w.close();
      }
    });

    await t.step("Inferno algorithm names map onto TLS 1.3 suites", () => {
      assert.deepEqual(mapAlg(undefined), []);
      assert.deepEqual(mapAlg("sha1"), []);
      assert.deepEqual(mapAlg("rc4_256 sha1"), ["TLS_AES_256_GCM_SHA384"]);
      assert.deepEqual(mapAlg("aes_128_cbc md5"), ["TLS_AES_128_GCM_SHA256"]);
      assert.deepEqual(mapAlg("chacha20"), ["TLS_CHACHA20_POLY1305_SHA256"]);
      assert.throws(() => mapAlg("clear"), /Algorithm 'clear' means no encryption/);
      assert.throws(() => mapAlg("rot13"), /Unknown algorithm 'rot13'/);
    });
  } finally {
    ca.close();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("the CA directory and ca.db are kept private", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-ca-modes-" });
  const dec = new TextDecoder();
  const ferry = async (args: string[]) => {
    const [exe, ...pre] = ferryArgv();
    const o = await new Deno.Command(exe!, {
      args: [...pre, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
  };
  const mode = async (p: string) => (await Deno.stat(p)).mode! & 0o777;
  try {
    await t.step("ca.db is 0600 even in a pre-existing 0755 directory", async () => {
      const shared = `${tmp}/shared`;
      await Deno.mkdir(shared);
      await Deno.chmod(shared, 0o755);
      const db = new CaStore(`${shared}/ca.db`);
      db.addToken(
        "0".repeat(64),
        { name: "n", kind: "node", groups: [], ttlMs: 1 },
        new Date(),
        new Date(),
      );
      db.close();
      assert.equal(await mode(`${shared}/ca.db`), 0o600);
      // A database left 0644 by an older version is tightened when opened.
      await Deno.chmod(`${shared}/ca.db`, 0o644);
      new CaStore(`${shared}/ca.db`).close();
      assert.equal(await mode(`${shared}/ca.db`), 0o600);
    });

    await t.step("'ferry ca init' refuses a 0755 directory, naming the chmod", async () => {
      const dir = `${tmp}/certs`;
      await Deno.mkdir(dir);
      await Deno.chmod(dir, 0o755);
      const r = await ferry(["ca", "init", "modes-ca", "--dir", dir]);
      assert.notEqual(r.code, 0, r.out);
      assert.match(
        r.err,
        new RegExp(
          `CA directory '${dir}' is open to group or others \\(mode 0755\\): run 'chmod 700 ${dir}'`,
        ),
      );
      assert.deepEqual(
        [...Deno.readDirSync(dir)],
        [],
        "nothing is written into a refused directory",
      );
      await Deno.chmod(dir, 0o700);
      const ok = await ferry(["ca", "init", "modes-ca", "--dir", dir]);
      assert.equal(ok.code, 0, ok.err);
      assert.equal(await mode(`${dir}/ca.db`), 0o600);
      assert.equal(await mode(`${dir}/ca.key`), 0o600);
      const tok = await ferry(["ca", "token", "dev1", "--dir", dir]);
      assert.equal(tok.code, 0, tok.err);
      assert.equal(await mode(`${dir}/ca.db`), 0o600);
    });

    await t.step("a CA whose directory was opened up is refused until it is closed", async () => {
      const dir = `${tmp}/certs`;
      await Deno.chmod(dir, 0o750);
      const r = await ferry(["ca", "list", "--dir", dir]);
      assert.notEqual(r.code, 0, r.out);
      assert.match(r.err, new RegExp(`\\(mode 0750\\): run 'chmod 700 ${dir}'`));
      await assert.rejects(CertificateAuthority.open(dir), /run 'chmod 700 /);
      await Deno.chmod(dir, 0o700);
      const ok = await ferry(["ca", "list", "--dir", dir]);
      assert.equal(ok.code, 0, ok.err);
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
