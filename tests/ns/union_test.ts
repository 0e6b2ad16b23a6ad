// Union directories as Inferno documents them. bind(1): "If the same name
// appears in both directories, the name used is the one in the directory that
// is bound before the other." readdir(2): reading a union returns duplicate
// names ("of particular importance in the presence of duplicate names in a
// union mount"), and only its COMPACT option keeps "the first (outermost)
// entry with a given name".
import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { Shell } from "../../lib/sh/interp.ts";
import { builtins } from "../../lib/sh/builtins/mod.ts";
import { Collector } from "../../lib/sh/io.ts";
import { serve } from "../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { fuseUnavailable, mountTree } from "../../lib/fuse/mount.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";

const dec = new TextDecoder();

Deno.test("a union lists every member's entries, duplicates included; a walk finds the first", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "ferry-union-" });
  for (const d of ["dis", "usr/glenda/dis", "n/u"]) {
    await Deno.mkdir(`${root}/${d}`, { recursive: true });
  }
  await Deno.writeTextFile(`${root}/dis/ls`, "system ls\n");
  await Deno.writeTextFile(`${root}/dis/date`, "system date\n");
  await Deno.writeTextFile(`${root}/usr/glenda/dis/ls`, "my ls\n");
  await Deno.writeTextFile(`${root}/usr/glenda/dis/hello`, "my hello\n");
  const ns = await Namespace.standard({ user: "glenda", rootDir: root });
  const out = new Collector();
  const err = new Collector();
  const sh = new Shell({ ns, builtins: builtins(), io: { stdout: out, stderr: err } });
  const run = async (src: string): Promise<string> => {
    await sh.run(src);
    assert.equal(err.text(), "");
    const s = out.text();
    out.clear();
    return s;
  };
  try {
    await t.step("bind -b: both entries of 'ls' are read, the bound one first", async () => {
      await ns.bind("/usr/glenda/dis", "/dis", { before: true });
      const ents = await ns.readDir("/dis");
      assert.deepEqual(ents.map((d) => d.name).sort(), ["date", "hello", "ls", "ls"]);
      const ls = ents.filter((d) => d.name === "ls").map((d) => d.length);
      assert.deepEqual(ls, [BigInt("my ls\n".length), BigInt("system ls\n".length)]);
      assert.equal(dec.decode(await ns.readFile("/dis/ls")), "my ls\n");
    });

    await t.step("the shell: ls lists the duplicate, ls -c and patterns name it once", async () => {
      assert.equal(await run("ls /dis"), "/dis/date\n/dis/hello\n/dis/ls\n/dis/ls\n");
      assert.equal(await run("ls -c /dis"), "/dis/date\n/dis/hello\n/dis/ls\n");
      assert.equal(await run("echo /dis/l*"), "/dis/ls\n");
      assert.equal(await run("cat /dis/ls"), "my ls\n");
    });

    await t.step("read by a client over Styx, the union still lists both", async () => {
      const ln = tcpListen("127.0.0.1", 0);
      const serving: Promise<void>[] = [];
      const accepting = (async () => {
        for await (const c of ln) serving.push(serve(c, ns));
      })();
      const port = Number(ln.addr.split("!").pop());
      const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
      try {
        const top = await client.attach("glenda");
        const names = (await client.ls(top, "/dis")).map((d) => d.name).sort();
        assert.deepEqual(names, ["date", "hello", "ls", "ls"]);
        assert.equal(dec.decode(await client.readFile(top, "/dis/ls")), "my ls\n");
        await top.close();
        // Through FUSE a name must stand for one inode: the host sees each
        // name once, and the file behind it is the one a walk finds.
        if (fuseUnavailable() === null) {
          for (const tree of [ns, new RemoteTree(client)]) {
            const mp = await Deno.makeTempDir({ prefix: "ferry-union-mnt-" });
            const m = await mountTree(tree, mp, { caller: { user: "glenda" } });
            try {
              const ls = await new Deno.Command("ls", { args: ["-1", `${mp}/dis`] }).output();
              assert.equal(dec.decode(ls.stdout), "date\nhello\nls\n");
              const cat = await new Deno.Command("cat", { args: [`${mp}/dis/ls`] }).output();
              assert.equal(dec.decode(cat.stdout), "my ls\n");
            } finally {
              await m.unmount();
              await Deno.remove(mp);
            }
          }
        }
      } finally {
        await client.close();
        ln.close();
        await accepting;
        await Promise.all(serving);
      }
    });

    await t.step("a union bound elsewhere brings its members and their duplicates", async () => {
      await run("mkdir /tmp/a /tmp/b; echo 1 > /tmp/a/f; echo 2 > /tmp/b/f; echo 3 > /tmp/b/g");
      await run("bind /tmp/a /n/u; bind -a /tmp/b /n/u");
      await run("mkdir /tmp/c; bind /n/u /tmp/c");
      assert.equal(await run("cat /tmp/c/f"), "1\n");
      assert.equal(await run("ls /tmp/c"), "/tmp/c/f\n/tmp/c/f\n/tmp/c/g\n");
    });
  } finally {
    await ns.close();
    await Deno.remove(root, { recursive: true });
  }
});
