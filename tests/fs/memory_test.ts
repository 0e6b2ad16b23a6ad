import assert from "node:assert/strict";
import { MemTree } from "../../lib/fs/memory.ts";
import type { Node } from "../../lib/fs/tree.ts";
import {
  DMAPPEND,
  DMDIR,
  DMEXCL,
  nullDir,
  OEXEC,
  ORCLOSE,
  ORDWR,
  OREAD,
  OTRUNC,
  OWRITE,
  QTAPPEND,
  QTDIR,
  QTEXCL,
  StyxError,
} from "../../lib/styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function walkTo(root: Node, path: string): Promise<Node> {
  const r = await root.walk(path.split("/").filter((p) => p));
  assert.ok(r.node, `walk to ${path}`);
  return r.node;
}

async function rejects(p: Promise<unknown>, ename: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof StyxError, `expected StyxError, got ${e}`);
    assert.equal(e.message, ename);
    return true;
  });
}

Deno.test("MemTree", async (t) => {
  await t.step("helpers, walk, read, partial walk, .. at root", async () => {
    const tree = new MemTree({ owner: "glenda" });
    await tree.writeFile("/a/b/c.txt", "hello");
    await tree.mkdirp("/a/d");
    const root = await tree.attach({ user: "glenda" }, "");
    assert.equal(root.qid.type, QTDIR);
    assert.notEqual(root.qid.path, 0n);
    const r = await root.walk(["a", "b", "c.txt"]);
    assert.equal(r.qids.length, 3);
    const f = await r.node!.open(OREAD);
    assert.equal(dec.decode(await f.read(0n, 100)), "hello");
    assert.equal(dec.decode(await f.read(1n, 2)), "el");
    assert.equal((await f.read(5n, 10)).length, 0);
    assert.equal((await f.read(1n << 60n, 10)).length, 0);
    await f.close();
    // partial walk
    const p = await root.walk(["a", "nope", "x"]);
    assert.equal(p.qids.length, 1);
    assert.equal(p.node, undefined);
    await rejects(root.walk(["nope"]), "file does not exist");
    // walk through a file
    const q = await root.walk(["a", "b", "c.txt", "x"]);
    assert.equal(q.qids.length, 3);
    assert.equal(q.node, undefined);
    // .. at root stays at root
    const up = await root.walk(["..", "..", "a", "..", ".."]);
    assert.equal(up.node!.qid.path, root.qid.path);
    // clone
    const cl = await root.walk([]);
    assert.equal(cl.node!.qid.path, root.qid.path);
    // qid paths unique, never 0
    const paths = new Set<bigint>();
    for (const q of r.qids) paths.add(q.path);
    paths.add(root.qid.path);
    assert.equal(paths.size, 4);
    assert.ok(!paths.has(0n));
    assert.equal(dec.decode(await tree.readFile("/a/b/c.txt")), "hello");
    await assert.rejects(tree.writeFile("/a/b", "x"), /is a directory/);
    await assert.rejects(tree.mkdirp("/a/b/c.txt/z"), /a file of that name exists/);
  });

  await t.step("create, write, version bump, muid, readDir, exists", async () => {
    const tree = new MemTree({ owner: "glenda" });
    const root = await tree.attach({ user: "alice" }, "");
    const { node, file } = await root.create("f", 0o644, ORDWR);
    const st0 = await node.stat();
    assert.equal(st0.uid, "alice");
    assert.equal(st0.gid, "glenda");
    assert.equal(st0.mode, 0o644);
    assert.equal(await file.write(0n, enc.encode("abc")), 3);
    assert.equal(await file.write(5n, enc.encode("z")), 1);
    const st1 = await node.stat();
    assert.equal(st1.length, 6n);
    assert.ok(st1.qid.version > st0.qid.version);
    assert.equal(st1.muid, "alice");
    assert.deepEqual([...await file.read(0n, 10)], [97, 98, 99, 0, 0, 122]);
    await file.close();
    await rejects(root.create("f", 0o644, OREAD), "file exists");
    await rejects(root.create("..", 0o644, OREAD), "illegal name");
    await rejects(root.create("a/b", 0o644, OREAD), "illegal name");
    await rejects(root.create("", 0o644, OREAD), "illegal name");
    await rejects(root.create("d", DMDIR | 0o755, OWRITE), "is a directory");
    const d = await root.create("d", DMDIR | 0o755, OREAD);
    assert.equal(d.node.qid.type, QTDIR);
    assert.equal((await d.node.stat()).mode, (DMDIR | 0o755) >>> 0);
    await d.file.close();
    const dir = await root.open(OREAD);
    const names = (await dir.readDir()).map((x) => x.name);
    assert.deepEqual(names, ["f", "d"]);
    await rejects(dir.read(0n, 10), "is a directory");
    await dir.close();
    await rejects(root.open(OWRITE), "is a directory");
    await rejects(node.create("x", 0o644, OREAD), "not a directory");
  });

  await t.step("permissions by owner, group and other", async () => {
    const tree = new MemTree({ owner: "glenda", rootMode: 0o755 });
    await tree.writeFile("/secret", "s", 0o600);
    await tree.writeFile("/grp", "g", 0o640);
    const alice = await tree.attach({ user: "alice" }, "");
    await rejects(alice.create("x", 0o644, OREAD), "permission denied");
    await rejects((await walkTo(alice, "secret")).open(OREAD), "permission denied");
    await rejects((await walkTo(alice, "grp")).open(OREAD), "permission denied");
    const bob = await tree.attach({ user: "bob", groups: ["glenda"] }, "");
    const g = await (await walkTo(bob, "grp")).open(OREAD);
    await g.close();
    await rejects((await walkTo(bob, "grp")).open(OWRITE), "permission denied");
    await rejects((await walkTo(bob, "grp")).open(OREAD | OTRUNC), "permission denied");
    await rejects((await walkTo(bob, "grp")).remove(), "permission denied");
    await rejects((await walkTo(bob, "grp")).open(OEXEC), "permission denied");
    const glenda = await tree.attach({ user: "glenda" }, "");
    const f = await (await walkTo(glenda, "secret")).open(OWRITE);
    await rejects(f.read(0n, 1), "permission denied");
    await f.close();
    // a directory without x cannot be walked through
    await tree.mkdirp("/closed", 0o700);
    await tree.writeFile("/closed/x", "x");
    const w = await alice.walk(["closed", "x"]);
    assert.equal(w.qids.length, 1);
    assert.equal(w.node, undefined);
    // create inherits: file perm & (~0666 | dir & 0666)
    await tree.mkdirp("/lim", 0o750);
    const lim = await walkTo(glenda, "lim");
    const c = await lim.create("x", 0o777, OREAD);
    assert.equal((await c.node.stat()).mode, 0o751);
    await c.file.close();
  });

  await t.step("OTRUNC, ORCLOSE, remove, directory not empty", async () => {
    const tree = new MemTree();
    await tree.writeFile("/d/f", "data");
    const root = await tree.attach({ user: "ferry" }, "");
    const f = await walkTo(root, "d/f");
    const v0 = f.qid.version;
    const o = await f.open(OWRITE | OTRUNC);
    assert.equal((await f.stat()).length, 0n);
    assert.ok(f.qid.version > v0);
    await o.close();
    await rejects((await walkTo(root, "d")).remove(), "directory not empty");
    await rejects(root.remove(), "permission denied");
    const rc = await f.open(OREAD | ORCLOSE);
    await rc.close();
    await rc.close();
    assert.equal((await root.walk(["d", "f"])).node, undefined);
    await (await walkTo(root, "d")).remove();
    assert.equal((await (await root.open(OREAD)).readDir()).length, 0);
    await rejects(f.open(OREAD), "file does not exist");
    await rejects(f.remove(), "file does not exist");
  });

  await t.step("DMAPPEND and DMEXCL", async () => {
    const tree = new MemTree();
    const root = await tree.attach({ user: "ferry" }, "");
    const a = await root.create("log", DMAPPEND | 0o666, OWRITE);
    assert.equal(a.node.qid.type, QTAPPEND);
    await a.file.write(0n, enc.encode("one "));
    await a.file.write(0n, enc.encode("two"));
    await a.file.close();
    assert.equal(dec.decode(await tree.readFile("/log")), "one two");
    const x = await root.create("lock", DMEXCL | 0o666, ORDWR);
    assert.equal(x.node.qid.type, QTEXCL);
    await rejects(x.node.open(OREAD), "exclusive use file already open");
    await x.file.close();
    const again = await x.node.open(OREAD);
    await rejects(x.node.open(OREAD), "exclusive use file already open");
    await again.close();
  });

  await t.step("wstat: rename, chmod, truncate, mtime, don't-touch", async () => {
    const tree = new MemTree({ owner: "glenda" });
    await tree.writeFile("/dir/a", "abcdef");
    await tree.writeFile("/dir/b", "b");
    const root = await tree.attach({ user: "glenda" }, "");
    const a = await walkTo(root, "dir/a");
    const before = await a.stat();
    await a.wstat(nullDir()); // a sync: changes nothing
    assert.deepEqual(await a.stat(), before);
    await rejects(a.wstat({ ...nullDir(), name: "b" }), "file exists");
    await rejects(a.wstat({ ...nullDir(), name: "x/y" }), "illegal name");
    await a.wstat({ ...nullDir(), name: "c" });
    assert.equal((await a.stat()).name, "c");
    assert.ok(await root.walk(["dir", "c"]).then((r) => r.node));
    assert.equal((await root.walk(["dir", "a"])).node, undefined);
    await a.wstat({ ...nullDir(), length: 2n });
    assert.equal(dec.decode(await tree.readFile("/dir/c")), "ab");
    await a.wstat({ ...nullDir(), length: 4n });
    assert.deepEqual([...await tree.readFile("/dir/c")], [97, 98, 0, 0]);
    await a.wstat({ ...nullDir(), mode: 0o600 });
    assert.equal((await root.stat()).mode, (DMDIR | 0o777) >>> 0);
    assert.equal((await a.stat()).mode, 0o600);
    await rejects(a.wstat({ ...nullDir(), mode: DMDIR | 0o600 }), "permission denied");
    await a.wstat({ ...nullDir(), mtime: 1234 });
    assert.equal((await a.stat()).mtime, 1234);
    // others may not chmod, and a failed wstat changes nothing
    const bob = await tree.attach({ user: "bob" }, "");
    const ab = await walkTo(bob, "dir/c");
    await rejects(ab.wstat({ ...nullDir(), mode: 0o777, name: "zz" }), "permission denied");
    assert.equal((await a.stat()).name, "c");
    await rejects(ab.wstat({ ...nullDir(), uid: "bob" }), "permission denied");
    await rejects(root.wstat({ ...nullDir(), name: "x" }), "permission denied");
  });

  await t.step("file size limit", async () => {
    const tree = new MemTree({ maxFileSize: 10 });
    const root = await tree.attach({ user: "ferry" }, "");
    const { file } = await root.create("f", 0o666, OWRITE);
    await rejects(file.write(8n, enc.encode("abc")), "file too large");
    await rejects(file.write(1n << 62n, enc.encode("a")), "file too large");
    await file.close();
  });
});
