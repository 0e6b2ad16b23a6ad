/**
 * End to end: a cluster joined with one command per node. A signer host
 * holds the CA and serves the cluster's state; three node hosts, each in
 * its own network namespace, run `ferry up --join` with a token. Checked:
 * a published manifest change reaches every node and what a user sees; a
 * signed manifest that fails the checks leaves every node on the last good one; a
 * revoked user's open session on a node that is not the CA host ends; an
 * older signed manifest put back is refused; with the signer stopped a
 * node restarts from its cache and serves; and when the signer is back the
 * nodes catch up with a change made while it was away.
 */
import assert from "node:assert/strict";
import { ferryIn, ferryOnce, type Hosts, hostsSkipReason, makeHosts, type Proc } from "./hosts.ts";

const skip = hostsSkipReason();
const NODES = ["n1", "n2", "n3"] as const;
const PORT = 6666;
const SIGNER_PORT = 6670;

function manifest(hosts: Hosts, dir: string, version: string): string {
  const nodes = NODES.map((n) =>
    `[nodes.${n}]
address = "tcp!${hosts.ip[n]}!${PORT}"
[nodes.${n}.exports.home]
kind = "host"
path = "${dir}/${n}-${version}"
access = ["alice", "bob"]
`
  ).join("\n");
  return `[ca]
name = "joinca"
signer = "tcp!${hosts.ip.signer}!${SIGNER_PORT}"

${nodes}
[users.alice]
namespace = """
mount n1!home /n/n1
mount n2!home /n/n2
mount n3!home /n/n3
"""

[users.bob]
namespace = """
mount n2!home /n/n2
"""
`;
}

async function ok(p: Promise<{ code: number; out: string; err: string }>): Promise<string> {
  const r = await p;
  assert.equal(r.code, 0, `out: ${r.out}\nerr: ${r.err}`);
  return r.out;
}

Deno.test({
  name: "join: one command per node, live changes, revocation, restarts without the signer",
  ignore: skip !== "",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const hosts = await makeHosts(["signer", ...NODES], "fj");
    const dir = await Deno.makeTempDir({ prefix: "ferry-join-" });
    const procs: Proc[] = [];
    const ca = `${dir}/ca`;
    const signerAddr = `tcp!${hosts.ip.signer}!${SIGNER_PORT}`;
    const startSigner = async () => {
      const s = ferryIn(hosts, "signer", [
        "signer",
        `tcp!*!${SIGNER_PORT}`,
        "--dir",
        ca,
        "--san",
        hosts.ip.signer!,
      ]);
      procs.push(s);
      await s.waitFor(/signer for CA/);
      return s;
    };
    const up = (n: string, token?: string) => {
      const p = ferryIn(hosts, n, [
        "up",
        "--join",
        signerAddr,
        "--node",
        n,
        "--certs",
        `${dir}/certs-${n}`,
        ...(token ? ["--token", token] : []),
        "--no-renew",
      ]);
      procs.push(p);
      return p;
    };
    const see = (user: string, cmds: string) =>
      ferryOnce(hosts, "n1", [
        "logon",
        "--join",
        signerAddr,
        "-u",
        user,
        "--certs",
        `${dir}/u-${user}`,
        "-q",
        "-c",
        cmds,
      ]);
    try {
      for (const v of ["v1", "v2", "v3"]) {
        for (const n of NODES) {
          await Deno.mkdir(`${dir}/${n}-${v}`, { recursive: true });
          await Deno.writeTextFile(`${dir}/${n}-${v}/hello`, `${n} ${v}\n`);
        }
      }
      await ok(ferryOnce(hosts, "signer", ["ca", "init", "joinca", "--dir", ca]));
      const file = `${dir}/cluster.toml`;
      await Deno.writeTextFile(file, manifest(hosts, dir, "v1"));
      assert.match(
        await ok(ferryOnce(hosts, "signer", ["sign", file, "--dir", ca])),
        /published serial 1/,
      );
      await Deno.copyFile(file, `${dir}/old.toml`);
      await Deno.copyFile(`${file}.sig`, `${dir}/old.toml.sig`);
      let signer = await startSigner();
      await signer.waitFor(/serving manifest serial 1/);

      // Each node joins with one command and a token.
      const nodes: Record<string, Proc> = {};
      for (const n of NODES) {
        const token = (await ok(ferryOnce(hosts, "signer", [
          "ca",
          "token",
          n,
          "--node",
          "--san",
          hosts.ip[n]!,
          "--dir",
          ca,
        ]))).trim().split("\n").pop()!;
        nodes[n] = up(n, token);
      }
      for (const n of NODES) await nodes[n]!.waitFor(new RegExp(`node ${n} listening on`));
      for (const u of ["alice", "bob"]) {
        const token = (await ok(ferryOnce(hosts, "signer", [
          "ca",
          "token",
          u,
          "--user",
          "--dir",
          ca,
        ]))).trim().split("\n").pop()!;
        await ok(ferryOnce(hosts, "n1", ["enroll", signerAddr, token, "--dir", `${dir}/u-${u}`]));
      }
      const all = "cat /n/n1/hello /n/n2/hello /n/n3/hello";
      assert.match(await ok(see("alice", all)), /n1 v1\nn2 v1\nn3 v1/);

      // A change published on the signer reaches every node, and alice sees it.
      await Deno.writeTextFile(file, manifest(hosts, dir, "v2"));
      assert.match(
        await ok(ferryOnce(hosts, "signer", ["sign", file, "--dir", ca])),
        /published serial 2/,
      );
      for (const n of NODES) {
        await nodes[n]!.waitFor(/reloaded \(manifest serial 2 from the signer\)/, "err");
      }
      assert.match(await ok(see("alice", all)), /n1 v2\nn2 v2\nn3 v2/);

      // An older signed manifest put back is refused, and the nodes keep serial 2.
      await Deno.copyFile(`${dir}/old.toml`, `${ca}/published/manifest.toml`);
      await Deno.copyFile(`${dir}/old.toml.sig`, `${ca}/published/manifest.toml.sig`);
      await signer.waitFor(/not serving the manifest .*serial 1 is not above serial 2/, "err");
      assert.match(await ok(see("alice", all)), /n1 v2\nn2 v2\nn3 v2/);

      // bob holds a session open on n2; revoking him on the CA host ends it there.
      const bob = ferryIn(hosts, "n1", [
        "logon",
        "--join",
        signerAddr,
        "-u",
        "bob",
        "--certs",
        `${dir}/u-bob`,
        "-c",
        "cat /n/n2/hello; sleep 600",
      ]);
      procs.push(bob);
      await bob.waitFor(/n2 v2/);
      const t0 = performance.now();
      await ok(ferryOnce(hosts, "signer", ["ca", "revoke", "bob", "--dir", ca]));
      await nodes.n2!.waitFor(/certificate of 'bob' was revoked: session closed/, "err");
      const ended = performance.now() - t0;
      for (const n of NODES) await nodes[n]!.waitFor(/new CRL from the signer/, "err");
      console.log(`bob's session on n2 ended ${Math.round(ended)} ms after 'ferry ca revoke'`);
      await bob.stop();

      // A signed manifest that fails the checks is refused on every node, which keep serial 2.
      await Deno.writeTextFile(
        file,
        manifest(hosts, dir, "v1").replaceAll('access = ["alice", "bob"]', 'access = ["carol"]'),
      );
      assert.match(
        await ok(ferryOnce(hosts, "signer", ["sign", file, "--dir", ca])),
        /published serial 3/,
      );
      for (const n of NODES) {
        await nodes[n]!.waitFor(
          /manifest serial 3 refused, keeping serial 2:\n.*Unknown user 'carol'/,
          "err",
        );
      }
      assert.match(await ok(see("alice", all)), /n1 v2\nn2 v2\nn3 v2/);

      // The signer stops: n3 restarts from its cache and serves.
      await signer.stop();
      await nodes.n3!.stop();
      nodes.n3 = up("n3");
      await nodes.n3.waitFor(/node n3 listening on/);
      assert.match(nodes.n3.err, /starting from the cached manifest/);
      assert.match(await ok(see("alice", "cat /n/n3/hello")), /n3 v2/);

      // A change made while the signer is away reaches every node once it is back.
      await Deno.writeTextFile(file, manifest(hosts, dir, "v3"));
      assert.match(
        await ok(ferryOnce(hosts, "signer", ["sign", file, "--dir", ca])),
        /published serial 4/,
      );
      signer = await startSigner();
      for (const n of NODES) {
        await nodes[n]!.waitFor(/reloaded \(manifest serial 4 from the signer\)/, "err");
      }
      assert.match(await ok(see("alice", all)), /n1 v3\nn2 v3\nn3 v3/);
    } finally {
      for (const p of procs) await p.stop();
      await hosts.cleanup();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

if (skip !== "") console.log(`join_test skipped: ${skip}`);
