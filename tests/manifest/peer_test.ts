/**
 * `mount --peer NODE ADDR old [spec]` in a user's namespace: a dial string
 * answered by the certificate of NODE, as with the shell's mount.
 */
import assert from "node:assert/strict";
import { FerryNode } from "../../lib/manifest/node.ts";
import { applyNamespace } from "../../lib/manifest/apply.ts";
import { loadChecked } from "../../lib/manifest/check.ts";
import { parseNamespace } from "../../lib/manifest/nsfile.ts";
import type { Problem } from "../../lib/manifest/schema.ts";
import { freePort, makeCluster } from "./cluster.ts";
import { standardDevices } from "../../cmd/devices.ts";

const dec = new TextDecoder();
const where = { file: "ns", line: 1, key: "users.alice.namespace" };

Deno.test("namespace files: mount --peer is parsed and checked", () => {
  const problems: Problem[] = [];
  const es = parseNamespace(
    [
      "mount -c --peer files 'tcp!10.0.0.2!8001' /n/c",
      "mount --peer=files 'tcp!10.0.0.2!8001' /n/d",
      "bind --peer files /a /b",
      "mount --peer",
      "mount --frob x 'tcp!10.0.0.2!8001' /n/f",
    ].join("\n"),
    where,
    problems,
  );
  assert.deepEqual(es.map((e) => [e.peer, e.create, e.args]), [
    ["files", true, ["tcp!10.0.0.2!8001", "/n/c"]],
    ["files", false, ["tcp!10.0.0.2!8001", "/n/d"]],
  ]);
  assert.deepEqual(problems.map((p) => [p.line, p.message]), [
    [3, "Option '--peer' is only for 'mount', in 'bind --peer files /a /b'"],
    [4, "Option '--peer' needs a node name in 'mount --peer'"],
    [4, "'mount' takes 2 to 3 arguments after its flags, got 0 in 'mount --peer'"],
    [5, "Unknown option '--frob' for 'mount' in 'mount --frob x 'tcp!10.0.0.2!8001' /n/f'"],
  ]);
});

Deno.test("namespace files: mount --peer dials an address as the named node", async () => {
  const c = await makeCluster();
  let node: FerryNode | undefined;
  try {
    await Deno.mkdir(`${c.dir}/home`);
    await Deno.writeTextFile(`${c.dir}/home/hello.txt`, "hello\n");
    await c.issue("files", "node");
    await c.issue("alice", "user");
    const port = freePort();
    const file = await c.write(`[nodes.files]
address = "tcp!127.0.0.1!${port}"

[nodes.files.exports.home]
kind = "host"
path = "${c.dir}/home"
access = ["alice"]

[users.alice]
namespace = ""
`);
    node = await FerryNode.start({ file, node: "files", certDir: c.certs("files"), log: () => {} });
    const m = await loadChecked(file);
    const problems: Problem[] = [];
    const entries = parseNamespace(
      [
        `mount --peer files 'tcp!127.0.0.1!${port}' /n/right home`,
        `mount --peer gw 'tcp!127.0.0.1!${port}' /n/wrong home`,
        `mount --peer gw files!home /n/node`,
      ].join("\n"),
      where,
      problems,
    );
    assert.deepEqual(problems, []);
    const a = await applyNamespace(m, entries, {
      user: "alice",
      certDir: c.certs("alice"),
      rootDir: `${c.dir}/root-alice`,
      // An address is dialled through the namespace's /net.
      devices: standardDevices(),
    });
    try {
      assert.deepEqual(a.report.map((r) => r.ok), [true, false, false]);
      assert.equal(a.report[0]!.line, `mount --peer files tcp!127.0.0.1!${port} /n/right home`);
      assert.equal(dec.decode(await a.ns.readFile("/n/right/hello.txt")), "hello\n");
      // `ns` shows the mount as it was made, so that replaying it checks the same node.
      assert.equal(a.ns.mounts().find((m) => m.target === "/n/right")?.peer, "files");
      // The wrong node is refused, naming the one expected and the one that answered.
      assert.match(
        a.report[1]!.error!,
        /server certificate 'files' is for 'files', '127\.0\.0\.1', not 'gw'/,
      );
      assert.match(
        a.report[2]!.error!,
        /'files!home' is node 'files' of this manifest: --peer 'gw'/,
      );
    } finally {
      await a.close();
    }
  } finally {
    await node?.close();
    await c.cleanup();
  }
});

Deno.test("a node that accepts but never answers is given up after timeoutMs", async () => {
  const c = await makeCluster();
  // Takes connections and says nothing: no TLS handshake ever completes.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  try {
    await c.issue("alice", "user");
    const port = (silent.addr as Deno.NetAddr).port;
    const file = await c.write(`[nodes.files]
address = "tcp!127.0.0.1!${port}"

[nodes.files.exports.home]
kind = "host"
path = "${c.dir}"
access = ["alice"]

[users.alice]
namespace = ""
`);
    const m = await loadChecked(file);
    const problems: Problem[] = [];
    const entries = parseNamespace("mount files!home /n/home", where, problems);
    assert.deepEqual(problems, []);
    const a = await applyNamespace(m, entries, {
      user: "alice",
      certDir: c.certs("alice"),
      rootDir: `${c.dir}/root-alice`,
      timeoutMs: 300,
    });
    try {
      assert.deepEqual(a.report.map((r) => r.ok), [false]);
      assert.match(
        a.report[0]!.error!,
        new RegExp(`cannot reach node 'files' at 'tcp!127\\.0\\.0\\.1!${port}': .*timed out`),
      );
    } finally {
      await a.close();
    }
  } finally {
    silent.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
    await c.cleanup();
  }
});
