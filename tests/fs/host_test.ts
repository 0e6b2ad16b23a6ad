import assert from "node:assert/strict";
import { HostTree } from "../../lib/fs/host.ts";
import { HostUsers, hostUsers } from "../../lib/fs/users.ts";
import type { Node } from "../../lib/fs/tree.ts";
import { parseDialString } from "../../lib/net/dial.ts";
import { serve } from "../../lib/styx/server.ts";
import { StyxClient } from "../../lib/styx/client.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import {
  DMAPPEND,
  DMDIR,
  Ename,
  nullDir,
  ORCLOSE,
  ORDWR,
  OREAD,
  OTRUNC,
  OWRITE,
  QTDIR,
  QTFILE,
  StyxError,
} from "../../lib/styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const user = { user: "glenda" };

/** Assert that `p` rejects with a StyxError carrying exactly `ename`. */
async function rejectsWith(p: Promise<unknown>, ename: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof StyxError, `expected a StyxError, got ${e}`);
    assert.equal(e.message, ename);
    return true;
  });
}

async function walk(root: Node, ...names: string[]): Promise<Node> {
  const r = await root.walk(names);
  assert.ok(r.node, `walk ${names.join("/")} incomplete`);
  return r.node;
}

async function readAll(n: Node): Promise<string> {
  const f = await n.open(OREAD);
  try {
    return dec.decode(await f.read(0n, 1 << 20));
  } finally {
    await f.close();
  }
}

/** A temporary export root beside a directory that must stay out of reach. */
async function fixture(): Promise<{ base: string; root: string; cleanup(): Promise<void> }> {
  const base = await Deno.makeTempDir({ prefix: "ferry-host-" });
  const root = `${base}/root`;
  await Deno.mkdir(`${root}/sub`, { recursive: true });
  await Deno.mkdir(`${base}/outside`);
  await Deno.writeTextFile(`${base}/outside/secret`, "secret\n");
  await Deno.writeTextFile(`${root}/file`, "hello\n");
  await Deno.writeTextFile(`${root}/sub/inner`, "inner\n");
  await Deno.symlink("/etc", `${root}/etc`);
  await Deno.symlink("../outside/secret", `${root}/leak`);
  await Deno.symlink("../outside", `${root}/sub/up`);
  await Deno.symlink("sub", `${root}/alias`);
  await Deno.symlink("../file", `${root}/sub/filelink`);
  await Deno.symlink("nowhere", `${root}/dangling`);
  return { base, root, cleanup: () => Deno.remove(base, { recursive: true }) };
}

Deno.test("HostTree keeps everything outside the root out of reach", async (t) => {
  const fx = await fixture();
  try {
    const tree = new HostTree(fx.root);
    const root = await tree.attach(user, "");
    const rootQid = root.qid;
    assert.equal(rootQid.type, QTDIR);

    await t.step("'..' at the root stays at the root", async () => {
      const r = await root.walk(["..", "..", ".."]);
      assert.equal(r.qids.length, 3);
      for (const q of r.qids) assert.equal(q.path, rootQid.path);
      assert.ok(r.node);
      assert.equal((await r.node.stat()).name, "/");
      const r2 = await root.walk(["sub", "..", "..", "file"]);
      assert.ok(r2.node);
      assert.equal(await readAll(r2.node), "hello\n");
      const back = await tree.attach(user, "../..");
      assert.equal(back.qid.path, rootQid.path);
    });

    await t.step("a symlink out of the root to /etc cannot be walked", async () => {
      await rejectsWith(root.walk(["etc"]), Ename.perm);
      await rejectsWith(root.walk(["etc", "passwd"]), Ename.perm);
      await rejectsWith(root.walk(["leak"]), Ename.perm);
      const r = await root.walk(["sub", "up", "secret"]);
      assert.equal(r.qids.length, 1);
      assert.equal(r.node, undefined);
      await rejectsWith(tree.attach(user, "etc"), Ename.perm);
      await rejectsWith(root.create("dangling", 0o644, OWRITE), Ename.exists);
      await rejectsWith(root.create("etc", 0o644, OWRITE), Ename.exists);
    });

    await t.step("symlinks that stay inside are followed", async () => {
      const sub = await walk(root, "sub");
      const alias = await walk(root, "alias");
      assert.equal(alias.qid.path, sub.qid.path);
      assert.equal(alias.qid.type, QTDIR);
      assert.equal(await readAll(await walk(root, "alias", "inner")), "inner\n");
      assert.equal(await readAll(await walk(root, "sub", "filelink")), "hello\n");
      const up = await walk(root, "alias", "..");
      assert.equal(up.qid.path, rootQid.path);
      await rejectsWith(root.walk(["dangling"]), Ename.notFound);
    });

    await t.step("a node reached through a symlink keeps the name walked", async () => {
      const alias = await walk(root, "alias");
      const st = await alias.stat();
      assert.equal(st.name, "alias");
      assert.equal(st.qid.type, QTDIR);
      assert.equal((await (await walk(alias)).stat()).name, "alias");
      assert.equal((await (await walk(root, "sub", "filelink")).stat()).name, "filelink");
      assert.equal((await (await walk(root, "alias", "inner")).stat()).name, "inner");
      assert.equal((await (await walk(root, "alias", "..")).stat()).name, "/");
      // Writing back what stat gave changes nothing, the walked name included.
      await alias.wstat(st);
      assert.ok((await Deno.lstat(`${fx.root}/alias`)).isSymlink);
      assert.ok((await Deno.lstat(`${fx.root}/sub`)).isDirectory);
    });

    await t.step("directory listings show outside links but never their targets", async () => {
      const d = await root.open(OREAD);
      const entries = await d.readDir();
      await d.close();
      const byName = new Map(entries.map((e) => [e.name, e]));
      assert.deepEqual([...byName.keys()].sort(), [
        "alias",
        "dangling",
        "etc",
        "file",
        "leak",
        "sub",
      ]);
      const etc = byName.get("etc");
      assert.ok(etc);
      assert.equal(etc.qid.type, QTFILE);
      assert.equal(etc.mode & DMDIR, 0);
      assert.equal(etc.length, BigInt("/etc".length));
      assert.equal(byName.get("alias")?.qid.type, QTDIR);
      assert.equal(byName.get("alias")?.qid.path, byName.get("sub")?.qid.path);
    });

    await t.step("illegal names are refused", async () => {
      for (const bad of ["a/b", "/", "a\0b", ".", ""]) {
        await rejectsWith(root.walk([bad]), Ename.badName);
        await rejectsWith(root.create(bad, 0o644, OWRITE), Ename.badName);
      }
      await rejectsWith(root.create("..", 0o644, OWRITE), Ename.badName);
      await rejectsWith(root.walk(["../outside"]), Ename.badName);
      const r = await root.walk(["sub", "x/y"]);
      assert.equal(r.qids.length, 1);
      assert.equal(r.node, undefined);
      const f = await walk(root, "file");
      for (const bad of ["a/b", "..", ".", "x\0"]) {
        await rejectsWith(f.wstat({ ...nullDir(), name: bad }), Ename.badName);
      }
      await rejectsWith(root.wstat({ ...nullDir(), name: "newroot" }), Ename.badName);
      assert.equal(await readAll(f), "hello\n");
    });

    await t.step("walking below a file fails", async () => {
      await rejectsWith(
        root.walk(["file", "x"]).then((r) => {
          if (!r.node) throw new StyxError("partial");
        }),
        "partial",
      );
      const f = await walk(root, "file");
      await rejectsWith(f.walk(["x"]), Ename.walkNoDir);
      await rejectsWith(f.walk([".."]), Ename.walkNoDir);
    });

    await t.step("a file swapped for a symlink after the walk is not followed", async () => {
      await Deno.writeTextFile(`${fx.root}/swap`, "mine\n");
      const n = await walk(root, "swap");
      await Deno.remove(`${fx.root}/swap`);
      await Deno.symlink(`${fx.base}/outside/secret`, `${fx.root}/swap`);
      await rejectsWith(n.open(OREAD), Ename.perm);
      await rejectsWith(n.open(OWRITE | OTRUNC), Ename.perm);
      await rejectsWith(n.wstat({ ...nullDir(), length: 0n }), Ename.perm);
      await rejectsWith(n.wstat({ ...nullDir(), mode: 0o777 }), Ename.perm);
      await n.remove();
      assert.equal(await Deno.readTextFile(`${fx.base}/outside/secret`), "secret\n");
      assert.equal((await Deno.lstat(`${fx.base}/outside/secret`)).mode! & 0o777, 0o644);
    });

    await t.step("the root cannot be removed", async () => {
      const clone = await walk(root);
      await rejectsWith(clone.remove(), Ename.perm);
    });

    assert.equal(await Deno.readTextFile(`${fx.base}/outside/secret`), "secret\n");
  } finally {
    await fx.cleanup();
  }
});

Deno.test("HostTree file operations", async (t) => {
  const fx = await fixture();
  try {
    const root = await new HostTree(fx.root).attach(user, "");

    await t.step("create, write, read, stat", async () => {
      const { node, file } = await root.create("new", 0o640, ORDWR);
      assert.equal(node.qid.type, QTFILE);
      assert.equal(await file.write(0n, enc.encode("hello, world")), 12);
      assert.equal(dec.decode(await file.read(7n, 100)), "world");
      assert.equal((await file.read(12n, 10)).length, 0);
      assert.equal((await file.read(1000n, 10)).length, 0);
      await file.close();
      await file.close();
      const d = await node.stat();
      assert.equal(d.name, "new");
      assert.equal(d.length, 12n);
      assert.equal(d.mode, 0o640);
      const me = await hostUsers();
      const hostSt = await Deno.lstat(`${fx.root}/new`);
      assert.equal(d.uid, me.userName(hostSt.uid ?? -1));
      assert.equal(d.gid, me.groupName(hostSt.gid ?? -1));
      assert.equal(d.muid, d.uid);
      assert.equal(d.mtime, Math.floor((hostSt.mtime?.getTime() ?? 0) / 1000));
      assert.equal(await Deno.readTextFile(`${fx.root}/new`), "hello, world");
      await rejectsWith(root.create("new", 0o640, OWRITE), Ename.exists);
    });

    await t.step("open modes", async () => {
      const n = await walk(root, "new");
      const w = await n.open(OWRITE);
      await rejectsWith(w.read(0n, 1), Ename.perm);
      await w.write(0n, enc.encode("J"));
      await w.close();
      const r = await n.open(OREAD);
      await rejectsWith(r.write(0n, enc.encode("x")), Ename.perm);
      await r.close();
      assert.equal(await readAll(n), "Jello, world");
      const tr = await n.open(OWRITE | OTRUNC);
      await tr.close();
      assert.equal((await n.stat()).length, 0n);
      await rejectsWith(root.open(OWRITE), Ename.isDir);
      await rejectsWith(root.open(ORDWR), Ename.isDir);
      await rejectsWith(root.open(OREAD | OTRUNC), Ename.isDir);
      const d = await root.open(OREAD);
      await rejectsWith(d.read(0n, 10), Ename.isDir);
      await d.close();
    });

    await t.step("ORCLOSE removes on close", async () => {
      const { file } = await root.create("tmp", 0o600, ORDWR | ORCLOSE);
      await file.write(0n, enc.encode("x"));
      await Deno.lstat(`${fx.root}/tmp`);
      await file.close();
      await assert.rejects(Deno.lstat(`${fx.root}/tmp`), Deno.errors.NotFound);
      await Deno.writeTextFile(`${fx.root}/tmp2`, "y");
      const f = await (await walk(root, "tmp2")).open(OREAD | ORCLOSE);
      await f.close();
      await assert.rejects(Deno.lstat(`${fx.root}/tmp2`), Deno.errors.NotFound);
    });

    await t.step("directories: create, list, remove", async () => {
      const { node: dir, file } = await root.create("d", DMDIR | 0o755, OREAD);
      assert.equal(dir.qid.type, QTDIR);
      assert.deepEqual(await file.readDir(), []);
      await file.close();
      assert.equal((await dir.stat()).mode, (DMDIR | 0o755) >>> 0);
      await rejectsWith(root.create("d2", DMDIR | 0o755, OWRITE), Ename.isDir);
      await assert.rejects(Deno.lstat(`${fx.root}/d2`), Deno.errors.NotFound);
      const a = await dir.create("a", 0o644, OWRITE);
      await a.file.write(0n, enc.encode("aaa"));
      await a.file.close();
      await (await dir.create("b", DMDIR | 0o700, OREAD)).file.close();
      const lst = await dir.open(OREAD);
      const entries = await lst.readDir();
      await lst.close();
      assert.deepEqual(
        entries.map((e) => [e.name, e.length, e.qid.type]).sort(),
        [["a", 3n, QTFILE], ["b", 0n, QTDIR]],
      );
      await rejectsWith((await walk(root, "d")).remove(), Ename.notEmpty);
      await (await walk(dir, "a")).remove();
      await (await walk(dir, "b")).remove();
      await dir.remove();
      await rejectsWith(root.walk(["d"]), Ename.notFound);
      await rejectsWith(dir.stat(), Ename.notFound);
    });

    await t.step("create masks perm with the parent's bits, whatever the umask", async () => {
      const { node: p, file } = await root.create("masked", DMDIR | 0o750, OREAD);
      await file.close();
      const prev = Deno.umask(0o077);
      try {
        const f = await p.create("f", 0o777, OWRITE);
        await f.file.close();
        assert.equal((await f.node.stat()).mode, 0o751);
        const g = await p.create("g", 0o664, OWRITE);
        await g.file.close();
        assert.equal((await g.node.stat()).mode, 0o640);
        const d = await p.create("d", DMDIR | 0o777, OREAD);
        await d.file.close();
        assert.equal((await d.node.stat()).mode, (DMDIR | 0o750) >>> 0);
      } finally {
        Deno.umask(prev);
      }
    });

    await t.step("concurrent reads on one open file do not race", async () => {
      const data = new Uint8Array(1 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 11)) & 0xff;
      await Deno.writeFile(`${fx.root}/big`, data);
      const f = await (await walk(root, "big")).open(OREAD);
      const offsets = Array.from({ length: 200 }, (_, k) => (k * 5003) % (data.length - 4096));
      const got = await Promise.all(offsets.map((o) => f.read(BigInt(o), 4096)));
      await f.close();
      offsets.forEach((o, k) => assert.deepEqual(got[k], data.subarray(o, o + 4096)));
    });

    await t.step("large transfers, and a file that grows while open", async () => {
      const data = new Uint8Array(300_000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
      const { node, file } = await root.create("large", 0o644, ORDWR);
      assert.equal(await file.write(0n, data), data.length);
      const back = await file.read(0n, 1 << 20);
      assert.deepEqual(back, data);
      assert.deepEqual(await file.read(100_000n, 150_000), data.subarray(100_000, 250_000));
      assert.equal((await file.read(BigInt(data.length), 10)).length, 0);
      await file.close();
      const r = await node.open(OREAD);
      assert.equal((await r.read(0n, 1 << 20)).length, data.length);
      const more = await Deno.open(`${fx.root}/large`, { append: true });
      await more.write(enc.encode("tail"));
      more.close();
      assert.equal(dec.decode(await r.read(BigInt(data.length), 100)), "tail");
      // A close waits for reads in flight before releasing the descriptor.
      const pending = [r.read(0n, 200_000), r.read(50_000n, 200_000)];
      await r.close();
      const [p0, p1] = await Promise.all(pending);
      assert.deepEqual(p0, data.subarray(0, 200_000));
      assert.deepEqual(p1, data.subarray(50_000, 250_000));
      await rejectsWith(r.read(0n, 1), Ename.notOpen);
      await node.remove();
    });

    await t.step("offsets above 4 GiB on a sparse file", async () => {
      const { node, file } = await root.create("sparse", 0o644, ORDWR);
      const off = 5n * (1n << 30n) + 7n;
      assert.equal(await file.write(off, enc.encode("far away")), 8);
      assert.equal((await node.stat()).length, off + 8n);
      assert.equal(dec.decode(await file.read(off, 100)), "far away");
      assert.equal(dec.decode(await file.read(off + 4n, 2)), "aw");
      assert.deepEqual(await file.read(1n << 32n, 4), new Uint8Array(4));
      assert.equal((await file.read(6n << 30n, 10)).length, 0);
      await rejectsWith(
        file.read(1n << 53n, 1).then(() => {}),
        "offset 9007199254740992 is beyond what the host file system supports",
      );
      await assert.rejects(file.write(1n << 60n, enc.encode("x")), StyxError);
      await file.close();
      await node.remove();
    });
  } finally {
    await fx.cleanup();
  }
});

Deno.test("HostTree wstat", async (t) => {
  const fx = await fixture();
  try {
    const root = await new HostTree(fx.root).attach(user, "");
    const f = await walk(root, "file");

    await t.step("a null Dir changes nothing", async () => {
      const before = await f.stat();
      await f.wstat(nullDir());
      const after = await f.stat();
      assert.deepEqual({ ...after, atime: 0 }, { ...before, atime: 0 });
    });

    await t.step("the whole Dir as read back changes nothing", async () => {
      const before = await f.stat();
      await f.wstat(before);
      assert.deepEqual(await f.stat(), before);
    });

    await t.step("mode", async () => {
      await f.wstat({ ...nullDir(), mode: 0o600 });
      assert.equal((await f.stat()).mode, 0o600);
      assert.equal((await Deno.lstat(`${fx.root}/file`)).mode! & 0o777, 0o600);
      await rejectsWith(f.wstat({ ...nullDir(), mode: DMDIR | 0o600 }), Ename.noWstat);
      await rejectsWith(f.wstat({ ...nullDir(), mode: DMAPPEND | 0o600 }), Ename.noWstat);
      // 9pfuse passes the Unix st_mode through: file-type bits are ignored.
      await f.wstat({ ...nullDir(), mode: 0o100640 });
      assert.equal((await f.stat()).mode, 0o640);
      await f.wstat({ ...nullDir(), mode: 0o600 });
      const sub = await walk(root, "sub");
      await sub.wstat({ ...nullDir(), mode: 0o040750 });
      assert.equal((await sub.stat()).mode, (DMDIR | 0o750) >>> 0);
      await sub.wstat({ ...nullDir(), mode: DMDIR | 0o711 });
      assert.equal((await sub.stat()).mode, (DMDIR | 0o711) >>> 0);
      await sub.wstat({ ...nullDir(), mode: 0o755 });
      assert.equal((await sub.stat()).mode, (DMDIR | 0o755) >>> 0);
    });

    await t.step("length", async () => {
      await f.wstat({ ...nullDir(), length: 3n });
      assert.equal(await Deno.readTextFile(`${fx.root}/file`), "hel");
      await f.wstat({ ...nullDir(), length: 10n });
      assert.equal((await f.stat()).length, 10n);
      await f.wstat({ ...nullDir(), length: 0n });
      assert.equal((await f.stat()).length, 0n);
      await rejectsWith(root.wstat({ ...nullDir(), length: 5n }), Ename.isDir);
    });

    await t.step("mtime and atime", async () => {
      await f.wstat({ ...nullDir(), mtime: 1_000_000_000 });
      const d = await f.stat();
      assert.equal(d.mtime, 1_000_000_000);
      assert.equal((await Deno.lstat(`${fx.root}/file`)).mtime?.getTime(), 1e12);
      await f.wstat({ ...nullDir(), atime: 1_100_000_000 });
      const d2 = await f.stat();
      assert.equal(d2.atime, 1_100_000_000);
      assert.equal(d2.mtime, 1_000_000_000);
    });

    await t.step("name: rename within the directory", async () => {
      const q = f.qid.path;
      const clone = await walk(f);
      await f.wstat({ ...nullDir(), name: "renamed" });
      assert.equal((await f.stat()).name, "renamed");
      assert.equal((await clone.stat()).name, "renamed");
      await clone.close();
      assert.equal((await f.stat()).qid.path, q);
      await rejectsWith(root.walk(["file"]), Ename.notFound);
      assert.equal((await walk(root, "renamed")).qid.path, q);
      await rejectsWith(f.wstat({ ...nullDir(), name: "sub" }), Ename.exists);
      await rejectsWith(f.wstat({ ...nullDir(), name: "alias" }), Ename.exists);
      await f.wstat({ ...nullDir(), name: "file" });
      assert.equal((await walk(root, "file")).qid.path, q);
    });

    await t.step("gid: the current group, a known group, an unknown one", async () => {
      const cur = await f.stat();
      await f.wstat({ ...nullDir(), gid: cur.gid });
      const users = await hostUsers();
      await rejectsWith(f.wstat({ ...nullDir(), gid: "no-such-group-x" }), "unknown group");
      if (Deno.uid() === 0) {
        const other = users.groupName(1);
        await f.wstat({ ...nullDir(), gid: other });
        assert.equal((await f.stat()).gid, other);
        assert.equal((await Deno.lstat(`${fx.root}/file`)).gid, 1);
      }
    });

    await t.step("fields that cannot change are refused, and nothing else changes", async () => {
      const before = await f.stat();
      const tries = [
        { ...nullDir(), uid: "someone-else", mode: 0o644 },
        { ...nullDir(), muid: "someone-else", mode: 0o644 },
        { ...nullDir(), type: 7, mode: 0o644 },
        { ...nullDir(), dev: 7, mode: 0o644 },
        { ...nullDir(), qid: { type: 0xff, version: 0xffffffff, path: 42n }, mode: 0o644 },
        { ...nullDir(), qid: { type: QTDIR, version: 0xffffffff, path: 0xffffffffffffffffn } },
        { ...nullDir(), mode: DMAPPEND | 0o644, name: "other", length: 1n },
      ];
      for (const d of tries) await rejectsWith(f.wstat(d), Ename.noWstat);
      assert.deepEqual({ ...(await f.stat()), atime: 0 }, { ...before, atime: 0 });
      await rejectsWith(root.walk(["other"]), Ename.notFound);
      await f.wstat({ ...nullDir(), uid: before.uid, muid: before.muid, type: 0, dev: 0 });
    });
  } finally {
    await fx.cleanup();
  }
});

Deno.test("HostTree read-only", async (t) => {
  const fx = await fixture();
  try {
    const root = await new HostTree(fx.root, { readOnly: true }).attach(user, "");
    const f = await walk(root, "file");
    await t.step("reads work", async () => {
      assert.equal(await readAll(f), "hello\n");
      const d = await root.open(OREAD);
      assert.ok((await d.readDir()).length > 0);
      await d.close();
    });
    await t.step("every change is refused", async () => {
      await rejectsWith(f.open(OWRITE), Ename.perm);
      await rejectsWith(f.open(ORDWR), Ename.perm);
      await rejectsWith(f.open(OREAD | OTRUNC), Ename.perm);
      await rejectsWith(f.open(OREAD | ORCLOSE), Ename.perm);
      await rejectsWith(root.create("x", 0o644, OWRITE), Ename.perm);
      await rejectsWith(root.create("x", DMDIR | 0o755, OREAD), Ename.perm);
      await rejectsWith(f.remove(), Ename.perm);
      await rejectsWith(f.wstat({ ...nullDir(), mode: 0o600 }), Ename.perm);
      await rejectsWith(f.wstat({ ...nullDir(), name: "y" }), Ename.perm);
      assert.equal(await Deno.readTextFile(`${fx.root}/file`), "hello\n");
      await assert.rejects(Deno.lstat(`${fx.root}/x`), Deno.errors.NotFound);
    });
  } finally {
    await fx.cleanup();
  }
});

Deno.test("HostTree qids", async (t) => {
  const fx = await fixture();
  try {
    const tree = new HostTree(fx.root);
    const root = await tree.attach(user, "");
    await t.step("qid.path is never 0 and is stable", async () => {
      const a = await walk(root, "file");
      const b = await walk(await tree.attach(user, ""), "file");
      assert.equal(a.qid.path, b.qid.path);
      assert.notEqual(a.qid.path, 0n);
      assert.equal(a.qid.path, BigInt((await Deno.lstat(`${fx.root}/file`)).ino ?? -1));
      const d = await root.open(OREAD);
      for (const e of await d.readDir()) assert.notEqual(e.qid.path, 0n, e.name);
      await d.close();
      assert.notEqual(root.qid.path, 0n);
      assert.equal((await walk(root, "sub")).qid.type, QTDIR);
    });
    await t.step("qid.version changes when the file changes", async () => {
      const n = await walk(root, "file");
      const v0 = (await n.stat()).qid.version;
      const f = await n.open(ORDWR);
      await f.write(0n, enc.encode("J"));
      const v1 = (await n.stat()).qid.version;
      assert.notEqual(v1, v0);
      await f.write(0n, enc.encode("j"));
      const v2 = (await n.stat()).qid.version;
      assert.notEqual(v2, v1);
      await f.close();
      await Deno.writeTextFile(`${fx.root}/file`, "changed outside, longer\n");
      assert.notEqual((await n.stat()).qid.version, v2);
      assert.equal((await n.stat()).qid.path, n.qid.path);
    });
    await t.step("a missing root is a clear local error", async () => {
      const missing = new HostTree(`${fx.base}/nope`);
      await assert.rejects(missing.ready(), {
        message: `cannot export '${fx.base}/nope': file does not exist`,
      });
      await rejectsWith(missing.attach(user, ""), Ename.notFound);
      await assert.rejects(new HostTree(`${fx.root}/file`).ready(), /not a directory/);
    });
  } finally {
    await fx.cleanup();
  }
});

Deno.test("HostUsers", () => {
  const u = new HostUsers(
    "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nglenda:x:1000:1000::/home/glenda:/bin/rc\nalias:x:0:0::/:/bin/sh\n",
    "root:x:0:\nsys:x:3:glenda\nbad:x:notanumber:\n",
  );
  assert.equal(u.userName(0), "root");
  assert.equal(u.userName(1000), "glenda");
  assert.equal(u.userName(4242), "4242");
  assert.equal(u.groupName(3), "sys");
  assert.equal(u.groupName(1000), "1000");
  assert.equal(u.uid("glenda"), 1000);
  assert.equal(u.uid("alias"), 0);
  assert.equal(u.uid("77"), 77);
  assert.equal(u.uid("nobody-here"), undefined);
  assert.equal(u.gid("sys"), 3);
  assert.equal(u.gid("bad"), undefined);
  assert.equal(new HostUsers("", "").userName(0), "0");
});

Deno.test("HostTree served over real TCP", async (t) => {
  const fx = await fixture();
  const listener = tcpListen("127.0.0.1", 0);
  const sessions: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) sessions.push(serve(conn, new HostTree(fx.root)));
  })().catch(() => {});
  const { port } = parseDialString(listener.addr);
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
  try {
    const root = await client.attach("glenda");

    await t.step("'..' and symlinks out stay refused on the wire", async () => {
      const up = await root.walk(["..", ".."]);
      assert.ok(up.node);
      assert.equal(up.qids[1]?.path, root.qid.path);
      await up.node.close();
      await assert.rejects(root.walk(["etc", "passwd"]), { message: Ename.perm });
      await assert.rejects(root.walk(["leak"]), { message: Ename.perm });
    });

    await t.step("create, write, read, list, wstat", async () => {
      const { node, file } = await root.create("wire", 0o644, ORDWR);
      assert.equal(await file.write(0n, enc.encode("over the wire")), 13);
      assert.equal(dec.decode(await file.read(5n, 100)), "the wire");
      await file.close();
      const names = (await client.ls(root, "/")).map((d) => d.name).sort();
      assert.ok(names.includes("wire") && names.includes("etc"));
      // What 9pfuse sends for chmod 600 and for a rename.
      await node.wstat({ ...nullDir(), mode: 0o100600 });
      await node.wstat({ ...nullDir(), name: "wired" });
      await node.close();
      const st = await client.stat(root, "/wired");
      assert.equal(st.mode, 0o600);
      assert.equal(st.length, 13n);
      assert.equal(await Deno.readTextFile(`${fx.root}/wired`), "over the wire");
      await client.remove(root, "/wired");
      await assert.rejects(Deno.lstat(`${fx.root}/wired`), Deno.errors.NotFound);
    });
    await root.close();
  } finally {
    await client.close();
    listener.close();
    await accepting;
    await Promise.all(sessions);
    await fx.cleanup();
  }
});
