import assert from "node:assert/strict";
import { NetDevice } from "../../../lib/dev/net/device.ts";
import type { Node, OpenFile, Tree } from "../../../lib/fs/tree.ts";
import { ORDWR, OREAD, OWRITE } from "../../../lib/styx/types.ts";
import { serve } from "../../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../../lib/styx/client.ts";
import { memPipe } from "../../../lib/transport/pipe.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function open(root: Node, path: string, mode: number, signal?: AbortSignal) {
  const names = path.split("/").filter((s) => s);
  const { node } = await root.walk(names);
  if (!node) throw new Error(`no ${path}`);
  try {
    return await node.open(mode, { signal });
  } finally {
    await node.close();
  }
}

async function readAll(root: Node, path: string): Promise<string> {
  const f = await open(root, path, OREAD);
  try {
    return dec.decode(await f.read(0n, 8192));
  } finally {
    await f.close();
  }
}

async function ls(root: Node, path: string): Promise<string[]> {
  const { node } = await root.walk(path.split("/").filter((s) => s));
  const f = await node!.open(OREAD);
  const names = (await f.readDir()).map((d) => d.name);
  await f.close();
  await node!.close();
  return names;
}

async function ctl(f: OpenFile, msg: string): Promise<void> {
  await f.write(0n, enc.encode(msg));
}

/** An echo server on 127.0.0.1; returns its port and a closer. */
function echoServer(): { port: number; close: () => void; done: Promise<void> } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const done = (async () => {
    for await (const c of l) {
      conns.push(c);
      (async () => {
        const buf = new Uint8Array(65536);
        try {
          for (;;) {
            const n = await c.read(buf);
            if (n === null) break;
            await c.write(buf.subarray(0, n));
          }
        } catch { /* closed */ }
        try {
          c.close();
        } catch { /* closed */ }
      })();
    }
  })();
  return {
    port: l.addr.port,
    close: () => {
      l.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
    done,
  };
}

async function readN(f: OpenFile, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const b = await f.read(0n, n - got);
    if (b.length === 0) break;
    out.set(b, got);
    got += b.length;
  }
  return out.subarray(0, got);
}

async function attach(tree: Tree, user = "glenda"): Promise<Node> {
  return await tree.attach({ user }, "");
}

Deno.test("/net device: tcp conversations after ip(3)", async (t) => {
  const dev = new NetDevice();
  const root = await attach(dev.tree());
  const echo = echoServer();
  try {
    await t.step("clone gives a ctl reading N; connect, data, local, remote, status", async () => {
      const c = await open(root, "tcp/clone", ORDWR);
      const n = dec.decode(await c.read(0n, 32));
      assert.equal(n, "0");
      assert.deepEqual(await ls(root, "tcp"), ["clone", "0"]);
      await ctl(c, `connect 127.0.0.1!${echo.port}`);
      assert.equal(await readAll(root, "tcp/0/remote"), `127.0.0.1!${echo.port}\n`);
      assert.match(await readAll(root, "tcp/0/local"), /^127\.0\.0\.1!\d+\n$/);
      assert.match(await readAll(root, "tcp/0/status"), /^Established/);
      const d = await open(root, "tcp/0/data", ORDWR);
      const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
      const [, back] = await Promise.all([d.write(0n, big), readN(d, big.length)]);
      assert.deepEqual(back, big);
      await ctl(c, "keepalive");
      await ctl(c, "hangup");
      assert.match(await readAll(root, "tcp/0/status"), /^Hungup/);
      await assert.rejects(d.read(0n, 10), /i\/o on hungup channel/);
      await assert.rejects(d.write(0n, enc.encode("x")), /i\/o on hungup channel/);
      await d.close();
      assert.deepEqual(await ls(root, "tcp"), ["clone", "0"], "ctl still open");
      await c.close();
      assert.deepEqual(await ls(root, "tcp"), ["clone"], "gone after the last close");
    });

    await t.step("local, remote and status opened before connect read as after it", async () => {
      const c = await open(root, "tcp/clone", ORDWR);
      const n = dec.decode(await c.read(0n, 32));
      const files = await Promise.all(
        ["local", "remote", "status"].map((f) => open(root, `tcp/${n}/${f}`, OREAD)),
      );
      await ctl(c, `connect 127.0.0.1!${echo.port}`);
      const [local, remote, status] = await Promise.all(
        files.map(async (f) => dec.decode(await f.read(0n, 256))),
      );
      assert.match(local!, /^127\.0\.0\.1!\d+\n$/);
      assert.equal(remote, `127.0.0.1!${echo.port}\n`);
      assert.match(status!, /^Established /);
      // Reading on from an offset continues the same text.
      assert.equal(dec.decode(await files[1]!.read(4n, 256)), remote!.slice(4));
      for (const f of files) await f.close();
      await c.close();
    });

    await t.step("end of stream reads as zero bytes", async () => {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const c = await open(root, "tcp/clone", ORDWR);
      const n = dec.decode(await c.read(0n, 32));
      await ctl(c, `connect 127.0.0.1!${l.addr.port}`);
      const peer = await l.accept();
      await peer.write(enc.encode("bye"));
      peer.close();
      l.close();
      const d = await open(root, `tcp/${n}/data`, ORDWR);
      assert.equal(dec.decode(await readN(d, 10)), "bye");
      assert.equal((await d.read(0n, 10)).length, 0);
      await d.close();
      await c.close();
    });

    await t.step("announce *!0, listen yields the new conversation's ctl", async () => {
      const a = await open(root, "tcp/clone", ORDWR);
      const an = dec.decode(await a.read(0n, 32));
      await ctl(a, "announce *!0");
      const local = await readAll(root, `tcp/${an}/local`);
      const port = Number(local.trim().split("!")[1]);
      assert.ok(port > 0, local);
      assert.match(await readAll(root, `tcp/${an}/status`), /^Announced/);
      const pending = open(root, `tcp/${an}/listen`, ORDWR);
      const caller = await Deno.connect({ hostname: "127.0.0.1", port });
      const l = await pending;
      const n = dec.decode(await l.read(0n, 32));
      assert.notEqual(n, an);
      assert.equal(
        await readAll(root, `tcp/${n}/remote`),
        `127.0.0.1!${(caller.localAddr as Deno.NetAddr).port}\n`,
      );
      const d = await open(root, `tcp/${n}/data`, ORDWR);
      await caller.write(enc.encode("ping"));
      assert.equal(dec.decode(await readN(d, 4)), "ping");
      await d.write(0n, enc.encode("pong"));
      const buf = new Uint8Array(4);
      let got = 0;
      while (got < 4) got += (await caller.read(buf.subarray(got)))!;
      assert.equal(dec.decode(buf), "pong");
      caller.close();
      await d.close();
      await l.close();
      // A flushed listen gives up without taking a call.
      const ac = new AbortController();
      const waiting = open(root, `tcp/${an}/listen`, ORDWR, ac.signal);
      ac.abort();
      await assert.rejects(waiting, /interrupted/);
      // Closing the announcing ctl ends the announcement.
      const again = open(root, `tcp/${an}/listen`, ORDWR);
      await new Promise((r) => setTimeout(r, 20)); // let the listen start waiting
      await a.close();
      await assert.rejects(again, /hungup|does not exist/);
      await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port }));
      assert.deepEqual(await ls(root, "tcp"), ["clone"]);
    });

    await t.step("connect to a closed port fails and leaves no directory", async () => {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = l.addr.port;
      l.close();
      const c = await open(root, "tcp/clone", ORDWR);
      await assert.rejects(ctl(c, `connect 127.0.0.1!${port}`), /connection refused/);
      await c.close();
      assert.deepEqual(await ls(root, "tcp"), ["clone"]);
    });

    await t.step("announce on a port in use", async () => {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const c = await open(root, "tcp/clone", ORDWR);
      await assert.rejects(ctl(c, `announce 127.0.0.1!${l.addr.port}`), /address in use/);
      l.close();
      await c.close();
    });

    await t.step("bad ctl messages name themselves", async () => {
      const c = await open(root, "tcp/clone", ORDWR);
      await assert.rejects(ctl(c, "frobnicate now"), /unknown ctl message 'frobnicate'/);
      await assert.rejects(ctl(c, "connect"), /bad ctl message 'connect'/);
      await assert.rejects(ctl(c, "connect 127.0.0.1!notaport"), /bad port 'notaport'/);
      await assert.rejects(ctl(c, "connect *!80"), /bad ctl message 'connect'/);
      await assert.rejects(ctl(c, "announce 1!2!3 x"), /bad ctl message 'announce'/);
      await assert.rejects(ctl(c, "keepalive"), /not connected/);
      const n = dec.decode(await c.read(0n, 32));
      const d = await open(root, `tcp/${n}/data`, ORDWR);
      await assert.rejects(d.read(0n, 1), /not connected/);
      await d.close();
      await c.close();
      assert.deepEqual(await ls(root, "tcp"), ["clone"]);
    });

    await t.step("another user cannot open a conversation's files", async () => {
      const c = await open(root, "tcp/clone", ORDWR);
      const n = dec.decode(await c.read(0n, 32));
      const other = await attach(dev.tree(), "mallory");
      await assert.rejects(open(other, `tcp/${n}/data`, ORDWR), /permission denied/);
      await assert.rejects(open(other, `tcp/${n}/ctl`, OWRITE), /permission denied/);
      await other.close();
      await c.close();
    });
  } finally {
    echo.close();
    await echo.done;
    dev.closeAll();
    await root.close();
  }
});

Deno.test("/net/cs and /net/dns", async (t) => {
  const dev = new NetDevice();
  const root = await attach(dev.tree());
  const query = async (file: string, q: string): Promise<string[]> => {
    const f = await open(root, file, ORDWR);
    try {
      await f.write(0n, enc.encode(q));
      const lines: string[] = [];
      for (;;) {
        const b = await f.read(0n, 1024);
        if (b.length === 0) return lines;
        lines.push(dec.decode(b));
      }
    } finally {
      await f.close();
    }
  };
  await t.step("cs translates dial strings", async () => {
    assert.deepEqual(await query("cs", "tcp!127.0.0.1!80"), ["/net/tcp/clone 127.0.0.1!80"]);
    assert.deepEqual(await query("cs", "net!localhost!styx"), ["/net/tcp/clone 127.0.0.1!6666"]);
    assert.deepEqual(await query("cs", "tcp!*!8000"), ["/net/tcp/clone *!8000"]);
    await assert.rejects(query("cs", "tcp!host"), /cs: can't translate address.*missing port/);
    await assert.rejects(query("cs", "tcp!h!nosuchservice"), /unknown service 'nosuchservice'/);
    assert.deepEqual(await query("cs", "udp!127.0.0.1!53"), ["/net/udp/clone 127.0.0.1!53"]);
    await assert.rejects(
      query("cs", "tcp!no-such-host.invalid!80"),
      /can't translate address: unknown host 'no-such-host.invalid'/,
    );
  });
  await t.step("dns answers ip queries", async () => {
    assert.deepEqual(await query("dns", "localhost ip"), ["localhost ip 127.0.0.1"]);
    assert.deepEqual(await query("dns", "10.1.2.3"), ["10.1.2.3 ip 10.1.2.3"]);
    await assert.rejects(query("dns", "localhost bogus"), /unknown query type 'bogus'/);
    await assert.rejects(query("dns", "a b c"), /bad query/);
  });
  await root.close();
});

Deno.test("/net over Styx: a blocked listen does not block the session", async () => {
  const dev = new NetDevice();
  const [a, b] = memPipe();
  const served = serve(b, dev.tree());
  const client = await StyxClient.connect(a);
  const tree = new RemoteTree(client);
  const root = await tree.attach({ user: "glenda" }, "");
  try {
    const c = await open(root, "tcp/clone", ORDWR);
    const n = dec.decode(await c.read(0n, 32));
    await c.write(0n, enc.encode("announce 127.0.0.1!0"));
    const port = Number((await readAll(root, `tcp/${n}/local`)).trim().split("!")[1]);
    const pending = open(root, `tcp/${n}/listen`, ORDWR);
    // The session still answers while the listen waits.
    assert.match(await readAll(root, `tcp/${n}/status`), /^Announced/);
    const ac = new AbortController();
    const flushed = open(root, `tcp/${n}/listen`, ORDWR, ac.signal);
    ac.abort();
    await assert.rejects(flushed);
    const caller = await Deno.connect({ hostname: "127.0.0.1", port });
    const l = await pending;
    const m = dec.decode(await l.read(0n, 32));
    const d = await open(root, `tcp/${m}/data`, ORDWR);
    await d.write(0n, enc.encode("hello"));
    const buf = new Uint8Array(5);
    let got = 0;
    while (got < 5) got += (await caller.read(buf.subarray(got)))!;
    assert.equal(dec.decode(buf), "hello");
    caller.close();
    assert.equal((await d.read(0n, 10)).length, 0);
    await d.close();
    await l.close();
    await c.close();
    assert.deepEqual(await ls(root, "tcp"), ["clone"]);
  } finally {
    await root.close();
    await client.close();
    await served;
    dev.closeAll();
  }
});

Deno.test("/net/udp: connected and announced datagrams, headers", async () => {
  const dev = new NetDevice();
  const root = await attach(dev.tree());
  try {
    // An announced conversation answers whoever wrote last.
    const a = await open(root, "udp/clone", ORDWR);
    const an = dec.decode(await a.read(0n, 32));
    await ctl(a, "announce 127.0.0.1!0");
    const port = Number((await readAll(root, `udp/${an}/local`)).trim().split("!")[1]);
    const ad = await open(root, `udp/${an}/data`, ORDWR);
    // A connected one sends to it.
    const c = await open(root, "udp/clone", ORDWR);
    const cn = dec.decode(await c.read(0n, 32));
    await ctl(c, `connect 127.0.0.1!${port}`);
    assert.match(await readAll(root, `udp/${cn}/status`), /^Connected/);
    const cd = await open(root, `udp/${cn}/data`, ORDWR);
    await cd.write(0n, enc.encode("one"));
    await cd.write(0n, enc.encode("two"));
    assert.equal(dec.decode(await ad.read(0n, 100)), "one", "one datagram per read");
    assert.equal(dec.decode(await ad.read(0n, 100)), "two");
    await ad.write(0n, enc.encode("reply"));
    assert.equal(dec.decode(await cd.read(0n, 100)), "reply");
    // headers: 52 bytes of addresses and ports before the data.
    await ctl(a, "headers");
    await cd.write(0n, enc.encode("hdr"));
    const h = await ad.read(0n, 200);
    assert.equal(h.length, 52 + 3);
    assert.deepEqual([...h.subarray(10, 16)], [0xff, 0xff, 127, 0, 0, 1]);
    const cport = Number((await readAll(root, `udp/${cn}/local`)).trim().split("!")[1]);
    assert.equal(new DataView(h.buffer, h.byteOffset).getUint16(48), cport);
    assert.equal(new DataView(h.buffer, h.byteOffset).getUint16(50), port);
    assert.equal(dec.decode(h.subarray(52)), "hdr");
    const back = h.slice();
    back.set(enc.encode("ack"), 52);
    await ad.write(0n, back);
    assert.equal(dec.decode(await cd.read(0n, 100)), "ack");
    await assert.rejects(ad.write(0n, enc.encode("short")), /shorter than its header/);
    await assert.rejects(ctl(c, "connect 127.0.0.1!1"), /conversation is Connected/);
    await ctl(c, "hangup");
    await assert.rejects(cd.read(0n, 10), /hungup/);
    for (const f of [ad, a, cd, c]) await f.close();
    assert.deepEqual(await ls(root, "udp"), ["clone"]);
  } finally {
    dev.closeAll();
    await root.close();
  }
});
