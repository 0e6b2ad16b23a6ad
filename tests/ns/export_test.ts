import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import type { Tree } from "../../lib/fs/tree.ts";
import { serve } from "../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { memPipe } from "../../lib/transport/pipe.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import { OREAD, OWRITE } from "../../lib/styx/types.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

/** Serve `tree` on one end of a memory pipe and return a client on the other. */
async function connect(tree: Tree): Promise<{ client: StyxClient; done: Promise<void> }> {
  const [a, b] = memPipe();
  const done = serve(b, tree);
  return { client: await StyxClient.connect(a), done };
}

Deno.test("a namespace served over Styx shows the composed view", async (t) => {
  const root = new MemTree({ owner: "glenda" });
  await root.writeFile("/dis/ls", "system ls");
  await root.writeFile("/dis/date", "system date");
  await root.writeFile("/usr/glenda/dis/ls", "my ls");
  await root.writeFile("/usr/glenda/dis/hello", "my hello");
  await root.mkdirp("/n/remote");
  const far = new MemTree({ owner: "glenda" });
  await far.writeFile("/docs/readme", "far away");

  // A remote tree mounted into the namespace through a real Styx client.
  const farConn = await connect(far);
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  await ns.mount(new RemoteTree(farConn.client), "/n/remote", { source: "pipe!far" });
  await ns.bind("/usr/glenda/dis", "/dis", { before: true });

  const { client, done } = await connect(ns);
  try {
    const top = await client.attach("glenda");

    await t.step("a union directory read by a client lists every member", async () => {
      const ents = await client.ls(top, "/dis");
      // "ls" is in both members and is listed twice, as Inferno lists it.
      assert.deepEqual(ents.map((d) => d.name).sort(), ["date", "hello", "ls", "ls"]);
      assert.equal(dec.decode(await client.readFile(top, "/dis/ls")), "my ls");
      assert.equal(dec.decode(await client.readFile(top, "/dis/date")), "system date");
    });

    await t.step("walks through a mount point enter the mounted tree", async () => {
      assert.equal(dec.decode(await client.readFile(top, "/n/remote/docs/readme")), "far away");
      const st = await client.stat(top, "/n/remote");
      assert.equal(st.name, "remote");
    });

    await t.step(".. from a mounted root goes back into the namespace", async () => {
      const w = await top.walk(["n", "remote", "docs", "..", "..", ".."]);
      assert.equal(w.qids.length, 6);
      assert.deepEqual(w.node!.qid, top.qid);
      const f = await w.node!.open(OREAD);
      const names = (await f.readDir()).map((d) => d.name).sort();
      assert.deepEqual(names, ["dis", "n", "usr"]);
      await f.close();
      await w.node!.close();
      // .. at the attach root stays there.
      const up = await top.walk(["..", ".."]);
      assert.deepEqual(up.node!.qid, top.qid);
      await up.node!.close();
    });

    await t.step("create in a union without -c fails with Plan 9's words", async () => {
      await assert.rejects(
        client.writeFile(top, "/dis/new", enc.encode("x")),
        /mounted directory forbids creation/,
      );
      // Writing through to the remote works.
      await client.writeFile(top, "/n/remote/docs/note", enc.encode("written"));
      assert.equal(dec.decode(await far.readFile("/docs/note")), "written");
    });

    await t.step("a subtree export cannot climb above its root", async () => {
      const sub = await connect(ns.subtree("/usr"));
      const r = await sub.client.attach("glenda");
      const up = await r.walk(["..", "..", "glenda", "dis", "hello"]);
      const f = await up.node!.open(OREAD);
      assert.equal(dec.decode(await f.read(0n, 100)), "my hello");
      await f.close();
      await up.node!.close();
      await sub.client.close();
      await sub.done;
    });

    await top.close();
  } finally {
    await client.close();
    await done;
  }

  await t.step("fids on the mounted remote are all released", async () => {
    // The mount holds one fid (its root); everything else was clunked.
    assert.equal(farConn.client.fidsInUse, 1);
    await ns.unmount("pipe!far", "/n/remote");
    assert.equal(farConn.client.fidsInUse, 0);
  });

  await ns.close();
  await farConn.client.close();
  await farConn.done;
});

Deno.test("a namespace exported over TCP, mounted into a second namespace", async () => {
  const root = new MemTree({ owner: "alice" });
  await root.writeFile("/home/alice/todo", "buy milk");
  await root.mkdirp("/tmp");
  const exporter = new Namespace(root, { caller: { user: "alice" } });
  const extra = new MemTree({ owner: "alice" });
  await extra.writeFile("/todo", "hidden");
  await extra.writeFile("/more", "from the union");
  await exporter.mount(extra, "/home/alice", { after: true });

  const ln = tcpListen("127.0.0.1", 0);
  const serving: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of ln) serving.push(serve(c, exporter.subtree("/home/alice")));
  })();
  const port = Number(ln.addr.split("!").pop());
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
  const other = new Namespace(new MemTree({ owner: "bob" }), { caller: { user: "bob" } });
  try {
    const r = await other.resolve("/");
    await r.create("mnt", 0x80000000 | 0o777, OREAD).then((c) =>
      Promise.all([c.file.close(), c.node.close()])
    );
    await r.close();
    await other.mount(new RemoteTree(client), "/mnt", { source: `tcp!127.0.0.1!${port}` });
    const names = (await other.readDir("/mnt")).map((d) => d.name).sort();
    assert.deepEqual(names, ["more", "todo", "todo"]);
    assert.equal(dec.decode(await other.readFile("/mnt/todo")), "buy milk");
    const f = await other.open("/mnt/todo", OWRITE);
    await f.write(0n, enc.encode("sell"));
    await f.close();
    assert.equal(dec.decode(await root.readFile("/home/alice/todo")), "sellmilk");
    await other.unmount(`tcp!127.0.0.1!${port}`, "/mnt");
    assert.deepEqual(await other.readDir("/mnt"), []);
  } finally {
    await other.close();
    await client.close();
    ln.close();
    await accepting;
    await Promise.all(serving);
    await exporter.close();
  }
});

Deno.test("a remote that goes away: its mount errors, the rest works, unmount works", async () => {
  const root = new MemTree({ owner: "glenda" });
  await root.writeFile("/dis/ls", "system ls");
  await root.mkdirp("/n/remote");
  const far = new MemTree({ owner: "glenda" });
  await far.writeFile("/farfile", "far");
  const [a, b] = memPipe();
  const done = serve(b, far);
  const client = await StyxClient.connect(a);
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  await ns.mount(new RemoteTree(client), "/n/remote", { source: "pipe!far" });
  await ns.bind("/n/remote", "/dis", { after: true });
  assert.deepEqual((await ns.readDir("/dis")).map((d) => d.name).sort(), ["farfile", "ls"]);

  b.close(); // the server's end hangs up
  await done;
  const lost =
    /'\/n\/remote' is no longer connected \(pipe!\S+: the server closed the connection\)$/;
  await assert.rejects(ns.readDir("/n/remote"), lost);
  await assert.rejects(ns.readFile("/n/remote/farfile"), lost);
  // The listing marks the lost mount; the bind of it, made from a path, is not a mount.
  assert.deepEqual(ns.mounts().map((m) => [m.kind, m.target, m.lost]), [
    ["mount", "/n/remote", "pipe!b: the server closed the connection"],
    ["bind", "/dis", undefined],
  ]);
  // The union still answers from its live member.
  assert.deepEqual((await ns.readDir("/dis")).map((d) => d.name), ["ls"]);
  assert.equal(dec.decode(await ns.readFile("/dis/ls")), "system ls");
  // Only the lost member could have had it: its loss is the answer.
  await assert.rejects(ns.readFile("/dis/farfile"), lost);
  // Unmount works and releases what it can.
  await ns.unmount("/n/remote", "/dis");
  await ns.unmount(undefined, "/n/remote");
  assert.deepEqual(ns.mounts(), []);
  assert.deepEqual(await ns.readDir("/n/remote"), []);
  await ns.close();
  await client.close();
});

Deno.test("a served namespace acts for the client that attached, not for its owner", async () => {
  const { ProgDevice } = await import("../../lib/dev/prog/device.ts");
  const me = (await (await import("../../lib/fs/users.ts")).hostUsers()).userName(Deno.uid() ?? 0);
  const root = new MemTree({ owner: me });
  await root.mkdirp("/prog");
  await root.writeFile("/mine", "the owner's", 0o600);
  const ns = new Namespace(root, { caller: { user: me } });
  await ns.mount(new ProgDevice().tree(), "/prog");
  const sleeper = new Deno.Command("sleep", { args: ["300"], stdout: "null", stderr: "null" })
    .spawn();
  // The whole namespace (as `ferry logon --export` serves it) and a part of it
  // (as a manifest's namespace export does), each attached by someone else.
  const served: Tree[] = [ns, ns.subtree("/")];
  try {
    for (const tree of served) {
      const [a, b] = memPipe();
      const done = serve(b, tree);
      const client = await StyxClient.connect(a);
      try {
        const top = await client.attach("mallory");
        await assert.rejects(client.readFile(top, "/mine"), /permission denied/);
        const w = await top.walk(["prog", String(sleeper.pid), "ctl"]);
        const ctl = await w.node!.open(OWRITE);
        await assert.rejects(ctl.write(0n, enc.encode("kill")), /permission denied/);
        await ctl.close();
      } finally {
        await client.close();
        await done.catch(() => {});
      }
    }
    assert.equal(dec.decode(await ns.readFile("/mine")), "the owner's");
  } finally {
    sleeper.kill("SIGKILL");
    await sleeper.status;
    await ns.close();
  }
});
