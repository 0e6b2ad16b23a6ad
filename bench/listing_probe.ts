/**
 * A large directory listed over Styx, in one run beside its peers:
 *
 *   (a) every entry of a 100,000-entry directory: `ferry listen` read by the
 *       Styx client after attach, against diod read by `diodls` (a whole
 *       process, start-up included: a few ms of C) and against `ls -f` on
 *       the host, the floor (names only, no stat).
 *   (b) the server's RSS with that directory held open by ten clients,
 *       each having read one reply: what an open directory costs the
 *       server to hold.
 *
 * Diod speaks 9P2000.L: `diodls` lists names with Treaddir, without a
 * stat per entry, where a 9P2000 directory read carries a full stat each;
 * so diod's figure is the lighter task.
 *
 *   deno run -A bench/listing_probe.ts [--entries 100000] [--reps 3] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { StyxClient } from "../lib/styx/client.ts";
import { dialConn } from "../lib/net/connect.ts";
import { OREAD } from "../lib/styx/types.ts";
import { ferryArgv } from "../lib/self.ts";
import { median, spawnDiod } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    entries: { type: "string", default: "100000" },
    reps: { type: "string", default: "3" },
    json: { type: "boolean" },
  },
});
const N = Number(values.entries);
const REPS = Math.max(1, Number(values.reps));
if (!Number.isInteger(N) || N <= 0) throw new Error(`Bad value for --entries: '${values.entries}'`);

const dec = new TextDecoder();
const rows: [string, string, string, string][] = [];
function row(what: string, ferry: string, peer: string, ratio: string): void {
  rows.push([what, ferry, peer, ratio]);
  console.error(`  ${what}: ferry ${ferry} | peer ${peer} | ${ratio}`);
}
async function which(cmd: string): Promise<boolean> {
  const o = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
    .output().catch(() => null);
  return o?.success ?? false;
}
function rssOf(pid: number): number {
  const o = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)], stdout: "piped" })
    .outputSync();
  return Number(dec.decode(o.stdout).trim()) / 1024;
}
async function timeCmd(cmd: string, args: string[]): Promise<{ ms: number; lines: number }> {
  const t = performance.now();
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const ms = performance.now() - t;
  if (!o.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(o.stderr).trim()}`);
  let lines = 0;
  for (const b of o.stdout) if (b === 10) lines++;
  return { ms, lines };
}

const dir = await Deno.makeTempDir({ prefix: "ferry-listing-" });
const big = `${dir}/big`;
await Deno.mkdir(big);
const empty = new Uint8Array(0);
for (let i = 0; i < N; i++) Deno.writeFileSync(`${big}/entry${String(i).padStart(6, "0")}`, empty);

const [exe, ...args] = ferryArgv();
const server = new Deno.Command(exe!, {
  args: [...args, "listen", "-A", "tcp!127.0.0.1!0", dir],
  stdout: "piped",
  stderr: "null",
}).spawn();
const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
let banner = "";
while (!banner.includes("\n")) banner += (await reader.read()).value ?? "";
reader.releaseLock();
const addr = banner.match(/(tcp!\S+)/)![1]!;

let diod: Deno.ChildProcess | undefined;
let diodAddr = "";
if (await which("diod") && await which("diodls")) {
  const started = await spawnDiod(dir);
  diod = started.proc;
  const port = started.port;
  diodAddr = `127.0.0.1:${port}`;
}

async function ferryList(): Promise<number> {
  const client = await StyxClient.connect(await dialConn(addr, { insecure: true }));
  try {
    const root = await client.attach("bench");
    const t = performance.now();
    const ents = await client.ls(root, "/big");
    const ms = performance.now() - t;
    if (ents.length !== N) throw new Error(`ferry listed ${ents.length} of ${N} entries`);
    return ms;
  } finally {
    await client.close();
  }
}

try {
  // (b) first, on a fresh server: RSS stays at its high-water mark. Ten
  // clients each hold the directory open, one reply read: the first pays
  // for the heap's growth, so the average over ten is the figure.
  const HOLD = 10;
  const before = rssOf(server.pid);
  const holders: StyxClient[] = [];
  for (let i = 0; i < HOLD; i++) {
    const client = await StyxClient.connect(await dialConn(addr, { insecure: true }));
    holders.push(client);
    const d = await client.openPath(await client.attach("bench"), "/big", OREAD);
    await d.read(0n, 8192);
  }
  await new Promise((r) => setTimeout(r, 300));
  const per = (rssOf(server.pid) - before) / HOLD;
  for (const c of holders) await c.close();
  row(
    `(b) server RSS per open ${N}-entry directory (${HOLD} held, one reply read each), MiB`,
    per.toFixed(1),
    `idle server ${before.toFixed(1)}`,
    `${(per * 2 ** 20 / N).toFixed(0)} B/entry`,
  );

  const fm: number[] = [];
  const dm: number[] = [];
  const lm: number[] = [];
  for (let i = 0; i < REPS; i++) {
    fm.push(await ferryList());
    if (diod) {
      const d = await timeCmd("diodls", ["-s", diodAddr, "-a", dir, "big"]);
      if (d.lines < N) throw new Error(`diodls listed ${d.lines} of ${N} entries`);
      dm.push(d.ms);
    }
    lm.push((await timeCmd("ls", ["-f", big])).ms);
  }
  const f = median(fm);
  const l = median(lm);
  if (diod) {
    const d = median(dm);
    row(
      `(a) list ${N} entries, ms (diodls: whole process, names only)`,
      f.toFixed(0),
      `diod ${d.toFixed(0)}`,
      `${(f / d).toFixed(2)}x`,
    );
  } else {
    row(`(a) list ${N} entries, ms`, f.toFixed(0), "diod not installed (apt-get install diod)", "");
  }
  row(
    `(a) list ${N} entries, ms`,
    f.toFixed(0),
    `ls -f on the host ${l.toFixed(0)}`,
    `${(f / l).toFixed(1)}x`,
  );
} finally {
  server.kill("SIGTERM");
  await server.status;
  if (diod) {
    diod.kill("SIGTERM");
    await diod.status;
  }
  await Deno.remove(dir, { recursive: true });
}

if (values.json) { for (const r of rows) console.log(JSON.stringify(r)); }
else for (const r of rows) console.log(r.filter((x) => x).join("  "));
