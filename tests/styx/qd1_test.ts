// The server over real TCP, where its reply buffers are reused and replies
// leave as soon as they are made: one request at a time (as Inferno's mount,
// 9p and 9pfuse send them), bursts of pipelined requests, and replies that
// overtake a blocked request.

import assert from "node:assert/strict";
import { concatBytes } from "../../lib/bytes.ts";
import { serve } from "../../lib/styx/server.ts";
import { decode, encode } from "../../lib/styx/codec.ts";
import { FrameReader } from "../../lib/styx/frame.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { dir, file, SynthTree, textFile } from "../../lib/fs/synthetic.ts";
import type { Tree } from "../../lib/fs/tree.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import {
  type Msg,
  MsgType,
  NOFID,
  NOTAG,
  nullDir,
  OREAD,
  OWRITE,
  type TMsg,
} from "../../lib/styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** `tree` served on a loopback TCP listener, and one connection to it after Tversion and Tattach. */
async function tcpSession(tree: Tree) {
  const listener = tcpListen("127.0.0.1", 0);
  const port = Number(listener.addr.split("!")[2]);
  const served: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of listener) served.push(serve(c, tree));
  })();
  const conn: Conn = await tcpDial("127.0.0.1", port);
  const frames = new FrameReader(conn, 1 << 20);
  const next = async (): Promise<Msg> => decode((await frames.next())!);
  const send = (...msgs: TMsg[]) => conn.write(concatBytes(msgs.map((m) => encode(m))));
  const rpc = async (m: TMsg): Promise<Msg> => {
    await send(m);
    const r = await next();
    assert.equal(r.tag, m.tag, `reply to ${m.type} has the wrong tag`);
    return r;
  };
  const v = await rpc({ type: MsgType.Tversion, tag: NOTAG, msize: 8216, version: "9P2000" });
  assert.equal(v.type, MsgType.Rversion);
  const a = await rpc({
    type: MsgType.Tattach,
    tag: 1,
    fid: 0,
    afid: NOFID,
    uname: "glenda",
    aname: "",
  });
  assert.equal(a.type, MsgType.Rattach);
  return {
    send,
    next,
    rpc,
    async close() {
      conn.close();
      listener.close();
      await accepting;
      await Promise.all(served);
    },
  };
}

function expectType<T extends Msg["type"]>(m: Msg, type: T): Extract<Msg, { type: T }> {
  if (m.type === MsgType.Rerror && type !== MsgType.Rerror) {
    assert.fail(`expected type ${type}, got Rerror '${m.ename}'`);
  }
  assert.equal(m.type, type);
  return m as Extract<Msg, { type: T }>;
}

function expectError(m: Msg, ename: string): void {
  if (m.type !== MsgType.Rerror) assert.fail(`expected Rerror '${ename}', got type ${m.type}`);
  assert.equal(m.ename, ename);
}

/** 4 KiB whose every byte says which write it came from. */
const page = (i: number) => new Uint8Array(4096).fill(i % 251);

/** Names of varied lengths, so replies of varied sizes share the server's buffers. */
const nameOf = (i: number) => `f${i}-${"x".repeat(i % 40)}`;

Deno.test("serve over TCP: one request at a time", async () => {
  const root = await Deno.makeTempDir({ prefix: "ferry-qd1-" });
  try {
    for (let i = 0; i < 20; i++) await Deno.writeTextFile(`${root}/${nameOf(i)}`, `${i}`);
    await Deno.writeFile(`${root}/w`, new Uint8Array(0));
    const s = await tcpSession(new HostTree(root));
    expectType(
      await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 2, wnames: ["w"] }),
      MsgType.Rwalk,
    );
    expectType(await s.rpc({ type: MsgType.Topen, tag: 1, fid: 2, mode: OWRITE }), MsgType.Ropen);
    for (let i = 0; i < 300; i++) {
      const name = nameOf(i % 20);
      const w = await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: [name] });
      assert.equal(expectType(w, MsgType.Rwalk).wqids.length, 1);
      const st = expectType(await s.rpc({ type: MsgType.Tstat, tag: 1, fid: 1 }), MsgType.Rstat);
      assert.equal(st.stat.name, name);
      assert.equal(st.stat.length, BigInt(String(i % 20).length));
      expectType(await s.rpc({ type: MsgType.Tclunk, tag: 1, fid: 1 }), MsgType.Rclunk);
      // The fid is gone, and the errors come back as ever.
      expectError(await s.rpc({ type: MsgType.Tstat, tag: 1, fid: 1 }), "unknown fid");
      expectError(
        await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: ["nope"] }),
        "file does not exist",
      );
      const wr = await s.rpc({
        type: MsgType.Twrite,
        tag: 1,
        fid: 2,
        offset: BigInt(4096 * (i % 16)),
        data: page(i),
      });
      assert.equal(expectType(wr, MsgType.Rwrite).count, 4096);
      expectError(
        await s.rpc({ type: MsgType.Twrite, tag: 1, fid: 9, offset: 0n, data: page(0) }),
        "unknown fid",
      );
    }
    // Writes the file refuses say why, and change nothing.
    expectError(
      await s.rpc({ type: MsgType.Twrite, tag: 1, fid: 2, offset: 1n << 60n, data: page(0) }),
      `offset ${1n << 60n} is beyond what the host file system supports`,
    );
    expectType(
      await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 3, wnames: ["w"] }),
      MsgType.Rwalk,
    );
    expectType(await s.rpc({ type: MsgType.Topen, tag: 1, fid: 3, mode: OREAD }), MsgType.Ropen);
    expectError(
      await s.rpc({ type: MsgType.Twrite, tag: 1, fid: 3, offset: 0n, data: page(0) }),
      "permission denied",
    );
    expectType(
      await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 4, wnames: [] }),
      MsgType.Rwalk,
    );
    expectType(await s.rpc({ type: MsgType.Topen, tag: 1, fid: 4, mode: OREAD }), MsgType.Ropen);
    expectError(
      await s.rpc({ type: MsgType.Twrite, tag: 1, fid: 4, offset: 0n, data: page(0) }),
      "is a directory",
    );
    await s.close();
    // Each page holds the last write made to it, whole.
    const got = await Deno.readFile(`${root}/w`);
    assert.equal(got.length, 16 * 4096);
    const last: number[] = [];
    for (let i = 0; i < 300; i++) last[i % 16] = i;
    for (let p = 0; p < 16; p++) {
      assert.deepEqual(got.subarray(p * 4096, (p + 1) * 4096), page(last[p]!), `page ${p}`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("serve over TCP: a burst of pipelined requests gets every reply, intact", async () => {
  const root = await Deno.makeTempDir({ prefix: "ferry-qd1-" });
  try {
    for (let i = 0; i < 20; i++) await Deno.writeTextFile(`${root}/${nameOf(i)}`, `${i}`);
    await Deno.writeFile(`${root}/w`, new Uint8Array(0));
    const s = await tcpSession(new HostTree(root));
    // One write of 400 requests: walks, stats and clunks whose replies vary
    // in size and far outgrow one reply buffer, 4 KiB writes, and errors.
    const msgs: TMsg[] = [
      { type: MsgType.Twalk, tag: 0, fid: 0, newfid: 2, wnames: ["w"] },
      { type: MsgType.Topen, tag: 1, fid: 2, mode: OWRITE },
    ];
    for (let i = 0; i < 66; i++) {
      const t = 2 + 6 * i;
      const fid = 100 + i;
      msgs.push(
        { type: MsgType.Twalk, tag: t, fid: 0, newfid: fid, wnames: [nameOf(i % 20)] },
        { type: MsgType.Tstat, tag: t + 1, fid },
        { type: MsgType.Twrite, tag: t + 2, fid: 2, offset: BigInt(4096 * i), data: page(i) },
        { type: MsgType.Tclunk, tag: t + 3, fid },
        { type: MsgType.Tstat, tag: t + 4, fid },
        { type: MsgType.Twalk, tag: t + 5, fid: 0, newfid: fid + 100, wnames: ["missing"] },
      );
    }
    await s.send(...msgs);
    const replies = new Map<number, Msg>();
    while (replies.size < msgs.length) {
      const r = await s.next();
      assert.ok(!replies.has(r.tag), `a second reply for tag ${r.tag}`);
      replies.set(r.tag, r);
    }
    expectType(replies.get(1)!, MsgType.Ropen);
    for (let i = 0; i < 66; i++) {
      const t = 2 + 6 * i;
      assert.equal(expectType(replies.get(t)!, MsgType.Rwalk).wqids.length, 1);
      assert.equal(expectType(replies.get(t + 1)!, MsgType.Rstat).stat.name, nameOf(i % 20));
      assert.equal(expectType(replies.get(t + 2)!, MsgType.Rwrite).count, 4096);
      expectType(replies.get(t + 3)!, MsgType.Rclunk);
      expectError(replies.get(t + 4)!, "unknown fid");
      expectError(replies.get(t + 5)!, "file does not exist");
    }
    await s.close();
    const got = await Deno.readFile(`${root}/w`);
    assert.equal(got.length, 66 * 4096);
    for (let i = 0; i < 66; i++) {
      assert.deepEqual(got.subarray(i * 4096, (i + 1) * 4096), page(i), `page ${i}`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("serve over TCP: replies overtake a blocked request, and Tflush still drops it", async () => {
  const waiting: (() => void)[] = [];
  const tree = new SynthTree(dir("", [
    textFile("hello", () => "hi\n"),
    file("block", () => ({
      read: (_off, _count, ctx) =>
        new Promise<Uint8Array>((resolve, reject) => {
          waiting.push(() => resolve(enc.encode("released")));
          ctx.signal?.addEventListener("abort", () => reject(ctx.signal!.reason), { once: true });
        }),
    })),
  ]));
  const s = await tcpSession(tree);
  for (const [fid, name] of [[1, "block"], [2, "block"], [3, "hello"]] as const) {
    expectType(
      await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: fid, wnames: [name] }),
      MsgType.Rwalk,
    );
    expectType(await s.rpc({ type: MsgType.Topen, tag: 1, fid, mode: OREAD }), MsgType.Ropen);
  }
  // Two blocked reads, then requests one at a time: each is answered at once.
  await s.send({ type: MsgType.Tread, tag: 10, fid: 1, offset: 0n, count: 100 });
  await s.send({ type: MsgType.Tread, tag: 11, fid: 2, offset: 0n, count: 100 });
  for (let i = 0; i < 50; i++) {
    const st = expectType(await s.rpc({ type: MsgType.Tstat, tag: 20, fid: 3 }), MsgType.Rstat);
    assert.equal(st.stat.name, "hello");
    const r = expectType(
      await s.rpc({ type: MsgType.Tread, tag: 21, fid: 3, offset: 0n, count: 100 }),
      MsgType.Rread,
    );
    assert.equal(dec.decode(r.data), "hi\n");
    expectError(await s.rpc({ type: MsgType.Tstat, tag: 22, fid: 77 }), "unknown fid");
  }
  // Tflush drops the first; the second is answered once it is let go.
  expectType(await s.rpc({ type: MsgType.Tflush, tag: 30, oldtag: 10 }), MsgType.Rflush);
  assert.equal(waiting.length, 2);
  waiting[1]!();
  const r = expectType(await s.next(), MsgType.Rread);
  assert.equal(r.tag, 11);
  assert.equal(dec.decode(r.data), "released");
  waiting[0]!();
  // Nothing came for the flushed tag: the next reply is this clunk's.
  expectType(await s.rpc({ type: MsgType.Tclunk, tag: 31, fid: 3 }), MsgType.Rclunk);
  await s.close();
});

Deno.test("serve over TCP: walks of a host tree answered at once keep walk(5)'s rules", async () => {
  const root = await Deno.makeTempDir({ prefix: "ferry-qd1-" });
  try {
    await Deno.mkdir(`${root}/d`);
    await Deno.writeTextFile(`${root}/d/f`, "x");
    const s = await tcpSession(new HostTree(root));
    const walk = (fid: number, newfid: number, ...wnames: string[]) =>
      s.rpc({ type: MsgType.Twalk, tag: 1, fid, newfid, wnames });
    // A partial walk: the qids walked, and newfid not made.
    assert.equal(expectType(await walk(0, 1, "d", "nope"), MsgType.Rwalk).wqids.length, 1);
    expectError(await s.rpc({ type: MsgType.Tstat, tag: 1, fid: 1 }), "unknown fid");
    expectError(await walk(0, 1, "nope"), "file does not exist");
    expectError(await walk(0, 1, "d/f"), "illegal name");
    // A whole walk makes newfid; walking to it again is refused.
    assert.equal(expectType(await walk(0, 1, "d"), MsgType.Rwalk).wqids.length, 1);
    expectError(await walk(0, 1, "d"), "fid already in use");
    // newfid == fid moves the fid, and only when the whole walk worked.
    expectError(await walk(1, 1, "nope"), "file does not exist");
    assert.equal(expectType(await walk(1, 1, "f"), MsgType.Rwalk).wqids.length, 1);
    assert.equal(
      expectType(await s.rpc({ type: MsgType.Tstat, tag: 1, fid: 1 }), MsgType.Rstat).stat.name,
      "f",
    );
    expectError(await walk(1, 2, "g"), "walk in non-directory");
    // ".." goes up, and at the root stays there; a clone walks no names.
    const up = expectType(await walk(0, 2, "d", "..", ".."), MsgType.Rwalk).wqids;
    assert.deepEqual(up.map((q) => q.path), [up[0]!.path, up[1]!.path, up[1]!.path]);
    expectType(await s.rpc({ type: MsgType.Tclunk, tag: 1, fid: 2 }), MsgType.Rclunk);
    expectType(await walk(1, 2), MsgType.Rwalk);
    // An open fid cannot be walked; its clunk closes the file.
    expectType(await s.rpc({ type: MsgType.Topen, tag: 1, fid: 2, mode: OREAD }), MsgType.Ropen);
    expectError(await walk(2, 3), "fid is already open");
    expectType(await s.rpc({ type: MsgType.Tclunk, tag: 1, fid: 2 }), MsgType.Rclunk);
    expectError(await s.rpc({ type: MsgType.Tclunk, tag: 1, fid: 2 }), "unknown fid");
    // A clunked fid number is free again.
    expectType(await walk(0, 2, "d", "f"), MsgType.Rwalk);
    expectType(await s.rpc({ type: MsgType.Tclunk, tag: 1, fid: 2 }), MsgType.Rclunk);
    await s.close();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("serve over TCP: a Twrite that has to wait keeps its data while later requests arrive", async () => {
  // A file whose writes finish later and are looked at only then: by that
  // time the server has read many more frames over the same connection.
  const kept: { data: Uint8Array; later: Promise<void> }[] = [];
  const tree = new SynthTree(dir("", [
    file("slow", () => ({
      write: (_off, data) => {
        const later = new Promise<void>((r) => setTimeout(r, 5));
        kept.push({ data, later });
        return later.then(() => data.length);
      },
    }), { perm: 0o666 }),
  ]));
  const s = await tcpSession(tree);
  expectType(
    await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: ["slow"] }),
    MsgType.Rwalk,
  );
  expectType(await s.rpc({ type: MsgType.Topen, tag: 1, fid: 1, mode: OWRITE }), MsgType.Ropen);
  // One at a time, and in bursts of writes and stats of other sizes.
  for (let i = 0; i < 20; i++) {
    const w = expectType(
      await s.rpc({ type: MsgType.Twrite, tag: 2, fid: 1, offset: 0n, data: page(i) }),
      MsgType.Rwrite,
    );
    assert.equal(w.count, 4096);
  }
  const burst: TMsg[] = [];
  for (let i = 20; i < 120; i++) {
    const size = 1 + (i * 37) % 3000;
    burst.push({
      type: MsgType.Twrite,
      tag: i,
      fid: 1,
      offset: 0n,
      data: page(i).subarray(0, size),
    });
    burst.push({ type: MsgType.Tstat, tag: 1000 + i, fid: 1 });
  }
  await s.send(...burst);
  for (let i = 0; i < burst.length; i++) await s.next();
  assert.equal(kept.length, 120);
  for (let i = 0; i < kept.length; i++) {
    const d = kept[i]!.data;
    assert.ok(d.length > 0 && d.every((b) => b === i % 251), `write ${i} came out changed`);
  }
  await s.close();
});

Deno.test("serve over TCP: one Tstat after another follows every change to the file", async () => {
  const root = await Deno.makeTempDir({ prefix: "ferry-qd1-" });
  try {
    await Deno.writeTextFile(`${root}/f`, "one");
    const s = await tcpSession(new HostTree(root));
    for (const [fid, mode] of [[1, OREAD], [2, OWRITE]] as const) {
      expectType(
        await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: fid, wnames: ["f"] }),
        MsgType.Rwalk,
      );
      if (fid === 2) {
        expectType(await s.rpc({ type: MsgType.Topen, tag: 1, fid, mode }), MsgType.Ropen);
      }
    }
    const stat = async () =>
      expectType(await s.rpc({ type: MsgType.Tstat, tag: 1, fid: 1 }), MsgType.Rstat).stat;
    const first = await stat();
    // The same answer while nothing changes.
    for (let i = 0; i < 20; i++) assert.deepEqual(await stat(), first);
    // A write through the server, even of the same bytes: a new version.
    expectType(
      await s.rpc({ type: MsgType.Twrite, tag: 1, fid: 2, offset: 0n, data: enc.encode("one") }),
      MsgType.Rwrite,
    );
    const written = await stat();
    assert.notEqual(written.qid.version, first.qid.version);
    // A change made on the host: length, and then permissions.
    await Deno.writeTextFile(`${root}/f`, "three", { append: true });
    assert.equal((await stat()).length, 8n);
    await Deno.chmod(`${root}/f`, 0o600);
    assert.equal((await stat()).mode & 0o777, 0o600);
    // A rename through the server: the new name.
    const d = { ...nullDir(), name: "g" };
    expectType(await s.rpc({ type: MsgType.Twstat, tag: 1, fid: 1, stat: d }), MsgType.Rwstat);
    assert.equal((await stat()).name, "g");
    // Gone from the host: the error, every time.
    await Deno.remove(`${root}/g`);
    for (let i = 0; i < 2; i++) {
      expectError(await s.rpc({ type: MsgType.Tstat, tag: 1, fid: 1 }), "file does not exist");
    }
    await s.close();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("serve over TCP: Treads of a host file keep read(5)'s rules one at a time and in bursts", async () => {
  const root = await Deno.makeTempDir({ prefix: "ferry-qd1-" });
  try {
    const data = new Uint8Array(100_000).map((_, i) => i % 253);
    await Deno.writeFile(`${root}/f`, data);
    const s = await tcpSession(new HostTree(root));
    for (const [fid, mode] of [[1, OREAD], [2, OWRITE]] as const) {
      expectType(
        await s.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: fid, wnames: ["f"] }),
        MsgType.Rwalk,
      );
      expectType(await s.rpc({ type: MsgType.Topen, tag: 1, fid, mode }), MsgType.Ropen);
    }
    const read = async (offset: number, count: number) =>
      expectType(
        await s.rpc({ type: MsgType.Tread, tag: 1, fid: 1, offset: BigInt(offset), count }),
        MsgType.Rread,
      ).data;
    // Counts beyond what msize allows are cut to it.
    assert.deepEqual(await read(0, 1 << 20), data.subarray(0, 8216 - 24));
    assert.deepEqual(await read(99_990, 100), data.subarray(99_990));
    assert.equal((await read(100_000, 100)).length, 0);
    assert.equal((await read(200_000, 100)).length, 0);
    // Grown on the host meanwhile: the new bytes are read.
    await Deno.writeFile(`${root}/f`, new Uint8Array([7, 7, 7]), { append: true });
    assert.deepEqual([...await read(100_000, 100)], [7, 7, 7]);
    // A burst: every reply its own offset's bytes.
    const burst: TMsg[] = [];
    for (let i = 0; i < 40; i++) {
      burst.push({
        type: MsgType.Tread,
        tag: 100 + i,
        fid: 1,
        offset: BigInt(i * 2000),
        count: 2000,
      });
    }
    await s.send(...burst);
    for (let i = 0; i < 40; i++) {
      const r = expectType(await s.next(), MsgType.Rread);
      const at = (r.tag - 100) * 2000;
      assert.deepEqual(r.data, data.subarray(at, at + 2000));
    }
    // Not open for reading, or not open at all.
    expectError(
      await s.rpc({ type: MsgType.Tread, tag: 1, fid: 2, offset: 0n, count: 10 }),
      "permission denied",
    );
    expectError(
      await s.rpc({ type: MsgType.Tread, tag: 1, fid: 0, offset: 0n, count: 10 }),
      "fid not open for I/O",
    );
    await s.close();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
