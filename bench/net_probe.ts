/**
 * A TCP stream tunnelled through a mounted remote /net versus the same
 * stream direct, in the same run.
 *
 * One child process plays the remote machine (it exports its /net device
 * over Styx on loopback), another the far server (a sink and an echo
 * server). This process then
 * - sends SIZE bytes to the sink directly (Deno.connect) and through the
 *   remote's /net (nsdial over the mounted tree): throughput and ratio;
 * - bounces one byte off the echo server ROUNDS times each way: median
 *   round trip and the latency the tunnel adds;
 * - dials and hangs up through the tunnel COUNT times: connections/s.
 *
 * Each tunnelled figure also shows the CPU time (user + system, from
 * /proc) the client, the remote and the far end spent on it, per MiB, per
 * round trip or per dial: on a busy machine a steadier measure than
 * elapsed time.
 *
 * Run: deno run --allow-all bench/net_probe.ts [--mb 256] [--rounds 2000] [--dials 300]
 *   [--window N] (most reads and writes in flight on the tunnelled data file; default the library's)
 *   [--parts send,receive,rtt,dial,tls] (which figures to measure; default all;
 *     tls: bulk send and receive with mutual TLS run end to end inside the
 *     tunnel, as a mount through it does, against the same TLS dialled direct)
 *   [--prof DIR] (write CPU profiles of the remote and target processes to DIR)
 *   [--msize N] (Styx message size both ends offer; default the library's)
 *   [--json] (one JSON row per figure, as bench/run.ts reads them)
 *   [--pin] (Linux, taskset: the remote on a CPU of its own, this process and
 *     the far end sharing CPU 0, for direct and tunnelled streams alike, as
 *     if the remote were another machine; without it all three share every CPU)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { MemTree } from "../lib/fs/memory.ts";
import { Namespace } from "../lib/ns/namespace.ts";
import { RemoteTree, StyxClient } from "../lib/styx/client.ts";
import { tcpDial } from "../lib/transport/tcp.ts";
import { dial } from "../lib/net/nsdial.ts";
import type { Conn } from "../lib/transport/conn.ts";
import type { ReadIntoConn } from "../lib/styx/frame.ts";
import { median } from "./util.ts";
import { CertificateAuthority } from "../lib/auth/ca.ts";
import type { Credentials } from "../lib/auth/link.ts";
import { tlsWrapClient } from "../lib/transport/tls.ts";

const REPO = new URL("../", import.meta.url).pathname;

const CHILD = `
Deno.addSignalListener("SIGTERM", () => Deno.exit(0));
import { NetDevice } from "${REPO}lib/dev/net/device.ts";
import { serve } from "${REPO}lib/styx/server.ts";
import { tcpListen } from "${REPO}lib/transport/tcp.ts";
if (Deno.args[0] === "remote") {
  const dev = new NetDevice();
  const styx = tcpListen("127.0.0.1", 0);
  console.log(JSON.stringify({ styx: styx.addr }));
  const maxMsize = Deno.args[1] ? Number(Deno.args[1]) : undefined;
  for await (const c of styx) serve(c, dev.tree(), { maxMsize }).catch(() => {});
}
const sink = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const source = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const tlsCreds = Deno.env.get("FERRY_PROBE_TLS");
let tls = 0;
if (tlsCreds) {
  // Mutual TLS: a sink and a source in one, the 8-byte header's top bit asking to be sent to.
  const { tlsListen } = await import("${REPO}lib/transport/tls.ts");
  const l = await tlsListen("127.0.0.1", 0, { creds: JSON.parse(Deno.readTextFileSync(tlsCreds)) });
  tls = Number(l.addr.split("!")[2]);
  (async () => {
    for await (const c of l) {
      (async () => {
        let hdr = new Uint8Array(0);
        while (hdr.length < 8) {
          const b = await c.read();
          if (b === null) return;
          const j = new Uint8Array(hdr.length + b.length); j.set(hdr); j.set(b, hdr.length); hdr = j;
        }
        const v = new DataView(hdr.buffer).getBigUint64(0);
        let left = Number(v & ((1n << 63n) - 1n));
        try {
          if (v >> 63n) {
            const buf = new Uint8Array(256 * 1024);
            while (left > 0) { const n = Math.min(left, buf.length); await c.write(buf.subarray(0, n)); left -= n; }
            if ("flush" in c) await (c as { flush(): Promise<void> }).flush();
          } else {
            left -= hdr.length - 8;
            while (left > 0) { const b = await c.read(); if (b === null) break; left -= b.length; }
            await c.write(new Uint8Array([1]));
          }
        } catch {}
        await new Promise((r) => setTimeout(r, 100));
        c.close();
      })();
    }
  })();
}
console.log(JSON.stringify({ sink: sink.addr.port, echo: echo.addr.port, source: source.addr.port, tls }));
(async () => {
  for await (const c of source) {
    (async () => {
      const hdr = new Uint8Array(8);
      let got = 0;
      while (got < 8) { const n = await c.read(hdr.subarray(got)); if (n === null) return; got += n; }
      let left = Number(new DataView(hdr.buffer).getBigUint64(0));
      const buf = new Uint8Array(256 * 1024);
      try { while (left > 0) { const n = await c.write(buf.subarray(0, Math.min(left, buf.length))); left -= n; } } catch {}
      try { c.close(); } catch {}
    })();
  }
})();
(async () => {
  for await (const c of sink) {
    (async () => {
      const hdr = new Uint8Array(8);
      let got = 0;
      while (got < 8) { const n = await c.read(hdr.subarray(got)); if (n === null) return; got += n; }
      const want = Number(new DataView(hdr.buffer).getBigUint64(0));
      const buf = new Uint8Array(1 << 20);
      let total = 0;
      while (total < want) { const n = await c.read(buf); if (n === null) break; total += n; }
      await c.write(new Uint8Array([1]));
      try { c.close(); } catch {}
    })();
  }
})();
(async () => {
  for await (const c of echo) {
    (async () => {
      const buf = new Uint8Array(65536);
      try { for (;;) { const n = await c.read(buf); if (n === null) break; await c.write(buf.subarray(0, n)); } } catch {}
      try { c.close(); } catch {}
    })();
  }
})();
`;

/** Bind every thread of process `pid` to `cpus` (taskset's list); false when that fails. */
function pin(pid: number, cpus: string): boolean {
  try {
    return new Deno.Command("taskset", {
      args: ["-a", "-p", "-c", cpus, String(pid)],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

/** User and system CPU time of process `pid` so far, in ms (Linux /proc; 0 elsewhere). */
function cpuTimes(pid: number): Cpu {
  try {
    const st = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    const tick = 1000 / CLK_TCK;
    return { user: Number(f[11]) * tick, sys: Number(f[12]) * tick };
  } catch {
    return { user: 0, sys: 0 };
  }
}

/** Clock ticks per second, the unit of /proc/PID/stat's times (100 on Linux). */
const CLK_TCK = 100;

/** CPU ms of one process, user and system apart. */
interface Cpu {
  user: number;
  sys: number;
}

/** Zero CPU for each of the client, the remote and the far end. */
function zeroCpu(): Cpu[] {
  return [0, 1, 2].map(() => ({ user: 0, sys: 0 }));
}

function total(t: Cpu): number {
  return t.user + t.sys;
}

async function bulk(c: Conn, bytes: number): Promise<number> {
  const hdr = new Uint8Array(8);
  new DataView(hdr.buffer).setBigUint64(0, BigInt(bytes));
  // One buffer, written again and again, as a program sending a stream
  // would (each write has taken its bytes once it resolves).
  const buf = new Uint8Array(256 * 1024);
  const t0 = performance.now();
  await c.write(hdr);
  for (let sent = 0; sent < bytes; sent += buf.length) {
    await c.write(buf.subarray(0, Math.min(buf.length, bytes - sent)));
  }
  const ack = await c.read();
  const ms = performance.now() - t0;
  if (!ack || ack[0] !== 1) throw new Error("the sink did not acknowledge");
  c.close();
  return bytes / 1e6 / (ms / 1000);
}

/** Ask for `bytes` and read them; `send` is or-ed into the header (the TLS far end's "send to me"). */
async function download(c: Conn, bytes: number, send = 0n): Promise<number> {
  const hdr = new Uint8Array(8);
  new DataView(hdr.buffer).setBigUint64(0, BigInt(bytes) | send);
  const t0 = performance.now();
  await c.write(hdr);
  // Both ends read into one reused buffer, as a program saving the stream
  // would (a direct TcpConn and a tunnelled FileConn both can).
  let got = 0;
  const into = (c as Partial<ReadIntoConn>).readInto?.bind(c);
  const buf = new Uint8Array(256 * 1024);
  for (;;) {
    if (into) {
      const n = await into(buf);
      if (n === null) break;
      got += n;
    } else {
      const b = await c.read();
      if (b === null) break;
      got += b.length;
    }
  }
  const ms = performance.now() - t0;
  if (got !== bytes) throw new Error(`got ${got} of ${bytes} bytes`);
  c.close();
  return bytes / 1e6 / (ms / 1000);
}

async function pingpong(c: Conn, rounds: number): Promise<number> {
  const one = () => new Uint8Array([42]);
  for (let i = 0; i < 20; i++) {
    await c.write(one());
    await c.read();
  }
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    await c.write(one());
    const b = await c.read();
    if (!b) throw new Error("the echo server hung up");
    times.push(performance.now() - t0);
  }
  c.close();
  return median(times) * 1000;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mb: { type: "string", default: "256" },
      rounds: { type: "string", default: "2000" },
      dials: { type: "string", default: "300" },
      window: { type: "string" },
      parts: { type: "string", default: "send,receive,rtt,dial,tls" },
      prof: { type: "string" },
      msize: { type: "string" },
      json: { type: "boolean", default: false },
      pin: { type: "boolean", default: false },
    },
  });
  // Text lines, or with --json one row per figure for bench/run.ts's
  // table: [figure, through /net, direct, ratio].
  const out = (lines: string[], row: string[]) => {
    if (values.json) console.log(JSON.stringify(row));
    else for (const l of lines) console.log(l);
  };
  const bytes = Number(values.mb) * 1024 * 1024;
  const rounds = Number(values.rounds);
  const dials = Number(values.dials);
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(script, CHILD);
  const start = async (role: string, env: Record<string, string> = {}) => {
    const child = new Deno.Command(Deno.execPath(), {
      env,
      args: [
        "run",
        "--allow-all",
        ...(values.prof ? ["--cpu-prof", `--cpu-prof-dir=${values.prof}`] : []),
        script,
        role,
        ...(values.msize ? [values.msize] : []),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let line = "";
    while (!line.includes("\n")) {
      const r = await reader.read();
      if (r.done) throw new Error(`the ${role} process ended early`);
      line += r.value;
    }
    return { child, info: JSON.parse(line.split("\n")[0]!) };
  };
  const parts = new Set(values.parts.split(","));
  // Mutual TLS for the "tls" part: a throwaway CA, the far end's node
  // certificate (handed to it in a file) and a user's for this end.
  const tmp = await Deno.makeTempDir({ prefix: "ferry-net-probe-" });
  let tlsUser: Credentials | null = null;
  if (parts.has("tls")) {
    const ca = await CertificateAuthority.init(`${tmp}/ca`, "probe");
    const far = await ca.issue("far", { kind: "node", sans: ["127.0.0.1"] });
    const alice = await ca.issue("alice", { kind: "user" });
    const farCreds = { ca: ca.certPem, cert: far.certPem, key: far.keyPem, name: "far" };
    tlsUser = { ca: ca.certPem, cert: alice.certPem, key: alice.keyPem, name: "alice" };
    ca.close();
    await Deno.writeTextFile(`${tmp}/far.json`, JSON.stringify(farCreds));
  }
  const remote = await start("remote");
  const target = await start("target", tlsUser ? { FERRY_PROBE_TLS: `${tmp}/far.json` } : {});
  const cpus = navigator.hardwareConcurrency;
  const pinned = values.pin && cpus >= 2 && pin(remote.child.pid, String(cpus - 1)) &&
    pin(target.child.pid, "0") && pin(Deno.pid, "0");
  if (values.pin && !pinned) console.error("net_probe: --pin needs taskset and 2 CPUs; not pinned");
  const where = pinned ? ", remote on a CPU of its own" : "";
  const info = { ...remote.info, ...target.info } as {
    styx: string;
    sink: number;
    echo: number;
    source: number;
    tls: number;
  };
  const styxPort = Number(info.styx.split("!")[2]);
  const client = await StyxClient.connect(await tcpDial("127.0.0.1", styxPort), {
    msize: values.msize ? Number(values.msize) : undefined,
  });
  const mem = new MemTree();
  await mem.mkdirp("/net");
  const ns = new Namespace(mem, { caller: { user: "bench" } });
  await ns.mount(new RemoteTree(client), "/net");
  const direct = () => tcpDial("127.0.0.1", info.sink);
  const window = values.window ? Number(values.window) : undefined;
  const tunnel = (port: number) => dial(ns, `tcp!127.0.0.1!${port}`, { window });
  try {
    const mbps = {
      up: [] as number[],
      upT: [] as number[],
      down: [] as number[],
      downT: [] as number[],
    };
    const pids = [Deno.pid, remote.child.pid, target.child.pid];
    /** CPU ms per process (client, remote, far end) while `f` ran, added to `acc`. */
    const timed = async (acc: Cpu[], f: () => Promise<number>) => {
      const before = pids.map(cpuTimes);
      const r = await f();
      pids.forEach((p, i) => {
        const t = cpuTimes(p);
        acc[i]!.user += t.user - before[i]!.user;
        acc[i]!.sys += t.sys - before[i]!.sys;
      });
      return r;
    };
    const cpu = {
      up: zeroCpu(),
      upDirect: zeroCpu(),
      down: zeroCpu(),
      downDirect: zeroCpu(),
    };
    for (let i = 0; i < 3; i++) {
      if (parts.has("send")) {
        mbps.up.push(await timed(cpu.upDirect, async () => bulk(await direct(), bytes)));
        mbps.upT.push(await timed(cpu.up, async () => bulk(await tunnel(info.sink), bytes)));
      }
      if (parts.has("receive")) {
        mbps.down.push(
          await timed(
            cpu.downDirect,
            async () => download(await tcpDial("127.0.0.1", info.source), bytes),
          ),
        );
        mbps.downT.push(
          await timed(cpu.down, async () => download(await tunnel(info.source), bytes)),
        );
      }
    }
    // CPU of client, remote and far end, each as `per` gives it.
    const cpuText = (c: Cpu[], per: (ms: number) => string) =>
      `client ${per(total(c[0]!))}, remote ${per(total(c[1]!))}, far end ${per(total(c[2]!))}`;
    const perEach = (n: number) => (ms: number) => (ms * 1000 / n).toFixed(0);
    const mib = 3 * Number(values.mb);
    const perMiB = (ms: number) => (ms / mib).toFixed(2);
    const show = (what: string, d: number, tn: number, c: Cpu[], cd: Cpu[]) => {
      const cpu = cpuText(c, perMiB);
      const pct = `${(100 * tn / d).toFixed(0)}% of direct`;
      const split = (t: Cpu) => `user ${perMiB(t.user)} + sys ${perMiB(t.sys)}`;
      out([
        `bulk ${what} ${values.mb} MiB${where}, median of 3:`,
        `  direct          ${d.toFixed(0)} MB/s`,
        `  through /net    ${tn.toFixed(0)} MB/s  (${pct})`,
        `  CPU ms per MiB through /net: ${cpu}`,
        `  CPU ms per MiB direct: client ${perMiB(total(cd[0]!))}, far end ${
          perMiB(total(cd[2]!))
        }`,
      ], [
        `bulk ${what} ${values.mb} MiB through a mounted remote /net${where}, MB/s ` +
        `(target >= 80%; CPU ms/MiB ${cpu})`,
        tn.toFixed(0),
        `direct ${d.toFixed(0)}`,
        pct,
      ]);
      // The per-process rows: the client beside the same process dialling
      // direct; the remote relays every byte (direct has no such process),
      // so it stands beside the direct client, the cost of one more hop.
      const row = (who: string, t: Cpu, peer: Cpu, peerName: string) => {
        if (!values.json) return;
        const ratio = total(peer) > 0 ? `${(total(t) / total(peer)).toFixed(2)}x` : "";
        console.log(JSON.stringify([
          `bulk ${what}${where}: CPU ms per MiB of the ${who} through /net (${split(t)})`,
          perMiB(total(t)),
          `${peerName} ${perMiB(total(peer))}`,
          ratio,
        ]));
      };
      row("client", c[0]!, cd[0]!, "direct client");
      row("remote", c[1]!, cd[0]!, "direct client");
    };
    if (parts.has("send")) {
      show("send", median(mbps.up), median(mbps.upT), cpu.up, cpu.upDirect);
    }
    if (parts.has("receive")) {
      show("receive", median(mbps.down), median(mbps.downT), cpu.down, cpu.downDirect);
    }
    if (tlsUser && info.tls) {
      // Both ends run node:tls over a Conn (a TLS client over a tunnelled
      // stream has no other choice), so the difference is the tunnel's.
      const creds = tlsUser;
      const tlsDirect = async () =>
        await tlsWrapClient(await tcpDial("127.0.0.1", info.tls), { creds, peer: "far" });
      const tlsTunnel = async () =>
        await tlsWrapClient(await tunnel(info.tls), { creds, peer: "far" });
      const r = {
        up: [] as number[],
        upT: [] as number[],
        down: [] as number[],
        downT: [] as number[],
      };
      const c = { up: zeroCpu(), upDirect: zeroCpu(), down: zeroCpu(), downDirect: zeroCpu() };
      for (let i = 0; i < 3; i++) {
        r.up.push(await timed(c.upDirect, async () => bulk(await tlsDirect(), bytes)));
        r.upT.push(await timed(c.up, async () => bulk(await tlsTunnel(), bytes)));
        r.down.push(
          await timed(c.downDirect, async () => download(await tlsDirect(), bytes, 1n << 63n)),
        );
        r.downT.push(
          await timed(c.down, async () => download(await tlsTunnel(), bytes, 1n << 63n)),
        );
      }
      show("send, mutual TLS inside", median(r.up), median(r.upT), c.up, c.upDirect);
      show("receive, mutual TLS inside", median(r.down), median(r.downT), c.down, c.downDirect);
    }
    if (parts.has("rtt")) {
      const rd = await pingpong(await tcpDial("127.0.0.1", info.echo), rounds);
      const c = zeroCpu();
      const rt = await timed(c, async () => pingpong(await tunnel(info.echo), rounds));
      const cpu = cpuText(c, perEach(rounds + 20));
      out([
        `round trip of 1 byte, median of ${rounds}:`,
        `  direct          ${rd.toFixed(0)} µs`,
        `  through /net    ${rt.toFixed(0)} µs  (+${(rt - rd).toFixed(0)} µs)`,
        `  CPU µs per round trip through /net: ${cpu}`,
      ], [
        `round trip of 1 byte through /net, µs (median of ${rounds}; CPU µs ${cpu})`,
        rt.toFixed(0),
        `direct ${rd.toFixed(0)}`,
        `+${(rt - rd).toFixed(0)} µs`,
      ]);
    }
    if (parts.has("dial")) {
      const c = zeroCpu();
      const s = await timed(c, async () => {
        const t0 = performance.now();
        for (let i = 0; i < dials; i++) {
          const c = await tunnel(info.echo);
          c.close();
          await c.closed;
        }
        return (performance.now() - t0) / 1000;
      });
      const rate = (dials / s).toFixed(0);
      const cpu = cpuText(c, perEach(dials));
      out([
        `dial + hangup through /net: ${rate} connections/s`,
        `  CPU µs per dial + hangup: ${cpu}`,
      ], [`dial + hangup through /net, connections/s (CPU µs ${cpu})`, rate, "", ""]);
    }
  } finally {
    await client.close();
    await ns.close();
    for (const c of [remote.child, target.child]) {
      c.kill(values.prof ? "SIGTERM" : "SIGKILL");
      await c.status;
    }
    await Deno.remove(script).catch(() => {});
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
