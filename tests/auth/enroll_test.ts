import assert from "node:assert/strict";
import tls from "node:tls";
import { CertificateAuthority } from "../../lib/auth/ca.ts";
import {
  backdateFor,
  createCsr,
  identityOf,
  parseCert,
  ttlOf,
  x509,
} from "../../lib/auth/certs.ts";
import { enroll, fetchCrl, renew, renewalTime, startSigner } from "../../lib/auth/enroll.ts";
import { generateKeyPair } from "../../lib/auth/keys.ts";
import { loadCredentials, watchCredentials } from "../../lib/auth/link.ts";
import { tlsDial, tlsListen } from "../../lib/transport/tls.ts";
import type { Conn } from "../../lib/transport/conn.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Send raw JSON lines to a signer (as a misbehaving device would). */
async function rawAsk(port: number, lines: object[]): Promise<Record<string, unknown>[]> {
  const sock = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false });
  await new Promise<void>((r, j) => {
    sock.once("secureConnect", () => r());
    sock.once("error", j);
  });
  const out: Record<string, unknown>[] = [];
  let buf = "";
  const done = new Promise<void>((resolve) => {
    sock.on("data", (d) => {
      buf += String(d);
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        out.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
        if (out.length === lines.length) resolve();
      }
    });
    sock.on("close", () => resolve());
    sock.on("end", () => resolve());
  });
  for (const l of lines) sock.write(JSON.stringify(l) + "\n");
  await done;
  sock.destroy();
  return out;
}

Deno.test("enrolment, renewal and revocation through the signer", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-enroll-" });
  const ca = await CertificateAuthority.init(`${tmp}/ca`, "enrolca");
  const logs: string[] = [];
  const signer = await startSigner(ca, "127.0.0.1", 0, { log: (m) => logs.push(m) });
  const fakeCa = await CertificateAuthority.init(`${tmp}/fake`, "enrolca");
  const fakeLogs: string[] = [];
  const fake = await startSigner(fakeCa, "127.0.0.1", 0, { log: (m) => fakeLogs.push(m) });
  const dev = `${tmp}/device`;
  try {
    await t.step("a device enrols with a token; its key never leaves it", async () => {
      const token = await ca.token("pi", { kind: "node", groups: ["sensors"] });
      const r = await enroll("127.0.0.1", signer.port, token, dev);
      assert.equal(r.name, "pi");
      assert.equal(r.kind, "node");
      assert.equal((await Deno.stat(`${dev}/pi.key`)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(dev)).mode! & 0o777, 0o700);
      assert.equal(await Deno.readTextFile(`${dev}/ca.pem`), ca.certPem);
      assert.equal(
        (await Deno.readTextFile(`${dev}/signer`)).trim(),
        `tcp!127.0.0.1!${signer.port}`,
      );
      const creds = await loadCredentials(dev);
      const id = identityOf(parseCert(creds.cert));
      assert.deepEqual([id.name, id.kind, id.groups], ["pi", "node", ["sensors"]]);
      assert.equal(ca.list().find((x) => x.serial === id.serial)?.via, "enroll");
      // The CA never saw the private key: only the CSR's public key.
      assert.ok(!logs.join("\n").includes("PRIVATE"));
    });

    await t.step("a token works once", async () => {
      const token = await ca.token("pi2");
      await enroll("127.0.0.1", signer.port, token, `${tmp}/d2`);
      await assert.rejects(
        enroll("127.0.0.1", signer.port, token, `${tmp}/d3`),
        /the signer refused: Enrolment token was already used/,
      );
    });

    await t.step("an expired token is refused", async () => {
      const token = await ca.token("late", { ttlMs: 1000, now: new Date(Date.now() - 5000) });
      await assert.rejects(
        enroll("127.0.0.1", signer.port, token, `${tmp}/d4`),
        /Enrolment token has expired/,
      );
      // Even if the device's clock is wrong, the signer refuses it too.
      await assert.rejects(
        enroll("127.0.0.1", signer.port, token, `${tmp}/d4`, {
          now: () => new Date(Date.now() - 60_000),
        }),
        /the signer refused: Enrolment token has expired/,
      );
    });

    await t.step("a fake signer cannot hand out another CA and never sees the token", async () => {
      const token = await ca.token("victim");
      await assert.rejects(
        enroll("127.0.0.1", fake.port, token, `${tmp}/d5`),
        /the signer's CA does not match the fingerprint in the token/,
      );
      assert.ok(!fakeLogs.some((l) => l.includes("victim")));
      await assert.rejects(Deno.stat(`${tmp}/d5/victim.key`), Deno.errors.NotFound);
      // The token is still good at the real signer.
      await enroll("127.0.0.1", signer.port, token, `${tmp}/d5`);
    });

    await t.step("a tampered request is refused and does not use the token up", async () => {
      const token = await ca.token("dev9");
      const csr = await createCsr("dev9", await generateKeyPair());
      const bytes = new Uint8Array(new x509.Pkcs10CertificateRequest(csr).rawData.slice(0));
      bytes[bytes.length - 80] = bytes[bytes.length - 80]! ^ 1;
      const tampered = new x509.Pkcs10CertificateRequest(bytes).toString("pem");
      const [r1] = await rawAsk(signer.port, [{ op: "enroll", token, csr: tampered }]);
      assert.equal(r1?.ok, false);
      assert.match(String(r1?.error), /tampered|not a valid PKCS#10/);
      const other = await createCsr("someone-else", await generateKeyPair());
      const [r2] = await rawAsk(signer.port, [{ op: "enroll", token, csr: other }]);
      assert.match(String(r2?.error), /request is for 'someone-else' but the token is for 'dev9'/);
      const [r3] = await rawAsk(signer.port, [{ op: "enroll", token: "ferry1.xyz", csr }]);
      assert.match(String(r3?.error), /Malformed enrolment token/);
      const [r4] = await rawAsk(signer.port, [{ op: "sign-anything" }]);
      assert.match(String(r4?.error), /unknown request 'sign-anything'/);
      const [r5] = await rawAsk(signer.port, [{ op: "enroll", token, csr }]);
      assert.equal(r5?.ok, true, String(r5?.error));
    });

    await t.step("renewal without a certificate is refused", async () => {
      const csr = await createCsr("pi", await generateKeyPair());
      const [r] = await rawAsk(signer.port, [{ op: "renew", csr, proof: "AAAA" }]);
      assert.match(String(r?.error), /client presented no certificate/);
    });

    await t.step("renewal under an open session keeps it working", async () => {
      const srvTok = await ca.token("fileserver", { kind: "node" });
      const srvDir = `${tmp}/fileserver`;
      await enroll("127.0.0.1", signer.port, srvTok, srvDir);
      // Give the server an address SAN by issuing directly (enrolment names only).
      const issued = await ca.issue("fileserver", { kind: "node", sans: ["127.0.0.1"] });
      await Deno.writeTextFile(`${srvDir}/fileserver.pem`, issued.certPem);
      await Deno.writeTextFile(`${srvDir}/fileserver.key`, issued.keyPem);
      const watch = await watchCredentials(srvDir, "fileserver", { intervalMs: 60_000 });
      const l = await tlsListen("127.0.0.1", 0, {
        creds: () => watch.current(),
        revocationCheckMs: 50,
        onRefused: () => {},
      });
      const port = Number(l.addr.split("!")[2]);
      const it = l[Symbol.asyncIterator]();
      try {
        const piCreds = await loadCredentials(dev, "pi");
        const n1 = it.next();
        const c1 = await tlsDial("127.0.0.1", port, { creds: piCreds });
        const s1 = (await n1).value as Conn;
        // Renew both ends while the session is open.
        const rs = await renew("127.0.0.1", signer.port, srvDir, "fileserver");
        const rc = await renew("127.0.0.1", signer.port, dev, "pi");
        assert.notEqual(rc.serial, rc.oldSerial);
        assert.equal(ca.list().find((x) => x.serial === rs.serial)?.via, "renew");
        // The renewed server keeps its address SAN.
        assert.ok(
          identityOf(parseCert((await loadCredentials(srvDir, "fileserver")).cert)).ips.includes(
            "127.0.0.1",
          ),
        );
        await watch.reload();
        await c1.write(enc.encode("still open"));
        assert.equal(dec.decode((await s1.read())!), "still open");
        // New connections use the new credentials on both sides.
        const n2 = it.next();
        const c2 = await tlsDial("127.0.0.1", port, { creds: await loadCredentials(dev, "pi") });
        const s2 = (await n2).value as Conn & { peerCert: { serial: string } };
        assert.equal(s2.peerCert.serial, rc.serial);
        assert.equal((c2 as Conn & { peerCert: { serial: string } }).peerCert.serial, rs.serial);
        c2.close();
        s2.close();

        // Revoke pi: no renewal, no new connection, and the open session ends.
        await ca.revoke("pi");
        await assert.rejects(
          renew("127.0.0.1", signer.port, dev, "pi"),
          /the signer refused: client certificate 'pi' \(serial [0-9a-f]+\) has been revoked/,
        );
        await fetchCrl("127.0.0.1", signer.port, srvDir);
        await watch.reload();
        await s1.closed;
        assert.equal(await c1.read(), null);
        await assert.rejects(
          tlsDial("127.0.0.1", port, { creds: await loadCredentials(dev, "pi") }),
          /refused the link: client certificate 'pi' .*has been revoked/,
        );
        c1.close();
      } finally {
        l.close();
        watch.close();
      }
    });

    await t.step("renewal is due at two thirds of the lifetime, with jitter", () => {
      const nb = new Date(0);
      const na = new Date(90_000);
      assert.equal(renewalTime(nb, na, 0).getTime(), 60_000);
      assert.equal(renewalTime(nb, na, 0.5).getTime(), 55_500);
      assert.ok(renewalTime(nb, na, 0.999).getTime() > 51_000);
      // Short certificates are backdated little, so renewal never falls before issue.
      for (const ttl of [24_000, 600_000, 24 * 3600e3]) {
        const now = new Date();
        const b = new Date(now.getTime() - backdateFor(ttl));
        const a = new Date(now.getTime() + ttl);
        assert.ok(renewalTime(b, a, 0.999) > now, `ttl ${ttl}`);
        assert.ok(Math.abs(ttlOf(b, a) - ttl) < 1, `ttl ${ttl} round trip`);
      }
    });
  } finally {
    signer.close();
    fake.close();
    ca.close();
    fakeCa.close();
    await Deno.remove(tmp, { recursive: true });
  }
});
