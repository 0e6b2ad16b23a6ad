import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import type { Node, Tree } from "../../lib/fs/tree.ts";
import { DMDIR, OREAD, OWRITE } from "../../lib/styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const caller = { user: "glenda" };

/** A memory tree holding `files` (path → contents) and `dirs`. */
async function mem(files: Record<string, string>, dirs: string[] = []): Promise<MemTree> {
  const t = new MemTree({ owner: "glenda" });
  for (const d of dirs) await t.mkdirp(d);
  for (const [p, s] of Object.entries(files)) await t.writeFile(p, s);
  return t;
}

async function names(ns: Namespace, p: string): Promise<string[]> {
  return (await ns.readDir(p)).map((d) => d.name).sort();
}

async function text(ns: Namespace, p: string): Promise<string> {
  return dec.decode(await ns.readFile(p));
}

/** The standard fixture: /dis with ls and date, a user's dis with ls and hello. */
async function fixture(): Promise<{ root: MemTree; ns: Namespace }> {
  const root = await mem({
    "/dis/ls": "system ls",
    "/dis/date": "system date",
    "/usr/glenda/dis/ls": "my ls",
    "/usr/glenda/dis/hello": "my hello",
    "/usr/glenda/more/extra": "extra",
    "/appl/cmd/sh.b": "shell source",
    "/lib/motd": "motd",
    "/lib/other": "other",
  }, ["/n/remote", "/tmp/myappl", "/n/deep/a/b"]);
  return { root, ns: new Namespace(root, { caller }) };
}

Deno.test("bind(1) rules", async (t) => {
  await t.step("replace: bind hides the target and shows the source", async () => {
    const { ns } = await fixture();
    await ns.bind("/appl", "/tmp/myappl");
    assert.deepEqual(await names(ns, "/tmp/myappl"), ["cmd"]);
    assert.equal(await text(ns, "/tmp/myappl/cmd/sh.b"), "shell source");
    await ns.bind("/usr/glenda/dis", "/dis");
    assert.deepEqual(await names(ns, "/dis"), ["hello", "ls"]);
    await assert.rejects(ns.stat("/dis/date"), /file does not exist/);
    await ns.close();
  });

  await t.step("hide and unhide: unmount shows what was hidden", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis");
    assert.deepEqual(await names(ns, "/dis"), ["hello", "ls"]);
    await ns.unmount(undefined, "/dis");
    assert.deepEqual(await names(ns, "/dis"), ["date", "ls"]);
    assert.equal(await text(ns, "/dis/ls"), "system ls");
    await ns.close();
  });

  await t.step("-b: the new directory's names win", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { before: true });
    // A name in both members is listed once per member (readdir(2)).
    assert.deepEqual(await names(ns, "/dis"), ["date", "hello", "ls", "ls"]);
    assert.equal(await text(ns, "/dis/ls"), "my ls");
    assert.equal(await text(ns, "/dis/date"), "system date");
    assert.equal(await text(ns, "/dis/hello"), "my hello");
    // In union order: the entry of the name a walk finds comes first.
    const ls = (await ns.readDir("/dis")).filter((d) => d.name === "ls");
    assert.deepEqual(ls.map((d) => d.length), [
      BigInt("my ls".length),
      BigInt("system ls".length),
    ]);
    await ns.close();
  });

  await t.step("-a: the existing directory's names win", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { after: true });
    assert.deepEqual(await names(ns, "/dis"), ["date", "hello", "ls", "ls"]);
    assert.equal(await text(ns, "/dis/ls"), "system ls");
    assert.equal(await text(ns, "/dis/hello"), "my hello");
    const ls = (await ns.readDir("/dis")).filter((d) => d.name === "ls");
    assert.deepEqual(ls.map((d) => d.length), [
      BigInt("system ls".length),
      BigInt("my ls".length),
    ]);
    await ns.close();
  });

  await t.step("-a and -b stack in order", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { after: true });
    await ns.bind("/usr/glenda/more", "/dis", { before: true });
    await ns.bind("/lib", "/dis", { after: true });
    assert.deepEqual(await names(ns, "/dis"), [
      "date",
      "extra",
      "hello",
      "ls",
      "ls",
      "motd",
      "other",
    ]);
    assert.deepEqual(ns.mounts(), [
      { kind: "bind", flags: "-a", source: "/usr/glenda/dis", target: "/dis" },
      { kind: "bind", flags: "-a", source: "/lib", target: "/dis" },
      { kind: "bind", flags: "-b", source: "/usr/glenda/more", target: "/dis" },
    ]);
    await ns.close();
  });

  await t.step("-c: new files go to the member marked for creation", async () => {
    const { root, ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { before: true, create: true });
    await ns.writeFile("/dis/new", enc.encode("fresh"));
    assert.equal(dec.decode(await root.readFile("/usr/glenda/dis/new")), "fresh");
    await assert.rejects(root.readFile("/dis/new"), /file does not exist/);
    assert.equal(await text(ns, "/dis/new"), "fresh");
    // Creating a name the union already has is refused.
    await assert.rejects(ns.create("/dis/date", 0o666, OWRITE), /file exists/);
    // A marked member after the first still takes the file.
    const { root: r2, ns: ns2 } = await fixture();
    await ns2.bind("/usr/glenda/dis", "/dis", { after: true, create: true });
    const f = await ns2.create("/dis/made", 0o644, OWRITE);
    await f.close();
    await r2.readFile("/usr/glenda/dis/made");
    assert.equal(ns2.mounts()[0]!.flags, "-ac");
    await ns.close();
    await ns2.close();
  });

  await t.step("create in a union with no -c member names the union", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { after: true });
    await assert.rejects(
      ns.writeFile("/dis/new", enc.encode("x")),
      (e: Error) =>
        e.message.includes("mounted directory forbids creation") && e.message.includes("'/dis'"),
    );
    await assert.rejects(ns.create("/dis/newdir", DMDIR | 0o755, OREAD), /forbids creation/);
    // Existing files in the union can still be written.
    await ns.writeFile("/dis/hello", enc.encode("rewritten"));
    assert.equal(await text(ns, "/dis/hello"), "rewritten");
    await ns.close();
  });

  await t.step("a single bind accepts new files without -c", async () => {
    const { root, ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis");
    await ns.writeFile("/dis/x", enc.encode("x"));
    await root.readFile("/usr/glenda/dis/x");
    await ns.close();
  });

  await t.step("unmount one member of a union", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { before: true });
    await ns.bind("/lib", "/dis", { after: true });
    await ns.unmount("/usr/glenda/dis", "/dis");
    assert.deepEqual(await names(ns, "/dis"), ["date", "ls", "motd", "other"]);
    assert.equal(await text(ns, "/dis/ls"), "system ls");
    await assert.rejects(ns.unmount("/usr/glenda/dis", "/dis"), (e: Error) => {
      assert.match(e.message, /not mounted/);
      assert.match(e.message, /'\/usr\/glenda\/dis'/);
      return true;
    });
    // The last member gone, the mount point goes too.
    await ns.unmount("/lib/", "/dis");
    assert.deepEqual(ns.mounts(), []);
    assert.deepEqual(await names(ns, "/dis"), ["date", "ls"]);
    await ns.close();
  });

  await t.step("unmount all, and unmount of nothing", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { before: true });
    await ns.bind("/lib", "/dis", { after: true });
    await ns.unmount(undefined, "/dis");
    assert.deepEqual(await names(ns, "/dis"), ["date", "ls"]);
    await assert.rejects(ns.unmount(undefined, "/dis"), /'\/dis' is not mounted/);
    await assert.rejects(ns.unmount(undefined, "/nowhere"), /'\/nowhere' is not mounted/);
    await ns.close();
  });

  await t.step("replace over a union drops the whole union", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { before: true });
    await ns.bind("/lib", "/dis");
    assert.deepEqual(await names(ns, "/dis"), ["motd", "other"]);
    await ns.unmount(undefined, "/dis");
    assert.deepEqual(await names(ns, "/dis"), ["date", "ls"]);
    await ns.close();
  });

  await t.step(".. out of a mount point goes to the parent in the namespace", async () => {
    const { ns } = await fixture();
    const remote = await mem({ "/top/file": "remote" });
    await ns.mount(remote, "/n/remote", { source: "tcp!example!8000" });
    // Through the namespace API.
    assert.deepEqual(await names(ns, "/n/remote/.."), ["deep", "remote"]);
    // Through node walks: .. from the mounted root is /n, not the remote root.
    const n = await ns.resolve("/n/remote");
    const nQid = (await ns.stat("/n")).qid;
    const up = await n.walk([".."]);
    assert.deepEqual(up.node!.qid, nQid);
    assert.equal((await up.node!.stat()).name, "n");
    // .., then down again, crosses the mount point once more.
    const again = await up.node!.walk(["remote", "top", "file"]);
    assert.equal(again.qids.length, 3);
    const f = await again.node!.open(OREAD);
    assert.equal(dec.decode(await f.read(0n, 100)), "remote");
    await f.close();
    // A bind of a deep directory: .. leaves through the path walked, not the source's parent.
    await ns.bind("/n/deep/a/b", "/tmp/myappl");
    const b = await ns.resolve("/tmp/myappl");
    const tmp = await b.walk([".."]);
    assert.deepEqual(tmp.node!.qid, (await ns.stat("/tmp")).qid);
    const rootUp = await b.walk(["..", "..", "..", ".."]);
    assert.deepEqual(rootUp.node!.qid, (await ns.stat("/")).qid);
    for (const x of [n, up.node!, again.node!, b, tmp.node!, rootUp.node!]) await x.close();
    await ns.close();
  });

  await t.step(
    "fork: the child's changes never reach the parent, nor the parent's the child",
    async () => {
      const { ns } = await fixture();
      await ns.bind("/lib", "/tmp/myappl");
      const child = ns.fork();
      assert.deepEqual(await names(child, "/tmp/myappl"), ["motd", "other"]);
      await child.bind("/appl", "/n/remote");
      await child.unmount(undefined, "/tmp/myappl");
      assert.deepEqual(await names(child, "/tmp/myappl"), []);
      assert.deepEqual(await names(ns, "/tmp/myappl"), ["motd", "other"]);
      assert.deepEqual(await names(ns, "/n/remote"), []);
      await ns.bind("/dis", "/n/deep");
      assert.deepEqual(await names(child, "/n/deep"), ["a"]);
      assert.deepEqual(ns.mounts().map((m) => m.target), ["/tmp/myappl", "/n/deep"]);
      assert.deepEqual(child.mounts().map((m) => m.target), ["/n/remote"]);
      // Closing the child leaves the parent's mounts working (shared nodes are counted).
      await child.close();
      assert.deepEqual(await names(ns, "/tmp/myappl"), ["motd", "other"]);
      await ns.close();
    },
  );

  await t.step("a file binds onto a file", async () => {
    const { ns } = await fixture();
    await ns.bind("/lib/other", "/lib/motd");
    assert.equal(await text(ns, "/lib/motd"), "other");
    assert.equal((await ns.stat("/lib/motd")).name, "motd");
    await ns.writeFile("/lib/motd", enc.encode("changed"));
    assert.equal(await text(ns, "/lib/other"), "changed");
    await ns.unmount("/lib/other", "/lib/motd");
    assert.equal(await text(ns, "/lib/motd"), "motd");
    await assert.rejects(ns.bind("/lib", "/lib/motd"), /Cannot bind directory '\/lib' onto file/);
    await assert.rejects(ns.bind("/lib/other", "/lib/motd", { after: true }), /not a directory/);
    await ns.close();
  });

  await t.step("a union as a bind source brings all its members", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda/dis", "/dis", { before: true });
    await ns.bind("/dis", "/n/remote");
    assert.deepEqual(await names(ns, "/n/remote"), ["date", "hello", "ls", "ls"]);
    assert.equal(await text(ns, "/n/remote/ls"), "my ls");
    await ns.close();
  });

  await t.step("bad input gets clear errors and changes nothing", async () => {
    const { ns } = await fixture();
    await assert.rejects(ns.bind("/nope", "/dis"), /Source '\/nope': file does not exist/);
    await assert.rejects(
      ns.bind("/lib", "/no/such/dir"),
      /Mount point '\/no\/such\/dir': file does not exist/,
    );
    await assert.rejects(ns.bind("#Z", "/dis"), /Unknown device '#Z'/);
    await assert.rejects(
      ns.bind("/lib", "/dis", { before: true, after: true }),
      /both before \(-b\) and after \(-a\)/,
    );
    assert.deepEqual(ns.mounts(), []);
    assert.deepEqual(await names(ns, "/dis"), ["date", "ls"]);
    await ns.close();
  });

  await t.step("mount a tree, list it, unmount by source", async () => {
    const { ns } = await fixture();
    const remote = await mem({ "/hello": "hi" });
    await ns.mount(remote, "/n/remote", { source: "tcp!remote!8000" });
    assert.deepEqual(ns.mounts(), [
      { kind: "mount", flags: "", source: "tcp!remote!8000", target: "/n/remote" },
    ]);
    assert.equal(await text(ns, "/n/remote/hello"), "hi");
    await ns.unmount("tcp!remote!8000", "/n/remote");
    assert.deepEqual(await names(ns, "/n/remote"), []);
    await ns.close();
  });

  await t.step("mount over / and at a path deeper than another mount", async () => {
    const { ns } = await fixture();
    const other = await mem({ "/x/y": "deep" }, ["/n"]);
    await ns.bind("/", "/n/remote"); // the old root stays reachable
    await ns.mount(other, "/", { after: true });
    // The new tree's /n is listed after the old root's.
    assert.deepEqual(await names(ns, "/"), ["appl", "dis", "lib", "n", "n", "tmp", "usr", "x"]);
    assert.equal(await text(ns, "/x/y"), "deep");
    assert.equal(await text(ns, "/n/remote/lib/motd"), "motd");
    // A mount below another mount point.
    await ns.bind("/lib", "/n/remote/tmp/myappl");
    assert.deepEqual(await names(ns, "/n/remote/tmp/myappl"), ["motd", "other"]);
    assert.deepEqual(await names(ns, "/tmp/myappl"), []);
    await ns.close();
  });

  await t.step("a node held across binds and unmounts sees the table as it is now", async () => {
    const { ns } = await fixture();
    const n = await ns.resolve("/n");
    const d = await ns.resolve("/");
    await ns.bind("/lib", "/n/remote");
    const lib = await n.walk(["remote", "motd"]);
    assert.ok(lib.node);
    await ns.bind("/usr/glenda/dis", "/n/remote", { after: true });
    const hello = await d.walk(["n", "remote", "hello"]);
    assert.ok(hello.node);
    await ns.unmount(undefined, "/n/remote");
    assert.equal((await n.walk(["remote", "motd"])).node, undefined);
    const partial = await d.walk(["n", "remote", "hello"]);
    assert.equal(partial.node, undefined);
    assert.equal(partial.qids.length, 2);
    for (const x of [n, d, lib.node!, hello.node!]) await x.close();
    await ns.close();
  });

  await t.step("walks through several mount points in one path", async () => {
    const { ns } = await fixture();
    await ns.bind("/usr/glenda", "/n/remote");
    await ns.bind("/lib", "/n/remote/more", { before: true });
    await ns.bind("/appl", "/n/remote/more/motd/..", { after: true });
    assert.equal(await text(ns, "/n/remote/more/motd"), "motd");
    assert.equal(await text(ns, "/n/remote/more/extra"), "extra");
    assert.equal(await text(ns, "/n/remote/more/cmd/sh.b"), "shell source");
    const r = await ns.resolve("/");
    const w = await r.walk(["n", "remote", "more", "cmd", "sh.b"]);
    assert.equal(w.qids.length, 5);
    await w.node!.close();
    const miss = await r.walk(["n", "remote", "more", "nothing", "x"]);
    assert.equal(miss.qids.length, 3);
    await r.close();
    await ns.close();
  });

  await t.step("a bind takes the source as it is at bind time", async () => {
    const { ns } = await fixture();
    await ns.bind("/lib", "/n/remote");
    await ns.bind("/appl", "/lib");
    assert.deepEqual(await names(ns, "/lib"), ["cmd"]);
    assert.deepEqual(await names(ns, "/n/remote"), ["motd", "other"]);
    await ns.close();
  });

  await t.step("paths longer than one Twalk's 16 names", async () => {
    const deep = Array.from({ length: 20 }, (_, i) => `d${i}`);
    const root = await mem({ [`/${deep.join("/")}/leaf`]: "bottom" }, ["/n/m"]);
    const ns = new Namespace(root, { caller });
    assert.equal(await text(ns, `/${deep.join("/")}/leaf`), "bottom");
    await ns.bind("/d0", "/n/m");
    assert.equal(await text(ns, `/n/m/${deep.slice(1).join("/")}/leaf`), "bottom");
    const r = await ns.resolve("/");
    const miss = await r.walk([...deep.slice(0, 18), "nothing", "x"]);
    assert.equal(miss.qids.length, 18);
    await r.close();
    await ns.close();
  });

  await t.step("every node is released", async () => {
    let open = 0;
    const counting = (t: Tree): Tree => ({
      attach: async (c, a) => wrap(await t.attach(c, a)),
    });
    const wrap = (n: Node): Node => {
      open++;
      let closed = false;
      return {
        get qid() {
          return n.qid;
        },
        walk: async (names, o) => {
          const r = await n.walk(names, o);
          return r.node ? { qids: r.qids, node: wrap(r.node) } : r;
        },
        open: (m, o) => n.open(m, o),
        create: async (nm, p, m, o) => {
          const c = await n.create(nm, p, m, o);
          return { node: wrap(c.node), file: c.file };
        },
        stat: (o) => n.stat(o),
        wstat: (d, o) => n.wstat(d, o),
        remove: async (o) => {
          if (!closed) open--;
          closed = true;
          await n.remove(o);
        },
        close: async () => {
          if (!closed) open--;
          closed = true;
          await n.close();
        },
      };
    };
    const { root } = await fixture();
    const ns = new Namespace(counting(root), { caller });
    const remote = counting(await mem({ "/a/b": "b" }));
    await ns.mount(remote, "/n/remote", { before: true });
    await ns.bind("/usr/glenda/dis", "/dis", { after: true });
    await ns.bind("/lib/other", "/lib/motd");
    await names(ns, "/dis");
    await names(ns, "/n/remote");
    await text(ns, "/n/remote/a/b");
    await text(ns, "/lib/motd");
    await assert.rejects(ns.stat("/n/remote/zz/yy"));
    await assert.rejects(ns.stat("/dis/zz"));
    const n = await ns.resolve("/n/remote/a");
    const w = await n.walk(["..", "..", "remote", "a", "nope"]);
    assert.equal(w.node, undefined);
    await n.close();
    const child = ns.fork();
    await child.unmount(undefined, "/dis");
    await child.close();
    await ns.close();
    assert.equal(open, 0);
  });
});
