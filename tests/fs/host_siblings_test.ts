/**
 * Host trees serving one directory from several event loops (the threads
 * of `ferry listen`) behave as one tree: a rename through one moves the
 * files the others hold, and a write through one changes the version all
 * of them report.
 */

import assert from "node:assert/strict";
import { HostTree, WRITE_SLOTS } from "../../lib/fs/host.ts";
import type { Node } from "../../lib/fs/tree.ts";
import { nullDir, OREAD, OWRITE } from "../../lib/styx/types.ts";

const user = { user: "glenda" };

async function walk(root: Node, ...names: string[]): Promise<Node> {
  const r = await root.walk(names);
  assert.ok(r.node, `walk ${names.join("/")} incomplete`);
  return r.node;
}

/** Two trees of `dir` tied together as `ferry listen` ties its threads' trees. */
function siblings(dir: string): [HostTree, HostTree] {
  const writes = new Int32Array(new SharedArrayBuffer(4 * WRITE_SLOTS));
  const trees: HostTree[] = [];
  const tie = (other: () => HostTree) => ({
    writes,
    onRename: (from: string[], to: string[]) => other().renamed(from, to),
  });
  trees.push(new HostTree(dir, { siblings: tie(() => trees[1]!) }));
  trees.push(new HostTree(dir, { siblings: tie(() => trees[0]!) }));
  return [trees[0]!, trees[1]!];
}

Deno.test("host tree siblings: a rename through one tree moves the files the other holds", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-siblings-" });
  try {
    await Deno.mkdir(`${dir}/d`);
    await Deno.writeTextFile(`${dir}/d/inner`, "inner\n");
    await Deno.writeTextFile(`${dir}/a`, "a\n");
    const [one, two] = siblings(dir);
    const r1 = await one.attach(user, "");
    const r2 = await two.attach(user, "");
    const held = await walk(r2, "a");
    const below = await walk(r2, "d", "inner");
    const parent = await walk(r2, "d");
    await (await walk(r1, "a")).wstat({ ...nullDir(), name: "b" });
    await (await walk(r1, "d")).wstat({ ...nullDir(), name: "e" });
    assert.equal((await held.stat()).name, "b");
    assert.equal((await held.stat()).length, 2n);
    const f = await below.open(OREAD);
    assert.equal(new TextDecoder().decode(await f.read(0n, 100)), "inner\n");
    await f.close();
    assert.equal((await parent.stat()).name, "e");
    assert.equal((await walk(parent, "inner")).qid.path, below.qid.path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("host tree siblings: a write through one tree changes the version both report", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-siblings-" });
  try {
    await Deno.writeTextFile(`${dir}/f`, "0123456789");
    const [one, two] = siblings(dir);
    const mine = await walk(await one.attach(user, ""), "f");
    const other = await walk(await two.attach(user, ""), "f");
    const before = (await other.stat()).qid.version;
    const w = await mine.open(OWRITE);
    await w.write(0n, new TextEncoder().encode("abcde"));
    await w.close();
    // The same file, the same state on disk, the same write count: one version.
    const a = await mine.stat();
    const b = await other.stat();
    assert.equal(b.qid.version, a.qid.version);
    assert.notEqual(b.qid.version, before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("host tree siblings: too small a table of write counters is refused", () => {
  assert.throws(
    () => new HostTree(".", { siblings: { writes: new Int32Array(new SharedArrayBuffer(64)) } }),
    /siblings.writes holds 16 counters; 4096 are needed/,
  );
});
