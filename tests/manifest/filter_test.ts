import assert from "node:assert/strict";
import { FerryNode } from "../../lib/manifest/node.ts";
import { logon } from "../../lib/manifest/apply.ts";
import { loadChecked } from "../../lib/manifest/check.ts";
import { ferryArgv } from "../../lib/self.ts";
import { DMDIR, nullDir, OREAD } from "../../lib/styx/types.ts";
import { freePort, makeCluster } from "./cluster.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

function manifest(dir: string, port: number): string {
  return `[nodes.files]
address = "tcp!127.0.0.1!${port}"

[nodes.files.exports.home]
kind = "host"
path = "${dir}/home"
filter = ["-private/*", "-*.key", "-vault/*", "-a/b/secret"]
access = ["alice"]

[users.alice]
namespace = """
mount -c files!home /n/home
"""
`;
}

function rename(name: string) {
  const d = nullDir();
  d.name = name;
  return d;
}

async function exists(p: string): Promise<boolean> {
  return await Deno.lstat(p).then(() => true, () => false);
}

Deno.test("a filter holds whatever a path becomes", async (t) => {
  const c = await makeCluster();
  const logs: string[] = [];
  let node: FerryNode | undefined;
  try {
    const home = `${c.dir}/home`;
    await Deno.mkdir(`${home}/private`, { recursive: true });
    await Deno.mkdir(`${home}/notes`);
    await Deno.mkdir(`${home}/a/b`, { recursive: true });
    await Deno.writeTextFile(`${home}/private/diary`, "dear diary\n");
    await Deno.writeTextFile(`${home}/notes/todo`, "share the phone\n");
    await Deno.writeTextFile(`${home}/a/b/secret`, "the combination\n");
    await c.issue("files", "node");
    await c.issue("alice", "user");
    const file = await c.write(manifest(c.dir, freePort()));
    node = await FerryNode.start({
      file,
      node: "files",
      certDir: c.certs("files"),
      pollMs: 0,
      log: (l) => logs.push(l),
    });

    await t.step("mv of a directory out of a filter is refused, naming the filter", async () => {
      const [exe, ...pre] = ferryArgv();
      const o = await new Deno.Command(exe!, {
        args: [
          ...pre,
          "logon",
          "-u",
          "alice",
          "--certs",
          c.certs("alice"),
          "-r",
          `${c.dir}/root-alice`,
          "-q",
          file,
          "-c",
          "mv /n/home/private /n/home/opened; cat /n/home/opened/diary",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = dec.decode(o.stdout), err = dec.decode(o.stderr);
      assert.doesNotMatch(out, /dear diary/);
      assert.match(
        err,
        /permission denied: cannot rename 'private' to 'opened': filter '-private\/\*' covers what 'private' holds/,
      );
      assert.ok(await exists(`${home}/private/diary`), "the directory stays where it was");
      assert.ok(!(await exists(`${home}/opened`)));
    });

    const m = await loadChecked(file);
    const a = await logon(m, "alice", { certDir: c.certs("alice"), rootDir: `${c.dir}/root-a` });
    try {
      const ns = a.ns;
      await t.step("a directory is not moved under a filter either", async () => {
        await assert.rejects(
          ns.wstat("/n/home/notes", rename("vault")),
          /cannot rename 'notes' to 'vault': filter '-vault\/\*' covers what 'vault' would hold/,
        );
        assert.ok(await exists(`${home}/notes/todo`));
        assert.ok(!(await exists(`${home}/vault`)));
      });

      await t.step("a pattern deeper down still covers the directories above", async () => {
        await assert.rejects(ns.wstat("/n/home/a", rename("c")), /filter '-a\/b\/secret'/);
        await assert.rejects(ns.wstat("/n/home/a/b", rename("d")), /filter '-a\/b\/secret'/);
        await assert.rejects(ns.readFile("/n/home/a/b/secret"), /file does not exist/);
        assert.ok(await exists(`${home}/a/b/secret`));
      });

      await t.step("a file is not renamed to a hidden name", async () => {
        await assert.rejects(
          ns.wstat("/n/home/notes/todo", rename("todo.key")),
          /filter '-\*\.key' covers 'notes\/todo\.key'/,
        );
      });

      await t.step("renames the filter does not care about still work", async () => {
        await ns.wstat("/n/home/notes/todo", rename("done"));
        await ns.wstat("/n/home/notes", rename("jotted"));
        assert.equal(await Deno.readTextFile(`${home}/jotted/done`), "share the phone\n");
        await ns.wstat("/n/home/jotted", rename("notes"));
      });

      await t.step("nothing is created inside a filtered name", async () => {
        await assert.rejects(ns.writeFile("/n/home/private/planted", enc.encode("x")));
        await (await ns.create("/n/home/vault", DMDIR | 0o755, OREAD)).close();
        await assert.rejects(ns.writeFile("/n/home/vault/planted", enc.encode("x")));
        assert.ok(!(await exists(`${home}/private/planted`)));
        assert.ok(!(await exists(`${home}/vault/planted`)));
      });
    } finally {
      await a.close();
    }

    await t.step("a walk through '..' is checked like any path", async () => {
      const { dialStyx } = await import("../../lib/net/connect.ts");
      const d = await dialStyx(node!.address, {
        insecure: false,
        certDir: c.certs("alice"),
        user: "alice",
      });
      try {
        const root = await d.tree.attach({ user: "alice" }, "home");
        for (
          const path of [
            ["private", "..", "private", "diary"],
            ["notes", "..", "private", "diary"],
            ["..", "private", "diary"],
          ]
        ) {
          const w = await root.walk(path).catch(() => ({ node: undefined }));
          assert.equal(w.node, undefined, path.join("/"));
        }
        const ok = await root.walk(["notes", "..", "notes", "done"]);
        assert.ok(ok.node);
        await ok.node.close();
        await root.close();
      } finally {
        d.close();
      }
    });

    await t.step("a symlink on the host does not lead past the filter", async () => {
      // Made on the host, inside the export: each leads to a hidden place.
      await Deno.symlink("private/diary", `${home}/diary-link`);
      await Deno.symlink("private", `${home}/private-link`);
      await Deno.symlink("../a/b/secret", `${home}/notes/secret-link`);
      await Deno.writeTextFile(`${home}/id.key`, "the key\n");
      await Deno.symlink("id.key", `${home}/id-link`);
      await Deno.symlink("notes", `${home}/notes-link`);
      const a = await logon(m, "alice", { certDir: c.certs("alice"), rootDir: `${c.dir}/root-s` });
      try {
        for (
          const p of [
            "/n/home/diary-link",
            "/n/home/private-link/diary",
            "/n/home/notes/secret-link",
            "/n/home/id-link",
          ]
        ) {
          await assert.rejects(a.ns.readFile(p), /file does not exist/, p);
        }
        await assert.rejects(a.ns.writeFile("/n/home/private-link/planted", enc.encode("x")));
        assert.ok(!(await exists(`${home}/private/planted`)));
        // A symlink to a place the filter leaves alone still works.
        assert.equal(
          dec.decode(await a.ns.readFile("/n/home/notes-link/done")),
          "share the phone\n",
        );
      } finally {
        await a.close();
      }
    });
  } finally {
    await node?.close();
    await c.cleanup();
  }
});
