import assert from "node:assert/strict";
import tls from "node:tls";
import { pattern } from "../fixture.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import { tlsDial, tlsListen, tlsWrapClient } from "../../lib/transport/tls.ts";
import {
  type IdentifiedConn,
  type LinkOptions,
  loadCredentials,
  watchCredentials,
} from "../../lib/auth/link.ts";
import { readStream, StyxClient } from "../../lib/styx/client.ts";
import { serve } from "../../lib/styx/server.ts";
import { OREAD } from "../../lib/styx/types.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { makeFixture, selfSigned } from "../auth/fixture.ts";
import { ferryArgv } from "../../lib/self.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function port(addr: string): number {
  return Number(addr.split("!").at(-1));
}

/** A listener on Deno's TLS whose refusals are collected; `next()` waits for the next one. */
async function denoListener(opts: LinkOptions) {
  const reasons: string[] = [];
  const l = await tlsListen("127.0.0.1", 0, {
    ...opts,
    listener: "deno",
    onRefused: (_a, r) => reasons.push(r),
  });
  const accepted: Conn[] = [];
  const loop = (async () => {
    for await (const c of l) accepted.push(c);
  })();
  return {
    l,
    port: port(l.addr),
    accepted,
    reasons,
    async reason(n: number): Promise<string> {
      for (let i = 0; i < 2000 && reasons.length <= n; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      return reasons[n] ?? "(no refusal reported)";
    },
    async close() {
      l.close();
      await loop;
      for (const c of accepted) c.close();
    },
  };
}

Deno.test("Deno's TLS listener: only clients that prove a valid certificate get a Conn", async (t) => {
  const f = await makeFixture("nativeca");
  try {
    const srv = await f.creds("srv", "node", { sans: ["127.0.0.1"] });
    const alice = await f.creds("alice", "user");
    const mallory = await f.creds("mallory", "user");
    await f.ca.revoke("mallory");
    const crl = await f.ca.crlPem();
    const forged = await selfSigned("alice", "user", srv.ca);
    const h = await denoListener({ creds: { ...srv, crl } });
    try {
      await t.step("a good client: identity reaches the server, bytes both ways", async () => {
        const c = await tlsDial("127.0.0.1", h.port, { creds: alice });
        for (let i = 0; i < 2000 && h.accepted.length === 0; i++) {
          await new Promise((r) => setTimeout(r, 5));
        }
        const s = h.accepted[0]!;
        assert.equal(s.peer.identity, "alice");
        assert.equal(s.peer.authenticated, true);
        await c.write(enc.encode("Tversion"));
        assert.equal(dec.decode((await s.read())!), "Tversion");
        await s.write(enc.encode("Rversion"));
        assert.equal(dec.decode((await c.read())!), "Rversion");
        c.close();
      });
      await t.step("a revoked certificate is refused, both ends say why", async () => {
        const n = h.reasons.length;
        const err = await tlsDial("127.0.0.1", h.port, { creds: mallory }).catch((e: Error) => e);
        assert.ok(err instanceof Error, "mallory must not get a Conn");
        assert.match(err.message, /refused the link: .*'mallory' .*has been revoked/);
        assert.match(await h.reason(n), /'mallory' \(serial [0-9a-f]+\) has been revoked/);
        assert.equal(h.accepted.length, 1);
      });
      await t.step("a forged (self-signed) certificate with a good name is refused", async () => {
        const n = h.reasons.length;
        const err = await tlsDial("127.0.0.1", h.port, { creds: forged }).catch((e: Error) => e);
        assert.ok(err instanceof Error, "a forged certificate must not get a Conn");
        assert.match(err.message, /refused the link: client certificate 'alice' is self-signed/);
        assert.match(await h.reason(n), /client certificate 'alice' is self-signed/);
        assert.equal(h.accepted.length, 1);
      });
      await t.step("a node:tls client (as through a tunnel) answers the challenge", async () => {
        const raw = await tcpDial("127.0.0.1", h.port);
        const c = await tlsWrapClient(raw, { creds: alice, peer: "srv" });
        assert.equal(c.peer.identity, "srv");
        for (let i = 0; i < 2000 && h.accepted.length < 2; i++) {
          await new Promise((r) => setTimeout(r, 5));
        }
        assert.equal(h.accepted[1]?.peer.identity, "alice");
        c.close();
      });
      await t.step("a peer that speaks only ferry-link/1 is told what to do", async () => {
        const n = h.reasons.length;
        // What a ferry-link/1 client sends: its proof, bound to the session.
        const s = tls.connect({
          host: "127.0.0.1",
          port: h.port,
          ca: srv.ca,
          cert: alice.cert,
          key: alice.key,
          rejectUnauthorized: false,
        });
        const got = await new Promise<string>((resolve) => {
          let text = "";
          s.on("secureConnect", () => s.write("ferry-link/1 proof AAAA\n"));
          s.on("data", (d) => (text += String(d)));
          s.on("error", () => {});
          s.on("close", () => resolve(text));
        });
        assert.match(got, /ferry-link\/1 refused client speaks only ferry-link\/1/);
        assert.match(await h.reason(n), /client speaks only ferry-link\/1/);
      });
      await t.step("a TLS 1.2 client gets nothing without the ferry-link/2 proof", async () => {
        // Deno's TLS server also negotiates TLS 1.2; the link proof is still required.
        const n = h.reasons.length;
        const s = tls.connect({
          host: "127.0.0.1",
          port: h.port,
          ca: srv.ca,
          maxVersion: "TLSv1.2",
          rejectUnauthorized: false,
        });
        const got = await new Promise<{ text: string; protocol: string | null }>((resolve) => {
          let text = "";
          let protocol: string | null = null;
          const done = () => {
            clearTimeout(timer);
            s.destroy();
            resolve({ text, protocol });
          };
          const timer = setTimeout(done, 10_000);
          s.on("secureConnect", () => {
            protocol = s.getProtocol();
            s.write("Tversion\n");
          });
          s.on("data", (d) => {
            text += String(d);
            if (/refused/.test(text)) done();
          });
          s.on("error", done);
          s.on("end", done);
          s.on("close", done);
        });
        assert.equal(got.protocol, "TLSv1.2");
        assert.match(got.text, /ferry-link\/1 refused client presented no certificate/);
        assert.match(await h.reason(n), /client presented no certificate/);
        assert.equal(h.accepted.length, 2);
      });
      await t.step("a TLS client that says nothing is dropped, no Conn", async () => {
        const quiet = await denoListener({ creds: srv, handshakeTimeoutMs: 300 });
        try {
          const tcp = await Deno.connect({ hostname: "127.0.0.1", port: quiet.port });
          const c = await Deno.startTls(tcp, {
            hostname: "127.0.0.1",
            caCerts: [srv.ca],
            unsafelyDisableHostnameVerification: true,
          });
          const b = new Uint8Array(4096);
          let text = "";
          while (true) {
            const n = await c.read(b).catch(() => null);
            if (n === null) break;
            text += dec.decode(b.subarray(0, n));
          }
          c.close();
          assert.match(text, /^ferry-link\/2 challenge /);
          assert.match(await quiet.reason(0), /did not finish within 300 ms/);
          assert.equal(quiet.accepted.length, 0);
        } finally {
          await quiet.close();
        }
      });
    } finally {
      await h.close();
    }
  } finally {
    await f.cleanup();
  }
});

Deno.test("Deno's TLS listener: renewal and revocation under open sessions", async (t) => {
  const f = await makeFixture("nativerot");
  const dir = await Deno.makeTempDir({ prefix: "ferry-native-certs-" });
  try {
    const write = async (c: { ca: string; cert: string; key: string }) => {
      await Deno.writeTextFile(`${dir}/ca.pem`, c.ca);
      await Deno.writeTextFile(`${dir}/srv.pem`, c.cert);
      await Deno.writeTextFile(`${dir}/srv.key`, c.key, { mode: 0o600 });
    };
    await write(await f.creds("srv", "node", { sans: ["127.0.0.1"] }));
    const alice = await f.creds("alice", "user");
    const bob = await f.creds("bob", "user");
    const w = await watchCredentials(dir, "srv", { intervalMs: 50 });
    const h = await denoListener({ creds: w, revocationCheckMs: 0 });
    try {
      const c1 = await tlsDial("127.0.0.1", h.port, { creds: alice }) as IdentifiedConn;
      const c2 = await tlsDial("127.0.0.1", h.port, { creds: bob });
      for (let i = 0; i < 2000 && h.accepted.length < 2; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      const [s1, s2] = [h.accepted[0]!, h.accepted[1]!];
      await t.step("a renewed certificate serves new handshakes; sessions stay", async () => {
        await write(await f.creds("srv", "node", { sans: ["127.0.0.1"] }));
        let c3: IdentifiedConn | undefined;
        for (let i = 0; i < 400; i++) {
          await new Promise((r) => setTimeout(r, 10));
          const c = await tlsDial("127.0.0.1", h.port, { creds: alice }) as IdentifiedConn;
          if (c.peerCert.serial !== c1.peerCert.serial) {
            c3 = c;
            break;
          }
          c.close();
        }
        assert.ok(c3, "new handshakes use the renewed certificate");
        c3.close();
        await c1.write(enc.encode("still here"));
        assert.equal(dec.decode((await s1.read())!), "still here");
      });
      await t.step("a new CRL closes the revoked client's open session only", async () => {
        await f.ca.revoke("bob");
        await Deno.writeTextFile(`${dir}/crl.pem`, await f.ca.crlPem());
        assert.equal(await c2.read(), null, "bob's session ends");
        await s2.closed;
        const n = h.reasons.length;
        assert.match(await h.reason(n - 1), /certificate of 'bob' was revoked: session closed/);
        await c1.write(enc.encode("alice too"));
        assert.equal(dec.decode((await s1.read())!), "alice too");
        const err = await tlsDial("127.0.0.1", h.port, { creds: bob }).catch((e: Error) => e);
        assert.ok(err instanceof Error);
        assert.match(err.message, /'bob' .*has been revoked/);
      });
      c1.close();
    } finally {
      await h.close();
      w.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    await f.cleanup();
  }
});

Deno.test("Deno's TLS listener: a 64 MiB Styx read arrives intact", async () => {
  const f = await makeFixture("nativeread");
  const tmp = await Deno.makeTempDir({ prefix: "ferry-native-read-" });
  try {
    const srv = await f.creds("srv", "node", { sans: ["127.0.0.1"] });
    await Deno.mkdir(`${tmp}/user`);
    const user = await f.ca.issue("glenda", { kind: "user" });
    await Deno.writeTextFile(`${tmp}/user/ca.pem`, f.ca.certPem);
    await Deno.writeTextFile(`${tmp}/user/glenda.pem`, user.certPem);
    await Deno.writeTextFile(`${tmp}/user/glenda.key`, user.keyPem, { mode: 0o600 });
    await Deno.mkdir(`${tmp}/data`);
    const size = 64 * 1024 * 1024 + 4321;
    const want = pattern(size, 7);
    await Deno.writeFile(`${tmp}/data/big`, want);
    const l = await tlsListen("127.0.0.1", 0, { creds: srv, listener: "deno" });
    const sessions: Promise<void>[] = [];
    const loop = (async () => {
      for await (const c of l) sessions.push(serve(c, new HostTree(`${tmp}/data`)));
    })();
    try {
      const conn = await tlsDial("127.0.0.1", port(l.addr), {
        creds: await loadCredentials(`${tmp}/user`, "glenda"),
      });
      const c = await StyxClient.connect(conn);
      try {
        const fh = await c.openPath(await c.attach("glenda"), "/big", OREAD);
        const got = new Uint8Array(size);
        let off = 0;
        for await (const chunk of readStream(fh, { window: 8 })) {
          got.set(chunk, off);
          off += chunk.length;
        }
        await fh.close();
        assert.equal(off, size);
        let same = true;
        for (let i = 0; i < size; i++) {
          if (got[i] !== want[i]) {
            same = false;
            break;
          }
        }
        assert.ok(same, "the bytes read differ from the file");
      } finally {
        await c.close();
      }
    } finally {
      l.close();
      await loop;
      await Promise.all(sessions);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
    await f.cleanup();
  }
});

Deno.test("ferry listen with FERRY_TLS_LISTENER=deno serves a file and names a refused peer", async () => {
  const f = await makeFixture("nativecmd");
  const tmp = await Deno.makeTempDir({ prefix: "ferry-native-cmd-" });
  let proc: Deno.ChildProcess | undefined;
  try {
    const put = async (dir: string, name: string, kind: "node" | "user") => {
      const o = kind === "node" ? { kind, sans: ["127.0.0.1"] } : { kind };
      const issued = await f.ca.issue(name, o);
      await Deno.mkdir(dir);
      await Deno.writeTextFile(`${dir}/ca.pem`, f.ca.certPem);
      await Deno.writeTextFile(`${dir}/${name}.pem`, issued.certPem);
      await Deno.writeTextFile(`${dir}/${name}.key`, issued.keyPem, { mode: 0o600 });
    };
    await put(`${tmp}/node`, "srv", "node");
    await put(`${tmp}/user`, "glenda", "user");
    await Deno.mkdir(`${tmp}/data`);
    await Deno.writeTextFile(`${tmp}/data/hello`, "hello over Deno's TLS\n");
    const [exe, ...pre] = ferryArgv();
    proc = new Deno.Command(exe!, {
      args: [...pre, "listen", "--certs", `${tmp}/node`, "tcp!127.0.0.1!0", `${tmp}/data`],
      env: { FERRY_TLS_LISTENER: "deno" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const errText = new Response(proc.stderr).text();
    const out = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await out.read();
      if (done) break;
      text += value;
    }
    out.releaseLock();
    proc.stdout.cancel().catch(() => {});
    const addr = /tcp!\S+/.exec(text)?.[0];
    assert.ok(addr, `ferry listen said '${text}'`);
    const conn = await tlsDial("127.0.0.1", port(addr), {
      creds: await loadCredentials(`${tmp}/user`, "glenda"),
    });
    const c = await StyxClient.connect(conn);
    try {
      const fh = await c.openPath(await c.attach("glenda"), "/hello", OREAD);
      assert.equal(dec.decode(await fh.read(0n, 100)), "hello over Deno's TLS\n");
      await fh.close();
    } finally {
      await c.close();
    }
    // A peer that speaks only ferry-link/1 is refused, and the log says why.
    const srvCa = f.ca.certPem;
    const alice = await f.creds("alice", "user");
    const s = tls.connect({
      host: "127.0.0.1",
      port: port(addr),
      ca: srvCa,
      cert: alice.cert,
      key: alice.key,
      rejectUnauthorized: false,
    });
    const said = await new Promise<string>((resolve) => {
      let text = "";
      const done = () => {
        clearTimeout(t);
        s.destroy();
        resolve(text);
      };
      // node:tls in Deno may not report the end of a socket the server closed.
      const t = setTimeout(done, 10_000);
      s.on("secureConnect", () => s.write("ferry-link/1 proof AAAA\n"));
      s.on("data", (d) => {
        text += String(d);
        if (/refused/.test(text)) done();
      });
      s.on("error", done);
      s.on("end", done);
      s.on("close", done);
    });
    assert.match(said, /^ferry-link\/2 challenge /);
    proc.kill("SIGTERM");
    await proc.status;
    proc = undefined;
    const err = await errText;
    assert.match(err, /refused tcp!127\.0\.0\.1!\d+: client speaks only ferry-link\/1/);
  } finally {
    if (proc) {
      proc.kill("SIGTERM");
      await proc.status;
    }
    await Deno.remove(tmp, { recursive: true });
    await f.cleanup();
  }
});
