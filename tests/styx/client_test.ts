import assert from "node:assert/strict";
import { pattern } from "../fixture.ts";
import { concatBytes } from "../../lib/bytes.ts";
import {
  InterruptedError,
  readStream,
  RemoteTree,
  StyxClient,
  writeFrom,
} from "../../lib/styx/client.ts";
import { decode, encode } from "../../lib/styx/codec.ts";
import { FrameReader } from "../../lib/styx/frame.ts";
import { serve } from "../../lib/styx/server.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { memPipe } from "../../lib/transport/pipe.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import type {
  Caller,
  Created,
  Node,
  OpenFile,
  OpOptions,
  Tree,
  WalkResult,
} from "../../lib/fs/tree.ts";
import {
  type Dir,
  DMDIR,
  Ename,
  MsgType,
  nullDir,
  ORDWR,
  OREAD,
  OWRITE,
  type Qid,
  QTDIR,
  type RMsg,
  StyxError,
  type TMsg,
} from "../../lib/styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function rejectsWith(p: Promise<unknown>, message: string | RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof StyxError, `expected a StyxError, got ${e}`);
    if (typeof message === "string") assert.equal(e.message, message);
    else assert.match(e.message, message);
    return true;
  });
}

// ---------------------------------------------------------------------------
// A scripted server written with the codec, to see exactly what the client
// sends and to answer in ways the real server never would.

type Handler = (m: TMsg, reply: (r: RMsg) => void) => void;

const dirQid: Qid = { type: QTDIR, version: 0, path: 1n };
const fileQid: Qid = { type: 0, version: 0, path: 2n };

class FakeServer {
  readonly log: TMsg[] = [];
  readonly done: Promise<void>;
  constructor(readonly conn: Conn, handler: Handler) {
    this.done = this.#loop(handler);
  }
  reply(r: RMsg): void {
    this.conn.write(encode(r)).catch(() => {});
  }
  async #loop(handler: Handler): Promise<void> {
    const frames = new FrameReader(this.conn, 1 << 20);
    try {
      for (;;) {
        const f = await frames.next();
        if (f === null) return;
        const m = decode(f) as TMsg;
        this.log.push(m);
        if (m.type === MsgType.Tversion) {
          this.reply({ type: MsgType.Rversion, tag: m.tag, msize: 8192, version: "9P2000" });
          continue;
        }
        if (m.type === MsgType.Tattach) {
          this.reply({ type: MsgType.Rattach, tag: m.tag, qid: dirQid });
          continue;
        }
        handler(m, (r) => this.reply(r));
      }
    } catch {
      this.conn.close();
    }
  }
  /** The T-messages of one type that arrived so far. */
  sent<T extends TMsg["type"]>(type: T): Extract<TMsg, { type: T }>[] {
    return this.log.filter((m) => m.type === type) as Extract<TMsg, { type: T }>[];
  }
}

/** Resolves once `cond()` holds, checking after each macrotask. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 5000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(`gave up waiting for ${what}`);
}

async function fake(handler: Handler): Promise<{ client: StyxClient; server: FakeServer }> {
  const [a, b] = memPipe();
  const server = new FakeServer(b, handler);
  const client = await StyxClient.connect(a, { trace: false });
  return { client, server };
}

/** Answers clone walks and walks to "f"; holds every Rclunk until released. */
function walkingHandler(held: Array<() => void>): Handler {
  return (m, reply) => {
    switch (m.type) {
      case MsgType.Twalk:
        if (m.wnames.length === 0) reply({ type: MsgType.Rwalk, tag: m.tag, wqids: [] });
        else if (m.wnames[0] === "f") reply({ type: MsgType.Rwalk, tag: m.tag, wqids: [fileQid] });
        else reply({ type: MsgType.Rerror, tag: m.tag, ename: Ename.notFound });
        return;
      case MsgType.Topen:
        reply({ type: MsgType.Rerror, tag: m.tag, ename: Ename.perm });
        return;
      case MsgType.Tclunk:
        held.push(() => reply({ type: MsgType.Rclunk, tag: m.tag }));
        return;
      default:
        reply({ type: MsgType.Rerror, tag: m.tag, ename: "unexpected" });
    }
  };
}

/** A Conn whose incoming chunks the test hands over one by one. */
class FeedConn implements Conn {
  readonly peer = { addr: "feed", authenticated: false };
  readonly local = "feed";
  readonly written: Uint8Array[] = [];
  readonly closed: Promise<void>;
  #closedResolve!: () => void;
  #queue: (Uint8Array | null)[] = [];
  #waiter: ((c: Uint8Array | null) => void) | null = null;
  constructor() {
    this.closed = new Promise((r) => (this.#closedResolve = r));
  }
  feed(c: Uint8Array | null): void {
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w(c);
    } else this.#queue.push(c);
  }
  read(): Promise<Uint8Array | null> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift()!);
    return new Promise((r) => (this.#waiter = r));
  }
  write(data: Uint8Array): Promise<void> {
    this.written.push(data);
    return Promise.resolve();
  }
  close(): void {
    this.feed(null);
    this.#closedResolve();
  }
}

Deno.test("StyxClient framing: replies split anywhere, joined or copied", async (t) => {
  for (const contiguous of [true, false]) {
    for (const seed of [1, 2, 3]) {
      await t.step(`${contiguous ? "one buffer" : "separate buffers"}, seed ${seed}`, async () => {
        const conn = new FeedConn();
        const connecting = StyxClient.connect(conn, { msize: 8192 + 24 });
        conn.feed(
          encode({ type: MsgType.Rversion, tag: 0xffff, msize: 8192 + 24, version: "9P2000" }),
        );
        const client = await connecting;
        const n = 50;
        const reads = Array.from(
          { length: n },
          () => client.rpc({ type: MsgType.Tread, fid: 0, offset: 0n, count: 8192 }),
        );
        // Replies in reverse order, sizes from 0 to 8192 bytes.
        const frames = Array.from({ length: n }, (_, i) => {
          const tag = n - 1 - i;
          return encode({ type: MsgType.Rread, tag, data: pattern((tag * 167) % 8193, tag) });
        });
        const total = frames.reduce((a, f) => a + f.length, 0);
        const all = concatBytes(frames, total);
        let x = seed;
        for (let p = 0; p < total;) {
          x = (x * 1103515245 + 12345) >>> 0;
          const k = Math.min(
            total - p,
            (x >>> 28) < 4 ? 1 + (x >>> 16) % 3 : 1 + (x >>> 12) % 6000,
          );
          conn.feed(contiguous ? all.subarray(p, p + k) : all.slice(p, p + k));
          p += k;
        }
        const got = await Promise.all(reads);
        got.forEach((r, tag) => assert.deepEqual(r.data, pattern((tag * 167) % 8193, tag)));
        await client.close();
      });
    }
  }
});

Deno.test("StyxClient against a scripted server", async (t) => {
  await t.step("version: Tversion with NOTAG first, msize adopted", async () => {
    const { client, server } = await fake(() => {});
    const v = server.log[0]!;
    assert.equal(v.type, MsgType.Tversion);
    assert.equal(v.tag, 0xffff);
    assert.equal(client.msize, 8192);
    assert.equal(client.maxIo, 8192 - 24);
    await client.close();
    await server.done;
  });

  await t.step("version: a server that answers 'unknown' is refused", async () => {
    const [a, b] = memPipe();
    const frames = new FrameReader(b, 8192);
    (async () => {
      const f = await frames.next();
      const m = decode(f!);
      await b.write(
        encode({ type: MsgType.Rversion, tag: m.tag, msize: 8192, version: "unknown" }),
      );
    })();
    await rejectsWith(StyxClient.connect(a), /answered version 'unknown'/);
    b.close();
  });

  await t.step("a reply of the wrong type is an error naming both", async () => {
    const { client, server } = await fake((m, reply) => {
      if (m.type === MsgType.Twalk) reply({ type: MsgType.Rstat, tag: m.tag, stat: nullDir() });
      else if (m.type === MsgType.Tstat) reply({ type: MsgType.Rclunk, tag: m.tag });
      else reply({ type: MsgType.Rerror, tag: m.tag, ename: "no" });
    });
    const root = await client.attach("glenda");
    await rejectsWith(root.walk(["x"]), /Twalk.*with Rstat/);
    await rejectsWith(root.stat(), /Tstat.*with Rclunk/);
    // Rerror carries the server's words unchanged.
    await rejectsWith(root.wstat(nullDir()), "no");
    // The connection is still usable.
    await rejectsWith(root.stat(), /with Rclunk/);
    await client.close();
    await server.done;
  });

  await t.step("open failure clunks the cloned fid", async () => {
    const held: Array<() => void> = [];
    const { client, server } = await fake(walkingHandler(held));
    const root = await client.attach("glenda");
    const before = client.fidsInUse;
    const node = (await root.walk(["f"])).node!;
    await rejectsWith(node.open(OREAD), Ename.perm);
    // The Topen goes out with the clone walk and, once refused, again
    // after it (it may only have overtaken the walk): both on the clone.
    const opens = server.sent(MsgType.Topen);
    assert.equal(opens.length, 2);
    assert.equal(opens[1]!.fid, opens[0]!.fid);
    await until(() => server.sent(MsgType.Tclunk).length === 1, "Tclunk");
    assert.equal(server.sent(MsgType.Tclunk)[0]!.fid, opens[0]!.fid);
    assert.notEqual(opens[0]!.fid, node.fid);
    held.splice(0).forEach((f) => f());
    const closing = node.close();
    await until(() => held.length === 1, "second Tclunk");
    held.splice(0).forEach((f) => f());
    await closing;
    await until(() => client.fidsInUse === before, "fids released");
    await client.close();
    await server.done;
  });

  await t.step("a fid number is reused only after its Rclunk", async () => {
    const held: Array<() => void> = [];
    const { client, server } = await fake(walkingHandler(held));
    const root = await client.attach("glenda");
    const a = (await root.walk(["f"])).node!;
    const closing = a.close();
    await until(() => held.length === 1, "Tclunk");
    // Rclunk not yet answered: a new walk must pick another number.
    const b = (await root.walk(["f"])).node!;
    assert.notEqual(b.fid, a.fid);
    held.splice(0).forEach((f) => f());
    await closing;
    const c = (await root.walk(["f"])).node!;
    assert.equal(c.fid, a.fid);
    // A failed walk frees its new fid at once (the server never made it).
    await rejectsWith(root.walk(["nope"]), Ename.notFound);
    const failed = server.sent(MsgType.Twalk).at(-1)!.newfid;
    const d = (await root.walk(["f"])).node!;
    assert.equal(d.fid, failed);
    await client.close();
    await server.done;
  });

  await t.step("tags: never NOTAG, freed tags reused, many in flight", async () => {
    const pending: Array<() => void> = [];
    const { client, server } = await fake((m, reply) => {
      pending.push(() => reply({ type: MsgType.Rstat, tag: m.tag, stat: nullDir() }));
    });
    const root = await client.attach("glenda");
    const all = Array.from({ length: 50 }, () => root.stat());
    await until(() => pending.length === 50, "50 requests in flight");
    const tags = new Set(server.sent(MsgType.Tstat).map((m) => m.tag));
    assert.equal(tags.size, 50);
    assert.ok(!tags.has(0xffff));
    pending.splice(0).forEach((f) => f());
    await Promise.all(all);
    const again = root.stat();
    await until(() => pending.length === 1, "one more");
    assert.ok(tags.has(server.sent(MsgType.Tstat).at(-1)!.tag), "a freed tag is reused");
    pending.splice(0).forEach((f) => f());
    await again;
    await client.close();
    await server.done;
  });

  await t.step("abort sends Tflush; a reply before Rflush means the walk happened", async () => {
    let flushes = 0;
    const walks: TMsg[] = [];
    const { client, server } = await fake((m, reply) => {
      if (m.type === MsgType.Twalk) {
        walks.push(m); // held until flushed
      } else if (m.type === MsgType.Tflush) {
        flushes++;
        const w = walks.find((x) => x.tag === m.oldtag);
        // First flush: the walk had already happened; second: it never did.
        if (w && flushes === 1) reply({ type: MsgType.Rwalk, tag: w.tag, wqids: [fileQid] });
        reply({ type: MsgType.Rflush, tag: m.tag });
      } else if (m.type === MsgType.Tclunk) {
        reply({ type: MsgType.Rclunk, tag: m.tag });
      }
    });
    const root = await client.attach("glenda");
    const base = client.fidsInUse;
    for (let i = 0; i < 2; i++) {
      const ac = new AbortController();
      const p = root.walk(["f"], { signal: ac.signal });
      await until(() => walks.length === i + 1, "Twalk");
      ac.abort();
      await assert.rejects(p, (e) => e instanceof InterruptedError && e.message === "interrupted");
    }
    const w1 = walks[0] as TMsg & { newfid: number };
    // The walk that happened had its newfid clunked; the flushed one was just freed.
    await until(() => server.sent(MsgType.Tclunk).length === 1, "Tclunk of the late newfid");
    assert.equal(server.sent(MsgType.Tclunk)[0]!.fid, w1.newfid);
    await until(() => client.fidsInUse === base, "fids released");
    const fl = server.sent(MsgType.Tflush);
    assert.equal(fl.length, 2);
    assert.equal(fl[0]!.oldtag, w1.tag);
    // An already aborted signal sends nothing.
    const n = server.log.length;
    await assert.rejects(root.stat({ signal: AbortSignal.abort() }), InterruptedError);
    assert.equal(server.log.length, n);
    await client.close();
    await server.done;
  });

  await t.step(
    "an interrupted walkOpen clunks a newfid the walk made, frees one it did not",
    async () => {
      let flushes = 0;
      const held: TMsg[] = [];
      const { client, server } = await fake((m, reply) => {
        if (m.type === MsgType.Twalk || m.type === MsgType.Topen || m.type === MsgType.Tread) {
          held.push(m); // held until flushed
        } else if (m.type === MsgType.Tflush) {
          const w = held.find((x) => x.tag === m.oldtag);
          // The first walk flushed had already happened; the second never did.
          if (w?.type === MsgType.Twalk && ++flushes === 1) {
            reply({ type: MsgType.Rwalk, tag: w.tag, wqids: [fileQid] });
          }
          reply({ type: MsgType.Rflush, tag: m.tag });
        } else if (m.type === MsgType.Tclunk) {
          reply({ type: MsgType.Rclunk, tag: m.tag });
        }
      });
      const root = await client.attach("glenda");
      const base = client.fidsInUse;
      for (let i = 0; i < 2; i++) {
        const ac = new AbortController();
        const p = root.walkOpen(["f"], OREAD, { signal: ac.signal, readAhead: 100 });
        // Walk, open and read go out together, before any reply.
        await until(() => held.length === 3 * (i + 1), "Twalk, Topen and Tread");
        ac.abort();
        await assert.rejects(p, (e) => e instanceof InterruptedError);
      }
      const newfid = (held[0] as TMsg & { newfid: number }).newfid;
      assert.deepEqual(held.slice(0, 3).map((m) => m.type), [
        MsgType.Twalk,
        MsgType.Topen,
        MsgType.Tread,
      ]);
      await until(() => server.sent(MsgType.Tclunk).length === 1, "Tclunk of the walked newfid");
      assert.equal(server.sent(MsgType.Tclunk)[0]!.fid, newfid);
      await until(() => client.fidsInUse === base, "fids released");
      await client.close();
      await server.done;
    },
  );

  await t.step("a Tread answered with more data than asked for is an error", async () => {
    const { client, server } = await fake((m, reply) => {
      if (m.type === MsgType.Twalk) reply({ type: MsgType.Rwalk, tag: m.tag, wqids: [fileQid] });
      else if (m.type === MsgType.Topen) {
        reply({ type: MsgType.Ropen, tag: m.tag, qid: fileQid, iounit: 10 });
      } else if (m.type === MsgType.Tread) {
        reply({ type: MsgType.Rread, tag: m.tag, data: new Uint8Array(11) });
      } else reply({ type: MsgType.Rclunk, tag: m.tag });
    });
    const root = await client.attach("glenda");
    const f = await client.openPath(root, "/f", OREAD);
    assert.equal(f.iounit, 10);
    await rejectsWith(f.read(0n, 100), /Tread of 10 bytes with 11/);
    await f.close();
    await client.close();
    await server.done;
  });

  await t.step(
    "connect: an aborted version exchange rejects and drops the connection",
    async () => {
      const [a, b] = memPipe();
      const ac = new AbortController();
      const p = StyxClient.connect(a, { signal: ac.signal });
      const first = await b.read();
      assert.ok(first && first.length === 19);
      ac.abort();
      await assert.rejects(p, InterruptedError);
      assert.equal(await b.read(), null);
    },
  );

  await t.step("trace prints every message to stderr", async () => {
    const lines: string[] = [];
    const orig = console.error;
    console.error = (...args: unknown[]) => lines.push(args.join(" "));
    try {
      const [a, b] = memPipe();
      const server = new FakeServer(b, () => {});
      const client = await StyxClient.connect(a, { trace: true });
      await client.close();
      await server.done;
    } finally {
      console.error = orig;
    }
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /-> Tversion tag 65535 msize \d+ version '9P2000'/);
    assert.match(lines[1]!, /<- Rversion tag 65535 msize 8192/);
  });

  await t.step("hangup rejects pending requests and fails later ones fast", async () => {
    const { client, server } = await fake(() => {});
    const root = await client.attach("glenda");
    const p = root.stat();
    await until(() => server.sent(MsgType.Tstat).length === 1, "Tstat");
    server.conn.close();
    await rejectsWith(p, Ename.hungup);
    await rejectsWith(root.stat(), Ename.hungup);
    await client.closed;
    await root.close(); // quietly does nothing
    await server.done;
  });
});

// ---------------------------------------------------------------------------
// Against the Ferry server.

/** A tree with one file, /block, whose reads wait until released or flushed. */
class BlockTree implements Tree {
  reading = 0;
  flushed = 0;
  readonly #waiters: Array<() => void> = [];

  release(): void {
    this.#waiters.splice(0).forEach((f) => f());
  }

  attach(_caller: Caller, _aname: string): Promise<Node> {
    return Promise.resolve(this.#node(true));
  }

  #node(isDir: boolean): Node {
    const qid: Qid = isDir ? dirQid : fileQid;
    const dir: Dir = {
      ...nullDir(),
      qid,
      mode: isDir ? (DMDIR | 0o555) >>> 0 : 0o444,
      name: "block",
    };
    const file: OpenFile = {
      qid,
      iounit: 0,
      read: (_offset: bigint, _count: number, opts?: OpOptions): Promise<Uint8Array> => {
        this.reading++;
        return new Promise((resolve, reject) => {
          opts?.signal?.addEventListener("abort", () => {
            this.flushed++;
            reject(new StyxError(Ename.interrupted));
          });
          this.#waiters.push(() => resolve(enc.encode("released")));
        });
      },
      write: () => Promise.reject(new StyxError(Ename.perm)),
      readDir: () => Promise.resolve([]),
      close: () => Promise.resolve(),
    };
    return {
      qid,
      walk: (names: string[]): Promise<WalkResult> => {
        if (names.length === 0) return Promise.resolve({ qids: [], node: this.#node(isDir) });
        if (isDir && names.length === 1 && names[0] === "block") {
          return Promise.resolve({ qids: [fileQid], node: this.#node(false) });
        }
        return Promise.reject(new StyxError(Ename.notFound));
      },
      open: () => Promise.resolve(file),
      create: (): Promise<Created> => Promise.reject(new StyxError(Ename.perm)),
      stat: () => Promise.resolve(dir),
      wstat: () => Promise.reject(new StyxError(Ename.perm)),
      remove: () => Promise.reject(new StyxError(Ename.perm)),
      close: () => Promise.resolve(),
    };
  }
}

interface Setup {
  client: StyxClient;
  served: Promise<void>;
  stop(): Promise<void>;
}

async function overPipe(tree: Tree): Promise<Setup> {
  const [a, b] = memPipe();
  const served = serve(b, tree);
  const client = await StyxClient.connect(a, { trace: false });
  return {
    client,
    served,
    async stop() {
      await client.close();
      await served;
    },
  };
}

async function overTcp(tree: Tree): Promise<Setup & { serverConns: Conn[] }> {
  const l = tcpListen("127.0.0.1", 0);
  const port = Number(l.addr.split("!")[2]);
  const serverConns: Conn[] = [];
  const sessions: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of l) {
      serverConns.push(c);
      sessions.push(serve(c, tree));
    }
  })();
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
  const served = (async () => {
    await accepting;
    await Promise.all(sessions);
  })();
  return {
    client,
    served,
    serverConns,
    async stop() {
      await client.close();
      l.close();
      await served;
    },
  };
}

for (const [kind, setup] of [["memPipe", overPipe], ["TCP", overTcp]] as const) {
  Deno.test(`StyxClient against the Ferry server over ${kind}`, async (t) => {
    const tree = new MemTree({ owner: "glenda" });
    const s = await setup(tree);
    const { client } = s;
    const root = await client.attach("glenda");
    const base = client.fidsInUse;

    await t.step("write, read, stat, ls, create, remove by path", async () => {
      await client.writeFile(root, "/hello", enc.encode("hello, world"));
      assert.equal(dec.decode(await client.readFile(root, "hello")), "hello, world");
      await client.writeFile(root, "/hello", enc.encode("bye"));
      assert.equal(dec.decode(await client.readFile(root, "/hello")), "bye");
      assert.equal((await client.stat(root, "/hello")).length, 3n);
      await client.create(root, "/x");
      const names = (await client.ls(root, "/")).map((d) => d.name).sort();
      assert.deepEqual(names, ["hello", "x"]);
      await client.remove(root, "/x");
      await client.create(root, "/d", { perm: DMDIR | 0o755 });
      await client.create(root, "/d/x");
      assert.deepEqual((await client.ls(root, "/")).map((d) => d.name).sort(), ["d", "hello"]);
      assert.deepEqual((await client.ls(root, "/hello")).map((d) => d.name), ["hello"]);
      assert.deepEqual((await client.ls(root, "/d")).map((d) => d.name), ["x"]);
      await rejectsWith(client.remove(root, "/d"), Ename.notEmpty);
      await client.remove(root, "/d/x");
      await client.remove(root, "/d");
      await rejectsWith(client.readFile(root, "/d"), Ename.notFound);
      await rejectsWith(client.create(root, "/hello"), Ename.exists);
      await until(() => client.fidsInUse === base, "fids released");
    });

    await t.step("a directory of many entries is read whole", async () => {
      await tree.mkdirp("/many");
      for (let i = 0; i < 300; i++) await tree.writeFile(`/many/file-${i}`, "");
      const names = (await client.ls(root, "/many")).map((d) => d.name);
      assert.equal(names.length, 300);
      assert.equal(new Set(names).size, 300);
    });

    await t.step("pipelining: 64 reads of different files at once", async () => {
      for (let i = 0; i < 64; i++) await tree.writeFile(`/p${i}`, `file ${i}`);
      const all = Array.from({ length: 64 }, (_, i) => client.readFile(root, `/p${i}`));
      const got = await Promise.all(all);
      got.forEach((b, i) => assert.equal(dec.decode(b), `file ${i}`));
      await until(() => client.fidsInUse === base, "fids released");
    });

    await t.step("walk of 40 names takes several Twalks; partial walks", async () => {
      const names = Array.from({ length: 40 }, (_, i) => `n${i}`);
      await tree.writeFile("/" + names.join("/"), "deep");
      const w = await root.walk(names);
      assert.equal(w.qids.length, 40);
      assert.ok(w.node);
      const f = await w.node.open(OREAD);
      assert.equal(dec.decode(await f.read(0n, 100)), "deep");
      await f.close();
      await w.node.close();
      assert.equal(dec.decode(await client.readFile(root, names.join("/"))), "deep");
      // Missing at 3 (first Twalk), at 20 and at 33 (later Twalks).
      for (const miss of [3, 20, 33]) {
        const bad = [...names];
        bad[miss] = "missing";
        const p = await root.walk(bad);
        assert.equal(p.qids.length, miss);
        assert.equal(p.node, undefined);
      }
      await rejectsWith(root.walk(["missing", ...names]), Ename.notFound);
      // Clone.
      const c = await root.walk([]);
      assert.equal(c.qids.length, 0);
      assert.deepEqual(c.node!.qid, root.qid);
      await c.node!.close();
      await until(() => client.fidsInUse === base, "fids released");
    });

    await t.step("open failure clunks, node ops through the Tree interface", async () => {
      const rt = new RemoteTree(client);
      const r2 = await rt.attach({ user: "glenda" }, "");
      const before = client.fidsInUse;
      await rejectsWith(r2.open(OWRITE), Ename.isDir);
      await until(() => client.fidsInUse === before, "clone clunked");
      const { node, file } = await r2.create("made", 0o644, ORDWR);
      assert.equal(await file.write(0n, enc.encode("abc")), 3);
      assert.equal(dec.decode(await file.read(0n, 10)), "abc");
      await file.close();
      const d = await node.stat();
      assert.equal(d.name, "made");
      assert.equal(d.length, 3n);
      await node.wstat({ ...nullDir(), name: "renamed" });
      assert.equal((await client.stat(r2, "/renamed")).length, 3n);
      await node.remove();
      await node.close();
      await rejectsWith(client.stat(r2, "/renamed"), Ename.notFound);
      await r2.close();
      await until(() => client.fidsInUse === base, "fids released");
    });

    await t.step("RemoteFile.read and write split at iounit", async () => {
      const data = pattern(client.maxIo * 3 + 17, 7);
      const f = await client.openPath(root, "/hello", ORDWR);
      assert.equal(await f.write(0n, data), data.length);
      const back = await f.read(0n, data.length + 100);
      assert.equal(back.length, data.length);
      assert.deepEqual(back, data);
      await f.close();
    });

    await t.step("readStream and writeFrom: a few MiB byte-exact", async () => {
      const size = 5 * 1024 * 1024 + 12345;
      const data = pattern(size, 3);
      // Source chunks of odd sizes, so they must be regrouped into iounits.
      let off = 0;
      const src = new ReadableStream<Uint8Array>({
        pull(c) {
          if (off >= size) return c.close();
          const n = Math.min(size - off, 100_000 + (off % 7919));
          c.enqueue(data.slice(off, off + n));
          off += n;
        },
      });
      assert.equal(await client.writeFile(root, "/big", src), BigInt(size));
      assert.equal((await client.stat(root, "/big")).length, BigInt(size));
      const f = await client.openPath(root, "/big", OREAD);
      const got = new Uint8Array(size);
      let n = 0;
      for await (const chunk of readStream(f)) {
        got.set(chunk, n);
        n += chunk.length;
      }
      assert.equal(n, size);
      assert.deepEqual(got, data);
      // From an offset, and with a window of 1.
      const tail: Uint8Array[] = [];
      for await (const c of readStream(f, { offset: BigInt(size - 1000), window: 1 })) tail.push(c);
      assert.deepEqual(tail.length, 1);
      assert.deepEqual(tail[0], data.subarray(size - 1000));
      await f.close();
      assert.deepEqual(await client.readFile(root, "/big"), data);
      // writeFrom from bytes at an offset.
      const w = await client.openPath(root, "/big", OWRITE);
      assert.equal(await writeFrom(w, pattern(10, 9), { offset: 5n }), 10n);
      await w.close();
      const again = await client.readFile(root, "/big");
      assert.deepEqual(again.subarray(5, 15), pattern(10, 9));
      await tree.writeFile("/big", "");
      await until(() => client.fidsInUse === base, "fids released");
    });

    await t.step("cancelling a readStream stops it", async () => {
      await tree.writeFile("/mid", pattern(2 * 1024 * 1024));
      const f = await client.openPath(root, "/mid", OREAD);
      const reader = readStream(f).getReader();
      const first = await reader.read();
      assert.ok(first.value && first.value.length > 0);
      await reader.cancel();
      await f.close();
      await until(() => client.fidsInUse === base && client.inFlight === 0, "quiet");
    });

    await root.close();
    await s.stop();
  });
}

Deno.test("StyxClient: Tflush and hangup against the Ferry server", async (t) => {
  await t.step("an aborted blocking read is flushed; the connection goes on", async () => {
    const tree = new BlockTree();
    const s = await overPipe(tree);
    const root = await s.client.attach("glenda");
    const f = await s.client.openPath(root, "/block", OREAD);
    const ac = new AbortController();
    const p = f.read(0n, 10, { signal: ac.signal });
    const q = f.read(0n, 10);
    await until(() => tree.reading === 2, "two blocked reads");
    ac.abort();
    await assert.rejects(p, (e) => e instanceof InterruptedError && e.message === "interrupted");
    assert.equal(tree.flushed, 1);
    // The other read is still pending, and other requests go through.
    assert.equal((await root.stat()).name, "block");
    tree.release();
    assert.equal(dec.decode(await q), "released");
    await f.close();
    await root.close();
    await s.stop();
  });

  await t.step("pipelining: 32 reads blocked in the server at once", async () => {
    const tree = new BlockTree();
    const s = await overTcp(tree);
    const root = await s.client.attach("glenda");
    const f = await s.client.openPath(root, "/block", OREAD);
    const reads = Array.from({ length: 32 }, () => f.read(0n, 10));
    await until(() => tree.reading === 32, "32 reads in the server");
    assert.equal(s.client.inFlight, 32);
    tree.release();
    for (const r of await Promise.all(reads)) assert.equal(dec.decode(r), "released");
    await f.close();
    await root.close();
    await s.stop();
  });

  await t.step("server gone mid-read over TCP: pending reads reject promptly", async () => {
    const tree = new BlockTree();
    const s = await overTcp(tree);
    const root = await s.client.attach("glenda");
    const f = await s.client.openPath(root, "/block", OREAD);
    const reads = [f.read(0n, 10), f.read(0n, 10), f.read(0n, 10)];
    await until(() => tree.reading === 3, "blocked reads");
    for (const c of s.serverConns) c.close();
    for (const r of reads) await rejectsWith(r, Ename.hungup);
    await rejectsWith(root.stat(), Ename.hungup);
    await rejectsWith(s.client.attach("glenda"), Ename.hungup);
    await f.close();
    await s.stop();
  });
});

Deno.test("StyxClient: backpressure and re-export", async (t) => {
  await t.step("a slow reader of readStream keeps only the window in flight", async () => {
    const tree = new MemTree({ owner: "glenda" });
    await tree.writeFile("/big", pattern(4 * 1024 * 1024));
    const [a, b] = memPipe();
    const served = serve(b, tree);
    // A small msize makes a 4 MiB file many iounits long.
    const client = await StyxClient.connect(a, { msize: 8192 + 24 });
    let treads = 0;
    const root = await client.attach("glenda");
    const f = await client.openPath(root, "/big", OREAD);
    const origRead = f.readOnce.bind(f);
    f.readOnce = (off, count, opts) => {
      treads++;
      return origRead(off, count, opts);
    };
    const reader = readStream(f, { window: 4 }).getReader();
    let consumed = 0;
    for (let i = 0; i < 20; i++) {
      const { value } = await reader.read();
      consumed += value!.length;
      // Give the client time to run ahead if it wanted to.
      await new Promise((r) => setTimeout(r, 2));
      assert.ok(client.inFlight <= 4, `in flight: ${client.inFlight}`);
      assert.ok(treads * 8192 <= consumed + 5 * 8192, `${treads} Treads for ${consumed} bytes`);
    }
    await reader.cancel();
    await f.close();
    await root.close();
    await client.close();
    await served;
  });

  await t.step("writeFrom stops at the first failed Twrite and cancels its source", async () => {
    const tree = new MemTree({ owner: "glenda", maxFileSize: 100_000 });
    const s = await overPipe(tree);
    const root = await s.client.attach("glenda");
    let cancelled = false;
    let produced = 0;
    const src = new ReadableStream<Uint8Array>({
      pull(c) {
        produced += 65536;
        c.enqueue(new Uint8Array(65536));
      },
      cancel() {
        cancelled = true;
      },
    }, { highWaterMark: 0 });
    await assert.rejects(s.client.writeFile(root, "/f", src), StyxError);
    assert.ok(cancelled, "source cancelled");
    // At most twice a window of Twrites beyond the one that failed.
    assert.ok(produced < 16 * s.client.maxIo, `read ${produced} bytes from an endless source`);
    await until(() => s.client.fidsInUse === 1 && s.client.inFlight === 0, "quiet");
    await root.close();
    await s.stop();
  });

  await t.step("a RemoteTree served again: client → server → client → server", async () => {
    const tree = new MemTree({ owner: "glenda" });
    await tree.writeFile("/a/b/c", "inner");
    const inner = await overPipe(tree);
    const outer = await overPipe(new RemoteTree(inner.client));
    const c = outer.client;
    const root = await c.attach("glenda");
    assert.equal(dec.decode(await c.readFile(root, "/a/b/c")), "inner");
    await c.writeFile(root, "/a/new", pattern(300_000));
    assert.deepEqual(await tree.readFile("/a/new"), pattern(300_000));
    assert.deepEqual((await c.ls(root, "/a")).map((d) => d.name).sort(), ["b", "new"]);
    await c.create(root, "/dir", { perm: DMDIR | 0o775 });
    assert.equal((await c.stat(root, "/dir")).qid.type, QTDIR);
    await c.remove(root, "/a/new");
    await rejectsWith(c.stat(root, "/a/new"), Ename.notFound);
    await rejectsWith(c.readFile(root, "/nope"), Ename.notFound);
    await root.close();
    await outer.stop();
    await until(() => inner.client.fidsInUse === 0, "inner fids released");
    await inner.stop();
  });
});
