/**
 * Namespace builtins: bind, mount, unmount and ns, as bind(1) and ns(1)
 * describe them.
 *
 * @module
 */

import type { Builtin, BuiltinCtx } from "../interp.ts";
import type { Tree } from "../../fs/tree.ts";
import type { StyxClient } from "../../styx/client_conn.ts";
import { ShUsageError } from "../interp.ts";
import { writeText } from "../io.ts";
import { getopts, shQuote, warnInsecureOnce } from "./util.ts";
import { PEER_NEEDS_TLS } from "../../net/mismatch.ts";

function unionFlags(ctx: BuiltinCtx, flags: Set<string>, usage: string) {
  if (flags.has("a") && flags.has("b")) throw new ShUsageError(usage);
  void ctx;
  return { before: flags.has("b"), after: flags.has("a"), create: flags.has("c") };
}

/** bind [-a|-b] [-c] new old */
export const bind: Builtin = async (ctx, args) => {
  const usage = "bind [-a|-b] [-c] new old";
  const o = getopts(args, "abcq", usage);
  if (o.rest.length !== 2) throw new ShUsageError(usage);
  const [src, dst] = o.rest as [string, string];
  try {
    await ctx.sh.ns.bind(ctx.sh.path(src), ctx.sh.path(dst), unionFlags(ctx, o.flags, usage));
  } catch (e) {
    if (o.flags.has("q")) return "bind failed";
    throw e;
  }
};

/** A mount source that names a network address rather than a file. */
function isAddr(s: string): boolean {
  return s.includes("!");
}

/**
 * Take `--NAME VALUE` (or `--NAME=VALUE`) out of the options before the
 * first operand; Inferno's single-letter options stay for getopts.
 */
function takeLong(args: string[], name: string, usage: string): [string[], string | undefined] {
  const rest: string[] = [];
  let value: string | undefined;
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === `--${name}`) {
      value = args[++i];
      if (value === undefined || value === "") throw new ShUsageError(usage);
    } else if (a.startsWith(`--${name}=`)) {
      value = a.slice(name.length + 3);
      if (value === "") throw new ShUsageError(usage);
    } else if (a.startsWith("-") && a !== "-" && a !== "--") {
      rest.push(a);
      // -C takes the next word as its algorithm.
      if (a.indexOf("C") === a.length - 1 && i + 1 < args.length) rest.push(args[++i]!);
    } else break;
  }
  return [[...rest, ...args.slice(i)], value];
}

/**
 * mount [-a|-b] [-c] [-r] [-A] [-C alg] [--peer node] addr old [spec]: dial
 * `addr`, attach with `spec` and mount the remote tree on `old`. Under
 * TLS the server must present the certificate of `node` (default: the
 * host dialled), as when a relay forwards `addr` to another node. With -r
 * the mount recovers: when the server goes away it is redialled with
 * backoff and open files are opened again (lib/styx/client_recover.ts).
 */
export const mount: Builtin = async (ctx, args) => {
  const usage = "mount [-a|-b] [-c] [-r] [-A] [-C alg] [--peer node] addr old [spec]";
  const [plain, peer] = takeLong(args, "peer", usage);
  const o = getopts(plain, "abcqrAC:", usage);
  if (o.rest.length < 2 || o.rest.length > 3) throw new ShUsageError(usage);
  const [addr, old, spec] = o.rest as [string, string, string | undefined];
  const flags = unionFlags(ctx, o.flags, usage);
  if (peer !== undefined && o.flags.has("A")) {
    throw new Error(PEER_NEEDS_TLS);
  }
  const target = ctx.sh.path(old);
  // Fail early, before any network traffic, when the mount point is missing.
  await ctx.sh.ns.stat(target).catch((e) => {
    throw new Error(`${old}: ${(e as Error).message}`);
  });
  if (o.flags.has("A")) await warnInsecureOnce(ctx);
  const how = {
    insecure: o.flags.has("A"),
    aname: spec ?? "",
    alg: o.values.get("C"),
    peer,
  };
  const dialed = o.flags.has("r")
    ? await recovering(ctx, addr, how)
    : await dialRemote(ctx, addr, how);
  try {
    await ctx.sh.ns.mount(dialed.tree, target, {
      ...flags,
      source: addr,
      aname: spec,
      insecure: o.flags.has("A"),
      peer,
    });
  } catch (e) {
    dialed.close();
    throw e;
  }
  ctx.sh.dialed.push({ source: addr, target, close: () => dialed.close() });
};

/** A mount that redials `addr` whenever its connection is lost (mount -r). */
async function recovering(
  ctx: BuiltinCtx,
  addr: string,
  opts: { insecure: boolean; aname: string; alg?: string; peer?: string },
): Promise<{ tree: Tree; close(): void }> {
  const { RecoveringTree } = await import("../../styx/client_recover.ts");
  // Redials outlive this command: they must not stop when it is interrupted.
  const later: BuiltinCtx = { ...ctx, signal: new AbortController().signal };
  let first = true;
  const tree = await RecoveringTree.connect({
    dial: async () => {
      const d = await dialRemote(first ? ctx : later, addr, opts);
      first = false;
      return d.client;
    },
    uname: ctx.sh.user,
    address: addr,
  });
  return { tree, close: () => void tree.close() };
}

/** How long a mount waits for the remote end to answer. */
export const DIAL_TIMEOUT_MS = 10_000;

/** True when the namespace has a network at /net (a local '#I' or a mounted remote one). */
export async function hasNet(ctx: BuiltinCtx): Promise<boolean> {
  try {
    await ctx.sh.ns.stat("/net/cs");
    return true;
  } catch {
    return false;
  }
}

/**
 * Dial a Styx server through whatever answers at the namespace's /net (so
 * after mounting a remote /net the call leaves from the remote); without a
 * /net, straight from this host.
 */
async function dialRemote(
  ctx: BuiltinCtx,
  addr: string,
  opts: { insecure: boolean; aname: string; alg?: string; peer?: string },
): Promise<{ tree: Tree; client: StyxClient; close(): void }> {
  const timeout = AbortSignal.timeout(DIAL_TIMEOUT_MS);
  const signal = AbortSignal.any([ctx.signal, timeout]);
  const named = (e: unknown): Error => {
    const msg = timeout.aborted
      ? `timed out after ${DIAL_TIMEOUT_MS / 1000} s`
      : (e as Error).message ?? String(e);
    return new Error(msg.includes(addr) ? msg : `cannot dial '${addr}': ${msg}`);
  };
  if (await hasNet(ctx)) {
    const { dialStyxVia } = await import("../../net/nsdial.ts");
    let d;
    try {
      d = await dialStyxVia(ctx.sh.ns, addr, {
        insecure: opts.insecure,
        user: ctx.sh.user,
        alg: opts.alg,
        peer: opts.peer,
        signal,
      });
    } catch (e) {
      throw named(e);
    }
    return d;
  }
  const { dialStyx } = await import("../../net/connect.ts");
  try {
    return await dialStyx(addr, {
      insecure: opts.insecure,
      user: ctx.sh.user,
      aname: opts.aname,
      alg: opts.alg,
      peer: opts.peer,
      signal,
      timeoutMs: DIAL_TIMEOUT_MS,
    });
  } catch (e) {
    throw named(e);
  }
}

/** unmount [new] old */
export const unmount: Builtin = async (ctx, args) => {
  const usage = "unmount [source] target";
  const o = getopts(args, "", usage);
  if (o.rest.length < 1 || o.rest.length > 2) throw new ShUsageError(usage);
  const sh = ctx.sh;
  const target = sh.path(o.rest[o.rest.length - 1]!);
  const srcArg = o.rest.length === 2 ? o.rest[0]! : undefined;
  const source = srcArg === undefined ? undefined : isAddr(srcArg) ? srcArg : sh.path(srcArg);
  await sh.ns.unmount(source, target);
  // Hang up remote connections this shell made that no longer appear in its table.
  const still = sh.ns.mounts();
  for (let i = sh.dialed.length - 1; i >= 0; i--) {
    const d = sh.dialed[i]!;
    if (!still.some((m) => m.kind === "mount" && m.source === d.source && m.target === d.target)) {
      sh.dialed.splice(i, 1);
      d.close();
    }
  }
};

/**
 * ns: the mount table as the bind and mount commands that rebuild it, with
 * everything a mount was made with (-A, --peer, the attach name), so that
 * its output can be run as it is.
 */
export const ns: Builtin = async (ctx, args) => {
  if (args.length > 0) throw new ShUsageError("ns");
  const lines = ctx.sh.ns.mounts().map((m) =>
    [
      m.kind,
      ...(m.flags ? [m.flags] : []),
      ...(m.insecure ? ["-A"] : []),
      ...(m.peer ? ["--peer", shQuote(m.peer)] : []),
      shQuote(m.source),
      shQuote(m.target),
      ...(m.aname ? [shQuote(m.aname)] : []),
    ].join(" ") +
    // A comment, so the listing still replays.
    (m.lost !== undefined ? ` # lost: ${m.lost.replaceAll("\n", " ")}` : "")
  );
  if (lines.length > 0) await writeText(ctx.io.stdout, lines.join("\n") + "\n");
};
