// ns(1) prints the namespace as the commands that build it: run in a fresh
// shell, its output builds the same namespace.
import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { harness } from "./harness.ts";
import { serve } from "../../lib/styx/server.ts";
import { tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { tlsListen } from "../../lib/transport/tls.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { writeCredentials } from "../../lib/auth/ca.ts";
import { makeFixture } from "../auth/fixture.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();

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
  const a = harness({ ns: nsA });
  const b = harness({ ns: nsB });
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

Deno.test("ns keeps --peer: a TLS mount through a name replays in a fresh ferry sh", async () => {
  const f = await makeFixture("nspeerca");
  const tmp = await Deno.makeTempDir({ prefix: "ferry-ns-peer-" });
  const env = { FERRY_CERTS: `${tmp}/certs`, FERRY_NAME: "alice", USER: "alice" };
  // The server's certificate is for 'files': dialled as 127.0.0.1 it must be named.
  const srv = await f.creds("files", "node");
  const alice = await f.creds("alice", "user");
  await writeCredentials(`${tmp}/certs`, "alice", alice.cert, alice.key);
  await Deno.writeTextFile(`${tmp}/certs/ca.pem`, alice.ca);
  await Deno.mkdir(`${tmp}/share/sub`, { recursive: true });
  await Deno.writeTextFile(`${tmp}/share/sub/hello`, "hello over TLS\n");
  const l = await tlsListen("127.0.0.1", 0, { creds: srv, onRefused: () => {} });
  const exported = new Namespace(new HostTree(`${tmp}/share`), { caller: { user: "alice" } });
  const conns: Conn[] = [];
  const accepting = (async () => {
    for await (const c of l) {
      conns.push(c);
      serve(c, exported).catch(() => {});
    }
  })();
  const sh = async (root: string, command: string) => {
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${REPO}cmd/ferry.ts`, "sh", "-r", root, "-c", command],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
  };
  try {
    const a = await sh(`${tmp}/a`, `mkdir -p /n/f; mount --peer files ${l.addr} /n/f /sub; ns`);
    assert.equal(a.err, "");
    assert.equal(
      a.out,
      `bind '#I' /net\nbind '#p' /prog\nmount --peer files ${l.addr} /n/f /sub\n`,
    );
    const b = await sh(`${tmp}/b`, `mkdir -p /n/f\n${a.out}ns; cat /n/f/hello`);
    assert.equal(b.err, "");
    assert.equal(b.out, a.out + "hello over TLS\n");
  } finally {
    l.close();
    for (const c of conns) c.close();
    await accepting;
    await exported.close();
    await f.cleanup();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});
