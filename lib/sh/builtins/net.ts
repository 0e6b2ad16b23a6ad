/**
 * Network builtins: `listen [-A] addr {block}` announces and runs the block
 * once per incoming connection; `export path` serves a part of the shell's
 * namespace on that connection, acting for the client that attaches.
 *
 * @module
 */

import type { Builtin } from "../interp.ts";
import { ShUsageError } from "../interp.ts";
import { writeText } from "../io.ts";
import { subtree } from "../view.ts";
import { getopts, warnInsecureOnce } from "./util.ts";
import { hasNet } from "./ns.ts";
import type { Listener } from "../../transport/conn.ts";
import { parseAllow } from "../../auth/link.ts";

/**
 * listen [-A] [-C alg] [--allow LIST] addr {block}: announce on `addr` and
 * return at once, leaving a background job that runs `block` (in a forked
 * shell) for each connection, with `$user` set to the client's verified
 * name. `--allow alice,group:admins` refuses everyone else at the TLS
 * handshake, as `ferry listen --allow` does. `kill` of the job stops
 * listening.
 */
export const listen: Builtin = async (ctx, args) => {
  const usage = "listen [-A] [-C alg] [--allow LIST] addr {command}";
  const { allow, rest } = takeAllow(args, usage);
  const o = getopts(rest, "AsC:", usage);
  if (o.rest.length !== 2) throw new ShUsageError(usage);
  if (allow && o.flags.has("A")) {
    throw new Error("--allow needs verified callers: drop -A, or drop --allow");
  }
  const [addr, block] = o.rest as [string, string];
  if (!block.startsWith("{")) throw new Error(`'${block}' is not a {command} block`);
  if (o.flags.has("A")) await warnInsecureOnce(ctx);
  let listener: Listener;
  if (await hasNet(ctx)) {
    // Announce through the namespace's /net: after mounting a remote /net,
    // the remote machine listens on our behalf.
    const { announceStyxVia } = await import("../../net/nsdial.ts");
    listener = await announceStyxVia(ctx.sh.ns, addr, {
      insecure: o.flags.has("A"),
      allow,
      alg: o.values.get("C"),
    }).catch((e) => {
      const msg = (e as Error).message;
      throw new Error(msg.includes(addr) ? msg : `cannot announce '${addr}': ${msg}`);
    });
  } else {
    const { announceStyx } = await import("../../net/connect.ts");
    listener = await announceStyx(addr, {
      insecure: o.flags.has("A"),
      allow,
      alg: o.values.get("C"),
    });
  }
  const sh = ctx.sh;
  const io = { ...ctx.io };
  const parent = sh.fork();
  sh.jobs.start(`listen ${addr}`, sh.user, async (signal) => {
    const stop = () => listener.close();
    signal.addEventListener("abort", stop, { once: true });
    try {
      for await (const conn of listener) {
        const child = parent.fork();
        child.listenConn = conn;
        child.signal = signal;
        // As Inferno's listen does: the block runs as the verified caller.
        if (conn.peer.authenticated && conn.peer.identity) child.set("user", [conn.peer.identity]);
        child.runText(block, [], io).catch(async (e) => {
          await writeText(io.stderr, `listen: ${(e as Error).message}\n`).catch(() => {});
        });
      }
    } catch (e) {
      if (!signal.aborted) {
        await writeText(io.stderr, `listen: ${addr}: ${(e as Error).message}\n`).catch(() => {});
      }
    } finally {
      signal.removeEventListener("abort", stop);
      listener.close();
    }
  });
};

/**
 * export path: serve `path` of the shell's namespace on the connection of
 * the enclosing `listen` block, until the client hangs up.
 */
export const exportFn: Builtin = async (ctx, args) => {
  const o = getopts(args, "", "export path");
  if (o.rest.length !== 1) throw new ShUsageError("export path");
  const conn = ctx.sh.listenConn;
  if (!conn) throw new Error("no connection to serve: use export inside a listen block");
  const p = ctx.sh.path(o.rest[0]!);
  // Fail now, naming the path, rather than at the client's attach.
  const n = await ctx.sh.ns.resolve(p).catch((e) => {
    conn.close();
    throw new Error(`${o.rest[0]}: ${(e as Error).message}`);
  });
  await n.close();
  const { serve } = await import("../../styx/server.ts");
  const stop = () => conn.close();
  ctx.signal.addEventListener("abort", stop, { once: true });
  try {
    await serve(conn, subtree(ctx.sh.ns, p));
  } finally {
    ctx.signal.removeEventListener("abort", stop);
    conn.close();
  }
};

/**
 * Take `--allow LIST` (or `--allow=LIST`) from among the leading options of
 * `args`; the rest go to {@link getopts}.
 */
function takeAllow(args: string[], usage: string): { allow?: string[]; rest: string[] } {
  const rest: string[] = [];
  let allow: string[] | undefined;
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--" || !a.startsWith("-") || a === "-") break;
    if (a === "--allow" || a.startsWith("--allow=")) {
      const v = a === "--allow" ? args[++i] : a.slice("--allow=".length);
      if (v === undefined) throw new ShUsageError(usage);
      allow = [...(allow ?? []), ...parseAllow(v)];
      if (allow.length === 0) {
        throw new Error(`--allow '${v}' names nobody: give users and group:NAME entries`);
      }
      continue;
    }
    rest.push(a);
    // An option that takes a value (-C alg, -AC alg) keeps it.
    if (/^-[^-]*C$/.test(a)) {
      const v = args[++i];
      if (v !== undefined) rest.push(v);
    }
  }
  return { allow, rest: [...rest, ...args.slice(i)] };
}
