/**
 * Idle connections against `ferry listen`: what each costs the server, and
 * whether the server's memory comes back after clients leave. For a plain
 * (-A) listener and a mutual TLS one on each TLS library (node:tls, the
 * default, and Deno's own, FERRY_TLS_LISTENER=deno), each on a fresh server
 * process:
 *
 * - server RSS idle, before any client;
 * - with N connections (default 1,000) that negotiated and attached, then
 *   stay silent: the growth per connection, KiB, over all N and over the
 *   second N/2 only (the first half also pays one-off costs of a burst of
 *   handshakes: the JS heap's young generation grown, code paged in);
 * - after each of four cycles of N connections that connect, attach and
 *   leave: RSS 5 s after they left, once the server has settled.
 *
 * Beside them, where Debian's diod is installed, diod's cost per idle
 * connection (9P2000.L, attached) measured the same way. RSS comes from
 * `ps`, which works under CI's permissions (reading /proc does not).
 *
 *   deno run -A bench/idle_probe.ts [--json] [--conns 1000] [--cycles 4]
 *     [--only plain,tls,tls-deno,diod] [--ferry PATH/cmd/ferry.ts]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CertificateAuthority } from "../lib/auth/ca.ts";
import type { Credentials } from "../lib/auth/link.ts";
import { ferryArgv } from "../lib/self.ts";
import { encode } from "../lib/styx/codec.ts";
import { FrameReader } from "../lib/styx/frame.ts";
import { MsgType, NOFID, NOTAG } from "../lib/styx/types.ts";
import type { Conn } from "../lib/transport/conn.ts";
import { tcpDial } from "../lib/transport/tcp.ts";
import { tlsDial } from "../lib/transport/tls.ts";
import { sh, spawnDiod } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "boolean", default: false },
    conns: { type: "string", default: "1000" },
    cycles: { type: "string", default: "4" },
    only: { type: "string", default: "plain,tls,tls-deno,diod" },
    /** The ferry to measure (default: this checkout's). */
    ferry: { type: "string" },
  },
});
const CONNS = Number(values.conns);
const CYCLES = Number(values.cycles);
const ONLY = new Set(values.only.split(","));
/** Connections set up at once. */
const PARALLEL = 50;
const MSIZE = 8192 + 24;
/** How long after clients leave the server's RSS is read. */
const AFTER_MS = 5000;
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resident set of `pid`, KiB. */
async function rss(pid: number): Promise<number> {
  return Number((await sh(`ps -o rss= -p ${pid}`)).trim());
}

/** RSS of `pid` once it has stopped moving (samples 500 ms apart, at most 20 s). */
async function settled(pid: number): Promise<number> {
  let last = await rss(pid);
  for (let i = 0, same = 0; i < 40 && same < 3; i++) {
    await sleep(500);
    const now = await rss(pid);
    same = Math.abs(now - last) < 256 ? same + 1 : 0;
    last = now;
  }
  return last;
}

interface Server {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

/** A fresh `ferry listen` on loopback exporting `dir` (`certs`: with TLS). */
async function startFerry(
  dir: string,
  certs?: string,
  engine: "node" | "deno" = "node",
): Promise<Server> {
  const argv = values.ferry ? [Deno.execPath(), "run", "-A", values.ferry] : ferryArgv();
  const [exe, ...args] = [
    ...argv,
    "listen",
    ...(certs ? ["--certs", certs] : ["-A"]),
    "--max-conns",
    String(CONNS * 2),
    "tcp!127.0.0.1!0",
    dir,
  ];
  const proc = new Deno.Command(exe!, {
    args,
    env: { FERRY_TLS_LISTENER: engine },
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const reader = proc.stdout.getReader();
  let text = "";
  while (!/listening on \S+!\d+/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`ferry listen exited: ${text}`);
    text += dec.decode(value);
  }
  reader.releaseLock();
  proc.stdout.cancel().catch(() => {});
  return {
    pid: proc.pid,
    port: Number(text.match(/listening on \S+!(\d+)/)![1]),
    async stop() {
      proc.kill("SIGTERM");
      await proc.status;
    },
  };
}

/** Open `n` connections with `open`, `PARALLEL` at a time. */
async function many<T>(n: number, open: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(PARALLEL, n) }, async () => {
    while (next < n) {
      next++;
      out.push(await open());
    }
  }));
  return out;
}

/** Negotiate and attach on `c`, as a 9P2000 client (Styx) or a 9P2000.L one (diod). */
async function attach(c: Conn, dotL = false): Promise<Conn> {
  const r = new FrameReader(c, MSIZE);
  const version = encode({
    type: MsgType.Tversion,
    tag: NOTAG,
    msize: MSIZE,
    version: dotL ? "9P2000.L" : "9P2000",
  });
  let att: Uint8Array;
  if (dotL) {
    // 9P2000.L's Tattach ends with n_uname[4]: built by hand, as the codec speaks 9P2000.
    const plain = encode({
      type: MsgType.Tattach,
      tag: 1,
      fid: 0,
      afid: NOFID,
      uname: "root",
      aname: diodDir,
    });
    att = new Uint8Array(plain.length + 4);
    att.set(plain);
    new DataView(att.buffer).setUint32(0, att.length, true);
    new DataView(att.buffer).setUint32(plain.length, 0, true);
  } else {
    att = encode({ type: MsgType.Tattach, tag: 1, fid: 0, afid: NOFID, uname: "probe", aname: "" });
  }
  await c.write(version);
  const v = await r.next();
  if (v === null || v[4] !== MsgType.Rversion) throw new Error("Tversion failed");
  await c.write(att);
  const a = await r.next();
  // 9P2000.L answers errors with Rlerror (7).
  if (a === null || a[4] !== MsgType.Rattach) throw new Error(`Tattach failed (type ${a?.[4]})`);
  return c;
}

interface Figures {
  idle: number;
  /** RSS with the first half of the connections held. */
  half: number;
  held: number;
  cycles: number[];
}

/** The figures for one server, dialling with `dial`. */
async function measure(
  srv: Server,
  dial: () => Promise<Conn>,
  cycles: number,
  dotL = false,
): Promise<Figures> {
  // Let start-up settle before the first figure.
  const idle = await settled(srv.pid);
  const open = (n: number) => many(n, async () => await attach(await dial(), dotL));
  // In two halves: the first also pays what any burst of handshakes costs
  // once (the JS heap's young generation grown to its working size, code
  // paged in); the second half's growth is what one more connection costs.
  const conns = await open(Math.floor(CONNS / 2));
  const half = await settled(srv.pid);
  conns.push(...await open(CONNS - conns.length));
  const held = await settled(srv.pid);
  for (const c of conns) c.close();
  const after: number[] = [];
  for (let i = 0; i < cycles; i++) {
    // The first cycle is the connections held above.
    if (i > 0) {
      const cs = await many(CONNS, async () => await attach(await dial(), dotL));
      for (const c of cs) c.close();
    }
    // As hostile.ts does: the figure a few seconds after the clients left.
    await sleep(AFTER_MS);
    after.push(await settled(srv.pid));
  }
  return { idle, half, held, cycles: after };
}

const mib = (kib: number) => (kib / 1024).toFixed(0);
const perConn = (f: Figures) => (f.held - f.idle) / CONNS;
/** Growth per connection over the second half only (see {@link measure}). */
const marginal = (f: Figures) => (f.held - f.half) / (CONNS - Math.floor(CONNS / 2));

function rows(label: string, f: Figures, peer?: Figures): string[][] {
  const out: string[][] = [];
  const per = perConn(f);
  out.push([
    `${label}: server RSS idle, MiB`,
    mib(f.idle),
    peer ? `diod ${mib(peer.idle)}` : "",
    "",
  ]);
  out.push([
    `${label}: per idle attached connection (${CONNS} held), KiB`,
    per.toFixed(1),
    peer ? `diod ${perConn(peer).toFixed(1)}` : "target < 36",
    peer ? `${(per / Math.max(0.1, perConn(peer))).toFixed(1)}x` : per < 36 ? "met" : "missed",
  ]);
  const m = marginal(f);
  out.push([
    `${label}: per idle attached connection, second ${CONNS - Math.floor(CONNS / 2)} only, KiB`,
    m.toFixed(1),
    peer ? `diod ${marginal(peer).toFixed(1)}` : "target < 36",
    peer ? `${(m / Math.max(0.1, marginal(peer))).toFixed(1)}x` : m < 36 ? "met" : "missed",
  ]);
  const last = f.cycles[f.cycles.length - 1]!;
  const ok = last < f.idle + 32 * 1024;
  out.push([
    `${label}: server RSS after each of ${f.cycles.length} cycles of ${CONNS} connections, MiB`,
    f.cycles.map(mib).join(" / "),
    "target: last < idle + 32",
    ok ? "met" : "missed",
  ]);
  return out;
}

function print(r: string[]): void {
  if (values.json) console.log(JSON.stringify(r));
  else console.log(`${r[0]}: ${r[1]} | ${r[2]} | ${r[3]}`);
}

let diodDir = "";

async function diodFigures(dir: string): Promise<Figures | null> {
  if (!(await sh("command -v diod || true")).trim()) return null;
  diodDir = dir;
  const { proc: diod, port } = await spawnDiod(dir);
  try {
    const srv = { pid: diod.pid, port, stop: () => Promise.resolve() };
    return await measure(srv, () => tcpDial("127.0.0.1", port), 1, true);
  } finally {
    diod.kill("SIGTERM");
    await diod.status;
  }
}

const tmp = await Deno.makeTempDir({ prefix: "ferry-idle-" });
try {
  const dir = `${tmp}/export`;
  await Deno.mkdir(dir);
  await Deno.writeTextFile(`${dir}/hello`, "hello\n");
  let diod: Figures | null = null;
  if (ONLY.has("diod")) {
    console.error("idle: diod");
    diod = await diodFigures(dir);
  }
  if (ONLY.has("plain")) {
    console.error("idle: ferry listen -A");
    const srv = await startFerry(dir);
    try {
      const f = await measure(srv, () => tcpDial("127.0.0.1", srv.port), CYCLES);
      for (const r of rows("plain TCP (-A)", f, diod ?? undefined)) print(r);
      if (ONLY.has("diod") && !diod) {
        print(["diod", "-", "not installed (apt-get install diod)", ""]);
      }
    } finally {
      await srv.stop();
    }
  }
  if (ONLY.has("tls") || ONLY.has("tls-deno")) {
    const ca = await CertificateAuthority.init(`${tmp}/ca`, "probe");
    const s = await ca.issue("srv", { kind: "node", sans: ["127.0.0.1"] });
    const u = await ca.issue("alice", { kind: "user" });
    ca.close();
    const certs = `${tmp}/srv-certs`;
    await Deno.mkdir(certs);
    await Deno.writeTextFile(`${certs}/ca.pem`, ca.certPem);
    await Deno.writeTextFile(`${certs}/srv.pem`, s.certPem);
    await Deno.writeTextFile(`${certs}/srv.key`, s.keyPem, { mode: 0o600 });
    const creds: Credentials = { ca: ca.certPem, cert: u.certPem, key: u.keyPem, name: "alice" };
    const engines = [
      ["tls", "node", "mutual TLS (node:tls listener, the default)"],
      ["tls-deno", "deno", "mutual TLS (Deno's TLS listener)"],
    ] as const;
    for (const [part, engine, label] of engines) {
      if (!ONLY.has(part)) continue;
      console.error(`idle: ferry listen (${label})`);
      const srv = await startFerry(dir, certs, engine);
      try {
        const f = await measure(
          srv,
          () => tlsDial("127.0.0.1", srv.port, { creds, peer: "srv" }),
          CYCLES,
        );
        for (const r of rows(label, f)) print(r);
      } finally {
        await srv.stop();
      }
    }
  }
} finally {
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
