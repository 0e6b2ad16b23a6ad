/**
 * One request at a time (queue depth 1), as Inferno's `mount`, plan9port's
 * `9p` and `9pfuse` issue them: microseconds per RPC at msize 8216 for
 *
 *   - Twalk of one name to a new fid, then Tclunk of it (the pair, halved);
 *   - Tstat of a walked fid (Tgetattr for diod, which speaks 9P2000.L);
 *   - Twrite of 4 KiB to an open file;
 *
 * against `ferry listen -A`, diod, and Inferno's `export` (when an `emu-g`
 * is found: $INFERNO_ROOT, else /tmp/inferno or /usr/inferno), each serving
 * the same temporary directory. The client is the probe's own: a few
 * hand-built frames written to a TCP socket and each reply read back whole
 * before the next request leaves, so the client costs the same whatever
 * answers. Each figure is the median over batches of 20 RPCs, the servers
 * taking turns batch by batch and figure by figure, and then the median of
 * --reps such runs; in brackets the same for the batches' 10th percentile,
 * which load elsewhere on a shared machine moves much less. The Ferry server's user CPU per RPC comes from
 * /proc/PID/stat over the whole run.
 *
 *   deno run -A bench/qd1_probe.ts [--n 3000] [--reps 3] [--json]
 *     [--before DIR]   also a Ferry row served from the checkout in DIR
 *     [--one-cpu]      this process and every server on CPU 0
 *     [--detail]       each figure's CPU (user and system) and 10th percentile
 *     [--also FILE]    also a row for the Deno script FILE, which must print
 *                      "tcp!HOST!PORT" first (a floor for experiments)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ferryArgv } from "../lib/self.ts";
import { freePort, median, spawnDiod, waitPort } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    n: { type: "string", default: "3000" },
    reps: { type: "string", default: "3" },
    before: { type: "string" },
    also: { type: "string", multiple: true },
    detail: { type: "boolean" },
    json: { type: "boolean" },
    "one-cpu": { type: "boolean" },
  },
});
const N = Number(values.n);
const REPS = Math.max(1, Number(values.reps));
if (!Number.isInteger(N) || N < 20) throw new Error(`Bad value for --n: '${values.n}'`);
const MSIZE = 8216;

// --one-cpu: this process, and so every server it starts, on CPU 0. On this
// kind of machine a round trip between two CPUs pays for waking the idle
// one, and whether client and server share a CPU is the scheduler's choice;
// on one CPU the figure is the servers' own cost.
const ONE_CPU = values["one-cpu"] === true &&
  new Deno.Command("taskset", { args: ["-a", "-p", "-c", "0", String(Deno.pid)], stdout: "null" })
    .outputSync().success;
const WHERE = ONE_CPU ? "everything on one CPU, " : "";
const BATCH = 20;

const enc = new TextEncoder();

/** The `p` quantile of `xs` (nearest rank). */
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
}
const dec = new TextDecoder();

// ---------------------------------------------------------------------------
// The independent client: frames built by hand, one request outstanding.

/** A frame under construction: little-endian fields, strings with a u16 length. */
class Out {
  b: number[] = [0, 0, 0, 0];
  constructor(type: number, tag: number) {
    this.b.push(type, tag & 255, tag >> 8);
  }
  u8(v: number): this {
    this.b.push(v & 255);
    return this;
  }
  u16(v: number): this {
    this.b.push(v & 255, (v >> 8) & 255);
    return this;
  }
  u32(v: number): this {
    for (let i = 0; i < 4; i++) this.b.push((v >>> (8 * i)) & 255);
    return this;
  }
  u64(v: number): this {
    return this.u32(v % 2 ** 32).u32(Math.floor(v / 2 ** 32));
  }
  str(s: string): this {
    const e = enc.encode(s);
    this.u16(e.length);
    for (const x of e) this.b.push(x);
    return this;
  }
  bytes(d: Uint8Array): this {
    for (const x of d) this.b.push(x);
    return this;
  }
  done(): Uint8Array {
    const f = new Uint8Array(this.b);
    new DataView(f.buffer).setUint32(0, f.length, true);
    return f;
  }
}

const Rlerror = 7, Tlopen = 12, Tgetattr = 24, Tversion = 100, Tattach = 104, Rerror = 107;
const Twalk = 110, Topen = 112, Twrite = 118, Tclunk = 120, Tstat = 124;

class Client {
  #buf = new Uint8Array(2 * MSIZE);
  #have = 0;
  constructor(readonly conn: Deno.TcpConn, readonly dotL: boolean) {}

  static async dial(port: number, dotL: boolean): Promise<Client> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new Client(conn, dotL);
  }

  /** Send `frame`, read its whole reply; a reply of another type is an error. */
  async rpc(frame: Uint8Array): Promise<Uint8Array> {
    let off = 0;
    while (off < frame.length) off += await this.conn.write(frame.subarray(off));
    for (;;) {
      if (this.#have >= 4) {
        const size = new DataView(this.#buf.buffer).getUint32(0, true);
        if (this.#have >= size) {
          const reply = this.#buf.slice(0, size);
          this.#buf.copyWithin(0, size, this.#have);
          this.#have -= size;
          const type = reply[4]!;
          if (type === Rerror) {
            const n = reply[7]! | reply[8]! << 8;
            throw new Error(`server said '${dec.decode(reply.subarray(9, 9 + n))}'`);
          }
          if (type === Rlerror) {
            throw new Error(`server said errno ${new DataView(reply.buffer).getUint32(7, true)}`);
          }
          if (type !== frame[4]! + 1) throw new Error(`reply type ${type} to ${frame[4]}`);
          return reply;
        }
      }
      const n = await this.conn.read(this.#buf.subarray(this.#have));
      if (n === null) throw new Error("server hung up");
      this.#have += n;
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* gone */ }
  }
}

/** The prepared frames of the three figures for one server. */
interface Ops {
  walk: Uint8Array;
  clunk: Uint8Array;
  stat: Uint8Array;
  writes: Uint8Array[];
}

/** Version, attach, and the fids the figures use: 2 on "f" (stat), 3 open on "w". */
async function prepare(c: Client, aname: string): Promise<Ops> {
  const version = c.dotL ? "9P2000.L" : "9P2000";
  const rv = await c.rpc(new Out(Tversion, 0xffff).u32(MSIZE).str(version).done());
  const msize = new DataView(rv.buffer).getUint32(7, true);
  if (msize !== MSIZE) throw new Error(`server chose msize ${msize}`);
  const att = new Out(Tattach, 1).u32(0).u32(0xffffffff).str(c.dotL ? "root" : "bench").str(
    aname,
  );
  if (c.dotL) att.u32(0);
  await c.rpc(att.done());
  await c.rpc(new Out(Twalk, 1).u32(0).u32(2).u16(1).str("f").done());
  await c.rpc(new Out(Twalk, 1).u32(0).u32(3).u16(1).str("w").done());
  // OWRITE, or O_WRONLY for Tlopen: both are 1.
  await c.rpc(
    c.dotL ? new Out(Tlopen, 1).u32(3).u32(1).done() : new Out(Topen, 1).u32(3).u8(1).done(),
  );
  const data = new Uint8Array(4096).fill(0x77);
  const writes: Uint8Array[] = [];
  // 64 pages in turn, so the file stays small and in the page cache.
  for (let i = 0; i < 64; i++) {
    writes.push(new Out(Twrite, 1).u32(3).u64(i * 4096).u32(4096).bytes(data).done());
  }
  return {
    walk: new Out(Twalk, 1).u32(0).u32(1).u16(1).str("f").done(),
    clunk: new Out(Tclunk, 1).u32(1).done(),
    stat: c.dotL
      // P9_GETATTR_BASIC: what a stat(2) needs.
      ? new Out(Tgetattr, 1).u32(2).u64(0x7ff).done()
      : new Out(Tstat, 1).u32(2).done(),
    writes,
  };
}

type Figure = "walk" | "stat" | "write";
const FIGURES: Figure[] = ["walk", "stat", "write"];

/** One batch of `BATCH` of figure `fig`: microseconds per RPC. */
async function batch(c: Client, ops: Ops, fig: Figure, k: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < BATCH; i++) {
    if (fig === "walk") {
      await c.rpc(ops.walk);
      await c.rpc(ops.clunk);
    } else if (fig === "stat") {
      await c.rpc(ops.stat);
    } else {
      await c.rpc(ops.writes[(k * BATCH + i) % ops.writes.length]!);
    }
  }
  const rpcs = fig === "walk" ? 2 * BATCH : BATCH;
  return (performance.now() - t0) * 1000 / rpcs;
}

// ---------------------------------------------------------------------------
// The servers

interface Server {
  name: string;
  port: number;
  dotL: boolean;
  aname: string;
  pid: number;
  stop(): Promise<void>;
}

function stopper(p: Deno.ChildProcess): () => Promise<void> {
  return async () => {
    try {
      p.kill("SIGTERM");
    } catch { /* gone */ }
    await p.status;
  };
}

function ferry(name: string, argv: string[], dir: string): Promise<Server> {
  return bannered(name, [...argv, "listen", "-A", "tcp!127.0.0.1!0", dir]);
}

/** Start `argv`, a server that prints its address ("… tcp!HOST!PORT") first. */
async function bannered(name: string, argv: string[]): Promise<Server> {
  const [exe, ...args] = argv;
  const p = new Deno.Command(exe!, {
    args,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const r = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!banner.includes("\n")) {
    const { value, done } = await r.read();
    if (done) throw new Error(`${name} exited: ${banner}`);
    banner += value;
  }
  r.releaseLock();
  const port = Number(banner.match(/tcp!\S+!(\d+)/)![1]);
  return { name, port, dotL: false, aname: "", pid: p.pid, stop: stopper(p) };
}

async function which(cmd: string): Promise<string | null> {
  const o = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "piped" })
    .output().catch(() => null);
  return o?.success ? dec.decode(o.stdout).trim() : null;
}

async function diod(dir: string): Promise<Server | null> {
  if (!(await which("diod"))) return null;
  const { proc: p, port } = await spawnDiod(dir);
  return { name: "diod", port, dotL: true, aname: dir, pid: p.pid, stop: stopper(p) };
}

function emuRoot(): string | null {
  for (const root of [Deno.env.get("INFERNO_ROOT"), "/tmp/inferno", "/usr/inferno"]) {
    if (!root) continue;
    try {
      Deno.statSync(`${root}/Linux/386/bin/emu-g`);
      return root;
    } catch { /* not here */ }
  }
  return null;
}

async function inferno(dir: string): Promise<Server | null> {
  const root = emuRoot();
  if (!root) return null;
  const port = freePort();
  // emu's own shell: a listener that runs one export per connection.
  const cmd = `listen -A 'tcp!127.0.0.1!${port}' {export '#U*${dir}' &}; sleep 100000`;
  const p = new Deno.Command(`${root}/Linux/386/bin/emu-g`, {
    args: [`-r${root}`, "/dis/sh.dis", "-c", cmd],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitPort(port);
  } catch (e) {
    await stopper(p)();
    console.error(`qd1: Inferno's emu did not listen: ${e}`);
    return null;
  }
  return { name: "Inferno export", port, dotL: false, aname: "", pid: p.pid, stop: stopper(p) };
}

/** User and system CPU of process `pid` (all its threads), in clock ticks. */
function cpuTicks(pid: number): [number, number] {
  const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command name, which is in parentheses.
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return [Number(f[11]), Number(f[12])];
}
const TICK_US = 1e6 / 100;

/** CPU time of every thread of `pid`, user and system together, in ns (schedstat). */
function cpuNs(pid: number): number {
  let ns = 0;
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0]);
    } catch { /* the thread ended */ }
  }
  return ns;
}

// ---------------------------------------------------------------------------

const dir = await Deno.makeTempDir({ prefix: "ferry-qd1-" });
const servers: Server[] = [];
const clients: Client[] = [];
const rows: [string, string, string, string][] = [];
function row(what: string, ferry: string, peer: string, ratio: string): void {
  rows.push([what, ferry, peer, ratio]);
  console.error(`  ${what}: ferry ${ferry} | peer ${peer} | ${ratio}`);
}
try {
  await Deno.writeFile(`${dir}/f`, new Uint8Array(100).fill(0x66));
  await Deno.writeFile(`${dir}/w`, new Uint8Array(0));
  servers.push(await ferry("Ferry", ferryArgv(), dir));
  if (values.before) {
    const entry = `${values.before}/cmd/ferry.ts`;
    const [exe, run, ...rest] = ferryArgv();
    const perms = rest.slice(0, -1);
    servers.push(await ferry(`Ferry (${values.before})`, [exe!, run!, ...perms, entry], dir));
  }
  for (const f of values.also ?? []) {
    servers.push(await bannered(f.split("/").pop()!, [Deno.execPath(), "run", "-A", f]));
  }
  for (const s of [await diod(dir), await inferno(dir)]) if (s) servers.push(s);
  const ops: Ops[] = [];
  for (const s of servers) {
    const c = await Client.dial(s.port, s.dotL);
    clients.push(c);
    ops.push(await prepare(c, s.aname));
  }
  // Warm up every server (JIT, page cache) before measuring.
  for (let i = 0; i < servers.length; i++) {
    for (const fig of FIGURES) {
      for (let k = 0; k < 25; k++) await batch(clients[i]!, ops[i]!, fig, k);
    }
  }
  const per: number[][][] = servers.map(() => FIGURES.map(() => []));
  const low: number[][][] = servers.map(() => FIGURES.map(() => []));
  const ticks = servers.map(() => 0);
  const sysTicks = servers.map(() => 0);
  let rpcs = 0;
  for (let rep = 0; rep < REPS; rep++) {
    const samples: number[][][] = servers.map(() => FIGURES.map(() => []));
    const t0 = servers.map((s) => cpuTicks(s.pid));
    for (let f = 0; f < FIGURES.length; f++) {
      const fig = FIGURES[f]!;
      const ns0 = servers.map((s) => cpuNs(s.pid));
      for (let k = 0; k < N / BATCH; k++) {
        // Each round starts with the next server: whichever goes first after
        // the others ran measures about a microsecond slower.
        for (let j = 0; j < servers.length; j++) {
          const i = (j + k) % servers.length;
          samples[i]![f]!.push(await batch(clients[i]!, ops[i]!, fig, k));
        }
      }
      const n = (fig === "walk" ? 2 : 1) * Math.floor(N / BATCH) * BATCH;
      if (rep === 0) rpcs += n;
      if (values.detail) {
        console.error(
          `  qd1 ${fig} run ${rep + 1}: CPU µs/RPC, p10 µs/RPC: ` +
            servers.map((s, i) =>
              `${s.name} ${((cpuNs(s.pid) - ns0[i]!) / n / 1000).toFixed(1)}, ${
                pct(samples[i]![f]!, 0.1).toFixed(1)
              }`
            ).join("; "),
        );
      }
    }
    servers.forEach((s, i) => {
      const [u, sy] = cpuTicks(s.pid);
      ticks[i] = ticks[i]! + u - t0[i]![0];
      sysTicks[i] = sysTicks[i]! + sy - t0[i]![1];
    });
    for (let i = 0; i < servers.length; i++) {
      for (let f = 0; f < FIGURES.length; f++) {
        per[i]![f]!.push(median(samples[i]![f]!));
        low[i]![f]!.push(pct(samples[i]![f]!, 0.1));
      }
    }
    console.error(
      `  qd1 run ${rep + 1}: ` +
        servers.map((s, i) => `${s.name} ${per[i]!.map((x) => x[rep]!.toFixed(1)).join("/")}`).join(
          ", ",
        ),
    );
  }
  const us = per.map((figs) => figs.map((xs) => median(xs)));
  // The 10th percentile says what each server does while the machine is
  // quiet: on a shared machine, load elsewhere moves the median.
  const p10 = low.map((figs) => figs.map((xs) => median(xs)));
  const cpu = ticks.map((t) => t * TICK_US / (rpcs * REPS));
  console.error(
    "  qd1 CPU µs per RPC, user/system: " +
      servers.map((s, i) =>
        `${s.name} ${cpu[i]!.toFixed(1)}/${(sysTicks[i]! * TICK_US / (rpcs * REPS)).toFixed(1)}`
      ).join(", "),
  );
  const label: Record<Figure, string> = {
    walk: "Twalk+Tclunk (the pair, halved)",
    stat: "Tstat (diod: Tgetattr)",
    write: "4 KiB Twrite",
  };
  const f1 = (x: number) => x.toFixed(1);
  for (let f = 0; f < FIGURES.length; f++) {
    const fig = FIGURES[f]!;
    for (let i = 1; i < servers.length; i++) {
      row(
        `QD1 ${label[fig]}, msize ${MSIZE}, ${WHERE}µs per RPC, median (10th percentile)`,
        `${f1(us[0]![f]!)} (${f1(p10[0]![f]!)})`,
        `${servers[i]!.name} ${f1(us[i]![f]!)} (${f1(p10[i]![f]!)})`,
        `${(us[0]![f]! / us[i]![f]!).toFixed(2)}x (${(p10[0]![f]! / p10[i]![f]!).toFixed(2)}x)`,
      );
    }
    if (servers.length === 1) row(`QD1 ${label[fig]}, µs per RPC`, f1(us[0]![f]!), "-", "");
  }
  row(
    `QD1 server user CPU, ${WHERE}µs per RPC (all three figures)`,
    f1(cpu[0]!),
    servers.slice(1).map((s, i) => `${s.name} ${f1(cpu[i + 1]!)}`).join(", ") || "-",
    "",
  );
  if (!servers.some((s) => s.name === "Inferno export")) {
    row("QD1 Inferno export", "-", "emu-g not found (set INFERNO_ROOT)", "");
  }
} finally {
  for (const c of clients) c.close();
  for (const s of servers) await s.stop();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
if (values.json) { for (const r of rows) console.log(JSON.stringify(r)); }
else {
  console.log("| figure | Ferry | peer | ratio |\n|---|---|---|---|");
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
}
