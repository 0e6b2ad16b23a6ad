// A name missing from a member of a union is an answer, not a failure: trees
// report it without an exception (tryWalk), and while a listing of a union
// is open, a walk skips the members that listing shows lack the name.
import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { HostTree } from "../../lib/fs/host.ts";
import type { Node, Tree } from "../../lib/fs/tree.ts";
import { serve } from "../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import { Ename, OREAD, StyxError } from "../../lib/styx/types.ts";

/** `tree`, whose root node records the names of every walk from it. */
function recording(tree: Tree, walks: string[][]): Tree {
  return {
    async attach(caller, aname) {
      const n = await tree.attach(caller, aname);
      return new Proxy(n, {
        get(t, k) {
          if (k === "walk") {
            return (names: string[], opts?: object) => {
              if (names.length > 0) walks.push(names);
              return t.walk(names, opts);
            };
          }
          const v = Reflect.get(t, k, t);
          return typeof v === "function" ? v.bind(t) : v;
        },
      }) as Node;
    },
  };
}

/** Serve `tree` on a loopback port; a client for it, and a stop. */
async function served(tree: Tree) {
  const ln = tcpListen("127.0.0.1", 0);
  const serving: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of ln) serving.push(serve(c, tree));
  })();
  const port = Number(ln.addr.split("!").pop());
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
  let stopped = false;
  return {
    client,
    async stop() {
      if (stopped) return;
      stopped = true;
      await client.close();
      ln.close();
      await accepting;
      await Promise.allSettled(serving);
    },
  };
}

Deno.test("a union of four remote members: with its listing open, a walk asks only the member that has the name", async () => {
  const walks: string[][][] = [[], [], [], []];
  const servers = [];
  for (let i = 0; i < 4; i++) {
    const t = new MemTree({ owner: "glenda" });
    await t.writeFile(`/only${i}`, `member ${i}\n`);
    servers.push(await served(recording(t, walks[i]!)));
  }
  const root = new MemTree({ owner: "glenda" });
  await root.mkdirp("/u");
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  try {
    for (let i = 0; i < 4; i++) {
      await ns.mount(new RemoteTree(servers[i]!.client), "/u", {
        after: i > 0,
        source: `m${i}`,
      });
    }
    const dir = await ns.open("/u", OREAD);
    const names = (await dir.readDir()).map((d) => d.name);
    assert.deepEqual(names, ["only0", "only1", "only2", "only3"]);
    for (const w of walks) w.length = 0;

    // What `ls -l` through a served namespace or FUSE does: list, then walk each name.
    assert.equal((await ns.stat("/u/only3")).name, "only3");
    assert.equal((await ns.stat("/u/only1")).name, "only1");
    await assert.rejects(ns.stat("/u/nowhere"), new RegExp(Ename.notFound));
    // A name no member listed costs no round trip at all.
    assert.deepEqual(walks, [[], [["only1"]], [], [["only3"]]]);

    // Once the listing is closed, nothing is assumed: every member is asked.
    await dir.close();
    for (const w of walks) w.length = 0;
    assert.equal((await ns.stat("/u/only3")).name, "only3");
    assert.deepEqual(walks.map((w) => w.length), [1, 1, 1, 1]);
  } finally {
    await ns.close();
    for (const s of servers) await s.stop();
  }
});

Deno.test("a name made in a union while its listing is open is found at once", async () => {
  const a = new MemTree({ owner: "glenda" });
  const b = new MemTree({ owner: "glenda" });
  await a.writeFile("/old", "a\n");
  const root = new MemTree({ owner: "glenda" });
  await root.mkdirp("/u");
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  try {
    await ns.mount(a, "/u", { source: "a" });
    await ns.mount(b, "/u", { after: true, create: true, source: "b" });
    const dir = await ns.open("/u", OREAD);
    assert.deepEqual((await dir.readDir()).map((d) => d.name), ["old"]);
    await ns.writeFile("/u/new", new TextEncoder().encode("made in b\n"));
    assert.equal(new TextDecoder().decode(await ns.readFile("/u/new")), "made in b\n");
    // Renamed in a member through the namespace: the new name is found too.
    await ns.wstat("/u/old", { ...(await ns.stat("/u/old")), name: "renamed" });
    assert.equal(new TextDecoder().decode(await ns.readFile("/u/renamed")), "a\n");
    await dir.close();
  } finally {
    await ns.close();
  }
});

Deno.test("tryWalk: a missing first name is { qids: [] } in memory, host and remote trees; other failures still throw", async () => {
  const mem = new MemTree({ owner: "glenda" });
  await mem.writeFile("/d/f", "x");
  const dir = await Deno.makeTempDir({ prefix: "ferry-trywalk-" });
  await Deno.mkdir(`${dir}/d`);
  await Deno.writeTextFile(`${dir}/d/f`, "x");
  const remote = await served(mem);
  const caller = { user: "glenda" };
  try {
    const roots: [string, Node][] = [
      ["memory", await mem.attach(caller, "")],
      ["host", await new HostTree(dir).attach(caller, "")],
      ["remote", await new RemoteTree(remote.client).attach(caller, "")],
    ];
    for (const [what, root] of roots) {
      assert.ok(root.tryWalk, what);
      assert.deepEqual(await root.tryWalk(["nowhere"]), { qids: [] }, what);
      // A later name missing is a partial walk, as with walk.
      const part = await root.tryWalk(["d", "nowhere"]);
      assert.equal(part.qids.length, 1, what);
      assert.equal(part.node, undefined, what);
      const hit = await root.tryWalk(["d", "f"]);
      assert.equal(hit.qids.length, 2, what);
      await hit.node!.close();
      // Walking below a file is an error, not a miss.
      const f = (await root.walk(["d", "f"])).node!;
      await assert.rejects(f.tryWalk!(["x"]), StyxError, what);
      await f.close();
      await root.close();
    }
    // A lost connection is not a miss either.
    const r = await new RemoteTree(remote.client).attach(caller, "");
    await remote.stop();
    await assert.rejects(r.tryWalk!(["nowhere"]), (e: Error) => e.message !== Ename.notFound);
  } finally {
    await remote.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a member bound or unmounted while a union's listing is open is asked in its new place", async () => {
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const trees = { a: new MemTree({ owner: "glenda" }), b: new MemTree({ owner: "glenda" }) };
  await trees.a.writeFile("/x", "a\n");
  await trees.b.writeFile("/y", "b\n");
  const c = new MemTree({ owner: "glenda" });
  await c.writeFile("/y", "c\n");
  const d = new MemTree({ owner: "glenda" });
  await d.writeFile("/z", "d\n");
  const root = new MemTree({ owner: "glenda" });
  await root.mkdirp("/u");
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  try {
    await ns.mount(trees.a, "/u", { source: "a" });
    await ns.mount(trees.b, "/u", { after: true, source: "b" });
    await ns.mount(d, "/u", { after: true, source: "d" });
    const dir = await ns.open("/u", OREAD);
    assert.deepEqual((await dir.readDir()).map((e) => e.name), ["x", "y", "z"]);
    // c goes first: its y now wins over b's.
    await ns.mount(c, "/u", { before: true, source: "c" });
    assert.equal(dec.decode(await ns.readFile("/u/y")), "c\n");
    // With a and c gone, d's z is one place nearer the front, and still found.
    await ns.unmount("c", "/u");
    await ns.unmount("a", "/u");
    assert.equal(dec.decode(await ns.readFile("/u/z")), "d\n");
    await assert.rejects(ns.stat("/u/x"), new RegExp(Ename.notFound));
    await dir.close();
    // A name made in a member behind the namespace's back, after a walk missed it there.
    await assert.rejects(ns.stat("/u/late"), new RegExp(Ename.notFound));
    await trees.b.writeFile("/late", "b late\n");
    assert.equal(dec.decode(await ns.readFile("/u/late")), "b late\n");
    await ns.writeFile("/u/z", enc.encode("d again\n"));
    assert.equal(dec.decode(await ns.readFile("/u/z")), "d again\n");
  } finally {
    await ns.close();
  }
});

Deno.test("a union member that lacked a name answers for it as soon as it has it", async () => {
  const dec = new TextDecoder();
  const first = new MemTree({ owner: "glenda" });
  await first.mkdirp("/lib");
  const last = new MemTree({ owner: "glenda" });
  await last.writeFile("/f", "last\n");
  const root = new MemTree({ owner: "glenda" });
  await root.mkdirp("/u");
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  try {
    await ns.mount(last, "/u", { source: "last" });
    await ns.mount(first, "/u", { before: true, source: "first" });
    for (let i = 0; i < 3; i++) assert.equal(dec.decode(await ns.readFile("/u/f")), "last\n");
    // Now in the first member too, made outside the namespace: the first member wins at once.
    await first.writeFile("/f", "first\n");
    assert.equal(dec.decode(await ns.readFile("/u/f")), "first\n");
    // Gone from it again: the last member's shows through.
    const top = await first.attach({ user: "glenda" }, "");
    await (await top.walk(["f"])).node!.remove();
    await top.close();
    assert.equal(dec.decode(await ns.readFile("/u/f")), "last\n");
  } finally {
    await ns.close();
  }
});

Deno.test("lacks: a memory tree says at once only that a name is certainly not there", async () => {
  const mem = new MemTree({ owner: "glenda" });
  await mem.writeFile("/d/f", "x");
  await mem.mkdirp("/closed", 0o700);
  const root = await mem.attach({ user: "glenda" }, "");
  const d = (await root.walk(["d"])).node!;
  const f = (await d.walk(["f"])).node!;
  const closed = (await root.walk(["closed"])).node!;
  try {
    assert.equal(d.lacks!("nowhere"), true);
    assert.equal(d.lacks!("f"), false);
    for (const odd of ["..", ".", "", "a/b"]) assert.equal(d.lacks!(odd), false, odd);
    // Not a directory: a walk must say so, not a skip.
    assert.equal(f.lacks!("x"), false);
    // The owner may search it; another caller may not, and is told so by a walk.
    assert.equal(closed.lacks!("x"), true);
    assert.equal(closed.lacks!("x", { caller: { user: "other" } }), false);
    await assert.rejects(closed.walk(["x"], { caller: { user: "other" } }), new RegExp(Ename.perm));
  } finally {
    for (const n of [f, d, closed, root]) await n.close();
  }
});
