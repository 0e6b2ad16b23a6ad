import assert from "node:assert/strict";
import { concatBytes } from "../../lib/bytes.ts";
import { serve } from "../../lib/styx/server.ts";
import { decode, decodeDirs, encode } from "../../lib/styx/codec.ts";
import { FrameReader } from "../../lib/styx/frame.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import type {
  Caller,
  Created,
  Node,
  OpenFile,
  OpOptions,
  Tree,
  WalkResult,
} from "../../lib/fs/tree.ts";
import { memPipe } from "../../lib/transport/pipe.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn, Peer } from "../../lib/transport/conn.ts";
import {
  DMDIR,
  DMEXCL,
  IOHDRSZ,
  type Msg,
  MsgType,
  NOFID,
  NOTAG,
  nullDir,
  ORCLOSE,
  ORDWR,
  OREAD,
  OTRUNC,
  OWRITE,
  type Qid,
  type TMsg,
} from "../../lib/styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------------------
// A tree wrapper that counts live nodes and open files, and whose files named
// "block*" block in read until the request is aborted or released.

class CountingTree implements Tree {
  liveNodes = 0;
  liveFiles = 0;
  nodeCloses = 0;
  fileCloses = 0;
  aborted = 0;
  callers: Caller[] = [];
  #release: (() => void)[] = [];
  constructor(readonly inner: Tree) {}

  async attach(caller: Caller, aname: string): Promise<Node> {
    this.callers.push(caller);
    return this.wrapNode(await this.inner.attach(caller, aname), "/");
  }

  /** Let every blocked read finish (returning "released"). */
  release(): void {
    for (const r of this.#release.splice(0)) r();
  }

  blockedRead(signal?: AbortSignal): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const done = () => resolve(enc.encode("released"));
      this.#release.push(done);
      signal?.addEventListener("abort", () => {
        this.aborted++;
        reject(signal.reason);
      }, { once: true });
    });
  }

  wrapNode(n: Node, name: string): Node {
    this.liveNodes++;
    let closed = false;
    // deno-lint-ignore no-this-alias
    const t = this;
    return {
      get qid() {
        return n.qid;
      },
      async walk(names: string[], opts?: OpOptions): Promise<WalkResult> {
        const r = await n.walk(names, opts);
        return {
          qids: r.qids,
          node: r.node ? t.wrapNode(r.node, names.at(-1) ?? name) : undefined,
        };
      },
      async open(mode: number, opts?: OpOptions): Promise<OpenFile> {
        return t.wrapFile(await n.open(mode, opts), name);
      },
      async create(nm: string, perm: number, mode: number, opts?: OpOptions): Promise<Created> {
        const c = await n.create(nm, perm, mode, opts);
        return { node: t.wrapNode(c.node, nm), file: t.wrapFile(c.file, nm) };
      },
      stat: (o) => n.stat(o),
      wstat: (d, o) => n.wstat(d, o),
      remove: (o) => n.remove(o),
      close(): Promise<void> {
        t.nodeCloses++;
        if (!closed) {
          closed = true;
          t.liveNodes--;
        }
        return n.close();
      },
    };
  }

  wrapFile(f: OpenFile, name: string): OpenFile {
    this.liveFiles++;
    let closed = false;
    // deno-lint-ignore no-this-alias
    const t = this;
    return {
      get qid() {
        return f.qid;
      },
      get iounit() {
        return f.iounit;
      },
      read(offset: bigint, count: number, opts?: OpOptions): Promise<Uint8Array> {
        if (name.startsWith("block")) return t.blockedRead(opts?.signal);
        return f.read(offset, count, opts);
      },
      write: (o, d, opts) => f.write(o, d, opts),
      readDir: (o) => f.readDir(o),
      close(): Promise<void> {
        t.fileCloses++;
        if (!closed) {
          closed = true;
          t.liveFiles--;
        }
        return f.close();
      },
    };
  }
}

// ---------------------------------------------------------------------------
// A raw client: sends encoded T-messages and matches replies by tag.

class Raw {
  readonly frames: FrameReader;
  readonly replies: Msg[] = [];
  readonly #waiting = new Map<number, (m: Msg) => void>();
  readonly #unclaimed = new Map<number, Msg[]>();
  readonly ended: Promise<void>;
  #tag = 1;

  constructor(readonly conn: Conn, msize = 1 << 20) {
    this.frames = new FrameReader(conn, msize);
    this.ended = this.#loop();
  }

  async #loop(): Promise<void> {
    try {
      for (;;) {
        const f = await this.frames.next();
        if (f === null) return;
        const m = decode(f);
        this.replies.push(m);
        const w = this.#waiting.get(m.tag);
        if (w) {
          this.#waiting.delete(m.tag);
          w(m);
        } else {
          const q = this.#unclaimed.get(m.tag) ?? [];
          q.push(m);
          this.#unclaimed.set(m.tag, q);
        }
      }
    } catch {
      // connection dropped
    }
  }

  newTag(): number {
    return this.#tag++;
  }

  reply(tag: number): Promise<Msg> {
    const q = this.#unclaimed.get(tag);
    if (q && q.length > 0) {
      const m = q.shift()!;
      if (q.length === 0) this.#unclaimed.delete(tag);
      return Promise.resolve(m);
    }
    return new Promise((r) => this.#waiting.set(tag, r));
  }

  send(m: TMsg): Promise<void> {
    return this.conn.write(encode(m));
  }

  async rpc(m: TMsg): Promise<Msg> {
    const p = this.reply(m.tag);
    await this.send(m);
    return await p;
  }

  /** Sends a message built from `f` with a fresh tag; returns the reply. */
  call(f: (tag: number) => TMsg): Promise<Msg> {
    return this.rpc(f(this.newTag()));
  }

  async version(msize = 8192 + IOHDRSZ, version = "9P2000"): Promise<Msg> {
    return await this.rpc({ type: MsgType.Tversion, tag: NOTAG, msize, version });
  }

  attach(fid: number, uname = "glenda", aname = ""): Promise<Msg> {
    return this.call((tag) => ({
      type: MsgType.Tattach,
      tag,
      fid,
      afid: NOFID,
      uname,
      aname,
    }));
  }

  walk(fid: number, newfid: number, ...wnames: string[]): Promise<Msg> {
    return this.call((tag) => ({ type: MsgType.Twalk, tag, fid, newfid, wnames }));
  }

  open(fid: number, mode: number): Promise<Msg> {
    return this.call((tag) => ({ type: MsgType.Topen, tag, fid, mode }));
  }

  create(fid: number, name: string, perm: number, mode: number): Promise<Msg> {
    return this.call((tag) => ({ type: MsgType.Tcreate, tag, fid, name, perm, mode }));
  }

  read(fid: number, offset: bigint, count: number): Promise<Msg> {
    return this.call((tag) => ({ type: MsgType.Tread, tag, fid, offset, count }));
  }

  write(fid: number, offset: bigint, data: string | Uint8Array): Promise<Msg> {
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    return this.call((tag) => ({ type: MsgType.Twrite, tag, fid, offset, data: bytes }));
  }

  clunk(fid: number): Promise<Msg> {
    return this.call((tag) => ({ type: MsgType.Tclunk, tag, fid }));
  }

  remove(fid: number): Promise<Msg> {
    return this.call((tag) => ({ type: MsgType.Tremove, tag, fid }));
  }

  stat(fid: number): Promise<Msg> {
    return this.call((tag) => ({ type: MsgType.Tstat, tag, fid }));
  }
}

function expectError(m: Msg, ename: string | RegExp): void {
  assert.equal(m.type, MsgType.Rerror, `expected Rerror '${ename}', got ${JSON.stringify(m)}`);
  if (m.type !== MsgType.Rerror) return;
  if (typeof ename === "string") assert.equal(m.ename, ename);
  else assert.match(m.ename, ename);
}

function expectType<T extends Msg["type"]>(m: Msg, type: T): Extract<Msg, { type: T }> {
  if (m.type !== type) {
    assert.fail(
      `expected type ${type}, got ${
        JSON.stringify(m, (_k, v) => typeof v === "bigint" ? String(v) : v)
      }`,
    );
  }
  return m as Extract<Msg, { type: T }>;
}

function setup(
  opts: { tree?: Tree; peer?: Partial<Peer>; serverOpts?: Parameters<typeof serve>[2] } = {},
) {
  const mem = new MemTree({ owner: "glenda" });
  const tree = new CountingTree(opts.tree ?? mem);
  const [c, s] = memPipe({ a: opts.peer });
  const logs: string[] = [];
  const done = serve(s, tree, { log: (m) => logs.push(m), ...opts.serverOpts });
  const raw = new Raw(c);
  return { mem, tree, raw, done, logs, close: async () => (c.close(), await done) };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

// ---------------------------------------------------------------------------

Deno.test("serve: version negotiation", async (t) => {
  await t.step("msize is capped and versions are answered as version(5) says", async () => {
    const { raw, close } = await setup({ serverOpts: { maxMsize: 65536 } });
    expectError(await raw.attach(0), /Tversion/);
    let r = expectType(await raw.version(1 << 20), MsgType.Rversion);
    assert.equal(r.msize, 65536);
    assert.equal(r.version, "9P2000");
    r = expectType(await raw.version(8216, "9P2000.L"), MsgType.Rversion);
    assert.equal(r.version, "9P2000");
    assert.equal(r.msize, 8216);
    r = expectType(await raw.version(8216, "9P2000.u"), MsgType.Rversion);
    assert.equal(r.version, "9P2000");
    r = expectType(await raw.version(8216, "9P1999"), MsgType.Rversion);
    assert.equal(r.version, "unknown");
    expectError(await raw.attach(0), /Tversion/);
    expectError(await raw.version(100), /msize 100 is too small/);
    expectType(await raw.version(8216), MsgType.Rversion);
    expectType(await raw.attach(0), MsgType.Rattach);
    await close();
  });

  await t.step("a new Tversion aborts outstanding requests and clunks every fid", async () => {
    const { mem, tree, raw, close } = await setup();
    await mem.writeFile("/block", "");
    await raw.version();
    expectType(await raw.attach(0), MsgType.Rattach);
    expectType(await raw.walk(0, 1, "block"), MsgType.Rwalk);
    expectType(await raw.open(1, OREAD), MsgType.Ropen);
    const blockedTag = raw.newTag();
    const blocked = raw.reply(blockedTag);
    await raw.send({ type: MsgType.Tread, tag: blockedTag, fid: 1, offset: 0n, count: 10 });
    await tick();
    assert.equal(tree.liveFiles, 1);
    expectType(await raw.version(), MsgType.Rversion);
    await tick();
    assert.equal(tree.aborted, 1);
    assert.equal(tree.liveNodes, 0);
    assert.equal(tree.liveFiles, 0);
    expectError(await raw.stat(0), "unknown fid");
    // fid numbers are free again
    expectType(await raw.attach(1), MsgType.Rattach);
    let got = false;
    blocked.then(() => (got = true));
    await tick();
    assert.equal(got, false, "the aborted read must never be answered");
    await close();
    assert.equal(tree.liveNodes, 0);
  });
});

Deno.test("serve: tracing", async (t) => {
  await t.step("opts.trace logs every message both ways", async () => {
    const { raw, logs, close } = await setup({ serverOpts: { trace: true } });
    await raw.version();
    expectType(await raw.attach(0, "alice"), MsgType.Rattach);
    await close();
    assert.ok(logs.some((l) => l.startsWith("<- Tversion")), logs.join("\n"));
    assert.ok(logs.some((l) => l.startsWith("-> Rversion")), logs.join("\n"));
    assert.ok(logs.some((l) => l.startsWith("<- Tattach") && l.includes("alice")));
    assert.ok(logs.some((l) => l.startsWith("-> Rattach")));
  });

  await t.step("FERRY_TRACE=1 switches it on; normal runs stay quiet", async () => {
    const quiet = setup();
    await quiet.raw.version();
    await quiet.close();
    assert.deepEqual(quiet.logs, []);
    Deno.env.set("FERRY_TRACE", "1");
    try {
      const { raw, logs, close } = setup();
      await raw.version();
      await close();
      assert.ok(logs.some((l) => l.startsWith("<- Tversion")), logs.join("\n"));
    } finally {
      Deno.env.delete("FERRY_TRACE");
    }
  });
});

Deno.test("serve: auth, attach and callers", async (t) => {
  await t.step("Tauth is refused, attach checks fids", async () => {
    const { raw, tree, close } = await setup();
    await raw.version();
    const r = await raw.call((tag) => ({
      type: MsgType.Tauth,
      tag,
      afid: 5,
      uname: "glenda",
      aname: "",
    }));
    expectError(r, "authentication not required");
    expectError(
      await raw.call((tag) => ({
        type: MsgType.Tattach,
        tag,
        fid: 0,
        afid: 5,
        uname: "glenda",
        aname: "",
      })),
      "authentication not required",
    );
    expectType(await raw.attach(0, "alice"), MsgType.Rattach);
    expectError(await raw.attach(0), "fid already in use");
    assert.deepEqual(tree.callers.map((c) => c.user), ["alice"]);
    assert.equal(tree.callers[0]!.authenticated, false);
    await close();
  });

  await t.step("an authenticated peer's identity replaces uname", async () => {
    const { raw, tree, close } = await setup({
      peer: { identity: "bob", authenticated: true, groups: ["staff"] },
    });
    await raw.version();
    expectType(await raw.attach(0, "mallory"), MsgType.Rattach);
    assert.equal(tree.callers[0]!.user, "bob");
    assert.deepEqual(tree.callers[0]!.groups, ["staff"]);
    await close();
  });

  await t.step("callerFor may refuse an attach", async () => {
    const { raw, close } = await setup({
      serverOpts: {
        callerFor(uname) {
          if (uname !== "alice") throw new Error(`user '${uname}' is not allowed`);
          return { user: uname };
        },
      },
    });
    await raw.version();
    expectError(await raw.attach(0, "eve"), "user 'eve' is not allowed");
    expectType(await raw.attach(0, "alice"), MsgType.Rattach);
    await close();
  });
});

Deno.test("serve: walk", async (t) => {
  const { mem, tree, raw, close } = await setup();
  await mem.writeFile("/a/b/c", "hello");
  await raw.version();
  expectType(await raw.attach(0), MsgType.Rattach);

  await t.step("full walk makes newfid; clone with no names", async () => {
    const r = expectType(await raw.walk(0, 1, "a", "b", "c"), MsgType.Rwalk);
    assert.equal(r.wqids.length, 3);
    expectType(await raw.stat(1), MsgType.Rstat);
    const c = expectType(await raw.walk(0, 2), MsgType.Rwalk);
    assert.equal(c.wqids.length, 0);
    expectType(await raw.clunk(2), MsgType.Rclunk);
  });

  await t.step("fid errors", async () => {
    expectError(await raw.walk(99, 3, "a"), "unknown fid");
    expectError(await raw.walk(0, 1, "a"), "fid already in use");
    expectError(await raw.walk(1, 3, "x"), "walk in non-directory");
    expectError(await raw.stat(3), "unknown fid");
  });

  await t.step("failed first name: Rerror, newfid not made", async () => {
    expectError(await raw.walk(0, 3, "nope"), "file does not exist");
    expectError(await raw.stat(3), "unknown fid");
    expectError(await raw.walk(0, 3, "."), "illegal name");
    expectError(await raw.walk(0, 3, "a/b"), "illegal name");
  });

  await t.step("partial walk: fewer qids, newfid not made", async () => {
    const r = expectType(await raw.walk(0, 3, "a", "nope", "c"), MsgType.Rwalk);
    assert.equal(r.wqids.length, 1);
    expectError(await raw.stat(3), "unknown fid");
    const r2 = expectType(await raw.walk(0, 3, "a", ".", "c"), MsgType.Rwalk);
    assert.equal(r2.wqids.length, 1);
    expectError(await raw.stat(3), "unknown fid");
  });

  await t.step("newfid == fid moves the fid, and only on success", async () => {
    expectType(await raw.walk(0, 4, "a"), MsgType.Rwalk);
    const before = expectType(await raw.stat(4), MsgType.Rstat).stat.name;
    assert.equal(before, "a");
    const p = expectType(await raw.walk(4, 4, "b", "nope"), MsgType.Rwalk);
    assert.equal(p.wqids.length, 1);
    assert.equal(expectType(await raw.stat(4), MsgType.Rstat).stat.name, "a");
    expectType(await raw.walk(4, 4, "b"), MsgType.Rwalk);
    assert.equal(expectType(await raw.stat(4), MsgType.Rstat).stat.name, "b");
    expectType(await raw.clunk(4), MsgType.Rclunk);
  });

  await t.step(".. at the root stays at the root", async () => {
    const root = expectType(await raw.stat(0), MsgType.Rstat).stat.qid;
    const r = expectType(await raw.walk(0, 5, "..", "..", ".."), MsgType.Rwalk);
    assert.deepEqual(r.wqids.map((q: Qid) => q.path), [root.path, root.path, root.path]);
    expectType(await raw.clunk(5), MsgType.Rclunk);
  });

  await t.step("an open fid cannot be walked", async () => {
    expectType(await raw.open(1, OREAD), MsgType.Ropen);
    expectError(await raw.walk(1, 6), "fid is already open");
    expectType(await raw.clunk(1), MsgType.Rclunk);
  });

  await close();
  assert.equal(tree.liveNodes, 0);
});

Deno.test("serve: open, read, write, create, remove", async (t) => {
  const { mem, tree, raw, close } = await setup();
  await mem.writeFile("/f", "0123456789");
  await mem.mkdirp("/d");
  await raw.version(8192 + IOHDRSZ);
  expectType(await raw.attach(0), MsgType.Rattach);

  await t.step("iounit, reads, read count capped", async () => {
    expectType(await raw.walk(0, 1, "f"), MsgType.Rwalk);
    expectError(await raw.read(1, 0n, 10), "fid not open for I/O");
    const o = expectType(await raw.open(1, OREAD), MsgType.Ropen);
    assert.equal(o.iounit, 8192);
    expectError(await raw.open(1, OREAD), "fid is already open");
    const r = expectType(await raw.read(1, 2n, 3), MsgType.Rread);
    assert.equal(dec.decode(r.data), "234");
    const all = expectType(await raw.read(1, 0n, 1 << 20), MsgType.Rread);
    assert.equal(all.data.length, 10);
    expectType(await raw.read(1, 100n, 10), MsgType.Rread);
    expectError(await raw.write(1, 0n, "x"), "permission denied");
    expectType(await raw.clunk(1), MsgType.Rclunk);
    expectError(await raw.clunk(1), "unknown fid");
  });

  await t.step("write-only fids cannot be read; versions bump on write", async () => {
    expectType(await raw.walk(0, 1, "f"), MsgType.Rwalk);
    const v0 = expectType(await raw.stat(1), MsgType.Rstat).stat.qid.version;
    expectType(await raw.open(1, OWRITE), MsgType.Ropen);
    expectError(await raw.read(1, 0n, 10), "permission denied");
    assert.equal(expectType(await raw.write(1, 10n, "ab"), MsgType.Rwrite).count, 2);
    const st = expectType(await raw.stat(1), MsgType.Rstat).stat;
    assert.ok(st.qid.version > v0);
    assert.equal(st.length, 12n);
    expectType(await raw.clunk(1), MsgType.Rclunk);
  });

  await t.step("OTRUNC and bad modes", async () => {
    expectType(await raw.walk(0, 1, "f"), MsgType.Rwalk);
    expectError(await raw.open(1, 0x80), /bad open mode/);
    expectType(await raw.open(1, ORDWR | OTRUNC), MsgType.Ropen);
    assert.equal(expectType(await raw.stat(1), MsgType.Rstat).stat.length, 0n);
    expectType(await raw.clunk(1), MsgType.Rclunk);
  });

  await t.step("directories open only for reading", async () => {
    expectType(await raw.walk(0, 1, "d"), MsgType.Rwalk);
    expectError(await raw.open(1, OWRITE), "is a directory");
    expectError(await raw.open(1, OREAD | OTRUNC), "is a directory");
    expectType(await raw.open(1, OREAD), MsgType.Ropen);
    expectError(await raw.write(1, 0n, "x"), "is a directory");
    expectType(await raw.clunk(1), MsgType.Rclunk);
  });

  await t.step("create: the fid becomes the new open file", async () => {
    expectType(await raw.walk(0, 1, "d"), MsgType.Rwalk);
    const c = expectType(await raw.create(1, "new", 0o644, ORDWR), MsgType.Rcreate);
    assert.equal(c.iounit, 8192);
    expectType(await raw.write(1, 0n, "fresh"), MsgType.Rwrite);
    assert.equal(dec.decode(expectType(await raw.read(1, 0n, 99), MsgType.Rread).data), "fresh");
    const st = expectType(await raw.stat(1), MsgType.Rstat).stat;
    assert.equal(st.name, "new");
    assert.equal(st.uid, "glenda");
    expectType(await raw.clunk(1), MsgType.Rclunk);
    expectType(await raw.walk(0, 1, "d"), MsgType.Rwalk);
    expectError(await raw.create(1, "new", 0o644, ORDWR), "file exists");
    expectError(await raw.create(1, "..", 0o644, ORDWR), "illegal name");
    expectError(await raw.create(1, "a/b", 0o644, ORDWR), "illegal name");
    expectType(await raw.create(1, "sub", (DMDIR | 0o755) >>> 0, OREAD), MsgType.Rcreate);
    expectType(await raw.clunk(1), MsgType.Rclunk);
    expectType(await raw.walk(0, 1, "d", "new"), MsgType.Rwalk);
    expectType(await raw.open(1, OREAD), MsgType.Ropen);
    expectError(await raw.create(1, "x", 0o644, OREAD), "fid is already open");
    expectType(await raw.clunk(1), MsgType.Rclunk);
  });

  await t.step("ORCLOSE removes on clunk", async () => {
    expectType(await raw.walk(0, 1, "d", "new"), MsgType.Rwalk);
    expectType(await raw.open(1, OREAD | ORCLOSE), MsgType.Ropen);
    expectType(await raw.clunk(1), MsgType.Rclunk);
    const w = await raw.walk(0, 1, "d", "new");
    assert.equal(expectType(w, MsgType.Rwalk).wqids.length, 1);
  });

  await t.step("remove always clunks, even when it fails", async () => {
    expectType(await raw.walk(0, 1, "d"), MsgType.Rwalk);
    expectError(await raw.remove(1), "directory not empty");
    expectError(await raw.stat(1), "unknown fid");
    expectType(await raw.walk(0, 1, "d", "sub"), MsgType.Rwalk);
    expectType(await raw.remove(1), MsgType.Rremove);
    expectError(await raw.stat(1), "unknown fid");
    const w = expectType(await raw.walk(0, 1, "d", "sub"), MsgType.Rwalk);
    assert.equal(w.wqids.length, 1);
  });

  await t.step("wstat with don't-touch fields renames only", async () => {
    expectType(await raw.walk(0, 1, "f"), MsgType.Rwalk);
    const r = await raw.call((tag) => ({
      type: MsgType.Twstat,
      tag,
      fid: 1,
      stat: { ...nullDir(), name: "g" },
    }));
    expectType(r, MsgType.Rwstat);
    const st = expectType(await raw.stat(1), MsgType.Rstat).stat;
    assert.equal(st.name, "g");
    assert.equal(st.mode, 0o666);
    expectType(await raw.clunk(1), MsgType.Rclunk);
  });

  await close();
  assert.equal(tree.liveNodes, 0);
  assert.equal(tree.liveFiles, 0);
});

Deno.test("serve: directory reads", async (t) => {
  const { mem, raw, close } = await setup();
  const names: string[] = [];
  for (let i = 0; i < 50; i++) {
    names.push(`file-${String(i).padStart(3, "0")}`);
    await mem.writeFile(`/dir/${names[i]}`, `${i}`);
  }
  await raw.version();
  expectType(await raw.attach(0), MsgType.Rattach);
  expectType(await raw.walk(0, 1, "dir"), MsgType.Rwalk);
  expectType(await raw.open(1, OREAD), MsgType.Ropen);

  await t.step("whole entries, continuing from the previous end", async () => {
    const seen: string[] = [];
    let off = 0n;
    for (;;) {
      const r = expectType(await raw.read(1, off, 300), MsgType.Rread);
      if (r.data.length === 0) break;
      assert.ok(r.data.length <= 300);
      const dirs = decodeDirs(r.data); // throws on a partial entry
      assert.ok(dirs.length >= 1);
      seen.push(...dirs.map((d) => d.name));
      off += BigInt(r.data.length);
    }
    assert.deepEqual(seen, names);
  });

  await t.step("other offsets are refused; offset 0 starts over", async () => {
    expectError(await raw.read(1, 7n, 300), "bad offset in directory read");
    const r = expectType(await raw.read(1, 0n, 300), MsgType.Rread);
    expectError(await raw.read(1, BigInt(r.data.length) + 1n, 300), "bad offset in directory read");
    expectType(await raw.read(1, BigInt(r.data.length), 300), MsgType.Rread);
    expectError(await raw.read(1, 0n, 10), /too small for a directory entry/);
  });

  await close();
});

Deno.test("serve: DMEXCL is one open at a time across connections", async () => {
  const mem = new MemTree({ owner: "glenda" });
  const a = await setup({ tree: mem });
  const b = await setup({ tree: mem });
  for (const s of [a, b]) {
    await s.raw.version();
    expectType(await s.raw.attach(0), MsgType.Rattach);
  }
  expectType(await a.raw.create(0, "lock", (DMEXCL | 0o666) >>> 0, ORDWR), MsgType.Rcreate);
  expectType(await b.raw.walk(0, 1, "lock"), MsgType.Rwalk);
  expectError(await b.raw.open(1, OREAD), "exclusive use file already open");
  await a.close(); // hanging up releases it
  expectType(await b.raw.open(1, OREAD), MsgType.Ropen);
  await b.close();
});

Deno.test("serve: concurrency and Tflush", async (t) => {
  const { mem, tree, raw, close } = await setup();
  await mem.writeFile("/block", "");
  await mem.writeFile("/f", "data");
  await raw.version();
  expectType(await raw.attach(0), MsgType.Rattach);
  expectType(await raw.walk(0, 1, "block"), MsgType.Rwalk);
  expectType(await raw.open(1, OREAD), MsgType.Ropen);

  await t.step("a blocked read holds up nothing else", async () => {
    const tag = raw.newTag();
    const pending = raw.reply(tag);
    await raw.send({ type: MsgType.Tread, tag, fid: 1, offset: 0n, count: 10 });
    // Other requests, including on the same fid, go ahead.
    expectType(await raw.walk(0, 2, "f"), MsgType.Rwalk);
    expectType(await raw.open(2, OREAD), MsgType.Ropen);
    assert.equal(dec.decode(expectType(await raw.read(2, 0n, 10), MsgType.Rread).data), "data");
    expectType(await raw.stat(1), MsgType.Rstat);
    expectType(await raw.clunk(2), MsgType.Rclunk);
    tree.release();
    assert.equal(dec.decode(expectType(await pending, MsgType.Rread).data), "released");
  });

  await t.step("Tflush aborts a blocked read; its reply never comes", async () => {
    const tag = raw.newTag();
    await raw.send({ type: MsgType.Tread, tag, fid: 1, offset: 0n, count: 10 });
    await tick();
    const before = tree.aborted;
    const f = await raw.call((ftag) => ({ type: MsgType.Tflush, tag: ftag, oldtag: tag }));
    expectType(f, MsgType.Rflush);
    await tick();
    assert.equal(tree.aborted, before + 1);
    tree.release();
    // The tag may be reused once Rflush is in.
    expectType(await raw.rpc({ type: MsgType.Tstat, tag, fid: 1 }), MsgType.Rstat);
    assert.ok(!raw.replies.some((m) => m.tag === tag && m.type === MsgType.Rread));
  });

  await t.step("Tflush of an unknown tag, and of a finished one, is Rflush", async () => {
    const f = await raw.call((tag) => ({ type: MsgType.Tflush, tag, oldtag: 999 }));
    expectType(f, MsgType.Rflush);
  });

  await t.step("Rflush follows the old reply when that was on its way", async () => {
    for (let i = 0; i < 20; i++) {
      const tag = raw.newTag();
      const ftag = raw.newTag();
      const read = encode({ type: MsgType.Tread, tag, fid: 0, offset: 0n, count: 100 });
      const flush = encode({ type: MsgType.Tflush, tag: ftag, oldtag: tag });
      const both = new Uint8Array(read.length + flush.length);
      both.set(read);
      both.set(flush, read.length);
      const fp = raw.reply(ftag);
      await raw.conn.write(both);
      expectType(await fp, MsgType.Rflush);
      const iFlush = raw.replies.findIndex((m) => m.tag === ftag);
      const iOld = raw.replies.findIndex((m) => m.tag === tag);
      assert.ok(iOld === -1 || iOld < iFlush, "an old reply after Rflush");
      raw.replies.length = 0;
      // Fid 0 is unopened, so the read (if answered) was an Rerror; drain it.
      if (iOld !== -1) await raw.reply(tag);
    }
  });

  await t.step("Tflush of a finished tag is Rflush", async () => {
    const r = await raw.call((tag) => ({ type: MsgType.Tflush, tag, oldtag: 1 }));
    expectType(r, MsgType.Rflush);
  });

  await t.step("a duplicate tag is refused without disturbing the first", async () => {
    const tag = raw.newTag();
    const first = raw.reply(tag);
    await raw.send({ type: MsgType.Tread, tag, fid: 1, offset: 0n, count: 10 });
    await tick();
    const dup = await raw.rpc({ type: MsgType.Tstat, tag, fid: 1 });
    expectError(dup, "tag in use");
    tree.release();
    expectType(await raw.reply(tag), MsgType.Rread);
    void first;
  });

  await t.step("hanging up aborts blocked requests and releases every fid", async () => {
    const tag = raw.newTag();
    await raw.send({ type: MsgType.Tread, tag, fid: 1, offset: 0n, count: 10 });
    await tick();
    const before = tree.aborted;
    await close();
    assert.equal(tree.aborted, before + 1);
    assert.equal(tree.liveNodes, 0);
    assert.equal(tree.liveFiles, 0);
  });
});

Deno.test("serve: pipelined walk, open and read on a new fid", async () => {
  const { mem, raw, close } = await setup();
  await mem.writeFile("/a/f", "pipelined");
  await raw.version();
  expectType(await raw.attach(0), MsgType.Rattach);
  const tags = [raw.newTag(), raw.newTag(), raw.newTag(), raw.newTag()];
  const ps = tags.map((t) => raw.reply(t));
  const msgs: TMsg[] = [
    { type: MsgType.Twalk, tag: tags[0]!, fid: 0, newfid: 7, wnames: ["a", "f"] },
    { type: MsgType.Topen, tag: tags[1]!, fid: 7, mode: OREAD },
    { type: MsgType.Tread, tag: tags[2]!, fid: 7, offset: 0n, count: 100 },
    { type: MsgType.Tclunk, tag: tags[3]!, fid: 7 },
  ];
  await raw.conn.write(concatBytes(msgs.map((m) => encode(m))));
  const [w, o, r, c] = await Promise.all(ps);
  expectType(w!, MsgType.Rwalk);
  expectType(o!, MsgType.Ropen);
  assert.equal(dec.decode(expectType(r!, MsgType.Rread).data), "pipelined");
  expectType(c!, MsgType.Rclunk);
  await close();
});

Deno.test("serve: malformed frames", async (t) => {
  await t.step("a bad message with a readable tag gets Rerror; the connection lives", async () => {
    const { raw, close, done } = await setup();
    await raw.version();
    // unknown type 42, tag 9
    const p = raw.reply(9);
    await raw.conn.write(new Uint8Array([7, 0, 0, 0, 42, 9, 0]));
    expectError(await p, /unknown message type 42/);
    // Tclunk with trailing garbage
    const q = raw.reply(10);
    await raw.conn.write(new Uint8Array([12, 0, 0, 0, 120, 10, 0, 0, 0, 0, 0, 99]));
    expectError(await q, /garbage/);
    // Twalk whose string overruns the frame
    const r = raw.reply(11);
    await raw.conn.write(
      new Uint8Array([19, 0, 0, 0, 110, 11, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 50, 0]),
    );
    expectError(await r, /.+/);
    // an R-message sent to a server
    const s = raw.reply(12);
    await raw.conn.write(encode({ type: MsgType.Rclunk, tag: 12 }));
    expectError(await s, /unexpected Rclunk/);
    expectType(await raw.attach(0), MsgType.Rattach);
    await close();
    await done;
  });

  await t.step("a frame size below 7 drops the connection", async () => {
    const { raw, done, logs } = await setup();
    await raw.version();
    await raw.conn.write(new Uint8Array([3, 0, 0, 0]));
    await done;
    await raw.ended;
    assert.ok(logs.some((l) => /below the minimum/.test(l)), logs.join("\n"));
  });

  await t.step("a frame larger than msize drops the connection", async () => {
    const { raw, done, tree } = await setup();
    await raw.version(8192);
    expectType(await raw.attach(0), MsgType.Rattach);
    await raw.conn.write(new Uint8Array([0, 0, 1, 0, 118, 1, 0]));
    await done;
    await raw.ended;
    assert.equal(tree.liveNodes, 0);
  });
});

Deno.test("serve: 10,000 fids are all released when the connection drops", async () => {
  // More fids than the default limit allows: a server may be given more.
  const { mem, tree, raw, close } = await setup({ serverOpts: { maxFids: 10_001 } });
  await mem.writeFile("/f", "x");
  await raw.version();
  expectType(await raw.attach(0), MsgType.Rattach);
  const N = 10_000;
  const batch = 500;
  for (let start = 1; start <= N; start += batch) {
    const ps: Promise<Msg>[] = [];
    const frames: Uint8Array[] = [];
    for (let fid = start; fid < start + batch; fid++) {
      const wt = raw.newTag() & 0xffff;
      const ot = raw.newTag() & 0xffff;
      ps.push(raw.reply(wt), raw.reply(ot));
      frames.push(encode({ type: MsgType.Twalk, tag: wt, fid: 0, newfid: fid, wnames: ["f"] }));
      frames.push(encode({ type: MsgType.Topen, tag: ot, fid, mode: OREAD }));
    }
    await raw.conn.write(concatBytes(frames));
    for (const m of await Promise.all(ps)) {
      assert.ok(m.type === MsgType.Rwalk || m.type === MsgType.Ropen, `unexpected type ${m.type}`);
    }
  }
  assert.equal(tree.liveNodes, N + 1);
  assert.equal(tree.liveFiles, N);
  await close();
  assert.equal(tree.liveNodes, 0);
  assert.equal(tree.liveFiles, 0);
  assert.equal(tree.nodeCloses, N + 1);
  assert.equal(tree.fileCloses, N);
});

Deno.test("serve: real TCP", async (t) => {
  const mem = new MemTree({ owner: "glenda" });
  await mem.writeFile("/big", new Uint8Array(1 << 20).map((_, i) => i & 0xff));
  const l = tcpListen("127.0.0.1", 0);
  const port = Number(l.addr.split("!")[2]);
  const sessions: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of l) sessions.push(serve(c, mem, { log: () => {} }));
  })();

  await t.step("read a file through several reads in flight", async () => {
    const raw = new Raw(await tcpDial("127.0.0.1", port));
    expectType(await raw.version(65536 + IOHDRSZ), MsgType.Rversion);
    expectType(await raw.attach(0), MsgType.Rattach);
    expectType(await raw.walk(0, 1, "big"), MsgType.Rwalk);
    const o = expectType(await raw.open(1, OREAD), MsgType.Ropen);
    assert.equal(o.iounit, 65536);
    const ps: Promise<Msg>[] = [];
    for (let off = 0; off < 1 << 20; off += o.iounit) {
      ps.push(raw.read(1, BigInt(off), o.iounit));
    }
    const parts = (await Promise.all(ps)).map((m) => expectType(m, MsgType.Rread).data);
    const all = concatBytes(parts);
    assert.equal(all.length, 1 << 20);
    assert.ok(all.every((b, i) => b === (i & 0xff)));
    raw.conn.close();
    await raw.ended;
  });

  await t.step("a client that sends half a frame and stalls does not affect another", async () => {
    const stalled = await tcpDial("127.0.0.1", port);
    await stalled.write(
      encode({ type: MsgType.Tversion, tag: NOTAG, msize: 8192, version: "9P2000" }).subarray(
        0,
        10,
      ),
    );
    const raw = new Raw(await tcpDial("127.0.0.1", port));
    expectType(await raw.version(), MsgType.Rversion);
    expectType(await raw.attach(0), MsgType.Rattach);
    expectType(await raw.walk(0, 1, "big"), MsgType.Rwalk);
    expectType(await raw.open(1, OREAD), MsgType.Ropen);
    expectType(await raw.read(1, 0n, 100), MsgType.Rread);
    raw.conn.close();
    stalled.close();
    await raw.ended;
  });

  l.close();
  await accepting;
  await Promise.all(sessions);
});
