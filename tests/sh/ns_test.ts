// ns(1) prints the namespace as the commands that build it: run in a fresh
// shell, its output builds the same namespace.
import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { Shell } from "../../lib/sh/interp.ts";
import { builtins } from "../../lib/sh/builtins/mod.ts";
import { Collector } from "../../lib/sh/io.ts";
import { serve } from "../../lib/styx/server.ts";
import { tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";

function shell(ns: Namespace) {
  const out = new Collector();
  const err = new Collector();
  const sh = new Shell({ ns, builtins: builtins(), io: { stdout: out, stderr: err } });
  return {
    sh,
    async run(src: string): Promise<[string, string, string]> {
      const status = await sh.run(src);
      const r: [string, string, string] = [out.text(), err.text(), status];
      out.clear();
      err.clear();
      return r;
    },
  };
}

const WARNING = /^(mount: warning: -A given: .*\n)?$/;

Deno.test("ns output replayed in a fresh shell rebuilds the same namespace", async () => {
  const rootA = await Deno.makeTempDir({ prefix: "ferry-ns-a-" });
  const rootB = await Deno.makeTempDir({ prefix: "ferry-ns-b-" });
  const host = await Deno.makeTempDir({ prefix: "ferry-ns-host-" });
  // The server: a tree whose attach names select a subtree.
  const served = new MemTree({ owner: "glenda" });
  await served.writeFile("/top", "at the root\n");
  await served.writeFile("/sub/inside", "in the subtree\n");
  const exported = new Namespace(served, { caller: { user: "glenda" } });
  const ln = tcpListen("127.0.0.1", 0);
  const conns: Conn[] = [];
  const accepting = (async () => {
    for await (const c of ln) {
      conns.push(c);
      serve(c, exported).catch(() => {});
    }
  })();
  const addr = `tcp!127.0.0.1!${ln.addr.split("!").pop()}`;
  await Deno.writeTextFile(`${host}/h`, "host file\n");
  const nsA = await Namespace.standard({ user: "glenda", rootDir: rootA });
  const nsB = await Namespace.standard({ user: "glenda", rootDir: rootB });
  const a = shell(nsA);
  const b = shell(nsB);
  try {
    const setup = "mkdir -p /n/r /n/s /tmp/u1 /tmp/u2 /tmp/un /tmp/h";
    await a.run(setup);
    await b.run(setup);
    for (
      const line of [
        `bind '#U*${host}' /tmp/h`,
        "bind /tmp/u1 /tmp/un",
        "bind -ac /tmp/u2 /tmp/un",
        `mount -A '${addr}' /n/r`,
        `mount -A -bc '${addr}' /n/s /sub`,
      ]
    ) {
      const [, err, status] = await a.run(line);
      assert.match(err, WARNING, line);
      assert.equal(status, "", line);
    }
    const [nsA] = await a.run("ns");
    assert.equal(
      nsA,
      [
        `bind '#U*${host}' /tmp/h`,
        "bind /tmp/u1 /tmp/un",
        "bind -ac /tmp/u2 /tmp/un",
        `mount -A ${addr} /n/r`,
        `mount -bc -A ${addr} /n/s /sub`,
        "",
      ].join("\n"),
    );

    // Replayed as written, in a shell that has none of it.
    const [, err, status] = await b.run(nsA);
    assert.match(err, WARNING);
    assert.equal(status, "");
    const [nsB] = await b.run("ns");
    assert.equal(nsB, nsA);
    // The attach name came along: /n/s shows the subtree, /n/r the root.
    assert.deepEqual(await b.run("cat /n/s/inside /n/r/top /tmp/h/h"), [
      "in the subtree\nat the root\nhost file\n",
      "",
      "",
    ]);
  } finally {
    await nsA.close();
    await nsB.close();
    for (const d of [...a.sh.dialed, ...b.sh.dialed]) d.close();
    ln.close();
    for (const c of conns) c.close();
    await accepting;
    for (const d of [rootA, rootB, host]) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("ns prints the node a mount named with --peer", async () => {
  const ns = new Namespace(new MemTree({ owner: "glenda" }), { caller: { user: "glenda" } });
  const sh = shell(ns);
  try {
    await sh.run("mkdir /n; mkdir /n/c");
    await ns.mount(new MemTree({ owner: "glenda" }), "/n/c", {
      source: "tcp!remote!8001",
      peer: "client",
      aname: "it's",
    });
    assert.deepEqual(await sh.run("ns"), [
      "mount --peer client tcp!remote!8001 /n/c 'it''s'\n",
      "",
      "",
    ]);
  } finally {
    await ns.close();
  }
});
