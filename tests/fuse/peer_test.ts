// `ferry mount --peer NODE`: a host mount of a server whose certificate is
// for NODE rather than for the address dialled. Needs root, /dev/fuse and
// --allow-ffi; skipped with a message otherwise.

import assert from "node:assert/strict";
import { fuseUnavailable } from "../../lib/fuse/mount.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { serve } from "../../lib/styx/server.ts";
import { tlsListen } from "../../lib/transport/tls.ts";
import { writeCredentials } from "../../lib/auth/ca.ts";
import { makeFixture } from "../auth/fixture.ts";

const why = fuseUnavailable();
if (why) console.error(`tests/fuse: skipped: ${why}`);

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function ferry(args: string[], env: Record<string, string>) {
  const o = await new Deno.Command("timeout", {
    args: ["-s", "KILL", "60", Deno.execPath(), "run", "--allow-all", FERRY, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
  }).output();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

Deno.test({
  name: "ferry mount --peer: the node named, not the address dialled",
  ignore: why !== null,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const f = await makeFixture("fusepeerca");
    const tmp = await Deno.makeTempDir({ prefix: "ferry-fuse-peer-" });
    const mp = `${tmp}/mnt`;
    const env = { FERRY_CERTS: `${tmp}/certs`, FERRY_NAME: "alice", USER: "alice" };
    // A certificate for 'files' only: dialled as 127.0.0.1 it must be named.
    const srv = await f.creds("files", "node");
    const alice = await f.creds("alice", "user");
    await writeCredentials(`${tmp}/certs`, "alice", alice.cert, alice.key);
    await Deno.writeTextFile(`${tmp}/certs/ca.pem`, alice.ca);
    await Deno.mkdir(`${tmp}/share`);
    await Deno.mkdir(mp);
    await Deno.writeTextFile(`${tmp}/share/hello`, "hello over TLS\n");
    const l = await tlsListen("127.0.0.1", 0, { creds: srv, onRefused: () => {} });
    const tree = new HostTree(`${tmp}/share`);
    (async () => {
      for await (const c of l) serve(c, tree).catch(() => {});
    })();
    const addr = l.addr;
    try {
      await t.step("without --peer or with the wrong one: refused, naming both", async () => {
        const none = await ferry(["mount", addr, mp], env);
        assert.equal(none.code, 1);
        assert.match(none.err, /server certificate 'files' is for 'files', not '127\.0\.0\.1'/);
        const wrong = await ferry(["mount", "--peer", "gateway", addr, mp], env);
        assert.equal(wrong.code, 1);
        assert.match(wrong.err, /server certificate 'files' is for 'files', not 'gateway'/);
      });

      await t.step("with --peer files: mounted, read, unmounted", async () => {
        const r = await ferry(["mount", "--peer", "files", addr, mp], env);
        assert.equal(r.code, 0, r.err);
        try {
          const cat = await new Deno.Command("timeout", {
            args: ["-s", "KILL", "30", "cat", `${mp}/hello`],
            stdout: "piped",
          }).output();
          assert.equal(dec.decode(cat.stdout), "hello over TLS\n");
        } finally {
          const u = await ferry(["unmount", mp], env);
          assert.equal(u.code, 0, u.err);
        }
      });
    } finally {
      l.close();
      await f.cleanup();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
