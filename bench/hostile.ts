/**
 * Hostile clients against `ferry listen -A`: the server's memory (RSS, from
 * /proc) at the start, at its peak and 10 s after the clients are gone, for
 * three attacks, each on a fresh server process:
 *
 * - 20 connections each pipeline 90 Treads of 512 KiB on one fid, then hang
 *   up without reading a byte;
 * - 20 connections do the same but stay, never reading, until the server
 *   has stopped growing, then hang up;
 * - one connection walks to 1,000,000 new fids, then hangs up.
 *
 * Targets: peak under 300 MiB, and within 64 MiB of the start afterwards.
 * Traffic stays on loopback; every loop is bounded.
 *
 *   deno run -A bench/hostile.ts [--json] [--conns 20] [--reads 90] [--fids 1000000]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ferryArgv } from "../lib/self.ts";
import { encode } from "../lib/styx/codec.ts";
import { FrameReader } from "../lib/styx/frame.ts";
import { IOHDRSZ, MsgType, NOFID, NOTAG, OREAD, type TMsg } from "../lib/styx/types.ts";
import { type TcpConn, tcpDial } from "../lib/transport/tcp.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "boolean", default: false },
    conns: { type: "string", default: "20" },
    reads: { type: "string", default: "90" },
    fids: { type: "string", default: "1000000" },
    /** The ferry to attack (default: this checkout's). */
    ferry: { type: "string" },
  },
});
const CONNS = Number(values.conns);
const READS = Number(values.reads);
const FIDS = Number(values.fids);
const COUNT = 512 * 1024;
const MSIZE = COUNT + IOHDRSZ;
const AFTER_MS = 10_000;
const dec = new TextDecoder();

/** VmRSS and VmHWM (the peak) of `pid`, in MiB. */
async function mem(pid: number): Promise<{ rss: number; peak: number }> {
  const s = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = (k: string) => Number(s.match(new RegExp(`^${k}:\\s+(\\d+)`, "m"))?.[1] ?? NaN);
  return { rss: kib("VmRSS") / 1024, peak: kib("VmHWM") / 1024 };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A fresh `ferry listen -A` on loopback exporting `dir`. */
async function startFerry(dir: string): Promise<{ port: number; proc: Deno.ChildProcess }> {
  const argv = values.ferry ? [Deno.execPath(), "run", "-A", values.ferry] : ferryArgv();
  const [exe, ...args] = [...argv, "listen", "-A", "tcp!127.0.0.1!0", dir];
  const proc = new Deno.Command(exe!, { args, stdout: "piped", stderr: "null", stdin: "null" })
    .spawn();
  const reader = proc.stdout.getReader();
  let text = "";
  while (!/listening on \S+!\d+/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`ferry listen exited: ${text}`);
    text += dec.decode(value);
  }
  reader.releaseLock();
  proc.stdout.cancel().catch(() => {});
  // Let start-up settle before the first figure.
  await sleep(1000);
  return { port: Number(text.match(/listening on \S+!(\d+)/)![1]), proc };
}

function frames(msgs: TMsg[]): Uint8Array {
  const parts = msgs.map((m) => encode(m));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Connect, negotiate, attach fid 0 and (with `file`) open it on fid 1. */
async function session(port: number, file?: string): Promise<{ c: TcpConn; r: FrameReader }> {
  const c = await tcpDial("127.0.0.1", port);
  const r = new FrameReader(c, MSIZE);
  const setup: TMsg[] = [
    { type: MsgType.Tversion, tag: NOTAG, msize: MSIZE, version: "9P2000" },
    { type: MsgType.Tattach, tag: 1, fid: 0, afid: NOFID, uname: "bench", aname: "" },
  ];
  if (file) {
    setup.push(
      { type: MsgType.Twalk, tag: 2, fid: 0, newfid: 1, wnames: [file] },
      { type: MsgType.Topen, tag: 3, fid: 1, mode: OREAD },
    );
  }
  await c.write(frames(setup));
  for (let i = 0; i < setup.length; i++) {
    const f = await r.next();
    if (f === null || f[4] === MsgType.Rerror) throw new Error("session set-up failed");
  }
  return { c, r };
}

function reads(): Uint8Array {
  return frames(Array.from({ length: READS }, (_, i) => ({
    type: MsgType.Tread,
    tag: 10 + i,
    fid: 1,
    offset: 0n,
    count: COUNT,
  })));
}

interface Figures {
  start: number;
  peak: number;
  after: number;
  note?: string;
}

async function pipelineAndHangUp(port: number): Promise<string> {
  const ss = await Promise.all(Array.from({ length: CONNS }, () => session(port, "big")));
  const batch = reads();
  await Promise.all(ss.map(async ({ c }) => {
    await c.write(batch);
    c.close();
  }));
  return "";
}

async function neverRead(port: number, pid: number): Promise<string> {
  const ss = await Promise.all(Array.from({ length: CONNS }, () => session(port, "big")));
  const batch = reads();
  await Promise.all(ss.map(({ c }) => c.write(batch)));
  // Stay until the server has stopped growing (at most 30 s).
  let last = (await mem(pid)).rss;
  for (let i = 0, same = 0; i < 60 && same < 4; i++) {
    await sleep(500);
    const now = (await mem(pid)).rss;
    same = Math.abs(now - last) < 1 ? same + 1 : 0;
    last = now;
  }
  for (const { c } of ss) c.close();
  return `held ${f0(last)} MiB while open`;
}

async function manyFids(port: number): Promise<string> {
  const { c, r } = await session(port);
  const per = 1000;
  let refused = 0;
  for (let start = 1; start <= FIDS; start += per) {
    const msgs: TMsg[] = [];
    for (let fid = start; fid < start + per && fid <= FIDS; fid++) {
      msgs.push({ type: MsgType.Twalk, tag: fid - start + 10, fid: 0, newfid: fid, wnames: [] });
    }
    await c.write(frames(msgs));
    for (let i = 0; i < msgs.length; i++) {
      const f = await r.next();
      if (f === null) throw new Error("the server hung up");
      if (f[4] === MsgType.Rerror) refused++;
    }
  }
  c.close();
  return `${FIDS - refused} fids granted, ${refused} refused`;
}

const f0 = (n: number) => n.toFixed(0);

async function attack(
  dir: string,
  run: (port: number, pid: number) => Promise<string>,
): Promise<Figures> {
  const { port, proc } = await startFerry(dir);
  try {
    const start = (await mem(proc.pid)).rss;
    const note = await run(port, proc.pid);
    await sleep(AFTER_MS);
    const m = await mem(proc.pid);
    return { start, peak: m.peak, after: m.rss, note };
  } finally {
    proc.kill("SIGTERM");
    await proc.status;
  }
}

const dir = await Deno.makeTempDir({ prefix: "ferry-hostile-" });
try {
  await Deno.writeFile(`${dir}/big`, new Uint8Array(COUNT).fill(0x5a));
  const cases: [string, (port: number, pid: number) => Promise<string>][] = [
    [`${CONNS} conns pipeline ${READS} x 512 KiB reads, hang up`, pipelineAndHangUp],
    [`${CONNS} conns pipeline ${READS} x 512 KiB reads, never read`, neverRead],
    [`1 conn walks to ${FIDS.toLocaleString("en")} fids, hangs up`, manyFids],
  ];
  for (const [what, run] of cases) {
    console.error(`hostile: ${what}`);
    const f = await attack(dir, run);
    const ok = f.peak < 300 && f.after < f.start + 64;
    const figure = `${what}: server RSS MiB start / peak / 10 s after`;
    const ferry = `${f0(f.start)} / ${f0(f.peak)} / ${f0(f.after)}`;
    const target = "peak < 300, after < start + 64";
    const verdict = `${ok ? "met" : "missed"}${f.note ? ` (${f.note})` : ""}`;
    if (values.json) console.log(JSON.stringify([figure, ferry, target, verdict]));
    else console.log(`${figure}: ${ferry} (${target}: ${verdict})`);
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
