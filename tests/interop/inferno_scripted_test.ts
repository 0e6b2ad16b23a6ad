// Inferno interoperability: emu mounting a Ferry export (`mount -A`), and
// Ferry mounting an Inferno `export`, each side scripted from the manual
// pages and emu's sources, over real TCP.

import { pattern } from "../fixture.ts";
import assert from "node:assert/strict";
import {
  againstBothServers,
  DMDIR,
  ferry,
  InfernoMount,
  NOFID,
  NOTAG,
  nullDir,
  OWRITE,
  parseStats,
  startInfernoExport,
  T,
  tmsg,
  Wire,
  WireError,
} from "./peers.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { Namespace } from "../../lib/ns/namespace.ts";
import { OREAD } from "../../lib/styx/types.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const USER = "inferno";

/** The exact bytes of an Rerror with `tag` and `ename` (intro(5)). */
function rerrorBytes(tag: number, ename: string): Uint8Array {
  const s = te.encode(ename);
  const b = new Uint8Array(9 + s.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, b.length, true);
  b[4] = 107;
  dv.setUint16(5, tag, true);
  dv.setUint16(7, s.length, true);
  b.set(s, 9);
  return b;
}

/** The exact Rversion emu must get for its Tversion: msize 8216, "9P2000". */
const RVERSION_8216 = new Uint8Array([
  19,
  0,
  0,
  0, // size
  101, // Rversion
  0xff,
  0xff, // NOTAG
  0x18,
  0x20,
  0,
  0, // msize 8216
  6,
  0,
  ...te.encode("9P2000"),
]);

async function fixture(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-interop-" });
  await Deno.writeTextFile(`${dir}/hello.txt`, "hello, world\n");
  await Deno.writeFile(`${dir}/big`, pattern(20000, 7));
  await Deno.mkdir(`${dir}/many`);
  for (let i = 0; i < 60; i++) {
    await Deno.writeTextFile(`${dir}/many/file-with-a-longish-name-${i}`, String(i));
  }
  return dir;
}

/** Everything emu does against one server, as steps. */
async function emuSession(t: Deno.TestContext, port: number, dir: string): Promise<void> {
  const m = await InfernoMount.mount(port, USER);
  try {
    await t.step("Tversion first (size 19, NOTAG, 8216, 9P2000); exact Rversion", () => {
      const first = m.wire.log[0]!.msg;
      assert.equal(first.raw.length, 19);
      assert.equal(first.type, T.version);
      assert.equal(first.tag, NOTAG);
      assert.deepEqual(m.rversion, RVERSION_8216);
      assert.equal(m.msize, 8216);
    });

    await t.step("Tattach with afid NOFID, the host user, aname ''; no Tauth", () => {
      const sent = m.wire.log.filter((e) => e.dir === "out").map((e) => e.msg);
      assert.equal(sent[1]!.type, T.attach);
      assert.equal(sent[1]!.afid, NOFID);
      assert.equal(sent[1]!.uname, USER);
      assert.equal(sent[1]!.aname, "");
      assert.ok(!sent.some((s) => s.type === T.auth));
      const rattach = m.wire.log[3]!.msg;
      assert.equal(rattach.type, T.attach + 1);
      assert.equal(rattach.qid!.type, 0x80);
    });

    await t.step(
      "ls reads directories 2048 bytes at a time, whole entries, offsets continuing",
      async () => {
        const r = await m.ls("/many");
        const want = [...Deno.readDirSync(`${dir}/many`)].map((e) => e.name).sort();
        assert.deepEqual(r.dirs.map((d) => d.name).sort(), want);
        assert.ok(r.counts.length > 2, `several reads expected, got ${r.counts}`);
        assert.equal(r.counts[r.counts.length - 1], 0);
        for (const p of r.parts) {
          assert.ok(p.length <= 2048);
          parseStats(p); // each reply holds whole entries only
        }
        const reads = m.wire.log.filter((e) => e.dir === "out" && e.msg.type === T.read);
        const last = reads.slice(-r.counts.length);
        let off = 0n;
        for (let i = 0; i < last.length; i++) {
          assert.equal(last[i]!.msg.count, 2048);
          assert.equal(last[i]!.msg.offset, off);
          off += BigInt(r.counts[i]!);
        }
        for (const d of r.dirs) assert.notEqual(d.qid.path, 0n);
      },
    );

    await t.step("cat reads files 8192 bytes at a time", async () => {
      const r = await m.cat("/big");
      assert.deepEqual(r.data, await Deno.readFile(`${dir}/big`));
      assert.deepEqual(r.counts, [8192, 8192, 20000 - 16384, 0]);
      const small = await m.cat("hello.txt");
      assert.equal(td.decode(small.data), "hello, world\n");
    });

    await t.step("Tcreate perm 0666 mode OWRITE, then Twrite", async () => {
      const data = pattern(10000, 3);
      const r = await m.create("/", "new.txt", data);
      assert.equal(r.type, T.create + 1);
      assert.equal(r.qid!.type, 0);
      assert.notEqual(r.qid!.path, 0n);
      assert.ok(r.iounit! > 0 && r.iounit! <= 8192, `iounit ${r.iounit}`);
      const create = m.wire.log.findLast((e) => e.dir === "out" && e.msg.type === T.create)!.msg;
      assert.equal(create.perm, 0o666);
      assert.equal(create.mode, OWRITE);
      assert.deepEqual(await Deno.readFile(`${dir}/new.txt`), data);
      const dirMode = Deno.statSync(dir).mode! & 0o777;
      assert.equal(Deno.statSync(`${dir}/new.txt`).mode! & 0o777, 0o666 & dirMode);
    });

    await t.step(
      "mkdir: Tcreate perm DMDIR|0777 mode OREAD; rm of the empty directory",
      async () => {
        const { fid } = await m.walk("/");
        const r = await m.rpc(tmsg.create(1, fid, "newdir", (DMDIR | 0o777) >>> 0, OREAD));
        assert.equal(r.type, T.create + 1);
        assert.equal(r.qid!.type, 0x80);
        await m.rpc(tmsg.clunk(1, fid));
        const st = Deno.statSync(`${dir}/newdir`);
        assert.ok(st.isDirectory);
        assert.equal(st.mode! & 0o777, 0o777 & Deno.statSync(dir).mode!);
        assert.deepEqual((await m.ls("newdir")).dirs, []);
        await m.remove("newdir");
        assert.throws(() => Deno.statSync(`${dir}/newdir`), Deno.errors.NotFound);
      },
    );

    await t.step("Tstat and Twstat (mode, mtime, rename) touch only what is given", async () => {
      const before = await m.stat("new.txt");
      assert.equal(before.name, "new.txt");
      assert.equal(before.length, 10000n);
      assert.equal(before.mode & DMDIR, 0);
      await m.wstat("new.txt", { mode: 0o640 });
      let st = Deno.statSync(`${dir}/new.txt`);
      assert.equal(st.mode! & 0o777, 0o640);
      assert.equal(st.size, 10000);
      await m.wstat("new.txt", { mtime: 1_000_000_000 });
      st = Deno.statSync(`${dir}/new.txt`);
      assert.equal(st.mtime!.getTime(), 1_000_000_000_000);
      assert.equal(st.mode! & 0o777, 0o640);
      await m.wstat("new.txt", { name: "renamed.txt" });
      assert.throws(() => Deno.statSync(`${dir}/new.txt`), Deno.errors.NotFound);
      st = Deno.statSync(`${dir}/renamed.txt`);
      assert.equal(st.size, 10000);
      assert.equal(st.mode! & 0o777, 0o640);
      assert.equal(st.mtime!.getTime(), 1_000_000_000_000);
      const after = await m.stat("renamed.txt");
      assert.equal(after.qid.path, before.qid.path);
    });

    await t.step("Tremove, then errors in Plan 9 wording with exact bytes", async () => {
      await m.remove("renamed.txt");
      assert.throws(() => Deno.statSync(`${dir}/renamed.txt`), Deno.errors.NotFound);
      await assert.rejects(m.walk("renamed.txt"), new WireError("file does not exist"));
      const lastIn = m.wire.log.findLast((e) => e.dir === "in")!.msg;
      assert.deepEqual(lastIn.raw, rerrorBytes(1, "file does not exist"));

      // Open a directory for writing.
      const { fid } = await m.walk("many");
      const r1 = await m.rpc(tmsg.open(1, fid, OWRITE));
      assert.deepEqual(r1.raw, rerrorBytes(1, "is a directory"));
      // Create a name that exists.
      const r2 = await m.rpc(tmsg.create(1, fid, "file-with-a-longish-name-1", 0o666, OWRITE));
      assert.deepEqual(r2.raw, rerrorBytes(1, "file exists"));
      await m.rpc(tmsg.clunk(1, fid));
      // Remove a directory that is not empty: the fid is clunked anyway.
      const { fid: f2 } = await m.walk("many");
      const r3 = await m.rpc(tmsg.remove(1, f2));
      assert.deepEqual(r3.raw, rerrorBytes(1, "directory not empty"));
      const r4 = await m.rpc(tmsg.clunk(1, f2));
      assert.equal(r4.type, T.error);
      assert.ok(Deno.statSync(`${dir}/many`).isDirectory);
    });

    await t.step("'..' at the root is the root; a clone walk; Tflush of an idle tag", async () => {
      const rootQid = m.wire.log[3]!.msg.qid!;
      const { qids } = await m.walk("..");
      assert.equal(qids.length, 1);
      assert.equal(qids[0]!.path, rootQid.path);
      const { fid, qids: none } = await m.walk("");
      assert.equal(none.length, 0);
      await m.rpc(tmsg.clunk(1, fid));
      // flush(5): Rflush, never Rerror, even when nothing is outstanding.
      const r = await m.rpc(tmsg.flush(1, 7));
      assert.deepEqual(r.raw, new Uint8Array([7, 0, 0, 0, 109, 1, 0]));
    });

    await t.step("every request after Tversion used tag 1, one at a time", () => {
      const log = m.wire.log;
      for (let i = 2; i < log.length; i += 2) {
        assert.equal(log[i]!.dir, "out");
        assert.equal(log[i]!.msg.tag, 1);
        assert.equal(log[i + 1]!.dir, "in");
        assert.equal(log[i + 1]!.msg.tag, 1);
      }
    });
  } finally {
    m.unmount();
  }
}

againstBothServers((server) => `a scripted Inferno emu mounts ${server}`, fixture, emuSession);

Deno.test("Ferry mounts a scripted Inferno export", async (t) => {
  const data = pattern(100_000, 11);
  const ex = startInfernoExport({
    "hello": "hello from inferno\n",
    "lib/data": data,
    "lib/empty": "",
  });
  try {
    await t.step("the scripted export answers as emu's exportfs does", async () => {
      const cases: Array<[number, string, number, string]> = [
        [65536, "9P2000", 65536, "9P2000"],
        [8216, "9P2000.L", 8216, "9P2000"],
        [8192, "9P2000.u", 8192, "9P2000"],
        [1 << 20, "9P2000", 65560, "9P2000"],
        [8192, "9P1999", 8192, "unknown"],
      ];
      for (const [msize, version, wantMsize, wantVersion] of cases) {
        const w = await Wire.dial(ex.port);
        try {
          const r = await w.rpc(tmsg.version(NOTAG, msize, version));
          assert.equal(r.msize, wantMsize);
          assert.equal(r.version, wantVersion);
          const a = await w.rpc(tmsg.auth(0, 0, "glenda", ""));
          assert.equal(a.ename, "authentication not required");
        } finally {
          w.close();
        }
      }
    });

    await t.step(
      "the scripted export's stat buffer size wraps in 16 bits, as emu's does",
      async () => {
        for (const [msize, ok] of [[65544, true], [65545, false], [65560, false]] as const) {
          const w = await Wire.dial(ex.port);
          try {
            await w.rpc(tmsg.version(NOTAG, msize, "9P2000"));
            await w.rpc(tmsg.attach(1, 0, NOFID, "glenda", ""));
            const r = await w.rpc(tmsg.stat(1, 0));
            if (ok) assert.equal(r.stat?.name, "/");
            else assert.equal(r.ename, "stat buffer too small");
          } finally {
            w.close();
          }
        }
      },
    );

    await t.step("StyxClient.connect: 65536 is echoed; a capped offer drops to 65544", async () => {
      const c1 = await StyxClient.connect(await tcpDial("127.0.0.1", ex.port), { msize: 65536 });
      assert.equal(c1.msize, 65536);
      assert.equal(c1.version, "9P2000");
      await c1.close();
      // Capped at 65560, where stats fail: the client asks again at 65544.
      const c2 = await StyxClient.connect(await tcpDial("127.0.0.1", ex.port));
      assert.equal(c2.msize, 65544);
      const root = await c2.attach("glenda");
      assert.equal((await c2.stat(root, "hello")).name, "hello");
      await root.close();
      await c2.close();
    });

    await t.step("attach, ls, read, write, create, stat, remove", async () => {
      const before = ex.received.length;
      const c = await StyxClient.connect(await tcpDial("127.0.0.1", ex.port));
      try {
        const root = await c.attach("glenda");
        const names = (await c.ls(root, "/")).map((d) => d.name).sort();
        assert.deepEqual(names, ["hello", "lib"]);
        assert.deepEqual((await c.ls(root, "lib")).map((d) => d.name).sort(), ["data", "empty"]);
        assert.equal(td.decode(await c.readFile(root, "hello")), "hello from inferno\n");
        assert.deepEqual(await c.readFile(root, "lib/data"), data);
        assert.equal((await c.readFile(root, "lib/empty")).length, 0);

        const big = pattern(150_000, 5);
        await c.writeFile(root, "lib/new", big);
        assert.deepEqual(ex.file("lib/new"), big);
        await c.writeFile(root, "hello", te.encode("rewritten\n"));
        assert.equal(td.decode(ex.file("hello")!), "rewritten\n");

        await c.create(root, "made", { perm: 0o644 });
        const st = await c.stat(root, "made");
        assert.equal(st.name, "made");
        assert.equal(st.uid, "inferno");
        assert.equal(st.length, 0n);
        await c.remove(root, "made");
        assert.equal(ex.file("made"), undefined);
        await assert.rejects(c.stat(root, "made"), /file does not exist/);

        const f = await c.openPath(root, "lib/data", OREAD);
        assert.deepEqual((await f.read(99_990n, 100)).length, 10);
        await f.close();
        await root.close();
      } finally {
        await c.close();
      }
      const log = ex.received[before]!;
      assert.equal(log[0]!.type, T.version);
      assert.equal(log[0]!.tag, NOTAG);
      assert.ok(!log.some((m) => m.type === T.auth), "Ferry sent Tauth");
      const attach = log.find((m) => m.type === T.attach)!;
      assert.equal(attach.afid, NOFID);
      assert.equal(attach.uname, "glenda");
      for (const m of log) {
        if (m.type === T.read || m.type === T.write) {
          const n = m.type === T.read ? m.count! : m.data!.length;
          assert.ok(n <= 65544 - 24, `${n}-byte I/O is more than the msize allows`);
        }
      }
    });

    await t.step("`ferry 9p -A -a … ls|read|write|stat` against it", async () => {
      const addr = `tcp!127.0.0.1!${ex.port}`;
      const ls = await ferry(["9p", "-A", "-a", addr, "ls", "/"]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.deepEqual(td.decode(ls.stdout).trim().split("\n"), ["hello", "lib"]);

      const rd = await ferry(["9p", "-A", "-a", addr, "read", "lib/data"]);
      assert.equal(rd.code, 0, rd.stderr);
      assert.deepEqual(rd.stdout, data);

      const payload = pattern(70_000, 9);
      const wr = await ferry(["9p", "-A", "-a", addr, "write", "lib/data"], payload);
      assert.equal(wr.code, 0, wr.stderr);
      assert.deepEqual(ex.file("lib/data"), payload);

      const st = await ferry(["9p", "-A", "-a", addr, "stat", "lib/data"]);
      assert.equal(st.code, 0, st.stderr);
      assert.match(td.decode(st.stdout), /data/);
      assert.match(td.decode(st.stdout), /70000/);

      const lsFile = await ferry(["9p", "-A", "-a", addr, "ls", "lib/data"]);
      assert.equal(lsFile.code, 0, lsFile.stderr);
      assert.equal(td.decode(lsFile.stdout).trim(), "data");

      const missing = await ferry(["9p", "-A", "-a", addr, "read", "nope"]);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /file does not exist/);
    });

    await t.step("a wstat through Ferry's client sends 'don't touch' fields", async () => {
      const c = await StyxClient.connect(await tcpDial("127.0.0.1", ex.port));
      try {
        const root = await c.attach("glenda");
        const n = await c.walkPath(root, "hello");
        await n.wstat({ ...nullDir(), mode: 0o600, qid: nullDir().qid });
        await n.close();
        const d = await c.stat(root, "hello");
        assert.equal(d.mode & 0o777, 0o600);
        await root.close();
      } finally {
        await c.close();
      }
    });
  } finally {
    await ex.close();
  }
});

Deno.test("Ferry mounts a scripted Inferno export whose requests overtake one another", async (t) => {
  const data = pattern(100_000, 13);
  const ex = startInfernoExport({ "hello": "hello\n", "lib/data": data }, { overtake: true });
  try {
    await t.step("open after a pipelined walk, reads and writes in flight together", async () => {
      const c = await StyxClient.connect(await tcpDial("127.0.0.1", ex.port));
      try {
        const root = await c.attach("glenda");
        assert.deepEqual((await c.ls(root, "/")).map((d) => d.name).sort(), ["hello", "lib"]);
        assert.equal(td.decode(await c.readFile(root, "hello")), "hello\n");
        assert.deepEqual(await c.readFile(root, "lib/data"), data);
        const big = pattern(200_000, 17);
        await c.writeFile(root, "lib/new", big);
        assert.deepEqual(ex.file("lib/new"), big);
        await c.writeFile(root, "hello", te.encode("again\n"));
        assert.equal(td.decode(ex.file("hello")!), "again\n");
        await c.create(root, "made", { perm: 0o644 });
        await c.remove(root, "made");
        assert.equal(ex.file("made"), undefined);
        await root.close();
      } finally {
        await c.close();
      }
    });

    await t.step("files opened through a namespace (each open sent with its walk)", async () => {
      const c = await StyxClient.connect(await tcpDial("127.0.0.1", ex.port));
      const mem = new MemTree({ owner: "glenda" });
      await mem.mkdirp("/n/inferno");
      const ns = new Namespace(mem, { caller: { user: "glenda" } });
      try {
        await ns.mount(new RemoteTree(c), "/n/inferno");
        const baseline = c.fidsInUse;
        const before = ex.reordered;
        for (const name of ["hello", "lib/data"]) {
          const f = await ns.open(`/n/inferno/${name}`, OREAD);
          assert.deepEqual(await f.read(0n, 1 << 20), ex.file(name));
          await f.close();
          // A node opened in place: its clone and Topen go out together too.
          const n = await ns.resolve(`/n/inferno/${name}`);
          const g = await n.open(OREAD);
          assert.deepEqual(await g.read(0n, 1 << 20), ex.file(name));
          await g.close();
          await n.close();
        }
        assert.ok(ex.reordered > before, "no open overtook its walk");
        assert.equal(c.fidsInUse, baseline);
      } finally {
        await ns.close();
        await c.close();
      }
    });

    await t.step("`ferry 9p` read and write", async () => {
      const addr = `tcp!127.0.0.1!${ex.port}`;
      const rd = await ferry(["9p", "-A", "-a", addr, "read", "lib/data"]);
      assert.equal(rd.code, 0, rd.stderr);
      assert.deepEqual(rd.stdout, data);
      const payload = pattern(50_000, 19);
      const wr = await ferry(["9p", "-A", "-a", addr, "write", "lib/data"], payload);
      assert.equal(wr.code, 0, wr.stderr);
      assert.deepEqual(ex.file("lib/data"), payload);
      const ls = await ferry(["9p", "-A", "-a", addr, "ls", "lib"]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.deepEqual(td.decode(ls.stdout).trim().split("\n"), ["data", "new"]);
    });

    await t.step("some requests did overtake (the test exercised reordering)", () => {
      assert.ok(ex.reordered > 0, "no pipelined requests arrived together");
    });
  } finally {
    await ex.close();
  }
});
