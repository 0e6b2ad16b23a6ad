import assert from "node:assert/strict";
import { pattern } from "../fixture.ts";
import { decode, encode } from "../../lib/styx/codec.ts";
import {
  allocReadData,
  BufferPool,
  FrameReader,
  recycleReadData,
  rreadInPlace,
} from "../../lib/styx/frame.ts";
import { readStream, StyxClient, writeFrom } from "../../lib/styx/client.ts";
import { serve } from "../../lib/styx/server.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { memPipe } from "../../lib/transport/pipe.ts";
import { TcpConn, tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn, Listener } from "../../lib/transport/conn.ts";
import { tlsDial, tlsListen, tlsWrapClient } from "../../lib/transport/tls.ts";
import { makeFixture } from "../auth/fixture.ts";
import {
  Ename,
  MsgType,
  OREAD,
  OTRUNC,
  OWRITE,
  type Qid,
  type RMsg,
  StyxError,
  type TMsg,
} from "../../lib/styx/types.ts";

Deno.test("BufferPool", async (t) => {
  await t.step("a buffer given back is taken again; foreign and repeated ones are ignored", () => {
    const pool = new BufferPool(2);
    const a = pool.take(1000);
    assert.equal(a.length, 1000);
    assert.ok(pool.owns(a.buffer));
    assert.ok(!pool.owns(new Uint8Array(1000).buffer));
    pool.give(new Uint8Array(1000).buffer); // not the pool's: ignored
    pool.give(a.buffer);
    pool.give(a.buffer); // twice: kept once
    assert.equal(pool.take(1000).buffer, a.buffer);
    assert.notEqual(pool.take(1000).buffer, a.buffer);
    assert.equal(pool.take(999).length, 999);
  });

  await t.step("it keeps at most its limit", () => {
    const pool = new BufferPool(1);
    const a = pool.take(10);
    const b = pool.take(10);
    pool.give(a.buffer);
    pool.give(b.buffer);
    assert.equal(pool.take(10).buffer, a.buffer);
    assert.notEqual(pool.take(10).buffer, b.buffer);
  });

  await t.step("trim frees what it keeps; buffers still in use are untouched", () => {
    const pool = new BufferPool(4, 1, { freeExtra: true });
    const kept = pool.take(1000);
    const used = pool.take(1000);
    pool.give(kept.buffer);
    pool.trim();
    // Freed at once (detached), and never handed out again.
    assert.equal(kept.buffer.byteLength, 0);
    assert.equal(used.length, 1000);
    const next = pool.take(1000);
    assert.notEqual(next.buffer, kept.buffer);
    assert.equal(next.length, 1000);
    // What was in use still comes back afterwards.
    pool.give(used.buffer);
    assert.equal(pool.take(1000).buffer, used.buffer);
  });
});

Deno.test("Rread frames built in place", async (t) => {
  await t.step("data from allocReadData becomes a whole Rread frame without a copy", () => {
    const data = allocReadData(5000);
    data.set(pattern(5000, 1));
    const short = data.subarray(0, 4321);
    const f = rreadInPlace(0x1234, short);
    assert.ok(f);
    assert.equal(f.buffer, data.buffer);
    assert.equal(f.length, 11 + 4321);
    assert.deepEqual(decode(f), {
      type: MsgType.Rread,
      tag: 0x1234,
      data: pattern(5000, 1).subarray(0, 4321),
    });
    recycleReadData(f);
    assert.equal(allocReadData(5000).buffer, data.buffer, "the buffer is reused");
  });

  await t.step("other buffers are left alone", () => {
    assert.equal(rreadInPlace(1, new Uint8Array(100)), null);
    const view = allocReadData(100).subarray(1);
    assert.equal(rreadInPlace(1, view), null, "not at the start of the data");
  });
});

Deno.test("TcpConn: read gives exact-size copies, readInto fills the caller's buffer", async () => {
  const l = tcpListen("127.0.0.1", 0);
  const port = Number(l.addr.split("!")[2]);
  const accepted = (async () => {
    for await (const c of l) return c;
    throw new Error("no connection");
  })();
  const a = await tcpDial("127.0.0.1", port);
  const b = await accepted;
  assert.ok(b instanceof TcpConn);
  try {
    const data = pattern(200_000, 7);
    const w = a.write(data).then(() => a.close());
    const first = await b.read();
    assert.ok(first && first.length > 0);
    assert.equal(first.buffer.byteLength, first.length, "no larger buffer behind a chunk");
    const into = new Uint8Array(data.length - first.length);
    let have = 0;
    while (have < into.length) {
      const n = await b.readInto(into.subarray(have));
      assert.ok(n !== null, "stream ended early");
      have += n;
    }
    assert.deepEqual(first, data.subarray(0, first.length));
    assert.deepEqual(into, data.subarray(first.length));
    await w;
    assert.equal(await b.readInto(new Uint8Array(10)), null);
    assert.equal(await b.read(), null);
  } finally {
    a.close();
    b.close();
    l.close();
  }
});

/**
 * A Ferry server exporting a fresh temporary directory over TCP, or over
 * mutual TLS (whose server reuses reply buffers once node:tls has sent
 * them, and whose direct client runs Deno's TLS).
 */
async function hostOver(transport: "TCP" | "TLS") {
  const dir = await Deno.makeTempDir({ prefix: "ferry-reuse-" });
  const fx = transport === "TLS" ? await makeFixture("reuseca") : undefined;
  const srv = await fx?.creds("srv", "node", { sans: ["127.0.0.1"] });
  const user = await fx?.creds("glenda", "user");
  const l: Listener = srv
    ? await tlsListen("127.0.0.1", 0, { creds: srv })
    : tcpListen("127.0.0.1", 0);
  const port = Number(l.addr.split("!")[2]);
  const sessions: Promise<void>[] = [];
  const loop = (async () => {
    for await (const c of l) sessions.push(serve(c, new HostTree(dir)));
  })();
  const clients: StyxClient[] = [];
  return {
    dir,
    async client(): Promise<StyxClient> {
      const conn = user
        ? await tlsDial("127.0.0.1", port, { creds: user })
        : await tcpDial("127.0.0.1", port);
      const c = await StyxClient.connect(conn);
      clients.push(c);
      return c;
    },
    async close(): Promise<void> {
      for (const c of clients) await c.close();
      l.close();
      await loop;
      await Promise.all(sessions);
      await Deno.remove(dir, { recursive: true });
      await fx?.cleanup();
    },
  };
}

for (const transport of ["TCP", "TLS"] as const) {
  Deno.test(`bulk transfers over ${transport} reuse buffers and stay byte-exact`, async (t) => {
    const h = await hostOver(transport);
    try {
      const size = 3 * 1024 * 1024 + 12345;
      const want = pattern(size, 42);
      await Deno.writeFile(`${h.dir}/big`, want);
      const openBig = async () => {
        const c = await h.client();
        return await c.openPath(await c.attach("glenda"), "/big", OREAD);
      };

      await t.step(
        "readStream with reuse: the same memory comes back, the bytes are right",
        async () => {
          const f = await openBig();
          const got = new Uint8Array(size);
          let off = 0;
          const buffers = new Set<ArrayBufferLike>();
          let chunks = 0;
          for await (const chunk of readStream(f, { reuse: true, window: 4 })) {
            got.set(chunk, off); // copied before the next chunk is asked for
            off += chunk.length;
            buffers.add(chunk.buffer);
            chunks++;
          }
          await f.close();
          assert.equal(off, size);
          assert.ok(got.every((v, i) => v === want[i]), "bytes differ");
          assert.ok(buffers.size < chunks, `${chunks} chunks in ${buffers.size} buffers`);
        },
      );

      await t.step(
        "twelve reads in flight and a reader that pauses get exact bytes (server reuse)",
        async () => {
          const f = await openBig();
          const got = new Uint8Array(size);
          let off = 0;
          // The server answers all twelve reads from pooled buffers while the
          // reader pauses over the first chunk.
          for await (const chunk of readStream(f, { window: 12 })) {
            if (off === 0) await new Promise((r) => setTimeout(r, 200));
            got.set(chunk, off);
            off += chunk.length;
          }
          await f.close();
          assert.equal(off, size);
          assert.ok(got.every((v, i) => v === want[i]), "bytes differ");
        },
      );

      await t.step("two clients reading at once both get their bytes (server reuse)", async () => {
        const read = async () => {
          const f = await openBig();
          const parts: Uint8Array[] = [];
          for await (const chunk of readStream(f)) parts.push(chunk); // kept: no reuse
          await f.close();
          const all = new Uint8Array(size);
          let o = 0;
          for (const p of parts) {
            all.set(p, o);
            o += p.length;
          }
          assert.equal(o, size);
          return all;
        };
        const [a, b] = await Promise.all([read(), read()]);
        assert.ok(a.every((v, i) => v === want[i]), "first reader's bytes differ");
        assert.ok(b.every((v, i) => v === want[i]), "second reader's bytes differ");
      });

      await t.step("writeFrom from a reused source buffer writes exactly", async () => {
        const c = await h.client();
        const root = await c.attach("glenda");
        await c.create(root, "/copy");
        const f = await c.openPath(root, "/copy", OWRITE | OTRUNC);
        const piece = new Uint8Array(300_000);
        let sent = 0;
        const src = new ReadableStream<Uint8Array>({
          pull(ctl) {
            if (sent >= size) return ctl.close();
            const n = Math.min(piece.length, size - sent);
            piece.set(want.subarray(sent, sent + n));
            sent += n;
            ctl.enqueue(piece.subarray(0, n));
          },
        }, { highWaterMark: 0 });
        assert.equal(await writeFrom(f, src), BigInt(size));
        await f.close();
        const disk = await Deno.readFile(`${h.dir}/copy`);
        assert.equal(disk.length, size);
        assert.ok(disk.every((v, i) => v === want[i]), "file bytes differ");
      });
    } finally {
      await h.close();
    }
  });
}

/** A Conn passing everything to `inner`, noting the buffer under each large write. */
function watchWrites(inner: Conn, min: number): { conn: Conn; buffers: ArrayBufferLike[] } {
  const buffers: ArrayBufferLike[] = [];
  const conn: Conn = {
    read: () => inner.read(),
    write(data) {
      if (data.length >= min) buffers.push(data.buffer);
      return inner.write(data);
    },
    close: () => inner.close(),
    closed: inner.closed,
    releasesWrites: inner.releasesWrites,
    peer: inner.peer,
    local: inner.local,
  };
  return { conn, buffers };
}

Deno.test("a client over node:tls reuses its Twrite buffers and writes exactly", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-reuse-" });
  const fx = await makeFixture("reusetlsca");
  const l = await tlsListen("127.0.0.1", 0, { creds: await fx.creds("srv", "node") });
  const sessions: Promise<void>[] = [];
  const loop = (async () => {
    for await (const c of l) sessions.push(serve(c, new HostTree(dir)));
  })();
  try {
    const port = Number(l.addr.split("!")[2]);
    // TLS run by node:tls over a TCP connection, as through a tunnel.
    const tls = await tlsWrapClient(await tcpDial("127.0.0.1", port), {
      creds: await fx.creds("glenda", "user"),
      peer: "srv",
    });
    assert.equal(tls.releasesWrites, true, "a node:tls link says its writes are released");
    const w = watchWrites(tls, 64 * 1024);
    const c = await StyxClient.connect(w.conn);
    const root = await c.attach("glenda");
    const size = 16 * 1024 * 1024 + 777;
    const want = pattern(size, 7);
    await c.create(root, "/big");
    const f = await c.openPath(root, "/big", OWRITE | OTRUNC);
    // Each Twrite's data comes from one source buffer, overwritten for the
    // next: only bytes the client copied out in time arrive intact.
    const piece = new Uint8Array(200_000);
    let sent = 0;
    const src = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (sent >= size) return ctl.close();
        const n = Math.min(piece.length, size - sent);
        piece.set(want.subarray(sent, sent + n));
        sent += n;
        ctl.enqueue(piece.subarray(0, n));
      },
    }, { highWaterMark: 0 });
    assert.equal(await writeFrom(f, src, { window: 8 }), BigInt(size));
    await f.close();
    await c.close();
    const disk = await Deno.readFile(`${dir}/big`);
    assert.equal(disk.length, size);
    assert.ok(disk.every((v, i) => v === want[i]), "file bytes differ");
    const distinct = new Set(w.buffers).size;
    assert.ok(
      distinct < w.buffers.length / 2,
      `${w.buffers.length} large writes used ${distinct} buffers: Twrite buffers were not reused`,
    );
  } finally {
    l.close();
    await loop;
    await Promise.all(sessions);
    await Deno.remove(dir, { recursive: true });
    await fx.cleanup();
  }
});

Deno.test("openPath sends Twalk and Topen together", async (t) => {
  const h = await hostOver("TCP");
  try {
    await Deno.mkdir(`${h.dir}/d`);
    for (let i = 0; i < 50; i++) await Deno.writeTextFile(`${h.dir}/d/f${i}`, `file ${i}\n`);
    const c = await h.client();
    const root = await c.attach("glenda");
    const base = c.fidsInUse;

    await t.step("many files opened at once read right", async () => {
      const texts = await Promise.all(
        Array.from({ length: 50 }, async (_, i) => {
          const f = await c.openPath(root, `/d/f${i}`, OREAD);
          try {
            return new TextDecoder().decode(await f.read(0n, 100));
          } finally {
            await f.close();
          }
        }),
      );
      texts.forEach((s, i) => assert.equal(s, `file ${i}\n`));
      assert.equal(c.fidsInUse, base);
    });

    await t.step("a missing file or directory fails and leaves no fid behind", async () => {
      for (const p of ["/d/nope", "/nope/f1", "/d/f1/x"]) {
        await assert.rejects(c.openPath(root, p, OREAD), (e: unknown) => {
          assert.ok(e instanceof StyxError, String(e));
          return true;
        });
      }
      await assert.rejects(c.openPath(root, "/d/nope", OREAD), { message: Ename.notFound });
      assert.equal(c.fidsInUse, base);
    });

    await t.step("a refused open clunks the walked fid", async () => {
      await assert.rejects(c.openPath(root, "/d", OWRITE), { message: Ename.isDir });
      for (let i = 0; i < 100 && c.fidsInUse !== base; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(c.fidsInUse, base);
    });
  } finally {
    await h.close();
  }

  await t.step("a server that runs the Topen before the walk: the open is sent again", async () => {
    const [a, b] = memPipe();
    const dirQid: Qid = { type: 0x80, version: 0, path: 1n };
    const fileQid: Qid = { type: 0, version: 0, path: 2n };
    const walked = new Set<number>();
    const opens: number[] = [];
    const send = (r: RMsg) => b.write(encode(r)).catch(() => {});
    const server = (async () => {
      for await (const f of new FrameReader(b, 1 << 20)) {
        const m = decode(f) as TMsg;
        switch (m.type) {
          case MsgType.Tversion:
            send({ type: MsgType.Rversion, tag: m.tag, msize: 8192, version: "9P2000" });
            break;
          case MsgType.Tattach:
            walked.add(m.fid);
            send({ type: MsgType.Rattach, tag: m.tag, qid: dirQid });
            break;
          case MsgType.Twalk:
            // Answered later, after requests that came behind it.
            setTimeout(() => {
              walked.add(m.newfid);
              send({ type: MsgType.Rwalk, tag: m.tag, wqids: m.wnames.map(() => fileQid) });
            }, 5);
            break;
          case MsgType.Topen:
            opens.push(m.fid);
            send(
              walked.has(m.fid)
                ? { type: MsgType.Ropen, tag: m.tag, qid: fileQid, iounit: 0 }
                : { type: MsgType.Rerror, tag: m.tag, ename: Ename.badFid },
            );
            break;
          case MsgType.Tclunk:
            walked.delete(m.fid);
            send({ type: MsgType.Rclunk, tag: m.tag });
            break;
          default:
            send({ type: MsgType.Rerror, tag: m.tag, ename: "unexpected" });
        }
      }
    })();
    const c = await StyxClient.connect(a as Conn);
    const root = await c.attach("glenda");
    const f = await c.openPath(root, "/x/y", OREAD);
    assert.deepEqual(f.qid, fileQid);
    assert.equal(opens.length, 2, "Topen sent with the walk, then again after it");
    assert.equal(opens[0], f.fid);
    assert.equal(opens[1], f.fid);
    await f.close();
    await c.close();
    await server;
  });
});

Deno.test("readStream with reuse over an in-memory pipe (MemTree)", async () => {
  const tree = new MemTree();
  const size = 2 * 1024 * 1024 + 777;
  const want = pattern(size, 9);
  await tree.writeFile("/big", want);
  const [a, b] = memPipe();
  const done = serve(b, tree);
  const c = await StyxClient.connect(a);
  try {
    const root = await c.attach("glenda");
    for (const reuse of [true, true, false]) {
      const f = await c.openPath(root, "/big", OREAD);
      const got = new Uint8Array(size);
      const kept: Uint8Array[] = [];
      let off = 0;
      for await (const chunk of readStream(f, { reuse })) {
        got.set(chunk, off);
        off += chunk.length;
        if (!reuse) kept.push(chunk);
      }
      await f.close();
      assert.equal(off, size);
      assert.ok(got.every((v, i) => v === want[i]), "bytes differ");
      // Chunks kept without reuse are never overwritten by later reads.
      let o = 0;
      for (const k of kept) {
        assert.ok(k.every((v, i) => v === want[o + i]), "a kept chunk changed");
        o += k.length;
      }
    }
  } finally {
    await c.close();
    await done;
  }
});
