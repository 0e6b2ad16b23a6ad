/**
 * End to end, in separate processes: the manifest demo (a CA, three
 * `ferry up` nodes, users logging on over mutual TLS, a live change, a
 * tampered manifest) and `ferry up` refusing an unsigned manifest.
 */
import assert from "node:assert/strict";
import { runDemo } from "../../lib/manifest/demo.ts";
import { ferryArgv } from "../../lib/self.ts";
import { freePort, makeCluster } from "../manifest/cluster.ts";

Deno.test("manifest demo: three nodes, logon, live change, tampering", async () => {
  const lines: string[] = [];
  const code = await runDemo({ out: (l) => lines.push(l) });
  const out = lines.join("\n");
  assert.equal(code, 0, out);
  for (
    const re of [
      /enrolled node 'gateway' serial [0-9a-f]+/,
      /node gateway listening on tcp!127\.0\.0\.1!\d+/,
      /node files listening on/,
      /up: node 'phone' serving phone\(phone\) on \S+ via 'gateway'/,
      /alice's namespace: 4 of 4 entries applied/,
      /hello from the file server's disk/,
      /notes\/todo = "edited by alice\\n"/,
      /\/n\/gateway\/net\/tcp/,
      /out 6412345678 sent 1 'hello from alice'/,
      /'bob' mounts 'phone!phone' but its access list \(alice\) denies 'bob'/,
      /refused the link: client certificate 'alice'/,
      /up: reloaded \(manifest serial 2 from the signer\)/,
      /not serving the manifest .*serial 1 is not above serial 2/,
      /certificate of .bob. was revoked: session closed/,
      /starting from the cached manifest/,
      /altered after it was signed/,
      /node 'gateway' stopped/,
    ]
  ) assert.match(out, re);
  assert.doesNotMatch(out, /\/usr\/alice\/id\.key/);
});

Deno.test("ferry up refuses an unsigned manifest unless --insecure-manifest", async () => {
  const c = await makeCluster();
  try {
    await c.issue("n1", "node");
    const file = await c.write(
      `[nodes.n1]\naddress = "tcp!127.0.0.1!${freePort()}"\n[nodes.n1.exports.net]\nkind = "net"\naccess = ["*"]\n`,
      { unsigned: true },
    );
    const [exe, ...pre] = ferryArgv();
    const up = (extra: string[]) =>
      new Deno.Command(exe!, {
        args: [
          ...pre,
          "up",
          file,
          "--node",
          "n1",
          "--certs",
          c.certs("n1"),
          "--poll",
          "0",
          ...extra,
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      });
    const o = await up([]).output();
    assert.equal(o.code, 1);
    assert.match(new TextDecoder().decode(o.stderr), /is not signed .*--insecure-manifest/);
    const child = up(["--insecure-manifest"]).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const { value } = await reader.read();
    assert.match(value ?? "", /node n1 listening on tcp!127\.0\.0\.1!\d+/);
    reader.releaseLock();
    const down = await new Deno.Command(exe!, {
      args: [...pre, "down", "--node", "n1", "--certs", c.certs("n1")],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(down.code, 0, new TextDecoder().decode(down.stderr));
    const status = await child.status;
    assert.equal(status.code, 0);
    await child.stdout.cancel().catch(() => {});
    const err = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
    assert.match(err, /warning: --insecure-manifest/);
  } finally {
    await c.cleanup();
  }
});
