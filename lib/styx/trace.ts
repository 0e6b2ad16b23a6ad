/**
 * One-line text forms of Styx messages, in the manner of Plan 9's fcall
 * printing, for the trace switch (`FERRY_TRACE=1` or `-D`).
 *
 * @example
 * ```ts
 * import { formatMsg } from "./trace.ts";
 * const line = formatMsg({ type: 100, tag: 65535, msize: 8216, version: "9P2000" });
 * if (line !== "Tversion tag 65535 msize 8216 version '9P2000'") throw new Error(line);
 * ```
 *
 * @module
 */

import { msgName } from "./codec.ts";
import { type Dir, DMAPPEND, DMAUTH, DMDIR, DMEXCL, type Msg, type Qid } from "./types.ts";

/** How many bytes of Rread/Twrite data a trace line shows. */
const DUMP_BYTES = 64;

/**
 * True when `FERRY_TRACE` is "1" (or "true"/"yes"). Without permission to read
 * the environment it is false rather than an error.
 *
 * @example
 * ```ts
 * import { traceEnabled } from "./trace.ts";
 * if (typeof traceEnabled() !== "boolean") throw new Error("not a boolean");
 * ```
 */
export function traceEnabled(): boolean {
  try {
    const v = Deno.env.get("FERRY_TRACE");
    return v === "1" || v === "true" || v === "yes";
  } catch {
    return false;
  }
}

function qidTypeChars(t: number): string {
  let s = "";
  if (t & 0x80) s += "d";
  if (t & 0x40) s += "a";
  if (t & 0x20) s += "l";
  if (t & 0x08) s += "A";
  return s;
}

/**
 * A qid as "(path version type)", path in 16 hex digits and the type as
 * letters: d directory, a append-only, l exclusive, A auth.
 */
export function formatQid(q: Qid): string {
  return `(${q.path.toString(16).padStart(16, "0")} ${q.version} ${qidTypeChars(q.type)})`;
}

/** A permission word as letters ("d-rwxr-xr-x" style: d, a, l, A then rwx three times). */
export function formatMode(m: number): string {
  let s = "";
  s += m & DMDIR ? "d" : "-";
  s += m & DMAPPEND ? "a" : "-";
  s += m & DMEXCL ? "l" : "-";
  s += m & DMAUTH ? "A" : "-";
  const rwx = "rwx";
  for (let shift = 6; shift >= 0; shift -= 3) {
    for (let b = 0; b < 3; b++) s += m & (1 << (shift + 2 - b)) ? rwx[b] : "-";
  }
  return s;
}

/** A Dir as the fields of a stat entry, strings quoted. */
export function formatDir(d: Dir): string {
  return `'${d.name}' '${d.uid}' '${d.gid}' '${d.muid}' q ${formatQid(d.qid)} m ${
    "0" + (d.mode >>> 0).toString(8)
  } at ${d.atime} mt ${d.mtime} l ${d.length} t ${d.type} d ${d.dev}`;
}

/** Up to DUMP_BYTES of data: as quoted text when printable, else as hex. */
function dump(data: Uint8Array): string {
  const n = Math.min(data.length, DUMP_BYTES);
  let printable = true;
  for (let i = 0; i < n; i++) {
    const c = data[i]!;
    if ((c < 0x20 && c !== 0x0a && c !== 0x09) || c === 0x7f) {
      printable = false;
      break;
    }
  }
  const more = data.length > n ? "..." : "";
  const head = data.subarray(0, n);
  if (printable) {
    const text = new TextDecoder().decode(head).replaceAll("\n", "\\n").replaceAll("\t", "\\t");
    return `'${text}${more}'`;
  }
  let hex = "";
  for (const b of head) hex += b.toString(16).padStart(2, "0");
  return `${hex}${more}`;
}

/**
 * One line describing `msg`, e.g. "Tversion tag 65535 msize 8216 version
 * '9P2000'" or "Rread tag 1 count 5 'hello'".
 *
 * Fields are printed in the message's own order, each by its kind, so no
 * second list of message layouts is kept here: strings are quoted, qids and
 * stats spelled out, name and qid lists numbered, data shown as its count
 * and first bytes, a perm as letters and NOFID as -1.
 */
export function formatMsg(msg: Msg): string {
  let line = `${msgName(msg.type)} tag ${msg.tag}`;
  for (const [key, value] of Object.entries(msg)) {
    if (key === "type" || key === "tag") continue;
    line += " " + formatField(key, value);
  }
  return line;
}

function isQid(v: object): v is Qid {
  return "path" in v && "version" in v && !("qid" in v);
}

function formatField(key: string, v: unknown): string {
  if (typeof v === "string") return `${key} '${v}'`;
  if (typeof v === "number") {
    if (key === "perm") return `${key} ${formatMode(v)}`;
    if (key.endsWith("fid") && v === 0xffffffff) return `${key} -1`;
    return `${key} ${v}`;
  }
  if (typeof v === "bigint") return `${key} ${v}`;
  if (v instanceof Uint8Array) return `count ${v.length} ${dump(v)}`;
  if (Array.isArray(v)) {
    // wnames → nwname, wqids → nwqid, as the wire names the counts.
    const items = v.map((x, i) =>
      ` ${i}:${typeof x === "string" ? `'${x}'` : formatQid(x as Qid)}`
    );
    return `n${key.replace(/s$/, "")} ${v.length}${items.join("")}`;
  }
  if (v !== null && typeof v === "object") {
    return isQid(v) ? `${key} ${formatQid(v)}` : `${key} ${formatDir(v as Dir)}`;
  }
  return `${key} ${String(v)}`;
}
