/**
 * The one tree interface. A host directory, a memory tree, a device (/net,
 * /prog, /phone), a remote tree seen through the Styx client and a composed
 * namespace all implement it, so the Styx server can serve any of them and the
 * namespace never knows which is which.
 *
 * The shape follows 9P: a {@link Node} is like a fid that has been walked to
 * a file but not opened; opening it gives an {@link OpenFile}. Nodes that hold
 * resources (a remote fid) are released with {@link Node.close}.
 *
 * @module
 */

import { type Dir, Ename, type Qid, StyxError } from "../styx/types.ts";

/** Who is asking: the verified identity (or the attach name under -A). */
export interface Caller {
  /** User name, e.g. "alice". */
  user: string;
  /** Groups the user belongs to, e.g. ["admins"]. */
  groups?: string[];
  /** True when the identity was verified by the transport (mutual TLS). */
  authenticated?: boolean;
}

/** Options every operation that can block accepts. */
export interface OpOptions {
  /** Aborted when the request is flushed or the connection goes away. */
  signal?: AbortSignal;
  /**
   * On a walk only: the node walked to is opened next with this 9P mode
   * and used for nothing else but closing. A remote tree may send the
   * Topen along with the Twalk and answer that open from it, saving a round
   * trip; other trees ignore it.
   */
  openMode?: number;
  /**
   * Who this operation is for, when not the caller the node was attached
   * as: a namespace served to a client passes the client along, so that
   * the trees it reaches (attached earlier, as the namespace's own user)
   * check the client's permissions. Nodes walked to keep it. Set only by
   * code in this process, never from the wire.
   */
  caller?: Caller;
}

/**
 * Options of {@link OpenFile.read}: besides the signal, where to get the
 * buffer for the data. The Styx server offers buffers with room for the
 * reply's header kept in front, so data read into one goes out without a
 * copy and the buffer is then reused.
 */
export interface ReadOptions extends OpOptions {
  /**
   * A buffer of `n` bytes for this read's data: fill it, return it (whole,
   * or a prefix of it) from this one read, and keep no reference to it. It
   * counts against what the connection may hold until the reply has left,
   * so allocate it only once the data is there to fill it. Its contents are
   * not guaranteed to be zero.
   */
  alloc?(n: number): Uint8Array;
  /**
   * Like {@link alloc}, for a buffer a file fills ahead of the reads that
   * return it (a socket's read buffer, kept across reads): not counted
   * against this read, so a read that waits for data holds nothing. Return
   * it whole from one later read, or copy out of it.
   */
  allocAhead?(n: number): Uint8Array;
}

/**
 * `opts` without {@link OpOptions.openMode}, for a walk whose node will not
 * be the one opened (an intermediate step, or a walk that stops short).
 */
export function withoutOpenMode(opts?: OpOptions): OpOptions | undefined {
  if (opts?.openMode === undefined) return opts;
  const { openMode: _, ...rest } = opts;
  return rest;
}

/**
 * Await `p`, rejecting with "interrupted" as soon as `signal` aborts: how an
 * operation that waits on something else honours {@link OpOptions.signal}.
 * `p` itself runs on; the caller cleans up after it if need be.
 *
 * @example
 * ```ts
 * import { withSignal } from "./tree.ts";
 * import assert from "node:assert/strict";
 * const ac = new AbortController();
 * const waiting = withSignal(new Promise(() => {}), ac.signal);
 * ac.abort();
 * await assert.rejects(waiting, /interrupted/);
 * ```
 */
export function withSignal<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    // Nobody waits for `p` any more: its own failure must not go unhandled.
    p.catch(() => {});
    return Promise.reject(new StyxError(Ename.interrupted));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new StyxError(Ename.interrupted));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then((v) => {
      signal.removeEventListener("abort", onAbort);
      resolve(v);
    }, (e) => {
      signal.removeEventListener("abort", onAbort);
      reject(e);
    });
  });
}

/** The result of {@link Node.walk}, mirroring Rwalk. */
export interface WalkResult {
  /** Qids of the names walked successfully, in order. */
  qids: Qid[];
  /** Present only when every name was walked: the node at the end. */
  node?: Node;
}

/** A file or directory that has been reached but not opened. */
export interface Node {
  /** The file's qid as last seen. */
  readonly qid: Qid;
  /**
   * Where the file really is, from the tree's root, once symlinks are
   * resolved: for trees whose names can lead elsewhere (a host directory),
   * so that a filter judges the file and not the name it was reached by.
   */
  readonly place?: readonly string[];
  /**
   * Walk `names` from here (each a single path element, never "." or
   * containing "/"; ".." is allowed and must not escape the tree's root).
   * With no names, returns a new node for the same file (a clone).
   * Throws a StyxError when the first name cannot be walked; returns a
   * partial result (no `node`) when a later one cannot.
   */
  walk(names: string[], opts?: OpOptions): Promise<WalkResult>;
  /**
   * Optional: {@link walk}, except that a first name that does not exist
   * resolves to `{ qids: [] }` instead of throwing "file does not exist".
   * A union asks each member in turn, and a miss is the common answer, so
   * it should cost no exception. Any other failure still throws.
   */
  tryWalk?(names: string[], opts?: OpOptions): Promise<WalkResult>;
  /**
   * Optional: true when `name` is certainly not in this directory for the
   * caller, told at once with no walk (a tree that holds its directories in
   * memory); false says nothing. A union skips such a member without
   * awaiting it.
   */
  lacks?(name: string, opts?: OpOptions): boolean;
  /** Open for I/O; `mode` is a 9P open mode (OREAD ... with OTRUNC, ORCLOSE). */
  open(mode: number, opts?: OpOptions): Promise<OpenFile>;
  /**
   * Create `name` in this directory with 9P `perm` (DMDIR for a directory)
   * and open it with `mode`.
   */
  create(name: string, perm: number, mode: number, opts?: OpOptions): Promise<Created>;
  stat(opts?: OpOptions): Promise<Dir>;
  /** Apply a Twstat: fields set to "don't touch" (~0 or "") are left alone. */
  wstat(dir: Dir, opts?: OpOptions): Promise<void>;
  /** Remove the file. The node is released whether or not this succeeds. */
  remove(opts?: OpOptions): Promise<void>;
  /** Release what the node holds (a remote fid). Safe to call twice. */
  close(): Promise<void>;
  /**
   * Optional: walk `names` and stat the file reached, as one operation (a
   * remote tree sends the Tstat along with the Twalk: one round trip).
   * Rejects with "file does not exist" unless every name was walked. Use
   * {@link walkStat} to get the same result from any node.
   */
  walkStat?(names: string[], opts?: OpOptions): Promise<Walked>;
  /**
   * Optional: walk `names` and open the file reached with 9P `mode`, as one
   * operation (a remote tree sends the Topen, and the read asked for by
   * {@link WalkOpenOptions.readAhead}, along with the Twalk). No node is
   * kept. Rejects with "file does not exist" unless every name was walked.
   * Use {@link walkOpen} to get the same result from any node.
   */
  walkOpen?(names: string[], mode: number, opts?: WalkOpenOptions): Promise<OpenFile>;
  /**
   * Optional, for a node whose walk never waits (a host directory makes
   * only system calls): {@link walk} answered at once, throwing where walk
   * would reject. A server then answers a Twalk without waiting for a turn
   * of the event loop.
   */
  walkNow?(names: string[], opts?: OpOptions): WalkResult;
  /** Optional: {@link stat} answered at once, as {@link walkNow}. */
  statNow?(opts?: OpOptions): Dir;
  /**
   * Optional, with {@link statNow}: its answer as the bytes of a stat(5)
   * entry (size[2] included), in a buffer the node may reuse at its next
   * call, so that an unchanged file need not be encoded again.
   */
  statEntryNow?(): Uint8Array;
  /** Optional: {@link close} done at once, as {@link walkNow}. */
  closeNow?(): void;
}

/** What {@link Node.walkStat} resolves with: the node walked to and its attributes. */
export interface Walked {
  node: Node;
  dir: Dir;
}

/** Options of {@link Node.walkOpen}. */
export interface WalkOpenOptions extends OpOptions {
  /**
   * Read up to this many bytes at offset 0 along with the open: the open
   * file's first read at offset 0 (or its first {@link OpenFile.readDir})
   * is answered from them when they hold all it asks for or the end of
   * the file. A hint: trees that cannot send it along ignore it.
   */
  readAhead?: number;
}

/**
 * Walk `names` from `node` and stat the file reached: through
 * {@link Node.walkStat} when the node offers it, else a walk and a stat.
 * Rejects with "file does not exist" unless every name was walked; the
 * caller closes the node it gets.
 *
 * @example
 * ```ts
 * import { walkStat } from "./tree.ts";
 * import { MemTree } from "./memory.ts";
 * const root = await new MemTree().attach({ user: "glenda" }, "");
 * const { node, dir } = await walkStat(root, []);
 * console.log(dir.name);
 * await node.close();
 * ```
 */
export async function walkStat(node: Node, names: string[], opts?: OpOptions): Promise<Walked> {
  if (node.walkStat) return await node.walkStat(names, opts);
  const w = await node.walk(names, withoutOpenMode(opts));
  if (!w.node) throw new StyxError(Ename.notFound);
  try {
    return { node: w.node, dir: await w.node.stat(opts) };
  } catch (e) {
    w.node.close().catch(() => {});
    throw e;
  }
}

/**
 * Walk `names` from `node` and open the file reached with 9P `mode`:
 * through {@link Node.walkOpen} when the node offers it, else a walk, an
 * open and a close of the walked node. Rejects with "file does not exist"
 * unless every name was walked.
 *
 * @example
 * ```ts
 * import { walkOpen } from "./tree.ts";
 * import { MemTree } from "./memory.ts";
 * import { OREAD } from "../styx/types.ts";
 * const root = await new MemTree().attach({ user: "glenda" }, "");
 * const dir = await walkOpen(root, [], OREAD);
 * console.log((await dir.readDir()).length);
 * await dir.close();
 * ```
 */
export async function walkOpen(
  node: Node,
  names: string[],
  mode: number,
  opts?: WalkOpenOptions,
): Promise<OpenFile> {
  if (node.walkOpen) return await node.walkOpen(names, mode, opts);
  const o = opts?.signal ? { signal: opts.signal } : undefined;
  if (names.length === 0) return await node.open(mode, o);
  const w = await node.walk(names, o);
  if (!w.node) throw new StyxError(Ename.notFound);
  try {
    return await w.node.open(mode, o);
  } finally {
    w.node.close().catch(() => {});
  }
}

/** What {@link Node.create} returns. */
export interface Created {
  node: Node;
  file: OpenFile;
}

/** An open file or directory. */
export interface OpenFile {
  /** The qid after opening (may differ from the node's, e.g. a clone file). */
  readonly qid: Qid;
  /** Largest count worth asking for in one read or write; 0 means "msize - IOHDRSZ". */
  readonly iounit: number;
  /** Read up to `count` bytes at `offset` (regular files only). */
  read(offset: bigint, count: number, opts?: ReadOptions): Promise<Uint8Array>;
  /**
   * Optional: {@link read} made at once, for a file that can (a host file
   * read with one system call); undefined when this read would have to
   * wait, and then the caller uses read. Throws where read would reject.
   * A server then answers a Tread without waiting for a turn of the event
   * loop.
   */
  readNow?(offset: bigint, count: number, opts?: ReadOptions): Uint8Array | undefined;
  /** Write `data` at `offset`; returns how many bytes were written. */
  write(offset: bigint, data: Uint8Array, opts?: OpOptions): Promise<number>;
  /**
   * Optional: {@link write} made at once, for a file that can (a host file
   * written with one system call); undefined when this write would have to
   * wait, and then the caller uses write. Throws where write would reject.
   * A server then answers a Twrite without waiting for a turn of the event
   * loop. Keeps no reference to `data` once it returns: the server may
   * reuse it at once.
   */
  writeNow?(offset: bigint, data: Uint8Array): number | undefined;
  /**
   * Optional: give back `data`, returned by {@link read}, once the caller
   * has finished with it and keeps no reference, so that its memory can
   * carry a later read (a remote file reuses the reply's buffer).
   */
  release?(data: Uint8Array): void;
  /**
   * For directories: all entries, in order. The server calls it once per
   * read from offset 0 and packs whole entries into replies.
   */
  readDir(opts?: OpOptions): Promise<Dir[]>;
  /**
   * Optional, for directories: the same entries a batch at a time, so that
   * a server holds one batch of an open directory rather than all of it.
   * Each call starts again from the first entry.
   */
  dirEntries?(opts?: OpOptions): AsyncIterator<Dir[]>;
  /** Close the open file (and, for ORCLOSE, remove it). Safe to call twice. */
  close(): Promise<void>;
}

/** Something that can be attached to: the root of a file tree. */
export interface Tree {
  /** Attach as `caller`; `aname` selects a subtree when the tree offers several. */
  attach(caller: Caller, aname: string): Promise<Node>;
}
