/**
 * The cap on connections served at once: given to serve() by a listener,
 * and by default one per process, which `ferry listen` gets untouched.
 */

import assert from "node:assert/strict";
import { ConnectionLimit, DEFAULT_MAX_CONNECTIONS, serve } from "../../lib/styx/server.ts";
import { decode, encode } from "../../lib/styx/codec.ts";
import { FrameReader } from "../../lib/styx/frame.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { type TcpConn, tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import { type Msg, MsgType, NOTAG } from "../../lib/styx/types.ts";

const REPO = new URL("../../", import.meta.url).pathname;

/** Dial and send Tversion: the reply, and the connection. */
async function version(port: number): Promise<{ conn: TcpConn; reply: Msg | null }> {
  const conn = await tcpDial("127.0.0.1", port);
  await conn.write(encode({ type: MsgType.Tversion, tag: NOTAG, msize: 8192, version: "9P2000" }));
  const f = await new FrameReader(conn, 8192).next();
  return { conn, reply: f === null ? null : decode(f) };
}

Deno.test("connection cap: a listener's cap refuses the connection past it with an Rerror", async () => {
  const l = tcpListen("127.0.0.1", 0);
  const port = Number(l.addr.split("!")[2]);
  const cap = new ConnectionLimit(2);
  const logs: string[] = [];
  const sessions: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of l) {
      sessions.push(serve(c, new MemTree(), { connections: cap, log: (m) => logs.push(m) }));
    }
  })();
  const a = await version(port);
  const b = await version(port);
  assert.equal(a.reply?.type, MsgType.Rversion);
  assert.equal(b.reply?.type, MsgType.Rversion);
  const c = await version(port);
  assert.ok(c.reply?.type === MsgType.Rerror, `got ${c.reply?.type}`);
  assert.equal(c.reply.tag, NOTAG);
  assert.match(c.reply.ename, /too many connections: this server serves at most 2 at once/);
  assert.equal(await c.conn.read(), null, "the refused connection is closed");
  assert.ok(
    logs.some((m) => /refusing a connection .*2 connections are already being served/.test(m)),
  );
  // One leaves: there is room again.
  a.conn.close();
  while (cap.open > 1) await new Promise((r) => setTimeout(r, 5));
  const d = await version(port);
  assert.equal(d.reply?.type, MsgType.Rversion);
  for (const x of [b, c, d]) x.conn.close();
  l.close();
  await accepting;
  await Promise.all(sessions);
  assert.equal(cap.open, 0);
});

/** Run `ferry listen -A ARGS… tcp!127.0.0.1!0 DIR` until `fn` is done with its port. */
async function withFerryListen(
  args: string[],
  fn: (port: number) => Promise<void>,
): Promise<string> {
  const dir = await Deno.makeTempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      `${REPO}cmd/ferry.ts`,
      "listen",
      "-A",
      ...args,
      "tcp!127.0.0.1!0",
      dir,
    ],
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
      text += new TextDecoder().decode(value);
    }
    out.releaseLock();
    await fn(Number(text.match(/listening on \S+!(\d+)/)![1]));
  } finally {
    child.kill("SIGTERM");
    await child.stdout.cancel().catch(() => {});
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
  return await stderr;
}

Deno.test("connection cap: `ferry listen -A` refuses connections past the default cap", async () => {
  const conns: TcpConn[] = [];
  try {
    await withFerryListen([], async (port) => {
      for (let i = 0; i < DEFAULT_MAX_CONNECTIONS; i++) {
        const { conn, reply } = await version(port);
        conns.push(conn);
        assert.equal(reply?.type, MsgType.Rversion, `connection ${i + 1}`);
      }
      const over = await version(port);
      conns.push(over.conn);
      assert.ok(over.reply?.type === MsgType.Rerror, `got ${over.reply?.type}`);
      assert.match(over.reply.ename, new RegExp(`at most ${DEFAULT_MAX_CONNECTIONS} at once`));
    });
  } finally {
    for (const c of conns) c.close();
  }
});

Deno.test("connection cap: `ferry listen --max-conns` and `--frame-timeout` set the bounds", async () => {
  const conns: TcpConn[] = [];
  try {
    const log = await withFerryListen(
      ["--max-conns", "2", "--frame-timeout", "0.3"],
      async (port) => {
        for (let i = 0; i < 2; i++) {
          const { conn, reply } = await version(port);
          conns.push(conn);
          assert.equal(reply?.type, MsgType.Rversion);
        }
        const over = await version(port);
        conns.push(over.conn);
        assert.ok(over.reply?.type === MsgType.Rerror, `got ${over.reply?.type}`);
        assert.match(over.reply.ename, /at most 2 at once/);
        // Half a frame on a served connection: dropped after 0.3 s.
        await conns[0]!.write(new Uint8Array([19, 0, 0]));
        assert.equal(await conns[0]!.read(), null);
      },
    );
    assert.match(log, /still incomplete after 300 ms/);
  } finally {
    for (const c of conns) c.close();
  }
});

Deno.test("connection cap: `ferry listen` refuses a bad --max-conns or --frame-timeout", async () => {
  for (const [flag, value] of [["--max-conns", "0"], ["--frame-timeout", "soon"]] as const) {
    const o = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        `${REPO}cmd/ferry.ts`,
        "listen",
        "-A",
        flag,
        value,
        "tcp!127.0.0.1!0",
        ".",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(o.success, false);
    assert.match(new TextDecoder().decode(o.stderr), new RegExp(`${flag} '${value}' is not`));
  }
});
