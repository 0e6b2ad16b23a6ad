/**
 * `ferry up` and `ferry down` as a user runs them: a node name the manifest
 * lacks, and stopping a node that is slow to exit or will not exit at all.
 */
import assert from "node:assert/strict";
import { ferryArgv } from "../../lib/self.ts";
import { freePort, makeCluster } from "./cluster.ts";

const dec = new TextDecoder();

async function ferry(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const [exe, ...pre] = ferryArgv();
  const o = await new Deno.Command(exe!, {
    args: [...pre, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

/**
 * True once `pid` has exited (a zombie waiting for its parent counts as
 * gone). Asks ps(1): the test task's permissions do not cover /proc.
 */
function gone(pid: number): boolean {
  const r = new Deno.Command("ps", {
    args: ["-o", "stat=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const stat = dec.decode(r.stdout).trim();
  return !r.success || stat === "" || stat.startsWith("Z");
}

Deno.test("ferry up --node names a node the manifest lacks, and lists those it has", async () => {
  const c = await makeCluster();
  try {
    const file = await c.write(
      `[nodes.files]\naddress = "tcp!127.0.0.1!${freePort()}"\n` +
        `[nodes.gateway]\naddress = "tcp!127.0.0.1!${freePort()}"\n`,
    );
    const r = await ferry(["up", file, "--node", "nosuch", "--certs", c.certs("nosuch")]);
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /node 'nosuch' is not in the manifest '.*cluster\.toml' \(its nodes: files, gateway\)/,
    );
  } finally {
    await c.cleanup();
  }
});

Deno.test("ferry down returns once the node has exited, and says when it had to SIGKILL", async (t) => {
  const dir = await Deno.makeTempDir();
  // Stand-ins for `ferry up` processes: one takes a while to finish after
  // SIGTERM, one ignores it.
  const start = (script: string, name: string) => {
    const p = new Deno.Command("/bin/sh", { args: ["-c", script], stdin: "null" }).spawn();
    Deno.writeTextFileSync(`${dir}/${name}.pid`, `${p.pid}\n`);
    return p;
  };
  try {
    await t.step("a node slow to exit is waited for", async () => {
      const p = start(
        "trap 'sleep 0.5; exit 0' TERM; while :; do sleep 0.05; done",
        "slow",
      );
      const r = await ferry(["down", "--node", "slow", "--run", dir]);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /node 'slow' stopped/);
      assert.ok(gone(p.pid), "ferry down returned while the node was still running");
      assert.equal((await p.status).code, 0);
    });
    await t.step("a node that ignores SIGTERM is killed, and down says so", async () => {
      const p = start("trap '' TERM; while :; do sleep 0.05; done", "stuck");
      const r = await ferry(["down", "--node", "stuck", "--run", dir, "--wait", "0.3"]);
      assert.equal(r.code, 1);
      assert.match(
        r.err,
        /node 'stuck' \(pid \d+\) did not exit within 0\.3 s of SIGTERM: killed it with SIGKILL/,
      );
      assert.ok(gone(p.pid));
      assert.equal((await p.status).signal, "SIGKILL");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
