/**
 * The article's "Accessing remote networks" section across real hosts: four
 * network namespaces made by the test on a private 10.78.N.0/24 that exists
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
import {
  blockInbound,
  connects,
  ferryIn,
  ferryOnce,
  type Hosts,
  hostsSkipReason,
  makeHosts,
  Proc,
  reachable,
} from "./hosts.ts";

const HOSTS = ["remote", "client", "third", "internet"] as const;
type Net = Hosts;

const skip = hostsSkipReason();
if (skip) console.log(`netns_test: skipped: ${skip}`);

/** The hosts, with the client behind NAT (inbound connections dropped). */
async function makeNet(): Promise<Net> {
  const net = await makeHosts(HOSTS, "fy");
  try {
    await blockInbound(net, "client");
  } catch (e) {
    await net.cleanup();
    throw e;
  }
  return net;
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
    const p = ferryIn(net, h, ["sh", "-r", `${tmp}/${h}/root`, "-c", script], { env: envFor(h) });
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
    ]);
    procs.push(inet);
    await inet.waitFor(/ready/);

    // remote: export its /net.
    const remote = ferrySh("remote", `listen ${A}'tcp!*!8000' { export /net & }`);
    assert.ok(
      await reachable(net, "third", net.ip.remote!, 8000),
      `remote never listened: ${remote.err}`,
    );

    // The client really accepts nothing inbound.
    assert.equal(await connects(net, "third", net.ip.client!, 22, 1), false);

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

/**
 * The same section with TLS throughout and addresses instead of names,
 * every step typed into `ferry sh`: nodes enrol with tokens that grant
 * their addresses (`ferry ca token --manifest`, `--san`), the client mounts
 * the remote's /net by address, webgrab leaves from the remote, the client
 * listens through the remote's /net, and a third host reaches the client's
 * files at the remote's address by naming the client with `--peer`.
 */
Deno.test({
  name: "netns: remote networks with TLS and addresses, --peer through a relay",
  ignore: hostsSkipReason() !== "",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const tmp = await Deno.makeTempDir({ prefix: "ferry-netns-peer-" });
    const hosts = await makeHosts(["remote", "client", "third", "internet"], "fq");
    const procs: Proc[] = [];
    const ip = hosts.ip;
    const env = (h: string) => ({
      USER: h,
      FERRY_CERTS: `${tmp}/${h}/certs`,
      FERRY_NAME: h,
    });
    const sh = (h: string, script: string) => {
      const p = ferryIn(hosts, h, ["sh", "-r", `${tmp}/${h}/root`, "-c", script], { env: env(h) });
      procs.push(p);
      return p;
    };
    try {
      await blockInbound(hosts, "client");
      for (const h of ["remote", "client", "third"]) {
        await Deno.mkdir(`${tmp}/${h}/root`, { recursive: true });
      }
      await Deno.writeTextFile(`${tmp}/client/root/from-client`, "only on the client\n");
      await Deno.writeTextFile(`${tmp}/whatismyip.ts`, WHATISMYIP);
      const inet = new Proc("internet", "ip", [
        "netns",
        "exec",
        hosts.ns("internet"),
        Deno.execPath(),
        "run",
        "--allow-net",
        `${tmp}/whatismyip.ts`,
      ]);
      procs.push(inet);
      await inet.waitFor(/ready/);

      await t.step("the CA gives each node a token for its address; each enrols", async () => {
        const ca = `${tmp}/ca`;
        const init = await ferryOnce(hosts, "internet", ["ca", "init", "netca", "--dir", ca]);
        assert.equal(init.code, 0, init.err);
        const signer = ferryIn(hosts, "internet", [
          "signer",
          `tcp!${ip.internet}!6670`,
          "--dir",
          ca,
        ]);
        procs.push(signer);
        await signer.waitFor(/CA fingerprint/);
        // The remote's address comes from the cluster manifest; the client's is given.
        await Deno.writeTextFile(
          `${tmp}/cluster.toml`,
          `[nodes.remote]\naddress = "tcp!${ip.remote}!8000"\n`,
        );
        const how: Record<string, string[]> = {
          remote: ["--node", "--manifest", `${tmp}/cluster.toml`],
          client: ["--node", "--san", ip.client!],
          third: ["--user"],
        };
        for (const [h, opts] of Object.entries(how)) {
          const tok = await ferryOnce(hosts, "internet", ["ca", "token", h, ...opts, "--dir", ca]);
          assert.equal(tok.code, 0, tok.err);
          const e = await ferryOnce(hosts, h, [
            "enroll",
            `tcp!${ip.internet}!6670`,
            tok.out.trim(),
            "--dir",
            `${tmp}/${h}/certs`,
          ]);
          assert.equal(e.code, 0, e.err);
          const want = h === "third" ? "" : ` for '${ip[h]}'`;
          assert.match(e.out, new RegExp(`enrolled \\w+ '${h}' serial [0-9a-f]+${want};`));
        }
      });

      const remote = sh("remote", "listen 'tcp!*!8000' { export /net & }");
      assert.ok(await reachable(hosts, "third", ip.remote!, 8000), `remote: ${remote.err}`);
      assert.equal(
        await connects(hosts, "third", ip.client!, 22, 1),
        false,
        "client is behind NAT",
      );

      const url = `http://${ip.internet}/whoami`;
      const client = sh(
        "client",
        [
          `webgrab ${url}`,
          "cat whoami",
          `mount 'tcp!${ip.remote}!8000' /net`,
          "echo mounted-net",
          `webgrab ${url}`,
          "cat whoami",
          "listen 'tcp!*!8001' { export / & }",
          "echo listening",
        ].join("\n"),
      );

      await t.step("1. the client mounts the remote's /net by address, over TLS", async () => {
        await client.waitFor(/mounted-net/);
        assert.equal(client.out.split("\n")[0], ip.client, client.err);
      });

      await t.step("2. webgrab then leaves from the remote's address", async () => {
        await client.waitFor(/mounted-net\n.*\n/);
        assert.equal(client.out.split("\n")[2], ip.remote, client.err);
      });

      await t.step("3. the client listens through the remote's /net", async () => {
        await client.waitFor(/listening/);
        assert.ok(await reachable(hosts, "third", ip.remote!, 8001), client.err);
      });

      await t.step(
        "4. a third host mounts the client with --peer: reads, writes back",
        async () => {
          const third = sh(
            "third",
            [
              "mkdir /n/c",
              `mount --peer client 'tcp!${ip.remote}!8001' /n/c`,
              "cat /n/c/from-client",
              "echo written by third >/n/c/from-third",
              "echo third-done",
            ].join("; "),
          );
          await third.waitFor(/third-done/);
          assert.equal(third.out, "only on the client\nthird-done\n", third.err);
          assert.equal(
            await Deno.readTextFile(`${tmp}/client/root/from-third`),
            "written by third\n",
          );
        },
      );

      await t.step("5. a wrong or missing --peer is refused, naming both nodes", async () => {
        const third = sh(
          "third",
          [
            "mkdir /n/w",
            `mount --peer remote 'tcp!${ip.remote}!8001' /n/w`,
            `mount 'tcp!${ip.remote}!8001' /n/w`,
            "echo refused-done",
          ].join("; "),
        );
        await third.waitFor(/refused-done/);
        const lines = third.err.trim().split("\n");
        assert.equal(lines.length, 2, third.err);
        assert.match(
          lines[0]!,
          /server certificate 'client' is for 'client', '[\d.]+', not 'remote'/,
        );
        assert.ok(
          lines[1]!.includes(
            `server certificate 'client' is for 'client', '${ip.client}', not '${ip.remote}'`,
          ),
          lines[1],
        );
        assert.doesNotMatch(third.err, /'client', 'client'/);
      });
    } finally {
      for (const p of procs) await p.stop();
      await hosts.cleanup();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
