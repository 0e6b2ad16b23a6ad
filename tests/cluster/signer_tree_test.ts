/**
 * The signer's cluster tree over real TLS on loopback: what it serves, the
 * `serial` long poll, publishing with `ferry sign`'s functions, and who is
 * refused (no certificate, another CA's certificate, a bad proof, a
 * revoked certificate, and an open session whose certificate is revoked).
 */
import assert from "node:assert/strict";
import tls from "node:tls";
import type { Buffer } from "node:buffer";
import { openClusterTree, startSigner } from "../../lib/auth/enroll.ts";
import { ClusterState, publishManifest } from "../../lib/cluster/state.ts";
import { clusterTree } from "../../lib/cluster/tree.ts";
import { signFile } from "../../lib/manifest/sign.ts";
import { OREAD, OWRITE } from "../../lib/styx/types.ts";
import { tlsDial } from "../../lib/transport/tls.ts";
import { StyxClient } from "../../lib/styx/client.ts";
import { makeFixture, selfSigned } from "../auth/fixture.ts";

const dec = new TextDecoder();

/** Send one JSON line on a fresh TLS connection and return the reply. */
async function rawTree(
  port: number,
  proof: string,
  creds?: { cert: string; key: string },
): Promise<Record<string, unknown>> {
  const sock = tls.connect({
    host: "127.0.0.1",
    port,
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
    ...(creds ?? {}),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once("secureConnect", () => resolve());
      sock.once("error", reject);
    });
    sock.write(JSON.stringify({ op: "tree", proof }) + "\n");
    let buf = "";
    for await (const d of sock) {
      buf += (d as Buffer).toString("utf8");
      if (buf.includes("\n")) break;
    }
    return JSON.parse(buf.slice(0, buf.indexOf("\n")));
  } finally {
    sock.destroy();
  }
}

Deno.test("signer tree: serves the cluster's state; serial waits for a change", async (t) => {
  const fx = await makeFixture("treeca");
  const caDir = `${fx.dir}/certs`;
  const logs: string[] = [];
  const state = await ClusterState.open(caDir, { log: (m) => logs.push(m) });
  const signer = await startSigner(fx.ca, "127.0.0.1", 0, {
    tree: clusterTree(state),
    changed: (s) => state.changed(s),
    log: (m) => logs.push(m),
  });
  try {
    const n1 = await fx.creds("n1", "node");
    const s = await openClusterTree("127.0.0.1", signer.port, n1);
    try {
      await t.step("ca.pem, crl.pem and serial are there before any manifest", async () => {
        const names = (await s.client.ls(s.root, "/")).map((d) => d.name).sort();
        assert.deepEqual(names, ["ca.pem", "crl.pem", "serial"]);
        assert.equal(dec.decode(await s.client.readFile(s.root, "ca.pem")), fx.ca.certPem);
        assert.equal(
          dec.decode(await s.client.readFile(s.root, "crl.pem")),
          await Deno.readTextFile(`${caDir}/crl.pem`),
        );
      });

      await t.step("the tree is read-only", async () => {
        await assert.rejects(s.client.openPath(s.root, "crl.pem", OWRITE), /permission denied/);
        await assert.rejects(
          s.client.create(s.root, "/x", { perm: 0o644, mode: OWRITE }),
          /create prohibited|permission denied/,
        );
      });

      const serial = await s.client.openPath(s.root, "serial", OREAD);
      const first = dec.decode(await serial.readOnce(0n, 256));
      assert.match(first, /^manifest 0 crl [0-9a-f]{16}\n$/);
      let off = BigInt(first.length);

      await t.step("a read at the end waits until 'ferry sign' publishes", async () => {
        let done = false;
        const pending = serial.readOnce(off, 256).then((b) => {
          done = true;
          return dec.decode(b);
        });
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(done, false, "the read returned without a change");
        const file = `${fx.dir}/cluster.toml`;
        await Deno.writeTextFile(file, "# cluster\n");
        const { serial: n } = await signFile(file, caDir);
        await publishManifest(caDir, file);
        const line = await pending;
        assert.equal(line, first.replace("manifest 0", `manifest ${n}`));
        off += BigInt(line.length);
        assert.equal(dec.decode(await s.client.readFile(s.root, "manifest.toml")), "# cluster\n");
        assert.equal(
          dec.decode(await s.client.readFile(s.root, "manifest.toml.sig")),
          await Deno.readTextFile(`${file}.sig`),
        );
      });

      await t.step("a revocation changes the serial line and crl.pem", async () => {
        const pending = serial.readOnce(off, 256);
        await fx.ca.revoke((await fx.creds("gone", "user")).serial);
        await fx.ca.writeCrl();
        const line = dec.decode(await pending);
        assert.match(line, /^manifest 1 crl [0-9a-f]{16}\n$/);
        assert.notEqual(line.slice(-17), first.slice(-17));
        off += BigInt(line.length);
        assert.equal(
          dec.decode(await s.client.readFile(s.root, "crl.pem")),
          await Deno.readTextFile(`${caDir}/crl.pem`),
        );
      });

      await t.step("a flushed wait is interrupted and leaves no waiter behind", async () => {
        const before = state.waiting;
        const ac = new AbortController();
        const pending = serial.readOnce(off, 256, { signal: ac.signal });
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(state.waiting, before + 1);
        ac.abort();
        await assert.rejects(pending);
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(state.waiting, before);
      });

      await t.step("an older signed manifest put back is not served", async () => {
        const file = `${fx.dir}/cluster.toml`;
        await Deno.copyFile(file, `${fx.dir}/old.toml`);
        await Deno.copyFile(`${file}.sig`, `${fx.dir}/old.toml.sig`);
        await Deno.writeTextFile(file, "# cluster, second\n");
        await signFile(file, caDir);
        await publishManifest(caDir, file);
        const line = dec.decode(await serial.readOnce(off, 256));
        assert.match(line, /^manifest 2 /);
        off += BigInt(line.length);
        await publishManifest(caDir, `${fx.dir}/old.toml`);
        for (let i = 0; i < 50 && !logs.some((l) => /not serving .*serial 1/.test(l)); i++) {
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.ok(
          logs.some((l) => /not serving .*serial 1 is not above serial 2/.test(l)),
          logs.join("\n"),
        );
        // Caught between its two files, the pair is not reported as altered.
        assert.ok(!logs.some((l) => /altered/.test(l)), logs.join("\n"));
        assert.equal(
          dec.decode(await s.client.readFile(s.root, "manifest.toml")),
          "# cluster, second\n",
        );
      });
      await serial.close();
    } finally {
      await s.close();
    }
  } finally {
    signer.close();
    state.close();
    await fx.cleanup();
  }
});

Deno.test("signer tree: also served to ordinary Ferry clients with --tree", async () => {
  const fx = await makeFixture("treeca");
  const caDir = `${fx.dir}/certs`;
  const state = await ClusterState.open(caDir, { log: () => {} });
  const signer = await startSigner(fx.ca, "127.0.0.1", 0, {
    tree: clusterTree(state),
    changed: (s) => state.changed(s),
    treeListen: { host: "127.0.0.1", port: 0 },
    log: () => {},
  });
  try {
    const port = Number(signer.treeAddr!.split("!")[2]);
    const alice = await fx.creds("alice", "user");
    const conn = await tlsDial("127.0.0.1", port, { creds: alice, peer: "signer" });
    const client = await StyxClient.connect(conn);
    try {
      const root = await client.attach("alice");
      const f = await client.openPath(root, "serial", OREAD);
      assert.match(dec.decode(await f.readOnce(0n, 256)), /^manifest 0 crl [0-9a-f]{16}\n$/);
      await f.close();
      assert.equal(dec.decode(await client.readFile(root, "ca.pem")), fx.ca.certPem);
    } finally {
      await client.close();
    }
    const revoked = await fx.creds("mallory", "user");
    await fx.ca.revoke(revoked.serial);
    await assert.rejects(tlsDial("127.0.0.1", port, { creds: revoked, peer: "signer" }), /revoked/);
  } finally {
    signer.close();
    state.close();
    await fx.cleanup();
  }
});

Deno.test("signer tree: who is refused, and revoked or expired sessions end", async (t) => {
  const fx = await makeFixture("treeca");
  const caDir = `${fx.dir}/certs`;
  const logs: string[] = [];
  const state = await ClusterState.open(caDir, { log: (m) => logs.push(m) });
  const signer = await startSigner(fx.ca, "127.0.0.1", 0, {
    tree: clusterTree(state),
    changed: (s) => state.changed(s),
    log: (m) => logs.push(m),
    expiryCheckMs: 200,
  });
  try {
    await t.step("no client certificate", async () => {
      const r = await rawTree(signer.port, "AAAA");
      assert.equal(r.ok, false);
      assert.match(String(r.error), /presented no certificate/);
    });
    await t.step("a certificate from another CA, with the same name", async () => {
      const forged = await selfSigned("n1", "node", fx.ca.certPem, {
        issuerLike: `CN=treeca`,
      });
      await assert.rejects(
        openClusterTree("127.0.0.1", signer.port, forged),
        /the signer refused: .*n1/,
      );
    });
    await t.step("a good certificate with a proof its key did not make", async () => {
      const c = await fx.creds("n1", "node");
      const r = await rawTree(signer.port, btoa("x".repeat(64)), c);
      assert.equal(r.ok, false);
      assert.match(String(r.error), /did not prove possession/);
    });
    await t.step("a revoked certificate", async () => {
      const c = await fx.creds("n2", "node");
      await fx.ca.revoke(c.serial);
      await assert.rejects(
        openClusterTree("127.0.0.1", signer.port, c),
        /the signer refused: .*revoked/,
      );
    });
    await t.step("an open session ends once the CRL revokes its certificate", async () => {
      const c = await fx.creds("n3", "node");
      const s = await openClusterTree("127.0.0.1", signer.port, c);
      assert.equal(signer.watchers, 1);
      await fx.ca.revoke(c.serial);
      await fx.ca.writeCrl();
      await s.closed;
      await s.close();
      assert.ok(logs.some((l) => /ending the tree session of 'n3'/.test(l)), logs.join("\n"));
    });
    await t.step("an open session ends once its certificate expires", async () => {
      const c = await fx.creds("n4", "node", { ttlMs: 1500 });
      const s = await openClusterTree("127.0.0.1", signer.port, c);
      await s.closed;
      await s.close();
      assert.ok(
        logs.some((l) => /ending the tree session of 'n4': its certificate expired/.test(l)),
        logs.join("\n"),
      );
    });
  } finally {
    signer.close();
    state.close();
    await fx.cleanup();
  }
});
