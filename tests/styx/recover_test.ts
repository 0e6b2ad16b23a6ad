/**
 * A recovering mount over real TCP: the server (a host directory served on
 * a loopback port) stops and starts again on the same port while files are
 * open through a namespace.
 */
import { concatBytes } from "../../lib/bytes.ts";
import assert from "node:assert/strict";
import { type RecoverEvent, RecoveringTree, StyxClient } from "../../lib/styx/client.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { Namespace } from "../../lib/ns/namespace.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import { Server } from "./restartable.ts";
import { Broadcast, dir, eventFile, SynthTree } from "../../lib/fs/synthetic.ts";
import { ORCLOSE, OREAD, OWRITE } from "../../lib/styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("a recovering mount survives its server restarting on the same port", async () => {
  const dir = await Deno.makeTempDir();
  const big = new Uint8Array(200_000).map((_, i) => (i * 7 + (i >> 9)) & 0xff);
  await Deno.writeFile(`${dir}/big`, big);
  await Deno.writeTextFile(`${dir}/doomed`, "gone soon");
  await Deno.writeTextFile(`${dir}/log`, "");
  const srv = new Server(dir);
  srv.start();
  const events: RecoverEvent[] = [];
  let recovered = Promise.withResolvers<void>();
  const tree = await RecoveringTree.connect({
    dial: async () => await StyxClient.connect(await tcpDial("127.0.0.1", srv.port)),
    minDelayMs: 20,
    maxDelayMs: 200,
    onChange: (e) => {
      events.push(e);
      if (e.state === "recovered") recovered.resolve();
    },
  });
  const root = new MemTree();
  await root.mkdirp("/n/files");
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  const source = `tcp!127.0.0.1!${srv.port}`;
  try {
    await ns.mount(tree, "/n/files", { source });
    const f = await ns.open("/n/files/big", OREAD);
    const doomed = await ns.open("/n/files/doomed", OREAD);
    const log = await ns.open("/n/files/log", OWRITE);
    const scratch = await ns.create("/n/files/scratch", 0o644, OWRITE | ORCLOSE);
    const first = await f.read(0n, 50_000);
    assert.equal(first.length, 50_000);
    assert.equal(await log.write(0n, enc.encode("before;")), 7);

    await srv.stop();
    await Deno.remove(`${dir}/doomed`);
    // While the server is away, everything fails at once, naming the mount.
    const lost = new RegExp(
      `'/n/files' is no longer connected \\(tcp!127\\.0\\.0\\.1!${srv.port}: [^)]+\\)`,
    );
    await assert.rejects(f.read(50_000n, 1000), lost);
    await assert.rejects(ns.stat("/n/files/big"), lost);
    await assert.rejects(ns.readDir("/n/files"), lost);
    assert.match(ns.mounts()[0]!.lost ?? "", /redialling/);

    srv.start(); // same port
    await recovered.promise;
    assert.deepEqual(events.map((e) => e.state), ["lost", "recovered"]);
    assert.equal(ns.mounts()[0]!.lost, undefined);
    // The file opened before the restart reads on from where it was, to its end.
    const parts = [first];
    let off = first.length;
    for (;;) {
      const d = await f.read(BigInt(off), 8192);
      if (d.length === 0) break;
      parts.push(d.slice());
      off += d.length;
    }
    const all = concatBytes(parts, off);
    assert.deepEqual(all, big);
    // A file removed meanwhile says so on its next use.
    await assert.rejects(
      doomed.read(0n, 100),
      /file does not exist: '\/n\/files\/doomed' is gone since the connection was restored/,
    );
    // The server removed the ORCLOSE file when the connection went.
    await assert.rejects(Deno.stat(`${dir}/scratch`), Deno.errors.NotFound);
    await assert.rejects(
      scratch.write(0n, enc.encode("x")),
      /file does not exist: '\/n\/files\/scratch' is gone since the connection was restored/,
    );
    await scratch.close();
    // A file open for writing carries on (without being truncated again).
    assert.equal(await log.write(7n, enc.encode("after")), 5);
    assert.equal(await Deno.readTextFile(`${dir}/log`), "before;after");
    // New walks work as before.
    assert.equal(dec.decode(await ns.readFile("/n/files/log")), "before;after");
    await f.close();
    await doomed.close();
    await log.close();

    // A second loss is handled the same way.
    recovered = Promise.withResolvers<void>();
    await srv.stop();
    await assert.rejects(ns.readFile("/n/files/log"), lost);
    srv.start();
    await recovered.promise;
    assert.equal(dec.decode(await ns.readFile("/n/files/log")), "before;after");
  } finally {
    await ns.close();
    await tree.close();
    await srv.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a read blocked when the connection drops fails naming the mount and is not resent", async () => {
  const events = new Broadcast<string>();
  const served = new SynthTree(dir("", [eventFile("events", events)]));
  const srv = new Server("", () => served);
  srv.start();
  const recovered = Promise.withResolvers<void>();
  const tree = await RecoveringTree.connect({
    dial: async () => await StyxClient.connect(await tcpDial("127.0.0.1", srv.port)),
    minDelayMs: 20,
    maxDelayMs: 200,
    onChange: (e) => e.state === "recovered" && recovered.resolve(),
  });
  const root = new MemTree();
  await root.mkdirp("/n/ev");
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  try {
    await ns.mount(tree, "/n/ev", { source: "events" });
    const f = await ns.open("/n/ev/events", OREAD);
    const blocked = f.read(0n, 100);
    await srv.stop();
    await assert.rejects(blocked, /'\/n\/ev' is no longer connected \(tcp!127\.0\.0\.1!\d+: /);
    assert.equal(events.readers, 0);

    srv.start();
    await recovered.promise;
    // The next read reopens the file and waits for the next event, not a replay.
    const next = f.read(0n, 100);
    while (events.readers === 0) await new Promise((r) => setTimeout(r, 10));
    events.publish("ring");
    assert.equal(dec.decode(await next), "ring\n");
    await f.close();
  } finally {
    await ns.close();
    await tree.close();
    await srv.stop();
  }
});
