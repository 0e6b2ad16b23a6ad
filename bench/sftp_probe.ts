/**
 * Mutual-TLS Ferry against OpenSSH on the same machine, in one run: a
 * `ferry listen` child with node credentials serves a temporary directory;
 * a throwaway sshd (bench/ssh.ts) serves the same directory over sftp.
 *
 *   (a) 1 GiB read: `bench/client.ts read --tls` vs `sftp -b` get; the
 *       same read from a second `ferry listen` on Deno's TLS
 *       (FERRY_TLS_LISTENER=deno) against the default node:tls listener,
 *       with server and client CPU seconds per GiB
 *   (b) 1,000 files of 4 KiB: `bench/client.ts files --tls` vs sftp gets
 *   (c) connect + TLS handshake + attach, in-process, median and p99; and
 *       one-shot `ferry 9p ls /` vs `ssh -o BatchMode=yes host true`
 *   (d) 200 concurrent authenticated clients on one listener, server RSS
 *   (e) client RSS during the 1 GiB TLS read
 *
 * Ferry's transfer clocks start once connected and attached; sftp's wall
 * time has the median of an empty sftp session (connect, authenticate,
 * start the subsystem, `pwd`) taken off, so both sides count transfer
 * only. Transfer figures are medians of --reps runs, the two sides taking
 * turns.
 *
 *   deno run -A bench/sftp_probe.ts [--mib 1024] [--files 1000] [--reps 3]
 *     [--latency 50] [--oneshot 10] [--clients 200] [--ssh-clients 20] [--json]
 *
 * Prints a table (or, with --json, one JSON array per row:
 * [figure, ferry, peer, ratio], as bench/run.ts reads it).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CertificateAuthority } from "../lib/auth/ca.ts";
import { dialConn } from "../lib/net/connect.ts";
import { type RemoteNode, StyxClient } from "../lib/styx/client.ts";
import { OREAD } from "../lib/styx/types.ts";
import { ferryArgv } from "../lib/self.ts";
import { type Sshd, startSshd } from "./ssh.ts";
import { median } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "1024" },
    files: { type: "string", default: "1000" },
    reps: { type: "string", default: "3" },
    latency: { type: "string", default: "50" },
    oneshot: { type: "string", default: "10" },
    clients: { type: "string", default: "200" },
    // Each ssh session costs two sshd processes and an ssh process: fewer
    // than Ferry's clients keep the run short; RSS is compared per session.
    "ssh-clients": { type: "string", default: "20" },
    json: { type: "boolean" },
  },
});
const MIB = Number(values.mib);
const FILES = Number(values.files);
const REPS = Math.max(1, Number(values.reps));
const LAT = Math.max(1, Number(values.latency));
const ONESHOT = Math.max(1, Number(values.oneshot));
const CLIENTS = Math.max(1, Number(values.clients));
const SSH_CLIENTS = Math.max(1, Number(values["ssh-clients"]));
for (const [k, v] of Object.entries({ MIB, FILES, REPS, LAT, ONESHOT, CLIENTS, SSH_CLIENTS })) {
  if (!Number.isFinite(v) || v <= 0) throw new Error(`Bad value for ${k.toLowerCase()}: '${v}'`);
}

const here = new URL(".", import.meta.url).pathname;
const dec = new TextDecoder();
const rows: [string, string, string, string][] = [];
const f1 = (n: number) => n.toFixed(1);

function row(what: string, ferry: string, peer: string, ratio: string): void {
  rows.push([what, ferry, peer, ratio]);
  console.error(`  ${what}: ferry ${ferry} | peer ${peer} | ${ratio}`);
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

function rssMiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+) kB/);
  // A process that has exited but not been reaped has no VmRSS: no memory.
  return m ? Number(m[1]) / 1024 : 0;
}

/** Parent of every process, from /proc. */
function parents(): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const st = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      // pid (comm) state ppid …; comm may hold spaces and parentheses.
      const ppid = Number(st.slice(st.lastIndexOf(")") + 2).split(" ")[1]);
      m.set(Number(e.name), ppid);
    } catch { /* gone */ }
  }
  return m;
}

/** Total RSS of `pid` and all its descendants, MiB. */
function treeRssMiB(pid: number): number {
  const pp = parents();
  let total = 0;
  for (const p of pp.keys()) {
    let q: number | undefined = p;
    while (q !== undefined && q > 1 && q !== pid) q = pp.get(q);
    if (q !== pid) continue;
    try {
      total += rssMiB(p);
    } catch { /* gone */ }
  }
  return total;
}

/**
 * Run a command to its end; its wall time in seconds and (when asked) the
 * peak RSS of it and its children, sampled every 50 ms.
 */
async function timed(
  cmd: string,
  args: string[],
  stdin?: string,
  sample = false,
): Promise<{ secs: number; peakMiB: number }> {
  const t = performance.now();
  const p = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let peakMiB = 0;
  const timer = sample
    ? setInterval(() => {
      try {
        peakMiB = Math.max(peakMiB, treeRssMiB(p.pid));
      } catch { /* finished */ }
    }, 50)
    : undefined;
  try {
    if (stdin !== undefined) {
      const w = p.stdin.getWriter();
      await w.write(new TextEncoder().encode(stdin));
      await w.close();
    }
    const o = await p.output();
    const secs = (performance.now() - t) / 1000;
    if (!o.success) {
      throw new Error(`'${cmd} ${args.join(" ")}' failed: ${dec.decode(o.stderr).trim()}`);
    }
    return { secs, peakMiB };
  } finally {
    clearInterval(timer);
  }
}

/** Run bench/client.ts; its JSON figures. */
async function client(args: string[]): Promise<Record<string, number>> {
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${here}client.ts`, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  const text = dec.decode(o.stdout).trim().split("\n").pop() ?? "";
  if (!o.success) {
    throw new Error(`bench client ${args.join(" ")} failed: ${dec.decode(o.stderr).trim()}`);
  }
  return JSON.parse(text) as Record<string, number>;
}

async function makeData(dir: string): Promise<void> {
  await Deno.mkdir(dir);
  const big = await Deno.open(`${dir}/big`, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(4 * 1024 * 1024);
  crypto.getRandomValues(chunk.subarray(0, 65536));
  for (let i = 65536; i < chunk.length; i += 65536) chunk.copyWithin(i, 0, 65536);
  let left = MIB * 2 ** 20;
  while (left > 0) {
    const n = Math.min(chunk.length, left);
    await big.write(chunk.subarray(0, n));
    left -= n;
  }
  big.close();
  await Deno.mkdir(`${dir}/small`);
  const small = new Uint8Array(4096).fill(0x62);
  for (let i = 0; i < FILES; i++) await Deno.writeFile(`${dir}/small/f${i}`, small);
}

/**
 * A CA in `tmp/ca`; node credentials in `tmp/node`, user credentials in
 * `tmp/user`, and the same user's again in `tmp/user-crl` with the CA's
 * CRL (one certificate revoked), as certs/README.md says every machine has.
 */
async function makeCredentials(tmp: string): Promise<void> {
  const ca = await CertificateAuthority.init(`${tmp}/ca`, "bench-ca");
  try {
    const node = await ca.issue("node", { kind: "node", sans: ["127.0.0.1"] });
    const user = await ca.issue("alice", { kind: "user" });
    await ca.issue("mallory", { kind: "user" });
    await ca.revoke("mallory");
    const dirs = [["node", "node", node], ["user", "alice", user], ["user-crl", "alice", user]];
    for (const [d, name, issued] of dirs as [string, string, typeof user][]) {
      await Deno.mkdir(`${tmp}/${d}`, { mode: 0o700 });
      await Deno.writeTextFile(`${tmp}/${d}/ca.pem`, ca.certPem);
      await Deno.writeTextFile(`${tmp}/${d}/${name}.pem`, issued.certPem);
      await Deno.writeTextFile(`${tmp}/${d}/${name}.key`, issued.keyPem!, { mode: 0o600 });
    }
    await Deno.writeTextFile(`${tmp}/user-crl/crl.pem`, await ca.crlPem());
  } finally {
    ca.close();
  }
}

/** User + system CPU seconds process `pid` has used so far. */
function cpuSecs(pid: number): number {
  const st = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** Start `ferry listen` with TLS (on `engine`'s TLS listener); its address and process. */
async function startListen(
  certs: string,
  dir: string,
  engine: "node" | "deno" = "node",
): Promise<{ addr: string; proc: Deno.ChildProcess }> {
  const [exe, ...args] = ferryArgv();
  const proc = new Deno.Command(exe!, {
    args: [...args, "listen", "--certs", certs, "tcp!127.0.0.1!0", dir],
    env: { FERRY_TLS_LISTENER: engine },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) {
      const err = dec.decode((await proc.output()).stderr).trim();
      throw new Error(`ferry listen exited: ${text}${err}`);
    }
    text += value;
  }
  reader.releaseLock();
  proc.stdout.cancel().catch(() => {});
  // Keep stderr drained so the child never blocks on a full pipe.
  proc.stderr.pipeTo(new WritableStream()).catch(() => {});
  const m = text.match(/(tcp!\S+)/);
  if (!m) throw new Error(`ferry listen said '${text.trim()}', expected an address`);
  return { addr: m[1]!, proc };
}

/** Connect, handshake and attach as the user; the client and its root. */
async function attach(
  addr: string,
  certDir: string,
): Promise<{ c: StyxClient; root: RemoteNode }> {
  const conn = await dialConn(addr, { insecure: false, certDir });
  const c = await StyxClient.connect(conn);
  try {
    return { c, root: await c.attach("bench") };
  } catch (e) {
    await c.close();
    throw e;
  }
}

type Listening = { addr: string; proc: Deno.ChildProcess };

async function sftpSection(
  sshd: Sshd,
  listen: Listening,
  denoListen: Listening,
  tmp: string,
  data: string,
): Promise<number> {
  const listenAddr = listen.addr;
  const user = `${tmp}/user`;
  const sftpRun = (batch: string, sample = false) =>
    timed("sftp", ["-q", "-b", "-", ...sshd.sshArgs, sshd.target], batch, sample);
  const sftp = async (batch: string) => (await sftpRun(batch)).secs;
  // An empty session, warmed first: what sftp pays before any transfer.
  await sftp("pwd\n");
  const base: number[] = [];
  for (let i = 0; i < 5; i++) base.push(await sftp("pwd\n"));
  const sftpBase = median(base);
  console.error(`sftp: empty session ${f1(sftpBase * 1000)} ms (taken off sftp's times)`);

  const bigBatch = `get ${data}/big /dev/null\n`;
  const smallBatch = Array.from({ length: FILES }, (_, i) => `get ${data}/small/f${i} /dev/null\n`)
    .join("");
  const rd: Record<string, number>[] = [];
  const fs: Record<string, number>[] = [];
  const sBig: number[] = [];
  const sSmall: number[] = [];
  let sftpRss = 0;
  const rdDeno: Record<string, number>[] = [];
  const srvCpu: number[] = [];
  const srvCpuDeno: number[] = [];
  /** A read from `l`, with the server's CPU seconds for it. */
  const readFrom = async (l: Listening, cpu: number[]) => {
    const c0 = cpuSecs(l.proc.pid);
    const r = await client(["read", l.addr, "/big", "--tls", user]);
    cpu.push(cpuSecs(l.proc.pid) - c0);
    return r;
  };
  for (let r = 0; r < REPS; r++) {
    rd.push(await readFrom(listen, srvCpu));
    rdDeno.push(await readFrom(denoListen, srvCpuDeno));
    const big = await sftpRun(bigBatch, true);
    sBig.push(Math.max(1e-3, big.secs - sftpBase));
    sftpRss = Math.max(sftpRss, big.peakMiB);
    fs.push(await client(["files", listenAddr, "/small", String(FILES), "--tls", user]));
    sSmall.push(Math.max(1e-3, (await sftp(smallBatch)) - sftpBase));
  }
  for (const r of [...rd, ...rdDeno]) {
    if (r.bytes !== MIB * 2 ** 20) throw new Error(`TLS read got ${r.bytes} bytes`);
  }
  const bytes = MIB * 2 ** 20;
  const ferryMbs = median(rd.map((r) => r.mbs!));
  const sftpMbs = bytes / 1e6 / median(sBig);
  row(
    `(a) read ${MIB} MiB, MB/s (target >= 2.0x)`,
    f1(ferryMbs),
    `sftp get ${f1(sftpMbs)}`,
    `${(ferryMbs / sftpMbs).toFixed(2)}x`,
  );
  const denoMbs = median(rdDeno.map((r) => r.mbs!));
  row(
    `(a) read ${MIB} MiB from a listener on Deno's TLS (ferry-link/2 only), MB/s (target >= 1800)`,
    f1(denoMbs),
    `node:tls listener ${f1(ferryMbs)}`,
    `${(denoMbs / ferryMbs).toFixed(2)}x`,
  );
  const gib = bytes / 2 ** 30;
  const perGib = (xs: number[]) => (median(xs) / gib).toFixed(2);
  row(
    `(a) CPU s per GiB read, server / client (transfer only), listener on Deno's TLS`,
    `${perGib(srvCpuDeno)} / ${perGib(rdDeno.map((r) => r.cpuSec!))}`,
    `node:tls listener ${perGib(srvCpu)} / ${perGib(rd.map((r) => r.cpuSec!))}`,
    "",
  );
  const ferryFps = median(fs.map((r) => r.filesPerSec!));
  const sftpFps = FILES / median(sSmall);
  row(
    `(b) ${FILES} x 4 KiB files, files/s (target >= 3x)`,
    f1(ferryFps),
    `sftp get ${f1(sftpFps)}`,
    `${(ferryFps / sftpFps).toFixed(2)}x`,
  );
  const rss = Math.max(...rd.map((r) => r.rssMiB!));
  row(
    `(e) client RSS during the ${MIB} MiB TLS read, MiB (target < 100)`,
    f1(rss),
    `sftp+ssh ${f1(sftpRss)}`,
    `${(rss / sftpRss).toFixed(2)}x (${rss < 100 ? "under" : "over"} target)`,
  );
  return sftpBase;
}

async function latencySection(
  sshd: Sshd,
  listenAddr: string,
  tmp: string,
  sftpBase: number,
): Promise<void> {
  const user = `${tmp}/user`;
  // In-process: connect + TLS 1.3 + link proofs + Tversion + Tattach.
  await (await attach(listenAddr, user)).c.close();
  const lat: number[] = [];
  for (let i = 0; i < LAT; i++) {
    const t = performance.now();
    const { c } = await attach(listenAddr, user);
    lat.push(performance.now() - t);
    await c.close();
  }
  row(
    `(c) connect+handshake+attach, in-process, ms (median / p99 of ${LAT})`,
    `${f1(median(lat))} / ${f1(pct(lat, 99))}`,
    `empty sftp session ${f1(sftpBase * 1000)}`,
    `${(median(lat) / (sftpBase * 1000)).toFixed(2)}x`,
  );
  // One-shot commands, taking turns.
  const [exe, ...args] = ferryArgv();
  const ls = [...args, "9p", "-a", listenAddr, "--certs", user, "ls", "/"];
  const lsCrl = [...args, "9p", "-a", listenAddr, "--certs", `${user}-crl`, "ls", "/"];
  const ssh = [...sshd.sshArgs, sshd.target, "true"];
  await timed(exe!, ls);
  await timed(exe!, lsCrl);
  await timed("ssh", ssh);
  const f: number[] = [];
  const fc: number[] = [];
  const s: number[] = [];
  for (let i = 0; i < ONESHOT; i++) {
    f.push((await timed(exe!, ls)).secs);
    fc.push((await timed(exe!, lsCrl)).secs);
    s.push((await timed("ssh", ssh)).secs);
  }
  row(
    `(c) one-shot 'ferry 9p ls /' (mTLS) with crl.pem in the user's directory, ms (median of ${ONESHOT})`,
    f1(median(fc) * 1000),
    `without crl.pem ${f1(median(f) * 1000)}`,
    `${(median(fc) / median(f)).toFixed(2)}x`,
  );
  const fm = median(f) * 1000;
  const sm = median(s) * 1000;
  row(
    `(c) one-shot 'ferry 9p ls /' (mTLS) vs 'ssh host true', ms (median of ${ONESHOT}; target <= 0.5x)`,
    f1(fm),
    `ssh ${f1(sm)}`,
    `${(fm / sm).toFixed(2)}x`,
  );
}

/** Figures for many concurrent clients: how many were served, and server RSS before and during. */
interface Crowd {
  served: number;
  alive: number;
  before: number;
  during: number;
}

async function clientsSection(
  listen: { addr: string; proc: Deno.ChildProcess },
  tmp: string,
): Promise<Crowd> {
  const user = `${tmp}/user`;
  const before = rssMiB(listen.proc.pid);
  const settled = await Promise.allSettled(
    Array.from({ length: CLIENTS }, async (_, i) => {
      const a = await attach(listen.addr, user);
      const { c, root } = a;
      const f = await c.openPath(root, `/small/f${i % FILES}`, OREAD);
      const n = (await f.read(0n, 8192)).length;
      await f.close();
      if (n !== 4096) throw new Error(`read ${n} bytes of /small/f${i % FILES}, expected 4096`);
      return a;
    }),
  );
  const ok = settled.filter((s) => s.status === "fulfilled").map((s) => s.value);
  const failed = settled.filter((s) => s.status === "rejected");
  const during = rssMiB(listen.proc.pid);
  // Every client is still connected here: ask each once more.
  let alive = 0;
  await Promise.all(ok.map(async ({ c, root }) => {
    try {
      await c.stat(root, "/small");
      alive++;
    } catch { /* counted as not answering */ }
  }));
  for (const { c } of ok) await c.close();
  if (failed.length > 0) {
    console.error(
      `clients: ${failed.length} failed, first: ${(failed[0] as PromiseRejectedResult).reason}`,
    );
  }
  return { served: ok.length, alive, before, during };
}

/** The same number of concurrent ssh sessions on the throwaway sshd, for comparison. */
async function sshClientsSection(sshd: Sshd): Promise<Crowd> {
  const before = treeRssMiB(sshd.pid);
  const procs = Array.from({ length: SSH_CLIENTS }, () =>
    new Deno.Command("ssh", {
      args: [...sshd.sshArgs, sshd.target, "echo ok; cat > /dev/null"],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn());
  let served = 0;
  try {
    await Promise.all(procs.map(async (p) => {
      const r = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      while (!text.includes("\n")) {
        const { value, done } = await r.read();
        if (done) break;
        text += value;
      }
      r.releaseLock();
      if (text.startsWith("ok")) served++;
    }));
    return { served, alive: served, before, during: treeRssMiB(sshd.pid) };
  } finally {
    for (const p of procs) {
      await p.stdin.close().catch(() => {});
    }
    for (const p of procs) {
      await p.stdout.cancel().catch(() => {});
      await p.status;
    }
  }
}

async function main(): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-sftp-probe-" });
  let listen: Listening | null = null;
  let denoListen: Listening | null = null;
  let sshd: Sshd | null = null;
  try {
    const data = `${tmp}/data`;
    console.error(`sftp_probe: ${MIB} MiB file and ${FILES} files of 4 KiB in ${data}`);
    await makeData(data);
    await makeCredentials(tmp);
    listen = await startListen(`${tmp}/node`, data);
    denoListen = await startListen(`${tmp}/node`, data, "deno");
    sshd = await startSshd();
    const t0 = performance.now();
    const lap = (what: string) =>
      console.error(`sftp_probe: ${what} done at ${f1((performance.now() - t0) / 1000)} s`);
    const sftpBase = await sftpSection(sshd, listen, denoListen, tmp, data);
    lap("(a) (b) (e)");
    await latencySection(sshd, listen.addr, tmp, sftpBase);
    lap("(c)");
    const f = await clientsSection(listen, tmp);
    lap("(d) Ferry");
    const o = await sshClientsSection(sshd);
    lap("(d) sshd");
    row(
      `(d) concurrent authenticated clients on one listener: served / answering later`,
      `${f.served} / ${f.alive} of ${CLIENTS}`,
      `sshd ${o.served} / ${o.alive} of ${SSH_CLIENTS}`,
      f.served === CLIENTS && f.alive === CLIENTS ? "all served" : "NOT all served",
    );
    const fPer = (f.during - f.before) / CLIENTS;
    const oPer = (o.during - o.before) / SSH_CLIENTS;
    row(
      `(d) server RSS, idle -> with clients, MiB (and per client)`,
      `${f1(f.before)} -> ${f1(f.during)} (${fPer.toFixed(2)})`,
      `sshd, all its processes ${f1(o.before)} -> ${f1(o.during)} (${oPer.toFixed(2)})`,
      `${f1(f.during)} MiB for ${CLIENTS} vs ${f1(o.before + oPer * CLIENTS)} MiB (sshd, scaled)`,
    );
  } finally {
    for (const l of [listen, denoListen]) {
      if (!l) continue;
      try {
        l.proc.kill("SIGTERM");
      } catch { /* gone */ }
      await l.proc.status;
    }
    await sshd?.stop();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  if (values.json) {
    for (const r of rows) console.log(JSON.stringify(r));
  } else {
    console.log("\n| figure | Ferry | OpenSSH (same run) | ratio |\n|---|---|---|---|");
    for (const r of rows) console.log(`| ${r.join(" | ")} |`);
  }
}

if (import.meta.main) await main();
