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

/** Pids listed in `procRoot` (default /proc), ascending. */
export async function listPids(procRoot = "/proc"): Promise<number[]> {
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

/** The uid owning /proc/PID, or null when the process is gone. */
export async function procUid(pid: number, procRoot = "/proc"): Promise<number | null> {
  try {
    return (await Deno.stat(`${procRoot}/${pid}`)).uid ?? null;
  } catch {
    return null;
  }
}
