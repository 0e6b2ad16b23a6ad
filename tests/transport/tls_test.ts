import assert from "node:assert/strict";
import tls from "node:tls";
import type { Conn } from "../../lib/transport/conn.ts";
import { memPipe } from "../../lib/transport/pipe.ts";
import { tcpListen } from "../../lib/transport/tcp.ts";
import {
  connDuplex,
  tlsDial,
  tlsListen,
  tlsWrapClient,
  tlsWrapServer,
} from "../../lib/transport/tls.ts";
import type { Credentials, IdentifiedConn, LinkOptions } from "../../lib/auth/link.ts";
import { type Fixture, makeFixture, selfSigned } from "../auth/fixture.ts";
import { importKeyPem, toBase64 } from "../../lib/auth/keys.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Outcome {
  client: Conn | Error;
  server: Conn | string;
}

function port(addr: string): number {
  return Number(addr.split("!").at(-1));
}

/**
 * When Deno's TLS refuses the server's certificate, tlsDial dials again
 * through node:tls so that both ends learn precisely why; the server's
 * report of the first attempt only says the client hung up on it.
 */
const FIRST_ATTEMPT =
  /the other end refused our certificate|fatal alert|closed during the TLS handshake/;

async function overTcp(server: LinkOptions, client: LinkOptions): Promise<Outcome> {
  let refused!: (r: string) => void;
  const refusal = new Promise<string>((r) => (refused = r));
  const l = await tlsListen("127.0.0.1", 0, {
    ...server,
    onRefused: (_a, reason) => {
      if (!FIRST_ATTEMPT.test(reason)) refused(reason);
    },
  });
  try {
    const it = l[Symbol.asyncIterator]();
    const accepted = it.next().then((r) => (r.done ? "listener ended" : r.value));
    const c = await tlsDial("127.0.0.1", port(l.addr), client).catch((e: Error) => e);
    const s = await Promise.race([accepted, refusal]);
    return { client: c, server: s };
  } finally {
    l.close();
  }
}

async function overTunnel(server: LinkOptions, client: LinkOptions): Promise<Outcome> {
  const [a, b] = memPipe();
  let reason = "";
  const [s, c] = await Promise.all([
    tlsWrapServer(a, { ...server, onRefused: (_a, r) => (reason = r) }).catch((e: Error) => e),
    tlsWrapClient(b, { peer: "srv", ...client }).catch((e: Error) => e),
  ]);
  if (s instanceof Error) {
    assert.equal(reason, s.message, "the refusal is reported to onRefused");
  }
  return { client: c, server: s instanceof Error ? s.message : s };
}

const transports = { tcp: overTcp, tunnel: overTunnel };

function closeAll(o: Outcome): void {
  if (!(o.client instanceof Error)) o.client.close();
  if (typeof o.server !== "string") o.server.close();
}

/** Both ends refused, each with a message matching its pattern. */
function assertRefused(o: Outcome, serverRe: RegExp, clientRe: RegExp): void {
  try {
    assert.ok(o.client instanceof Error, "the client must not get a Conn");
    assert.equal(typeof o.server, "string", "the server must not yield a Conn");
    assert.match(o.server as string, serverRe);
    assert.match((o.client as Error).message, clientRe);
  } finally {
    closeAll(o);
  }
}

async function assertWorks(o: Outcome, who: string, kind: string): Promise<void> {
  try {
    assert.ok(!(o.client instanceof Error), `client failed: ${(o.client as Error).message}`);
    assert.ok(typeof o.server !== "string", `server refused: ${o.server}`);
    const c = o.client as Conn;
    const s = o.server as Conn;
    assert.equal(s.peer.identity, who);
    assert.equal(s.peer.kind, kind);
    assert.equal(s.peer.authenticated, true);
    assert.equal(c.peer.identity, "srv");
    assert.equal(c.peer.kind, "node");
    await c.write(enc.encode("Tversion"));
    assert.equal(dec.decode((await s.read())!), "Tversion");
    await s.write(enc.encode("Rversion"));
    assert.equal(dec.decode((await c.read())!), "Rversion");
  } finally {
    closeAll(o);
  }
}

/** Drive a certificate-less node:tls client; returns all it was sent before the end. */
function plainTlsClient(s: tls.TLSSocket): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const t = setTimeout(() => s.destroy(), 10_000);
    s.on("data", (d) => (got += String(d)));
    s.on("error", (e) => (got += `\nerror: ${e.message}`));
    const done = () => {
      clearTimeout(t);
      s.destroy();
      resolve(got);
    };
    s.on("end", done);
    s.on("close", done);
    s.on("secureConnect", () => s.write("hello"));
  });
}

Deno.test("mutual TLS links: every bad input refused on both sides", async (t) => {
  const f: Fixture = await makeFixture("testca");
  const other = await makeFixture("testca"); // another CA with the very same name
  try {
    const srv = await f.creds("srv", "node", { sans: ["127.0.0.1"] });
    const alice = await f.creds("alice", "user", { groups: ["admins"] });
    const node2 = await f.creds("node2", "node");
    const past = new Date(Date.now() - 3 * 86400e3);
    const expired = await f.creds("old", "user", { now: past, ttlMs: 3600e3 });
    const future = await f.creds("early", "user", { now: new Date(Date.now() + 86400e3) });
    const revoked = await f.creds("mallory", "user");
    await f.ca.revoke("mallory");
    const crl = await f.ca.crlPem();
    const srvCrl: Credentials = { ...srv, crl };
    const foreign = await other.creds("alice", "user");
    const forgedAlice = await selfSigned("alice", "user", srv.ca);
    const forgedSrv = await selfSigned("srv", "node", srv.ca, { sans: ["127.0.0.1"] });
    const userAsServer = await f.creds("srvuser", "user", { sans: ["127.0.0.1"] });

    for (const [tname, run] of Object.entries(transports)) {
      await t.step(
        `${tname}: a good user certificate works, identity reaches the server`,
        async () => {
          await assertWorks(await run({ creds: srvCrl }, { creds: alice }), "alice", "user");
        },
      );
      await t.step(`${tname}: closing one end ends the other`, async () => {
        for (const closer of ["server", "client"]) {
          const o = await run({ creds: srv }, { creds: alice });
          const [c, s] = [o.client as Conn, o.server as Conn];
          const [a, b] = closer === "server" ? [s, c] : [c, s];
          await a.write(enc.encode("last words"));
          a.close();
          assert.equal(dec.decode((await b.read())!), "last words");
          assert.equal(await b.read(), null);
          await b.closed;
        }
      });
      await t.step(`${tname}: a node may connect as a client`, async () => {
        await assertWorks(await run({ creds: srv }, { creds: node2 }), "node2", "node");
      });
      await t.step(`${tname}: self-signed certificate with a trusted name`, async () => {
        assertRefused(
          await run({ creds: srv }, { creds: forgedAlice }),
          /self-signed|UnknownIssuer|unknown|certificate/i,
          /refused|closed|certificate/i,
        );
      });
      await t.step(`${tname}: certificate from another CA with the same name`, async () => {
        assertRefused(
          await run({ creds: srv }, { creds: foreign }),
          /signature does not verify|BadSignature|certificate/i,
          /refused|closed|certificate/i,
        );
      });
      await t.step(`${tname}: expired certificate`, async () => {
        assertRefused(
          await run({ creds: srv }, { creds: expired }),
          /expired|Expired/,
          /refused|closed|certificate/i,
        );
      });
      await t.step(`${tname}: not-yet-valid certificate`, async () => {
        assertRefused(
          await run({ creds: srv }, { creds: future }),
          /not valid until|NotValidYet/,
          /refused|closed|certificate/i,
        );
      });
      await t.step(`${tname}: revoked certificate`, async () => {
        assertRefused(
          await run({ creds: srvCrl }, { creds: revoked }),
          /'mallory' \(serial [0-9a-f]+\) has been revoked/,
          /refused the link: client certificate 'mallory' .*has been revoked/,
        );
      });
      await t.step(`${tname}: node certificate where a user certificate is required`, async () => {
        assertRefused(
          await run({ creds: srv, peerKind: "user" }, { creds: node2 }),
          /'node2' is a node certificate where a user certificate is required/,
          /refused the link: .*'node2' is a node certificate where a user certificate is required/,
        );
      });
      await t.step(`${tname}: user certificate where a node certificate is required`, async () => {
        assertRefused(
          await run({ creds: userAsServer }, { creds: alice, peer: "srvuser" }),
          /refused the link: server certificate 'srvuser' is a user certificate without serverAuth/,
          /server certificate 'srvuser' is a user certificate without serverAuth; a server needs a node certificate/,
        );
      });
      await t.step(`${tname}: server self-signed with the right name`, async () => {
        assertRefused(
          await run({ creds: forgedSrv }, { creds: alice }),
          /refused the link: server certificate 'srv' is self-signed/,
          /server certificate 'srv' is self-signed, not issued by this CA/,
        );
      });
      await t.step(`${tname}: server name does not match`, async () => {
        assertRefused(
          await run({ creds: srv }, { creds: alice, peer: "fileserver" }),
          /refused the link: server certificate 'srv' is for .*not 'fileserver'/,
          /server certificate 'srv' is for 'srv', '127.0.0.1', not 'fileserver'/,
        );
      });
      await t.step(`${tname}: allow list by name and group`, async () => {
        assertRefused(
          await run({ creds: srv, allow: ["bob", "group:ops"] }, { creds: alice }),
          /'alice' is not allowed to connect here/,
          /refused the link: 'alice' is not allowed to connect here/,
        );
        await assertWorks(
          await run({ creds: srv, allow: ["bob", "group:admins"] }, { creds: alice }),
          "alice",
          "user",
        );
      });
      await t.step(`${tname}: the injected clock decides validity`, async () => {
        const later = () => new Date(Date.now() + 2 * 86400e3);
        assertRefused(
          await run({ creds: srv, now: later }, { creds: alice }),
          /client certificate 'alice' expired at/,
          /refused the link: client certificate 'alice' expired/,
        );
      });
    }

    await t.step("tcp: no client certificate", async () => {
      let reason = "";
      const l = await tlsListen("127.0.0.1", 0, {
        creds: srv,
        onRefused: (_a, r) => (reason = r),
      });
      try {
        const got = await plainTlsClient(
          tls.connect({
            host: "127.0.0.1",
            port: port(l.addr),
            ca: srv.ca,
            rejectUnauthorized: false,
          }),
        );
        assert.match(got, /ferry-link\/1 refused client presented no certificate/);
        assert.equal(reason, "client presented no certificate");
      } finally {
        l.close();
      }
    });

    await t.step("tunnel: no client certificate", async () => {
      const [a, b] = memPipe();
      let reason = "";
      const server = tlsWrapServer(a, { creds: srv, onRefused: (_a, r) => (reason = r) })
        .catch((e: Error) => e);
      const got = await plainTlsClient(
        tls.connect({ socket: connDuplex(b), ca: srv.ca, rejectUnauthorized: false }),
      );
      const s = await server;
      assert.ok(s instanceof Error);
      assert.equal(s.message, "client presented no certificate");
      assert.equal(reason, s.message);
      assert.match(got, /refused client presented no certificate/);
    });

    await t.step(
      "tcp: a TLS client that is not a Ferry peer is dropped in bounded time",
      async () => {
        let reason = "";
        const l = await tlsListen("127.0.0.1", 0, {
          creds: srv,
          listener: "node",
          handshakeTimeoutMs: 300,
          onRefused: (_a, r) => (reason = r),
        });
        try {
          // A valid certificate, but the client then says nothing (or Styx).
          const got = await plainTlsClient(
            tls.connect({
              host: "127.0.0.1",
              port: port(l.addr),
              ca: srv.ca,
              cert: alice.cert,
              key: alice.key,
              rejectUnauthorized: false,
            }),
          );
          assert.match(got, /ferry-link\/1 proof /);
          assert.doesNotMatch(got, /ferry-link\/1 ok/);
          assert.match(reason, /did not finish within 300 ms|closed|not a Ferry peer/);
        } finally {
          l.close();
        }
      },
    );

    await t.step("tcp: garbage and a plain Styx client; the listener survives", async () => {
      const reasons: string[] = [];
      const l = await tlsListen("127.0.0.1", 0, {
        creds: srv,
        onRefused: (_a, r) => reasons.push(r),
      });
      try {
        const tversion = new Uint8Array([
          19,
          0,
          0,
          0,
          100,
          0xff,
          0xff,
          0,
          0x20,
          0,
          0,
          6,
          0,
          ...enc.encode("9P2000"),
        ]);
        for (const bytes of [enc.encode("GET / HTTP/1.0\r\n\r\n" + "x".repeat(300)), tversion]) {
          const c = await Deno.connect({ hostname: "127.0.0.1", port: port(l.addr) });
          await c.write(bytes);
          const buf = new Uint8Array(512);
          const n = await c.read(buf).catch(() => null);
          // The listener answers with at most a TLS alert, never Styx, and hangs up.
          if (n !== null) assert.equal(buf[0], 0x15, "only a TLS alert may come back");
          c.close();
        }
        while (reasons.length < 2) await new Promise((r) => setTimeout(r, 10));
        for (const r of reasons) assert.match(r, /does not speak TLS|TLS|closed|invalid|message/i);
        // Still serving.
        const it = l[Symbol.asyncIterator]();
        const next = it.next();
        const c = await tlsDial("127.0.0.1", port(l.addr), { creds: alice });
        const s = (await next).value as Conn;
        assert.equal(s.peer.identity, "alice");
        c.close();
        s.close();
      } finally {
        l.close();
      }
    });

    await t.step("tunnel: garbage and a plain Styx client instead of a ClientHello", async () => {
      for (
        const bytes of [
          enc.encode("\x00\x01garbage garbage garbage"),
          new Uint8Array([
            19,
            0,
            0,
            0,
            100,
            0xff,
            0xff,
            0,
            0x20,
            0,
            0,
            6,
            0,
            ...enc.encode("9P2000"),
          ]),
        ]
      ) {
        const [a, b] = memPipe();
        const server = tlsWrapServer(a, { creds: srv, onRefused: () => {} }).catch((e: Error) => e);
        await b.write(bytes);
        const s = await server;
        assert.ok(s instanceof Error);
        assert.match(s.message, /TLS|closed|message/i);
        b.close();
      }
    });

    await t.step("tcp: a TLS client against a plain (-A) listener", async () => {
      const plain = tcpListen("127.0.0.1", 0);
      const served = (async () => {
        for await (const c of plain) {
          await c.read();
          // What a plain Styx server says to bytes it cannot parse.
          await c.write(new Uint8Array([7, 0, 0, 0, 107, 0xff, 0xff])).catch(() => {});
          c.close();
          return;
        }
      })();
      const err = await tlsDial("127.0.0.1", port(plain.addr), { creds: alice }).catch((e: Error) =>
        e
      );
      assert.ok(err instanceof Error);
      assert.match(err.message, /does not speak TLS|closed|TLS/i);
      await served;
      plain.close();
    });

    await t.step("tunnel: a TLS client against a plain (-A) end", async () => {
      const [a, b] = memPipe();
      const client = tlsWrapClient(b, { creds: alice, peer: "srv" }).catch((e: Error) => e);
      await a.read();
      await a.write(new Uint8Array([7, 0, 0, 0, 107, 0xff, 0xff]));
      a.close();
      const err = await client;
      assert.ok(err instanceof Error);
      assert.match(err.message, /does not speak TLS|closed|TLS/i);
    });
  } finally {
    await f.cleanup();
    await other.cleanup();
  }
});

Deno.test("rotation and revocation under open sessions", async (t) => {
  const f = await makeFixture("rotca");
  try {
    let srv: Credentials = await f.creds("srv", "node", { sans: ["127.0.0.1"] });
    const alice = await f.creds("alice", "user");
    const revokedNow = new Set<string>();
    const l = await tlsListen("127.0.0.1", 0, {
      creds: () => srv,
      revoked: () => revokedNow,
      revocationCheckMs: 50,
      onRefused: () => {},
    });
    const it = l[Symbol.asyncIterator]();
    try {
      const next = it.next();
      const c1 = await tlsDial("127.0.0.1", port(l.addr), { creds: alice }) as IdentifiedConn;
      const s1 = (await next).value as Conn;
      const firstSerial = c1.peerCert.serial;

      await t.step(
        "a listener picks up renewed credentials without dropping sessions",
        async () => {
          srv = await f.creds("srv", "node", { sans: ["127.0.0.1"] });
          const n2 = it.next();
          const c2 = await tlsDial("127.0.0.1", port(l.addr), { creds: alice }) as IdentifiedConn;
          const s2 = (await n2).value as Conn;
          assert.notEqual(
            c2.peerCert.serial,
            firstSerial,
            "new handshakes use the new certificate",
          );
          await c1.write(enc.encode("still here"));
          assert.equal(dec.decode((await s1.read())!), "still here");
          c2.close();
          s2.close();
        },
      );

      await t.step("revoking the client ends its open session and refuses new ones", async () => {
        revokedNow.add((s1 as IdentifiedConn).peerCert.serial);
        await s1.closed;
        assert.equal(await c1.read(), null, "the client sees the session end");
        const err = await tlsDial("127.0.0.1", port(l.addr), { creds: alice }).catch((e: Error) =>
          e
        );
        assert.ok(err instanceof Error);
        assert.match(err.message, /has been revoked/);
      });
      c1.close();
    } finally {
      l.close();
    }
  } finally {
    await f.cleanup();
  }
});

/** Alice's real certificate and key in TLS; the ferry-link/1 proof line as `proof` makes it. */
async function boundProofClient(
  p: number,
  alice: Credentials,
  proof: (binding: Uint8Array) => Promise<string>,
): Promise<string[]> {
  const s = tls.connect({
    host: "127.0.0.1",
    port: p,
    ca: alice.ca,
    cert: alice.cert,
    key: alice.key,
    rejectUnauthorized: false,
    checkServerIdentity: () => undefined,
  });
  let got = "";
  const ended = new Promise<void>((resolve) => {
    const t = setTimeout(() => s.destroy(), 10_000);
    s.on("data", (d) => (got += String(d)));
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(t);
      resolve();
    });
  });
  await new Promise<void>((r) => s.once("secureConnect", () => r()));
  const mine = s.getFinished()!;
  const theirs = s.getPeerFinished()!;
  const binding = new Uint8Array(mine.length + theirs.length);
  binding.set(mine, 0);
  binding.set(theirs, mine.length);
  s.write(`${await proof(binding)}\n`);
  await ended;
  return got.split("\n").filter((l) => l !== "");
}

async function boundSignature(key: string, binding: Uint8Array): Promise<string> {
  const k = await importKeyPem(key, "test key");
  const label = enc.encode("ferry-link/1 client ");
  const msg = new Uint8Array(label.length + binding.length);
  msg.set(label, 0);
  msg.set(binding, label.length);
  return toBase64(new Uint8Array(await crypto.subtle.sign("Ed25519", k, msg)));
}

Deno.test("ferry-link/1: forged proofs over a real certificate are refused", async (t) => {
  const f: Fixture = await makeFixture("testca");
  const reasons: string[] = [];
  try {
    const srv = await f.creds("srv", "node", { sans: ["127.0.0.1"] });
    const alice = await f.creds("alice", "user");
    const bob = await f.creds("bob", "user");
    // ferry-link/1 is node:tls's dialect: Deno's TLS listener speaks only ferry-link/2.
    const l = await tlsListen("127.0.0.1", 0, {
      creds: srv,
      listener: "node",
      onRefused: (_a, r) => reasons.push(r),
    });
    const accepted: Conn[] = [];
    const serving = (async () => {
      for await (const c of l) accepted.push(c);
    })();
    const forged = async (
      name: string,
      proof: (binding: Uint8Array) => Promise<string>,
      want: RegExp,
    ) => {
      await t.step(name, async () => {
        const before = reasons.length;
        const lines = await boundProofClient(port(l.addr), alice, proof);
        // The server proved itself and challenged, then refused, and hung up.
        assert.match(lines[0] ?? "", /^ferry-link\/1 proof /);
        assert.match(lines.at(-1) ?? "", /^ferry-link\/1 refused /);
        assert.match(lines.at(-1)!, want);
        for (let i = 0; i < 1000 && reasons.length === before; i++) {
          await new Promise((r) => setTimeout(r, 2));
        }
        assert.match(reasons[before] ?? "", want);
      });
    };
    try {
      await forged(
        "alice's certificate with a proof signed by another key",
        (b) => boundSignature(bob.key, b).then((sig) => `ferry-link/1 proof ${sig}`),
        /client 'alice' did not prove possession of its certificate key/,
      );
      await forged(
        "alice's own signature over another session",
        (b) =>
          boundSignature(alice.key, b.map((x) => x ^ 1)).then((sig) => `ferry-link/1 proof ${sig}`),
        /client 'alice' did not prove possession of its certificate key/,
      );
      await forged(
        "a proof that is not base64",
        () => Promise.resolve("ferry-link/1 proof !!!"),
        /client is not a Ferry peer \(no link proof\)/,
      );
      await forged(
        "no proof at all",
        () => Promise.resolve("hello"),
        /client is not a Ferry peer \(no link proof\)/,
      );
      await t.step("the real proof is accepted", async () => {
        const n = accepted.length;
        const client = boundProofClient(port(l.addr), alice, async (b) => {
          const sig = await boundSignature(alice.key, b);
          return `ferry-link/1 proof ${sig}\nferry-link/1 ok`;
        });
        for (let i = 0; i < 5000 && accepted.length === n; i++) {
          await new Promise((r) => setTimeout(r, 2));
        }
        assert.equal((accepted[n] as IdentifiedConn | undefined)?.peer.identity, "alice");
        // The server's hang-up ends the hand-driven client.
        accepted[n]!.close();
        assert.deepEqual((await client).slice(-1), ["ferry-link/1 ok"]);
      });
    } finally {
      l.close();
      await serving;
      for (const c of accepted) c.close();
    }
  } finally {
    await f.cleanup();
  }
});
