/**
 * Manifest speed. (a) Logon time for a user whose namespace has 20 mounts
 * across 3 nodes, each node a separate `ferry up` process on loopback with
 * mutual TLS; median and p99 over the runs. Peer: the same 20 mounts made
 * one after another (no concurrent dials) in the same run. (b) `ferry check`
 * work (load + check) on a generated 500-node, 2,000-user manifest: time and
 * memory.
 *
 * Run: deno run -A bench/manifest_probe.ts [runs]
 *
 * @module
 */

import { CertificateAuthority, writeCredentials } from "../lib/auth/ca.ts";
import { loadCredentials } from "../lib/auth/link.ts";
import { applyNamespace, logon } from "../lib/manifest/apply.ts";
import { checkManifest } from "../lib/manifest/check.ts";
import { loadText } from "../lib/manifest/load.ts";
import { ferryArgv } from "../lib/self.ts";
import { freePort } from "./util.ts";

const RUNS = Number(Deno.args[0] ?? 20);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function logonBench(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-bench-" });
  const children: Deno.ChildProcess[] = [];
  const ca = await CertificateAuthority.init(`${dir}/ca`, "bench-ca");
  try {
    const nodes = ["n1", "n2", "n3"];
    let text = "";
    for (const n of nodes) {
      const r = await ca.issue(n, { kind: "node", sans: ["127.0.0.1"] });
      await writeCredentials(`${dir}/${n}`, n, r.certPem, r.keyPem);
      await Deno.writeTextFile(`${dir}/${n}/ca.pem`, ca.certPem);
      await Deno.mkdir(`${dir}/share-${n}`);
      await Deno.writeTextFile(`${dir}/share-${n}/f`, n);
      text += `[nodes.${n}]\naddress = "tcp!127.0.0.1!${freePort()}"\n`;
      for (let i = 0; i < 7; i++) {
        text += `[nodes.${n}.exports.e${i}]\nkind = "host"\npath = "${dir}/share-${n}"\n` +
          `access = ["alice"]\n`;
      }
    }
    const lines: string[] = [];
    for (let i = 0; i < 20; i++) lines.push(`mount ${nodes[i % 3]}!e${Math.floor(i / 3)} /n/m${i}`);
    text += `[users.alice]\nnamespace = """\n${lines.join("\n")}\n"""\n`;
    const u = await ca.issue("alice", { kind: "user" });
    await writeCredentials(`${dir}/alice`, "alice", u.certPem, u.keyPem);
    await Deno.writeTextFile(`${dir}/alice/ca.pem`, ca.certPem);
    const file = `${dir}/m.toml`;
    await Deno.writeTextFile(file, text);
    const [exe, ...pre] = ferryArgv();
    for (const n of nodes) {
      const c = new Deno.Command(exe!, {
        args: [...pre, "up", file, "--node", n, "--certs", `${dir}/${n}`, "--insecure-manifest"],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      children.push(c);
      const rd = c.stdout.pipeThrough(new TextDecoderStream()).getReader();
      await rd.read();
      rd.releaseLock();
    }
    const m = loadText(text, file);
    const creds = await loadCredentials(`${dir}/alice`, "alice");
    const rootDir = `${dir}/root`;
    const once = async (sequential: boolean): Promise<number> => {
      const t = performance.now();
      if (!sequential) {
        const c = await logon(m, "alice", { creds, rootDir });
        if (c.report.some((r) => !r.ok)) throw new Error(c.report.find((r) => !r.ok)!.error);
        const ms = performance.now() - t;
        await c.close();
        return ms;
      }
      // Peer: one entry per logon step, each waiting for the one before.
      const closers: (() => Promise<void>)[] = [];
      for (const e of m.users.get("alice")!.namespace) {
        const c = await applyNamespace(m, [e], { user: "alice", creds, rootDir });
        closers.push(c.close);
      }
      const ms = performance.now() - t;
      for (const c of closers) await c();
      return ms;
    };
    await once(false);
    const conc: number[] = [];
    const seq: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      conc.push(await once(false));
      seq.push(await once(true));
    }
    console.log(`logon, 20 mounts across 3 nodes (mutual TLS, ${RUNS} runs):`);
    console.log(
      `  concurrent dials: median ${pct(conc, 50).toFixed(1)} ms, p99 ${
        pct(conc, 99).toFixed(1)
      } ms`,
    );
    console.log(
      `  peer, one mount at a time: median ${pct(seq, 50).toFixed(1)} ms, p99 ${
        pct(seq, 99).toFixed(1)
      } ms (${(pct(seq, 50) / pct(conc, 50)).toFixed(1)}x the concurrent median)`,
    );
  } finally {
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch { /* gone */ }
      await c.status;
    }
    ca.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function bigManifest(nodes: number, users: number): string {
  const out: string[] = [];
  out.push(`[ca]\nname = "big"\nsigner = "tcp!10.0.0.1!7000"\n`);
  out.push(`[groups]`);
  for (let g = 0; g < 20; g++) {
    const members = [];
    for (let u = g; u < users; u += 20) members.push(`"u${u}"`);
    out.push(`g${g} = [${members.join(", ")}]`);
  }
  for (let n = 0; n < nodes; n++) {
    out.push(`\n[nodes.n${n}]\naddress = "tcp!10.${n >> 8}.${n & 255}.1!6666"`);
    if (n % 10 === 9) out.push(`via = "n${n - 9}"`);
    out.push(
      `[nodes.n${n}.exports.home]\nkind = "host"\npath = "/srv/home"\naccess = ["group:g${
        n % 20
      }"]`,
    );
    out.push(`[nodes.n${n}.exports.net]\nkind = "net"\naccess = ["*"]`);
  }
  for (let u = 0; u < users; u++) {
    const lines = [];
    for (let k = 0; k < 5; k++) {
      const n = (u % 20) + 20 * ((u + k) % Math.floor(nodes / 20));
      lines.push(`mount -c n${n}!home /n/h${k}`);
    }
    out.push(`\n[users.u${u}]\nnamespace = """\n${lines.join("\n")}\n"""`);
  }
  return out.join("\n") + "\n";
}

function checkBench(): void {
  const text = bigManifest(500, 2000);
  const runs = 5;
  const times: number[] = [];
  let heapDelta = 0;
  for (let i = 0; i < runs; i++) {
    const before = Deno.memoryUsage().heapUsed;
    const t = performance.now();
    const m = loadText(text, "big.toml");
    const ps = checkManifest(m);
    times.push(performance.now() - t);
    heapDelta = Math.max(heapDelta, Deno.memoryUsage().heapUsed - before);
    if (ps.length) throw new Error(`generated manifest has problems: ${ps[0]!.message}`);
  }
  console.log(
    `ferry check, 500 nodes / 2,000 users (${(text.length / 1024).toFixed(0)} KiB, ${runs} runs):`,
  );
  console.log(
    `  median ${pct(times, 50).toFixed(0)} ms, max ${
      Math.max(...times).toFixed(0)
    } ms; heap growth ${(heapDelta / 1048576).toFixed(1)} MiB, RSS ${
      (Deno.memoryUsage().rss / 1048576).toFixed(0)
    } MiB`,
  );
}

checkBench();
await logonBench();
