/**
 * issue → enrol → mount → renew → revoke with every party a separate
 * process: CA commands, the signer, a TLS listener and one-shot clients.
 */
import assert from "node:assert/strict";

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function ferry(args: string[], env: Record<string, string> = {}) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FERRY, ...args],
    stdout: "piped",
    stderr: "piped",
    env,
  }).output();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

/** Start a long-running ferry command; resolves with the first stdout line matching `re`. */
async function daemon(args: string[], re: RegExp) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FERRY, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) {
      const err = await new Response(child.stderr).text();
      throw new Error(`'ferry ${args.join(" ")}' ended early: ${err}`);
    }
    buf += value;
    const m = re.exec(buf);
    if (m) {
      reader.releaseLock();
      child.stdout.cancel().catch(() => {});
      child.stderr.cancel().catch(() => {});
      return {
        match: m,
        async stop() {
          try {
            child.kill("SIGTERM");
          } catch { /* gone */ }
          await child.status;
        },
      };
    }
  }
}

Deno.test("e2e: issue, enrol, mount, renew, revoke as separate processes", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-e2e-auth-" });
  const CA = `${tmp}/ca`, NODE = `${tmp}/node`, USER = `${tmp}/user`, SRC = `${tmp}/src`;
  await Deno.mkdir(SRC);
  await Deno.writeTextFile(`${SRC}/hello.txt`, "hello from fs1\n");
  const stops: (() => Promise<void>)[] = [];
  try {
    let signerAddr = "";
    await t.step("CA and signer", async () => {
      const init = await ferry(["ca", "init", "e2eca", "--dir", CA]);
      assert.equal(init.code, 0, init.err);
      const s = await daemon(["signer", "--dir", CA, "tcp!127.0.0.1!0"], /on (tcp!\S+)/);
      stops.push(s.stop);
      signerAddr = s.match[1]!;
    });

    await t.step("enrol a node and a user with single-use tokens", async () => {
      const tn = await ferry(["ca", "token", "fs1", "--node", "--dir", CA]);
      assert.equal(tn.code, 0, tn.err);
      const en = await ferry(["enroll", signerAddr, tn.out.trim(), "--dir", NODE]);
      assert.equal(en.code, 0, en.err);
      assert.match(en.out, /enrolled node 'fs1'/);
      const again = await ferry(["enroll", signerAddr, tn.out.trim(), "--dir", `${tmp}/x`]);
      assert.notEqual(again.code, 0);
      assert.match(again.err, /Enrolment token was already used/);
      const tu = await ferry(["ca", "token", "alice", "--user", "--group", "admins", "--dir", CA]);
      const eu = await ferry(["enroll", signerAddr, tu.out.trim(), "--dir", USER]);
      assert.equal(eu.code, 0, eu.err);
      const list = await ferry(["ca", "list", "--dir", CA]);
      assert.match(list.out, /fs1\s+node\s+valid/);
      assert.match(list.out, /alice\s+user\s+valid\s+\S+\s+admins/);
    });

    const mountLs = () =>
      ferry(["9p", "--certs", USER, "--peer", "fs1", "-a", listenAddr, "ls", "/"]);
    let listenAddr = "";
    await t.step("mount over mutual TLS", async () => {
      const l = await daemon(
        ["listen", "--certs", NODE, "tcp!127.0.0.1!0", SRC],
        /listening on (tcp!\S+)/,
      );
      stops.push(l.stop);
      listenAddr = l.match[1]!;
      const ls = await mountLs();
      assert.equal(ls.code, 0, ls.err);
      assert.match(ls.out, /hello.txt/);
      // Without credentials the same client is refused.
      const none = await ferry([
        "9p",
        "--certs",
        `${tmp}/nothing`,
        "--peer",
        "fs1",
        "-a",
        listenAddr,
        "ls",
        "/",
      ]);
      assert.notEqual(none.code, 0);
      assert.match(none.err, /no credentials in/);
    });

    await t.step("plain client against TLS, TLS client against -A: both refused", async () => {
      const plain = await ferry(["9p", "-A", "-a", listenAddr, "ls", "/"]);
      assert.notEqual(plain.code, 0);
      assert.doesNotMatch(plain.out, /hello.txt/);
      assert.match(plain.err, /the server requires TLS: drop -A/);
      const a = await daemon(["listen", "-A", "tcp!127.0.0.1!0", SRC], /listening on (tcp!\S+)/);
      try {
        const r = await ferry([
          "9p",
          "--certs",
          USER,
          "--peer",
          "fs1",
          "-a",
          a.match[1]!,
          "ls",
          "/",
        ]);
        assert.notEqual(r.code, 0);
        assert.match(r.err, /the server speaks plain Styx \(it was started with -A\)/);
      } finally {
        await a.stop();
      }
      // The TLS listener is still serving.
      const ls = await mountLs();
      assert.equal(ls.code, 0, ls.err);
    });

    await t.step("renew the user; mounting still works with the new key", async () => {
      const before = await Deno.readTextFile(`${USER}/alice.pem`);
      const r = await ferry(["renew", "--dir", USER]);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /renewed 'alice'/);
      assert.notEqual(await Deno.readTextFile(`${USER}/alice.pem`), before);
      const ls = await mountLs();
      assert.equal(ls.code, 0, ls.err);
    });

    await t.step("revoke the user: no renewal, no new connection", async () => {
      const rv = await ferry(["ca", "revoke", "alice", "--dir", CA]);
      assert.equal(rv.code, 0, rv.err);
      const r = await ferry(["renew", "--dir", USER]);
      assert.notEqual(r.code, 0);
      assert.match(r.err, /has been revoked/);
      // The node learns the new CRL from the signer (as 'ferry renew --daemon' does).
      const rn = await ferry(["renew", "--dir", NODE]);
      assert.equal(rn.code, 0, rn.err);
      assert.match(await Deno.readTextFile(`${NODE}/crl.pem`), /X509 CRL/);
      const l2 = await daemon(
        ["listen", "--certs", NODE, "tcp!127.0.0.1!0", SRC],
        /listening on (tcp!\S+)/,
      );
      stops.push(l2.stop);
      listenAddr = l2.match[1]!;
      const ls = await mountLs();
      assert.notEqual(ls.code, 0);
      assert.match(ls.err, /revoked/);
    });
  } finally {
    for (const s of stops.reverse()) await s();
    await Deno.remove(tmp, { recursive: true });
  }
});
