// `ferry phone` as a real child process: serve over TCP with -A, inject
// traffic with `ferry phone sim inject`, and use the tree through the Styx
// client.

import assert from "node:assert/strict";
import { tcpDial } from "../../../lib/transport/tcp.ts";
import { RemoteTree, StyxClient } from "../../../lib/styx/client.ts";
import { OREAD, OWRITE } from "../../../lib/styx/types.ts";
import type { Node } from "../../../lib/fs/tree.ts";
import { tlsDial } from "../../../lib/transport/tls.ts";
import { writeCredentials } from "../../../lib/auth/ca.ts";
import { makeFixture } from "../../auth/fixture.ts";

const FERRY = new URL("../../../cmd/ferry.ts", import.meta.url).pathname;
const enc = new TextEncoder();
const dec = new TextDecoder();

function ferry(args: string[], env?: Record<string, string>) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", FERRY, ...args],
    stdout: "piped",
    stderr: "piped",
    env,
  });
}

async function firstLine(r: ReadableStream<Uint8Array>): Promise<string> {
  const reader = r.getReader();
  let buf = "";
  while (!buf.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value);
  }
  reader.releaseLock();
  return buf.split("\n")[0]!;
}

async function walk(root: Node, name: string): Promise<Node> {
  const r = await root.walk([name]);
  assert.ok(r.node);
  return r.node;
}

Deno.test("ferry phone serves /phone over TCP; sim inject reaches it", async () => {
  const state = await Deno.makeTempDir();
  const child = ferry(["phone", "-A", "--state", state, "--listen", "tcp!127.0.0.1!0"]).spawn();
  let client: StyxClient | undefined;
  try {
    const line = await firstLine(child.stdout);
    const m = line.match(/on tcp!127\.0\.0\.1!(\d+)$/);
    assert.ok(m, `unexpected first line '${line}'`);
    client = await StyxClient.connect(await tcpDial("127.0.0.1", Number(m[1])));
    const root = await new RemoteTree(client).attach({ user: "glenda" }, "");
    const events = await (await walk(root, "events")).open(OREAD);
    const pending = events.read(0n, 8192);
    const inj = await ferry(["phone", "sim", "inject", "call", "5551234", "--state", state])
      .output();
    assert.equal(inj.code, 0, dec.decode(inj.stderr));
    assert.equal(dec.decode(await pending), "ring 5551234\n");
    const ctl = await (await walk(root, "ctl")).open(OWRITE);
    await ctl.write(0n, enc.encode("answer\n"));
    assert.equal(dec.decode(await events.read(0n, 8192)), "answered 5551234\n");
    const sms = await (await walk(root, "sms")).open(OWRITE);
    await sms.write(0n, enc.encode("send 6412345678 'hello'\n"));
    assert.equal(dec.decode(await events.read(0n, 8192)), "sent 1\n");
    await assert.rejects(sms.write(0n, enc.encode("send 12ab hi")), {
      message: "sms: bad number '12ab'",
    });
    const bad = await ferry(["phone", "sim", "inject", "call", "x", "--state", state]).output();
    assert.equal(bad.code, 1);
    assert.match(dec.decode(bad.stderr), /^phone: inject call: bad number 'x'/);
    const saved = JSON.parse(await Deno.readTextFile(`${state}/sms.json`));
    assert.equal(saved.messages[0].status, "sent");
  } finally {
    await client?.close();
    child.kill("SIGTERM");
    const st = await child.status;
    await child.stderr.cancel();
    await child.stdout.cancel().catch(() => {});
    assert.equal(st.code, 0);
    await Deno.remove(state, { recursive: true });
  }
});

Deno.test("ferry phone without -A serves over mutual TLS", async () => {
  const fx = await makeFixture();
  const state = await Deno.makeTempDir();
  const certs = `${fx.dir}/node`;
  const node = await fx.creds("phonehost", "node", { sans: ["127.0.0.1"] });
  await writeCredentials(certs, "phonehost", node.cert, node.key);
  await Deno.writeTextFile(`${certs}/ca.pem`, node.ca);
  const alice = await fx.creds("alice", "user");
  const child = ferry([
    "phone",
    "--state",
    state,
    "--listen",
    "tcp!127.0.0.1!0",
    "--certs",
    certs,
    "--name",
    "phonehost",
  ]).spawn();
  let client: StyxClient | undefined;
  try {
    const line = await firstLine(child.stdout);
    const m = line.match(/on tcp!127\.0\.0\.1!(\d+)$/);
    assert.ok(m, `unexpected first line '${line}'`);
    const conn = await tlsDial("127.0.0.1", Number(m[1]), { creds: alice, peer: "phonehost" });
    client = await StyxClient.connect(conn);
    const root = await new RemoteTree(client).attach({ user: "mallory" }, "");
    const sms = await (await walk(root, "sms")).open(OWRITE);
    await sms.write(0n, enc.encode("send 6412345678 'over TLS'"));
    const st = await root.walk(["status"]);
    assert.ok(st.node);
    assert.equal((await st.node.stat()).uid, "ferry");
    const saved = JSON.parse(await Deno.readTextFile(`${state}/sms.json`));
    assert.equal(saved.messages[0].text, "over TLS");
  } finally {
    await client?.close();
    child.kill("SIGTERM");
    await child.status;
    await child.stderr.cancel();
    await child.stdout.cancel().catch(() => {});
    await Deno.remove(state, { recursive: true });
    await fx.cleanup();
  }
});
