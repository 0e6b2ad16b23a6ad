/**
 * `ferry listen` serving on several threads, each with its own event loop
 * taking some of the connections: many clients at once get the right
 * bytes, and every guarantee a single loop gives holds whichever thread a
 * connection lands on: the one connection cap, the verified identity at
 * attach, the allow list, and revocation ending open sessions.
 *
 * Which thread takes a connection is the kernel's choice; with a dozen or
 * more connections every test here reaches both threads but for odds of
 * about one in a thousand, and none depends on where each one lands.
 */

import assert from "node:assert/strict";
import { writeCredentials } from "../../lib/auth/ca.ts";
import type { Credentials } from "../../lib/auth/link.ts";
import { dialConn } from "../../lib/net/connect.ts";
import { ferryArgv } from "../../lib/self.ts";
import { encode } from "../../lib/styx/codec.ts";
import { decode } from "../../lib/styx/codec.ts";
import { StyxClient } from "../../lib/styx/client.ts";
import { FrameReader } from "../../lib/styx/frame.ts";
import { type Msg, MsgType, NOTAG, OREAD } from "../../lib/styx/types.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { makeFixture } from "../auth/fixture.ts";
import { pattern } from "../fixture.ts";

const dec = new TextDecoder();

/** `ferry listen ARGS… tcp!127.0.0.1!0 DIR` until `fn` is done with its address; its stderr. */
async function withListen(
  args: string[],
  dir: string,
  fn: (addr: string) => Promise<void>,
): Promise<string> {
  const [exe, ...pre] = ferryArgv();
  const child = new Deno.Command(exe!, {
    args: [...pre, "listen", ...args, "tcp!127.0.0.1!0", dir],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  try {
    const out = child.stdout.getReader();
    let text = "";
    while (!/listening on \S+!\d+/.test(text)) {
      const { value, done } = await out.read();
      if (done) throw new Error(`ferry listen ended: ${text} ${await stderr}`);
      text += dec.decode(value);
    }
    out.releaseLock();
    await fn(text.match(/listening on (\S+!\d+)/)![1]!);
  } finally {
    child.kill("SIGTERM");
    await child.stdout.cancel().catch(() => {});
    await child.status;
  }
  return await stderr;
}

/** Everything in `path` read through `client`, a read at a time. */
async function readFile(client: StyxClient, path: string): Promise<Uint8Array> {
  const root = await client.attach("glenda");
  const f = await client.openPath(root, path, OREAD);
  const parts: Uint8Array[] = [];
  let off = 0n;
  for (;;) {
    const b = await f.read(off, 64 * 1024);
    if (b.length === 0) break;
    parts.push(b.slice());
    off += BigInt(b.length);
  }
  await f.close();
  const out = new Uint8Array(Number(off));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("listen threads: 64 clients at once each read their own file and get its bytes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-threads-" });
  try {
    const size = 256 * 1024 + 77;
    for (let i = 0; i < 64; i++) await Deno.writeFile(`${dir}/f${i}`, pattern(size, i + 1));
    await withListen(["-A", "--threads", "2"], dir, async (addr) => {
      const clients = await Promise.all(
        Array.from({ length: 64 }, async () => {
          const conn = await dialConn(addr, { insecure: true });
          return await StyxClient.connect(conn, { msize: 8192 + 24 });
        }),
      );
      try {
        const got = await Promise.all(clients.map((c, i) => readFile(c, `f${i}`)));
        for (let i = 0; i < 64; i++) {
          assert.deepEqual(got[i], pattern(size, i + 1), `f${i} came back different`);
        }
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Dial and send Tversion: the reply, and the connection. */
async function version(addr: string): Promise<{ conn: Conn; reply: Msg | null }> {
  const port = Number(addr.split("!")[2]);
  const conn = await tcpDial("127.0.0.1", port);
  await conn.write(encode({ type: MsgType.Tversion, tag: NOTAG, msize: 8192, version: "9P2000" }));
  const f = await new FrameReader(conn, 8192).next();
  return { conn, reply: f === null ? null : decode(f) };
}

Deno.test("listen threads: --max-conns caps the connections of all threads together", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-threads-" });
  const conns: Conn[] = [];
  try {
    await withListen(["-A", "--threads", "2", "--max-conns", "4"], dir, async (addr) => {
      let served = 0;
      let refused = 0;
      for (let i = 0; i < 16; i++) {
        const { conn, reply } = await version(addr);
        conns.push(conn);
        if (reply?.type === MsgType.Rversion) served++;
        else {
          assert.ok(reply?.type === MsgType.Rerror, `connection ${i + 1} got ${reply?.type}`);
          assert.match(reply.ename, /at most 4 at once/);
          refused++;
        }
      }
      assert.deepEqual({ served, refused }, { served: 4, refused: 12 });
    });
  } finally {
    for (const c of conns) c.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("listen threads: identity, allow list and revocation hold on every thread", async () => {
  const fx = await makeFixture();
  const dir = await Deno.makeTempDir({ prefix: "ferry-threads-" });
  const node = `${fx.dir}/node`;
  const open: StyxClient[] = [];
  try {
    // The served files: one only root may read, one anybody may.
    await Deno.chmod(dir, 0o755);
    await Deno.writeTextFile(`${dir}/private`, "root only\n", { mode: 0o600 });
    await Deno.chmod(`${dir}/private`, 0o600);
    await Deno.writeTextFile(`${dir}/public`, "anybody\n");
    await Deno.chmod(`${dir}/public`, 0o644);
    const srv = await fx.creds("fs", "node", { sans: ["127.0.0.1"] });
    await writeCredentials(node, "fs", srv.cert, srv.key!);
    await Deno.writeTextFile(`${node}/ca.pem`, fx.ca.certPem);
    await Deno.writeTextFile(`${node}/crl.pem`, await fx.ca.crlPem());
    // "nobody" is a host account: attached as it, the host's permission bits apply.
    const nobody: Credentials = await fx.creds("nobody", "user");
    const bob: Credentials = await fx.creds("bob", "user");
    const args = ["--threads", "2", "--certs", node, "--allow", "nobody"];
    const log = await withListen(args, dir, async (addr) => {
      const dial = (creds: Credentials) => dialConn(addr, { insecure: false, creds, peer: "fs" });
      // Everyone not on the list is refused, whichever thread answers.
      const bobs = await Promise.allSettled(Array.from({ length: 12 }, () => dial(bob)));
      for (const r of bobs) {
        assert.equal(r.status, "rejected", "bob was let in");
      }
      for (let i = 0; i < 12; i++) {
        const c = await StyxClient.connect(await dial(nobody));
        open.push(c);
        // The verified name, not the uname sent, is who reads.
        const root = await c.attach("root");
        await assert.rejects(c.openPath(root, "private", OREAD), /permission denied/);
        const f = await c.openPath(root, "public", OREAD);
        assert.equal(dec.decode(await f.read(0n, 100)), "anybody\n");
        await f.close();
      }
      // The node's certificate renewed, then the user revoked at once:
      // threads that have not yet taken up the renewal refuse too.
      const renewed = await fx.creds("fs", "node", { sans: ["127.0.0.1"] });
      await writeCredentials(node, "fs", renewed.cert, renewed.key!, { force: true });
      // Revoked: every open session ends, on every thread.
      await fx.ca.revoke("nobody");
      await Deno.writeTextFile(`${node}/crl.pem`, await fx.ca.crlPem());
      // New sessions are refused at once, on every thread: none waits for
      // its own look at the credentials directory.
      const again = await Promise.allSettled(Array.from({ length: 12 }, () => dial(nobody)));
      for (const r of again) {
        if (r.status === "fulfilled") r.value.close();
        assert.equal(r.status, "rejected", "a revoked user was let in");
      }
      await Promise.all(open.map((c) => c.closed));
    });
    assert.match(log, /not on the allow list|not allowed/);
  } finally {
    await Promise.all(open.map((c) => c.close().catch(() => {})));
    await Deno.remove(dir, { recursive: true });
    await fx.cleanup();
  }
});

Deno.test("listen threads: a second listener on a port in use is refused, not let share it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-threads-" });
  try {
    await withListen(["-A", "--threads", "2"], dir, async (addr) => {
      const [exe, ...pre] = ferryArgv();
      const second = new Deno.Command(exe!, {
        args: [...pre, "listen", "-A", "--threads", "2", addr, dir],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const err = new Response(second.stderr).text();
      // It must end on its own; one that starts listening is stopped and fails the test.
      const first = await second.stdout.getReader().read();
      const listening = !first.done && /listening on/.test(dec.decode(first.value));
      if (listening) second.kill("SIGKILL");
      await second.stdout.cancel().catch(() => {});
      const st = await second.status;
      assert.equal(listening, false, "the second listener shares the port");
      assert.equal(st.success, false);
      assert.match(await err, /cannot announce .*in use/i);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("listen threads: a bad --threads is refused, naming the value", async () => {
  for (const value of ["0", "two", "1.5"]) {
    const [exe, ...pre] = ferryArgv();
    const o = await new Deno.Command(exe!, {
      args: [...pre, "listen", "-A", "--threads", value, "tcp!127.0.0.1!0", "."],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(o.success, false);
    assert.match(dec.decode(o.stderr), new RegExp(`--threads '${value}' is not a whole number`));
  }
});

Deno.test("listen threads: of two listeners started at once on one port, one serves and the other is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-threads-" });
  const [exe, ...pre] = ferryArgv();
  try {
    for (let round = 0; round < 8; round++) {
      const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (probe.addr as Deno.NetAddr).port;
      probe.close();
      const both = [0, 1].map(() =>
        new Deno.Command(exe!, {
          args: [...pre, "listen", "-A", "--threads", "2", `tcp!127.0.0.1!${port}`, dir],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn()
      );
      const outcomes = await Promise.all(both.map(async (child) => {
        const err = new Response(child.stderr).text();
        const first = await child.stdout.getReader().read();
        const listening = !first.done && /listening on/.test(dec.decode(first.value));
        return { child, listening, err };
      }));
      for (const o of outcomes) if (o.listening) o.child.kill("SIGTERM");
      for (const o of outcomes) {
        await o.child.stdout.cancel().catch(() => {});
        await o.child.status;
      }
      assert.equal(
        outcomes.filter((o) => o.listening).length,
        1,
        `round ${round}: ${outcomes.filter((o) => o.listening).length} listeners on port ${port}`,
      );
      assert.match(await outcomes.find((o) => !o.listening)!.err, /cannot announce .*in use/i);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
