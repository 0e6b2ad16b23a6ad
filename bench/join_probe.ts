/**
 * Joining speed, on loopback, with a real signer and real `ferry up
 * --join` processes:
 *
 * (a) from `ferry sign` starting (a child process, as an operator runs it)
 *     to the change applied on each of 3 nodes (each node's log says
 *     "reloaded"), median and p99;
 * (b) from `ferry ca revoke` starting to the end of the revoked user's open
 *     session on a node that is not the CA host, median and p99; also from
 *     the moment the new crl.pem lands in the CA directory;
 * (c) 200 joined watchers on one signer (lightweight clients in this
 *     process, each with its own certificate, TLS connection and long poll
 *     on `serial`): the signer's RSS before and with them, and the time
 *     from `ferry sign` to every watcher's read returning.
 *
 * Peers: before the signer served the cluster, a change reached a node
 * only when the manifest was copied to it and its file poll (1 s) saw it,
 * and a CRL reached other machines with `ferry renew --daemon` (every 60 s).
 *
 * Run: deno run -A bench/join_probe.ts [runs] [watchers]
 *
 * @module
 */

import { CertificateAuthority } from "../lib/auth/ca.ts";
import { openClusterTree } from "../lib/auth/enroll.ts";
import { tlsDial } from "../lib/transport/tls.ts";
import { StyxClient } from "../lib/styx/client.ts";
import { OREAD } from "../lib/styx/types.ts";
import { ferryArgv } from "../lib/self.ts";
import { freePort } from "./util.ts";

const RUNS = Number(Deno.args[0] ?? 20);
const WATCHERS = Number(Deno.args[1] ?? 200);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function stats(xs: number[]): string {
  return `median ${pct(xs, 50).toFixed(0)} ms, p99 ${pct(xs, 99).toFixed(0)} ms (n=${xs.length})`;
}

/** A `ferry` child whose stderr and stdout are gathered as they come. */
class Child {
  text = "";
  #wake: (() => void)[] = [];
  readonly proc: Deno.ChildProcess;
  constructor(args: string[]) {
    const [exe, ...pre] = ferryArgv();
    this.proc = new Deno.Command(exe!, {
      args: [...pre, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    for (const s of [this.proc.stdout, this.proc.stderr]) {
      (async () => {
        for await (const t of s.pipeThrough(new TextDecoderStream())) {
          this.text += t;
          for (const w of this.#wake.splice(0)) w();
        }
      })();
    }
  }
  async waitFor(re: RegExp, from = 0): Promise<number> {
    for (;;) {
      if (re.test(this.text.slice(from))) return performance.now();
      await new Promise<void>((r) => this.#wake.push(r));
    }
  }
  rssMiB(): number {
    const s = Deno.readTextFileSync(`/proc/${this.proc.pid}/status`);
    return Number(/VmRSS:\s+(\d+)/.exec(s)![1]) / 1024;
  }
  async stop(): Promise<void> {
    try {
      this.proc.kill("SIGTERM");
    } catch { /* gone */ }
    await this.proc.status;
  }
}

async function ferry(args: string[]): Promise<void> {
  const [exe, ...pre] = ferryArgv();
  const o = await new Deno.Command(exe!, { args: [...pre, ...args], stdin: "null" }).output();
  if (o.code !== 0) {
    throw new Error(`ferry ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  }
}

function manifest(dir: string, signer: number, ports: number[], k: number): string {
  let t = `[ca]\nname = "bench"\nsigner = "tcp!127.0.0.1!${signer}"\n`;
  ports.forEach((p, i) => {
    t += `[nodes.n${i + 1}]\naddress = "tcp!127.0.0.1!${p}"\n` +
      `[nodes.n${i + 1}.exports.home]\nkind = "host"\npath = "${dir}/share"\naccess = ["*"]\n`;
    // Every change adds or removes an export on every node.
    if (k % 2 === 1) {
      t += `[nodes.n${i + 1}.exports.extra]\nkind = "host"\npath = "${dir}/share"\n` +
        `access = ["*"]\n`;
    }
  });
  return t;
}

async function main(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-join-bench-" });
  const caDir = `${dir}/ca`;
  const children: Child[] = [];
  const ca = await CertificateAuthority.init(caDir, "bench");
  try {
    await Deno.mkdir(`${dir}/share`);
    await Deno.writeTextFile(`${dir}/share/f`, "x\n");
    const sport = freePort();
    const ports = [freePort(), freePort(), freePort()];
    const file = `${dir}/cluster.toml`;
    let k = 0;
    await Deno.writeTextFile(file, manifest(dir, sport, ports, k));
    await ferry(["sign", file, "--dir", caDir]);
    const signer = new Child(["signer", `tcp!127.0.0.1!${sport}`, "--dir", caDir]);
    children.push(signer);
    await signer.waitFor(/signer for CA/);
    const nodes: Child[] = [];
    for (let i = 0; i < 3; i++) {
      const n = `n${i + 1}`;
      const token = await ca.token(n, { kind: "node", sans: ["127.0.0.1"] });
      const c = new Child([
        "up",
        "--join",
        `tcp!127.0.0.1!${sport}`,
        "--token",
        token,
        "--node",
        n,
        "--certs",
        `${dir}/${n}`,
        "--no-renew",
      ]);
      children.push(c);
      nodes.push(c);
    }
    for (const [i, c] of nodes.entries()) await c.waitFor(new RegExp(`node n${i + 1} listening`));
    const rss0 = signer.rssMiB();

    // (a) sign -> applied on every node.
    const applied: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      k++;
      await Deno.writeTextFile(file, manifest(dir, sport, ports, k));
      const from = nodes.map((c) => c.text.length);
      const t0 = performance.now();
      const signing = ferry(["sign", file, "--dir", caDir]);
      const serial = k + 1;
      const re = new RegExp(`reloaded \\(manifest serial ${serial} from the signer\\)`);
      const ts = await Promise.all(nodes.map((c, i) => c.waitFor(re, from[i])));
      await signing;
      applied.push(Math.max(...ts) - t0);
    }

    // (b) revoke -> the session on n2 ends.
    const total: number[] = [];
    const fromCrl: number[] = [];
    const watcher = Deno.watchFs(caDir);
    let crlAt = 0;
    (async () => {
      for await (const ev of watcher) {
        if (ev.paths.some((p) => p.endsWith("/crl.pem"))) crlAt = performance.now();
      }
    })();
    for (let r = 0; r < RUNS; r++) {
      const u = `u${r}`;
      const issued = await ca.issue(u, { kind: "user" });
      const creds = { ca: ca.certPem, cert: issued.certPem, key: issued.keyPem!, name: u };
      const conn = await tlsDial("127.0.0.1", ports[1]!, { creds, peer: "n2" });
      const client = await StyxClient.connect(conn);
      await client.attach(u, "home");
      crlAt = 0;
      const t0 = performance.now();
      await ferry(["ca", "revoke", u, "--dir", caDir]);
      await conn.closed;
      const t1 = performance.now();
      total.push(t1 - t0);
      if (crlAt > 0) fromCrl.push(t1 - crlAt);
      await client.close().catch(() => {});
    }
    watcher.close();
    const rssNodes = signer.rssMiB();

    // (c) many watchers on one signer.
    const sessions = [];
    const t0 = performance.now();
    for (let i = 0; i < WATCHERS; i++) {
      const name = `w${i}`;
      const issued = await ca.issue(name, { kind: "node" });
      const creds = { ca: ca.certPem, cert: issued.certPem, key: issued.keyPem!, name };
      const s = await openClusterTree("127.0.0.1", sport, creds);
      const f = await s.client.openPath(s.root, "serial", OREAD);
      const line = await f.readOnce(0n, 256);
      sessions.push({ s, f, off: BigInt(line.length) });
    }
    const joinMs = performance.now() - t0;
    await new Promise((r) => setTimeout(r, 1000));
    const rssWatched = signer.rssMiB();
    const fanout: number[] = [];
    for (let r = 0; r < 5; r++) {
      const reads = sessions.map((x) =>
        x.f.readOnce(x.off, 256).then((b) => {
          x.off += BigInt(b.length);
          return performance.now();
        })
      );
      await new Promise((r) => setTimeout(r, 200));
      k++;
      await Deno.writeTextFile(file, manifest(dir, sport, ports, k));
      const t1 = performance.now();
      await ferry(["sign", file, "--dir", caDir]);
      fanout.push(Math.max(...await Promise.all(reads)) - t1);
    }
    const rssEnd = signer.rssMiB();
    for (const x of sessions) await x.s.close();

    console.log("join probe (loopback, 3 `ferry up --join` nodes, one signer)");
    console.log(`(a) ferry sign -> applied on all 3 nodes: ${stats(applied)}`);
    console.log(`    peer: a copied manifest seen by the 1 s file poll (0-1000 ms + copying)`);
    console.log(`(b) ferry ca revoke -> session on n2 ended: ${stats(total)}`);
    console.log(`    from crl.pem written in the CA directory: ${stats(fromCrl)}`);
    console.log(`    peer: CRL by 'ferry renew --daemon', every 60 s (about 67 s bound)`);
    console.log(
      `(c) ${WATCHERS} watchers joined in ${(joinMs / 1000).toFixed(1)} s; signer RSS ${
        rss0.toFixed(0)
      } MiB with 3 nodes, ${rssNodes.toFixed(0)} MiB after (a)-(b), ${
        rssWatched.toFixed(0)
      } MiB with ${WATCHERS} watchers, ${rssEnd.toFixed(0)} MiB after 5 changes`,
    );
    console.log(`    ferry sign -> every watcher's serial read returned: ${stats(fanout)}`);
  } finally {
    for (const c of children) await c.stop();
    ca.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

await main();
