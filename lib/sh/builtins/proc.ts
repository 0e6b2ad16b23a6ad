/**
 * Process builtins: date, sleep, kill, ps, exit, run, `@` and the network
 * service starters `ndb/cs` and `ndb/dns` (Ferry needs neither: they are
 * accepted and do nothing).
 *
 * @module
 */

import { type Builtin, ShExit, ShUsageError } from "../interp.ts";
import { writeText } from "../io.ts";
import { dateString, getopts } from "./util.ts";

/** date [-n]: the time, or with -n seconds since the epoch. */
export const date: Builtin = async (ctx, args) => {
  const o = getopts(args, "n", "date [-n]");
  if (o.rest.length > 0) throw new ShUsageError("date [-n]");
  const now = new Date();
  const text = o.flags.has("n") ? String(Math.floor(now.getTime() / 1000)) : dateString(now);
  await writeText(ctx.io.stdout, text + "\n");
};

/** sleep seconds (fractions allowed); ends early when the command is killed. */
export const sleep: Builtin = async (ctx, args) => {
  if (args.length !== 1) throw new ShUsageError("sleep seconds");
  const secs = Number(args[0]);
  if (!Number.isFinite(secs) || secs < 0) throw new Error(`bad time '${args[0]}'`);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(done, secs * 1000);
    function done() {
      ctx.signal.removeEventListener("abort", onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(t);
      reject(new Error("interrupted"));
    }
    if (ctx.signal.aborted) onAbort();
    else ctx.signal.addEventListener("abort", onAbort, { once: true });
  });
};

/** kill pid ...: stop background jobs of this shell. */
export const kill: Builtin = async (ctx, args) => {
  if (args.length === 0) throw new ShUsageError("kill pid ...");
  let status = "";
  for (const a of args) {
    const pid = Number(a);
    if (!Number.isInteger(pid) || !ctx.sh.jobs.kill(pid)) {
      status = "no such process";
      await writeText(ctx.io.stderr, `kill: ${a}: no such process\n`);
    }
  }
  return status;
};

/** ps: the background jobs of this Ferry process. */
export const ps: Builtin = async (ctx, args) => {
  if (args.length > 0) throw new ShUsageError("ps");
  const lines = [...ctx.sh.jobs.jobs.values()].map((j) =>
    `${String(j.pid).padStart(6)} ${j.user.padEnd(10)} ${j.state.padEnd(8)} ${j.cmd}`
  );
  if (lines.length > 0) await writeText(ctx.io.stdout, lines.join("\n") + "\n");
};

/** exit [status] */
export const exit: Builtin = (_ctx, args) => {
  return Promise.reject(new ShExit(args.join(" ")));
};

/** run file [arg ...]: run commands from a file of the namespace, with $* set. */
export const run: Builtin = async (ctx, args) => {
  if (args.length === 0) throw new ShUsageError("run file [arg ...]");
  const { parse } = await import("../parser.ts");
  const data = await ctx.sh.ns.open(ctx.sh.path(args[0]!), 0).then(async (f) => {
    const { FileReader, readAll } = await import("../io.ts");
    try {
      return await readAll(new FileReader(f));
    } finally {
      await f.close();
    }
  }).catch(async (e) => {
    const { userError } = await import("../io.ts");
    throw new Error(`${args[0]}: ${userError(e)}`);
  });
  let seq;
  try {
    seq = parse(new TextDecoder().decode(data));
  } catch (e) {
    throw new Error(`${args[0]}: ${(e as Error).message}`);
  }
  return await ctx.sh.runBlock(seq, args.slice(1), ctx.io);
};

/** @ command ...: run the command in a subshell with a forked namespace. */
export const subshell: Builtin = async (ctx, args) => {
  if (args.length === 0) throw new ShUsageError("@ command ...");
  const child = ctx.sh.fork();
  child.signal = ctx.signal;
  const { shQuote } = await import("./util.ts");
  const text = args[0]!.startsWith("{") && args.length === 1
    ? args[0]!
    : `{${args.map(shQuote).join(" ")}}`;
  try {
    return await child.runText(text, [], ctx.io);
  } catch (e) {
    if (e instanceof ShExit) return e.status;
    throw e;
  }
};

/**
 * ndb/cs and ndb/dns: Ferry's /net serves cs and dns itself, so there is
 * nothing to start; say so, as a second start of a service would.
 */
export const ndbService: Builtin = async (ctx) => {
  const name = ctx.name.endsWith("dns") ? "dns" : "cs";
  await writeText(ctx.io.stderr, `${ctx.name}: already running (/net/${name})\n`);
};
