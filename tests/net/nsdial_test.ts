import assert from "node:assert/strict";
import { NetDevice } from "../../lib/dev/net/device.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { Namespace } from "../../lib/ns/namespace.ts";
import { serve } from "../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn, Listener } from "../../lib/transport/conn.ts";
import {
  accept,
  announce,
  announceListener,
  announceStyxVia,
  dial,
  dialStyxVia,
  type FileConn,
  listen,
} from "../../lib/net/nsdial.ts";
import { makeFixture } from "../auth/fixture.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function nsWithNet(tree: import("../../lib/fs/tree.ts").Tree): Promise<Namespace> {
  const mem = new MemTree();
  await mem.mkdirp("/net");
  const ns = new Namespace(mem, { caller: { user: "glenda" } });
  await ns.mount(tree, "/net");
  return ns;
}

async function readExactly(c: Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const b = await c.read();
    if (b === null) break;
    out.set(b.subarray(0, n - got), got);
    got += b.length;
  }
  return out.subarray(0, got);
}

/** A host echo server counting its connections' remote addresses. */
function echo(): { port: number; peers: string[]; close(): void } {
  const l = tcpListen("127.0.0.1", 0);
  const peers: string[] = [];
  const conns: Conn[] = [];
  (async () => {
    for await (const c of l) {
      peers.push(c.peer.addr);
      conns.push(c);
      (async () => {
        for (;;) {
          const b = await c.read();
          if (b === null) break;
          await c.write(b);
        }
        c.close();
      })();
    }
  })();
  return {
    port: Number(l.addr.split("!")[2]),
    peers,
    close() {
      l.close();
      for (const c of conns) c.close();
    },
  };
}

/** Serve `dev` over real TCP as a "remote" machine would export its /net. */
function exportNet(dev: NetDevice): { port: number; conns: Conn[]; close(): void } {
  const l: Listener = tcpListen("127.0.0.1", 0);
  const conns: Conn[] = [];
  (async () => {
    for await (const c of l) {
      conns.push(c);
      serve(c, dev.tree()).catch(() => {});
    }
  })();
  return {
    port: Number(l.addr.split("!")[2]),
    conns,
    close() {
      l.close();
      for (const c of conns) c.close();
    },
  };
}

Deno.test("nsdial through a local /net", async (t) => {
  const dev = new NetDevice();
  const ns = await nsWithNet(dev.tree());
  const e = echo();
  try {
    await t.step("dial, bulk echo, close hangs up", async () => {
      const c = await dial(ns, `tcp!127.0.0.1!${e.port}`);
      assert.match(c.peer.addr, new RegExp(`^tcp!127\\.0\\.0\\.1!${e.port}$`));
      assert.match(c.local, /^tcp!127\.0\.0\.1!\d+$/);
      const big = new Uint8Array(2_000_000).map((_, i) => (i * 7) & 0xff);
      const [, back] = await Promise.all([c.write(big), readExactly(c, big.length)]);
      assert.equal(back.length, big.length);
      assert.deepEqual(back, big);
      c.close();
      await c.closed;
      assert.deepEqual(dev.conversations(), []);
    });
    await t.step("dial by name through cs; errors name the address", async () => {
      const c = await dial(ns, `localhost!${e.port}`);
      c.close();
      await c.closed;
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const dead = l.addr.port;
      l.close();
      await assert.rejects(
        dial(ns, `tcp!127.0.0.1!${dead}`),
        new RegExp(`cannot dial 'tcp!127.0.0.1!${dead}': connection refused`),
      );
      await assert.rejects(dial(ns, "tcp!nohost"), /cannot dial 'tcp!nohost': .*missing port/);
      assert.deepEqual(dev.conversations(), []);
    });
    await t.step("announce, listen, accept", async () => {
      const ann = await announce(ns, "tcp!127.0.0.1!0");
      const port = ann.addr.split("!")[1];
      const [call, out] = await Promise.all([
        listen(ns, ann),
        dial(ns, `tcp!127.0.0.1!${port}`),
      ]);
      const inn = await accept(ns, call);
      await out.write(enc.encode("over"));
      assert.equal(dec.decode(await readExactly(inn, 4)), "over");
      out.close();
      assert.equal(await inn.read(), null);
      inn.close();
      await ann.close();
      await Promise.all([out.closed, inn.closed]);
      assert.deepEqual(dev.conversations(), []);
    });
  } finally {
    e.close();
    dev.closeAll();
    await ns.close();
  }
});

Deno.test("nsdial: a cs answer naming another clone file is followed", async () => {
  // cs of the device at /net answers with /net.alt's clone file; the
  // conversation opened at /net while cs was asked is closed unused.
  const here = new NetDevice({ netRoot: "/net.alt" });
  const alt = new NetDevice();
  const mem = new MemTree();
  await mem.mkdirp("/net");
  await mem.mkdirp("/net.alt");
  const ns = new Namespace(mem, { caller: { user: "glenda" } });
  await ns.mount(here.tree(), "/net");
  await ns.mount(alt.tree(), "/net.alt");
  const e = echo();
  try {
    const c = await dial(ns, `tcp!127.0.0.1!${e.port}`);
    assert.deepEqual(here.conversations(), []);
    assert.deepEqual(alt.conversations(), [0]);
    assert.equal((c as FileConn).dir, "/net.alt/tcp/0");
    await c.write(enc.encode("via alt"));
    assert.equal(dec.decode(await readExactly(c, 7)), "via alt");
    c.close();
    await c.closed;
    assert.deepEqual(alt.conversations(), []);
  } finally {
    e.close();
    here.closeAll();
    alt.closeAll();
    await ns.close();
  }
});

Deno.test("nsdial through a remote /net mounted over Styx", async (t) => {
  const remoteDev = new NetDevice();
  const exp = exportNet(remoteDev);
  const e = echo();
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", exp.port));
  const ns = await nsWithNet(new RemoteTree(client));
  try {
    await t.step("dial goes out through the remote's conversations", async () => {
      const c = await dial(ns, `tcp!127.0.0.1!${e.port}`);
      assert.equal(remoteDev.conversations().length, 1);
      const big = new Uint8Array(3_000_000).map((_, i) => i & 0xff);
      const [, back] = await Promise.all([c.write(big), readExactly(c, big.length)]);
      assert.deepEqual(back, big);
      c.close();
      await c.closed;
      assert.deepEqual(remoteDev.conversations(), []);
    });

    await t.step("request and answer in turn: every answer whole and in order", async () => {
      // After the first read, each write also tops up the reads in flight.
      const c = await dial(ns, `tcp!127.0.0.1!${e.port}`);
      for (let i = 0; i < 200; i++) {
        const msg = new Uint8Array(1 + (i * 37) % 3000).map((_, k) => (k + i) & 0xff);
        await c.write(msg);
        assert.deepEqual(await readExactly(c, msg.length), msg);
      }
      c.close();
      await c.closed;
      assert.deepEqual(remoteDev.conversations(), []);
    });

    await t.step(
      "reads into small buffers, mixed with read(): the stream whole, held chunks intact",
      async () => {
        // readInto hands each reply's buffer back for reuse; a chunk that
        // read() returned belongs to its caller and must never be reused.
        const c = await dial(ns, `tcp!127.0.0.1!${e.port}`) as FileConn;
        const big = new Uint8Array(6_000_000).map((_, i) => (i * 7 + (i >> 16)) & 0xff);
        const sizes = [1, 7, 4096, 100_000, 300_000, 65_536];
        const got = new Uint8Array(big.length);
        const held: { at: number; chunk: Uint8Array; copy: Uint8Array }[] = [];
        const reader = (async () => {
          let off = 0;
          for (let i = 0; off < big.length; i++) {
            if (i % 5 === 4) {
              const b = await c.read();
              if (b === null) break;
              held.push({ at: off, chunk: b, copy: b.slice() });
              got.set(b, off);
              off += b.length;
            } else {
              const buf = new Uint8Array(sizes[i % sizes.length]!);
              const n = await c.readInto(buf);
              if (n === null) break;
              got.set(buf.subarray(0, n), off);
              off += n;
            }
          }
          return off;
        })();
        await c.write(big);
        assert.equal(await reader, big.length);
        assert.ok(got.every((v, i) => v === big[i]), "the stream arrived changed");
        assert.ok(held.length > 0);
        for (const h of held) assert.deepEqual(h.chunk, h.copy, `chunk at ${h.at} was overwritten`);
        c.close();
        await c.closed;
      },
    );

    await t.step("announce on the remote; a third party dials the remote's port", async () => {
      const l = await announceListener(ns, "tcp!127.0.0.1!0");
      const port = Number(l.addr.split("!")[2]);
      const it = l[Symbol.asyncIterator]();
      const next = it.next();
      const third = await tcpDial("127.0.0.1", port);
      const r = await next;
      assert.ok(!r.done);
      const inn = r.value;
      await third.write(enc.encode("from third"));
      assert.equal(dec.decode(await readExactly(inn, 10)), "from third");
      await inn.write(enc.encode("back"));
      assert.equal(dec.decode(await readExactly(third, 4)), "back");
      third.close();
      inn.close();
      l.close();
      await inn.closed;
    });

    await t.step("Styx through the tunnel, plain (-A)", async () => {
      const mem = new MemTree();
      await mem.writeFile("/hello", "from the client");
      const l = await announceStyxVia(ns, "tcp!127.0.0.1!0", { insecure: true });
      const port = Number(l.addr.split("!")[2]);
      (async () => {
        for await (const c of l) serve(c, mem).catch(() => {});
      })();
      const d = await dialStyxVia(ns, `tcp!127.0.0.1!${port}`, { insecure: true });
      const root = await d.tree.attach({ user: "third" }, "");
      const { node } = await root.walk(["hello"]);
      const f = await node!.open(0);
      assert.equal(dec.decode(await f.read(0n, 100)), "from the client");
      await f.close();
      await node!.close();
      await root.close();
      d.close();
      l.close();
    });

    await t.step(
      "mutual TLS end to end through the tunnel; a forged client is refused",
      async () => {
        const fx = await makeFixture();
        try {
          const srv = await fx.creds("srv", "node");
          const alice = await fx.creds("alice", "user");
          const mem = new MemTree();
          await mem.writeFile("/x", "secret");
          const refused: string[] = [];
          const l = await announceStyxVia(ns, "tcp!127.0.0.1!0", {
            insecure: false,
            creds: srv,
            onRefused: (_a, why) => refused.push(why),
          });
          const port = Number(l.addr.split("!")[2]);
          const ids: string[] = [];
          (async () => {
            for await (const c of l) {
              ids.push(c.peer.identity ?? "?");
              serve(c, mem).catch(() => {});
            }
          })();
          const d = await dialStyxVia(ns, `tcp!127.0.0.1!${port}`, {
            insecure: false,
            creds: alice,
            peer: "srv",
          });
          assert.equal(d.peerIdentity, "srv");
          const root = await d.tree.attach({ user: "alice" }, "");
          const { node } = await root.walk(["x"]);
          const f = await node!.open(0);
          assert.equal(dec.decode(await f.read(0n, 100)), "secret");
          await f.close();
          await node!.close();
          await root.close();
          d.close();
          assert.deepEqual(ids, ["alice"]);
          // A client certificate from another CA never gets a Styx session.
          const other = await makeFixture("otherca");
          try {
            const mallory = await other.creds("alice", "user");
            await assert.rejects(
              dialStyxVia(ns, `tcp!127.0.0.1!${port}`, {
                insecure: false,
                creds: { ...mallory, ca: srv.ca },
                peer: "srv",
              }),
            );
            assert.deepEqual(ids, ["alice"]);
          } finally {
            await other.cleanup();
          }
          l.close();
        } finally {
          await fx.cleanup();
        }
      },
    );

    await t.step("a remote /net that vanishes: reads end, dials fail", async () => {
      const c = await dial(ns, `tcp!127.0.0.1!${e.port}`);
      exp.close();
      await client.closed;
      assert.equal(await c.read(), null);
      c.close();
      await assert.rejects(dial(ns, `tcp!127.0.0.1!${e.port}`), /cannot dial/);
    });
  } finally {
    e.close();
    exp.close();
    await client.close();
    remoteDev.closeAll();
    await ns.close().catch(() => {});
  }
});

Deno.test("the shell survives a remote /net that vanishes", async () => {
  const { harness } = await import("../sh/harness.ts");
  const localDev = new NetDevice();
  const remoteDev = new NetDevice();
  const exp = exportNet(remoteDev);
  const ns = await nsWithNet(localDev.tree());
  const { sh, out, err } = harness({ ns, user: "glenda" });
  const e = echo();
  try {
    assert.equal(await sh.run(`mount -A 'tcp!127.0.0.1!${exp.port}' /net`), "", err.text());
    const c = await dial(ns, `tcp!127.0.0.1!${e.port}`);
    assert.equal(remoteDev.conversations().length, 1, "the dial left from the remote");
    exp.close();
    assert.equal(await c.read(), null);
    c.close();
    err.clear();
    assert.notEqual(await sh.run(`webgrab http://127.0.0.1:${e.port}/x`), "");
    assert.match(err.text(), /webgrab: /);
    assert.equal(await sh.run("echo alive"), "");
    assert.match(out.text(), /alive/);
  } finally {
    e.close();
    exp.close();
    remoteDev.closeAll();
    localDev.closeAll();
    await ns.close().catch(() => {});
  }
});
