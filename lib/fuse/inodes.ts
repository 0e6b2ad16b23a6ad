/**
 * The inode table of a FUSE session. The kernel's node ids name (parent,
 * name) pairs; a node id holds a walked {@link Node} only once an
 * operation needed one, so listing a big directory with READDIRPLUS costs
 * no walks at all. An inode here is identity and last-seen attributes
 * only; what is cached about a directory's entries, and the heuristics
 * that read ahead, are the directory cache's (dircache.ts).
 *
 * @module
 */

import { type Dir, Ename, QTDIR, StyxError } from "../styx/types.ts";
import type { Node } from "../fs/tree.ts";
import { Errno } from "./ffi.ts";
import { ErrnoError } from "./errno.ts";
import type { DirState } from "./dircache.ts";

/** The kernel's node id of the mount's root. */
export const ROOT_ID = 1n;
/** Most subdirectories held read ahead of the kernel's lookups. */
const UNSEEN_MAX = 64;

/** A file the kernel knows by node id (or soon may: see {@link InodeTable.addUnseen}). */
export interface Inode {
  readonly id: bigint;
  /** `${id}/`: the start of the keys of the names in this directory. */
  readonly prefix: string;
  /** The directory it was looked up in; null once that name no longer leads here. */
  parent: Inode | null;
  name: string;
  readonly qpath: bigint;
  readonly isDir: boolean;
  /** The walked node, when an operation needed one. */
  node: Node | null;
  /** Rename epoch the node was walked in (paths may be stale after a rename). */
  epoch: number;
  walking: Promise<Node> | null;
  /** Lookups the kernel holds. */
  nlookup: number;
  /** Length as last seen (stat, lookup or directory read). */
  length: bigint;
  /** Attributes as last seen, and when (performance.now()); -Infinity: not to be reused. */
  dir: Dir | null;
  dirAt: number;
  /** For directories: what the directory cache keeps about its entries, once it keeps any. */
  cache: DirState | null;
}

function makeInode(
  id: bigint,
  parent: Inode | null,
  name: string,
  qpath: bigint,
  isDir: boolean,
  node: Node | null,
  epoch: number,
): Inode {
  return {
    id,
    prefix: `${id}/`,
    parent,
    name,
    qpath,
    isDir,
    node,
    epoch,
    walking: null,
    nlookup: 0,
    length: 0n,
    dir: null,
    dirAt: -Infinity,
    cache: null,
  };
}

/** Note fresh attributes of `ino`. */
export function saw(ino: Inode, d: Dir): void {
  ino.length = d.length;
  ino.dir = d;
  ino.dirAt = performance.now();
}

/** The inodes of one session, by node id and by (parent, name). */
export class InodeTable {
  readonly root: Inode;
  readonly #inodes = new Map<bigint, Inode>();
  readonly #byKey = new Map<string, Inode>();
  /** Subdirectories read ahead during a scan before the kernel looked them up, by key. */
  readonly #unseen = new Map<string, Inode>();
  #nextId = 2n;
  /** Bumped when a directory is renamed: nodes walked before may hold stale paths. */
  #epoch = 0;

  /** A table whose root is `root`. */
  constructor(root: Node) {
    this.root = makeInode(ROOT_ID, null, "", root.qid.path, true, root, Infinity);
    this.root.nlookup = 1;
    this.#inodes.set(ROOT_ID, this.root);
  }

  /** Number of node ids the kernel currently holds. */
  get size(): number {
    return this.#inodes.size;
  }

  /** The inode the kernel calls `id`; ENOENT when it holds no such id. */
  get(id: bigint): Inode {
    const i = this.#inodes.get(id);
    if (!i) throw new ErrnoError(Errno.ENOENT);
    return i;
  }

  /** The inode known by `name` in `parent`, if any. */
  child(parent: Inode, name: string): Inode | undefined {
    return this.#byKey.get(parent.prefix + name);
  }

  /** The kernel forgets `n` lookups of `id`; the last one releases its node. */
  forget(id: bigint, n: bigint): void {
    const i = this.#inodes.get(id);
    if (!i || i === this.root) return;
    i.nlookup -= Number(n);
    if (i.nlookup > 0) return;
    this.#inodes.delete(id);
    if (i.parent && this.child(i.parent, i.name) === i) {
      this.#byKey.delete(i.parent.prefix + i.name);
    }
    const node = i.node;
    i.node = null;
    node?.close().catch(() => {});
  }

  /** Record a lookup of `name` in `parent` (one more kernel reference). */
  remember(parent: Inode, name: string, d: Dir, node: Node | null): Inode {
    const k = parent.prefix + name;
    const old = this.#byKey.get(k);
    const isDir = (d.qid.type & QTDIR) !== 0;
    if (old && old.qpath === d.qid.path && old.isDir === isDir) {
      old.nlookup++;
      saw(old, d);
      if (node) {
        if (old.node === null && old.walking === null) {
          old.node = node;
          old.epoch = this.#epoch;
        } else node.close().catch(() => {});
      }
      return old;
    }
    if (old) {
      // A different file now has this name: the old node id may no longer walk here.
      old.parent = null;
    }
    const ahead = this.#unseen.get(k);
    if (ahead) this.#unseen.delete(k);
    let ino: Inode;
    if (ahead && !old && ahead.qpath === d.qid.path && ahead.isDir === isDir) {
      // Read ahead before the kernel knew it: the kernel knows it now.
      ino = ahead;
      if (node) {
        ino.node = node;
        ino.epoch = this.#epoch;
      }
    } else {
      ino = this.newInode(parent, name, d.qid.path, isDir, node);
    }
    ino.nlookup = 1;
    saw(ino, d);
    this.#inodes.set(ino.id, ino);
    this.#byKey.set(k, ino);
    return ino;
  }

  /** A new inode for `name` in `parent` (not yet known to the kernel: nlookup 0). */
  newInode(parent: Inode, name: string, qpath: bigint, isDir: boolean, node: Node | null): Inode {
    return makeInode(this.#nextId++, parent, name, qpath, isDir, node, this.#epoch);
  }

  /** A subdirectory read ahead under `name` in `parent` before the kernel looked it up. */
  unseen(parent: Inode, name: string): Inode | undefined {
    return this.#unseen.get(parent.prefix + name);
  }

  /** Keep `ino`, read ahead before the kernel looked it up, for its lookup (a bounded number). */
  addUnseen(ino: Inode): void {
    if (this.#unseen.size >= UNSEEN_MAX) {
      const oldest = this.#unseen.keys().next().value;
      if (oldest !== undefined) this.#unseen.delete(oldest);
    }
    this.#unseen.set(ino.parent!.prefix + ino.name, ino);
  }

  /** Forget what was read ahead by name in `dir`: those names may now be other files. */
  dropUnseenIn(dir: Inode): void {
    for (const [k, ino] of this.#unseen) if (ino.parent === dir) this.#unseen.delete(k);
  }

  /** `ino`'s node, when it holds one walked since the last rename of a directory. */
  #fresh(ino: Inode): Node | null {
    return ino.node && (ino === this.root || ino.epoch === this.#epoch) ? ino.node : null;
  }

  /** The node for `ino`, walking from its nearest known ancestor when needed. */
  nodeOf(ino: Inode): Promise<Node> {
    const fresh = this.#fresh(ino);
    if (fresh) return Promise.resolve(fresh);
    if (ino.walking) return ino.walking;
    const stale = ino.node;
    ino.node = null;
    stale?.close().catch(() => {});
    const p = ino.parent;
    if (!p) return Promise.reject(new ErrnoError(Errno.ENOENT));
    const epoch = this.#epoch;
    const w = (async () => {
      const pn = await this.nodeOf(p);
      const r = await pn.walk([ino.name]);
      if (!r.node) throw new StyxError(Ename.notFound);
      ino.node = r.node;
      ino.epoch = epoch;
      return r.node;
    })().finally(() => {
      ino.walking = null;
    });
    ino.walking = w;
    return w;
  }

  /**
   * The nearest of `ino` and its ancestors that holds a walked node, and
   * the names from there down to `ino`: one Twalk reaches it, however
   * many directories above it were only ever seen in listings.
   */
  async pathTo(ino: Inode): Promise<[Node, string[]]> {
    const names: string[] = [];
    let cur = ino;
    for (;;) {
      const fresh = this.#fresh(cur);
      if (fresh) return [fresh, names];
      // Leave room for one more name: a Twalk carries at most 16.
      if (cur.walking || !cur.parent || names.length >= 15) {
        return [await this.nodeOf(cur), names];
      }
      names.unshift(cur.name);
      cur = cur.parent;
    }
  }

  /** Keep `node`, walked just now, as `ino`'s, unless it has one already (then close it). */
  adopt(ino: Inode, node: Node): void {
    if (ino.node === null && ino.walking === null) {
      ino.node = node;
      ino.epoch = this.#epoch;
    } else node.close().catch(() => {});
  }

  /** `name` in `parent` no longer names what it did: its inode is detached. */
  unname(parent: Inode, name: string): Inode | undefined {
    const k = parent.prefix + name;
    const ino = this.#byKey.get(k);
    if (!ino) return undefined;
    this.#byKey.delete(k);
    ino.parent = null;
    const node = ino.node;
    ino.node = null;
    node?.close().catch(() => {});
    return ino;
  }

  /** `oldname` in `parent` was renamed to `newname` (whose old inode the caller detached). */
  renamed(parent: Inode, oldname: string, newname: string, isDir: boolean): void {
    const k = parent.prefix + oldname;
    const ino = this.#byKey.get(k);
    if (ino) {
      this.#byKey.delete(k);
      ino.name = newname;
      this.#byKey.set(parent.prefix + newname, ino);
      const stale = ino.node;
      ino.node = null;
      stale?.close().catch(() => {});
    }
    // Nodes below a renamed directory hold its old path: walk them again.
    if (isDir) this.#epoch++;
  }

  /** Every node held (the root's excepted), taken from their inodes, for closing at the end. */
  takeNodes(): Node[] {
    const out: Node[] = [];
    for (const i of this.#inodes.values()) {
      if (i !== this.root && i.node) out.push(i.node);
    }
    return out;
  }
}
