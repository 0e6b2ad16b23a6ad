/**
 * One serving loop of `ferry listen`: announce on the address, then serve
 * the host directory on every connection the listener yields. The command
 * runs one loop on its own thread and, to use more cores, more loops in
 * workers started from this module; every loop is this same code, so each
 * authenticates its peers (mutual TLS, the allow list, revocation from the
 * watched credentials), counts its connections against the one cap they
 * share, and serves through {@link serve} with its bounds. Loops share the
 * port (SO_REUSEPORT) and the kernel spreads connections over them.
 *
 * @module
 */

import { announceStyx } from "../lib/net/connect.ts";
import { HostTree, WRITE_SLOTS } from "../lib/fs/host.ts";
import { ConnectionLimit, serve } from "../lib/styx/server.ts";

/** What one loop needs: plain data, so that a worker can be given it. */
export interface LoopJob {
  /** The dial string to announce on (the port already chosen when loops share it). */
  addr: string;
  dir: string;
  readOnly: boolean;
  insecure: boolean;
  allow?: string[];
  alg?: string;
  certDir?: string;
  trace: boolean;
  frameTimeoutMs?: number;
  /** The cap on connections served at once by all loops, and the memory they count in. */
  maxConns: number;
  conns: SharedArrayBuffer;
  /** The host trees' shared write counters. */
  writes: SharedArrayBuffer;
  /** True when other loops share the port; `channel` then carries renames between them. */
  shared: boolean;
  channel: string;
}

/** Shared memory and a channel name for the loops of one listener. */
export function loopShares(
  maxConns: number,
): Pick<LoopJob, "maxConns" | "conns" | "writes" | "channel"> {
  return {
    maxConns,
    conns: new SharedArrayBuffer(4),
    writes: new SharedArrayBuffer(4 * WRITE_SLOTS),
    channel: `ferry-listen-${crypto.randomUUID()}`,
  };
}

/** A running loop. */
export interface Loop {
  /** The address bound, as a dial string. */
  addr: string;
  /** Stop accepting; sessions under way go on. */
  close(): void;
  /** Resolves once the listener has stopped. */
  done: Promise<void>;
}

/** Announce and serve as `job` says; resolves once listening. */
export async function startLoop(job: LoopJob): Promise<Loop> {
  // Renames made through one loop's tree reach the nodes of the others.
  const channel = job.shared ? new BroadcastChannel(job.channel) : null;
  const tree = new HostTree(job.dir, {
    readOnly: job.readOnly,
    siblings: {
      writes: new Int32Array(job.writes),
      onRename: channel ? (from, to) => channel.postMessage({ from, to }) : undefined,
    },
  });
  if (channel) {
    channel.onmessage = (e: MessageEvent<{ from: string[]; to: string[] }>) =>
      tree.renamed(e.data.from, e.data.to);
  }
  let listener;
  try {
    listener = await announceStyx(job.addr, {
      insecure: job.insecure,
      allow: job.allow,
      alg: job.alg,
      certDir: job.certDir,
      reusePort: job.shared,
    });
  } catch (e) {
    channel?.close();
    throw e;
  }
  const connections = new ConnectionLimit(job.maxConns, { shared: job.conns });
  const opts = { trace: job.trace, connections, frameTimeoutMs: job.frameTimeoutMs };
  const done = (async () => {
    for await (const conn of listener) {
      serve(conn, tree, opts).catch((e) =>
        console.error(`listen: ${conn.peer.addr}: ${(e as Error).message}`)
      );
    }
    channel?.close();
  })();
  return { addr: listener.addr, close: () => listener.close(), done };
}

/** Messages between `ferry listen` and a worker running a loop. */
export type ToWorker = { start: LoopJob } | { stop: true };
/** A worker's answers: listening, failed to start, or stopped. */
export type FromWorker = { ready: string } | { failed: string } | { stopped: true };

// In a worker started from this module: run one loop as told.
if (
  import.meta.main &&
  typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined"
) {
  // The worker's global scope, typed as what this module uses of it.
  const scope = self as unknown as {
    postMessage(m: FromWorker): void;
    onmessage: (e: MessageEvent<ToWorker>) => void;
  };
  const post = (m: FromWorker) => scope.postMessage(m);
  let loop: Loop | undefined;
  scope.onmessage = async (e: MessageEvent<ToWorker>) => {
    if ("start" in e.data) {
      try {
        loop = await startLoop(e.data.start);
      } catch (err) {
        post({ failed: (err as Error).message });
        return;
      }
      post({ ready: loop.addr });
      await loop.done;
      post({ stopped: true });
    } else {
      loop?.close();
    }
  };
}
