import { concatBytes } from "../../lib/bytes.ts";
import assert from "node:assert/strict";
import type { Conn } from "../../lib/transport/conn.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import { tlsDial, tlsListen, tlsWrapClient } from "../../lib/transport/tls.ts";
import {
  linkMessage,
  linkSign,
  nativeTlsAvailable,
  ownCertDer,
} from "../../lib/transport/tls_native.ts";
import { pemBlocks, toBase64 } from "../../lib/auth/keys.ts";
import type { Credentials } from "../../lib/auth/link.ts";
import { makeFixture } from "../auth/fixture.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function port(addr: string): number {
  return Number(addr.split("!").at(-1));
}

/** A hand-driven ferry-link/2 client: TLS without a client certificate, lines by hand. */
class RawClient {
  #buf = "";
  constructor(readonly conn: Deno.TlsConn) {}
  static async dial(p: number, ca: string): Promise<RawClient> {
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: p });
    tcp.setNoDelay(true);
    const c = await Deno.startTls(tcp, {
      hostname: "127.0.0.1",
      caCerts: [ca],
      unsafelyDisableHostnameVerification: true,
    });
    await c.handshake();
    return new RawClient(c);
  }
  async line(): Promise<string | null> {
    const b = new Uint8Array(8192);
    while (!this.#buf.includes("\n")) {
      const n = await this.conn.read(b).catch(() => null);
      if (n === null) return null;
      this.#buf += dec.decode(b.subarray(0, n));
    }
    const i = this.#buf.indexOf("\n");
    const l = this.#buf.slice(0, i);
    this.#buf = this.#buf.slice(i + 1);
    return l;
  }
  async send(line: string): Promise<void> {
    await this.conn.write(enc.encode(line + "\n"));
  }
  async challenge(): Promise<Uint8Array> {
    const l = await this.line();
    const m = /^ferry-link\/2 challenge (\S+)$/.exec(l ?? "");
    assert.ok(m, `expected a challenge, got ${l}`);
    return Uint8Array.from(atob(m[1]!), (c) => c.charCodeAt(0));
  }
  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

Deno.test("ferry-link/2: direct dials over Deno's TLS, forged proofs refused", async (t) => {
  const f = await makeFixture("testca");
  const srv = await f.creds("srv", "node", { sans: ["127.0.0.1"] });
  const alice = await f.creds("alice", "user");
  const bob = await f.creds("bob", "user");
  const reasons: string[] = [];
  const l = await tlsListen("127.0.0.1", 0, { creds: srv, onRefused: (_a, r) => reasons.push(r) });
  const accepted: Conn[] = [];
  const serving = (async () => {
    for await (const c of l) accepted.push(c);
  })();
  const p = port(l.addr);
  const srvDer = pemBlocks(srv.cert, "CERTIFICATE")[0]!;
  const lastReason = async (n: number): Promise<string> => {
    for (let i = 0; i < 500 && reasons.length < n; i++) await new Promise((r) => setTimeout(r, 5));
    return reasons.at(-1) ?? "";
  };
  try {
    await t.step("tlsDial carries data both ways, identity on both ends", async () => {
      const c = await tlsDial("127.0.0.1", p, { creds: alice });
      if (nativeTlsAvailable()) assert.equal(c.constructor.name, "NativeTlsConn");
      assert.equal(c.peer.identity, "srv");
      while (accepted.length === 0) await new Promise((r) => setTimeout(r, 5));
      const s = accepted.shift()!;
      assert.equal(s.peer.identity, "alice");
      const big = new Uint8Array(3 << 20).map((_, i) => i % 251);
      const got: Uint8Array[] = [];
      let n = 0;
      const reading = (async () => {
        while (n < big.length) {
          const b = await s.read();
          if (!b) break;
          got.push(b);
          n += b.length;
        }
      })();
      await c.write(big);
      await reading;
      const all = concatBytes(got, n);
      assert.deepEqual(all, big);
      await s.write(enc.encode("Rversion"));
      assert.equal(dec.decode((await c.read())!), "Rversion");
      c.close();
      assert.equal(await s.read(), null);
    });

    await t.step("a resolved write has finished with its buffer, both ends", async () => {
      const c = await tlsDial("127.0.0.1", p, { creds: alice });
      while (accepted.length === 0) await new Promise((r) => setTimeout(r, 5));
      const s = accepted.shift()!;
      for (const [from, to] of [[s, c], [c, s]] as const) {
        assert.equal(from.releasesWrites, true);
        const buf = new Uint8Array(64 * 1024);
        const rounds = 64;
        const received = (async () => {
          let n = 0;
          let bad = 0;
          while (n < rounds * buf.length) {
            const b = await to.read();
            if (!b) break;
            for (let i = 0; i < b.length; i++) if (b[i] === 0xee) bad++;
            n += b.length;
          }
          return { n, bad };
        })();
        for (let i = 0; i < rounds; i++) {
          buf.fill(i % 200);
          await from.write(buf);
          buf.fill(0xee); // the caller may reuse the buffer now
        }
        const r = await received;
        assert.equal(r.n, rounds * buf.length);
        assert.equal(r.bad, 0, "bytes overwritten after the write resolved reached the peer");
      }
      c.close();
      s.close();
    });

    await t.step("a ferry-link/1 client (node:tls) still works against the listener", async () => {
      const c = await tlsWrapClient(await tcpDial("127.0.0.1", p), {
        creds: alice,
        peer: "srv",
      });
      assert.equal(c.constructor.name, "TlsConn");
      while (accepted.length === 0) await new Promise((r) => setTimeout(r, 5));
      const s = accepted.shift()!;
      assert.equal(s.peer.identity, "alice");
      await c.write(enc.encode("ping"));
      assert.equal(dec.decode((await s.read())!), "ping");
      c.close();
      s.close();
    });

    const forged = async (
      name: string,
      proof: (nonce: Uint8Array, own: Credentials) => Promise<string>,
      want: RegExp,
    ) => {
      await t.step(name, async () => {
        const before = reasons.length;
        const rc = await RawClient.dial(p, srv.ca);
        try {
          const nonce = await rc.challenge();
          await rc.send(await proof(nonce, alice));
          const verdict = await rc.line();
          assert.match(verdict ?? "", /^ferry-link\/\d refused /);
          assert.match(verdict!, want);
          assert.match(await lastReason(before + 1), want);
          assert.equal(await rc.line(), null, "the server hangs up");
        } finally {
          rc.close();
        }
      });
    };

    await forged(
      "alice's certificate with a signature by another key",
      async (nonce, own) => {
        const msg = await linkMessage(nonce, ownCertDer(own), srvDer);
        return `ferry-link/2 proof ${toBase64(ownCertDer(own))} ${await linkSign(bob, msg)}`;
      },
      /client 'alice' did not prove possession of its certificate key/,
    );
    await forged(
      "a signature over another session's challenge",
      async (_nonce, own) => {
        const other = crypto.getRandomValues(new Uint8Array(32));
        const msg = await linkMessage(other, ownCertDer(own), srvDer);
        return `ferry-link/2 proof ${toBase64(ownCertDer(own))} ${await linkSign(own, msg)}`;
      },
      /client 'alice' did not prove possession of its certificate key/,
    );
    await forged(
      "a signature naming another server",
      async (nonce, own) => {
        const msg = await linkMessage(nonce, ownCertDer(own), ownCertDer(bob));
        return `ferry-link/2 proof ${toBase64(ownCertDer(own))} ${await linkSign(own, msg)}`;
      },
      /client 'alice' did not prove possession of its certificate key/,
    );
    await forged(
      "a certificate that is not one",
      () => Promise.resolve(`ferry-link/2 proof ${toBase64(enc.encode("not a certificate"))} AAAA`),
      /client presented a certificate that cannot be parsed/,
    );
    await forged(
      "no proof at all",
      () => Promise.resolve("hello"),
      /client presented no certificate/,
    );
  } finally {
    l.close();
    await serving;
    for (const c of accepted) c.close();
    await f.cleanup();
  }
});
