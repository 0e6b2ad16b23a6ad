/**
 * Many clients at once: 64 connections, each reading its own 16 MiB file
 * through one server, Ferry beside diod in the same run, neither pinned.
 * Figures: the aggregate rate (total bytes over the time from the first
 * read to the last reply), the server's CPU (user + system, every thread)
 * per GiB moved, and the client's.
 *
 * Both servers are driven by the same client, a small one that speaks just
 * enough 9P to version, attach, walk, open and read (9P2000 to Ferry,
 * 9P2000.L to diod, which speaks nothing else), each connection at msize
 * 64 KiB (diod's cap) with one read in flight, as diodcat and the kernel's
 * v9fs client read. The connections are shared among --procs client
 * processes (default 2, so the client is not held to one core either),
 * set up before the clock starts, and started together.
 *
 *   deno run -A bench/many_probe.ts [--json] [--conns 64] [--mib 16] [--reps 3]
 *        [--procs 2] [--threads N] [--tls] [--ferry PATH/cmd/ferry.ts]
 *
 * --threads is passed to `ferry listen`. --tls adds a row for Ferry's
 * mutual-TLS listener (diod has none: its row shows diod's plain figure
 * beside it). --ferry adds a row for another checkout's `ferry listen -A`,
 * run in turn with the others (before/after in one run).
 *
 *   deno run -A bench/many_probe.ts drive ADDR --proto 9P2000|9P2000.L
 *        [--aname A] [--conns N] [--first I] [--certs DIR]
 *
 * is one client process: it reads files fI, fI+1, … on N connections,
 * prints "ready" once they are open, starts when its stdin ends, and
 * prints one JSON line.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ferryArgv } from "../lib/self.ts";
import { CertificateAuthority } from "../lib/auth/ca.ts";
import { dialConn } from "../lib/net/connect.ts";
import type { Conn } from "../lib/transport/conn.ts";
import { median, spawnDiod } from "./util.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "boolean", default: false },
    conns: { type: "string", default: "64" },
    mib: { type: "string", default: "16" },
    reps: { type: "string", default: "3" },
    tls: { type: "boolean", default: false },
    ferry: { type: "string" },
    proto: { type: "string", default: "9P2000" },
    aname: { type: "string", default: "" },
    certs: { type: "string" },
    procs: { type: "string", default: "2" },
    first: { type: "string", default: "0" },
    threads: { type: "string" },
  },
  allowPositionals: true,
});
const CONNS = Number(values.conns);
const MIB = Number(values.mib);
const REPS = Math.max(1, Number(values.reps));
const PROCS = Math.max(1, Number(values.procs));
const MSIZE = 65536;
const NOFID = 0xffffffff;
const enc = new TextEncoder();
const dec = new TextDecoder();

// ---------------------------------------------------------------------------
// The client

/** Little-endian 9P message builder. */
function msg(type: number, tag: number, parts: (number | bigint | string | [number, 1 | 2])[]) {
  const bytes: number[] = [];
  const put = (v: number, n: number) => {
    for (let i = 0; i < n; i++) bytes.push((v / 2 ** (8 * i)) & 0xff);
  };
  for (const p of parts) {
    if (typeof p === "string") {
      const s = enc.encode(p);
      put(s.length, 2);
      bytes.push(...s);
    } else if (typeof p === "bigint") {
      put(Number(p & 0xffffffffn), 4);
      put(Number(p >> 32n), 4);
    } else if (Array.isArray(p)) put(p[0], p[1]);
    else put(p, 4);
  }
  const out = new Uint8Array(7 + bytes.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, out.length, true);
  out[4] = type;
  v.setUint16(5, tag, true);
  out.set(bytes, 7);
  return out;
}

/** One connection with one request at a time: the reply is exactly what arrives. */
class Rpc {
  readonly #buf = new Uint8Array(MSIZE + 64);
  readonly #view = new DataView(this.#buf.buffer);
  readonly #into?: (b: Uint8Array) => Promise<number | null>;

  constructor(readonly conn: Conn, readonly legacy: boolean) {
    const c = conn as Conn & { readInto?: (b: Uint8Array) => Promise<number | null> };
    this.#into = c.readInto?.bind(c);
  }

  /** Send `frame`; the reply's type and body (a view valid until the next call). */
  async call(frame: Uint8Array): Promise<[number, DataView, number]> {
    await this.conn.write(frame);
    let have = 0;
    let size = Infinity;
    while (have < size) {
      let n: number | null;
      if (this.#into) n = await this.#into(this.#buf.subarray(have));
      else {
        const chunk = await this.conn.read();
        n = chunk && chunk.length;
        if (chunk) this.#buf.set(chunk, have);
      }
      if (n === null) throw new Error("the server hung up");
      have += n;
      if (size === Infinity && have >= 4) size = this.#view.getUint32(0, true);
    }
    const type = this.#buf[4]!;
    if (type === 107) {
      const len = this.#view.getUint16(7, true);
      throw new Error(`server: ${dec.decode(this.#buf.subarray(9, 9 + len))}`);
    }
    if (type === 7) throw new Error(`server: errno ${this.#view.getUint32(7, true)}`);
    return [type, this.#view, size];
  }
}

/** Version, attach, walk to `name` and open it for reading; its iounit. */
async function setUp(r: Rpc, name: string, aname: string): Promise<number> {
  const version = r.legacy ? "9P2000" : "9P2000.L";
  const [, v] = await r.call(msg(100, 0xffff, [MSIZE, version]));
  const msize = v.getUint32(7, true);
  // 9P2000.L's attach adds the numeric uid; diod squashes every user to root.
  await r.call(msg(104, 1, [0, NOFID, "root", aname, ...(r.legacy ? [] : [0])]));
  await r.call(msg(110, 1, [0, 1, [1, 2], name]));
  const [, o] = await r.call(r.legacy ? msg(112, 1, [1, [0, 1]]) : msg(12, 1, [1, 0]));
  const iounit = o.getUint32(7 + 13, true);
  return iounit > 0 ? Math.min(iounit, msize - 24) : msize - 24;
}

/** utime + stime (and reaped children's) of `pid`, in seconds. */
async function cpuOf(pid: number | "self"): Promise<number> {
  const s = await Deno.readTextFile(`/proc/${pid}/stat`);
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  // Fields 14-17 of proc(5): utime, stime, cutime, cstime; f[0] is field 3.
  return [11, 12, 13, 14].reduce((a, i) => a + Number(f[i]), 0) / 100;
}

async function drive(addr: string): Promise<void> {
  const legacy = values.proto === "9P2000";
  const conns = await Promise.all(
    Array.from(
      { length: CONNS },
      () => dialConn(addr, { insecure: !values.certs, certDir: values.certs }),
    ),
  );
  const rpcs = conns.map((c) => new Rpc(c, legacy));
  const first = Number(values.first);
  const iounits = await Promise.all(
    rpcs.map((r, i) => setUp(r, `f${first + i}`, values.aname)),
  );
  // Ready: wait for the word to start, so that every client process reads at once.
  console.log("ready");
  for await (const _ of Deno.stdin.readable) break;
  const t0 = performance.timeOrigin + performance.now();
  const self0 = await cpuOf("self");
  const counts = await Promise.all(rpcs.map(async (r, i) => {
    let off = 0n;
    let tag = 2;
    for (;;) {
      const [, v, size] = await r.call(msg(116, tag, [1, off, iounits[i]!]));
      tag = tag === 0xfffe ? 2 : tag + 1;
      const n = v.getUint32(7, true);
      if (n === 0 || size !== 11 + n) break;
      off += BigInt(n);
    }
    return Number(off);
  }));
  const t1 = performance.timeOrigin + performance.now();
  const cpu = await cpuOf("self") - self0;
  for (const c of conns) c.close();
  const bytes = counts.reduce((a, b) => a + b, 0);
  console.log(JSON.stringify({ bytes, t0, t1, cpu }));
}

// ---------------------------------------------------------------------------
// The run

type Figures = { mbs: number; serverCpuPerGiB: number; clientCpuPerGiB: number; bytes: number };

/**
 * Run the client as `PROCS` processes sharing the connections, started
 * together once all are connected; the aggregate runs from the first
 * read to the last reply, and the server's CPU is taken over that time.
 */
async function runClients(addr: string, pid: number, extra: string[]): Promise<Figures> {
  const per = Math.ceil(CONNS / PROCS);
  const kids = Array.from({ length: PROCS }, (_, k) => {
    const n = Math.min(per, CONNS - k * per);
    return new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        import.meta.filename!,
        "drive",
        addr,
        "--conns",
        String(n),
        "--first",
        String(k * per),
        ...extra,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }).filter((_, k) => k * per < CONNS);
  const outs = kids.map((p) => p.stdout.pipeThrough(new TextDecoderStream()).getReader());
  const errs = kids.map((p) => new Response(p.stderr).text());
  const line = async (r: ReadableStreamDefaultReader<string>, k: number) => {
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await r.read();
      if (done) throw new Error(`the client failed: ${text}${await errs[k]}`);
      text += value;
    }
    return text.trim();
  };
  try {
    await Promise.all(outs.map(line));
    const cpu0 = await cpuOf(pid);
    for (const p of kids) await p.stdin.close();
    const res = (await Promise.all(outs.map(line))).map((t) =>
      JSON.parse(t) as { bytes: number; t0: number; t1: number; cpu: number }
    );
    const serverCpu = await cpuOf(pid) - cpu0;
    const bytes = res.reduce((a, r) => a + r.bytes, 0);
    if (bytes !== CONNS * MIB * 2 ** 20) {
      throw new Error(`the clients read ${bytes} bytes, not ${CONNS * MIB * 2 ** 20}`);
    }
    const secs = (Math.max(...res.map((r) => r.t1)) - Math.min(...res.map((r) => r.t0))) / 1000;
    const gib = bytes / 2 ** 30;
    return {
      bytes,
      mbs: bytes / 1e6 / secs,
      serverCpuPerGiB: serverCpu / gib,
      clientCpuPerGiB: res.reduce((a, r) => a + r.cpu, 0) / gib,
    };
  } finally {
    for (const p of kids) {
      try {
        p.kill("SIGTERM");
      } catch { /* done */ }
      await p.status;
    }
  }
}

interface Server {
  addr: string;
  proc: Deno.ChildProcess;
}

/** Start `ferry listen` (`argv` runs ferry) and wait for its address. */
async function startFerry(argv: string[], args: string[]): Promise<Server> {
  const [exe, ...rest] = [...argv, "listen", ...args];
  const proc = new Deno.Command(exe!, { args: rest, stdout: "piped", stderr: "piped" }).spawn();
  proc.stderr.pipeTo(new WritableStream()).catch(() => {});
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`ferry listen exited: ${text}`);
    text += value;
  }
  reader.releaseLock();
  proc.stdout.cancel().catch(() => {});
  const m = text.match(/(tcp!\S+)/);
  if (!m) throw new Error(`ferry listen said '${text.trim()}', not its address`);
  return { addr: m[1]!.replace("0.0.0.0", "127.0.0.1"), proc };
}

async function stop(s: Server | undefined): Promise<void> {
  if (!s) return;
  try {
    s.proc.kill("SIGTERM");
  } catch { /* gone */ }
  await s.proc.status;
}

async function has(cmd: string): Promise<boolean> {
  const o = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
    .output().catch(() => null);
  return o?.success ?? false;
}

/** Node and user credentials from a fresh CA, in `tmp/node` and `tmp/user`. */
async function makeCredentials(tmp: string): Promise<void> {
  const ca = await CertificateAuthority.init(`${tmp}/ca`, "bench-ca");
  try {
    const node = await ca.issue("node", { kind: "node", sans: ["127.0.0.1"] });
    const user = await ca.issue("alice", { kind: "user" });
    for (const [d, name, issued] of [["node", "node", node], ["user", "alice", user]] as const) {
      await Deno.mkdir(`${tmp}/${d}`, { mode: 0o700 });
      await Deno.writeTextFile(`${tmp}/${d}/ca.pem`, ca.certPem);
      await Deno.writeTextFile(`${tmp}/${d}/${name}.pem`, issued.certPem);
      await Deno.writeTextFile(`${tmp}/${d}/${name}.key`, issued.keyPem!, { mode: 0o600 });
    }
    await Deno.writeTextFile(`${tmp}/node/crl.pem`, await ca.crlPem());
  } finally {
    ca.close();
  }
}

async function main(): Promise<void> {
  const rows: string[][] = [];
  const row = (...r: string[]) => {
    rows.push(r);
    if (!values.json) console.log(r.join(" | "));
  };
  const tmp = await Deno.makeTempDir({ prefix: "ferry-many-" });
  const data = `${tmp}/data`;
  const servers: Server[] = [];
  let diod: Deno.ChildProcess | undefined;
  try {
    await Deno.mkdir(data);
    const chunk = new Uint8Array(MIB * 2 ** 20);
    for (let i = 0; i < CONNS; i++) {
      crypto.getRandomValues(chunk.subarray(0, 65536));
      for (let o = 65536; o < chunk.length; o += 65536) chunk.copyWithin(o, 0, 65536);
      await Deno.writeFile(`${data}/f${i}`, chunk);
    }
    const threads = values.threads ? ["--threads", values.threads] : [];
    const plain = await startFerry(ferryArgv(), ["-A", ...threads, "tcp!127.0.0.1!0", data]);
    servers.push(plain);
    const runs: Record<string, () => Promise<Figures>> = {
      ferry: () => runClients(plain.addr, plain.proc.pid, ["--proto", "9P2000"]),
    };
    if (values.ferry) {
      const before = await startFerry(
        [Deno.execPath(), "run", "-A", values.ferry],
        ["-A", "tcp!127.0.0.1!0", data],
      );
      servers.push(before);
      runs.before = () => runClients(before.addr, before.proc.pid, ["--proto", "9P2000"]);
    }
    if (values.tls) {
      await makeCredentials(tmp);
      const tls = await startFerry(ferryArgv(), [
        ...threads,
        "--certs",
        `${tmp}/node`,
        "tcp!127.0.0.1!0",
        data,
      ]);
      servers.push(tls);
      runs.tls = () =>
        runClients(tls.addr, tls.proc.pid, ["--proto", "9P2000", "--certs", `${tmp}/user`]);
    }
    if (await has("diod")) {
      const started = await spawnDiod(data);
      diod = started.proc;
      const port = started.port;
      const pid = diod.pid;
      runs.diod = () =>
        runClients(`tcp!127.0.0.1!${port}`, pid, ["--proto", "9P2000.L", "--aname", data]);
    }
    // Turns: each server runs once per round, so a burst of load elsewhere
    // skews one run of each rather than one side.
    const got: Record<string, Figures[]> = {};
    for (let i = 0; i < REPS; i++) {
      for (const [k, fn] of Object.entries(runs)) {
        const f = await fn();
        (got[k] ??= []).push(f);
        if (!values.json) {
          console.error(
            `  ${k}: ${f.mbs.toFixed(0)} MB/s, server ${
              f.serverCpuPerGiB.toFixed(2)
            } s/GiB, client ${f.clientCpuPerGiB.toFixed(2)} s/GiB`,
          );
        }
      }
    }
    const med = (k: string, key: keyof Figures) => median(got[k]!.map((f) => f[key]));
    row(
      `method: ${CONNS} connections, each its own ${MIB} MiB file, msize 64 KiB, one read in ` +
        `flight each, from ${PROCS} client processes (the same client for both: 9P2000 to ` +
        `Ferry, 9P2000.L to diod), timed from the first read; medians of ${REPS}, in turns`,
      "",
      "",
      "",
    );
    // The spread shows the noise: the machine may be busy with other work.
    const spread = (k: string) => {
      const xs = got[k]!.map((f) => f.mbs);
      return `${med(k, "mbs").toFixed(0)} (${Math.min(...xs).toFixed(0)}-${
        Math.max(...xs).toFixed(0)
      })`;
    };
    const d = got.diod ? med("diod", "mbs") : NaN;
    const dc = got.diod ? med("diod", "serverCpuPerGiB") : NaN;
    const peer = (x: number, digits: number) =>
      got.diod ? `diod ${x.toFixed(digits)}` : "diod not installed";
    const line = (label: string, k: string) => {
      const m = med(k, "mbs");
      const c = med(k, "serverCpuPerGiB");
      row(
        `${label}: aggregate MB/s (range)`,
        spread(k),
        got.diod ? `diod ${spread("diod")}` : "diod not installed",
        `${(m / d).toFixed(2)}x`,
      );
      row(
        `${label}: server CPU s per GiB (client's: ${med(k, "clientCpuPerGiB").toFixed(2)})`,
        c.toFixed(2),
        peer(dc, 2),
        `${(c / dc).toFixed(2)}x`,
      );
    };
    const t = values.threads ? `--threads ${values.threads}` : "default threads";
    line(`${CONNS} clients, ferry listen -A (${t})`, "ferry");
    if (got.before) line(`${CONNS} clients, ferry listen -A of ${values.ferry}`, "before");
    if (got.tls) line(`${CONNS} clients, ferry listen with mutual TLS (${t}; diod: plain)`, "tls");
  } finally {
    for (const s of servers) await stop(s);
    if (diod) {
      diod.kill("SIGTERM");
      await diod.status;
    }
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  if (values.json) { for (const r of rows) console.log(JSON.stringify(r)); }
}

if (positionals[0] === "drive") await drive(positionals[1]!);
else await main();
