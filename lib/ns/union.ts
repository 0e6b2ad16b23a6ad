/**
 * Union directories: one open directory made of several, read as the
 * members' listings one after another. As in Inferno (readdir(2): "in the
 * presence of duplicate names in a union mount"), a name present in two
 * members is listed twice, first-member entry first; walking the name
 * still finds the first member's file. Callers that want one entry per
 * name (glob, recursive copy or removal, FUSE) keep the first with
 * {@link firstOfEachName}.
 *
 * @module
 */

import type { Node, OpenFile, OpOptions } from "../fs/tree.ts";
import { Ename, StyxError } from "../styx/types.ts";
import type { Dir, Qid } from "../styx/types.ts";

/**
 * Join directory listings in union order, duplicates included.
 *
 * @example
 * ```ts
 * import { mergeDirs } from "./union.ts";
 * import { nullDir } from "../styx/types.ts";
 * const d = (name: string, uid: string) => ({ ...nullDir(), name, uid });
 * const m = mergeDirs([[d("a", "first")], [d("a", "second"), d("b", "second")]]);
 * if (m.map((x) => x.name + x.uid).join() !== "afirst,asecond,bsecond") throw new Error("merge");
 * ```
 */
export function mergeDirs(lists: readonly (readonly Dir[])[]): Dir[] {
  return lists.flat();
}

/**
 * The first entry of each name, in order: what a walk of each name finds
 * in a union (Inferno's readdir COMPACT).
 *
 * @example
 * ```ts
 * import { firstOfEachName } from "./union.ts";
 * import { nullDir } from "../styx/types.ts";
 * const d = (name: string, uid: string) => ({ ...nullDir(), name, uid });
 * const m = firstOfEachName([d("a", "first"), d("a", "second"), d("b", "second")]);
 * if (m.map((x) => x.name + x.uid).join() !== "afirst,bsecond") throw new Error("compact");
 * ```
 */
export function firstOfEachName<T extends { name: string }>(entries: readonly T[]): T[] {
  const seen = new Set<string>();
  const out: T[] = [];
  for (const d of entries) {
    if (seen.has(d.name)) continue;
    seen.add(d.name);
    out.push(d);
  }
  return out;
}

/** Told what an open union directory lists, for as long as it stays open. */
export interface UnionListener {
  /** A read of the union: each member's entries (undefined for a member that failed). */
  listed(owner: UnionDir, lists: (readonly Dir[] | undefined)[]): void;
  /** The union directory was closed: what it listed is no longer held. */
  closed(owner: UnionDir): void;
}

/**
 * An open union directory. It owns the open members and the nodes they were
 * opened from, and closes all of them when closed.
 */
export class UnionDir implements OpenFile {
  readonly #files: OpenFile[];
  readonly #nodes: Node[];
  readonly #listener: UnionListener | undefined;
  #closed = false;

  /**
   * Wrap `files` (open directories in union order) opened from `nodes`;
   * `listener` hears of each listing, and of the close.
   */
  constructor(files: OpenFile[], nodes: Node[], listener?: UnionListener) {
    if (files.length === 0) throw new Error("A union directory needs at least one member");
    this.#files = files;
    this.#nodes = nodes;
    this.#listener = listener;
  }

  /** The qid of the first member. */
  get qid(): Qid {
    return this.#files[0]!.qid;
  }

  /** Directories are read whole; no preferred size. */
  get iounit(): number {
    return 0;
  }

  /** A union is a directory: its bytes are read with {@link readDir}. */
  read(_offset: bigint, _count: number, _opts?: OpOptions): Promise<Uint8Array> {
    return Promise.reject(new StyxError(Ename.isDir));
  }

  /** Directories cannot be written. */
  write(_offset: bigint, _data: Uint8Array, _opts?: OpOptions): Promise<number> {
    return Promise.reject(new StyxError(Ename.isDir));
  }

  /**
   * Every member's entries, in union order, duplicates included. A member that fails to read (a remote
   * that went away) is skipped unless every member fails.
   */
  async readDir(opts?: OpOptions): Promise<Dir[]> {
    if (this.#closed) throw new StyxError(Ename.notOpen);
    const results = await Promise.allSettled(this.#files.map((f) => f.readDir(opts)));
    const lists: Dir[][] = [];
    let firstError: unknown;
    for (const r of results) {
      if (r.status === "fulfilled") lists.push(r.value);
      else firstError ??= r.reason;
    }
    if (lists.length === 0) throw firstError;
    if (this.#listener && !this.#closed) {
      this.#listener.listed(
        this,
        results.map((r) => r.status === "fulfilled" ? r.value : undefined),
      );
    }
    return mergeDirs(lists);
  }

  /** Close every member and release its node. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener?.closed(this);
    await Promise.allSettled(this.#files.map((f) => f.close()));
    await Promise.allSettled(this.#nodes.map((n) => n.close()));
  }
}

/**
 * An open file that also releases the node it was opened from when closed,
 * for callers that open by path and never see the node.
 */
export class OwnedFile implements OpenFile {
  readonly #file: OpenFile;
  readonly #node: Node;
  #closed = false;

  /** Wrap `file`, opened from `node`. */
  constructor(file: OpenFile, node: Node) {
    this.#file = file;
    this.#node = node;
  }

  /** The open file's qid. */
  get qid(): Qid {
    return this.#file.qid;
  }

  /** The open file's iounit. */
  get iounit(): number {
    return this.#file.iounit;
  }

  /** Read from the open file. */
  read(offset: bigint, count: number, opts?: OpOptions): Promise<Uint8Array> {
    return this.#file.read(offset, count, opts);
  }

  /** Write to the open file. */
  write(offset: bigint, data: Uint8Array, opts?: OpOptions): Promise<number> {
    return this.#file.write(offset, data, opts);
  }

  /** Give back data read from the open file, if it takes it back. */
  release(data: Uint8Array): void {
    this.#file.release?.(data);
  }

  /** Read the open directory. */
  readDir(opts?: OpOptions): Promise<Dir[]> {
    return this.#file.readDir(opts);
  }

  /** Close the file, then release its node. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#file.close();
    } finally {
      await this.#node.close();
    }
  }
}
