// plan9port interoperability: the `9p` command and `9pfuse` against a Ferry
// server, each scripted after plan9port's lib9pclient and 9pfuse sources,
// over real TCP.

import { pattern } from "../fixture.ts";
import assert from "node:assert/strict";
import {
  againstBothServers,
  DMDIR,
  Errno,
  errnoFor,
  inodeOf,
  IOHDRSZ,
  NinePFuse,
  NOFID,
  NOTAG,
  ORDWR,
  OREAD,
  OTRUNC,
  OWRITE,
  P9p,
  serveHost,
  T,
  tmsg,
  Wire,
  WireError,
} from "./peers.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const USER = "glenda";

/** Exact Rversion bytes for msize and "9P2000". */
function rversionBytes(msize: number): Uint8Array {
  const b = new Uint8Array(19);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 19, true);
  b[4] = 101;
  dv.setUint16(5, NOTAG, true);
  dv.setUint32(7, msize, true);
  dv.setUint16(11, 6, true);
  b.set(te.encode("9P2000"), 13);
  return b;
}

const DEEP = Array.from({ length: 20 }, (_, i) => `d${i}`);

async function fixture(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-p9p-" });
  await Deno.writeTextFile(`${dir}/hello`, "hello, plan 9\n");
  await Deno.writeFile(`${dir}/big`, pattern(10_000));
  await Deno.mkdir(`${dir}/${DEEP.join("/")}`, { recursive: true });
  await Deno.writeTextFile(`${dir}/${DEEP.join("/")}/bottom`, "deep\n");
  await Deno.mkdir(`${dir}/sub`);
  for (let i = 0; i < 40; i++) await Deno.writeTextFile(`${dir}/sub/entry-${i}`, `${i}\n`);
  return dir;
}

async function p9pSession(t: Deno.TestContext, port: number, dir: string): Promise<void> {
  await t.step("mount: Tversion 8192, Tauth refused, Tattach with the same fid 0", async () => {
    const p = await P9p.mount(port, USER);
    try {
      const log = p.wire.log;
      assert.equal(log[0]!.msg.raw.length, 19);
      assert.deepEqual(log[1]!.msg.raw, rversionBytes(8192));
      assert.equal(log[2]!.msg.type, T.auth);
      assert.equal(log[2]!.msg.afid, 0);
      assert.equal(p.authError, "authentication not required");
      assert.equal(log[4]!.msg.type, T.attach);
      assert.equal(log[4]!.msg.fid, 0);
      assert.equal(log[4]!.msg.afid, NOFID);
      assert.equal(log[5]!.msg.type, T.attach + 1);
      for (const e of log.slice(2)) assert.equal(e.msg.tag, 0);
    } finally {
      p.close();
    }
  });

  await t.step(
    "9p ls /: Twalk of no names, Tstat, Topen OREAD, Treads of msize-IOHDRSZ",
    async () => {
      const p = await P9p.mount(port, USER);
      try {
        const r = await p.ls("/");
        const want = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
        assert.deepEqual(r.dirs.map((d) => d.name).sort(), want);
        const sent = p.wire.log.filter((e) => e.dir === "out").map((e) => e.msg);
        const walks = sent.filter((m) => m.type === T.walk);
        assert.deepEqual(walks[0]!.names, []);
        const open = sent.find((m) => m.type === T.open)!;
        assert.equal(open.mode, OREAD);
        for (const m of sent.filter((m) => m.type === T.read)) {
          assert.equal(m.count, 8192 - IOHDRSZ);
        }
        for (const d of r.dirs) assert.notEqual(d.qid.path, 0n);
        const sub = await p.ls("sub");
        assert.equal(sub.dirs.length, 40);
      } finally {
        p.close();
      }
    },
  );

  await t.step("a walk of 21 names goes as 16 + 5, the second from the new fid", async () => {
    const p = await P9p.mount(port, USER);
    try {
      const d = await p.stat(`${DEEP.join("/")}/bottom`);
      assert.equal(d.name, "bottom");
      assert.equal(d.length, 5n);
      const walks = p.wire.log.filter((e) => e.dir === "out" && e.msg.type === T.walk)
        .map((e) => e.msg);
      assert.equal(walks.length, 2);
      assert.equal(walks[0]!.names!.length, 16);
      assert.equal(walks[0]!.fid, p.root);
      assert.equal(walks[1]!.names!.length, 5);
      assert.equal(walks[1]!.fid, walks[1]!.newfid);
      assert.equal(walks[1]!.fid, walks[0]!.newfid);
    } finally {
      p.close();
    }
  });

  await t.step("9p read: 4096 bytes at a time, then exit without clunk", async () => {
    const p = await P9p.mount(port, USER);
    const r = await p.read("big");
    assert.deepEqual(r.data, await Deno.readFile(`${dir}/big`));
    assert.deepEqual(r.counts, [4096, 4096, 10_000 - 8192, 0]);
    const p2 = await P9p.mount(port, USER);
    assert.equal(td.decode((await p2.read("/./hello")).data), "hello, plan 9\n");
  });

  await t.step(
    "9p write: OWRITE|OTRUNC, pieces as stdin gave them; empty input truncates",
    async () => {
      const data = pattern(9000, 4);
      const pieces = [data.subarray(0, 4096), data.subarray(4096, 8192), data.subarray(8192)];
      const p = await P9p.mount(port, USER);
      await p.write("big", pieces);
      const open = p.wire.log.find((e) => e.dir === "out" && e.msg.type === T.open)!.msg;
      assert.equal(open.mode, OWRITE | OTRUNC);
      assert.deepEqual(await Deno.readFile(`${dir}/big`), data);

      await Deno.writeTextFile(`${dir}/scratch`, "old contents that must go");
      const p2 = await P9p.mount(port, USER);
      await p2.write("scratch", []);
      const w = p2.wire.log.find((e) => e.dir === "out" && e.msg.type === T.write)!.msg;
      assert.equal(w.data!.length, 0);
      assert.equal(Deno.statSync(`${dir}/scratch`).size, 0);
      await Deno.remove(`${dir}/scratch`);
    },
  );

  await t.step("9p stat, and errors", async () => {
    const p = await P9p.mount(port, USER);
    try {
      const d = await p.stat("hello");
      assert.equal(d.name, "hello");
      assert.equal(d.length, BigInt("hello, plan 9\n".length));
      assert.equal(d.mode & DMDIR, 0);
      assert.equal(d.mode & 0o777, Deno.statSync(`${dir}/hello`).mode! & 0o777);
      assert.equal(d.mtime, Math.floor(Deno.statSync(`${dir}/hello`).mtime!.getTime() / 1000));
      assert.notEqual(d.uid, "");
      assert.notEqual(d.qid.path, 0n);
      const root = await p.stat("/");
      assert.ok(root.mode & DMDIR);
      await assert.rejects(p.stat("nope"), new WireError("file does not exist"));
      await assert.rejects(p.open("sub", OWRITE), new WireError("is a directory"));
    } finally {
      p.close();
    }
  });

  await t.step("a 9P2000.u lib9pclient is answered 9P2000", async () => {
    const w = await Wire.dial(port);
    try {
      const r = await w.rpc(tmsg.version(NOTAG, 8192, "9P2000.u"));
      assert.deepEqual(r.raw, rversionBytes(8192));
    } finally {
      w.close();
    }
  });
}

againstBothServers((server) => `a scripted plan9port 9p against ${server}`, fixture, p9pSession);

const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

async function fuseSession(t: Deno.TestContext, port: number, dir: string): Promise<void> {
  const f = await NinePFuse.mount(port, USER);
  try {
    await t.step("mount: Tversion msize 8192, Tattach, no Tauth", () => {
      const sent = f.wire.log.filter((e) => e.dir === "out").map((e) => e.msg);
      assert.equal(sent[0]!.type, T.version);
      assert.equal(sent[0]!.msize, 8192);
      assert.equal(sent[1]!.type, T.attach);
      assert.equal(sent[1]!.afid, NOFID);
      assert.equal(f.msize, 8192);
      assert.deepEqual(f.wire.log[1]!.msg.raw, rversionBytes(8192));
    });

    await t.step("every file has a nonzero qid.path, hence an inode ls shows", async () => {
      const fh = await f.open(f.root, OREAD);
      const { dirs, dotdot } = await f.readdir(fh);
      await f.clunk(fh);
      // 9pfuse walks ".." from the open directory fid; walk(5) refuses that.
      assert.equal(dotdot.type, T.error);
      const want = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assert.deepEqual(dirs.map((d) => d.name).sort(), want);
      const inodes = new Set<bigint>();
      for (const d of dirs) {
        assert.notEqual(d.qid.path, 0n, `${d.name} has qid.path 0`);
        inodes.add(inodeOf(d.qid));
        const { fid, dir: st } = await f.lookup(f.root, d.name);
        assert.equal(st.qid.path, d.qid.path);
        await f.clunk(fid);
      }
      assert.equal(inodes.size, dirs.length, "two files share an inode");
      const root = await f.getattr(f.root);
      assert.notEqual(root.qid.path, 0n);
    });

    let node = -1;
    await t.step("create, then writes split into 4096-byte pieces", async () => {
      const c = await f.create(f.root, "fresh", 0o644 | S_IFREG, OWRITE);
      node = c.node;
      assert.equal(c.dir.name, "fresh");
      assert.notEqual(c.dir.qid.path, 0n);
      const create = f.wire.log.findLast((e) => e.dir === "out" && e.msg.type === T.create)!.msg;
      assert.equal(create.perm, 0o644);
      const data = pattern(10_000, 8);
      for (let off = 0; off < data.length; off += 4096) {
        const piece = data.subarray(off, off + 4096);
        assert.equal(await f.write(c.fh, BigInt(off), piece), piece.length);
      }
      await f.clunk(c.fh);
      assert.deepEqual(await Deno.readFile(`${dir}/fresh`), data);
      const st = await f.getattr(node);
      assert.equal(st.length, 10_000n);
      const rfh = await f.open(node, OREAD);
      assert.deepEqual(await f.read(rfh, 4096n, 4096), data.subarray(4096, 8192));
      await f.clunk(rfh);
    });

    await t.step("access(2) checks: open and clunk with OREAD, OWRITE, ORDWR, OEXEC", async () => {
      const { fid } = await f.lookup(f.root, "hello");
      for (const mode of [OREAD, OWRITE, ORDWR, 3]) {
        const fh = await f.open(fid, mode);
        await f.clunk(fh);
      }
      await f.clunk(fid);
      // Directories are checked with OREAD whatever the mask.
      const fh = await f.open(f.root, OREAD);
      await f.clunk(fh);
      assert.equal(await Deno.readTextFile(`${dir}/hello`), "hello, plan 9\n");
    });

    await t.step("truncate to 0 goes as open OWRITE|OTRUNC", async () => {
      await Deno.writeTextFile(`${dir}/trunc0`, "something");
      const { fid } = await f.lookup(f.root, "trunc0");
      const st = await f.setattr(fid, { size: 0n });
      assert.equal(st.length, 0n);
      assert.equal(Deno.statSync(`${dir}/trunc0`).size, 0);
      await f.clunk(fid);
    });

    await t.step("truncate to a length: Twstat with only length set", async () => {
      await Deno.chmod(`${dir}/fresh`, 0o604);
      const st = await f.setattr(node, { size: 5000n });
      assert.equal(st.length, 5000n);
      const h = Deno.statSync(`${dir}/fresh`);
      assert.equal(h.size, 5000);
      assert.equal(h.mode! & 0o777, 0o604);
      const w = f.wire.log.findLast((e) => e.dir === "out" && e.msg.type === T.wstat)!.msg;
      assert.equal(w.stat!.mode, 0xffffffff);
      assert.equal(w.stat!.name, "");
      assert.equal(w.stat!.mtime, 0xffffffff);
    });

    await t.step("chmod: mode with Unix file-type bits, nothing else changes", async () => {
      await Deno.utime(`${dir}/fresh`, 1_100_000_000, 1_200_000_000);
      const st = await f.setattr(node, { mode: S_IFREG | 0o600 });
      assert.equal(st.mode & 0o777, 0o600);
      const h = Deno.statSync(`${dir}/fresh`);
      assert.equal(h.mode! & 0o777, 0o600);
      assert.equal(h.size, 5000);
      assert.equal(h.mtime!.getTime(), 1_200_000_000_000);
      assert.equal(h.atime!.getTime(), 1_100_000_000_000);

      await Deno.mkdir(`${dir}/adir`, { mode: 0o755 });
      const { fid } = await f.lookup(f.root, "adir");
      const ds = await f.setattr(fid, { mode: S_IFDIR | 0o700 });
      assert.ok(ds.mode & DMDIR);
      assert.equal(Deno.statSync(`${dir}/adir`).mode! & 0o777, 0o700);
      await f.clunk(fid);
    });

    await t.step("touch: atime and mtime exactly, or mtime alone", async () => {
      await f.setattr(node, { atime: 1_300_000_000, mtime: 1_400_000_000 });
      let h = Deno.statSync(`${dir}/fresh`);
      assert.equal(h.atime!.getTime(), 1_300_000_000_000);
      assert.equal(h.mtime!.getTime(), 1_400_000_000_000);
      assert.equal(h.mode! & 0o777, 0o600);
      assert.equal(h.size, 5000);
      await f.setattr(node, { mtime: 1_500_000_000 });
      h = Deno.statSync(`${dir}/fresh`);
      assert.equal(h.atime!.getTime(), 1_300_000_000_000);
      assert.equal(h.mtime!.getTime(), 1_500_000_000_000);
    });

    await t.step("fsync: a Twstat with every field 'don't touch' changes nothing", async () => {
      const before = Deno.statSync(`${dir}/fresh`);
      const fh = await f.open(node, ORDWR);
      await f.fsync(fh);
      await f.clunk(fh);
      const after = Deno.statSync(`${dir}/fresh`);
      assert.equal(after.size, before.size);
      assert.equal(after.mode, before.mode);
      assert.equal(after.mtime!.getTime(), before.mtime!.getTime());
    });

    await t.step("rename within a directory: Twstat with only the name", async () => {
      const content = await Deno.readFile(`${dir}/fresh`);
      await f.rename(f.root, "fresh", "moved");
      assert.throws(() => Deno.statSync(`${dir}/fresh`), Deno.errors.NotFound);
      const h = Deno.statSync(`${dir}/moved`);
      assert.equal(h.mode! & 0o777, 0o600);
      assert.equal(h.mtime!.getTime(), 1_500_000_000_000);
      assert.deepEqual(await Deno.readFile(`${dir}/moved`), content);
      await f.clunk(node);
    });

    await t.step("mkdir, unlink, rmdir", async () => {
      const m = await f.create(f.root, "newdir", 0o750 | S_IFDIR, OREAD, true);
      assert.ok(m.dir.mode & DMDIR);
      assert.ok(Deno.statSync(`${dir}/newdir`).isDirectory);
      const c = await f.create(m.node, "inner", 0o600, OWRITE);
      await f.clunk(c.fh);
      await f.clunk(c.node);
      await f.remove(m.node, "inner");
      assert.throws(() => Deno.statSync(`${dir}/newdir/inner`), Deno.errors.NotFound);
      await f.clunk(m.node);
      await f.remove(f.root, "newdir");
      assert.throws(() => Deno.statSync(`${dir}/newdir`), Deno.errors.NotFound);
      await f.remove(f.root, "moved");
      await f.remove(f.root, "trunc0");
      await f.remove(f.root, "adir");
    });

    await t.step("error strings carry the words 9pfuse maps to errno", async () => {
      const expectErr = async (p: Promise<unknown>, ename: string, errno: number) => {
        const e = await p.then(() => null, (e) => e);
        assert.ok(e instanceof WireError, `expected Rerror '${ename}', got ${e}`);
        assert.equal(e.ename, ename);
        assert.equal(errnoFor(e.ename), errno);
      };
      await expectErr(f.lookup(f.root, "nope"), "file does not exist", Errno.ENOENT);
      await expectErr(f.create(f.root, "hello", 0o644, OWRITE), "file exists", Errno.EEXIST);
      const { fid: sub } = await f.lookup(f.root, "sub");
      await expectErr(f.open(sub, OWRITE), "is a directory", Errno.EISDIR);
      // 9pfuse's table has no entry for "not empty": "directory" makes it ENOTDIR.
      await expectErr(f.remove(f.root, "sub"), "directory not empty", Errno.ENOTDIR);
      await f.clunk(sub);
      const { fid: file } = await f.lookup(f.root, "hello");
      await expectErr(f.create(file, "x", 0o644, OWRITE), "not a directory", Errno.ENOTDIR);
      const walked = await f.lookup(file, "x").then(() => null, (e) => e as WireError);
      assert.ok(walked instanceof WireError);
      assert.equal(errnoFor(walked.ename), Errno.ENOTDIR, walked.ename);
      await f.clunk(file);
      assert.ok(Deno.statSync(`${dir}/sub`).isDirectory);
    });
  } finally {
    f.close();
  }
}

againstBothServers(
  (server) => `a scripted plan9port 9pfuse against ${server}`,
  fixture,
  fuseSession,
);

Deno.test("a scripted 9pfuse on a read-only export gets 'permission denied' (EACCES)", async () => {
  const dir = await fixture();
  const srv = serveHost(dir, { readOnly: true });
  const f = await NinePFuse.mount(srv.port, USER);
  try {
    // One request at a time, as each FUSE request waits for its reply here.
    const attempts: Array<() => Promise<unknown>> = [
      () => f.create(f.root, "new", 0o644, OWRITE),
      () => f.lookup(f.root, "hello").then(({ fid }) => f.setattr(fid, { mode: S_IFREG | 0o600 })),
      () => f.lookup(f.root, "hello").then(({ fid }) => f.open(fid, OWRITE)),
      () => f.remove(f.root, "hello"),
      () => f.rename(f.root, "hello", "other"),
    ];
    for (const attempt of attempts) {
      const e = await attempt().then(() => null, (e) => e as WireError);
      assert.ok(e instanceof WireError);
      assert.equal(e.ename, "permission denied");
      assert.equal(errnoFor(e.ename), Errno.EACCES);
    }
    assert.equal(await Deno.readTextFile(`${dir}/hello`), "hello, plan 9\n");
  } finally {
    f.close();
    await srv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

// walk(5)/wstat(5): a fid names a file, not a path, so renaming a file through
// one fid leaves every other fid on it (and on anything below a renamed
// directory) referring to the same file. 9pfuse relies on this: after
// `mv a b` the kernel keeps the node id (fid) it had for "a" and opens "b"
// through it.
Deno.test("a scripted 9pfuse: fids keep their file when it is renamed through another fid", async (t) => {
  const dir = await fixture();
  const srv = serveHost(dir);
  const f = await NinePFuse.mount(srv.port, USER);
  try {
    await t.step("mv a b, then getattr and open through the node id of 'a'", async () => {
      await Deno.writeTextFile(`${dir}/a`, "content\n");
      const { fid } = await f.lookup(f.root, "a");
      await f.rename(f.root, "a", "b");
      const st = await f.getattr(fid);
      assert.equal(st.name, "b");
      const fh = await f.open(fid, OREAD);
      assert.equal(td.decode(await f.read(fh, 0n, 100)), "content\n");
      await f.clunk(fh);
      await f.clunk(fid);
    });

    await t.step("mv d e, then open d's file through its old node id", async () => {
      await Deno.mkdir(`${dir}/d`);
      await Deno.writeTextFile(`${dir}/d/inner`, "inside\n");
      const { fid: d } = await f.lookup(f.root, "d");
      const { fid: inner } = await f.lookup(d, "inner");
      await f.rename(f.root, "d", "e");
      const fh = await f.open(inner, OREAD);
      assert.equal(td.decode(await f.read(fh, 0n, 100)), "inside\n");
      await f.clunk(fh);
      await f.clunk(inner);
      await f.clunk(d);
    });
  } finally {
    f.close();
    await srv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
