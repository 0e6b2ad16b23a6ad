/**
 * A user directory holding crl.pem, as every machine's should: a one-shot
 * `ferry 9p ls` over mutual TLS reads the CRL without loading the X.509
 * library (whose cold load costs a one-shot command more than its whole
 * exchange), and still refuses a revoked server.
 */
import assert from "node:assert/strict";
import { makeFixture } from "./fixture.ts";
import { writeCredentials } from "../../lib/auth/ca.ts";

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function listen(certs: string, dir: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FERRY, "listen", "--certs", certs, "tcp!127.0.0.1!0", dir],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  while (!/listening on tcp!\S+/.test(buf)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`ferry listen ended early: ${buf}`);
    buf += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return {
    addr: buf.match(/listening on (tcp!\S+)/)![1]!,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** `ferry ARGS` under strace: its output, and every file the process tree opened. */
async function traced(args: string[], trace: string) {
  const r = await new Deno.Command("strace", {
    args: [
      "-f",
      "-qq",
      "-e",
      "trace=open,openat",
      "-o",
      trace,
      Deno.execPath(),
      "run",
      "-A",
      FERRY,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: r.code,
    out: dec.decode(r.stdout),
    err: dec.decode(r.stderr),
    opened: await Deno.readTextFile(trace),
  };
}

const hasStrace = new Deno.Command("sh", { args: ["-c", "command -v strace"], stdout: "null" })
  .outputSync().success;

Deno.test({
  name:
    "ferry 9p ls with crl.pem in the user's directory: the CRL is read without the X.509 library",
  ignore: !hasStrace,
  async fn() {
    const fx = await makeFixture("oneshotca");
    const src = `${fx.dir}/src`;
    const NODE = `${fx.dir}/node`, USER = `${fx.dir}/user`;
    const stops: (() => Promise<void>)[] = [];
    try {
      await Deno.mkdir(src);
      await Deno.writeTextFile(`${src}/hello.txt`, "hi\n");
      const node = await fx.creds("fs1", "node", { sans: ["127.0.0.1"] });
      const alice = await fx.creds("alice", "user");
      await fx.creds("mallory", "user");
      await fx.ca.revoke("mallory");
      const crl = await Deno.readTextFile(`${fx.dir}/certs/crl.pem`);
      for (const [dir, c] of [[NODE, node], [USER, alice]] as const) {
        await writeCredentials(dir, c.name, c.cert, c.key);
        await Deno.writeTextFile(`${dir}/ca.pem`, fx.ca.certPem);
        await Deno.writeTextFile(`${dir}/crl.pem`, crl);
      }
      const l = await listen(NODE, src);
      stops.push(l.stop);

      const ls = await traced(
        ["9p", "--certs", USER, "--peer", "fs1", "-a", l.addr, "ls", "/"],
        `${fx.dir}/trace`,
      );
      assert.equal(ls.code, 0, ls.err);
      assert.match(ls.out, /hello\.txt/);
      assert.match(ls.opened, /crl\.pem/);
      // Resolving npm specifiers reads registry.json; loading the library reads its files.
      const x509 = ls.opened.split("\n").filter((line) => /@peculiar\/x509\/\d/.test(line));
      assert.deepEqual(x509, [], "the one-shot client loaded the X.509 library");

      // The CRL still counts: once the server's certificate is revoked and
      // the user's CRL says so, the same command is refused.
      await fx.ca.revoke("fs1");
      await Deno.writeTextFile(
        `${USER}/crl.pem`,
        await Deno.readTextFile(`${fx.dir}/certs/crl.pem`),
      );
      const refused = await traced(
        ["9p", "--certs", USER, "--peer", "fs1", "-a", l.addr, "ls", "/"],
        `${fx.dir}/trace2`,
      );
      assert.notEqual(refused.code, 0);
      assert.match(refused.err, /revoked/);

      // A CRL that is not the CA's is refused, not ignored.
      const other = await makeFixture("otherca");
      try {
        await Deno.writeTextFile(`${USER}/crl.pem`, await other.ca.crlPem());
      } finally {
        await other.cleanup();
      }
      const forged = await traced(
        ["9p", "--certs", USER, "--peer", "fs1", "-a", l.addr, "ls", "/"],
        `${fx.dir}/trace3`,
      );
      assert.notEqual(forged.code, 0);
      assert.match(forged.err, /CRL is not signed by this CA/);
    } finally {
      for (const s of stops) await s();
      await fx.cleanup();
    }
  },
});
