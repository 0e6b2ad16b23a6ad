/**
 * What one hostile or stuck client can make the Styx server hold: tested
 * over real TCP (and one case over the in-memory pipe, where no socket
 * buffer hides how much the server queued).
 */

import { concatBytes } from "../../lib/bytes.ts";
import assert from "node:assert/strict";
import { serve, type ServerOptions } from "../../lib/styx/server.ts";
import { decode, encode } from "../../lib/styx/codec.ts";
import { FrameReader } from "../../lib/styx/frame.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import type { Node, OpenFile, Tree } from "../../lib/fs/tree.ts";
import { NetDevice } from "../../lib/dev/net/device.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { memPipe } from "../../lib/transport/pipe.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import {
  IOHDRSZ,
  type Msg,
  MsgType,
  NOFID,
  NOTAG,
  ORDWR,
  OREAD,
  type TMsg,
} from "../../lib/styx/types.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** Wraps a tree and counts the reads its open files are asked for. */
class ReadCounter implements Tree {
  reads = 0;
  constructor(readonly inner: Tree) {}

  async attach(caller: Parameters<Tree["attach"]>[0], aname: string): Promise<Node> {
    return this.#node(await this.inner.attach(caller, aname));
  }

  #node(n: Node): Node {
    return new Proxy(n, {
      get: (t, k) => {
        if (k === "walk") {
          return async (names: string[], opts?: object) => {
            const r = await t.walk(names, opts);
            return { qids: r.qids, node: r.node && this.#node(r.node) };
          };
        }
        if (k === "open") {
          return async (mode: number, opts?: object) => this.#file(await t.open(mode, opts));
        }
        const v = Reflect.get(t, k);
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
  }

  #file(f: OpenFile): OpenFile {
    return new Proxy(f, {
      get: (t, k) => {
        if (k === "read") {
          // Called straight through, so the tree allocates as it would unwrapped.
          return (offset: bigint, count: number, opts?: object) => {
            this.reads++;
            return t.read(offset, count, opts);
          };
        }
        const v = Reflect.get(t, k);
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
  }
}

/** A reply, briefly, for assertion messages. */
function show(m: Msg | null): string {
  if (m === null) return "end of stream";
  return m.type === MsgType.Rerror ? `Rerror '${m.ename}'` : `type ${m.type}`;
}

/** A bare client: writes T-messages, reads R-messages in order. */
class Raw {
  readonly frames: FrameReader;
  constructor(readonly conn: Conn, msize = 1 << 20) {
    this.frames = new FrameReader(conn, msize + 64);
  }
  send(...msgs: TMsg[]): Promise<void> {
    return this.conn.write(concatBytes(msgs.map((m) => encode(m))));
  }
  async next(): Promise<Msg | null> {
    const f = await this.frames.next();
    return f === null ? null : decode(f, 1 << 30);
  }
  async rpc(m: TMsg): Promise<Msg> {
    await this.send(m);
    const r = await this.next();
    assert.ok(r !== null, "connection ended");
    assert.equal(r.tag, m.tag);
    return r;
  }
  /** Tversion, Tattach on fid 0, and (with `file`) Twalk to fid 1 and Topen. */
  async start(msize: number, file?: string): Promise<void> {
    const v = await this.rpc({ type: MsgType.Tversion, tag: NOTAG, msize, version: "9P2000" });
    assert.equal(v.type, MsgType.Rversion);
    const a = await this.rpc({
      type: MsgType.Tattach,
      tag: 1,
      fid: 0,
      afid: NOFID,
      uname: "glenda",
      aname: "",
    });
    assert.equal(a.type, MsgType.Rattach, show(a));
    if (file === undefined) return;
    const w = await this.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: [file] });
    assert.equal(w.type, MsgType.Rwalk, show(w));
    const o = await this.rpc({ type: MsgType.Topen, tag: 1, fid: 1, mode: OREAD });
    assert.equal(o.type, MsgType.Ropen, show(o));
  }
}

/** Serve `tree` over TCP on loopback with `opts`, keeping what the server logs. */
function tcpServer(tree: Tree, opts: ServerOptions = {}) {
  const l = tcpListen("127.0.0.1", 0);
  const port = Number(l.addr.split("!")[2]);
  const sessions: Promise<void>[] = [];
  const logs: string[] = [];
  const accepting = (async () => {
    for await (const c of l) sessions.push(serve(c, tree, { log: (m) => logs.push(m), ...opts }));
  })();
  return {
    addr: l.addr,
    logs,
    sessions,
    dial: async () => new Raw(await tcpDial("127.0.0.1", port)),
    async close() {
      l.close();
      await accepting;
      await Promise.all(sessions);
    },
  };
}

/** Resolves once `cond()` holds, checking every few milliseconds. */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

/** Resolves once `value()` has stopped changing for a few checks in a row. */
async function settled(value: () => number): Promise<number> {
  let last = value();
  for (let same = 0; same < 5;) {
    await new Promise((r) => setTimeout(r, 50));
    const v = value();
    same = v === last ? same + 1 : 0;
    last = v;
  }
  return last;
}

function treads(n: number, count: number, firstTag = 100): TMsg[] {
  return Array.from({ length: n }, (_, i) => ({
    type: MsgType.Tread,
    tag: firstTag + i,
    fid: 1,
    offset: 0n,
    count,
  }));
}

Deno.test("bounds: a client that pipelines large reads and hangs up costs no more disk reads", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/big`, new Uint8Array(512 * KiB).fill(7));
    const tree = new ReadCounter(new HostTree(dir));
    const srv = tcpServer(tree);
    const raw = await srv.dial();
    await raw.start(512 * KiB + IOHDRSZ, "big");
    // 90 Treads of 512 KiB (45 MiB of replies) in one write, then gone.
    const n = 90;
    await raw.send(...treads(n, 512 * KiB));
    raw.conn.close();
    await Promise.all(srv.sessions);
    // The server read at most its reply-byte bound (2 MiB by default) ahead, then saw
    // the hangup and abandoned the rest.
    assert.ok(tree.reads <= 2 * MiB / (512 * KiB) + 1, `${tree.reads} of ${n} reads were made`);
    await srv.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bounds: a client that never reads stops the server reading requests; all replies come once it reads", async () => {
  const mem = new MemTree({ owner: "glenda" });
  const data = new Uint8Array(512 * KiB).map((_, i) => i & 0xff);
  await mem.writeFile("/big", data);
  const tree = new ReadCounter(mem);
  const srv = tcpServer(tree);
  const raw = await srv.dial();
  await raw.start(512 * KiB + IOHDRSZ, "big");
  const n = 64;
  await raw.send(...treads(n, 512 * KiB));
  const before = await settled(() => tree.reads);
  // Held at the default 2 MiB bound, plus what the loopback socket buffers
  // took (the sender's at most tcp_wmem's maximum, the receiver's its
  // default: it grows only as the application reads).
  const wmem = Number((await sysctl("tcp_wmem")).split(/\s+/)[2]);
  const rmem = Number((await sysctl("tcp_rmem")).split(/\s+/)[1]);
  const most = Math.ceil((2 * MiB + wmem + rmem) / (512 * KiB)) + 1;
  assert.ok(before <= most, `${before} of ${n} reads were made before the client read`);
  assert.ok(before < n);
  // Now the client reads: every request is answered, in order, in full.
  for (let i = 0; i < n; i++) {
    const r = await raw.next();
    assert.ok(r !== null && r.type === MsgType.Rread, `reply ${i}: ${show(r)}`);
    assert.equal(r.tag, 100 + i);
    assert.deepEqual(r.data, data);
  }
  assert.equal(tree.reads, n);
  raw.conn.close();
  await srv.close();
});

/** A server end whose writes wait while shut: a client that does not read. */
class Gate implements Conn {
  #shut = false;
  #waiters: (() => void)[] = [];
  constructor(readonly inner: Conn) {}
  shut(): void {
    this.#shut = true;
  }
  open(): void {
    this.#shut = false;
    for (const w of this.#waiters.splice(0)) w();
  }
  close(): void {
    this.inner.close();
  }
  read(): Promise<Uint8Array | null> {
    return this.inner.read();
  }
  async write(data: Uint8Array): Promise<void> {
    if (this.#shut) await new Promise<void>((r) => this.#waiters.push(r));
    return await this.inner.write(data);
  }
  get closed(): Promise<void> {
    return this.inner.closed;
  }
  get peer() {
    return this.inner.peer;
  }
  get local(): string {
    return this.inner.local;
  }
}

Deno.test("bounds: over a pipe, the server reads requests only up to the reply-byte bound", async () => {
  const mem = new MemTree({ owner: "glenda" });
  await mem.writeFile("/f", new Uint8Array(64 * KiB).fill(1));
  const tree = new ReadCounter(mem);
  const [a, b] = memPipe();
  const gate = new Gate(b);
  const done = serve(gate, tree, { maxReplyBytes: 1 * MiB });
  const raw = new Raw(a);
  await raw.start(64 * KiB + IOHDRSZ, "f");
  gate.shut();
  const n = 64;
  await raw.send(...treads(n, 64 * KiB));
  // 16 replies of 64 KiB reach the 1 MiB bound; nothing more is read.
  await until(() => tree.reads >= 16);
  assert.equal(await settled(() => tree.reads), 16);
  gate.open();
  for (let i = 0; i < n; i++) {
    const r = await raw.next();
    assert.ok(r !== null && r.type === MsgType.Rread);
    assert.equal(r.tag, 100 + i);
    assert.equal(r.data.length, 64 * KiB);
  }
  assert.equal(tree.reads, n);
  a.close();
  await done;
});

Deno.test("bounds: fids past the limit get an Rerror naming it", async (t) => {
  const mem = new MemTree({ owner: "glenda" });
  await mem.writeFile("/f", "x");

  await t.step("the default, 4096, over TCP", async () => {
    const srv = tcpServer(mem);
    const raw = await srv.dial();
    await raw.start(8192 + IOHDRSZ);
    // Fid 0 is the attach; walks make fids 1 to 4095, then one more.
    const limit = 4096;
    const walks: TMsg[] = [];
    for (let fid = 1; fid <= limit; fid++) {
      walks.push({ type: MsgType.Twalk, tag: fid & 0x7fff, fid: 0, newfid: fid, wnames: ["f"] });
    }
    for (let i = 0; i < walks.length; i += 1000) {
      const batch = walks.slice(i, i + 1000);
      await raw.send(...batch);
      // Replies may come in any order: match them by tag.
      const byTag = new Map<number, Msg>();
      for (let k = 0; k < batch.length; k++) {
        const r = await raw.next();
        assert.ok(r !== null);
        byTag.set(r.tag, r);
      }
      for (const w of batch) {
        const r = byTag.get(w.tag)!;
        const fid = (w as { newfid: number }).newfid;
        if (fid < limit) assert.equal(r.type, MsgType.Rwalk, `fid ${fid}: ${show(r)}`);
        else {
          assert.equal(r.type, MsgType.Rerror, `fid ${fid}: ${show(r)}`);
          assert.match(r.ename, /too many fids: .*at most 4096/);
        }
      }
    }
    // Clunking one makes room again.
    assert.equal((await raw.rpc({ type: MsgType.Tclunk, tag: 1, fid: 5 })).type, MsgType.Rclunk);
    const w = await raw.rpc({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 5, wnames: ["f"] });
    assert.equal(w.type, MsgType.Rwalk, show(w));
    raw.conn.close();
    await srv.close();
  });

  await t.step("a smaller limit also covers Tattach", async () => {
    const srv = tcpServer(mem, { maxFids: 3 });
    const raw = await srv.dial();
    await raw.start(8192 + IOHDRSZ, "f");
    const att = await raw.rpc({
      type: MsgType.Tattach,
      tag: 2,
      fid: 2,
      afid: NOFID,
      uname: "glenda",
      aname: "",
    });
    assert.equal(att.type, MsgType.Rattach, show(att));
    const more = await raw.rpc({
      type: MsgType.Tattach,
      tag: 3,
      fid: 3,
      afid: NOFID,
      uname: "glenda",
      aname: "",
    });
    assert.ok(more.type === MsgType.Rerror, show(more));
    assert.match(more.ename, /too many fids: a connection may hold at most 3/);
    const walk = await raw.rpc({ type: MsgType.Twalk, tag: 4, fid: 0, newfid: 9, wnames: [] });
    assert.ok(walk.type === MsgType.Rerror, show(walk));
    assert.match(walk.ename, /at most 3/);
    // A walk that moves a fid in place needs no new one.
    const inPlace = await raw.rpc({ type: MsgType.Twalk, tag: 5, fid: 0, newfid: 0, wnames: [] });
    assert.equal(inPlace.type, MsgType.Rwalk, show(inPlace));
    raw.conn.close();
    await srv.close();
  });
});

Deno.test("bounds: a frame left incomplete is dropped after the frame timeout; an idle connection is not", async () => {
  const srv = tcpServer(new MemTree({ owner: "glenda" }), { frameTimeoutMs: 300 });
  const idle = await srv.dial();
  const stalled = await srv.dial();
  // A Tversion cut short: its size says 19 bytes, 10 arrive.
  const tv = encode({ type: MsgType.Tversion, tag: NOTAG, msize: 8192, version: "9P2000" });
  await stalled.conn.write(tv.subarray(0, 10));
  assert.equal(await stalled.conn.read(), null, "the server should close the connection");
  await until(() => srv.logs.some((l) => /still incomplete after 300 ms/.test(l)));
  // The idle connection waited as long, but it was between frames.
  await idle.start(8192 + IOHDRSZ);
  // A header alone (size bytes only) stalls too.
  const header = await srv.dial();
  await header.conn.write(tv.subarray(0, 2));
  assert.equal(await header.conn.read(), null);
  idle.conn.close();
  await srv.close();
});

Deno.test("bounds: reads waiting on /net data files hold no share of the byte bound", async () => {
  // An echo server on loopback, and /net served over TCP with a 1 MiB bound.
  const far = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const farPort = (far.addr as Deno.NetAddr).port;
  const echoing = (async () => {
    for await (const c of far) {
      (async () => {
        const buf = new Uint8Array(4096);
        for (;;) {
          const n = await c.read(buf).catch(() => null);
          if (n === null) break;
          await c.write(buf.subarray(0, n));
        }
        c.close();
      })();
    }
  })();
  const dev = new NetDevice();
  const srv = tcpServer(dev.tree(), { maxReplyBytes: 1 * MiB });
  const styxPort = Number(srv.addr.split("!")[2]);
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", styxPort));
  const root = await new RemoteTree(client).attach({ user: "glenda" }, "");
  const open = async (path: string): Promise<OpenFile> => {
    const { node } = await root.walk(path.split("/"));
    assert.ok(node, `no ${path}`);
    try {
      return await node.open(ORDWR);
    } finally {
      await node.close();
    }
  };
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  try {
    // 24 conversations, each with a 512 KiB read waiting for data: 12 MiB
    // of counts, far past the bound.
    const convs: { ctl: OpenFile; data: OpenFile; read: Promise<Uint8Array> }[] = [];
    for (let i = 0; i < 24; i++) {
      const ctl = await open("tcp/clone");
      const n = dec.decode(await ctl.read(0n, 32)).trim();
      await ctl.write(0n, enc.encode(`connect 127.0.0.1!${farPort}`));
      const data = await open(`tcp/${n}/data`);
      convs.push({ ctl, data, read: data.read(0n, 512 * KiB) });
    }
    // The writes still get through, and every waiting read is answered.
    for (const [i, c] of convs.entries()) await c.data.write(0n, enc.encode(`ping ${i}`));
    for (const [i, c] of convs.entries()) assert.equal(dec.decode(await c.read), `ping ${i}`);
    for (const c of convs) {
      await c.data.close();
      await c.ctl.close();
    }
  } finally {
    await root.close();
    client.close();
    far.close();
    await echoing;
    await srv.close();
  }
});

/**
 * An IPv4 TCP setting, read by cat(1): the test task's permissions do not
 * cover /proc (only --allow-all does).
 */
async function sysctl(name: string): Promise<string> {
  const r = await new Deno.Command("cat", { args: [`/proc/sys/net/ipv4/${name}`], stdout: "piped" })
    .output();
  if (!r.success) throw new Error(`cannot read net.ipv4.${name}`);
  return new TextDecoder().decode(r.stdout).trim();
}
