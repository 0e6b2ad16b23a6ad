/**
 * A remote tree that outlives its connection, as Plan 9's recover(4) and
 * aan(8) do for a mount: {@link RecoveringTree} owns the function that
 * dials the server. When the connection is lost it redials with backoff,
 * attaches again as the same user with the same attach name, and each
 * node and open file it handed out walks again (and opens again, with the
 * same mode less OTRUNC) from the new root on its next use. Offsets belong
 * to the caller in 9P, so a file opened before the loss reads on from
 * where its reader was.
 *
 * What is and is not recovered:
 * - While the server is unreachable, every operation fails at once with
 *   "'/n/files' is no longer connected (tcp!host!port: reason)".
 * - Requests in flight at the moment of loss fail with that error and are
 *   never sent again, reads included: a read of a stream file (a /net data
 *   file, /phone/events) is not idempotent, and a write may or may not
 *   have happened. The next call, once the server is back, goes to the
 *   reopened file.
 * - A file that no longer exists at its path (removed meanwhile, or an
 *   ORCLOSE file the server removed when the session ended) fails on its
 *   next use with "file does not exist: 'PATH' is gone ...", and a path
 *   that now names a different file (another qid path) fails too, instead
 *   of being read on from the old offset. An ORCLOSE file a killed server
 *   could not remove is opened again with ORCLOSE.
 * - An exclusive-use file (DMEXCL) is opened again only if nobody else
 *   opened it meanwhile; otherwise the server's refusal is the error.
 * - A directory is listed again from its start.
 *
 * @module
 */

import { ConnectionLostError, HangupError, type StyxClient } from "./client_conn.ts";
import type { RemoteFile, RemoteNode } from "./client_tree.ts";
import type {
  Caller,
  Created,
  Node,
  OpenFile,
  OpOptions,
  Tree,
  WalkOpenOptions,
  WalkResult,
} from "../fs/tree.ts";
import { type Dir, Ename, OTRUNC, type Qid, StyxError } from "./types.ts";

/** Options of {@link RecoveringTree.connect}. */
export interface RecoverOptions {
  /**
   * Make a new connection to the server, authenticated as before (it is
   * called again after every loss, so it must not reuse a dead transport).
   */
  dial: () => Promise<StyxClient>;
  /** User name sent at attach instead of the caller's. */
  uname?: string;
  /** The server's address for messages, as the user named it (default: as the transport reports it). */
  address?: string;
  /** Wait before the first redial (default 100 ms); doubled after each failure. */
  minDelayMs?: number;
  /** Longest wait between redials (default 3000 ms). */
  maxDelayMs?: number;
  /** Told when the connection is lost and when it is back. */
  onChange?: (event: RecoverEvent) => void;
}

/** What {@link RecoverOptions.onChange} is told. */
export interface RecoverEvent {
  state: "lost" | "recovered";
  /** The server's address. */
  address: string;
  /** Why it was lost (for "recovered", why it had been). */
  reason: string;
}

/** One attach: what it takes to attach again, and its root on the current connection. */
interface Attachment {
  uname: string;
  aname: string;
  /** The mount point, once mounted, for errors naming it. */
  label?: string;
  root: { gen: number; p: Promise<RemoteNode> } | null;
}

/** `names` walked from `base`, ".." climbing (never above the attach root). */
function joinNames(base: readonly string[], names: readonly string[]): string[] {
  const out = base.slice();
  for (const n of names) {
    if (n === "..") out.pop();
    else out.push(n);
  }
  return out;
}

function isNotFound(e: unknown): boolean {
  return e instanceof StyxError && e.message === Ename.notFound;
}

/**
 * A {@link Tree} served over a connection that is made again whenever it is
 * lost. See the module documentation for what is recovered.
 *
 * @example
 * ```ts ignore
 * const tree = await RecoveringTree.connect({
 *   dial: async () => StyxClient.connect(await tcpDial("127.0.0.1", 5640)),
 * });
 * await ns.mount(tree, "/n/files", { source: "tcp!127.0.0.1!5640" });
 * // ... later, when done with it:
 * await tree.close();
 * ```
 */
export class RecoveringTree implements Tree {
  readonly #opts: RecoverOptions;
  #client: StyxClient;
  #address: string;
  /** Counts connections: nodes opened on an older one must walk again. */
  #gen = 0;
  #down: { reason: string; last?: string } | null = null;
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #wake: (() => void) | undefined;

  private constructor(client: StyxClient, opts: RecoverOptions) {
    this.#opts = opts;
    this.#client = client;
    this.#address = opts.address ?? client.address;
    this.#watch(client);
  }

  /** Dial with `opts.dial` (a first failure rejects: nothing is retried yet). */
  static async connect(opts: RecoverOptions): Promise<RecoveringTree> {
    return new RecoveringTree(await opts.dial(), opts);
  }

  /** Always true: a namespace lists this tree's mounts with -r. */
  readonly recovers = true;

  /** The client of the current connection (a dead one while lost). */
  get client(): StyxClient {
    return this.#client;
  }

  /** How many times the connection has been made again. */
  get generation(): number {
    return this.#gen;
  }

  /**
   * While the connection is lost, "ADDRESS: reason; redialling", else
   * undefined. A namespace shows it in its listing (`ns`).
   */
  get lost(): string | undefined {
    return this.#down ? `${this.#address}: ${this.#reason()}` : undefined;
  }

  #reason(): string {
    const d = this.#down;
    if (d === null) return "";
    if (this.#closed) return `${d.reason}; closed`;
    return `${d.reason}; redialling${d.last ? ` (last try: ${d.last})` : ""}`;
  }

  /** Attach as `caller.user` (or the fixed uname), selecting `aname`. */
  async attach(caller: Caller, aname: string): Promise<RecoverNode> {
    const att: Attachment = { uname: this.#opts.uname ?? caller.user, aname, root: null };
    const gen = this.live(att);
    let root: RemoteNode;
    try {
      root = await this.rootOf(att, gen);
    } catch (e) {
      throw this.failed(e, att, gen);
    }
    return new RecoverNode(this, att, [], root, gen, false);
  }

  /**
   * The current connection's number, or the lost-mount error when there is
   * none.
   * @internal
   */
  live(att: Attachment): number {
    if (this.#closed) {
      throw new ConnectionLostError(
        att.label ?? this.#address,
        this.#address,
        "closed by this end",
      );
    }
    if (this.#down) throw this.#lostError(att);
    return this.#gen;
  }

  #lostError(att: Attachment): ConnectionLostError {
    return new ConnectionLostError(att.label ?? this.#address, this.#address, this.#reason());
  }

  /**
   * The root of `att` on connection `gen`: attached again (once) after a
   * reconnection. The attachment keeps it; walks start from it.
   * @internal
   */
  rootOf(att: Attachment, gen: number): Promise<RemoteNode> {
    if (att.root?.gen === gen) return att.root.p;
    const p = this.#client.attach(att.uname, att.aname);
    att.root = { gen, p };
    p.catch(() => {
      if (att.root?.p === p) att.root = null;
    });
    return p;
  }

  /**
   * `e`, or the lost-mount error when it means connection `gen` is gone
   * (which then starts redialling).
   * @internal
   */
  failed(e: unknown, att: Attachment, gen: number): unknown {
    if (e instanceof ConnectionLostError) return e;
    if (!(e instanceof HangupError) && !(gen === this.#gen && this.#client.hungup)) return e;
    if (gen === this.#gen) {
      this.#lose(e instanceof HangupError ? e.reason : (e as Error).message ?? String(e));
    }
    return this.#down ? this.#lostError(att) : e;
  }

  #watch(client: StyxClient): void {
    client.closed.then(() => {
      if (client !== this.#client || this.#closed) return;
      const f = client.failure;
      this.#lose(f instanceof HangupError ? f.reason : f?.message ?? "hung up");
    });
  }

  #lose(reason: string): void {
    if (this.#down || this.#closed) return;
    this.#down = { reason };
    this.#client.close().catch(() => {});
    this.#opts.onChange?.({ state: "lost", address: this.#address, reason });
    void this.#redial();
  }

  async #redial(): Promise<void> {
    const min = this.#opts.minDelayMs ?? 100;
    const max = Math.max(min, this.#opts.maxDelayMs ?? 3000);
    let delay = min;
    while (!this.#closed) {
      // A little jitter, so that many clients of one server do not redial in step.
      await this.#sleep(delay * (0.8 + Math.random() * 0.4));
      if (this.#closed) return;
      let c: StyxClient;
      try {
        c = await this.#opts.dial();
      } catch (e) {
        if (this.#down) this.#down.last = (e as Error).message ?? String(e);
        delay = Math.min(delay * 2, max);
        continue;
      }
      if (this.#closed) {
        await c.close();
        return;
      }
      const was = this.#down?.reason ?? "";
      this.#client = c;
      this.#address = this.#opts.address ?? c.address;
      this.#gen++;
      this.#down = null;
      this.#watch(c);
      this.#opts.onChange?.({ state: "recovered", address: this.#address, reason: was });
      return;
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
      const t = setTimeout(resolve, ms);
      this.#timer = t;
      // Redialling alone does not keep a process alive.
      Deno.unrefTimer(t);
    });
  }

  /** Stop redialling and hang up; every node and file then fails. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#wake?.();
    await this.#client.close();
  }
}

/**
 * A node of a {@link RecoveringTree}: its path from the attach root, and
 * the fid that answers for it on the current connection (walked again
 * after a reconnection).
 */
export class RecoverNode implements Node {
  readonly #tree: RecoveringTree;
  readonly #att: Attachment;
  readonly #names: readonly string[];
  /** False for an attach's root, which the attachment keeps. */
  readonly #owns: boolean;
  #node: RemoteNode;
  #gen: number;
  /** A walk again under way, and the connection it is on. */
  #reviving: { gen: number; p: Promise<RemoteNode> } | null = null;
  #qid: Qid;
  #closed = false;

  /** @internal */
  constructor(
    tree: RecoveringTree,
    att: Attachment,
    names: readonly string[],
    node: RemoteNode,
    gen: number,
    owns: boolean,
  ) {
    this.#tree = tree;
    this.#att = att;
    this.#names = names;
    this.#node = node;
    this.#gen = gen;
    this.#owns = owns;
    this.#qid = node.qid;
  }

  /** The file's qid as last seen. */
  get qid(): Qid {
    return this.#qid;
  }

  /** The path from the attach root. */
  get names(): readonly string[] {
    return this.#names;
  }

  /** Name the mount point of this attach in errors (see RemoteNode.mountedOn). */
  mountedOn(path: string): void {
    this.#att.label = path;
  }

  /** The fid for this node on the current connection, walked again when it is new. */
  async #live(): Promise<{ node: RemoteNode; gen: number }> {
    if (this.#closed) throw new StyxError(Ename.badFid);
    const gen = this.#tree.live(this.#att);
    if (this.#gen === gen) return { node: this.#node, gen };
    if (this.#reviving?.gen !== gen) {
      const p = this.#revive(gen);
      // A failure is not kept: the next use tries again.
      p.catch(() => this.#reviving?.p === p && (this.#reviving = null));
      this.#reviving = { gen, p };
    }
    return { node: await this.#reviving.p, gen };
  }

  async #revive(gen: number): Promise<RemoteNode> {
    let node: RemoteNode;
    try {
      const root = await this.#tree.rootOf(this.#att, gen);
      if (!this.#owns) {
        node = root;
      } else {
        const w = await root.walk(this.#names.slice());
        if (!w.node) throw gone(this.#att, this.#names);
        node = w.node;
      }
    } catch (e) {
      throw this.#tree.failed(isNotFound(e) ? gone(this.#att, this.#names) : e, this.#att, gen);
    }
    // The old fid went with its connection: there is nothing to clunk.
    this.#node = node;
    this.#gen = gen;
    return node;
  }

  /** Walk `names`; the new node remembers its path for later recovery. */
  async walk(names: string[], opts: OpOptions = {}): Promise<WalkResult> {
    const { node, gen } = await this.#live();
    let w;
    try {
      w = await node.walk(names, opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
    if (!w.node) return { qids: w.qids };
    const path = joinNames(this.#names, names);
    return { qids: w.qids, node: new RecoverNode(this.#tree, this.#att, path, w.node, gen, true) };
  }

  /** Walk `names` and stat the file reached, in one round trip (see RemoteNode.walkStat). */
  async walkStat(names: string[], opts: OpOptions = {}): Promise<{ node: RecoverNode; dir: Dir }> {
    const { node, gen } = await this.#live();
    let r;
    try {
      r = await node.walkStat(names, opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
    const path = joinNames(this.#names, names);
    return { node: new RecoverNode(this.#tree, this.#att, path, r.node, gen, true), dir: r.dir };
  }

  /**
   * Walk `names` and open the file reached, in one round trip (see
   * RemoteNode.walkOpen); the file is opened again after a reconnection.
   */
  async walkOpen(names: string[], mode: number, opts: WalkOpenOptions = {}): Promise<RecoverFile> {
    const { node, gen } = await this.#live();
    let f: RemoteFile;
    try {
      f = await node.walkOpen(names, mode, opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
    const path = joinNames(this.#names, names);
    return new RecoverFile(this.#tree, this.#att, path, mode, f, gen);
  }

  /** Open with `mode`; the file is opened again after a reconnection. */
  async open(mode: number, opts: OpOptions = {}): Promise<RecoverFile> {
    const { node, gen } = await this.#live();
    let f: RemoteFile;
    try {
      f = await node.open(mode, opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
    return new RecoverFile(this.#tree, this.#att, this.#names, mode, f, gen);
  }

  /** Create `name` here; node and file remember their path. */
  async create(name: string, perm: number, mode: number, opts: OpOptions = {}): Promise<Created> {
    const { node, gen } = await this.#live();
    let c: Created;
    try {
      c = await node.create(name, perm, mode, opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
    const path = joinNames(this.#names, [name]);
    return {
      node: new RecoverNode(this.#tree, this.#att, path, c.node as RemoteNode, gen, true),
      file: new RecoverFile(this.#tree, this.#att, path, mode, c.file as RemoteFile, gen),
    };
  }

  /** Tstat. */
  async stat(opts: OpOptions = {}): Promise<Dir> {
    const { node, gen } = await this.#live();
    try {
      const d = await node.stat(opts);
      this.#qid = d.qid;
      return d;
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
  }

  /** Twstat. */
  async wstat(dir: Dir, opts: OpOptions = {}): Promise<void> {
    const { node, gen } = await this.#live();
    try {
      await node.wstat(dir, opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
  }

  /** Tremove. */
  async remove(opts: OpOptions = {}): Promise<void> {
    const { node, gen } = await this.#live();
    this.#closed = true;
    try {
      await node.remove(opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
  }

  /** Clunk the fid (an attach root stays with its attachment). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#owns) await this.#node.close().catch(() => {});
  }
}

/**
 * An open file of a {@link RecoveringTree}: opened again (same path, same
 * mode less OTRUNC) on its first use after a reconnection.
 */
export class RecoverFile implements OpenFile {
  readonly #tree: RecoveringTree;
  readonly #att: Attachment;
  readonly #names: readonly string[];
  readonly #mode: number;
  #file: RemoteFile;
  #gen: number;
  /** An open again under way, and the connection it is on. */
  #reviving: { gen: number; p: Promise<RemoteFile> } | null = null;
  #closed = false;
  /** The qid when first opened; a reopened file must have the same qid path. */
  readonly qid: Qid;
  /** As the first open gave it. */
  readonly iounit: number;

  /** @internal */
  constructor(
    tree: RecoveringTree,
    att: Attachment,
    names: readonly string[],
    mode: number,
    file: RemoteFile,
    gen: number,
  ) {
    this.#tree = tree;
    this.#att = att;
    this.#names = names;
    // Truncating again would lose what was written since.
    this.#mode = mode & ~OTRUNC;
    this.#file = file;
    this.#gen = gen;
    this.qid = file.qid;
    this.iounit = file.iounit;
  }

  async #live(): Promise<{ file: RemoteFile; gen: number }> {
    if (this.#closed) throw new StyxError(Ename.badFid);
    const gen = this.#tree.live(this.#att);
    if (this.#gen === gen) return { file: this.#file, gen };
    if (this.#reviving?.gen !== gen) {
      const p = this.#reopen(gen);
      p.catch(() => this.#reviving?.p === p && (this.#reviving = null));
      this.#reviving = { gen, p };
    }
    return { file: await this.#reviving.p, gen };
  }

  async #reopen(gen: number): Promise<RemoteFile> {
    let f: RemoteFile;
    try {
      const root = await this.#tree.rootOf(this.#att, gen);
      // The Topen travels with the Twalk: one round trip.
      const w = await root.walk(this.#names.slice(), { openMode: this.#mode });
      if (!w.node) throw gone(this.#att, this.#names);
      try {
        f = await w.node.open(this.#mode);
      } catch (e) {
        await w.node.close().catch(() => {});
        throw e;
      }
    } catch (e) {
      throw this.#tree.failed(isNotFound(e) ? gone(this.#att, this.#names) : e, this.#att, gen);
    }
    if (f.qid.path !== this.qid.path || f.qid.type !== this.qid.type) {
      await f.close().catch(() => {});
      throw new StyxError(
        `'${
          display(this.#att, this.#names)
        }' is another file since the connection was restored: open it again`,
      );
    }
    this.#file = f;
    this.#gen = gen;
    return f;
  }

  /** Read at `offset` (reopening the file first after a reconnection). */
  async read(offset: bigint, count: number, opts: OpOptions = {}): Promise<Uint8Array> {
    const { file, gen } = await this.#live();
    try {
      return await file.read(offset, count, opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
  }

  /** Write at `offset`; a write cut by the loss is never sent again. */
  async write(offset: bigint, data: Uint8Array, opts: OpOptions = {}): Promise<number> {
    const { file, gen } = await this.#live();
    try {
      return await file.write(offset, data, opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
  }

  /** Give back data this file read. */
  release(data: Uint8Array): void {
    this.#file.release(data);
  }

  /** The whole directory, read from its start. */
  async readDir(opts: OpOptions = {}): Promise<Dir[]> {
    const { file, gen } = await this.#live();
    try {
      return await file.readDir(opts);
    } catch (e) {
      throw this.#tree.failed(e, this.#att, gen);
    }
  }

  /** Clunk (once). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#file.close().catch(() => {});
  }
}

function display(att: Attachment, names: readonly string[]): string {
  const base = att.label ?? "";
  const rest = names.join("/");
  return base === "" ? `/${rest}` : rest === "" ? base : `${base.replace(/\/$/, "")}/${rest}`;
}

function gone(att: Attachment, names: readonly string[]): StyxError {
  return new StyxError(
    `${Ename.notFound}: '${display(att, names)}' is gone since the connection was restored`,
  );
}
