/**
 * Reading host processes from Linux's /proc for the /prog device.
 *
 * @module
 */

/** What /prog shows of one host process. */
export interface ProcInfo {
  /** Process id. */
  pid: number;
  /** Parent process id. */
  ppid: number;
  /** Process group id. */
  pgrp: number;
  /** Owner's uid (real). */
  uid: number;
  /** State letter from /proc (R, S, D, T, Z, ...). */
  stateLetter: string;
  /** Resident memory in KiB (0 for kernel threads). */
  rssKiB: number;
  /** Short command name. */
  name: string;
  /** Arguments; empty for kernel threads. */
  argv: string[];
  /** Start time in clock ticks since boot (tells a reused pid apart). */
  start: string;
}

/** Linux process state letters in Inferno-like words. */
export const STATE_WORDS: Readonly<Record<string, string>> = {
  R: "ready",
  S: "sleep",
  D: "disk",
  T: "stopped",
  t: "debug",
  Z: "exiting",
  X: "dead",
  I: "idle",
  P: "parked",
};

// Deno grants /proc only under --allow-all. Without it, Ferry asks ps(1)
// (which needs only --allow-run) for the same facts, at the cost of exact
// argument boundaries.
let direct: boolean | undefined;
function procReadable(): boolean {
  if (direct === undefined) {
    try {
      Deno.statSync("/proc/self/stat");
      direct = true;
    } catch (e) {
      direct = !(e instanceof Deno.errors.NotCapable);
    }
  }
  return direct;
}

let psCache: { at: number; procs: Map<number, ProcInfo> } | null = null;

/** Parse `ps -e -o pid=,ppid=,pgid=,uid=,stat=,rss=,etimes=,args=` output. */
export function parsePs(
  text: string,
  nowSecs = Math.floor(Date.now() / 1000),
): Map<number, ProcInfo> {
  const procs = new Map<number, ProcInfo>();
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const args = m[8]!.trim();
    const kernel = /^\[.*\]$/.test(args);
    const argv = kernel ? [] : args.split(/\s+/);
    const name = kernel ? args.slice(1, -1) : (argv[0] ?? "").split("/").pop() ?? "";
    const pid = Number(m[1]);
    procs.set(pid, {
      pid,
      ppid: Number(m[2]),
      pgrp: Number(m[3]),
      uid: Number(m[4]),
      stateLetter: m[5]!.charAt(0),
      rssKiB: Number(m[6]),
      name,
      argv,
      start: String(nowSecs - Number(m[7])),
    });
  }
  return procs;
}

async function psSnapshot(fresh = false): Promise<Map<number, ProcInfo>> {
  if (!fresh && psCache && Date.now() - psCache.at < 500) return psCache.procs;
  const out = await new Deno.Command("ps", {
    args: ["-e", "-ww", "-o", "pid=,ppid=,pgid=,uid=,stat=,rss=,etimes=,args="],
    stdout: "piped",
    stderr: "piped",
  }).output().catch((e) => {
    throw new Error(`cannot list processes: /proc needs --allow-all and ps failed: ${e.message}`);
  });
  if (!out.success) throw new Error(`ps failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  psCache = { at: Date.now(), procs: parsePs(new TextDecoder().decode(out.stdout)) };
  return psCache.procs;
}

/** Pids listed in `procRoot` (default /proc), ascending. */
export async function listPids(procRoot = "/proc"): Promise<number[]> {
  if (procRoot === "/proc" && !procReadable()) {
    return [...(await psSnapshot(true)).keys()].sort((a, b) => a - b);
  }
  const pids: number[] = [];
  for await (const e of Deno.readDir(procRoot)) {
    if (/^[0-9]+$/.test(e.name)) pids.push(Number(e.name));
  }
  return pids.sort((a, b) => a - b);
}

/** Parse the text of /proc/PID/stat: the command may hold spaces and parentheses. */
export function parseStat(text: string): {
  name: string;
  state: string;
  ppid: number;
  pgrp: number;
  start: string;
} {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) throw new Error(`Malformed /proc stat line '${text.slice(0, 80)}'`);
  const name = text.slice(open + 1, close);
  const f = text.slice(close + 2).trim().split(/\s+/);
  // f[0] is field 3 (state); field 22 (starttime) is f[19].
  return {
    name,
    state: f[0] ?? "?",
    ppid: Number(f[1] ?? 0),
    pgrp: Number(f[2] ?? 0),
    start: f[19] ?? "0",
  };
}

/** Read one process; null when it has gone (or never was). */
export async function readProc(pid: number, procRoot = "/proc"): Promise<ProcInfo | null> {
  if (procRoot === "/proc" && !procReadable()) {
    return (await psSnapshot()).get(pid) ?? (await psSnapshot(true)).get(pid) ?? null;
  }
  const dir = `${procRoot}/${pid}`;
  try {
    const [stat, status, cmdline] = await Promise.all([
      Deno.readTextFile(`${dir}/stat`),
      Deno.readTextFile(`${dir}/status`),
      Deno.readFile(`${dir}/cmdline`).catch(() => new Uint8Array(0)),
    ]);
    const s = parseStat(stat);
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
    const rss = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    const text = new TextDecoder().decode(cmdline);
    const argv = text === "" ? [] : text.replace(/\0$/, "").split("\0");
    return {
      pid,
      ppid: s.ppid,
      pgrp: s.pgrp,
      uid,
      stateLetter: s.state,
      rssKiB: rss,
      name: s.name,
      argv,
      start: s.start,
    };
  } catch {
    return null;
  }
}
