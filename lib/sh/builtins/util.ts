/**
 * Small helpers shared by the builtins: option parsing, quoting and the
 * formats of `ls -l` and `date`.
 *
 * @module
 */

import { type Dir, DMAPPEND, DMDIR, DMEXCL } from "../../styx/types.ts";
import { type BuiltinCtx, ShUsageError } from "../interp.ts";
import { writeText } from "../io.ts";

/** Parsed single-letter options and the remaining arguments. */
export interface Opts {
  /** Flags given, e.g. "l" for -l. */
  flags: Set<string>;
  /** Values of options that take one (e.g. -C alg). */
  values: Map<string, string>;
  /** The arguments after the options. */
  rest: string[];
}

/**
 * Parse leading `-abc` options. `allowed` lists the flag letters; a letter
 * followed by ':' takes a value. Stops at `--` or the first non-option.
 * Throws {@link ShUsageError} with `usage` for an unknown flag.
 *
 * @example
 * ```ts
 * import { getopts } from "./util.ts";
 * const o = getopts(["-bc", "/a", "/b"], "abc", "bind [-a|-b] [-c] new old");
 * if (!o.flags.has("b") || o.rest.length !== 2) throw new Error("getopts");
 * ```
 */
export function getopts(args: string[], allowed: string, usage: string): Opts {
  const flags = new Set<string>();
  const values = new Map<string, string>();
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      i++;
      break;
    }
    if (!a.startsWith("-") || a === "-") break;
    for (let k = 1; k < a.length; k++) {
      const c = a[k]!;
      const at = allowed.indexOf(c);
      if (at < 0 || c === ":") throw new ShUsageError(usage);
      if (allowed[at + 1] === ":") {
        const v = k + 1 < a.length ? a.slice(k + 1) : args[++i];
        if (v === undefined) throw new ShUsageError(usage);
        values.set(c, v);
        break;
      }
      flags.add(c);
    }
  }
  return { flags, values, rest: args.slice(i) };
}

/**
 * Quote `s` for the shell when needed: `'...'` with `''` for a quote.
 *
 * @example
 * ```ts
 * import { shQuote } from "./util.ts";
 * if (shQuote("#U*") !== "'#U*'" || shQuote("/tmp") !== "/tmp") throw new Error("quote");
 * ```
 */
export function shQuote(s: string): string {
  if (s !== "" && /^[^\s#;&|^$`'{}()<>"=*?[\]]+$/.test(s)) return s;
  return `'${s.replaceAll("'", "''")}'`;
}

/** Plan 9's mode string: `d-rwxr-xr-x`. */
export function modeString(mode: number): string {
  let s = mode & DMDIR ? "d" : mode & DMAPPEND ? "a" : mode & DMEXCL ? "l" : "-";
  s += mode & 0x04000000 ? "t" : "-";
  const rwx = "rwxrwxrwx";
  for (let i = 0; i < 9; i++) s += mode & (1 << (8 - i)) ? rwx[i] : "-";
  return s;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const pad2 = (n: number) => String(n).padStart(2, "0");

/** `ls -l`'s time: "Nov 27 09:18" within six months of `now`, else "Nov 27  2025". */
export function lsTime(secs: number, now = Date.now()): string {
  const d = new Date(secs * 1000);
  const day = `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, " ")}`;
  const recent = Math.abs(now - d.getTime()) < 183 * 24 * 3600 * 1000;
  return recent
    ? `${day} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`
    : `${day}  ${d.getUTCFullYear()}`;
}

/** date(1)'s format: "Fri Nov 27 09:18:38 UTC 2026". */
export function dateString(d: Date): string {
  return `${DAYS[d.getUTCDay()]} ${MONTHS[d.getUTCMonth()]} ${
    String(d.getUTCDate()).padStart(2, " ")
  } ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${
    pad2(d.getUTCSeconds())
  } UTC ${d.getUTCFullYear()}`;
}

/** `ls -l` lines for `entries` (each with the name to show), columns aligned. */
export function longListing(entries: { dir: Dir; name: string }[], now = Date.now()): string[] {
  const w = { uid: 0, gid: 0, len: 0 };
  for (const { dir } of entries) {
    w.uid = Math.max(w.uid, dir.uid.length);
    w.gid = Math.max(w.gid, dir.gid.length);
    w.len = Math.max(w.len, String(dir.length).length);
  }
  return entries.map(({ dir, name }) => {
    const t = dir.type >= 0x20 && dir.type < 0x7f ? String.fromCharCode(dir.type) : "M";
    return `${modeString(dir.mode)} ${t} ${dir.dev} ${dir.uid.padEnd(w.uid)} ${
      dir.gid.padEnd(w.gid)
    } ${String(dir.length).padStart(w.len)} ${lsTime(dir.mtime, now)} ${name}`;
  });
}

let warnedInsecure = false;

/**
 * Print, once per process, the warning that -A sessions are neither
 * authenticated nor encrypted.
 */
export async function warnInsecureOnce(ctx: BuiltinCtx): Promise<void> {
  if (warnedInsecure) return;
  warnedInsecure = true;
  await writeText(
    ctx.io.stderr,
    `${ctx.name}: warning: -A given: this session is neither authenticated nor encrypted\n`,
  );
}
