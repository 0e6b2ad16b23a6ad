import assert from "node:assert/strict";
import { concatBytes } from "../../lib/bytes.ts";
import { decode, encode } from "../../lib/styx/codec.ts";
import { FrameReader, FrameWriter, FramingError } from "../../lib/styx/frame.ts";
import { type Msg, MsgType, NOTAG } from "../../lib/styx/types.ts";
import { memPipe } from "../../lib/transport/pipe.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn, Listener } from "../../lib/transport/conn.ts";

const MSIZE = 256 * 1024 + 24;
const enc = new TextEncoder();

function sample(): Msg[] {
  const big = new Uint8Array(3000);
  for (let i = 0; i < big.length; i++) big[i] = i & 0xff;
  return [
    { type: MsgType.Tversion, tag: NOTAG, msize: 8216, version: "9P2000" },
    { type: MsgType.Rflush, tag: 3 },
    { type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: ["usr", "glenda", "lib"] },
    { type: MsgType.Rread, tag: 2, data: big },
    { type: MsgType.Tclunk, tag: 4, fid: 1 },
  ];
}

/** Read every frame until clean EOF. */
/** The first connection `listener` accepts. */
async function firstConn(listener: Listener): Promise<Conn> {
  for await (const c of listener) return c;
  throw new Error("no connection");
}

async function readAll(r: FrameReader): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const f of r) out.push(f);
  return out;
}

async function expectFramingError(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof FramingError, `expected FramingError, got ${e}`);
    assert.match(e.message, re);
    return true;
  });
}

function header(size: number): Uint8Array {
  const h = new Uint8Array(4);
  new DataView(h.buffer).setUint32(0, size, true);
  return h;
}

Deno.test("FrameReader over an in-memory pipe", async (t) => {
  const msgs = sample();
  const frames = msgs.map(encode);
  const stream = concatBytes(frames);

  await t.step("several frames in one chunk come back as views, no copy", async () => {
    const [a, b] = memPipe();
    await a.write(stream);
    a.close();
    const got = await readAll(new FrameReader(b, MSIZE));
    assert.equal(got.length, frames.length);
    for (let i = 0; i < got.length; i++) {
      assert.equal(got[i]!.buffer, stream.buffer, `frame ${i} was copied`);
      assert.deepEqual(decode(got[i]!, MSIZE), msgs[i]);
    }
  });

  await t.step("the stream split at every byte boundary", async () => {
    for (let k = 1; k < stream.length; k++) {
      const [a, b] = memPipe();
      await a.write(stream.slice(0, k));
      await a.write(stream.slice(k));
      a.close();
      const got = await readAll(new FrameReader(b, MSIZE));
      assert.deepEqual(got, frames, `split at ${k}`);
    }
  });

  await t.step("one byte per chunk", async () => {
    const [a, b] = memPipe();
    for (let i = 0; i < stream.length; i++) await a.write(stream.slice(i, i + 1));
    a.close();
    assert.deepEqual(await readAll(new FrameReader(b, MSIZE)), frames);
  });

  await t.step("empty chunks are skipped", async () => {
    const [a, b] = memPipe();
    await a.write(new Uint8Array(0));
    await a.write(stream.slice(0, 2));
    await a.write(new Uint8Array(0));
    await a.write(stream.slice(2));
    a.close();
    assert.deepEqual(await readAll(new FrameReader(b, MSIZE)), frames);
  });

  await t.step("a 256 KiB frame arriving in 1000-byte chunks", async () => {
    const data = new Uint8Array(256 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    const msg: Msg = { type: MsgType.Rread, tag: 9, data };
    const f = encode(msg);
    const tail = encode({ type: MsgType.Rclunk, tag: 10 });
    const all = concatBytes([f, tail]);
    const [a, b] = memPipe();
    for (let o = 0; o < all.length; o += 1000) await a.write(all.slice(o, o + 1000));
    a.close();
    const r = new FrameReader(b, MSIZE);
    const got = await r.next();
    assert.ok(got);
    assert.equal(got.length, f.length);
    assert.deepEqual(decode(got, MSIZE), msg);
    assert.deepEqual(await r.next(), tail);
    assert.equal(await r.next(), null);
    assert.equal(await r.next(), null, "EOF stays EOF");
  });

  await t.step("clean EOF before any frame", async () => {
    const [a, b] = memPipe();
    a.close();
    assert.equal(await new FrameReader(b, MSIZE).next(), null);
  });

  await t.step("EOF inside the size field", async () => {
    const [a, b] = memPipe();
    await a.write(stream.slice(0, 3));
    a.close();
    await expectFramingError(new FrameReader(b, MSIZE).next(), /inside a frame header \(3 of 4/);
  });

  await t.step("EOF inside a frame", async () => {
    const [a, b] = memPipe();
    await a.write(frames[0]!);
    await a.write(frames[3]!.slice(0, 100));
    a.close();
    const r = new FrameReader(b, MSIZE);
    assert.deepEqual(await r.next(), frames[0]);
    await expectFramingError(r.next(), /inside a frame \(100 of 3011 bytes/);
  });

  await t.step("a size below 7", async () => {
    for (const size of [0, 4, 6]) {
      const [a, b] = memPipe();
      await a.write(header(size));
      await expectFramingError(
        new FrameReader(b, MSIZE).next(),
        /size \d is below the minimum of 7/,
      );
      a.close();
    }
  });

  await t.step("a size above msize is refused before its body arrives", async () => {
    const [a, b] = memPipe();
    // Only the header is sent and the pipe stays open: the reader must not wait.
    await a.write(header(8217));
    await expectFramingError(new FrameReader(b, 8216).next(), /size 8217 exceeds msize 8216/);
    const [c, d] = memPipe();
    await c.write(header(0xffffffff));
    await expectFramingError(new FrameReader(d, MSIZE).next(), /size 4294967295 exceeds/);
    a.close();
    c.close();
  });

  await t.step("msize can be lowered after version negotiation", async () => {
    const [a, b] = memPipe();
    const r = new FrameReader(b, MSIZE);
    await a.write(stream);
    assert.deepEqual(await r.next(), frames[0]);
    r.msize = 100;
    assert.deepEqual(await r.next(), frames[1]);
    assert.deepEqual(await r.next(), frames[2]);
    await expectFramingError(r.next(), /size 3011 exceeds msize 100/);
    a.close();
  });
});

Deno.test("FrameReader over real TCP", async () => {
  const listener = tcpListen("127.0.0.1", 0);
  const port = Number(listener.addr.split("!")[2]);
  const msgs: Msg[] = [];
  for (let i = 0; i < 300; i++) {
    msgs.push({ type: MsgType.Tread, tag: i, fid: i, offset: BigInt(i) << 32n, count: 8192 });
    if (i % 50 === 0) {
      msgs.push({ type: MsgType.Rread, tag: i, data: new Uint8Array(200 * 1024).fill(i & 0xff) });
    }
  }
  const server = (async () => {
    const conn = await firstConn(listener);
    try {
      const got: Msg[] = [];
      for await (const f of new FrameReader(conn, MSIZE)) got.push(decode(f, MSIZE));
      return got;
    } finally {
      conn.close();
    }
  })();
  const client = await tcpDial("127.0.0.1", port);
  try {
    // Many small frames written together, large ones on their own.
    let batch: Uint8Array[] = [];
    for (const m of msgs) {
      batch.push(encode(m));
      if (batch.length === 40 || m.type === MsgType.Rread) {
        await client.write(concatBytes(batch));
        batch = [];
      }
    }
    if (batch.length) await client.write(concatBytes(batch));
  } finally {
    client.close();
  }
  try {
    const got = await server;
    assert.equal(got.length, msgs.length);
    assert.deepEqual(got, msgs);
  } finally {
    listener.close();
  }
});

Deno.test("FrameReader over real TCP: frames of every size up to the largest msize", async (t) => {
  // Around the reader's idle buffer (1 KiB) and work buffers (64 KiB), and
  // up to the default msize and beyond, all in one connection.
  const MAX = 4 * 1024 * 1024 + 24;
  const sizes = [
    11,
    100,
    1023,
    1024,
    1025,
    4096 + 24,
    8216,
    65535,
    65536,
    65537,
    512 * 1024 + 24,
    MAX,
  ];
  const frames = sizes.flatMap((n, k) => {
    // An Rread frame is 11 bytes of header and count before its data.
    const data = new Uint8Array(n - 11);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + k) & 0xff;
    // Each size twice, the second time behind a tiny frame, so frames start
    // at every kind of offset in the reader's buffers.
    return [
      encode({ type: MsgType.Rread, tag: k, data }),
      encode({ type: MsgType.Tclunk, tag: k, fid: k }),
      encode({ type: MsgType.Rread, tag: k + 100, data }),
    ];
  });
  const stream = concatBytes(frames);

  const receive = async (write: (c: Conn) => Promise<void>) => {
    const listener = tcpListen("127.0.0.1", 0);
    const port = Number(listener.addr.split("!")[2]);
    const server = (async () => {
      const c = await firstConn(listener);
      try {
        return await readAll(new FrameReader(c, MAX));
      } finally {
        c.close();
      }
    })();
    const client = await tcpDial("127.0.0.1", port);
    try {
      await write(client);
    } finally {
      client.close();
    }
    try {
      const got = await server;
      assert.equal(got.length, frames.length);
      for (let i = 0; i < frames.length; i++) {
        assert.deepEqual(got[i], frames[i], `frame ${i} (${frames[i]!.length} bytes)`);
      }
    } finally {
      listener.close();
    }
  };

  await t.step("all written at once", () => receive((c) => c.write(stream)));

  await t.step("written in pieces that cut frames anywhere", () =>
    receive(async (c) => {
      let off = 0;
      for (let i = 0; off < stream.length; i++) {
        const n = [1, 3, 700, 1024, 1500, 70_000, 5][i % 7]!;
        await c.write(stream.slice(off, off + n));
        off += n;
      }
    }));
});

Deno.test("FrameWriter over TCP", async (t) => {
  const l = tcpListen("127.0.0.1", 0);
  const port = Number(l.addr.split("!")[2]);
  const pair = async (): Promise<[Conn, Conn]> => {
    const accepted = l[Symbol.asyncIterator]().next();
    const a = await tcpDial("127.0.0.1", port);
    return [a, (await accepted).value as Conn];
  };
  try {
    await t.step("frames small and large arrive whole, in order", async () => {
      const [a, b] = await pair();
      const released: Uint8Array[] = [];
      const w = new FrameWriter(a, { release: (f) => released.push(f) });
      const big = new Uint8Array(200_000).map((_, i) => i * 7);
      const msgs: Msg[] = [];
      for (let i = 0; i < 300; i++) {
        msgs.push(
          i % 50 === 7
            ? { type: MsgType.Rread, tag: i, data: big }
            : { type: MsgType.Tclunk, tag: i, fid: i },
        );
      }
      const frames = msgs.map((m) => encode(m));
      for (const f of frames) w.write(f);
      assert.equal(w.queued, frames.reduce((n, f) => n + f.length, 0));
      const r = new FrameReader(b, MSIZE);
      for (const m of msgs) assert.deepEqual(decode((await r.next())!), m);
      while (w.queued > 0) await new Promise((r) => setTimeout(r, 5));
      // TCP has taken every byte: each frame was handed back once (and so
      // was each gathered write).
      for (const f of frames) assert.equal(released.filter((x) => x === f).length, 1);
      a.close();
      b.close();
    });

    await t.step(
      "frames written at once keep their order with frames queued meanwhile",
      async () => {
        const [a, b] = await pair();
        const released: Uint8Array[] = [];
        let written = 0;
        const w = new FrameWriter(a, {
          start: "turn",
          release: (f) => released.push(f),
          written: () => written++,
        });
        const r = new FrameReader(b, MSIZE);
        const frames: Uint8Array[] = [];
        for (let i = 0; i < 200; i++) {
          const f = encode({ type: MsgType.Tclunk, tag: i, fid: i });
          frames.push(f);
          // Now and then a frame goes at once, with or behind those queued for the turn.
          w.write(f, i % 3 === 0);
          if (i % 10 === 9) {
            for (let j = i - 9; j <= i; j++) assert.equal(decode((await r.next())!).tag, j);
          }
        }
        while (w.queued > 0) await new Promise((r) => setTimeout(r, 5));
        for (const f of frames) assert.equal(released.filter((x) => x === f).length, 1);
        assert.ok(written > 0);
        a.close();
        b.close();

        // A frame written at once to a closed connection: the failure is
        // reported once and what is queued behind it is dropped.
        const [c, d] = await pair();
        const failures: unknown[] = [];
        const w2 = new FrameWriter(c, { failed: (e) => failures.push(e) });
        c.close();
        w2.write(encode({ type: MsgType.Tclunk, tag: 1, fid: 1 }), true);
        w2.write(encode({ type: MsgType.Tclunk, tag: 2, fid: 2 }));
        while (failures.length === 0) await new Promise((r) => setTimeout(r, 5));
        assert.equal(failures.length, 1);
        assert.equal(w2.queued, 0);
        d.close();
      },
    );

    await t.step(
      "abandon drops what is queued and releases it; a failed write says so",
      async () => {
        const [a, b] = await pair();
        const released: Uint8Array[] = [];
        const failures: unknown[] = [];
        const w = new FrameWriter(a, {
          release: (f) => released.push(f),
          failed: (e) => failures.push(e),
        });
        const frames = [1, 2, 3].map((i) => encode({ type: MsgType.Tclunk, tag: i, fid: i }));
        for (const f of frames) w.write(f);
        w.abandon();
        assert.equal(w.queued, 0);
        assert.deepEqual(released, frames);
        w.write(encode({ type: MsgType.Tclunk, tag: 9, fid: 9 }));
        assert.equal(released.length, 4, "a frame written after abandon is dropped at once");
        a.close();
        b.close();

        const [c, d] = await pair();
        const w2 = new FrameWriter(c, { failed: (e) => failures.push(e) });
        c.close();
        w2.write(encode({ type: MsgType.Tclunk, tag: 1, fid: 1 }));
        while (failures.length === 0) await new Promise((r) => setTimeout(r, 5));
        assert.equal(w2.queued, 0);
        d.close();
      },
    );
  } finally {
    l.close();
  }
});

Deno.test("FrameReader over real TCP: every frame kept stays as it arrived while thousands more come", async () => {
  const listener = tcpListen("127.0.0.1", 0);
  const port = Number(listener.addr.split("!")[2]);
  // Small frames of many kinds and sizes, some one at a time (each read
  // lands in an empty buffer), some in bursts; small writes among them.
  const msgs: Msg[] = [];
  for (let i = 0; i < 3000; i++) {
    const name = `n${i}-${"x".repeat(i % 200)}`;
    if (i % 3 === 0) msgs.push({ type: MsgType.Twalk, tag: i, fid: 0, newfid: i, wnames: [name] });
    else if (i % 3 === 1) msgs.push({ type: MsgType.Tstat, tag: i, fid: i });
    else msgs.push({ type: MsgType.Twrite, tag: i, fid: 3, offset: 0n, data: enc.encode(name) });
  }
  const server = (async () => {
    const conn = await firstConn(listener);
    try {
      const frames: Uint8Array[] = [];
      const reader = new FrameReader(conn, MSIZE);
      for (let f = await reader.next(); f !== null; f = await reader.next()) {
        frames.push(f);
        // The frame is answered before the next leaves, like a reply.
        if ((frames.length - 1) % 500 < 250) await conn.write(new Uint8Array([1]));
      }
      // Decoded only now: nothing read later may have changed them.
      return frames.map((f) => decode(f, MSIZE));
    } finally {
      conn.close();
    }
  })();
  const client = await tcpDial("127.0.0.1", port);
  try {
    for (let i = 0; i < msgs.length; i++) {
      if (i % 500 < 250) {
        await client.write(encode(msgs[i]!));
        assert.ok(await client.read(), "no answer");
      } else {
        const burst = msgs.slice(i, i + 50);
        await client.write(concatBytes(burst.map((m) => encode(m))));
        i += burst.length - 1;
      }
    }
  } finally {
    client.close();
  }
  try {
    const got = await server;
    assert.equal(got.length, msgs.length);
    assert.deepEqual(got, msgs);
  } finally {
    listener.close();
  }
});
