/**
 * A host export must never follow a symlink out of its root, whatever a
 * local user changes on the host between a client's walk and its use of
 * the fid: the directory a fid was walked into can be swapped for a
 * symlink to somewhere else, and nothing through that fid may then touch
 * the other place. Checked over real TCP, against a server in this process
 * (the openat2 resolver: the tests run with --allow-ffi) and against a
 * `ferry listen` child without --allow-ffi (the checked-path fallback).
 */

import assert from "node:assert/strict";
import { HostTree } from "../../lib/fs/host.ts";
import type { Node } from "../../lib/fs/tree.ts";
import { parseDialString } from "../../lib/net/dial.ts";
import { serve } from "../../lib/styx/server.ts";
import { StyxClient } from "../../lib/styx/client.ts";
import { tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import { nullDir, ORDWR, OREAD, OWRITE, QTFILE } from "../../lib/styx/types.ts";

const dec = new TextDecoder();
const SECRET = "root:$6$secret-hash:19000:0:99999:7:::\n";

/** base/root is exported; base/outside holds what must stay out of reach. */
async function fixture(): Promise<{ base: string; root: string; outside: string }> {
  const base = await Deno.makeTempDir({ prefix: "ferry-beneath-" });
  const root = `${base}/root`;
  const outside = `${base}/outside`;
  await Deno.mkdir(`${root}/dir/deeper`, { recursive: true });
  await Deno.writeTextFile(`${root}/dir/shadow`, "mine\n");
  await Deno.writeTextFile(`${root}/dir/deeper/note`, "deep\n");
  await Deno.writeTextFile(`${root}/target`, "inside\n");
  await Deno.symlink("target", `${root}/lnk`);
  await Deno.symlink(outside, `${root}/out`);
  await Deno.mkdir(`${outside}/deeper`, { recursive: true });
  await Deno.writeTextFile(`${outside}/shadow`, SECRET);
  await Deno.writeTextFile(`${outside}/secret`, SECRET);
  await Deno.writeTextFile(`${outside}/deeper/note`, SECRET);
  await Deno.chmod(`${outside}/shadow`, 0o600);
  await Deno.chmod(outside, 0o700);
  return { base, root, outside };
}

/** Replace root/dir by a symlink to the outside directory, as a local user could. */
async function swap(root: string, outside: string): Promise<void> {
  await Deno.rename(`${root}/dir`, `${root}/dir.old`);
  await Deno.symlink(outside, `${root}/dir`);
}

/** Run `fn`; whatever it returns must not be the secret, and it must fail. */
async function refused(what: string, fn: () => Promise<unknown>): Promise<void> {
  let got: unknown;
  try {
    got = await fn();
  } catch {
    return;
  }
  if (got instanceof Uint8Array) got = dec.decode(got);
  assert.notEqual(got, SECRET, `${what} returned the secret`);
  assert.fail(`${what} succeeded through a swapped directory: ${JSON.stringify(got)}`);
}

async function walk(n: Node, ...names: string[]): Promise<Node> {
  const r = await n.walk(names);
  assert.ok(r.node, `walk ${names.join("/")} incomplete`);
  return r.node;
}

async function readNode(n: Node): Promise<Uint8Array> {
  const f = await n.open(OREAD);
  try {
    return await f.read(0n, 1 << 16);
  } finally {
    await f.close();
  }
}

/** Everything outside is as the fixture made it. */
async function outsideUntouched(outside: string): Promise<void> {
  const names = Array.from(Deno.readDirSync(outside), (e) => e.name).sort();
  assert.deepEqual(names, ["deeper", "secret", "shadow"]);
  assert.equal(await Deno.readTextFile(`${outside}/shadow`), SECRET);
  assert.equal(await Deno.readTextFile(`${outside}/deeper/note`), SECRET);
  assert.equal((await Deno.stat(`${outside}/shadow`)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(`${outside}`)).mode! & 0o777, 0o700);
}

/** The checks, against whatever serves `root` at `addr`. */
async function swapChecks(t: Deno.TestContext, addr: string, fx: {
  root: string;
  outside: string;
}): Promise<void> {
  const { port } = parseDialString(addr);
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
  try {
    const root = await client.attach("glenda");

    await t.step("a symlink inside the export that points outside is refused", async () => {
      await refused("walk out", () => walk(root, "out"));
      await refused("walk out/secret", () => walk(root, "out", "secret").then(readNode));
    });

    await t.step("a symlink that stays inside stats under the walked name", async () => {
      const lnk = await walk(root, "lnk");
      const st = await lnk.stat();
      assert.equal(st.name, "lnk");
      assert.equal(st.length, BigInt("inside\n".length));
      assert.equal(dec.decode(await readNode(lnk)), "inside\n");
      const listed = (await client.ls(root, "/")).find((d) => d.name === "lnk");
      assert.equal(listed?.qid.path, st.qid.path);
      await lnk.close();
    });

    await t.step("fids walked before a directory became a symlink stay inside", async () => {
      const dir = await walk(root, "dir");
      const shadow = await walk(root, "dir", "shadow");
      const deeper = await walk(root, "dir", "deeper");
      const note = await walk(root, "dir", "deeper", "note");
      await swap(fx.root, fx.outside);

      // Reads: walk on from the old fid, open the old fids.
      await refused("walk dir/secret + open", () => walk(dir, "secret").then(readNode));
      await refused("walk dir/shadow + open", () => walk(dir, "shadow").then(readNode));
      await refused("open old dir/shadow", () => readNode(shadow));
      await refused("open old dir/deeper/note", () => readNode(note));
      await refused("walk deeper/note + open", () => walk(deeper, "note").then(readNode));
      await refused("list the old dir", async () => {
        const f = await dir.open(OREAD);
        try {
          return (await f.readDir()).map((d) => d.name).join(",");
        } finally {
          await f.close();
        }
      });
      await refused("write old dir/shadow", async () => {
        const f = await shadow.open(ORDWR);
        try {
          return await f.write(0n, new TextEncoder().encode("owned"));
        } finally {
          await f.close();
        }
      });

      // Stat never describes what is outside: the walked file is gone.
      await refused("stat old dir", () => dir.stat());
      await refused("stat old shadow", () => shadow.stat());
      await refused("stat old note", () => note.stat());

      // Changes: create, wstat, remove through the old fids.
      await refused("create in the old dir", () => dir.create("planted", 0o644, OWRITE));
      await refused("mkdir in the old deeper", () => deeper.create("sub", 0x80000000 | 0o755, 0));
      await refused("truncate old shadow", () => shadow.wstat({ ...nullDir(), length: 0n }));
      await refused("chmod old shadow", () => shadow.wstat({ ...nullDir(), mode: 0o666 }));
      await refused("touch old note", () => note.wstat({ ...nullDir(), mtime: 1 }));
      await refused("rename old note", () => note.wstat({ ...nullDir(), name: "moved" }));
      await refused("chmod old deeper", () => deeper.wstat({ ...nullDir(), mode: 0o777 }));
      await refused("remove old shadow", () => shadow.remove());
      await refused("remove old note", () => note.remove());
      // The old dir fid names root/dir itself: a remove may take the link,
      // never what it points at.
      await dir.wstat({ ...nullDir(), mode: 0o777 }).catch(() => {});
      await dir.remove().catch(() => {});
      for (const n of [deeper]) await n.close();
      await outsideUntouched(fx.outside);

      // What was inside is still there, under its new name.
      const moved = await walk(root, "dir.old", "shadow");
      assert.equal(dec.decode(await readNode(moved)), "mine\n");
      assert.equal((await moved.stat()).qid.type, QTFILE);
      await moved.close();
    });
    await root.close();
  } finally {
    await client.close();
  }
}

Deno.test("host export: the openat2 resolver (this process, --allow-ffi)", async (t) => {
  const fx = await fixture();
  const tree = new HostTree(fx.root);
  await tree.ready();
  assert.equal(tree.containment, "openat2");
  const listener = tcpListen("127.0.0.1", 0);
  const sessions: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) sessions.push(serve(conn, tree));
  })().catch(() => {});
  try {
    await swapChecks(t, listener.addr, fx);
  } finally {
    listener.close();
    await accepting;
    await Promise.all(sessions);
    await Deno.remove(fx.base, { recursive: true });
  }
});

Deno.test("host export: the checked-path fallback (ferry listen without --allow-ffi)", async (t) => {
  const fx = await fixture();
  const entry = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
  const proc = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      entry,
      "listen",
      "-A",
      "tcp!127.0.0.1!0",
      fx.root,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(proc.stderr).text();
  try {
    const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`ferry listen exited: ${text}`);
      text += value;
    }
    reader.releaseLock();
    const addr = text.match(/tcp!\S+/)?.[0];
    assert.ok(addr, `no address in ${JSON.stringify(text)}`);
    await swapChecks(t, addr, fx);
  } finally {
    proc.kill("SIGTERM");
    await proc.status;
    await proc.stdout.cancel().catch(() => {});
    await stderr;
    await Deno.remove(fx.base, { recursive: true });
  }
});

Deno.test("host export: a directory swapped back and forth never leaks (openat2)", async () => {
  const fx = await fixture();
  const tree = new HostTree(fx.root);
  await tree.ready();
  assert.equal(tree.containment, "openat2");
  const listener = tcpListen("127.0.0.1", 0);
  const sessions: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) sessions.push(serve(conn, tree));
  })().catch(() => {});
  const { port } = parseDialString(listener.addr);
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
  // A local user swapping root/dir for a symlink to outside and back, as
  // fast as it can, in a process of its own.
  const flipper = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const [root, outside] = ${JSON.stringify([fx.root, fx.outside])};
      for (;;) {
        Deno.renameSync(root + "/dir", root + "/dir.real");
        Deno.symlinkSync(outside, root + "/dir");
        Deno.removeSync(root + "/dir");
        Deno.renameSync(root + "/dir.real", root + "/dir");
      }`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const root = await client.attach("glenda");
    const dir = await walk(root, "dir");
    let mine = 0;
    let refusals = 0;
    for (let i = 0; i < 20000 && (mine < 100 || refusals < 100); i++) {
      let got: string | undefined;
      try {
        got = dec.decode(await walk(dir, "shadow").then(readNode));
      } catch {
        refusals++;
        continue;
      }
      assert.notEqual(got, SECRET, `attempt ${i} read the secret`);
      assert.equal(got, "mine\n");
      mine++;
    }
    await root.close();
  } finally {
    flipper.kill("SIGKILL");
    await flipper.status;
    await client.close();
    listener.close();
    await accepting;
    await Promise.all(sessions);
    await outsideUntouched(fx.outside);
    await Deno.remove(fx.base, { recursive: true });
  }
});

Deno.test("the host tree's own tests pass on the checked-path fallback too", async () => {
  const file = new URL("./host_test.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    // Every permission host_test.ts needs, except --allow-ffi.
    args: [
      "test",
      "--allow-read",
      "--allow-write",
      "--allow-net",
      "--allow-env",
      "--allow-sys",
      "--allow-run",
      file,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = dec.decode(out.stdout) + dec.decode(out.stderr);
  assert.ok(out.success, `host_test.ts failed without --allow-ffi:\n${text}`);
});
