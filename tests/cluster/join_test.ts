/**
 * The joining side's checks, with a real CA, real files and real TLS: only
 * the signer's certificate may serve the cluster, an older CRL is never put
 * back, and a fetched manifest is checked like a local one (signature,
 * serial, this node in it) before it is cached.
 */
import assert from "node:assert/strict";
import tls from "node:tls";
import { openClusterTree } from "../../lib/auth/enroll.ts";
import { checkFetched, parseSerialLine, writeCrl } from "../../lib/cluster/join.ts";
import { recordSerial, signManifest } from "../../lib/manifest/sign.ts";
import { makeFixture } from "../auth/fixture.ts";

const enc = new TextEncoder();

Deno.test("join: another node's certificate cannot pose as the signer", async () => {
  const fx = await makeFixture("joinca");
  const impostor = await fx.creds("n1", "node", { sans: ["127.0.0.1"] });
  const server = tls.createServer({
    cert: impostor.cert,
    key: impostor.key,
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.3",
  });
  const seen: string[] = [];
  server.on("secureConnection", (s) => {
    s.on("data", (d) => {
      seen.push(String(d));
      s.end();
    });
    s.on("error", () => {});
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  try {
    const me = await fx.creds("n2", "node");
    await assert.rejects(
      openClusterTree("127.0.0.1", port, me),
      /answered with the certificate of 'n1', not the signer's/,
    );
    assert.deepEqual(seen, [], "the client sent its proof to an impostor");
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
    await fx.cleanup();
  }
});

Deno.test("join: an older CRL, even one the CA signed, is not put back", async () => {
  const fx = await makeFixture("joinca");
  const dir = await Deno.makeTempDir({ prefix: "ferry-join-" });
  try {
    const older = await fx.ca.crlPem(new Date(Date.now() - 60_000));
    await fx.ca.revoke((await fx.creds("bob", "user")).serial);
    const newer = await fx.ca.crlPem(new Date());
    assert.equal(await writeCrl(dir, newer, fx.ca.certPem), true);
    assert.equal(await writeCrl(dir, older, fx.ca.certPem), false);
    assert.equal(await Deno.readTextFile(`${dir}/crl.pem`), newer);
    const other = await makeFixture("joinca");
    try {
      await assert.rejects(
        writeCrl(dir, await other.ca.crlPem(new Date()), fx.ca.certPem),
        /not signed by this CA/,
      );
    } finally {
      await other.cleanup();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    await fx.cleanup();
  }
});

Deno.test("join: a fetched manifest is checked before it is cached", async () => {
  const fx = await makeFixture("joinca");
  const dir = await Deno.makeTempDir({ prefix: "ferry-join-" });
  try {
    const key = await Deno.readTextFile(`${fx.dir}/certs/ca.key`);
    const text = `[nodes.n1]\naddress = "tcp!127.0.0.1!6666"\n` +
      `[nodes.n1.exports.net]\nkind = "net"\naccess = ["*"]\n`;
    const bytes = enc.encode(text);
    const sig5 = await signManifest(bytes, key, fx.ca.certPem, 5);
    const s = await checkFetched(bytes, sig5, dir, fx.ca.certPem, "n1");
    assert.equal(s.serial, 5);
    await assert.rejects(
      checkFetched(bytes, sig5, dir, fx.ca.certPem, "n9"),
      /has no node 'n9' \(nodes: n1\)/,
    );
    await assert.rejects(
      checkFetched(enc.encode(text + "# more\n"), sig5, dir, fx.ca.certPem, "n1"),
      /Refusing the signer's manifest\.toml: .*altered/,
    );
    await recordSerial(s, dir);
    const sig4 = await signManifest(bytes, key, fx.ca.certPem, 4);
    await assert.rejects(
      checkFetched(bytes, sig4, dir, fx.ca.certPem, "n1"),
      /serial 4 is lower than serial 5/,
    );
    assert.deepEqual(parseSerialLine("manifest 5 crl 0123456789abcdef\n"), {
      manifest: 5,
      crl: "0123456789abcdef",
    });
    assert.throws(() => parseSerialLine("manifest five\n"), /malformed serial line/);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await fx.cleanup();
  }
});
