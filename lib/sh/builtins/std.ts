/**
 * Control flow, as Inferno's sh-std(1) provides it with `load std`: `if`,
 * `while`, `for`, `apply`, `fn`, `and`, `or`, `!`, `~`, `no`, `status`,
 * `raise` and `rescue`. They are ordinary builtins taking braced blocks, so
 * the grammar stays small. A true status is the empty string; anything else
 * is false. A command's status is that of the last command it ran. Ferry
 * always has them; `load std` is accepted for scripts written for Inferno.
 *
 * @module
 */

import { type Builtin, type BuiltinCtx, ShRaise, ShUsageError } from "../interp.ts";
import { matchGlob } from "../glob.ts";

/** True for an argument that is a braced block (what a control command runs). */
function isBlock(a: string | undefined): a is string {
  return a !== undefined && a.startsWith("{");
}

/** Run block `b` with the caller's $*, as sh-std does. */
function runBlock(ctx: BuiltinCtx, b: string): Promise<string> {
  return ctx.sh.call([b, ...ctx.sh.get("*")], ctx.io);
}

/**
 * Run one pass of a loop body: a `break` ends the loop (true is returned),
 * a `continue` ends only this pass, anything else goes on up.
 */
async function loopPass(
  pass: () => Promise<void>,
): Promise<boolean> {
  try {
    await pass();
    return false;
  } catch (e) {
    if (e instanceof ShRaise && e.exception === "break") return true;
    if (e instanceof ShRaise && e.exception === "continue") return false;
    throw e;
  }
}

/** load std: the standard builtins are always there; any other module is unknown. */
export const load: Builtin = (_ctx, args) => {
  if (args.length === 0) throw new ShUsageError("load module ...");
  for (const m of args) {
    if (m !== "std") {
      return Promise.reject(new Error(`'${m}': no such module (Ferry's shell has 'std' built in)`));
    }
  }
  return Promise.resolve("");
};

/** if {cond} {action} [{cond} {action}]... [{elseaction}] */
export const ifFn: Builtin = async (ctx, args) => {
  const usage = "if {cond} {action} [{cond} {action}]... [{elseaction}]";
  if (args.length < 2 || !args.every(isBlock)) throw new ShUsageError(usage);
  let status = "";
  let i = 0;
  while (i < args.length) {
    if (i === args.length - 1) return await runBlock(ctx, args[i]!);
    status = await runBlock(ctx, args[i]!);
    ctx.sh.set("status", [status]);
    if (status === "") return await runBlock(ctx, args[i + 1]!);
    i += 2;
  }
  return status;
};

/** while {cond} {body}: its status is the last body's ("" when the body never ran). */
export const whileFn: Builtin = async (ctx, args) => {
  if (args.length !== 2 || !args.every(isBlock)) {
    throw new ShUsageError("while {condition} {cmd}");
  }
  const [cond, body] = args as [string, string];
  let status = "";
  for (;;) {
    if (ctx.signal.aborted) throw new Error("interrupted");
    if ((await runBlock(ctx, cond)) !== "") return status;
    const broke = await loopPass(async () => {
      status = await runBlock(ctx, body);
      ctx.sh.set("status", [status]);
    });
    if (broke) return status;
  }
};

/** for var in [item ...] {cmd}: `var` is set (locally) to each item in turn. */
export const forFn: Builtin = async (ctx, args) => {
  const usage = "for var in [item ...] {cmd}";
  if (args.length < 3 || args[1] !== "in" || !isBlock(args[args.length - 1])) {
    throw new ShUsageError(usage);
  }
  const name = args[0]!;
  if (name === "" || isBlock(name)) throw new Error(`bad variable name '${name}'`);
  const body = args[args.length - 1]!;
  let status = "";
  for (const item of args.slice(2, -1)) {
    if (ctx.signal.aborted) throw new Error("interrupted");
    ctx.sh.set(name, [item], true);
    const broke = await loopPass(async () => {
      status = await runBlock(ctx, body);
      ctx.sh.set("status", [status]);
    });
    if (broke) break;
  }
  return status;
};

/** apply {cmd} [value ...]: run cmd once per value, with the value as $1. */
export const apply: Builtin = async (ctx, args) => {
  if (!isBlock(args[0])) throw new ShUsageError("apply {cmd} [value ...]");
  let status = "";
  for (const v of args.slice(1)) {
    if (ctx.signal.aborted) throw new Error("interrupted");
    const broke = await loopPass(async () => {
      status = await ctx.sh.call([args[0]!, v], ctx.io);
      ctx.sh.set("status", [status]);
    });
    if (broke) break;
  }
  return status;
};

/** fn name ... {body} defines commands; fn name ... (no body) removes them. */
export const fn: Builtin = (ctx, args) => {
  const usage = "fn name ... [{body}]";
  if (args.length === 0) throw new ShUsageError(usage);
  const last = args[args.length - 1]!;
  const body = isBlock(last) ? last : undefined;
  const names = body === undefined ? args : args.slice(0, -1);
  if (names.length === 0 || names.some(isBlock)) throw new ShUsageError(usage);
  for (const n of names) {
    if (body === undefined) ctx.sh.functions.delete(n);
    else ctx.sh.functions.set(n, body);
  }
  return Promise.resolve("");
};

/** and {cmd} ...: run each until one fails; its status. */
export const and: Builtin = async (ctx, args) => {
  if (!args.every(isBlock)) throw new ShUsageError("and {cmd} ...");
  for (const b of args) {
    const s = await runBlock(ctx, b);
    if (s !== "") return s;
    ctx.sh.set("status", [""]);
  }
  return "";
};

/** or {cmd} ...: run each until one succeeds. */
export const or: Builtin = async (ctx, args) => {
  if (!args.every(isBlock)) throw new ShUsageError("or {cmd} ...");
  let s = "";
  for (const b of args) {
    s = await runBlock(ctx, b);
    if (s === "") return "";
    ctx.sh.set("status", [s]);
  }
  return s;
};

/** ! cmd [arg ...]: true when the command fails, false when it succeeds. */
export const not: Builtin = async (ctx, args) => {
  if (args.length === 0) return "false";
  return (await ctx.sh.call(args, ctx.io)) === "" ? "false" : "";
};

/** ~ value [pattern ...]: true when value matches a pattern (/ is not special). */
export const match: Builtin = (_ctx, args) => {
  if (args.length === 0) throw new ShUsageError("~ value [pattern ...]");
  const v = args[0]!;
  const hit = args.slice(1).some((p) => matchGlob(p, v));
  return Promise.resolve(hit ? "" : "no match");
};

/** no [arg ...]: true when there are no arguments. */
export const no: Builtin = (_ctx, args) => Promise.resolve(args.length === 0 ? "" : "yes");

/** status [value]: return value as the status ("" when none). */
export const status: Builtin = (_ctx, args) => Promise.resolve(args[0] ?? "");

/** raise [name]: raise exception name (default $exception). */
export const raise: Builtin = (ctx, args) => {
  const name = args[0] ?? ctx.sh.get("exception")[0];
  if (name === undefined || name === "") {
    return Promise.reject(new Error("no exception to raise: give a name"));
  }
  return Promise.reject(new ShRaise(name));
};

/**
 * rescue pattern {handler} {cmd}: run cmd; if it raises an exception whose
 * name matches pattern (literal, or a prefix ending in '*'), run handler
 * with $exception set to that name.
 */
export const rescue: Builtin = async (ctx, args) => {
  if (args.length !== 3 || !isBlock(args[1]) || !isBlock(args[2]) || isBlock(args[0])) {
    throw new ShUsageError("rescue pattern {rescuecmd} {cmd}");
  }
  const [pattern, handler, body] = args as [string, string, string];
  try {
    return await runBlock(ctx, body);
  } catch (e) {
    if (!(e instanceof ShRaise)) throw e;
    const hit = pattern.endsWith("*")
      ? e.exception.startsWith(pattern.slice(0, -1))
      : e.exception === pattern;
    if (!hit) throw e;
    const saved = ctx.sh.get("exception");
    ctx.sh.set("exception", [e.exception], true);
    try {
      return await runBlock(ctx, handler);
    } finally {
      ctx.sh.set("exception", saved, true);
    }
  }
};
