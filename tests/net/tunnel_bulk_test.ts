/**
 * Bulk streams through a remote /net mounted over mutual TLS, with mutual
 * TLS run end to end inside the tunnelled stream as well: every byte in
 * both directions arrives, once, in order.
 */

import assert from "node:assert/strict";
import { NetDevice } from "../../lib/dev/net/device.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { Namespace } from "../../lib/ns/namespace.ts";
import { serve } from "../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { tlsDial, tlsListen, tlsWrapClient } from "../../lib/transport/tls.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { dial, type FileConn } from "../../lib/net/nsdial.ts";
import { makeFixture } from "../auth/fixture.ts";

/**
 * Byte `i` of a test stream: the little-endian bytes of the 32-bit word
 * number i/4, so a piece that is lost, repeated or out of place shows.
 */
function streamByte(i: number, seed: number): number {
  return (((Math.floor(i / 4) ^ seed) >>> (8 * (i % 4))) & 0xff);
}

/** Bytes [`off`, `off + n`) of the stream with `seed`. */
function streamBytes(off: number, n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let j = 0; j < n; j++) b[j] = streamByte(off + j, seed);
  return b;
}

/** Checks a stream as it arrives, without holding it. */
class StreamCheck {
  got = 0;
  bad = -1;
  constructor(readonly seed: number) {}
  add(chunk: Uint8Array): void {
    if (this.bad < 0) {
      for (let j = 0; j < chunk.length; j++) {
        if (chunk[j] !== streamByte(this.got + j, this.seed)) {
          this.bad = this.got + j;
          break;
        }
      }
    }
    this.got += chunk.length;
  }
}

/** Write `size` bytes of the stream with `seed`, in writes of varied sizes. */
async function sendStream(c: Conn, size: number, seed: number): Promise<void> {
  const sizes = [1, 4093, 256 * 1024, 65_536, 7, 1024 * 1024 + 3, 100_000];
  for (let off = 0, i = 0; off < size; i++) {
    const n = Math.min(sizes[i % sizes.length]!, size - off);
    await c.write(streamBytes(off, n, seed));
    off += n;
  }
}

/** Read until `size` bytes came or the stream ended, checking each with `check`. */
async function recvStream(c: Conn, size: number, check: StreamCheck): Promise<StreamCheck> {
  while (check.got < size) {
    const b = await c.read();
    if (b === null) break;
    check.add(b);
  }
  return check;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

/** Read exactly `n` bytes; also what came with them beyond `n` (empty if nothing). */
async function readN(c: Conn, n: number): Promise<{ head: Uint8Array; rest: Uint8Array }> {
  const parts: Uint8Array[] = [];
  let got = 0;
  while (got < n) {
    const b = await c.read();
    if (b === null) throw new Error(`stream ended after ${got} of ${n} bytes`);
    parts.push(b);
    got += b.length;
  }
  const all = new Uint8Array(got);
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return { head: all.subarray(0, n), rest: all.subarray(n) };
}

Deno.test("bulk streams through a remote /net over mutual TLS arrive whole and in order", async (t) => {
  const fx = await makeFixture("tunnelca");
  const relayCreds = await fx.creds("relay", "node", { sans: ["127.0.0.1"] });
  const farCreds = await fx.creds("far", "node", { sans: ["127.0.0.1"] });
  const alice = await fx.creds("alice", "user");

  // The remote machine: its /net exported over mutual TLS.
  const remoteDev = new NetDevice();
  const exportL = await tlsListen("127.0.0.1", 0, { creds: relayCreds });
  const exportLoop = (async () => {
    for await (const c of exportL) serve(c, remoteDev.tree()).catch(() => {});
  })();

  // The far end, reached only through the tunnel: also mutual TLS. A call
  // says what it wants in 12 bytes: a direction ("up  ": it receives, "down":
  // it sends, "echo"), a size and a seed.
  const farL = await tlsListen("127.0.0.1", 0, { creds: farCreds });
  const farIds: string[] = [];
  const farLoop = (async () => {
    for await (const c of farL) {
      farIds.push(c.peer.identity ?? "?");
      (async () => {
        try {
          const { head, rest } = await readN(c, 12);
          const what = new TextDecoder().decode(head.subarray(0, 4));
          const size = new DataView(head.buffer, head.byteOffset).getUint32(4);
          const seed = new DataView(head.buffer, head.byteOffset).getUint32(8);
          if (what === "up  ") {
            const check = new StreamCheck(seed);
            check.add(rest);
            await recvStream(c, size, check);
            await c.write(new Uint8Array([...u32(check.got), ...u32(check.bad + 1)]));
          } else if (what === "down") {
            await sendStream(c, size, seed);
          } else {
            if (rest.length > 0) await c.write(rest);
            for (let got = rest.length; got < size;) {
              const b = await c.read();
              if (b === null) break;
              await c.write(b);
              got += b.length;
            }
          }
          if ("flush" in c && typeof c.flush === "function") await c.flush();
        } catch { /* the client checks what arrived */ }
        await new Promise((r) => setTimeout(r, 50)); // let the last bytes leave
        c.close();
      })();
    }
  })();

  const relayPort = Number(exportL.addr.split("!")[2]);
  const farPort = Number(farL.addr.split("!")[2]);
  const client = await StyxClient.connect(
    await tlsDial("127.0.0.1", relayPort, { creds: alice, peer: "relay" }),
  );
  const mem = new MemTree();
  await mem.mkdirp("/net");
  const ns = new Namespace(mem, { caller: { user: "alice" } });
  await ns.mount(new RemoteTree(client), "/net");

  /** A mutual-TLS stream to the far end, through the remote's /net. */
  const call = async (what: string, size: number, seed: number): Promise<Conn> => {
    const raw = await dial(ns, `tcp!127.0.0.1!${farPort}`);
    const c = await tlsWrapClient(raw, { creds: alice, peer: "far" });
    assert.equal(c.peer.identity, "far");
    await c.write(new Uint8Array([...new TextEncoder().encode(what), ...u32(size), ...u32(seed)]));
    return c;
  };
  const size = 24 * 1024 * 1024 + 5;
  try {
    await t.step("24 MiB sent from the client reach the far end intact and in order", async () => {
      const c = await call("up  ", size, 0x5eed1);
      await sendStream(c, size, 0x5eed1);
      const { head: reply } = await readN(c, 8);
      const v = new DataView(reply.buffer, reply.byteOffset);
      assert.equal(v.getUint32(0), size, "the far end got another byte count");
      assert.equal(v.getUint32(4), 0, `the far end saw a wrong byte at ${v.getUint32(4) - 1}`);
      c.close();
      await c.closed;
    });

    await t.step("24 MiB sent by the far end reach the client intact and in order", async () => {
      const c = await call("down", size, 0x5eed2);
      const check = await recvStream(c, size, new StreamCheck(0x5eed2));
      assert.equal(check.got, size);
      assert.equal(check.bad, -1, `a wrong byte at ${check.bad}`);
      c.close();
      await c.closed;
    });

    await t.step("both directions at once: 16 MiB echoed back whole and in order", async () => {
      const n = 16 * 1024 * 1024 + 3;
      const c = await call("echo", n, 0);
      const [, check] = await Promise.all([
        sendStream(c, n, 0x5eed3),
        recvStream(c, n, new StreamCheck(0x5eed3)),
      ]);
      assert.equal(check.got, n);
      assert.equal(check.bad, -1, `a wrong byte at ${check.bad}`);
      c.close();
      await c.closed;
    });

    assert.deepEqual(farIds, ["alice", "alice", "alice"]);
    // Every conversation on the remote is gone once its stream is closed.
    for (let i = 0; i < 100 && remoteDev.conversations().length > 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.deepEqual(remoteDev.conversations(), []);
  } finally {
    await client.close();
    await ns.close().catch(() => {});
    exportL.close();
    farL.close();
    remoteDev.closeAll();
    await exportLoop;
    await farLoop;
    await fx.cleanup();
  }
});

Deno.test("small writes in a burst through a remote /net go out gathered, in order", async () => {
  const remoteDev = new NetDevice();
  const exportL = tcpListen("127.0.0.1", 0);
  const exportLoop = (async () => {
    for await (const c of exportL) serve(c, remoteDev.tree()).catch(() => {});
  })();
  // The far end checks the stream as it comes and answers with what it saw.
  const n = 3000;
  const piece = 1000;
  const farL = tcpListen("127.0.0.1", 0);
  const farLoop = (async () => {
    for await (const c of farL) {
      const check = await recvStream(c, n * piece, new StreamCheck(7));
      await c.write(new Uint8Array([...u32(check.got), ...u32(check.bad + 1)]));
    }
  })();
  const client = await StyxClient.connect(
    await tcpDial("127.0.0.1", Number(exportL.addr.split("!")[2])),
  );
  const mem = new MemTree();
  await mem.mkdirp("/net");
  const ns = new Namespace(mem, { caller: { user: "glenda" } });
  await ns.mount(new RemoteTree(client), "/net");
  try {
    const c = await dial(ns, `tcp!127.0.0.1!${farL.addr.split("!")[2]}`) as FileConn;
    // Count the Twrites the stream costs.
    let twrites = 0;
    const write = c.data.write.bind(c.data);
    c.data.write = (off, data, opts) => {
      twrites++;
      return write(off, data, opts);
    };
    // A burst, as TLS writes its records: each write is made without
    // waiting for the one before to be answered.
    const writes: Promise<void>[] = [];
    for (let i = 0; i < n; i++) writes.push(c.write(streamBytes(i * piece, piece, 7)));
    await Promise.all(writes);
    await c.flush();
    const { head: reply } = await readN(c, 8);
    const v = new DataView(reply.buffer, reply.byteOffset);
    assert.equal(v.getUint32(0), n * piece, "the far end got another byte count");
    assert.equal(v.getUint32(4), 0, `the far end saw a wrong byte at ${v.getUint32(4) - 1}`);
    assert.ok(twrites < n / 10, `${n} writes cost ${twrites} Twrites`);
    c.close();
    await c.closed;
  } finally {
    await client.close();
    await ns.close().catch(() => {});
    exportL.close();
    farL.close();
    remoteDev.closeAll();
    await exportLoop;
    await farLoop;
  }
});
