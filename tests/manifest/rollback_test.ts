import assert from "node:assert/strict";
import { FerryChild } from "../../lib/child.ts";
import { freePort, makeCluster } from "./cluster.ts";

function manifest(dir: string, port: number, bob: boolean): string {
  return `[nodes.files]
address = "tcp!127.0.0.1!${port}"

[nodes.files.exports.home]
kind = "host"
path = "${dir}/home"
access = [${bob ? '"alice", "bob"' : '"alice"'}]

[users.alice]
namespace = """
mount -c files!home /n/home
"""

[users.bob]
${
    bob
      ? `namespace = """
mount -c files!home /n/home
"""`
      : ""
  }
`;
}

Deno.test("an older signed manifest put back is refused by ferry up and ferry logon", async (t) => {
  const c = await makeCluster();
  const procs: FerryChild[] = [];
  try {
    await Deno.mkdir(`${c.dir}/home`);
    await Deno.writeTextFile(`${c.dir}/home/hello.txt`, "hello\n");
    await c.issue("files", "node");
    await c.issue("alice", "user");
    await c.issue("bob", "user");
    const port = freePort();
    const file = await c.write(manifest(c.dir, port, true));
    // Keep the first signed copy, as someone with write access to the file could.
    await Deno.copyFile(file, `${c.dir}/old.toml`);
    await Deno.copyFile(`${file}.sig`, `${c.dir}/old.toml.sig`);
    assert.match(await Deno.readTextFile(`${file}.sig`), /\nserial 1\n/);

    const up = (): FerryChild => {
      const p = new FerryChild([
        "up",
        file,
        "--node",
        "files",
        "--certs",
        c.certs("files"),
        "--poll",
        "50",
      ]);
      procs.push(p);
      return p;
    };
    const logon = async (user: string, cmd: string) => {
      const p = new FerryChild([
        "logon",
        "-u",
        user,
        "--certs",
        c.certs(user),
        "-r",
        `${c.dir}/root-${user}`,
        "-q",
        file,
        "-c",
        cmd,
      ]);
      return await p.result();
    };

    const node = up();
    await node.waitFor(/up: node 'files' serving/, { stream: "stderr", ms: 30_000 });

    await t.step("a newer manifest, signed, takes bob's access away", async () => {
      const from = node.stderr.length;
      await c.write(manifest(c.dir, port, false));
      assert.match(await Deno.readTextFile(`${file}.sig`), /\nserial 2\n/);
      await node.waitFor(/up: reloaded \(the manifest changed\): manifest serial 2/, {
        stream: "stderr",
        from: from,
        ms: 30_000,
      });
      const a = await logon("alice", "cat /n/home/hello.txt");
      assert.equal(a.out, "hello\n", a.err);
    });

    await t.step("the older signed copy put back: the node keeps serial 2", async () => {
      const from = node.stderr.length;
      await Deno.copyFile(`${c.dir}/old.toml.sig`, `${file}.sig`);
      await Deno.copyFile(`${c.dir}/old.toml`, file);
      const said = await node.waitFor(/its serial 1 is lower than serial 2[^\n]*/, {
        stream: "stderr",
        from: from,
        ms: 30_000,
      });
      assert.match(said, /already applied here/);
      assert.doesNotMatch(node.stderr.slice(from), /manifest serial 1/);
      // bob's own logon takes the old manifest (he never applied a newer one), but
      // the node still answers with serial 2's access list.
      const b = await logon("bob", "cat /n/home/hello.txt");
      assert.doesNotMatch(b.out, /hello/);
      assert.match(b.err, /permission denied/);
    });

    await t.step("logon refuses it once it has applied a newer one", async () => {
      const a = await logon("alice", "cat /n/home/hello.txt");
      assert.notEqual(a.code, 0);
      assert.doesNotMatch(a.out, /hello/);
      assert.match(
        a.err,
        /Refusing manifest '.*cluster\.toml': its serial 1 is lower than serial 2/,
      );
    });

    await t.step("a restarted node still refuses it", async () => {
      await node.stop();
      const again = up();
      const r = await again.result();
      assert.notEqual(r.code, 0);
      assert.match(r.err, /its serial 1 is lower than serial 2/);
    });

    await t.step("the current manifest, signed again, is taken", async () => {
      await c.write(manifest(c.dir, port, false));
      assert.match(await Deno.readTextFile(`${file}.sig`), /\nserial 3\n/);
      const n = up();
      await n.waitFor(/up: node 'files' serving/, { stream: "stderr", ms: 30_000 });
      const a = await logon("alice", "cat /n/home/hello.txt");
      assert.equal(a.out, "hello\n", a.err);
      assert.match(await Deno.readTextFile(`${c.certs("files")}/manifest.applied`), / 3\n$/);
    });
  } finally {
    for (const p of procs) await p.stop();
    await c.cleanup();
  }
});
