/**
 * The table of Ferry's shell builtins.
 *
 * @module
 */

import type { Builtin } from "../interp.ts";
import { cat, cd, cp, echo, ls, mkdir, mv, pwd, rm } from "./fs.ts";
import { bind, mount, ns, unmount } from "./ns.ts";
import { exportFn, listen } from "./net.ts";
import { date, exit, kill, ndbService, ps, run, sleep, subshell } from "./proc.ts";
import * as std from "./std.ts";

/**
 * A fresh table of every builtin, by name.
 *
 * @example
 * ```ts
 * import { builtins } from "./mod.ts";
 * if (!builtins().has("bind")) throw new Error("no bind");
 * ```
 */
export function builtins(): Map<string, Builtin> {
  return new Map<string, Builtin>([
    ["ls", ls],
    ["cat", cat],
    ["echo", echo],
    ["cp", cp],
    ["mv", mv],
    ["rm", rm],
    ["mkdir", mkdir],
    ["cd", cd],
    ["pwd", pwd],
    ["bind", bind],
    ["mount", mount],
    ["unmount", unmount],
    ["ns", ns],
    ["listen", listen],
    ["export", exportFn],
    ["date", date],
    ["sleep", sleep],
    ["kill", kill],
    ["ps", ps],
    ["exit", exit],
    ["run", run],
    ["@", subshell],
    ["load", std.load],
    ["if", std.ifFn],
    ["while", std.whileFn],
    ["for", std.forFn],
    ["apply", std.apply],
    ["fn", std.fn],
    ["and", std.and],
    ["or", std.or],
    ["!", std.not],
    ["~", std.match],
    ["no", std.no],
    ["status", std.status],
    ["raise", std.raise],
    ["rescue", std.rescue],
    ["ndb/cs", ndbService],
    ["ndb/dns", ndbService],
    ["webgrab", (ctx, a) => import("./webgrab.ts").then((m) => m.webgrab(ctx, a))],
  ]);
}
