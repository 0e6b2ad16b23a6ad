/**
 * TLS link probe: bulk throughput and client memory through tlsDial/tlsListen
 * on loopback, and handshake latency (TCP connect + TLS 1.3 + Ferry's link
 * proofs). The server runs in a child process so the client's RSS is its own.
 *
 *   deno run -A bench/tls_probe.ts [--bytes 1073741824] [--handshakes 200]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CertificateAuthority } from "../lib/auth/ca.ts";
import type { Credentials } from "../lib/auth/link.ts";
import { tlsDial, tlsListen } from "../lib/transport/tls.ts";

const CHUNK = 256 * 1024;

async function serve(credsPath: string, bytes: number): Promise<void> {
  const creds = JSON.parse(await Deno.readTextFile(credsPath)) as Credentials;
  const l = await tlsListen("127.0.0.1", 0, { creds });
  console.log(l.addr);
  for await (const c of l) {
    (async () => {
      const first = await c.read();
      if (first && first[0] === 0x42) {
        let left = bytes;
        while (left > 0) {
          const n = Math.min(CHUNK, left);
          await c.write(new Uint8Array(n));
          left -= n;
        }
      }
      c.close();
    })().catch(() => c.close());
  }
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      serve: { type: "string" },
      bytes: { type: "string", default: String(1 << 30) },
      handshakes: { type: "string", default: "200" },
    },
  });
  const bytes = Number(values.bytes);
  if (values.serve) return await serve(values.serve, bytes);

  const tmp = await Deno.makeTempDir({ prefix: "ferry-tls-probe-" });
  const ca = await CertificateAuthority.init(`${tmp}/certs`, "probe");
  const srv = await ca.issue("srv", { kind: "node", sans: ["127.0.0.1"] });
  const cli = await ca.issue("alice", { kind: "user" });
  ca.close();
  const srvCreds: Credentials = { ca: ca.certPem, cert: srv.certPem, key: srv.keyPem, name: "srv" };
  const creds: Credentials = { ca: ca.certPem, cert: cli.certPem, key: cli.keyPem, name: "alice" };
  await Deno.writeTextFile(`${tmp}/srv.json`, JSON.stringify(srvCreds), { mode: 0o600 });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      import.meta.filename!,
      "--serve",
      `${tmp}/srv.json`,
      "--bytes",
      String(bytes),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    reader.releaseLock();
    const port = Number(new TextDecoder().decode(value).trim().split("!")[2]);

    const lat: number[] = [];
    const n = Number(values.handshakes);
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const c = await tlsDial("127.0.0.1", port, { creds });
      lat.push(performance.now() - t0);
      c.close();
    }

    const rss0 = Deno.memoryUsage().rss;
    let peak = rss0;
    const c = await tlsDial("127.0.0.1", port, { creds });
    await c.write(new Uint8Array([0x42]));
    const t0 = performance.now();
    let got = 0;
    let k = 0;
    while (true) {
      const b = await c.read();
      if (b === null) break;
      got += b.length;
      if ((++k & 63) === 0) peak = Math.max(peak, Deno.memoryUsage().rss);
    }
    const secs = (performance.now() - t0) / 1000;
    c.close();
    if (got !== bytes) throw new Error(`received ${got} bytes, expected ${bytes}`);
    const mib = (x: number) => (x / 1048576).toFixed(0);
    console.log(
      `tls_probe: ${(bytes / 1048576).toFixed(0)} MiB in ${secs.toFixed(2)} s = ${
        (bytes / 1e6 / secs).toFixed(0)
      } MB/s (server->client, one link)`,
    );
    console.log(`tls_probe: client RSS ${mib(rss0)} MiB before, peak ${mib(peak)} MiB during`);
    console.log(
      `tls_probe: handshake (connect + TLS 1.3 + link proofs) over ${n}: median ${
        pct(lat, 50).toFixed(1)
      } ms, p99 ${pct(lat, 99).toFixed(1)} ms`,
    );
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) await main();
