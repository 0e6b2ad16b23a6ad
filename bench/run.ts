/**
 * `deno task bench`: Ferry's figures side by side with the peer each is
 * measured against, in the same run. Not a test: nothing here passes or
 * fails on timing.
 *
 * deno task bench [--mib N] [--files N] [--reps N]
 *   [--only styx,ns,qd1,tls,net,floor,fuse,hostile,many,idle,logon,cpu]
 *
 * Styx figures are medians of --reps runs (default 3), Ferry and its peer
 * taking turns, so a burst of load elsewhere on the machine skews one run
 * of each rather than one side.
 *
 * --only also takes listing: a 100,000-entry directory listed over Styx;
 * many: 64 clients each reading its own 16 MiB file through one server,
 * beside diod; idle: what an idle connection costs `ferry listen` (plain
 * and mutual TLS on each TLS listener, beside diod), and its memory after
 * clients come and go; and
 * qd1: one request at a time (walk+clunk, stat, 4 KiB write) beside diod
 * and Inferno's export, and on one CPU beside the least a Deno server can
 * do (qd1_floor.ts); floor: what the machine and Deno allow without Ferry
 * for a relay in the middle of a tunnel, for TLS, and for an idle
 * connection (floor_probe.ts).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ferryArgv } from "../lib/self.ts";
import { freePort, median, spawnDiod, waitPort } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "1024" },
    files: { type: "string", default: "1000" },
    reps: { type: "string", default: "3" },
    only: { type: "string" },
  },
});
const MIB = Number(values.mib);
const FILES = Number(values.files);
const REPS = Math.max(1, Number(values.reps));

/** Run each of `fns` `REPS` times in turn; the median of each key of each. */
async function turns<K extends string>(
  fns: Record<K, () => Promise<Record<string, number>>>,
): Promise<Record<K, Record<string, number>>> {
  const runs = {} as Record<K, Record<string, number>[]>;
  for (let i = 0; i < REPS; i++) {
    for (const k of Object.keys(fns) as K[]) (runs[k] ??= []).push(await fns[k]());
  }
  const out = {} as Record<K, Record<string, number>>;
  for (const k of Object.keys(runs) as K[]) {
    const m: Record<string, number> = {};
    for (const key of Object.keys(runs[k][0]!)) {
      m[key] = median(runs[k].map((r) => r[key]!));
    }
    out[k] = m;
  }
  return out;
}
const only = values.only ? new Set(values.only.split(",")) : null;
const want = (s: string) => !only || only.has(s);
const here = new URL(".", import.meta.url).pathname;
const dec = new TextDecoder();

type Row = [string, string, string, string];
const rows: Row[] = [];
function row(what: string, ferry: string, peer: string, ratio: string): void {
  rows.push([what, ferry, peer, ratio]);
  console.error(`  ${what}: ferry ${ferry} | peer ${peer} | ${ratio}`);
}
const f1 = (n: number) => n.toFixed(1);

async function runJson(args: string[], opts: { env?: Record<string, string> } = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", ...args],
    stdout: "piped",
    stderr: "inherit",
    env: opts.env,
  }).output();
  const text = dec.decode(out.stdout).trim().split("\n").pop() ?? "";
  if (!out.success) throw new Error(`${args.join(" ")} failed: ${text}`);
  return JSON.parse(text) as Record<string, number>;
}

async function timeCmd(cmd: string, args: string[]): Promise<number> {
  const t = performance.now();
  const o = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!o.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(o.stderr).trim()}`);
  return (performance.now() - t) / 1000;
}

/** Start a process that prints "… on tcp!HOST!PORT" (or a bare port) first. */
async function startServer(argv: string[]): Promise<{ addr: string; proc: Deno.ChildProcess }> {
  const [exe, ...args] = argv;
  const proc = new Deno.Command(exe!, { args, stdout: "piped", stderr: "piped", stdin: "null" })
    .spawn();
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited: ${text}`);
    text += value;
  }
  reader.releaseLock();
  proc.stdout.cancel().catch(() => {});
  const m = text.match(/(tcp!\S+)/);
  const addr = m ? m[1]!.replace("0.0.0.0", "127.0.0.1") : `tcp!127.0.0.1!${text.trim()}`;
  return { addr, proc };
}

function rssOf(pid: number): number {
  // ps, not /proc: Deno grants /proc only under --allow-all.
  const o = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)], stdout: "piped" })
    .outputSync();
  const kib = Number(dec.decode(o.stdout).trim());
  return o.success && kib > 0 ? kib / 1024 : NaN;
}

async function makeData(dir: string): Promise<void> {
  const big = await Deno.open(`${dir}/big`, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(4 * 1024 * 1024);
  crypto.getRandomValues(chunk.subarray(0, 65536));
  for (let i = 65536; i < chunk.length; i += 65536) chunk.copyWithin(i, 0, 65536);
  for (let i = 0; i < MIB / 4; i++) await big.write(chunk);
  big.close();
  await Deno.mkdir(`${dir}/small`);
  const small = new Uint8Array(4096).fill(0x62);
  for (let i = 0; i < FILES; i++) await Deno.writeFile(`${dir}/small/f${i}`, small);
}

async function styxSection(dir: string): Promise<void> {
  console.error(
    `styx: ${MIB} MiB file, ${FILES} files of 4 KiB, one loopback connection, ` +
      `medians of ${REPS} runs`,
  );
  const listen = await startServer([...ferryArgv(), "listen", "-A", "tcp!127.0.0.1!0", dir]);
  const rawSrv = await startServer([
    Deno.execPath(),
    "run",
    "-A",
    `${here}raw_server.ts`,
    `${dir}/big`,
  ]);
  try {
    const m = await turns({
      raw: () => runJson([`${here}client.ts`, "raw", rawSrv.addr]),
      rd: () => runJson([`${here}client.ts`, "read", listen.addr, "/big"]),
      wr: async () => {
        const r = await runJson([
          `${here}client.ts`,
          "write",
          listen.addr,
          "/written",
          String(MIB * 2 ** 20),
        ]);
        await Deno.remove(`${dir}/written`).catch(() => {});
        return r;
      },
      fs: () => runJson([`${here}client.ts`, "files", listen.addr, "/small", String(FILES)]),
    });
    const { raw, rd, wr, fs } = m;
    row(
      `(a) read ${MIB} MiB, MB/s`,
      f1(rd.mbs!),
      `raw TCP ${f1(raw.mbs!)}`,
      `${f1(rd.mbs! / raw.mbs! * 100)}% of raw`,
    );
    row(
      `(b) write ${MIB} MiB, MB/s`,
      f1(wr.mbs!),
      `raw TCP ${f1(raw.mbs!)}`,
      `${f1(wr.mbs! / raw.mbs! * 100)}% of raw`,
    );
    // The physical ceiling: iperf3 (C) moving the same number of bytes over
    // loopback, server to client, as the raw TCP baseline (a Deno server) does.
    const ip = await iperf3(MIB);
    if (ip === null) {
      row("(a) iperf3, the physical ceiling", "-", "not installed (apt-get install iperf3)", "");
    } else {
      row(
        `(a) read ${MIB} MiB beside iperf3 (raw TCP in Deno ${f1(raw.mbs!)}), MB/s`,
        f1(rd.mbs!),
        `iperf3 ${f1(ip)}`,
        `${f1(rd.mbs! / ip * 100)}% of iperf3`,
      );
    }
    row(
      `(c) ${FILES} x 4 KiB walk+open+read+clunk, files/s`,
      f1(fs.filesPerSec!),
      "target 5000",
      `${f1(fs.filesPerSec! / 5000)}x target`,
    );
    row("(e) client RSS during the big read, MiB", f1(rd.rssMiB!), "target < 100", "");
    const oneShot = await peakRss([...ferryArgv(), "9p", "-A", "-a", listen.addr, "read", "/big"]);
    row(
      `(e) one-shot 'ferry 9p read' of ${MIB} MiB into a pipe, peak RSS, MiB`,
      oneShot === null ? "-" : f1(oneShot),
      oneShot === null ? "needs /usr/bin/time" : "target < 100",
      "",
    );

    // (d) diod with diodcat, same files, same run.
    if (await which("diod") && await which("diodcat")) {
      const { proc: diod, port } = await spawnDiod(dir);
      try {
        const s = `127.0.0.1:${port}`;
        const names = Array.from({ length: FILES }, (_, i) => `small/f${i}`);
        // Like with like: diodcat is timed as a whole process (start-up,
        // version, attach included), at msize 64 KiB, one read in flight
        // and one file at a time. Ferry's bench client is timed the same
        // way, offered the same msize, with a window of one read and one
        // lane of files.
        const client = ["run", "-A", `${here}client.ts`];
        const d = await turns({
          ferryBig: async () => ({
            t: await timeCmd(Deno.execPath(), [
              ...client,
              "read",
              listen.addr,
              "/big",
              "--msize",
              "65536",
              "--window",
              "1",
            ]),
          }),
          big: async () => ({
            t: await timeCmd("diodcat", ["-s", s, "-a", dir, "-m", "65536", "big"]),
          }),
          ferrySmall: async () => ({
            t: await timeCmd(Deno.execPath(), [
              ...client,
              "files",
              listen.addr,
              "/small",
              String(FILES),
              "--msize",
              "65536",
              "--lanes",
              "1",
            ]),
          }),
          small: async () => ({ t: await timeCmd("diodcat", ["-s", s, "-a", dir, ...names]) }),
        });
        const mbs = (t: number) => MIB * 2 ** 20 / 1e6 / t;
        const fb = mbs(d.ferryBig.t!), db = mbs(d.big.t!);
        row(
          `(d) read ${MIB} MiB, whole process, msize 64 KiB, 1 read in flight, MB/s`,
          f1(fb),
          `diod+diodcat ${f1(db)}`,
          `${f1(fb / db)}x`,
        );
        const ff = FILES / d.ferrySmall.t!, df = FILES / d.small.t!;
        row(
          `(d) ${FILES} x 4 KiB, whole process, one file at a time, files/s`,
          f1(ff),
          `diod+diodcat ${f1(df)}`,
          `${f1(ff / df)}x`,
        );
        row(
          `(d) ${FILES} x 4 KiB, after attach, 16 files in flight, files/s`,
          f1(fs.filesPerSec!),
          "diodcat has no such mode",
          "",
        );
      } finally {
        diod.kill("SIGTERM");
        await diod.status;
      }
    } else {
      row("(d) diod", "-", "not installed (apt-get install diod)", "");
    }

    // (e) server memory with 100 idle connections.
    const before = rssOf(listen.proc.pid);
    const idle = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${here}client.ts`, "idle", listen.addr, "100"],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const r = idle.stdout.pipeThrough(new TextDecoderStream()).getReader();
    await r.read();
    await new Promise((res) => setTimeout(res, 300));
    const after = rssOf(listen.proc.pid);
    await idle.stdin.close();
    r.releaseLock();
    await idle.stdout.cancel().catch(() => {});
    await idle.status;
    row(
      "(e) server RSS, 100 idle connections, MiB",
      f1(after),
      `idle server ${f1(before)}`,
      `+${f1(after - before)} MiB`,
    );
  } finally {
    for (const p of [listen.proc, rawSrv.proc]) {
      try {
        p.kill("SIGTERM");
      } catch { /* gone */ }
      await p.status;
    }
  }
}

/** iperf3's loopback rate for `mib` MiB, server to client, MB/s (median of REPS); null without it. */
async function iperf3(mib: number): Promise<number | null> {
  if (!(await which("iperf3"))) return null;
  const port = freePort();
  const srv = new Deno.Command("iperf3", {
    args: ["-s", "-B", "127.0.0.1", "-p", String(port)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await waitPort(port);
    const rates: number[] = [];
    for (let i = 0; i < REPS; i++) {
      const o = await new Deno.Command("iperf3", {
        args: ["-c", "127.0.0.1", "-p", String(port), "-R", "-n", `${mib}M`, "-J"],
        stdout: "piped",
        stderr: "null",
      }).output();
      const j = JSON.parse(dec.decode(o.stdout)) as {
        end?: { sum_received?: { bits_per_second?: number } };
      };
      const bps = j.end?.sum_received?.bits_per_second;
      if (!o.success || bps === undefined) throw new Error("iperf3 gave no result");
      rates.push(bps / 8 / 1e6);
    }
    return median(rates);
  } finally {
    srv.kill("SIGTERM");
    await srv.status;
  }
}

/** Peak RSS in MiB of `argv` run to its end with its stdout drained through a pipe; null without /usr/bin/time. */
async function peakRss(argv: string[]): Promise<number | null> {
  try {
    await Deno.stat("/usr/bin/time");
  } catch {
    return null;
  }
  const p = new Deno.Command("/usr/bin/time", {
    args: ["-f", "maxrss %M", ...argv],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  for await (const _ of p.stdout) { /* drained, as a pipe to another program would be */ }
  const err = await new Response(p.stderr).text();
  const st = await p.status;
  const m = err.match(/maxrss (\d+)/);
  if (!st.success || !m) throw new Error(`${argv.join(" ")} failed: ${err.trim()}`);
  return Number(m[1]) / 1024;
}

async function which(cmd: string): Promise<boolean> {
  try {
    const o = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
      .output();
    return o.success;
  } catch {
    return false;
  }
}

async function probe(name: string, script: string, args: string[] = []): Promise<void> {
  try {
    await Deno.stat(`${here}${script}`);
  } catch {
    return;
  }
  console.error(`${name}: bench/${script}`);
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${here}${script}`, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  for (const line of dec.decode(o.stdout).trim().split("\n")) {
    if (line) rows.push([`${name}: ${line}`, "", "", ""]);
  }
}

/** Run a probe that prints its rows as JSON arrays (--json): [figure, ferry, peer, ratio]. */
async function tableProbe(name: string, script: string, args: string[] = []): Promise<void> {
  try {
    await Deno.stat(`${here}${script}`);
  } catch {
    return;
  }
  console.error(`${name}: bench/${script}`);
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${here}${script}`, "--json", ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!o.success) {
    row(`${name}: bench/${script}`, "-", "failed (see above)", "");
    return;
  }
  for (const line of dec.decode(o.stdout).trim().split("\n")) {
    if (!line) continue;
    const [what, ferry, peer, ratio] = JSON.parse(line) as string[];
    rows.push([`${name}: ${what}`, ferry ?? "", peer ?? "", ratio ?? ""]);
  }
}

const dir = await Deno.makeTempDir({ prefix: "ferry-bench-" });
try {
  if (want("styx")) {
    await makeData(dir);
    // Let the disk take the data just made: writeback still under way would
    // throttle the write figure to the disk's speed (raw TCP never waits).
    await new Deno.Command("sync").output().catch(() => {});
    await styxSection(dir);
  }
  if (want("ns")) {
    await tableProbe("ns", "ns_probe.ts");
    await probe("ns", "ls_probe.ts");
    await tableProbe("ns", "union_probe.ts", ["--reps", String(REPS)]);
  }
  if (want("listing")) {
    await tableProbe("listing", "listing_probe.ts", ["--reps", String(REPS)]);
  }
  if (want("many")) await tableProbe("many", "many_probe.ts", ["--reps", String(REPS), "--tls"]);
  if (want("qd1")) {
    await tableProbe("qd1", "qd1_probe.ts", ["--reps", String(REPS)]);
    // On one CPU, beside the floor: the least a Deno server can do (qd1_floor.ts).
    await tableProbe("qd1", "qd1_probe.ts", [
      "--reps",
      String(REPS),
      "--one-cpu",
      "--also",
      `${here}qd1_floor.ts`,
    ]);
  }
  if (want("tls")) {
    await probe("tls", "tls_probe.ts");
    await tableProbe("tls", "sftp_probe.ts", [
      "--mib",
      String(MIB),
      "--files",
      String(FILES),
      "--reps",
      String(REPS),
    ]);
  }
  if (want("net")) {
    await tableProbe("net", "net_probe.ts");
    // The bulk figures again with the remote on a CPU of its own, as if it
    // were another machine: above, three processes share two CPUs.
    await tableProbe("net", "net_probe.ts", ["--pin", "--parts", "send,receive"]);
  }
  // What the machine and the runtime allow without Ferry, for the tunnel,
  // TLS and idle figures above (the figure column holds the floor).
  if (want("floor")) await tableProbe("floor", "floor_probe.ts", ["--reps", String(REPS)]);
  if (want("manifest")) await probe("manifest", "manifest_probe.ts");
  if (want("fuse")) await probe("fuse", "fuse_probe.ts");
  // A Ferry server's memory under hostile clients (no peer: targets instead).
  if (want("hostile")) await tableProbe("hostile", "hostile.ts");
  if (want("idle")) await tableProbe("idle", "idle_probe.ts");
  if (want("logon")) await tableProbe("logon", "logon_probe.ts", ["--runs", "5"]);
  if (want("cpu")) await tableProbe("cpu", "cpu_probe.ts", ["--runs", "5", "--mib", String(MIB)]);
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

console.log("\n| figure | Ferry | peer (same run) | ratio |\n|---|---|---|---|");
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
