/**
 * Dial and announce Styx services by dial string: plain TCP under -A,
 * mutually authenticated TLS otherwise. Everything in Ferry that opens a
 * network connection for Styx (`ferry 9p`, `ferry listen`, the shell's
 * `mount` and `listen`) comes through here.
 *
 * @module
 */

import type { Conn, Listener } from "../transport/conn.ts";
import { tcpDial, tcpListen } from "../transport/tcp.ts";
import { listenHost, parseDialString } from "./dial.ts";
import { RemoteTree, StyxClient } from "../styx/client.ts";
import {
  type Credentials,
  type CredentialWatch,
  defaultCertsDir,
  watchCredentials,
} from "../auth/link.ts";
import { tlsDial } from "../transport/tls_dial.ts";
import { after } from "../deadline.ts";
import type { Tree } from "../fs/tree.ts";
import { handshakeFailed, SPEAKS_PLAIN, speaksPlainStyx, watchForTls } from "./mismatch.ts";

/** How to reach a Styx service. */
export interface DialOptions {
  /** -A: no authentication, no encryption. */
  insecure: boolean;
  /** User name sent at attach (the server replaces it with the verified identity under TLS). */
  user?: string;
  /** Attach name (spec). */
  aname?: string;
  signal?: AbortSignal;
  /** Give up connecting after this long (default 10 s). */
  timeoutMs?: number;
  /** Directory holding this machine's credentials. */
  certDir?: string;
  /** Credentials to dial with, instead of those in `certDir`. */
  creds?: Credentials | CredentialWatch;
  /** Expected node name of the server when it differs from the dial host. */
  peer?: string;
  /** Inferno -C algorithm name, mapped onto TLS cipher choices. */
  alg?: string;
  /** Print Styx messages to stderr. */
  trace?: boolean;
}

/** A mounted remote tree and the means to hang it up. */
export interface Dialed {
  tree: Tree;
  client: StyxClient;
  /** The verified identity of the server, when authenticated. */
  peerIdentity?: string;
  close(): void;
}

/** `p`, or a rejection saying why it was given up (callers add what was being done). */
async function withTimeout<T extends { close(): void }>(
  p: Promise<T>,
  ms: number,
  signal?: AbortSignal,
): Promise<T> {
  let cancel: (() => void) | undefined;
  let timedOut = false;
  let onAbort: (() => void) | undefined;
  const fail = new Promise<never>((_, reject) => {
    cancel = after(ms, () => reject(new Error(`timed out after ${ms} ms`)));
    if (signal) {
      onAbort = () => {
        // A deadline given as a signal (AbortSignal.timeout) says so.
        const late = (signal.reason as Error | undefined)?.name === "TimeoutError";
        reject(new Error(late ? "timed out" : "interrupted"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
    }
  });
  // A connection that arrives after we gave up is closed, not leaked.
  p.then((c) => {
    if (timedOut) c.close();
  }, () => {});
  try {
    return await Promise.race([p, fail]);
  } catch (e) {
    timedOut = true;
    throw e;
  } finally {
    cancel?.();
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
}

/** Open a byte stream to `addr` (TLS unless `opts.insecure`). */
export async function dialConn(addr: string, opts: DialOptions): Promise<Conn> {
  const a = parseDialString(addr, { net: "tcp", service: "styx" });
  if (a.net !== "tcp") throw new Error(`cannot dial '${addr}': only tcp is supported`);
  const ms = opts.timeoutMs ?? 10_000;
  if (opts.insecure) {
    try {
      const c = await withTimeout(tcpDial(a.host, a.port), ms, opts.signal);
      return watchForTls(c);
    } catch (e) {
      throw new Error(`cannot dial '${addr}': ${(e as Error).message}`);
    }
  }
  // Unless given credentials, the directory's shared watch: a renewed
  // certificate and the latest CRL.
  const watch = opts.creds ? null : await watchCredentials(opts.certDir ?? defaultCertsDir());
  const creds = opts.creds ?? watch!;
  try {
    return await withTimeout(
      tlsDial(a.host, a.port, { creds, peer: opts.peer, alg: opts.alg }),
      ms,
      opts.signal,
    );
  } catch (e) {
    // A listener started with -A hangs up on a ClientHello: ask it in plain Styx.
    if (
      handshakeFailed(e) && await speaksPlainStyx(await tcpDial(a.host, a.port)).catch(() => false)
    ) {
      throw new Error(`cannot dial '${addr}': ${SPEAKS_PLAIN}`);
    }
    throw new Error(`cannot dial '${addr}': ${(e as Error).message}`);
  } finally {
    watch?.close();
  }
}

/** Dial `addr`, negotiate Styx and attach. */
export async function dialStyx(addr: string, opts: DialOptions): Promise<Dialed> {
  const conn = await dialConn(addr, opts);
  try {
    const client = await StyxClient.connect(conn, { trace: opts.trace, signal: opts.signal });
    const tree: Tree = new RemoteTree(client, { uname: opts.user });
    return {
      tree,
      client,
      peerIdentity: conn.peer.identity,
      close: () => client.close(),
    };
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** Options for {@link announceStyx}. */
export interface AnnounceOptions {
  insecure: boolean;
  certDir?: string;
  /** Users and `group:NAME` entries allowed to connect (TLS only). */
  allow?: string[];
  alg?: string;
  /**
   * Let other listeners that ask for it too share the port, each taking
   * some of the connections (SO_REUSEPORT): one per worker of a listener.
   */
  reusePort?: boolean;
}

/** Announce on `addr` ("tcp!*!8000") and yield connections (verified under TLS). */
export async function announceStyx(addr: string, opts: AnnounceOptions): Promise<Listener> {
  const a = parseDialString(addr, { net: "tcp", service: "styx" });
  if (a.net !== "tcp") throw new Error(`cannot announce '${addr}': only tcp is supported`);
  const host = listenHost(a);
  if (opts.insecure) {
    try {
      return tcpListen(host, a.port, { reusePort: opts.reusePort });
    } catch (e) {
      throw new Error(`cannot announce '${addr}': ${(e as Error).message}`);
    }
  }
  // Watched, so renewed certificates and a new CRL reach new handshakes
  // and open sessions without a restart.
  const dir = opts.certDir ?? defaultCertsDir();
  const w = await watchCredentials(dir, undefined, {
    onError: (e) => console.error(`listen: keeping the current credentials: ${e.message}`),
  });
  let l: Listener;
  try {
    // Loaded here: only a listener needs node:tls, and a dial does without it.
    const { tlsListen } = await import("../transport/tls.ts");
    l = await tlsListen(host, a.port, {
      creds: w,
      allow: opts.allow,
      alg: opts.alg,
      reusePort: opts.reusePort,
    });
  } catch (e) {
    w.close();
    throw new Error(`cannot announce '${addr}': ${(e as Error).message}`);
  }
  return {
    addr: l.addr,
    close() {
      w.close();
      l.close();
    },
    [Symbol.asyncIterator]: () => l[Symbol.asyncIterator](),
  };
}
