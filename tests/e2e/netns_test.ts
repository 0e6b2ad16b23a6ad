/**
 * The article's "Accessing remote networks" section across real hosts: four
 * network namespaces made by the test on a private 10.77.N.0/24 that exists
 * only between them (a bridge in a fifth namespace, one veth per host):
 *
 * - `internet`: a tiny "what is my address" HTTP server;
 * - `remote`: `listen 'tcp!*!8000' { export /net & }`;
 * - `client`: accepts no inbound connection (nftables drops inbound SYNs);
 *   webgrab shows its own address, then, after mounting the remote's /net,
 *   the remote's; then `listen 'tcp!*!8001' { export / & }` announces on the
 *   remote through the mounted /net;
 * - `third`: mounts remote:8001 and lists the client's files.
 *
 * Run once with -A and once with mutual TLS (a CA made in a temp dir). Every
 * Ferry process is a real `ferry sh` inside its namespace. Needs root; the
 * namespaces are removed in `finally` whatever happens.
 */

import assert from "node:assert/strict";
import { CertificateAuthority } from "../../lib/auth/ca.ts";
import { writeCredentials } from "../../lib/auth/ca.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const FERRY = `${REPO}cmd/ferry.ts`;
const dec = new TextDecoder();
const isRoot = Deno.uid() === 0;

function have(cmd: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const missing = ["ip", "nft", "bash"].filter((c) => !have(c));
const skip = !isRoot
  ? "not root: network namespaces need root"
  : missing.length > 0
  ? `missing ${missing.join(", ")} (apt-get install -y iproute2 nftables)`
  : "";
if (skip) console.log(`netns_test: skipped: ${skip}`);

async function run(cmd: string, args: string[], input?: string): Promise<string> {
  const c = new Deno.Command(cmd, {
    args,
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const w = c.stdin.getWriter();
    await w.write(new TextEncoder().encode(input));
    await w.close();
  }
  const out = await c.output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** A long-running child whose output is collected as it comes. */
class Proc {
  out = "";
  err = "";
  #child: Deno.ChildProcess;
  #changed: (() => void)[] = [];
  #done = false;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(readonly name: string, cmd: string, args: string[], env: Record<string, string>) {
    this.#child = new Deno.Command(cmd, {
      args,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pump = async (s: ReadableStream<Uint8Array>, key: "out" | "err") => {
      for await (const b of s) {
        this[key] += dec.decode(b);
        for (const f of this.#changed.splice(0)) f();
      }
    };
    const a = pump(this.#child.stdout, "out");
    const b = pump(this.#child.stderr, "err");
    this.status = this.#child.status;
    Promise.all([a, b, this.status]).finally(() => {
      this.#done = true;
      for (const f of this.#changed.splice(0)) f();
    });
  }

  /** Wait until stdout matches `re` (or the process ends). */
  async waitFor(re: RegExp): Promise<void> {
    while (!re.test(this.out)) {
      if (this.#done) {
        throw new Error(`${this.name} ended before ${re}: out=${this.out} err=${this.err}`);
      }
      await new Promise<void>((r) => this.#changed.push(r));
    }
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already gone */ }
    await this.status;
  }
}

interface Net {
  prefix: string;
  ns: (host: string) => string;
  ip: Record<string, string>;
  cleanup(): Promise<void>;
}

const HOSTS = ["remote", "client", "third", "internet"] as const;

/** Make the bridge namespace, one namespace per host, addresses and the client's firewall. */
async function makeNet(): Promise<Net> {
  const tag = `fy${Deno.pid % 100000}`;
  const subnet = `10.77.${Deno.pid % 200 + 1}`;
  const ns = (h: string) => `${tag}-${h}`;
  const ip: Record<string, string> = {};
  const made: string[] = [];
  const cleanup = async () => {
    for (const n of made.reverse()) {
      await run("ip", ["netns", "del", n]).catch(() => {});
    }
  };
  try {
    await run("ip", ["netns", "add", ns("br")]);
    made.push(ns("br"));
    await run("ip", ["-n", ns("br"), "link", "add", "br0", "type", "bridge"]);
    await run("ip", ["-n", ns("br"), "link", "set", "br0", "up"]);
    for (const [i, h] of HOSTS.entries()) {
      const n = ns(h);
      await run("ip", ["netns", "add", n]);
      made.push(n);
      ip[h] = `${subnet}.${i + 2}`;
      await run("ip", [
        "-n",
        ns("br"),
        "link",
        "add",
        `v${i}`,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        n,
      ]);
      await run("ip", ["-n", ns("br"), "link", "set", `v${i}`, "master", "br0", "up"]);
      await run("ip", ["-n", n, "addr", "add", `${ip[h]}/24`, "dev", "eth0"]);
      await run("ip", ["-n", n, "link", "set", "eth0", "up"]);
      await run("ip", ["-n", n, "link", "set", "lo", "up"]);
    }
    await run(
      "ip",
      ["netns", "exec", ns("client"), "nft", "-f", "-"],
      `
table inet ferrytest {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    iif "lo" accept
    tcp flags & (syn | ack) == syn drop
  }
}
`,
    );
  } catch (e) {
    await cleanup();
    throw e;
  }
  return { prefix: subnet, ns, ip, cleanup };
}

/** True once something in `from` can open a TCP connection to ip:port (retries a while). */
async function reachable(net: Net, from: string, ip: string, port: number): Promise<boolean> {
  for (let i = 0; i < 150; i++) {
    const r = await new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        net.ns(from),
        "timeout",
        "2",
        "bash",
        "-c",
        `exec 3<>/dev/tcp/${ip}/${port}`,
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    if (r.success) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const WHATISMYIP = `
Deno.serve({ hostname: "0.0.0.0", port: 80, onListen: () => console.log("ready") },
  (_req, info) => new Response(info.remoteAddr.hostname + "\\n"));
`;

async function scenario(net: Net, tmp: string, tls: boolean): Promise<void> {
  const A = tls ? "" : "-A ";
  const procs: Proc[] = [];
  const envFor = (h: string): Record<string, string> => ({
    USER: h === "client" ? "glenda" : h,
    ...(tls ? { FERRY_CERTS: `${tmp}/certs`, FERRY_NAME: h } : {}),
  });
  const ferrySh = (h: string, script: string) => {
    const p = new Proc(h, "ip", [
      "netns",
      "exec",
      net.ns(h),
      Deno.execPath(),
      "run",
      "--allow-all",
      FERRY,
      "sh",
      "-r",
      `${tmp}/${h}/root`,
      "-c",
      script,
    ], envFor(h));
    procs.push(p);
    return p;
  };
  try {
    for (const h of HOSTS) await Deno.mkdir(`${tmp}/${h}/root`, { recursive: true });
    await Deno.writeTextFile(`${tmp}/client/root/secret-of-client`, "only on the client\n");
    await Deno.writeTextFile(`${tmp}/whatismyip.ts`, WHATISMYIP);
    const inet = new Proc("internet", "ip", [
      "netns",
      "exec",
      net.ns("internet"),
      Deno.execPath(),
      "run",
      "--allow-net",
      `${tmp}/whatismyip.ts`,
    ], {});
    procs.push(inet);
    await inet.waitFor(/ready/);

    // remote: export its /net.
    const remote = ferrySh("remote", `listen ${A}'tcp!*!8000' { export /net & }`);
    assert.ok(
      await reachable(net, "third", net.ip.remote!, 8000),
      `remote never listened: ${remote.err}`,
    );

    // The client really accepts nothing inbound.
    const blocked = await new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        net.ns("third"),
        "timeout",
        "1",
        "bash",
        "-c",
        `exec 3<>/dev/tcp/${net.ip.client}/22`,
      ],
      stdout: "null",
      stderr: "null",
    }).output();
    assert.equal(blocked.success, false);

    const url = `http://${net.ip.internet}/n09230945.asp`;
    const client = ferrySh(
      "client",
      [
        `webgrab ${url}`,
        "cat n09230945.asp",
        "echo mounted-net",
        `mount ${A}'tcp!${net.ip.remote}!8000' /net`,
        `webgrab ${url}`,
        "cat n09230945.asp",
        `listen ${A}'tcp!*!8001' { export / & }`,
        "echo listening",
      ].join("\n"),
    );
    await client.waitFor(/listening/);
    const lines = client.out.split("\n");
    assert.equal(lines[0], net.ip.client, `own address first: ${client.out} ${client.err}`);
    assert.equal(lines[1], "mounted-net");
    assert.equal(lines[2], net.ip.remote, `then the remote's: ${client.out} ${client.err}`);
    assert.ok(await reachable(net, "third", net.ip.remote!, 8001), client.err);

    // third: reaches the client's files through remote:8001.
    const third = ferrySh(
      "third",
      `mkdir /tmp/client; mount ${A}'tcp!${net.ip.remote}!8001' /tmp/client; ls /tmp/client; echo third-done`,
    );
    await third.waitFor(/third-done/);
    assert.match(third.out, /secret-of-client/, `third saw: ${third.out} ${third.err}`);
    if (tls) {
      // Without credentials (plain -A) the client's listener gives nothing away.
      const plain = ferrySh(
        "third",
        `mkdir /tmp/c2; mount -A 'tcp!${net.ip.remote}!8001' /tmp/c2; ls /tmp/c2; echo plain-done`,
      );
      await plain.waitFor(/plain-done/);
      assert.doesNotMatch(plain.out, /secret-of-client/);
    }
  } finally {
    for (const p of procs) await p.stop();
  }
}

async function makeCerts(tmp: string, net: Net): Promise<void> {
  const dir = `${tmp}/certs`;
  const ca = await CertificateAuthority.init(dir, "netns-test-ca");
  try {
    // The client answers at the remote's address (its listen is announced
    // there), so its certificate names that address too.
    const names: [string, "node" | "user", string[]][] = [
      ["remote", "node", [net.ip.remote!]],
      ["client", "node", [net.ip.client!, net.ip.remote!]],
      ["third", "user", []],
    ];
    for (const [name, kind, sans] of names) {
      const r = await ca.issue(name, { kind, sans });
      await writeCredentials(dir, name, r.certPem, r.keyPem);
    }
  } finally {
    ca.close();
  }
}

Deno.test({
  name: "netns: accessing remote networks across real hosts (-A and TLS)",
  ignore: skip !== "",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const tmp = await Deno.makeTempDir({ prefix: "ferry-netns-" });
    const net = await makeNet();
    try {
      await t.step("with -A", () => scenario(net, `${tmp}/plain`, false));
      await t.step("with mutual TLS", async () => {
        await Deno.mkdir(`${tmp}/tls`, { recursive: true });
        await makeCerts(`${tmp}/tls`, net);
        await scenario(net, `${tmp}/tls`, true);
      });
    } finally {
      await net.cleanup();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
