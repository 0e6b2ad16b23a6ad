/**
 * `ferry listen`: export a host directory over Styx until interrupted.
 *
 * @module
 */

import { fail, parse, UsageError, warnInsecure } from "../lib/cli.ts";
import { listenHost, parseDialString } from "../lib/net/dial.ts";
import { DEFAULT_MAX_CONNECTIONS } from "../lib/styx/server.ts";
import { traceEnabled } from "../lib/styx/trace.ts";
import {
  type FromWorker,
  type Loop,
  type LoopJob,
  loopShares,
  startLoop,
} from "./listen_worker.ts";

/** Serving threads by default: one per CPU, up to this many. */
const MAX_DEFAULT_THREADS = 4;

const spec = {
  usage:
    "ferry listen [-A] [--ro] [--allow USERS] [-a ALG] [--certs DIR] [-D] [--max-conns N] [--frame-timeout SECS] [--threads N] ADDR DIR",
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
    threads: { type: "string" as const },
  },
  optionsHelp: [
    "  -A            no authentication or encryption (warns)",
    "  --ro          export read-only",
    "  --allow LIST  comma-separated users and group:NAME entries allowed to attach",
    "  -a ALG        Inferno algorithm name, mapped onto a TLS 1.3 cipher choice",
    "  --certs DIR   credentials directory (default $FERRY_CERTS, else ~/.ferry/certs)",
    "  -D            trace Styx messages on stderr",
    "  --max-conns N         serve at most N connections at once (default 256, all threads together)",
    "  --frame-timeout SECS  drop a connection whose frame stays incomplete this long (default 10)",
    `  --threads N           serve on N threads, each taking some of the connections`,
    `                        (default: one per CPU, at most ${MAX_DEFAULT_THREADS})`,
  ].join("\n"),
};

/** The server bounds `--max-conns` and `--frame-timeout` ask for. */
function listenBounds(
  maxConns: unknown,
  frameTimeout: unknown,
): { maxConns: number; frameTimeoutMs?: number } {
  const out: { maxConns: number; frameTimeoutMs?: number } = { maxConns: DEFAULT_MAX_CONNECTIONS };
  if (typeof maxConns === "string") {
    const n = Number(maxConns);
    if (!Number.isInteger(n) || n < 1) {
      throw new UsageError(`--max-conns '${maxConns}' is not a positive whole number`);
    }
    out.maxConns = n;
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

/** How many serving threads `--threads` asks for, or the default. */
function threadCount(threads: unknown): number {
  if (typeof threads === "string") {
    const n = Number(threads);
    if (!Number.isInteger(n) || n < 1 || n > 64) {
      throw new UsageError(`--threads '${threads}' is not a whole number from 1 to 64`);
    }
    return n;
  }
  return Math.max(1, Math.min(MAX_DEFAULT_THREADS, navigator.hardwareConcurrency || 1));
}

/**
 * True when this Deno lets TCP listeners share a port (Deno.listen's
 * reusePort needs --unstable-net, which Ferry's deno.json asks for).
 */
function canSharePort(): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port: 0, reusePort: true }).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Fail as a lone listener would when something holds the port: with
 * SO_REUSEPORT a second listener of the same user would otherwise share
 * it silently.
 */
function checkPortFree(addr: string): void {
  const a = parseDialString(addr, { net: "tcp", service: "styx" });
  if (a.port === 0) return;
  try {
    Deno.listen({ hostname: listenHost(a), port: a.port }).close();
  } catch (e) {
    throw new Error(`cannot announce '${addr}': ${(e as Error).message}`);
  }
}

/**
 * Hold this user's listen lock while `fn` checks that `addr`'s port is free
 * and binds it. Listeners sharing a port must belong to one
 * user, so two `ferry listen` of that user started at once could otherwise
 * both find the port free and both bind it. Without a private place for
 * the lock (a runtime directory owned by someone else), `fn` runs unlocked.
 */
async function withPortLock<T>(addr: string, fn: () => Promise<T>): Promise<T> {
  const a = parseDialString(addr, { net: "tcp", service: "styx" });
  if (a.port === 0) return await fn();
  const uid = Deno.uid() ?? 0;
  const dir = `${Deno.env.get("XDG_RUNTIME_DIR") || "/tmp"}/ferry-${uid}`;
  let file: Deno.FsFile | undefined;
  try {
    await Deno.mkdir(dir, { mode: 0o700 }).catch((e) => {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    });
    const st = await Deno.lstat(dir);
    if (st.isDirectory && st.uid === uid && ((st.mode ?? 0) & 0o022) === 0) {
      // One lock for all ports: binds are brief, and files per port would pile up.
      file = await Deno.open(`${dir}/listen.lock`, {
        write: true,
        create: true,
        mode: 0o600,
      });
      await file.lock(true);
    }
  } catch {
    file?.close();
    file = undefined;
  }
  try {
    return await fn();
  } finally {
    file?.close();
  }
}

/** `addr` with the port `bound` (a dial string) says was chosen. */
function withBoundPort(addr: string, bound: string): string {
  const a = parseDialString(addr, { net: "tcp", service: "styx" });
  const host = listenHost(a);
  const port = bound.slice(bound.lastIndexOf("!") + 1);
  return `tcp!${host.includes(":") ? `[${host}]` : host}!${port}`;
}

/** Called when a worker says it has stopped listening. */
const stopped = new WeakMap<Worker, () => void>();

/** Start `n` workers each running a loop of `job`; resolves once all listen. */
async function startWorkers(n: number, job: LoopJob, failed: (msg: string) => void) {
  const workers: Worker[] = [];
  const ready: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const w = new Worker(new URL("./listen_worker.ts", import.meta.url), { type: "module" });
    workers.push(w);
    ready.push(
      new Promise<void>((resolve, reject) => {
        w.onmessage = (e: MessageEvent<FromWorker>) => {
          if ("ready" in e.data) resolve();
          else if ("failed" in e.data) reject(new Error(e.data.failed));
          else {
            const told = stopped.get(w);
            // A thread that stops unasked (its listener lost) ends them all:
            // serving on fewer threads would go unnoticed.
            if (told) told();
            else {
              stopped.set(w, () => {});
              failed("a serving thread stopped listening");
            }
          }
        };
        w.onerror = (e) => {
          e.preventDefault();
          const msg = `a serving thread failed: ${e.message}`;
          reject(new Error(msg));
          failed(msg);
        };
      }),
    );
    w.postMessage({ start: job });
  }
  try {
    await Promise.all(ready);
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  }
  return workers;
}

/**
 * Wait (a little) for told workers to stop listening, so that what they
 * were saying is said, then end them.
 */
async function stopWorkers(workers: Worker[], told: Promise<void>[]): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((r) => timer = setTimeout(r, 2000));
  await Promise.race([late, Promise.all(told)]);
  clearTimeout(timer);
  for (const w of workers) w.terminate();
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
    let threads = threadCount(p.values.threads);
    const insecure = p.values.A === true;
    const st = await Deno.stat(dir).catch(() => null);
    if (!st?.isDirectory) throw new Error(`'${dir}' is not a directory`);
    const allow = typeof p.values.allow === "string"
      ? p.values.allow.split(",").map((s) => s.trim()).filter((s) => s)
      : undefined;
    // node:tls shares a port as it is; Deno's own TCP listener needs --unstable-net.
    if (threads > 1 && insecure && !canSharePort()) {
      if (typeof p.values.threads === "string") {
        console.error(
          "listen: serving on one thread: sharing the port between threads needs " +
            "Deno's --unstable-net (Ferry's deno.json turns it on)",
        );
      }
      threads = 1;
    }
    const job: LoopJob = {
      addr,
      dir,
      readOnly: p.values.ro === true,
      insecure,
      allow,
      alg: p.values.a as string | undefined,
      certDir: p.values.certs as string | undefined,
      trace: p.values.D === true || traceEnabled(),
      frameTimeoutMs: bounds.frameTimeoutMs,
      ...loopShares(bounds.maxConns),
      shared: threads > 1,
    };
    let workers: Worker[] = [];
    let status = 0;
    const told: Promise<void>[] = [];
    let loop: Loop | undefined;
    const stop = () => {
      loop?.close();
      for (const w of workers) {
        if (stopped.has(w)) continue;
        told.push(new Promise<void>((r) => stopped.set(w, r)));
        w.postMessage({ stop: true });
      }
    };
    const bind = async (): Promise<Loop> => {
      if (threads > 1) checkPortFree(addr);
      // This thread's loop binds first, so the others take the port it was given.
      const first = loop = await startLoop(job);
      try {
        workers = await startWorkers(
          threads - 1,
          { ...job, addr: withBoundPort(addr, first.addr) },
          (msg) => {
            console.error(`listen: ${msg}`);
            status = 1;
            stop();
          },
        );
      } catch (e) {
        first.close();
        await first.done;
        throw e;
      }
      return first;
    };
    loop = threads > 1 ? await withPortLock(addr, bind) : await bind();
    if (insecure) warnInsecure("listen");
    console.log(`listening on ${loop.addr}`);
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    await loop.done;
    await stopWorkers(workers, told);
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    console.error("listen: stopped");
    // Ctrl-C ends the process without waiting for idle clients.
    return status;
  } catch (e) {
    return fail("listen", e);
  }
}
