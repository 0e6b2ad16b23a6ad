import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { harness } from "./harness.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import { OREAD } from "../../lib/styx/types.ts";
import { freePort } from "../manifest/cluster.ts";

async function until(f: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !f(); i++) await new Promise((r) => setTimeout(r, 10));
}

Deno.test("listen and export serve part of the shell's namespace over TCP", async (t) => {
  const tree = new MemTree({ owner: "glenda" });
  await tree.writeFile("/usr/glenda/lib/profile", "profile\n");
  await tree.writeFile("/secret", "not exported\n");
  const nsA = new Namespace(tree, { caller: { user: "glenda" } });
  const a = harness({ ns: nsA, user: "glenda" });
  const nsB = new Namespace(new MemTree({ owner: "glenda" }), { caller: { user: "glenda" } });
  const b = harness({ ns: nsB, user: "glenda" });
  const port = freePort();
  const clients: StyxClient[] = [];
  try {
    await t.step("listen announces, returns at once and shows in ps", async () => {
      const [out, err, status] = await a.run(
        `listen -A 'tcp!127.0.0.1!${port}' { export /usr/glenda & }`,
      );
      assert.deepEqual([out, status], ["", ""]);
      // The -A warning is printed once per process.
      assert.match(err, /^(listen: warning: -A given: .*\n)?$/);
      const [ps] = await a.run("ps");
      assert.match(
        ps,
        new RegExp(`^\\s+\\d+ glenda\\s+running\\s+listen tcp!127.0.0.1!${port}\\n$`),
      );
    });

    await t.step("a client sees the exported directory and cannot walk out of it", async () => {
      const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
      clients.push(client);
      const remote = new RemoteTree(client);
      const root = await remote.attach({ user: "glenda" }, "");
      const up = await root.walk(["..", ".."]);
      assert.equal(up.qids.length, 2);
      assert.equal(up.qids[1]!.path, root.qid.path);
      await up.node?.close();
      const out = await root.walk(["..", "secret"]);
      assert.equal(out.node, undefined, "'..' at the exported root must not reach /secret");
      const w = await root.walk(["lib", "profile"]);
      assert.ok(w.node);
      const f = await w.node.open(OREAD);
      assert.equal(new TextDecoder().decode(await f.read(0n, 100)), "profile\n");
      await f.close();
      await w.node.close();
      await root.close();

      // Mounted in another shell's namespace, it works like a local directory.
      await nsB.mount(remote, "/", { after: true, create: true, source: `tcp!127.0.0.1!${port}` });
      assert.deepEqual(await b.run("ls /lib; echo hi > /new; cat /new"), [
        "/lib/profile\nhi\n",
        "",
        "",
      ]);
      assert.equal(new TextDecoder().decode(await tree.readFile("/usr/glenda/new")), "hi\n");
    });

    await t.step(
      "export outside listen, and of a missing path, fail with clear errors",
      async () => {
        assert.deepEqual(await a.run("export /usr"), [
          "",
          "export: no connection to serve: use export inside a listen block\n",
          "no connection to serve: use export inside a listen block",
        ]);
        const port2 = freePort();
        await a.run(`listen -A 'tcp!127.0.0.1!${port2}' {export /nonexistent}`);
        const conn = await tcpDial("127.0.0.1", port2);
        assert.equal(await conn.read(), null, "the connection is hung up");
        await until(() => a.err.text() !== "");
        assert.equal(a.err.text(), "export: /nonexistent: file does not exist\n");
        a.err.clear();
      },
    );

    await t.step("listening on a port in use fails, naming it", async () => {
      const [, err, status] = await a.run(`listen -A 'tcp!127.0.0.1!${port}' {export /}`);
      assert.match(err, new RegExp(`^listen: .*tcp!127.0.0.1!${port}`));
      assert.notEqual(status, "");
    });

    await t.step("kill stops the listener", async () => {
      for (const j of [...a.sh.jobs.jobs.values()]) {
        if (j.cmd.startsWith("listen")) await a.run(`kill ${j.pid}`);
      }
      await until(() => [...a.sh.jobs.jobs.values()].every((j) => !j.cmd.startsWith("listen")));
      await assert.rejects(tcpDial("127.0.0.1", port));
    });
  } finally {
    a.sh.jobs.killAll();
    for (const c of clients) await c.close();
    await a.sh.jobs.waitAll();
    await nsB.close();
    await nsA.close();
  }
});
