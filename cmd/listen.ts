/**
 * `ferry listen`: export a host directory over Styx until interrupted.
 *
 * @module
 */

import { fail, parse, UsageError, warnInsecure } from "../lib/cli.ts";
import { announceStyx } from "../lib/net/connect.ts";
import { HostTree } from "../lib/fs/host.ts";
import { ConnectionLimit, serve } from "../lib/styx/server.ts";
import { traceEnabled } from "../lib/styx/trace.ts";
import type { Tree } from "../lib/fs/tree.ts";

const spec = {
  usage:
    "ferry listen [-A] [--ro] [--allow USERS] [-a ALG] [--certs DIR] [-D] [--max-conns N] [--frame-timeout SECS] ADDR DIR",
  about: "Export the host directory DIR as a Styx tree on ADDR (a dial string such as\n" +
    "'tcp!*!6666') until interrupted. Without -A every connection is mutually\n" +
    "authenticated and encrypted with TLS 1.3 using this machine's credentials.",
  options: {
    A: { type: "boolean" as const },
    ro: { type: "boolean" as const },
    allow: { type: "string" as const },
    a: { type: "string" as const },
    certs: { type: "string" as const },
    D: { type: "boolean" as const },
    "max-conns": { type: "string" as const },
    "frame-timeout": { type: "string" as const },
  },
  optionsHelp: [
    "  -A            no authentication or encryption (warns)",
    "  --ro          export read-only",
    "  --allow LIST  comma-separated users and group:NAME entries allowed to attach",
    "  -a ALG        Inferno algorithm name, mapped onto a TLS 1.3 cipher choice",
    "  --certs DIR   credentials directory (default $FERRY_CERTS, else ~/.ferry/certs)",
    "  -D            trace Styx messages on stderr",
    "  --max-conns N         serve at most N connections at once (default 256 per process)",
    "  --frame-timeout SECS  drop a connection whose frame stays incomplete this long (default 10)",
  ].join("\n"),
};

/** The server bounds `--max-conns` and `--frame-timeout` ask for. */
function listenBounds(
  maxConns: unknown,
  frameTimeout: unknown,
): { connections?: ConnectionLimit; frameTimeoutMs?: number } {
  const out: { connections?: ConnectionLimit; frameTimeoutMs?: number } = {};
  if (typeof maxConns === "string") {
    const n = Number(maxConns);
    if (!Number.isInteger(n) || n < 1) {
      throw new UsageError(`--max-conns '${maxConns}' is not a positive whole number`);
    }
    out.connections = new ConnectionLimit(n);
  }
  if (typeof frameTimeout === "string") {
    const secs = Number(frameTimeout);
    if (frameTimeout.trim() === "" || !Number.isFinite(secs) || secs < 0) {
      throw new UsageError(
        `--frame-timeout '${frameTimeout}' is not a number of seconds (0 turns it off)`,
      );
    }
    out.frameTimeoutMs = secs * 1000;
  }
  return out;
}

/** Run `ferry listen`. */
export async function run(args: string[]): Promise<number> {
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    const [addr, dir] = p.positionals;
    if (addr === undefined || dir === undefined || p.positionals.length > 2) {
      throw new UsageError(`need ADDR and DIR\nusage: ${spec.usage}`);
    }
    const bounds = listenBounds(p.values["max-conns"], p.values["frame-timeout"]);
    const insecure = p.values.A === true;
    const st = await Deno.stat(dir).catch(() => null);
    if (!st?.isDirectory) throw new Error(`'${dir}' is not a directory`);
    const tree: Tree = new HostTree(dir, { readOnly: p.values.ro === true });
    const allow = typeof p.values.allow === "string"
      ? p.values.allow.split(",").map((s) => s.trim()).filter((s) => s)
      : undefined;
    const listener = await announceStyx(addr, {
      insecure,
      allow,
      alg: p.values.a as string | undefined,
      certDir: p.values.certs as string | undefined,
    });
    if (insecure) warnInsecure("listen");
    console.log(`listening on ${listener.addr}`);
    const trace = p.values.D === true || traceEnabled();
    const stop = () => listener.close();
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    const sessions = new Set<Promise<void>>();
    for await (const conn of listener) {
      const s = serve(conn, tree, { trace, ...bounds }).catch((e) =>
        console.error(`listen: ${conn.peer.addr}: ${(e as Error).message}`)
      ).finally(() => sessions.delete(s));
      sessions.add(s);
    }
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    console.error("listen: stopped");
    // Ctrl-C ends the process without waiting for idle clients.
    return 0;
  } catch (e) {
    return fail("listen", e);
  }
}
