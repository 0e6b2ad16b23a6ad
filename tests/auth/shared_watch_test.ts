/**
 * One credentials source per directory: every watch of a directory in a
 * process is the same watch, and a TLS listener or wrapped server link
 * given a mere snapshot from `loadCredentials` still follows it, so a new
 * CRL ends revoked sessions and a renewed certificate is served. Real TLS
 * with certificates from the project's CA, over TCP and over a pipe (the
 * way a tunnel through a remote /net carries it).
 */
import assert from "node:assert/strict";
import { CertificateAuthority, writeCredentials } from "../../lib/auth/ca.ts";
import { type IdentifiedConn, loadCredentials, watchCredentials } from "../../lib/auth/link.ts";
import { encryptKeyPem } from "../../lib/auth/keys.ts";
import { memPipe } from "../../lib/transport/pipe.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { tlsDial, tlsListen, tlsWrapClient, tlsWrapServer } from "../../lib/transport/tls.ts";

interface Dirs {
  tmp: string;
  ca: CertificateAuthority;
  /** The server's directory: also the CA's, so revoking rewrites its crl.pem. */
  srv: string;
  /** The client's own directory. */
  cli: string;
}

async function setup(): Promise<Dirs> {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-shared-watch-" });
  const srv = `${tmp}/ca`;
  const ca = await CertificateAuthority.init(srv, "watch-ca");
  const s = await ca.issue("srv", { kind: "node", sans: ["127.0.0.1"] });
  await writeCredentials(srv, "srv", s.certPem, s.keyPem, { force: true });
  const cli = `${tmp}/alice`;
  const c = await ca.issue("alice", { kind: "user" });
  await writeCredentials(cli, "alice", c.certPem, c.keyPem, { force: true });
  await Deno.writeTextFile(`${cli}/ca.pem`, ca.certPem);
  return { tmp, ca, srv, cli };
}

/**
 * Resolves when `c` closes; the watch was just reloaded, so it should be at
 * once, and a link that never ends fails the test instead of hanging it.
 */
async function ends(c: Conn): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the revoked session is still open")), 10_000);
  });
  try {
    await Promise.race([c.closed, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function teardown(d: Dirs): Promise<void> {
  d.ca.close();
  await Deno.remove(d.tmp, { recursive: true });
}

Deno.test("every watch of a directory is one watch", async () => {
  const d = await setup();
  try {
    const a = await watchCredentials(d.srv, "srv", { intervalMs: 60_000 });
    const b = await watchCredentials(d.srv, "srv", { intervalMs: 60_000 });
    try {
      assert.equal(a.current(), b.current());
      let seen = 0;
      b.onChange(() => seen++);
      const r = await d.ca.issue("srv", { kind: "node" });
      await writeCredentials(d.srv, "srv", r.certPem, r.keyPem, { force: true });
      await a.reload();
      assert.equal(b.current().cert, r.certPem, "a reload through one handle reaches the other");
      assert.equal(seen, 1);
      a.close();
      // The watch outlives one handle while another still holds it.
      await d.ca.revoke("alice");
      await b.reload();
      assert.equal(b.current().crl, await Deno.readTextFile(`${d.srv}/crl.pem`));
      assert.equal(seen, 2);
    } finally {
      a.close();
      b.close();
    }
  } finally {
    await teardown(d);
  }
});

Deno.test("a new CRL needs no second passphrase for an unchanged encrypted key", async () => {
  const d = await setup();
  try {
    const k = await Deno.readTextFile(`${d.srv}/srv.key`);
    await Deno.writeTextFile(`${d.srv}/srv.key`, await encryptKeyPem(k, "s3cret"), { mode: 0o600 });
    Deno.env.set("FERRY_PASSPHRASE", "s3cret");
    const w = await watchCredentials(d.srv, "srv", { intervalMs: 60_000 });
    Deno.env.delete("FERRY_PASSPHRASE");
    const errors: string[] = [];
    const w2 = await watchCredentials(d.srv, "srv", { onError: (e) => errors.push(e.message) });
    try {
      await d.ca.revoke("alice");
      await w.reload();
      assert.deepEqual(errors, []);
      assert.equal(w.current().crl, await Deno.readTextFile(`${d.srv}/crl.pem`));
      assert.equal(w.current().key, k);
    } finally {
      w.close();
      w2.close();
    }
  } finally {
    Deno.env.delete("FERRY_PASSPHRASE");
    await teardown(d);
  }
});

Deno.test("a listener given a snapshot still follows its directory", async (t) => {
  const d = await setup();
  try {
    const alice = await loadCredentials(d.cli, "alice");
    // What a caller that loads once and hands over the result does.
    const snapshot = await loadCredentials(d.srv, "srv");
    const first = d.ca.list().find((r) => r.name === "srv")!.serial;

    await t.step("tlsListen: renewed certificate served, revoked session ended", async () => {
      const l = await tlsListen("127.0.0.1", 0, { creds: snapshot, onRefused: () => {} });
      const port = Number(l.addr.split("!")[2]);
      const it = l[Symbol.asyncIterator]();
      try {
        const accepted = it.next();
        const c1 = await tlsDial("127.0.0.1", port, { creds: alice, peer: "srv" });
        const s1 = (await accepted).value as IdentifiedConn;
        assert.equal((c1 as IdentifiedConn).peerCert.serial, first);
        const r = await d.ca.issue("srv", { kind: "node", sans: ["127.0.0.1"] });
        await writeCredentials(d.srv, "srv", r.certPem, r.keyPem, { force: true });
        const w = await watchCredentials(d.srv, "srv");
        try {
          await w.reload();
          const next = it.next();
          const c2 = await tlsDial("127.0.0.1", port, { creds: alice, peer: "srv" });
          assert.equal((c2 as IdentifiedConn).peerCert.serial, r.serial);
          ((await next).value as IdentifiedConn).close();
          c2.close();
          await c1.write(new TextEncoder().encode("still here"));
          assert.equal(new TextDecoder().decode((await s1.read())!), "still here");
          await d.ca.revoke("alice");
          await w.reload();
          await ends(s1);
          assert.equal(await c1.read(), null);
          await assert.rejects(
            tlsDial("127.0.0.1", port, { creds: alice, peer: "srv" }),
            /client certificate 'alice' .*has been revoked/,
          );
        } finally {
          w.close();
          c1.close();
        }
      } finally {
        l.close();
      }
    });
  } finally {
    await teardown(d);
  }
});

Deno.test("a wrapped server link given a snapshot ends when its client is revoked", async () => {
  const d = await setup();
  try {
    const alice = await loadCredentials(d.cli, "alice");
    const snapshot = await loadCredentials(d.srv, "srv");
    const [a, b] = memPipe();
    const [s, c] = await Promise.all([
      tlsWrapServer(a, { creds: snapshot, onRefused: () => {} }),
      tlsWrapClient(b, { creds: alice, peer: "srv" }),
    ]);
    const w = await watchCredentials(d.srv, "srv");
    try {
      await d.ca.revoke("alice");
      await w.reload();
      await ends(s);
      assert.equal(await c.read(), null);
      const [a2, b2] = memPipe();
      const [s2, c2] = await Promise.all([
        tlsWrapServer(a2, { creds: snapshot, onRefused: () => {} }).catch((e: Error) => e),
        tlsWrapClient(b2, { creds: alice, peer: "srv" }).catch((e: Error) => e),
      ]);
      assert.ok(s2 instanceof Error && c2 instanceof Error);
      assert.match(s2.message, /client certificate 'alice' .*has been revoked/);
    } finally {
      w.close();
      c.close();
      s.close();
    }
  } finally {
    await teardown(d);
  }
});
