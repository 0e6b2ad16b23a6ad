/**
 * A remote file tree seen through a {@link StyxClient}: {@link RemoteTree},
 * {@link RemoteNode} (a walked fid) and {@link RemoteFile} (an open fid),
 * implementing the one tree interface of lib/fs/tree.ts.
 *
 * @module
 */

import { concatBytes } from "../bytes.ts";
import { decodeDirs } from "./codec.ts";
import {
  type Dir,
  Ename,
  MsgType,
  type Qid,
  type Rcreate,
  type Ropen,
  type Rread,
  StyxError,
} from "./types.ts";
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
import { lostAs, type Origin, type StyxClient } from "./client_conn.ts";

/**
 * The tree a Styx server exports, as a {@link Tree}: attach sends Tattach
 * with the caller's user name.
 *
 * @example
 * ```ts
 * import { RemoteTree, StyxClient } from "./client.ts";
 * import { serve } from "./server.ts";
 * import { MemTree } from "../fs/memory.ts";
 * import { memPipe } from "../transport/pipe.ts";
 *
 * const [a, b] = memPipe();
 * serve(b, new MemTree());
 * const tree = new RemoteTree(await StyxClient.connect(a));
 * const root = await tree.attach({ user: "glenda" }, "");
 * await root.close();
 * await tree.client.close();
 * ```
 */
export class RemoteTree implements Tree {
  /** Wrap `client`; `opts.uname` overrides the caller's name at attach. */
  constructor(readonly client: StyxClient, readonly opts: { uname?: string } = {}) {}

  /** Attach as `caller.user` (or the fixed uname), selecting `aname`. */
  attach(caller: Caller, aname: string): Promise<RemoteNode> {
    return this.client.attach(this.opts.uname ?? caller.user, aname);
  }

  /**
   * Why the connection is gone ("tcp!host!port: reason"), or undefined while
   * it is up. A namespace shows it in its listing (`ns`).
   */
  get lost(): string | undefined {
    return lostReason(this.client);
  }
}

/** "ADDRESS: reason" for a client whose connection is gone, else undefined. */
export function lostReason(client: StyxClient): string | undefined {
  const f = client.failure;
  if (f === null) return undefined;
  const reason = "reason" in f && typeof f.reason === "string" ? f.reason : f.message;
  return `${client.address}: ${reason}`;
}

/** What {@link RemoteNode.walk} returns: a {@link WalkResult} whose node is remote. */
export interface RemoteWalkResult extends WalkResult {
  /** Present only when every name was walked. */
  node?: RemoteNode;
}

/** A fid on the server that has been attached or walked but not opened. */
export class RemoteNode implements Node {
  #qid: Qid;
  #closed = false;
  /** An open sent along with the walk that made this node (OpOptions.openMode). */
  #pre: { mode: number; open: Ropen | StyxError } | null = null;

  readonly #origin: Origin;

  /**
   * Wrap `fid`, already walked to a file whose qid is `qid`; `origin` is
   * shared with the attach it was walked from (a new one by default).
   */
  constructor(readonly client: StyxClient, readonly fid: number, qid: Qid, origin: Origin = {}) {
    this.#qid = qid;
    this.#origin = origin;
  }

  /**
   * Name the mount point of this attach: once the connection is gone, its
   * nodes and files fail with "'PATH' is no longer connected (...)".
   */
  mountedOn(path: string): void {
    this.#origin.label = path;
  }

  /** The file's qid as last seen. */
  get qid(): Qid {
    return this.#qid;
  }

  /** True once closed or removed. */
  get closed(): boolean {
    return this.#closed;
  }

  #check(): void {
    if (this.#closed) throw new StyxError(Ename.badFid);
  }

  /**
   * Walk `names` to a new fid (more than 16 names take several Twalks). With
   * no names, clones this node. A partial walk returns only the qids.
   */
  async walk(names: string[], opts: OpOptions = {}): Promise<RemoteWalkResult> {
    this.#check();
    try {
      return await this.#walk(names, opts);
    } catch (e) {
      throw lostAs(e, this.#origin);
    }
  }

  /**
   * As {@link walk}, but a first name the server does not have gives
   * `{ qids: [] }`, and a later one a partial result, as Rwalk does: to a
   * union, a miss is an answer, not a failure.
   */
  async tryWalk(names: string[], opts: OpOptions = {}): Promise<RemoteWalkResult> {
    try {
      return await this.walk(names, opts);
    } catch (e) {
      // Only the server's own answer: a lost connection or a flush is no miss.
      const own = e instanceof StyxError && e.constructor === StyxError;
      if (names.length > 0 && own && e.message === Ename.notFound) {
        return { qids: [] };
      }
      throw e;
    }
  }

  async #walk(names: string[], opts: OpOptions): Promise<RemoteWalkResult> {
    const newfid = this.client.allocFid();
    const mode = opts.openMode;
    if (mode !== undefined && opts.signal === undefined && names.length <= 16) {
      // The caller opens the result next: send the Topen with the Twalk.
      const w = await this.client.walkThenOpen(this.fid, newfid, names, mode);
      if (w.qids.length < names.length) return { qids: w.qids };
      const qid = w.qids.length === 0 ? { ...this.#qid } : w.qids[w.qids.length - 1]!;
      const node = new RemoteNode(this.client, newfid, qid, this.#origin);
      node.#pre = { mode, open: w.open };
      return { qids: w.qids, node };
    }
    const qids = await this.client.walkLong(this.fid, newfid, names, opts);
    if (qids.length < names.length) return { qids };
    const qid = qids.length === 0 ? { ...this.#qid } : qids[qids.length - 1]!;
    return { qids, node: new RemoteNode(this.client, newfid, qid, this.#origin) };
  }

  /**
   * Open with 9P `mode`. A node whose walk carried `openMode` answers from
   * the Topen sent with that walk, on its own fid (the node is closed
   * then); any other gets a clone walk and a Topen on the clone, sent
   * together (the clone is clunked on failure).
   */
  async open(mode: number, opts: OpOptions = {}): Promise<RemoteFile> {
    this.#check();
    let f: RemoteFile;
    try {
      f = await this.#open(mode, opts);
    } catch (e) {
      throw lostAs(e, this.#origin);
    }
    f.origin = this.#origin;
    return f;
  }

  async #open(mode: number, opts: OpOptions): Promise<RemoteFile> {
    const pre = this.#pre;
    if (pre !== null && pre.mode !== mode && !(pre.open instanceof StyxError)) {
      // Its fid is open already: it can be neither cloned nor opened again.
      throw new StyxError(`file already opened with mode ${pre.mode}, not ${mode}`);
    }
    this.#pre = null;
    if (pre !== null && pre.mode === mode) {
      if (!(pre.open instanceof StyxError)) {
        // Opened along with the walk: the fid becomes the open file's.
        this.#closed = true;
        return new RemoteFile(this.client, this.fid, pre.open.qid, pre.open.iounit);
      }
      // Refused, perhaps only for overtaking the walk: open in place now.
      const r = await this.client.rpc({ type: MsgType.Topen, fid: this.fid, mode }, opts);
      this.#closed = true;
      return new RemoteFile(this.client, this.fid, r.qid, r.iounit);
    }
    const fid = this.client.allocFid();
    // The clone and its Topen go out together: one round trip, not two.
    if (opts.signal === undefined) return await this.client.walkOpen(this.fid, fid, [], mode);
    await this.client.walkFid(this.fid, fid, [], opts);
    return await this.client.openFid(fid, mode, opts);
  }

  /**
   * Walk `names` and stat the file reached: the Tstat goes out with the
   * Twalk, one round trip. Rejects with "file does not exist" unless every
   * name was walked.
   */
  async walkStat(names: string[], opts: OpOptions = {}): Promise<{ node: RemoteNode; dir: Dir }> {
    this.#check();
    try {
      return await this.#walkStat(names, opts);
    } catch (e) {
      throw lostAs(e, this.#origin);
    }
  }

  async #walkStat(names: string[], opts: OpOptions): Promise<{ node: RemoteNode; dir: Dir }> {
    const o = opts.signal ? { signal: opts.signal } : {};
    if (names.length === 0 || names.length > 16) {
      const w = await this.#walk(names, o);
      if (!w.node) throw new StyxError(Ename.notFound);
      try {
        return { node: w.node, dir: await w.node.stat(o) };
      } catch (e) {
        w.node.close().catch(() => {});
        throw e;
      }
    }
    const c = this.client;
    const fid = c.allocFid();
    const walked = c.walkFid(this.fid, fid, names, o);
    // A Tstat has no effect on the server: one that reaches a fid the walk
    // did not make only fails.
    const statted = c.rpc({ type: MsgType.Tstat, fid }, o).then((r) => r.stat, () => null);
    let qids: Qid[];
    try {
      qids = await walked;
    } catch (e) {
      await statted;
      throw e;
    }
    if (qids.length < names.length) {
      await statted;
      throw new StyxError(Ename.notFound);
    }
    const node = new RemoteNode(c, fid, qids[qids.length - 1]!, this.#origin);
    try {
      const st = await statted;
      return { node, dir: st ?? await node.stat(o) };
    } catch (e) {
      node.close().catch(() => {});
      throw e;
    }
  }

  /**
   * Walk `names` and open the file reached with `mode`: the Topen (and a
   * Tread of `opts.readAhead` bytes at offset 0) go out with the Twalk, one
   * round trip. Rejects with "file does not exist" unless every name was
   * walked.
   */
  async walkOpen(names: string[], mode: number, opts: WalkOpenOptions = {}): Promise<RemoteFile> {
    this.#check();
    let f: RemoteFile;
    try {
      f = await this.#walkOpen(names, mode, opts);
    } catch (e) {
      throw lostAs(e, this.#origin);
    }
    f.origin = this.#origin;
    return f;
  }

  async #walkOpen(names: string[], mode: number, opts: WalkOpenOptions): Promise<RemoteFile> {
    const c = this.client;
    const o = opts.signal ? { signal: opts.signal } : {};
    const fid = c.allocFid();
    if (names.length > 16) {
      const qids = await c.walkLong(this.fid, fid, names, o);
      if (qids.length < names.length) throw new StyxError(Ename.notFound);
      return await c.openFid(fid, mode, o);
    }
    const w = await c.walkThenOpen(this.fid, fid, names, mode, { ...o, readAhead: opts.readAhead });
    if (w.qids.length < names.length) throw new StyxError(Ename.notFound);
    // Refused, perhaps only for overtaking the walk: open in place now.
    const f = w.open instanceof StyxError
      ? await c.openFid(fid, mode, o)
      : new RemoteFile(c, fid, w.open.qid, w.open.iounit);
    if (w.head) f.prime(Math.min(opts.readAhead ?? 0, c.maxIo), w.head);
    return f;
  }

  /**
   * Create `name` in this directory: clone, Tcreate on the clone (which
   * becomes the open file), then walk to `name` for the node.
   */
  async create(name: string, perm: number, mode: number, opts: OpOptions = {}): Promise<Created> {
    this.#check();
    try {
      return await this.#create(name, perm, mode, opts);
    } catch (e) {
      throw lostAs(e, this.#origin);
    }
  }

  async #create(name: string, perm: number, mode: number, opts: OpOptions): Promise<Created> {
    const c = this.client;
    const fid = c.allocFid();
    await c.walkFid(this.fid, fid, [], opts);
    let r: Rcreate;
    try {
      r = await c.rpc({ type: MsgType.Tcreate, fid, name, perm: perm >>> 0, mode }, opts);
    } catch (e) {
      c.clunk(fid).catch(() => {});
      throw e;
    }
    const file = new RemoteFile(c, fid, r.qid, r.iounit);
    file.origin = this.#origin;
    let w: RemoteWalkResult;
    try {
      w = await this.walk([name], opts);
    } catch (e) {
      await file.close();
      throw e;
    }
    return { node: w.node!, file };
  }

  /** Tstat. */
  async stat(opts: OpOptions = {}): Promise<Dir> {
    this.#check();
    let r;
    try {
      r = await this.client.rpc({ type: MsgType.Tstat, fid: this.fid }, opts);
    } catch (e) {
      throw lostAs(e, this.#origin);
    }
    this.#qid = r.stat.qid;
    return r.stat;
  }

  /** Twstat; fields set to "don't touch" are left alone by the server. */
  async wstat(dir: Dir, opts: OpOptions = {}): Promise<void> {
    this.#check();
    // DMDIR | 0o755 is negative in JavaScript; send the bits as unsigned.
    const stat = { ...dir, mode: dir.mode >>> 0 };
    try {
      await this.client.rpc({ type: MsgType.Twstat, fid: this.fid, stat }, opts);
    } catch (e) {
      throw lostAs(e, this.#origin);
    }
  }

  /** Tremove; the fid is released whether or not the remove succeeds. */
  async remove(opts: OpOptions = {}): Promise<void> {
    this.#check();
    this.#closed = true;
    try {
      await this.client.removeFid(this.fid, opts);
    } catch (e) {
      throw lostAs(e, this.#origin);
    }
  }

  /** Tclunk the fid (once; later calls do nothing). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.client.clunk(this.fid);
  }

  /**
   * Give up the fid without clunking it, for a caller that takes it over
   * (e.g. opens it in place); the node is closed afterwards.
   */
  release(): void {
    this.#closed = true;
  }
}

/**
 * An open fid. `read` and `write` split at `iounit` and go one request at a
 * time (safe for stream files); use {@link readStream} and
 * {@link writeFrom} to keep several in flight.
 */
export class RemoteFile implements OpenFile {
  /** Largest count per Tread/Twrite: Ropen's iounit, or msize - IOHDRSZ when that is 0. */
  readonly iounit: number;
  /** Where the attach this file came from is mounted, for errors naming it. */
  origin: Origin | undefined;
  #closed = false;
  /** A read at offset 0 sent along with the open, for the first read or readDir. */
  #head: { count: number; data: Promise<Uint8Array | null> } | null = null;

  /** Wrap the open `fid`; `iounit` is as Ropen gave it. */
  constructor(
    readonly client: StyxClient,
    readonly fid: number,
    readonly qid: Qid,
    iounit: number,
  ) {
    const max = client.maxIo;
    this.iounit = iounit <= 0 || iounit > max ? max : iounit;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#closed;
  }

  #check(): void {
    if (this.#closed) throw new StyxError(Ename.badFid);
  }

  /**
   * Keep `data`, the reply to a Tread of `count` bytes at offset 0 sent
   * along with the open, for the first {@link read} at offset 0 or the
   * first {@link readDir}.
   * @internal
   */
  prime(count: number, data: Promise<Uint8Array | null>): void {
    this.#head = { count, data };
  }

  /**
   * The primed read, when it answers a read of `count` bytes at offset 0:
   * it holds them all, or it was short (the end of the file).
   */
  async #fromHead(count: number): Promise<Uint8Array | null> {
    const h = this.#head;
    if (h === null) return null;
    this.#head = null;
    const d = await h.data;
    if (d === null) return null;
    if (d.length >= count || d.length < h.count) return d.length > count ? d.subarray(0, count) : d;
    this.client.recycle(d);
    return null;
  }

  /** One Tread of at most `iounit` bytes; the data is a view of the reply frame. */
  async readOnce(offset: bigint, count: number, opts: OpOptions = {}): Promise<Uint8Array> {
    this.#check();
    const want = Math.min(count, this.iounit);
    let r: Rread;
    try {
      r = await this.client.rpc({ type: MsgType.Tread, fid: this.fid, offset, count: want }, opts);
    } catch (e) {
      throw lostAs(e, this.origin);
    }
    if (r.data.length > want) {
      throw new StyxError(`server answered a Tread of ${want} bytes with ${r.data.length}`);
    }
    return r.data;
  }

  /** One Twrite of at most `iounit` bytes; resolves with the count written. */
  async writeOnce(offset: bigint, data: Uint8Array, opts: OpOptions = {}): Promise<number> {
    this.#check();
    const piece = data.length > this.iounit ? data.subarray(0, this.iounit) : data;
    let r;
    try {
      r = await this.client.rpc({ type: MsgType.Twrite, fid: this.fid, offset, data: piece }, opts);
    } catch (e) {
      throw lostAs(e, this.origin);
    }
    if (r.count > piece.length) {
      throw new StyxError(
        `server claims to have written ${r.count} bytes of a ${piece.length}-byte Twrite`,
      );
    }
    return r.count;
  }

  /**
   * Read up to `count` bytes at `offset`: Treads of at most `iounit`, one
   * after another, stopping at the first short one.
   */
  async read(offset: bigint, count: number, opts: OpOptions = {}): Promise<Uint8Array> {
    if (offset === 0n && this.#head !== null) {
      const d = await this.#fromHead(count);
      if (d !== null) return d;
    }
    if (count <= this.iounit) return await this.readOnce(offset, count, opts);
    const parts: Uint8Array[] = [];
    let got = 0;
    while (got < count) {
      const want = Math.min(count - got, this.iounit);
      const d = await this.readOnce(offset + BigInt(got), want, opts);
      parts.push(d);
      got += d.length;
      if (d.length < want) break;
    }
    const all = concat(parts, got);
    if (all !== parts[0]) { for (const d of parts) this.client.recycle(d); }
    return all;
  }

  /** Give back data this file read, for a later reply to reuse its buffer. */
  release(data: Uint8Array): void {
    this.client.recycle(data);
  }

  /** Write all of `data` at `offset` in Twrites of at most `iounit`; resolves with the count. */
  async write(offset: bigint, data: Uint8Array, opts: OpOptions = {}): Promise<number> {
    let done = 0;
    do {
      const n = await this.writeOnce(offset + BigInt(done), data.subarray(done), opts);
      if (n === 0) break;
      done += n;
    } while (done < data.length);
    return done;
  }

  /** Read the whole directory: Treads from offset 0 until an empty one. */
  async readDir(opts: OpOptions = {}): Promise<Dir[]> {
    const dirs: Dir[] = [];
    let off = 0n;
    const h = this.#head;
    this.#head = null;
    const first = h === null ? null : await h.data;
    if (first !== null) {
      // Whole entries, as any directory read returns them.
      if (first.length === 0) return dirs;
      for (const e of decodeDirs(first)) dirs.push(e);
      off = BigInt(first.length);
    }
    for (;;) {
      const d = await this.readOnce(off, this.iounit, opts);
      if (d.length === 0) return dirs;
      for (const e of decodeDirs(d)) dirs.push(e);
      off += BigInt(d.length);
    }
  }

  /** Tclunk the fid (once; later calls do nothing). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.client.clunk(this.fid);
  }
}

/** Join `parts` holding `total` bytes (no copy when there is one part). */
export function concat(parts: Uint8Array[], total: number): Uint8Array {
  return parts.length === 1 ? parts[0]! : concatBytes(parts, total);
}
