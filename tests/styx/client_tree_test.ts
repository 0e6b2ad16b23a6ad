import assert from "node:assert/strict";
import { RecoveringTree, type RemoteNode, StyxClient } from "../../lib/styx/client.ts";
import { walkOpen, walkStat } from "../../lib/fs/tree.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import { Ename, OREAD, OWRITE, QTDIR } from "../../lib/styx/types.ts";
import { Server } from "./restartable.ts";

const dec = new TextDecoder();

/** A host directory served over real TCP, a client attached to it, and a cleanup. */
async function served(
  files: Record<string, string>,
): Promise<{ dir: string; srv: Server; client: StyxClient; root: RemoteNode }> {
  const dir = await Deno.makeTempDir();
  for (const [name, text] of Object.entries(files)) {
    const parts = name.split("/");
    if (parts.length > 1) {
      await Deno.mkdir(`${dir}/${parts.slice(0, -1).join("/")}`, { recursive: true });
    }
    await Deno.writeTextFile(`${dir}/${name}`, text);
  }
  const srv = new Server(dir);
  srv.start();
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", srv.port));
  const root = await client.attach("glenda");
  return { dir, srv, client, root };
}

Deno.test("a remote node walks and opens, or walks and stats, in one operation", async (t) => {
  const { dir, srv, client, root } = await served({
    "a/b/motd": "hello\n",
    "a/b/big": "x".repeat(100_000),
  });
  try {
    const base = client.fidsInUse;

    await t.step("walkOpen with a read ahead answers the first read from it", async () => {
      const f = await root.walkOpen(["a", "b", "motd"], OREAD, { readAhead: 7 });
      assert.equal(dec.decode(await f.read(0n, 100)), "hello\n");
      // The read ahead is used once: later reads go to the server.
      assert.equal(dec.decode(await f.read(1n, 100)), "ello\n");
      assert.equal(dec.decode(await f.read(0n, 2)), "he");
      await f.close();
      assert.equal(client.fidsInUse, base);
    });

    await t.step("a read ahead too short for the first read is not used for it", async () => {
      const f = await root.walkOpen(["a", "b", "big"], OREAD, { readAhead: 10 });
      const d = await f.read(0n, 50_000);
      assert.equal(d.length, 50_000);
      assert.equal(dec.decode(d.subarray(0, 3)), "xxx");
      await f.close();
    });

    await t.step("a directory opened with a read ahead lists every entry once", async () => {
      const f = await root.walkOpen(["a", "b"], OREAD, { readAhead: 1 << 20 });
      const names = (await f.readDir()).map((d) => d.name).sort();
      assert.deepEqual(names, ["big", "motd"]);
      // Listed again from its start, from the server.
      assert.deepEqual((await f.readDir()).map((d) => d.name).sort(), ["big", "motd"]);
      await f.close();
    });

    await t.step("no names opens the node itself (a clone); the node stays usable", async () => {
      const w = await root.walk(["a", "b"]);
      const f = await w.node!.walkOpen([], OREAD);
      assert.equal((await f.readDir()).length, 2);
      await f.close();
      assert.equal((await w.node!.stat()).name, "b");
      await w.node!.close();
      assert.equal(client.fidsInUse, base);
    });

    await t.step("walkStat gives the node and its attributes", async () => {
      const { node, dir: d } = await root.walkStat(["a", "b", "motd"]);
      assert.equal(d.name, "motd");
      assert.equal(d.length, 6n);
      assert.equal(node.qid.path, d.qid.path);
      const top = await root.walkStat(["a"]);
      assert.ok((top.dir.qid.type & QTDIR) !== 0);
      await node.close();
      await top.node.close();
      assert.equal(client.fidsInUse, base);
    });

    await t.step("a missing name is 'file does not exist' and keeps no fid", async () => {
      for (const names of [["nope"], ["a", "nope"], ["a", "b", "motd", "deeper"]]) {
        await assert.rejects(root.walkOpen(names, OREAD), { message: Ename.notFound });
        await assert.rejects(root.walkStat(names), { message: Ename.notFound });
      }
      assert.equal(client.fidsInUse, base);
    });

    await t.step("an open the server refuses keeps no fid", async () => {
      await assert.rejects(root.walkOpen(["a", "b"], OWRITE, { readAhead: 100 }), /directory/);
      await assert.rejects(root.walkOpen(["a", "b"], OWRITE), /directory/);
      // The refused opens' fids are clunked once their Rclunk arrives.
      for (let i = 0; i < 1000 && client.fidsInUse !== base; i++) {
        await new Promise((r) => setTimeout(r, 1));
      }
      assert.equal(client.fidsInUse, base);
    });

    await t.step("the helpers use the capability, or walk and open any tree", async () => {
      const f = await walkOpen(root, ["a", "b", "motd"], OREAD, { readAhead: 100 });
      assert.equal(dec.decode(await f.read(0n, 100)), "hello\n");
      await f.close();
      const mem = new MemTree();
      await mem.writeFile("/x/y", "why");
      const mroot = await mem.attach({ user: "glenda" }, "");
      assert.equal(mroot.walkOpen, undefined);
      const g = await walkOpen(mroot, ["x", "y"], OREAD, { readAhead: 100 });
      assert.equal(dec.decode(await g.read(0n, 100)), "why");
      await g.close();
      const s = await walkStat(mroot, ["x", "y"]);
      assert.equal(s.dir.length, 3n);
      await s.node.close();
      await assert.rejects(walkStat(mroot, ["x", "z"]), { message: Ename.notFound });
      await assert.rejects(walkOpen(mroot, ["z"], OREAD), { message: Ename.notFound });
    });
  } finally {
    await root.close();
    await client.close();
    await srv.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a recovering tree's nodes walk and open in one operation, across a restart", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/d`);
  await Deno.writeTextFile(`${dir}/d/f`, "0123456789");
  const srv = new Server(dir);
  srv.start();
  let recovered = Promise.withResolvers<void>();
  const tree = await RecoveringTree.connect({
    dial: async () => await StyxClient.connect(await tcpDial("127.0.0.1", srv.port)),
    minDelayMs: 20,
    maxDelayMs: 200,
    onChange: (e) => e.state === "recovered" && recovered.resolve(),
  });
  try {
    const root = await tree.attach({ user: "glenda" }, "");
    const f = await root.walkOpen(["d", "f"], OREAD, { readAhead: 11 });
    assert.equal(dec.decode(await f.read(0n, 4)), "0123");
    const { node, dir: d } = await root.walkStat(["d", "f"]);
    assert.equal(d.length, 10n);

    await srv.stop();
    await assert.rejects(f.read(4n, 2), /no longer connected/);
    await assert.rejects(root.walkStat(["d"]), /no longer connected/);
    srv.start();
    await recovered.promise;
    recovered = Promise.withResolvers<void>();
    // The file reopens at its path and reads on; the node walks again.
    assert.equal(dec.decode(await f.read(4n, 2)), "45");
    assert.equal((await node.stat()).name, "f");
    const g = await root.walkOpen(["d", "f"], OREAD);
    assert.equal(dec.decode(await g.read(8n, 10)), "89");
    await Promise.all([f.close(), g.close(), node.close(), root.close()]);
  } finally {
    await tree.close();
    await srv.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
