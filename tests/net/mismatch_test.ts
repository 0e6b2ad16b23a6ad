/**
 * Both ends must agree about -A. A plain client meeting a TLS listener, and
 * a TLS client meeting a plain one, are told which way round it is: over
 * real TCP, with `ferry listen` as the server and `ferry 9p` and the shell's
 * `mount` as clients, each a process of its own.
 */
import assert from "node:assert/strict";
import { makeFixture } from "../auth/fixture.ts";
import { writeCredentials } from "../../lib/auth/ca.ts";
import { NEEDS_TLS, PEER_NEEDS_TLS, SPEAKS_PLAIN } from "../../lib/net/mismatch.ts";

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function ferry(args: string[], env: Record<string, string>) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FERRY, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
  }).output();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

/** Start `ferry listen ARGS` and resolve with its port once it listens. */
async function listen(args: string[], env: Record<string, string>) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FERRY, "listen", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
  }).spawn();
  child.stderr.pipeTo(new WritableStream()).catch(() => {});
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`ferry listen ${args.join(" ")} ended early`);
    buf += value;
    const m = /listening on tcp!\S+!(\d+)/.exec(buf);
    if (m) {
      reader.releaseLock();
      child.stdout.cancel().catch(() => {});
      return {
        port: Number(m[1]),
        async stop() {
          child.kill("SIGTERM");
          await child.status;
        },
      };
    }
  }
}

Deno.test("mismatched -A: each side is told which way round it is", async (t) => {
  const f = await makeFixture("mismatchca");
  const tmp = await Deno.makeTempDir({ prefix: "ferry-mismatch-" });
  const certs = `${tmp}/certs`;
  const stops: (() => Promise<void>)[] = [];
  try {
    for (
      const [name, kind, sans] of [["srv", "node", ["127.0.0.1"]], ["alice", "user", []]] as const
    ) {
      const c = await f.creds(name, kind, { sans: [...sans] });
      await writeCredentials(certs, name, c.cert, c.key);
      await Deno.writeTextFile(`${certs}/ca.pem`, c.ca);
    }
    await Deno.mkdir(`${tmp}/share`);
    await Deno.mkdir(`${tmp}/root`);
    await Deno.writeTextFile(`${tmp}/share/hello`, "hello\n");
    const srvEnv = { FERRY_CERTS: certs, FERRY_NAME: "srv" };
    const env = { FERRY_CERTS: certs, FERRY_NAME: "alice", USER: "alice" };
    const plain = await listen(["-A", "tcp!127.0.0.1!0", `${tmp}/share`], srvEnv);
    stops.push(plain.stop);
    const tls = await listen(["tcp!127.0.0.1!0", `${tmp}/share`], srvEnv);
    stops.push(tls.stop);
    const plainAddr = `tcp!127.0.0.1!${plain.port}`;
    const tlsAddr = `tcp!127.0.0.1!${tls.port}`;

    await t.step("each listener works with a client that agrees with it", async () => {
      const a = await ferry(["9p", "-A", "-a", plainAddr, "read", "hello"], env);
      assert.equal(a.out, "hello\n", a.err);
      const b = await ferry(["9p", "-a", tlsAddr, "read", "hello"], env);
      assert.equal(b.out, "hello\n", b.err);
    });

    await t.step("ferry 9p -A against a TLS listener", async () => {
      const r = await ferry(["9p", "-A", "-a", tlsAddr, "read", "hello"], env);
      assert.equal(r.code, 1);
      assert.ok(r.err.includes(NEEDS_TLS), r.err);
    });

    await t.step("ferry 9p with TLS against a plain listener", async () => {
      for (const extra of [[], ["-C", "aes_128_gcm"]]) {
        const r = await ferry(["9p", ...extra, "-a", plainAddr, "read", "hello"], env);
        assert.equal(r.code, 1);
        assert.ok(r.err.includes(`cannot dial '${plainAddr}': ${SPEAKS_PLAIN}`), r.err);
      }
    });

    await t.step("the shell's mount, both ways round", async () => {
      const r = await ferry([
        "sh",
        "-r",
        `${tmp}/root`,
        "-c",
        [
          "mkdir /n/local",
          `mount -A '${tlsAddr}' /n/local`,
          `mount '${plainAddr}' /n/local`,
          `mount -A --peer srv '${plainAddr}' /n/local`,
          `mount '${tlsAddr}' /n/local`,
          "cat /n/local/hello",
        ].join("; "),
      ], env);
      const lines = r.err.trim().split("\n").filter((l) => !l.includes("warning: -A given"));
      assert.equal(lines.length, 3, r.err);
      assert.ok(lines[0]!.startsWith("mount: ") && lines[0]!.includes(NEEDS_TLS), lines[0]);
      assert.ok(lines[1]!.includes(`cannot dial '${plainAddr}': ${SPEAKS_PLAIN}`), lines[1]);
      assert.ok(lines[2]!.includes(PEER_NEEDS_TLS), lines[2]);
      assert.equal(r.out, "hello\n");
    });

    await t.step("ferry mount and ferry 9p refuse --peer with -A before dialling", async () => {
      for (const cmd of [["mount", plainAddr, `${tmp}/root`], ["9p", "-a", plainAddr, "ls", "/"]]) {
        const r = await ferry([cmd[0]!, "-A", "--peer", "srv", ...cmd.slice(1)], env);
        assert.equal(r.code, 1);
        assert.ok(r.err.includes(PEER_NEEDS_TLS), r.err);
        assert.doesNotMatch(r.err, /warning/);
      }
    });
  } finally {
    for (const s of stops) await s();
    await f.cleanup();
    await Deno.remove(tmp, { recursive: true });
  }
});
