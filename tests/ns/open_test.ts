import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { serve } from "../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { type TcpConn, tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { Ename, OREAD, OWRITE } from "../../lib/styx/types.ts";

const dec = new TextDecoder();

/** A real TCP connection that counts the writes (batches of requests) sent on it. */
class CountingConn implements Conn {
  writes = 0;
  constructor(readonly inner: TcpConn) {}
  get closed(): Promise<void> {
    return this.inner.closed;
  }
  get peer() {
    return this.inner.peer;
  }
  get local(): string {
    return this.inner.local;
  }
  read(): Promise<Uint8Array | null> {
    return this.inner.read();
  }
  readInto(buf: Uint8Array): Promise<number | null> {
    return this.inner.readInto(buf);
  }
  write(data: Uint8Array): Promise<void> {
    this.writes++;
    return this.inner.write(data);
  }
  close(): void {
    this.inner.close();
  }
}

Deno.test("opening files through a remote tree mounted in a namespace", async (t) => {
  const far = new MemTree({ owner: "glenda" });
  await far.writeFile("/docs/readme", "far away", 0o644);
  await far.writeFile("/docs/secret", "glenda's only", 0o600);
  const deep = Array.from({ length: 20 }, (_, i) => `d${i}`);
  await far.writeFile(`/${deep.join("/")}/bottom`, "twenty down");
  const l = tcpListen("127.0.0.1", 0);
  (async () => {
    for await (const c of l) serve(c, far).catch(() => {});
  })();
  const conn = new CountingConn(await tcpDial("127.0.0.1", Number(l.addr.split("!")[2])));
  const client = await StyxClient.connect(conn);
  const root = new MemTree({ owner: "bob" });
  await root.mkdirp("/n/far");
  const ns = new Namespace(root, { caller: { user: "bob" } });
  await ns.mount(new RemoteTree(client, { uname: "bob" }), "/n/far");
  const read = async (path: string) => {
    const f = await ns.open(path, OREAD);
    try {
      return dec.decode(await f.read(0n, 1024));
    } finally {
      await f.close();
    }
  };
  try {
    await read("/n/far/docs/readme"); // the mount's own fids are made by now
    const baseline = client.fidsInUse;

    await t.step("the open goes out with the walk: one round trip", async () => {
      const before = conn.writes;
      const f = await ns.open("/n/far/docs/readme", OREAD);
      assert.equal(conn.writes - before, 1, "walk and open in one write");
      assert.equal(dec.decode(await f.read(0n, 1024)), "far away");
      await f.close();
      assert.equal(client.fidsInUse, baseline);
    });

    await t.step("a missing name is not found, and nothing is held", async () => {
      await assert.rejects(ns.open("/n/far/docs/nope", OREAD), (e: Error) => {
        assert.match(e.message, new RegExp(Ename.notFound));
        return true;
      });
      await assert.rejects(ns.open("/n/far/nodir/readme", OREAD));
      assert.equal(client.fidsInUse, baseline);
    });

    await t.step("an open the server refuses says so, and nothing is held", async () => {
      await assert.rejects(ns.open("/n/far/docs/secret", OREAD), (e: Error) => {
        assert.match(e.message, /permission denied/);
        return true;
      });
      await assert.rejects(ns.open("/n/far/docs/readme", OWRITE), /permission denied/);
      assert.equal(client.fidsInUse, baseline);
    });

    await t.step("a path longer than one Twalk", async () => {
      assert.equal(await read(`/n/far/${deep.join("/")}/bottom`), "twenty down");
      assert.equal(client.fidsInUse, baseline);
    });

    await t.step("the mount point itself and a directory under it", async () => {
      for (const [path, want] of [["/n/far", "d0,docs"], ["/n/far/docs", "readme,secret"]]) {
        const f = await ns.open(path!, OREAD);
        const names = (await f.readDir()).map((d) => d.name).sort().join(",");
        await f.close();
        assert.equal(names, want);
      }
      assert.equal(client.fidsInUse, baseline);
    });
  } finally {
    await ns.close();
    await client.close();
    l.close();
  }
});
