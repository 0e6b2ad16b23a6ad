/**
 * Dial and announce through a namespace, as Inferno's dial(2) does: ask
 * `/net/cs` where an address lives, open the protocol's clone file, write
 * `connect` or `announce` to the ctl it gives, and use the conversation's
 * data file as the byte stream. Nothing here touches a socket: whatever
 * answers at the namespace's /net carries the traffic, so after
 * `mount 'tcp!remote!8000' /net` the same calls go out through the remote.
 *
 * - {@link dial}: a {@link Conn} to an address.
 * - {@link announce}, {@link listen}, {@link accept}: the three steps of
 *   serving; {@link announceListener} wraps them as a {@link Listener}.
 * - {@link dialStyxVia}, {@link announceStyxVia}: Styx on top, plain under
 *   -A or with mutual TLS run end to end over the tunnelled stream (so the
 *   identity checked is the far end's, never the relay's).
 *
 * The Conn over a data file keeps several reads in flight and lets several
 * writes be outstanding at once (each a whole iounit), so a tunnel through a
 * remote /net is not limited to one round trip per chunk. Small writes made
 * while Twrites are in flight (TLS records, say) are gathered into one
 * Twrite, sent as soon as one in flight is answered.
 *
 * @example
 * ```ts
 * import { Namespace } from "../ns/namespace.ts";
 * import { MemTree } from "../fs/memory.ts";
 * import { NetDevice } from "../dev/net/device.ts";
 * import { announce, accept, dial, listen } from "./nsdial.ts";
 * const mem = new MemTree();
 * await mem.mkdirp("/net");
 * const ns = new Namespace(mem, { caller: { user: "glenda" } });
 * const dev = new NetDevice();
 * await ns.mount(dev.tree(), "/net");
 * const ann = await announce(ns, "tcp!127.0.0.1!0");
 * const port = ann.addr.split("!")[1];
 * const [call, out] = await Promise.all([listen(ns, ann), dial(ns, `tcp!127.0.0.1!${port}`)]);
 * const inn = await accept(ns, call);
 * await out.write(new TextEncoder().encode("hi"));
 * if (new TextDecoder().decode((await inn.read())!) !== "hi") throw new Error("lost");
 * out.close(); inn.close(); await ann.close(); dev.closeAll(); await ns.close();
 * ```
 *
 * @module
 */

import type { OpenFile, OpOptions, Tree } from "../fs/tree.ts";
import type { Credentials, CredentialWatch } from "../auth/link.ts";
import { RemoteTree, StyxClient } from "../styx/client.ts";
import type { Conn, Listener, Peer } from "../transport/conn.ts";
import { Ename, ORDWR, OREAD, StyxError } from "../styx/types.ts";
import { parseDialString } from "./dial.ts";
import { handshakeFailed, SPEAKS_PLAIN, speaksPlainStyx, watchForTls } from "./mismatch.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What dialing needs of a namespace: opening files by path. */
export interface NetNamespace {
  /** Open `path` with 9P `mode`. */
  open(path: string, mode: number, opts?: OpOptions): Promise<OpenFile>;
}

/** Options for {@link dial}, {@link announce} and friends. */
export interface NsDialOptions {
  /** Aborts a dial, announce or a waiting listen. */
  signal?: AbortSignal;
  /** Where the network is mounted (default "/net"). */
  netRoot?: string;
  /**
   * Most reads and writes kept in flight on a data file (default 16).
   * Reads start at 4 in flight and go deeper while replies come back full.
   * The stream stays in order only if the server answers one data file's
   * requests in the order they came (Ferry's /net does); give 1 for a
   * server that may not.
   */
  window?: number;
}

/** One translation from cs: the clone file to open and the address for its ctl. */
export interface CsAnswer {
  /** e.g. "/net/tcp/clone". */
  clone: string;
  /** e.g. "10.0.0.1!80" or "*!8000". */
  addr: string;
}

/**
 * A write smaller than this, made while GATHER_BUSY Twrites are in flight,
 * is gathered with the writes after it into one Twrite. TLS over a tunnel
 * writes a few records at a time (tens of KiB), which would otherwise cost
 * a Twrite, an Rwrite and a relay write each.
 */
const GATHER_MAX = 64 * 1024;
/** Twrites in flight from which small writes are gathered; below it they go at once. */
const GATHER_BUSY = 2;

function isNotFound(e: unknown): boolean {
  return e instanceof Error && e.message === Ename.notFound;
}

async function readSmall(f: OpenFile, opts?: OpOptions): Promise<string> {
  return dec.decode(await f.read(0n, 256, opts)).trim();
}

async function readFileText(ns: NetNamespace, path: string, opts?: OpOptions): Promise<string> {
  const f = await ns.open(path, OREAD, opts);
  try {
    return await readSmall(f, opts);
  } finally {
    // Nothing waits on the clunk.
    f.close().catch(() => {});
  }
}

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/"));
}

function parseAnswer(line: string, query: string): CsAnswer {
  const sp = line.indexOf(" ");
  if (sp < 0) throw new Error(`cs gave a malformed answer '${line}' for '${query}'`);
  return { clone: line.slice(0, sp), addr: line.slice(sp + 1).trim() };
}

/**
 * The answers of `ROOT/cs` for `addr`, read one at a time as they are
 * wanted (a dial that succeeds with the first never asks for the rest).
 * When the namespace has no cs, the address is used as written with
 * `ROOT/tcp/clone`. Throws an Error naming the address when it cannot be
 * translated.
 */
export async function* csAnswers(
  ns: NetNamespace,
  addr: string,
  opts: NsDialOptions = {},
): AsyncGenerator<CsAnswer> {
  const root = opts.netRoot ?? "/net";
  const a = parseDialString(addr, { net: "tcp" });
  const query = `${a.net}!${a.host}!${a.port}`;
  let cs: OpenFile;
  try {
    cs = await ns.open(`${root}/cs`, ORDWR, opts);
  } catch (e) {
    if (!isNotFound(e)) throw e;
    yield { clone: `${root}/${a.net}/clone`, addr: `${a.host}!${a.port}` };
    return;
  }
  try {
    await cs.write(0n, enc.encode(query), opts);
    for (let n = 0; n < 64; n++) {
      const line = dec.decode(await cs.read(0n, 1024, opts)).trim();
      if (line === "") {
        if (n === 0) throw new Error(`cs has no translation for '${query}'`);
        return;
      }
      yield parseAnswer(line, query);
    }
  } finally {
    cs.close().catch(() => {});
  }
}

/** All of cs's answers for `addr` (see {@link csAnswers}). */
export async function csQuery(
  ns: NetNamespace,
  addr: string,
  opts: NsDialOptions = {},
): Promise<CsAnswer[]> {
  const out: CsAnswer[] = [];
  for await (const a of csAnswers(ns, addr, opts)) out.push(a);
  return out;
}

/**
 * A {@link Conn} over a conversation's data file. The ctl file is held open
 * for as long as the Conn is, and closing the Conn hangs the conversation up.
 */
export class FileConn implements Conn {
  readonly closed: Promise<void>;
  readonly peer: Peer;
  readonly local: string;
  /** The conversation directory, e.g. "/net/tcp/4". */
  readonly dir: string;
  #resolveClosed!: () => void;
  #isClosed = false;
  #eof = false;
  #reads: Promise<Uint8Array>[] = [];
  /** What readInto has not yet copied out of the latest reply, and that reply whole. */
  #rest: Uint8Array | null = null;
  #restWhole: Uint8Array | null = null;
  #writes = new Set<Promise<unknown>>();
  #writeErr: unknown = null;
  /** Small writes gathered while Twrites are in flight (see write), and how many bytes. */
  #gather: Uint8Array | null = null;
  #gathered = 0;
  /** A gathering buffer whose Twrite was answered, for the next gathering. */
  #spare: Uint8Array | null = null;
  #abort = new AbortController();
  #off = 0n;
  #woff = 0n;
  readonly #window: number;
  /** Reads kept in flight now: grows up to #window while replies come back full. */
  #depth: number;
  readonly #size: number;

  /**
   * Wrap the open `data` file of conversation `info.dir`, holding `ctl`;
   * `info.remote` and `info.local` are "addr!port".
   */
  constructor(
    readonly data: OpenFile,
    readonly ctl: OpenFile,
    info: { dir: string; remote: string; local: string; window?: number },
  ) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.dir = info.dir;
    const net = info.dir.split("/").at(-2) ?? "tcp";
    this.peer = { addr: `${net}!${info.remote}`, authenticated: false };
    this.local = `${net}!${info.local}`;
    this.#window = Math.max(1, info.window ?? 16);
    this.#depth = Math.min(4, this.#window);
    this.#size = data.iounit > 0 ? data.iounit : 256 * 1024;
  }

  #issueRead(): void {
    const p = this.data.read(this.#off, this.#size, { signal: this.#abort.signal });
    p.catch(() => {}); // observed when it reaches the head of the queue
    this.#off += BigInt(this.#size);
    this.#reads.push(p);
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#rest) {
      const b = this.#rest;
      this.#rest = this.#restWhole = null;
      return b;
    }
    return await this.#next();
  }

  /**
   * Copy at most `buf.length` bytes of the stream into `buf`: the count, or
   * null at end of stream. Each reply's buffer is given back to the Styx
   * client once copied out, so a long stream reuses a few buffers instead
   * of allocating one per reply.
   */
  async readInto(buf: Uint8Array): Promise<number | null> {
    if (!this.#rest) {
      const b = await this.#next();
      if (b === null) return null;
      this.#rest = this.#restWhole = b;
    }
    const rest = this.#rest;
    const n = Math.min(buf.length, rest.length);
    buf.set(n === rest.length ? rest : rest.subarray(0, n));
    if (n < rest.length) this.#rest = rest.subarray(n);
    else {
      this.data.release?.(this.#restWhole!);
      this.#rest = this.#restWhole = null;
    }
    return n;
  }

  async #next(): Promise<Uint8Array | null> {
    if (this.#isClosed || this.#eof) return null;
    while (this.#reads.length < this.#depth) this.#issueRead();
    const head = this.#reads.shift()!;
    let b: Uint8Array;
    try {
      b = await head;
    } catch {
      b = new Uint8Array(0);
    }
    if (b.length === 0) {
      this.#eof = true;
      this.close();
      return null;
    }
    // A full reply means a bulk stream: the far side keeps the relay busy
    // only with more reads waiting there (a short-lived or interactive
    // connection keeps few reads to flush at hangup).
    if (b.length === this.#size && this.#depth < this.#window) {
      this.#depth = Math.min(this.#window, this.#depth * 2);
    }
    return b;
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.#writeErr) throw this.#writeErr;
    if (this.#isClosed) throw new StyxError(Ename.hungup);
    // Once the stream is being read, top the reads up now: the Treads
    // then leave with this Twrite in one transport write, instead of in
    // a write of their own when the next read() comes (a request and its
    // answer cost one write each way, not two).
    if (this.#reads.length > 0 && !this.#eof) {
      while (this.#reads.length < this.#depth) this.#issueRead();
    }
    if (data.length < GATHER_MAX && (this.#gathered > 0 || this.#writes.size >= GATHER_BUSY)) {
      // Twrites are in flight: gather this small write with those after
      // it into one Twrite, sent when one of them is answered (or the
      // gathered piece is full), rather than a Twrite each.
      let o = 0;
      while (o < data.length) {
        if (this.#gather === null) {
          this.#gather = this.#spare ?? new Uint8Array(this.#size);
          this.#spare = null;
        }
        const k = Math.min(this.#size - this.#gathered, data.length - o);
        this.#gather.set(data.subarray(o, o + k), this.#gathered);
        this.#gathered += k;
        o += k;
        if (this.#gathered === this.#size) {
          if (this.#writes.size >= this.#window) await this.#room();
          this.#sendGathered();
        }
      }
      if (this.#writes.size < GATHER_BUSY) this.#sendGathered();
      if (this.#writeErr) throw this.#writeErr;
      return;
    }
    // The window is checked before awaiting, so that writes made together
    // see each other's Twrites in flight (and gather) at once.
    if (this.#gathered > 0) {
      if (this.#writes.size >= this.#window) await this.#room();
      this.#sendGathered();
    }
    for (let o = 0; o < data.length; o += this.#size) {
      if (this.#writes.size >= this.#window) await this.#room();
      this.#twrite(data.subarray(o, o + this.#size));
    }
    if (this.#writeErr) throw this.#writeErr;
  }

  /** Wait until fewer than the window's Twrites are in flight; throws a write's failure. */
  async #room(): Promise<void> {
    while (this.#writes.size >= this.#window) {
      await Promise.race(this.#writes);
      if (this.#writeErr) throw this.#writeErr;
    }
    if (this.#writeErr) throw this.#writeErr;
  }

  /** Send the gathered bytes, if any, as one Twrite (the window has room or will wait). */
  #sendGathered(): void {
    if (this.#gathered === 0) return;
    const buf = this.#gather!;
    // The buffer goes with its Twrite, and is gathered into again only
    // once that is answered: nothing below may still be reading it then.
    this.#twrite(buf.subarray(0, this.#gathered), buf);
    this.#gather = null;
    this.#gathered = 0;
  }

  /**
   * One Twrite of `piece` at the stream's write offset, in flight until
   * answered; `spare`, if given, may be gathered into after that.
   */
  #twrite(piece: Uint8Array, spare?: Uint8Array): void {
    // One promise per Twrite (not a then, catch and finally chain): a
    // stream of small request and answer exchanges makes many.
    const done = (err: unknown) => {
      this.#writeErr ??= err;
      this.#writes.delete(p);
      if (spare) this.#spare = spare;
      // One fewer in flight: what was gathered meanwhile goes now.
      if (this.#writes.size < GATHER_BUSY && !this.#writeErr) this.#sendGathered();
    };
    const p: Promise<void> = this.data.write(this.#woff, piece).then(
      (n) =>
        done(
          n === piece.length ? null : new StyxError(`short write: ${n} of ${piece.length} bytes`),
        ),
      done,
    );
    this.#woff += BigInt(piece.length);
    this.#writes.add(p);
  }

  /** Resolves once every write so far has reached the far end's socket. */
  async flush(): Promise<void> {
    this.#sendGathered();
    while (this.#writes.size > 0) await Promise.allSettled([...this.#writes]);
    if (this.#writeErr) throw this.#writeErr;
  }

  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    if (!this.#writeErr) this.#sendGathered();
    (async () => {
      while (this.#writes.size > 0) await Promise.allSettled([...this.#writes]);
      this.#abort.abort();
      await Promise.allSettled([this.data.close(), this.ctl.close()]);
    })().finally(() => this.#resolveClosed());
  }
}

async function openConv(
  ns: NetNamespace,
  clone: string,
  opts: NsDialOptions,
): Promise<OpenConv> {
  const ctl = await ns.open(clone, ORDWR, opts);
  try {
    const n = await readSmall(ctl, opts);
    if (!/^[0-9]+$/.test(n)) throw new Error(`'${clone}' gave '${n}', not a conversation number`);
    return { ctl, dir: `${dirOf(clone)}/${n}` };
  } catch (e) {
    await ctl.close().catch(() => {});
    throw e;
  }
}

/** The Conn of an accepted call: its data file, and whom it came from. */
async function convConn(
  ns: NetNamespace,
  ctl: OpenFile,
  dir: string,
  opts: NsDialOptions,
): Promise<FileConn> {
  const [data, remote, local] = await Promise.all([
    ns.open(`${dir}/data`, ORDWR, opts),
    readFileText(ns, `${dir}/remote`, opts).catch(() => "unknown"),
    readFileText(ns, `${dir}/local`, opts).catch(() => "unknown"),
  ]);
  return new FileConn(data, ctl, { dir, remote, local, window: opts.window });
}

/** A conversation opened for dialing: its ctl and directory. */
interface OpenConv {
  ctl: OpenFile;
  dir: string;
}

/** Close whatever `p` opened, once it has; never rejects. */
async function closeWhenOpen(p: Promise<OpenFile>): Promise<void> {
  try {
    await (await p).close();
  } catch { /* never opened, or already gone */ }
}

/**
 * Write `connect ADDR` to the conversation's ctl and make its Conn. The
 * data and local files are opened while the connect runs (ip(3) lets them
 * be opened in any state), so only reading local follows it.
 */
async function connectConv(
  ns: NetNamespace,
  conv: OpenConv,
  addr: string,
  opts: NsDialOptions,
): Promise<FileConn> {
  const dataP = ns.open(`${conv.dir}/data`, ORDWR, opts);
  const localP = ns.open(`${conv.dir}/local`, OREAD, opts);
  dataP.catch(() => {}); // observed below
  localP.catch(() => {});
  let data: OpenFile;
  try {
    await conv.ctl.write(0n, enc.encode(`connect ${addr}`), opts);
    data = await dataP;
  } catch (e) {
    await Promise.all([closeWhenOpen(dataP), closeWhenOpen(localP)]);
    throw e;
  }
  let local = "unknown";
  try {
    const f = await localP;
    try {
      local = await readSmall(f, opts);
    } finally {
      f.close().catch(() => {}); // nothing waits on the clunk
    }
  } catch { /* left "unknown" */ }
  return new FileConn(data, conv.ctl, { dir: conv.dir, remote: addr, local, window: opts.window });
}

/**
 * Dial `addr` ("tcp!host!port", "host!port", "net!host!service") through the
 * namespace's /net. Tries each address cs gives, in order. Throws an Error
 * "cannot dial 'ADDR': REASON" with the last reason when none answers.
 *
 * While cs is asked, the clone file its answer will most likely name (the
 * network's own, ROOT/NET/clone) is opened alongside, so the two exchanges
 * overlap; should cs name another clone file, or none, that conversation is
 * closed unused.
 */
export async function dial(
  ns: NetNamespace,
  addr: string,
  opts: NsDialOptions = {},
): Promise<Conn> {
  let last: unknown;
  let answers: AsyncGenerator<CsAnswer>;
  try {
    answers = csAnswers(ns, addr, opts);
  } catch (e) {
    throw new Error(`cannot dial '${addr}': ${(e as Error).message}`);
  }
  let early: { clone: string; conv: Promise<OpenConv | null> } | null = null;
  try {
    const d = parseDialString(addr, { net: "tcp" });
    const clone = `${opts.netRoot ?? "/net"}/${d.net === "net" ? "tcp" : d.net}/clone`;
    early = { clone, conv: openConv(ns, clone, opts).catch(() => null) };
  } catch { /* cs reports a bad address */ }
  /** The conversation opened early when cs named its clone file, else null (closed). */
  const takeEarly = async (clone: string): Promise<OpenConv | null> => {
    if (!early) return null;
    const e = early;
    early = null;
    const conv = await e.conv;
    if (conv && clone === e.clone) return conv;
    await conv?.ctl.close().catch(() => {});
    return null;
  };
  try {
    for (;;) {
      let next: IteratorResult<CsAnswer>;
      try {
        next = await answers.next();
      } catch (e) {
        last ??= e;
        break;
      }
      if (next.done) break;
      const a = next.value;
      let conv: OpenConv | undefined;
      try {
        conv = (await takeEarly(a.clone)) ?? await openConv(ns, a.clone, opts);
        const c = await connectConv(ns, conv, a.addr, opts);
        await answers.return(undefined);
        return c;
      } catch (e) {
        last = e;
        await conv?.ctl.close().catch(() => {});
        if (opts.signal?.aborted) break;
      }
    }
  } finally {
    await takeEarly("");
  }
  await answers.return(undefined).catch(() => {});
  throw new Error(`cannot dial '${addr}': ${(last as Error)?.message ?? "no address"}`);
}

/** An announced address: listen on it with {@link listen}. */
export interface Announcement {
  /** The conversation directory, e.g. "/net/tcp/2". */
  readonly dir: string;
  /** The address actually announced, "addr!port" (the port chosen when 0 was asked). */
  readonly addr: string;
  /** The held ctl file; closing it ends the announcement. */
  readonly ctl: OpenFile;
  /** End the announcement; waiting listens fail. */
  close(): Promise<void>;
}

/** Announce `addr` ("tcp!*!8000"; port 0 picks one) through the namespace's /net. */
export async function announce(
  ns: NetNamespace,
  addr: string,
  opts: NsDialOptions = {},
): Promise<Announcement> {
  const fail = (e: unknown) => new Error(`cannot announce '${addr}': ${(e as Error).message}`);
  let answers: CsAnswer[];
  try {
    answers = await csQuery(ns, addr, opts);
  } catch (e) {
    throw fail(e);
  }
  const a = answers[0]!;
  let conv: { ctl: OpenFile; dir: string };
  try {
    conv = await openConv(ns, a.clone, opts);
  } catch (e) {
    throw fail(e);
  }
  try {
    await conv.ctl.write(0n, enc.encode(`announce ${a.addr}`), opts);
    const local = await readFileText(ns, `${conv.dir}/local`, opts);
    let closed = false;
    return {
      dir: conv.dir,
      addr: local,
      ctl: conv.ctl,
      close: async () => {
        if (closed) return;
        closed = true;
        await conv.ctl.write(0n, enc.encode("hangup")).catch(() => {});
        await conv.ctl.close().catch(() => {});
      },
    };
  } catch (e) {
    await conv.ctl.close().catch(() => {});
    throw fail(e);
  }
}

/** An incoming call: accept it with {@link accept}. */
export interface Call {
  /** The new conversation's directory. */
  readonly dir: string;
  /** Its ctl (from the listen file). */
  readonly ctl: OpenFile;
}

/** Wait for the next call to `ann` (opens its listen file). */
export async function listen(
  ns: NetNamespace,
  ann: Announcement,
  opts: NsDialOptions = {},
): Promise<Call> {
  const ctl = await ns.open(`${ann.dir}/listen`, ORDWR, opts);
  try {
    const n = await readSmall(ctl, opts);
    if (!/^[0-9]+$/.test(n)) throw new Error(`'${ann.dir}/listen' gave '${n}'`);
    return { dir: `${dirOf(ann.dir)}/${n}`, ctl };
  } catch (e) {
    await ctl.close().catch(() => {});
    throw e;
  }
}

/** Accept `call`: its data file as a Conn. */
export async function accept(
  ns: NetNamespace,
  call: Call,
  opts: NsDialOptions = {},
): Promise<Conn> {
  try {
    return await convConn(ns, call.ctl, call.dir, opts);
  } catch (e) {
    await call.ctl.close().catch(() => {});
    throw e;
  }
}

/**
 * Announce `addr` and yield every accepted call as a Conn. Closing the
 * listener ends the announcement. A transient failure of one call does not
 * stop it; losing the network (the /net it announced through vanished)
 * ends the iteration.
 */
export async function announceListener(
  ns: NetNamespace,
  addr: string,
  opts: NsDialOptions = {},
): Promise<Listener> {
  const ann = await announce(ns, addr, opts);
  const stop = new AbortController();
  const net = ann.dir.split("/").at(-2) ?? "tcp";
  return {
    addr: `${net}!${ann.addr}`,
    close() {
      if (stop.signal.aborted) return;
      stop.abort();
      ann.close();
    },
    async *[Symbol.asyncIterator]() {
      const o = { ...opts, signal: stop.signal };
      try {
        while (!stop.signal.aborted) {
          let call: Call;
          try {
            call = await listen(ns, ann, o);
          } catch {
            return;
          }
          try {
            yield await accept(ns, call, o);
          } catch {
            continue;
          }
        }
      } finally {
        stop.abort();
        await ann.close();
      }
    },
  };
}

/** Options for {@link dialStyxVia}. */
export interface StyxViaOptions extends NsDialOptions {
  /** -A: no authentication, no encryption. */
  insecure: boolean;
  /** User name sent at attach (the server replaces it with the verified identity under TLS). */
  user?: string;
  /** Directory holding this end's credentials (default $FERRY_CERTS, else ~/.ferry/certs). */
  certDir?: string;
  /** Credentials (or a watch of them) to use instead of loading them from `certDir`. */
  creds?: Credentials | CredentialWatch;
  /** The server's node name when it differs from the dial host. */
  peer?: string;
  /** Inferno -C algorithm name. */
  alg?: string;
  /** Print Styx messages on stderr. */
  trace?: boolean;
}

/** A Styx client dialed through a namespace. */
export interface DialedVia {
  /** The remote tree, ready to mount. */
  tree: Tree;
  /** The client under it. */
  client: StyxClient;
  /** The far end's verified identity under TLS. */
  peerIdentity?: string;
  /** Hang up. */
  close(): void;
}

/**
 * A handle on the one credentials source for `opts`: the shared watch of
 * the directory the given credentials came from, or of `certDir`. Close it
 * when done.
 */
async function credsFor(
  opts: { creds?: Credentials | CredentialWatch; certDir?: string },
  onError?: (e: Error) => void,
): Promise<CredentialWatch> {
  const link = await import("../auth/link.ts");
  if (opts.creds) return await link.followCredentials(opts.creds, { onError });
  return await link.watchCredentials(opts.certDir ?? link.defaultCertsDir(), undefined, {
    onError,
  });
}

/**
 * Dial a Styx server at `addr` through the namespace's /net and start a
 * client on the stream; without `insecure`, mutual TLS runs end to end over
 * the tunnelled stream, checking that the far end is the node `peer` (by
 * default the dial host).
 */
export async function dialStyxVia(
  ns: NetNamespace,
  addr: string,
  opts: StyxViaOptions,
): Promise<DialedVia> {
  const a = parseDialString(addr, { net: "tcp", service: "styx" });
  const target = `${a.net}!${a.host}!${a.port}`;
  let conn = await dial(ns, target, opts);
  try {
    if (!opts.insecure) {
      const creds = await credsFor(opts);
      const { tlsWrapClient } = await import("../transport/tls.ts");
      try {
        conn = await tlsWrapClient(conn, { creds, peer: opts.peer ?? a.host, alg: opts.alg });
      } catch (e) {
        // A listener started with -A hangs up on a ClientHello: ask it in plain Styx.
        if (
          handshakeFailed(e) &&
          await speaksPlainStyx(await dial(ns, target, opts)).catch(() => false)
        ) {
          throw new Error(`cannot dial '${addr}': ${SPEAKS_PLAIN}`);
        }
        throw new Error(`cannot dial '${addr}': ${(e as Error).message}`);
      } finally {
        creds.close();
      }
    } else {
      conn = watchForTls(conn);
    }
    const client = await StyxClient.connect(conn, { trace: opts.trace, signal: opts.signal });
    return {
      tree: new RemoteTree(client, opts.user !== undefined ? { uname: opts.user } : {}),
      client,
      peerIdentity: conn.peer.identity,
      close: () => void client.close(),
    };
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** Options for {@link announceStyxVia}. */
export interface AnnounceViaOptions extends NsDialOptions {
  /** -A: no authentication, no encryption. */
  insecure: boolean;
  /** Directory holding this end's credentials. */
  certDir?: string;
  /**
   * Credentials (or a watch of them) to use instead of loading them from
   * `certDir`; either way the listener follows their directory's watch.
   */
  creds?: Credentials | CredentialWatch;
  /** Users and "group:NAME" entries allowed to connect (TLS only). */
  allow?: string[];
  /** Inferno algorithm name. */
  alg?: string;
  /** Told about refused TLS peers (default: a line on stderr). */
  onRefused?: (addr: string, reason: string) => void;
}

/**
 * Announce `addr` through the namespace's /net and yield Styx-ready
 * connections: plain under `insecure`, otherwise only those whose mutual
 * TLS handshake (run over the tunnelled stream) verified the caller.
 * Handshakes run side by side, so a slow or hostile caller holds up no one.
 * The listener holds its credentials directory's shared watch: new
 * handshakes use a renewed certificate, and open sessions end once the
 * peer's certificate is revoked (see {@link tlsWrapServer}).
 */
export async function announceStyxVia(
  ns: NetNamespace,
  addr: string,
  opts: AnnounceViaOptions,
): Promise<Listener> {
  const a = parseDialString(addr, { net: "tcp", service: "styx" });
  const creds = opts.insecure ? undefined : await credsFor(
    opts,
    (e) => console.error(`listen: keeping the current credentials: ${e.message}`),
  );
  let raw: Listener;
  try {
    raw = await announceListener(ns, `${a.net}!${a.host}!${a.port}`, opts);
  } catch (e) {
    creds?.close();
    throw e;
  }
  if (!creds) return raw;
  const { tlsWrapServer } = await import("../transport/tls.ts");
  const ready: Conn[] = [];
  let wake: (() => void) | null = null;
  let done = false;
  const poke = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  (async () => {
    for await (const c of raw) {
      tlsWrapServer(c, {
        creds,
        allow: opts.allow,
        alg: opts.alg,
        onRefused: opts.onRefused,
      }).then((t) => {
        if (done) t.close();
        else {
          ready.push(t);
          poke();
        }
      }, () => {/* refused: reported through onRefused */});
    }
  })().finally(() => {
    done = true;
    creds.close();
    poke();
  });
  return {
    addr: raw.addr,
    close() {
      done = true;
      raw.close();
      for (const c of ready.splice(0)) c.close();
      poke();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const c = ready.shift();
        if (c) {
          yield c;
          continue;
        }
        if (done) return;
        await new Promise<void>((r) => (wake = r));
      }
    },
  };
}
