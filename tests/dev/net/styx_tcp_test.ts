/**
 * /net data files served over real TCP, where the server builds Rread
 * frames in place and reuses read and write buffers: bytes must arrive
 * exactly, in order, never more than a read's count, with several
 * conversations and several requests in flight at once.
 */

import assert from "node:assert/strict";
import { NetDevice } from "../../../lib/dev/net/device.ts";
import type { Node, OpenFile } from "../../../lib/fs/tree.ts";
import { ORDWR } from "../../../lib/styx/types.ts";
import { serve } from "../../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../../lib/styx/client.ts";
import type { RemoteFile } from "../../../lib/styx/client_tree.ts";
import { tcpDial, tcpListen } from "../../../lib/transport/tcp.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Byte i of stream `seed`. */
function pattern(seed: number, from: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = ((from + i) * 31 + seed * 97 + ((from + i) >> 12)) & 0xff;
  return b;
}

/** The first index where `a` and `b` differ, or -1 (quicker than deepEqual's diff). */
function firstDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

async function open(root: Node, path: string, mode: number): Promise<OpenFile> {
  const { node } = await root.walk(path.split("/").filter((s) => s));
  if (!node) throw new Error(`no ${path}`);
  try {
    return await node.open(mode);
  } finally {
    await node.close();
  }
}

/** Dial `port` through the mounted /net: the ctl and data files. */
async function dialVia(root: Node, port: number): Promise<{ ctl: OpenFile; data: RemoteFile }> {
  const ctl = await open(root, "tcp/clone", ORDWR);
  const n = dec.decode(await ctl.read(0n, 32));
  await ctl.write(0n, enc.encode(`connect 127.0.0.1!${port}`));
  const data = await open(root, `tcp/${n}/data`, ORDWR) as RemoteFile;
  return { ctl, data };
}

Deno.test("/net over TCP: data reads and writes stay exact with many in flight", async (t) => {
  const SIZE = 6 * 1024 * 1024;
  // Sources send stream `seed` (the first byte they receive) of SIZE bytes;
  // sinks read SIZE bytes and compare them with stream `seed`.
  const far = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sinkResults: Promise<string>[] = [];
  const held: Deno.Conn[] = [];
  const farLoop = (async () => {
    for await (const c of far) {
      const task = (async () => {
        const one = new Uint8Array(1);
        if ((await c.read(one)) === null) return "no header";
        const seed = one[0]! & 0x3f;
        if (one[0]! & 0x40) {
          // Held: the test reads it itself, later.
          held.push(c);
          return "held";
        }
        if (one[0]! & 0x80) {
          // A sink.
          const buf = new Uint8Array(200_000);
          let got = 0;
          let bad = "";
          while (got < SIZE) {
            const n = await c.read(buf);
            if (n === null) break;
            const want = pattern(seed, got, n);
            if (!bad && buf.subarray(0, n).some((v, i) => v !== want[i])) bad = `bad at ${got}`;
            got += n;
          }
          c.close();
          return bad || (got === SIZE ? "ok" : `short: ${got}`);
        }
        for (let off = 0; off < SIZE;) {
          const n = Math.min(SIZE - off, 150_000);
          const b = pattern(seed, off, n);
          let w = 0;
          while (w < n) w += await c.write(b.subarray(w));
          off += n;
        }
        c.close();
        return "sent";
      })();
      sinkResults.push(task.catch((e) => String(e)));
    }
  })();
  const port = far.addr.port;

  const dev = new NetDevice();
  const styx = tcpListen("127.0.0.1", 0);
  const sessions: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of styx) sessions.push(serve(c, dev.tree()));
  })();
  const client = await StyxClient.connect(
    await tcpDial("127.0.0.1", Number(styx.addr.split("!")[2])),
  );
  const root = await new RemoteTree(client).attach({ user: "glenda" }, "");
  try {
    await t.step(
      "reads of mixed counts, two conversations, four Treads in flight each",
      async () => {
        const counts = [client.maxIo, 100_000, 7, 65_536, client.maxIo, 1, 200_000, 4096];
        const readConv = async (seed: number) => {
          const { ctl, data } = await dialVia(root, port);
          await data.write(0n, new Uint8Array([seed]));
          const got = new Uint8Array(SIZE);
          let have = 0;
          let k = 0;
          const inflight: { count: number; p: Promise<Uint8Array> }[] = [];
          for (;;) {
            while (inflight.length < 4) {
              const count = counts[k++ % counts.length]!;
              inflight.push({ count, p: data.readOnce(0n, count) });
            }
            const { count, p } = inflight.shift()!;
            const b = await p;
            assert.ok(b.length <= count, `a read of ${count} returned ${b.length} bytes`);
            if (b.length === 0) break;
            assert.ok(have + b.length <= SIZE, "more bytes than were sent");
            got.set(b, have);
            have += b.length;
          }
          for (const r of inflight) assert.equal((await r.p).length, 0);
          assert.equal(have, SIZE);
          assert.equal(firstDiff(got, pattern(seed, 0, SIZE)), -1);
          await data.close();
          await ctl.close();
        };
        await Promise.all([readConv(1), readConv(2)]);
      },
    );

    await t.step("writes, two conversations, four Twrites in flight each", async () => {
      const writeConv = async (seed: number) => {
        const { ctl, data } = await dialVia(root, port);
        await data.write(0n, new Uint8Array([seed | 0x80]));
        const inflight: Promise<number>[] = [];
        const sizes = [client.maxIo, 1000, 70_000, client.maxIo - 3];
        let k = 0;
        for (let off = 0; off < SIZE;) {
          const n = Math.min(SIZE - off, sizes[k++ % sizes.length]!);
          if (inflight.length >= 4) assert.ok((await inflight.shift()!) > 0);
          const b = pattern(seed, off, n);
          const p = data.writeOnce(0n, b);
          inflight.push(p.then((m) => {
            assert.equal(m, n);
            return m;
          }));
          off += n;
        }
        await Promise.all(inflight);
        await data.close();
        await ctl.close();
      };
      const before = sinkResults.length;
      await Promise.all([writeConv(3), writeConv(4)]);
      const results = await Promise.all(sinkResults.slice(before));
      assert.deepEqual(results, ["ok", "ok"]);
    });

    await t.step("a write flushed while the socket is full still sends its own bytes", async () => {
      // The far end reads nothing at first, so writes soon wait on a full
      // socket. The waiting one is flushed; further Twrites of the same
      // size (another conversation) must not be able to reuse its buffer.
      const a = await dialVia(root, port);
      await a.data.write(0n, new Uint8Array([5 | 0x40]));
      const io = client.maxIo;
      let sent = 0;
      for (;;) {
        const ac = new AbortController();
        const p = a.data.writeOnce(0n, pattern(5, sent, io), { signal: ac.signal });
        const quick = await Promise.race([
          p.then(() => true),
          new Promise<false>((r) => setTimeout(() => r(false), 300)),
        ]);
        sent += io;
        if (quick) continue;
        ac.abort();
        await p.catch(() => {});
        break;
      }
      const b = await dialVia(root, port);
      await b.data.write(0n, new Uint8Array([6 | 0x80]));
      const bWrites = [];
      for (let off = 0; off < SIZE; off += io) {
        bWrites.push(b.data.writeOnce(0n, pattern(6, off, Math.min(io, SIZE - off))));
      }
      await Promise.all(bWrites);
      // Now drain a's far end: everything written to a, flushed piece included.
      const conn = held.at(-1)!;
      const got = new Uint8Array(sent);
      let have = 0;
      while (have < sent) {
        const n = await conn.read(got.subarray(have));
        if (n === null) break;
        have += n;
      }
      assert.equal(have, sent);
      assert.equal(firstDiff(got, pattern(5, 0, sent)), -1);
      await a.data.close();
      await a.ctl.close();
      await b.data.close();
      await b.ctl.close();
      conn.close();
    });
  } finally {
    await root.close();
    await client.close();
    styx.close();
    await accepting;
    await Promise.all(sessions);
    dev.closeAll();
    far.close();
    await farLoop;
    await Promise.all(sinkResults);
  }
});
