/**
 * `ferry demo`: a local walkthrough with real TLS. A certificate authority
 * issues credentials, one Ferry process exports a directory with mutual TLS,
 * and a user lists, reads and writes through it with `ferry 9p`; then a
 * forged certificate is refused. Everything lives in a temporary directory
 * that is removed at the end.
 *
 * @module
 */

import { fail, parse } from "../lib/cli.ts";
import { ferryArgv } from "../lib/self.ts";

const spec = {
  usage: "ferry demo [--keep]",
  about: "Run Ferry's local demo: a CA, a TLS-authenticated export on loopback and\n" +
    "a user working with it. Prints each step and what it shows.",
  options: { keep: { type: "boolean" as const } },
  optionsHelp: "  --keep        keep the demo's temporary directory",
};

const dec = new TextDecoder();

interface Result {
  code: number;
  out: string;
  err: string;
}

async function ferry(
  args: string[],
  opts: { stdin?: string; env?: Record<string, string> } = {},
): Promise<Result> {
  const [exe, ...pre] = ferryArgv();
  const child = new Deno.Command(exe!, {
    args: [...pre, ...args],
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const o = await child.output();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

function step(title: string): void {
  console.log(`\n== ${title}`);
}

function show(cmdline: string, r: Result): void {
  console.log(`% ${cmdline}`);
  const text = (r.out + r.err).trimEnd();
  if (text) console.log(text.split("\n").map((l) => `  ${l}`).join("\n"));
}

async function must(cmdline: string, args: string[], opts?: { stdin?: string }): Promise<Result> {
  const r = await ferry(args, opts);
  show(cmdline, r);
  if (r.code !== 0) throw new Error(`step failed: ${cmdline} (exit ${r.code})`);
  return r;
}

async function copyCreds(from: string, to: string, name: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true, mode: 0o700 });
  await Deno.copyFile(`${from}/ca.pem`, `${to}/ca.pem`);
  await Deno.copyFile(`${from}/${name}.pem`, `${to}/${name}.pem`);
  await Deno.copyFile(`${from}/${name}.key`, `${to}/${name}.key`);
  await Deno.chmod(`${to}/${name}.key`, 0o600);
}

/** Run `ferry demo`. */
export async function run(args: string[]): Promise<number> {
  let tmp = "";
  let server: Deno.ChildProcess | undefined;
  const p = (() => {
    try {
      return parse(spec, args);
    } catch (e) {
      return e as Error;
    }
  })();
  if (p instanceof Error) return fail("demo", p);
  if (p.help) return 0;
  try {
    tmp = await Deno.makeTempDir({ prefix: "ferry-demo-" });
    const ca = `${tmp}/ca`;
    step("1. A certificate authority issues Ed25519 credentials");
    await must("ferry ca init ferry-demo-ca", ["ca", "init", "ferry-demo-ca", "--dir", ca]);
    await must("ferry ca issue server --node --san 127.0.0.1", [
      "ca",
      "issue",
      "server",
      "--node",
      "--san",
      "127.0.0.1",
      "--dir",
      ca,
    ]);
    await must("ferry ca issue alice --user", ["ca", "issue", "alice", "--user", "--dir", ca]);
    await must("ferry ca list", ["ca", "list", "--dir", ca]);
    await copyCreds(ca, `${tmp}/server`, "server");
    await copyCreds(ca, `${tmp}/alice`, "alice");

    step("2. The server exports a directory with mutual TLS 1.3");
    const share = `${tmp}/share`;
    await Deno.mkdir(`${share}/notes`, { recursive: true });
    await Deno.writeTextFile(`${share}/hello.txt`, "hello from the server's disk\n");
    await Deno.writeTextFile(`${share}/notes/todo`, "share the phone\n");
    const [exe, ...pre] = ferryArgv();
    server = new Deno.Command(exe!, {
      args: [...pre, "listen", "--certs", `${tmp}/server`, "tcp!127.0.0.1!0", share],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let banner = "";
    while (!banner.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the server exited before it listened");
      banner += value;
    }
    reader.releaseLock();
    const addr = banner.match(/listening on (\S+)/)?.[1];
    if (!addr) throw new Error(`unexpected server output: ${banner.trim()}`);
    console.log(`% ferry listen 'tcp!127.0.0.1!0' ${share}`);
    console.log(`  ${banner.trim()}`);

    step("3. alice mounts it as herself and works with the files");
    const as = ["--certs", `${tmp}/alice`, "-a", addr];
    await must(`ferry 9p -a '${addr}' ls -l /`, ["9p", ...as, "ls", "-l", "/"]);
    await must(`ferry 9p -a '${addr}' read /hello.txt`, ["9p", ...as, "read", "/hello.txt"]);
    await must(`ferry 9p -a '${addr}' create /from-alice`, ["9p", ...as, "create", "/from-alice"]);
    await must(
      `echo 'written by alice' | ferry 9p -a '${addr}' write /from-alice`,
      ["9p", ...as, "write", "/from-alice"],
      { stdin: "written by alice\n" },
    );
    await must(`ferry 9p -a '${addr}' stat /from-alice`, ["9p", ...as, "stat", "/from-alice"]);
    console.log(
      `  on the server's disk: ${JSON.stringify(await Deno.readTextFile(`${share}/from-alice`))}`,
    );

    step("4. A certificate from another CA is refused");
    const evil = `${tmp}/evil`;
    await ferry(["ca", "init", "ferry-demo-ca", "--dir", evil]);
    await ferry(["ca", "issue", "alice", "--user", "--dir", evil]);
    await copyCreds(evil, `${tmp}/mallory`, "alice");
    // Mallory trusts the real CA, so the refusal shown is the server's.
    await Deno.copyFile(`${ca}/ca.pem`, `${tmp}/mallory/ca.pem`);
    const forged = await ferry(["9p", "--certs", `${tmp}/mallory`, "-a", addr, "ls", "/"]);
    show(`ferry 9p -a '${addr}' ls /   (a certificate for 'alice' from another CA)`, forged);
    if (forged.code === 0) throw new Error("a forged certificate was accepted");

    step("5. Without credentials nothing is served in clear unless asked for with -A");
    const none = await ferry(["9p", "--certs", `${tmp}/nobody`, "-a", addr, "ls", "/"]);
    show(`ferry 9p -a '${addr}' ls /   (no credentials)`, none);
    if (none.code === 0) throw new Error("a client without credentials was served");

    console.log("\ndemo finished: every session above was mutually authenticated and encrypted");
    return 0;
  } catch (e) {
    return fail("demo", e);
  } finally {
    if (server) {
      try {
        server.kill("SIGTERM");
      } catch { /* already gone */ }
      await server.status;
    }
    if (tmp && !(p.values.keep === true)) {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    } else if (tmp) console.log(`kept ${tmp}`);
  }
}
