/**
 * End to end, in separate processes with mutual TLS: a `ferry logon`
 * session whose mount's node is killed and started again. While the node
 * is down, reads fail at once naming the mount; once it is back they work
 * again with nothing done by the user, and a file opened before the
 * restart reads on to its end. The session serves its namespace (--export)
 * so that this test can read through it as a client would.
 */
import { concatBytes } from "../../lib/bytes.ts";
import assert from "node:assert/strict";
import { FerryChild } from "../../lib/child.ts";
import { freePort, makeCluster } from "../manifest/cluster.ts";
import { type RemoteFile, StyxClient } from "../../lib/styx/client.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import { OREAD } from "../../lib/styx/types.ts";

const dec = new TextDecoder();

Deno.test("a logon session's mount comes back after its node restarts", async () => {
  const c = await makeCluster();
  const home = `${c.dir}/home`;
  await Deno.mkdir(home);
  await Deno.writeTextFile(`${home}/hello`, "hello from files\n");
  const big = new Uint8Array(300_000).map((_, i) => (i * 31 + (i >> 11)) & 0xff);
  await Deno.writeFile(`${home}/big`, big);
  const nodePort = freePort();
  const exportPort = freePort();
  await c.issue("files", "node");
  await c.issue("alice", "user");
  const file = await c.write(
    `[nodes.files]\naddress = "tcp!127.0.0.1!${nodePort}"\n\n` +
      `[nodes.files.exports.home]\nkind = "host"\npath = "${home}"\naccess = ["alice"]\n\n` +
      `[users.alice]\nnamespace = """\nmount files!home /n/files\n"""\n`,
  );
  const up = () =>
    new FerryChild(["up", file, "--node", "files", "--certs", c.certs("files"), "--poll", "0"]);
  let node = up();
  let logon: FerryChild | undefined;
  let client: StyxClient | undefined;
  try {
    await node.waitFor(/node files listening on/, { stream: "stdout" });
    logon = new FerryChild([
      "logon",
      "-u",
      "alice",
      "--certs",
      c.certs("alice"),
      "-r",
      `${c.dir}/root`,
      "-A",
      "--export",
      `tcp!127.0.0.1!${exportPort}`,
      file,
    ]);
    await logon.waitFor(/serving alice's namespace on/, { stream: "stdout" });
    client = await StyxClient.connect(await tcpDial("127.0.0.1", exportPort));
    const root = await client.attach("alice");
    const hello = () => client!.readFile(root, "/n/files/hello").then((b) => dec.decode(b));
    assert.equal(await hello(), "hello from files\n");

    // A file opened before the restart; half of it read before.
    const f: RemoteFile = await client.openPath(root, "/n/files/big", OREAD);
    const got: Uint8Array[] = [];
    let off = 0;
    while (off < 150_000) {
      const d = await f.read(BigInt(off), 8192);
      got.push(d.slice());
      off += d.length;
    }

    const status = await node.stop("SIGKILL");
    assert.equal(status.signal, "SIGKILL");
    // While the node is down, reads fail at once and name the mount.
    const lost = new RegExp(
      `'/n/files' is no longer connected \\(tcp!127\\.0\\.0\\.1!${nodePort}: [^)]*\\)`,
    );
    for (let i = 0; i < 3; i++) await assert.rejects(hello(), lost);
    await assert.rejects(f.read(BigInt(off), 8192), lost);

    node = up();
    await node.waitFor(/node files listening on/, { stream: "stdout" });
    // No action by the user: the session redials by itself.
    let back: string | undefined;
    for (let i = 0; back === undefined; i++) {
      if (i > 600) throw new Error(`the mount did not come back:\n${logon.stderr}`);
      try {
        back = await hello();
      } catch (e) {
        assert.match((e as Error).message, lost);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.equal(back, "hello from files\n");
    // The file opened before reads on from where it was, to its end.
    for (;;) {
      const d = await f.read(BigInt(off), 8192);
      if (d.length === 0) break;
      got.push(d.slice());
      off += d.length;
    }
    const all = concatBytes(got, off);
    assert.deepEqual(all, big);
    await f.close();
  } finally {
    await client?.close();
    await logon?.stop("SIGTERM");
    await node.stop("SIGTERM");
    await c.cleanup();
  }
});
