// Replies sent at once with send(2) on plain TCP: only there (never under
// TLS, whose bytes must pass through the TLS layer), in order, whole even
// when the socket takes only part of a reply, and never once the
// connection is closed.

import assert from "node:assert/strict";
import { directSender } from "../../lib/styx/direct.ts";
import { serve } from "../../lib/styx/server.ts";
import { decode, encode } from "../../lib/styx/codec.ts";
import { FrameReader } from "../../lib/styx/frame.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { TcpConn, tcpDial, tcpListen } from "../../lib/transport/tcp.ts";
import { tlsDial, tlsListen } from "../../lib/transport/tls.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { type Msg, MsgType, NOFID, NOTAG, OREAD } from "../../lib/styx/types.ts";
import { makeFixture } from "../auth/fixture.ts";

const PERMS_FFI = Deno.permissions.querySync({ name: "ffi" }).state === "granted";

/** A TCP connection to a fresh listener on `host`, both ends as Ferry sees them. */
async function tcpPair(host: string): Promise<{ client: TcpConn; server: TcpConn; close(): void }> {
  const l = Deno.listen({ hostname: host, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  const [raw, client] = await Promise.all([l.accept(), tcpDial(host, port)]);
  l.close();
  const server = new TcpConn(raw);
  return {
    client,
    server,
    close() {
      client.close();
      server.close();
    },
  };
}

function hasIPv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("direct send: plain TCP gets a sender whose bytes the peer reads, and none once closed", {
  ignore: !PERMS_FFI,
}, async (t) => {
  const hosts = ["127.0.0.1", ...(hasIPv6Loopback() ? ["::1"] : [])];
  for (const host of hosts) {
    await t.step(`over ${host}`, async () => {
      const p = await tcpPair(host);
      try {
        const send = directSender(p.server);
        assert.ok(send, `no direct sender for a plain TCP connection over ${host}`);
        const msg = new TextEncoder().encode("hello, direct");
        assert.equal(send(msg), msg.length);
        const got = await p.client.read();
        assert.deepEqual(got, msg);
        p.server.close();
        assert.equal(send(msg), 0, "a closed connection must not be written");
      } finally {
        p.close();
      }
    });
  }
});

Deno.test("direct send: never for a TLS connection, whose bytes must be encrypted", async () => {
  const f = await makeFixture("directca");
  try {
    const srv = await f.creds("srv", "node", { sans: ["127.0.0.1"] });
    const alice = await f.creds("alice", "user");
    for (const listener of ["deno", "node"] as const) {
      const l = await tlsListen("127.0.0.1", 0, { creds: srv, listener });
      const port = Number(l.addr.split("!").at(-1));
      const it = l[Symbol.asyncIterator]();
      try {
        const [accepted, c] = await Promise.all([
          it.next(),
          tlsDial("127.0.0.1", port, { creds: alice }),
        ]);
        const s = accepted.value as Conn;
        try {
          assert.equal(directSender(s), null, `a direct sender for a TLS connection (${listener})`);
          // And the bytes still arrive through TLS.
          await s.write(new TextEncoder().encode("sealed"));
          assert.equal(new TextDecoder().decode((await c.read())!), "sealed");
        } finally {
          s.close();
          c.close();
        }
      } finally {
        l.close();
        await it.return?.();
      }
    }
  } finally {
    await f.cleanup();
  }
});

/** Replies larger than a loopback socket takes in one go. */
const READ = 16 << 20;
const MSIZE = READ + 24;

Deno.test("serve over plain TCP: large replies the socket takes only in part arrive whole and in order", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-direct-" });
  const listener = tcpListen("127.0.0.1", 0);
  const served: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const c of listener) served.push(serve(c, new HostTree(dir), { maxMsize: MSIZE }));
  })();
  try {
    // Each 4-byte word its own offset: a piece out of place shows.
    const data = new Uint8Array(4 * READ);
    const dv = new DataView(data.buffer);
    for (let i = 0; i < data.length; i += 4) dv.setUint32(i, i, true);
    await Deno.writeFile(`${dir}/big`, data);
    const conn = await tcpDial("127.0.0.1", Number(listener.addr.split("!")[2]));
    const frames = new FrameReader(conn, MSIZE);
    const next = async (): Promise<Msg> => decode((await frames.next())!);
    try {
      await conn.write(encode({
        type: MsgType.Tversion,
        tag: NOTAG,
        msize: MSIZE,
        version: "9P2000",
      }));
      assert.equal((await next()).type, MsgType.Rversion);
      await conn.write(encode({
        type: MsgType.Tattach,
        tag: 1,
        fid: 0,
        afid: NOFID,
        uname: "glenda",
        aname: "",
      }));
      assert.equal((await next()).type, MsgType.Rattach);
      await conn.write(encode({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: ["big"] }));
      assert.equal((await next()).type, MsgType.Rwalk);
      await conn.write(encode({ type: MsgType.Topen, tag: 1, fid: 1, mode: OREAD }));
      assert.equal((await next()).type, MsgType.Ropen);
      const got = new Uint8Array(data.length);
      let off = 0;
      let k = 0;
      while (off < data.length) {
        // One request at a time, each reply larger than a socket holds,
        // and now and then a pause before reading it.
        await conn.write(encode({
          type: MsgType.Tread,
          tag: 1,
          fid: 1,
          offset: BigInt(off),
          count: READ,
        }));
        if (k++ % 2 === 0) await new Promise((r) => setTimeout(r, 20));
        const r = await next();
        if (r.type !== MsgType.Rread) assert.fail(`expected Rread, got type ${r.type}`);
        assert.ok(r.data.length > 0, "an empty read before the end");
        got.set(r.data, off);
        off += r.data.length;
      }
      assert.ok(got.every((b, i) => b === data[i]), "the file came back changed");
    } finally {
      conn.close();
    }
  } finally {
    listener.close();
    await accepting;
    await Promise.all(served);
    await Deno.remove(dir, { recursive: true });
  }
});
