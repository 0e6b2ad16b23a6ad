/**
 * A read-write file tree held in memory, in the manner of Plan 9's ramfs:
 * directories and files with owners, permissions checked against the
 * caller, append-only and exclusive-use files, and qids whose version moves
 * on every change. Used for tests, default namespaces and scratch space.
 *
 * @example
 * ```ts
 * import { MemTree } from "./memory.ts";
 * import { OREAD } from "../styx/types.ts";
 * const t = new MemTree({ owner: "glenda" });
 * await t.writeFile("/lib/motd", "hello\n");
 * const root = await t.attach({ user: "glenda" }, "");
 * const { node } = await root.walk(["lib", "motd"]);
 * const f = await node!.open(OREAD);
 * const text = new TextDecoder().decode(await f.read(0n, 100));
 * if (text !== "hello\n") throw new Error("lost the message of the day");
 * await f.close();
 * ```
 *
 * @module
 */

import type {
  Caller,
  Created,
  Node,
  OpenFile,
  OpOptions,
  ReadOptions,
  Tree,
  WalkResult,
} from "./tree.ts";
import {
  DMAPPEND,
  DMDIR,
  DMEXCL,
  Ename,
  OEXEC,
  ORCLOSE,
  ORDWR,
  OTRUNC,
  OWRITE,
  QTAPPEND,
  QTDIR,
  QTEXCL,
  QTFILE,
  StyxError,
} from "../styx/types.ts";
import type { Dir, Qid } from "../styx/types.ts";

/** Options for {@link MemTree}. */
export interface MemTreeOptions {
  /** Owner and group of the root and of files made by the helpers (default "ferry"). */
  owner?: string;
  /** Permission bits of the root directory (default 0o777, as ramfs). */
  rootMode?: number;
  /** Largest size a file may grow to, in bytes (default 1 GiB). */
  maxFileSize?: number;
  /** Clock in seconds since the epoch, for atime and mtime (default: the system clock). */
  now?: () => number;
}

const NOCHANGE32 = 0xffffffff;
const NOCHANGE64 = 0xffffffffffffffffn;

interface Entry {
  name: string;
  qid: Qid;
  mode: number;
  uid: string;
  gid: string;
  muid: string;
  atime: number;
  mtime: number;
  parent: Entry;
  children: Map<string, Entry> | null;
  data: Uint8Array;
  length: number;
  removed: boolean;
  exclusive: boolean;
}

function qidType(mode: number): number {
  let t = QTFILE;
  if (mode & DMDIR) t |= QTDIR;
  if (mode & DMAPPEND) t |= QTAPPEND;
  if (mode & DMEXCL) t |= QTEXCL;
  return t;
}

/** Checks a single path element; returns the Plan 9 error for a bad one. */
function checkName(name: string): void {
  if (
    name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")
  ) {
    throw new StyxError(Ename.badName);
  }
}

/** Splits "/a/b/c" into ["a", "b", "c"], refusing "." and ".." as local errors. */
function splitPath(path: string): string[] {
  const parts = path.split("/").filter((p) => p !== "");
  for (const p of parts) {
    if (p === "." || p === ".." || p.includes("\0")) {
      throw new Error(`path '${path}' has an element '${p}' that is not allowed here`);
    }
  }
  return parts;
}

const AREAD = 4;
const AWRITE = 2;
const AEXEC = 1;

/** The shared state of one tree: every node and open file points here. */
class Store {
  nextPath = 1n;
  readonly root: Entry;

  constructor(
    readonly owner: string,
    rootMode: number,
    readonly maxFileSize: number,
    readonly now: () => number,
  ) {
    const root = this.newEntry("/", DMDIR | (rootMode & 0o777), owner);
    root.parent = root;
    this.root = root;
  }

  newEntry(name: string, mode: number, uid: string): Entry {
    const t = this.now();
    mode = mode >>> 0; // bit operations on DMDIR give negative numbers
    return {
      name,
      qid: { type: qidType(mode), version: 0, path: this.nextPath++ },
      mode,
      uid,
      gid: uid,
      muid: uid,
      atime: t,
      mtime: t,
      parent: undefined as unknown as Entry,
      children: mode & DMDIR ? new Map() : null,
      data: new Uint8Array(0),
      length: 0,
      removed: false,
      exclusive: false,
    };
  }

  link(dir: Entry, e: Entry): void {
    e.parent = dir;
    e.gid = dir.gid;
    dir.children!.set(e.name, e);
    this.touch(dir, e.uid);
  }

  /** Create `name` in `dir` for `caller`, with Plan 9's permission inheritance. */
  createIn(dir: Entry, name: string, perm: number, caller: Caller): Entry {
    const mask = perm & DMDIR ? 0o777 : 0o666;
    const mode = (perm & ~mask) | (perm & dir.mode & mask);
    const e = this.newEntry(name, mode & (DMDIR | DMAPPEND | DMEXCL | 0o777), caller.user);
    this.link(dir, e);
    return e;
  }

  /** Record a change to `e` made by `user`. */
  touch(e: Entry, user: string): void {
    e.qid.version = (e.qid.version + 1) >>> 0;
    e.mtime = this.now();
    e.atime = e.mtime;
    e.muid = user;
  }

  /** Unlink `e` from its parent. */
  unlink(e: Entry, user: string): void {
    if (e.removed) return;
    e.removed = true;
    e.parent.children?.delete(e.name);
    this.touch(e.parent, user);
  }

  mkdirs(parts: string[], mode: number): Entry {
    let e = this.root;
    for (const p of parts) {
      let c = e.children?.get(p);
      if (c === undefined) {
        c = this.newEntry(p, DMDIR | (mode & 0o777), this.owner);
        this.link(e, c);
      } else if (!c.children) {
        throw new Error(`cannot make directory '${p}': a file of that name exists`);
      }
      e = c;
    }
    return e;
  }
}

/**
 * An in-memory read-write tree. Every attach shares the same files; each
 * attach carries its caller, who becomes the owner of what it creates and
 * whose permissions are checked on every operation. The `aname` of an attach
 * is ignored. Walking ".." at the root stays at the root.
 */
export class MemTree implements Tree {
  /**
   * Writes copy their data and keep no reference to it, so a server may
   * reuse the buffer of a Twrite once the write has resolved.
   */
  readonly copiesWrites = true;
  readonly #s: Store;

  /** Make an empty tree whose root belongs to `opts.owner`. */
  constructor(opts: MemTreeOptions = {}) {
    this.#s = new Store(
      opts.owner ?? "ferry",
      opts.rootMode ?? 0o777,
      opts.maxFileSize ?? 1024 * 1024 * 1024,
      opts.now ?? (() => Math.floor(Date.now() / 1000)),
    );
  }

  /** Owner of the root and of files made by the helpers. */
  get owner(): string {
    return this.#s.owner;
  }

  /** Attach as `caller`: returns a node for the root. */
  attach(caller: Caller, _aname: string): Promise<Node> {
    return Promise.resolve(new MemNode(this.#s, this.#s.root, caller));
  }

  /**
   * Make directory `path` and any missing parents (owned by the tree's
   * owner, mode 0o777 unless given). Existing directories are kept.
   */
  mkdirp(path: string, mode = 0o777): Promise<void> {
    try {
      this.#s.mkdirs(splitPath(path), mode);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Create or replace the contents of file `path` (parents are made as by
   * {@link mkdirp}); a new file gets `mode` (default 0o666).
   */
  writeFile(path: string, data: Uint8Array | string, mode = 0o666): Promise<void> {
    try {
      const s = this.#s;
      const parts = splitPath(path);
      const name = parts.pop();
      if (name === undefined) throw new Error(`cannot write file '${path}': it is the root`);
      const dir = s.mkdirs(parts, 0o777);
      let e = dir.children!.get(name);
      if (e === undefined) {
        e = s.newEntry(name, mode & (DMAPPEND | DMEXCL | 0o777), s.owner);
        s.link(dir, e);
      } else if (e.children) {
        throw new Error(`cannot write file '${path}': it is a directory`);
      }
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      e.data = bytes.slice();
      e.length = bytes.length;
      s.touch(e, s.owner);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The contents of file `path`; rejects with StyxError "file does not exist" if absent. */
  readFile(path: string): Promise<Uint8Array> {
    try {
      let e = this.#s.root;
      for (const p of splitPath(path)) {
        const c = e.children?.get(p);
        if (c === undefined) throw new StyxError(Ename.notFound);
        e = c;
      }
      if (e.children) throw new StyxError(Ename.isDir);
      return Promise.resolve(e.data.slice(0, e.length));
    } catch (e) {
      return Promise.reject(e);
    }
  }
}

function inGroup(caller: Caller, gid: string): boolean {
  return caller.user === gid || (caller.groups?.includes(gid) ?? false);
}

/** The access bits (AREAD|AWRITE|AEXEC) `caller` has to `e`. */
function access(e: Entry, caller: Caller): number {
  let a = e.mode & 7;
  if (caller.user === e.uid) a |= (e.mode >> 6) & 7;
  if (inGroup(caller, e.gid)) a |= (e.mode >> 3) & 7;
  return a;
}

function need(e: Entry, caller: Caller, bits: number): void {
  if ((access(e, caller) & bits) !== bits) throw new StyxError(Ename.perm);
}

function dirOf(e: Entry): Dir {
  return {
    type: 0,
    dev: 0,
    qid: { ...e.qid },
    mode: e.mode,
    atime: e.atime,
    mtime: e.mtime,
    length: e.children ? 0n : BigInt(e.length),
    name: e.name,
    uid: e.uid,
    gid: e.gid,
    muid: e.muid,
  };
}

function openBits(mode: number): number {
  switch (mode & 3) {
    case OWRITE:
      return AWRITE;
    case ORDWR:
      return AREAD | AWRITE;
    case OEXEC:
      return AEXEC;
    default:
      return AREAD;
  }
}

class MemNode implements Node {
  constructor(
    readonly tree: Store,
    readonly entry: Entry,
    readonly caller: Caller,
  ) {}

  get qid(): Qid {
    return { ...this.entry.qid };
  }

  /** This node acting for `opts.caller`, when an operation names another caller. */
  #for(opts?: OpOptions): MemNode | undefined {
    const c = opts?.caller;
    return c === undefined || c === this.caller ? undefined : new MemNode(this.tree, this.entry, c);
  }

  walk(names: string[], opts?: OpOptions): Promise<WalkResult> {
    return this.#walk(names, opts, false);
  }

  /** A walk whose missing first name gives `{ qids: [] }`, for unions. */
  tryWalk(names: string[], opts?: OpOptions): Promise<WalkResult> {
    return this.#walk(names, opts, true);
  }

  /**
   * True when `name` is certainly not in this directory for the caller, told
   * at once: a union skips this member without a walk. False says nothing
   * (not a directory, not searchable, or a name a walk treats specially).
   */
  lacks(name: string, opts?: OpOptions): boolean {
    const e = this.entry;
    const c = e.children;
    return c !== null && !e.removed && !c.has(name) && name !== ".." && name !== "." &&
      name !== "" && !name.includes("/") &&
      (access(e, opts?.caller ?? this.caller) & AEXEC) !== 0;
  }

  #walk(names: string[], opts: OpOptions | undefined, miss: boolean): Promise<WalkResult> {
    const other = this.#for(opts);
    if (other) return other.#walk(names, opts, miss);
    if (names.length === 0) {
      return Promise.resolve({ qids: [], node: new MemNode(this.tree, this.entry, this.caller) });
    }
    const qids: Qid[] = [];
    let e = this.entry;
    for (const name of names) {
      let fail: string | null = null;
      let next: Entry | undefined;
      if (!e.children) fail = Ename.walkNoDir;
      else if (e.removed) fail = Ename.notFound;
      else if ((access(e, this.caller) & AEXEC) === 0) fail = Ename.perm;
      else if (name === "..") next = e.parent;
      else if (name === "." || name === "" || name.includes("/")) fail = Ename.badName;
      else {
        next = e.children.get(name);
        if (next === undefined) fail = Ename.notFound;
      }
      if (fail !== null || next === undefined) {
        if (qids.length === 0 && !(miss && fail === Ename.notFound)) {
          return Promise.reject(new StyxError(fail ?? Ename.notFound));
        }
        return Promise.resolve({ qids });
      }
      e = next;
      qids.push({ ...e.qid });
    }
    return Promise.resolve({ qids, node: new MemNode(this.tree, e, this.caller) });
  }

  open(mode: number, opts?: OpOptions): Promise<OpenFile> {
    const other = this.#for(opts);
    if (other) return other.open(mode, opts);
    try {
      return Promise.resolve(this.#open(mode));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #open(mode: number): OpenFile {
    const e = this.entry;
    if (e.removed) throw new StyxError(Ename.notFound);
    if (mode & ~(3 | OTRUNC | ORCLOSE)) throw new StyxError(`bad open mode ${mode}`);
    if (e.children && (mode & ~ORCLOSE) !== 0) throw new StyxError(Ename.isDir);
    let bits = openBits(mode);
    if (mode & OTRUNC) bits |= AWRITE;
    need(e, this.caller, bits);
    if (mode & ORCLOSE) {
      if (e === this.tree.root) throw new StyxError(Ename.perm);
      need(e.parent, this.caller, AWRITE);
    }
    if (e.mode & DMEXCL) {
      if (e.exclusive) throw new StyxError(Ename.exclusive);
      e.exclusive = true;
    }
    if (mode & OTRUNC) {
      e.length = 0;
      e.data = new Uint8Array(0);
      this.tree.touch(e, this.caller.user);
    }
    e.atime = this.tree.now();
    return new MemFile(this.tree, e, this.caller, mode);
  }

  create(name: string, perm: number, mode: number, opts?: OpOptions): Promise<Created> {
    const other = this.#for(opts);
    if (other) return other.create(name, perm, mode, opts);
    try {
      const dir = this.entry;
      if (!dir.children) throw new StyxError(Ename.notDir);
      if (dir.removed) throw new StyxError(Ename.notFound);
      checkName(name);
      need(dir, this.caller, AWRITE);
      if (dir.children.has(name)) throw new StyxError(Ename.exists);
      if ((perm & DMDIR) && (mode & ~ORCLOSE) !== 0) throw new StyxError(Ename.isDir);
      if (mode & ~(3 | OTRUNC | ORCLOSE)) throw new StyxError(`bad open mode ${mode}`);
      const e = this.tree.createIn(dir, name, perm, this.caller);
      if (e.mode & DMEXCL) e.exclusive = true;
      const node = new MemNode(this.tree, e, this.caller);
      const file = new MemFile(this.tree, e, this.caller, mode);
      return Promise.resolve({ node, file });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  stat(_opts?: OpOptions): Promise<Dir> {
    return Promise.resolve(dirOf(this.entry));
  }

  wstat(d: Dir, opts?: OpOptions): Promise<void> {
    const other = this.#for(opts);
    if (other) return other.wstat(d, opts);
    try {
      this.#wstat(d);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #wstat(d: Dir): void {
    const e = this.entry;
    const c = this.caller;
    if (e.removed) throw new StyxError(Ename.notFound);
    const isOwner = c.user === e.uid;
    // Check everything first: a wstat is all or nothing.
    if (d.type !== 0xffff && d.type !== 0) throw new StyxError(Ename.perm);
    if (d.dev !== NOCHANGE32 && d.dev !== 0) throw new StyxError(Ename.perm);
    if (d.qid.path !== NOCHANGE64 && d.qid.path !== e.qid.path) throw new StyxError(Ename.perm);
    if (d.qid.version !== NOCHANGE32 && d.qid.version !== e.qid.version) {
      throw new StyxError(Ename.perm);
    }
    if (d.qid.type !== 0xff && d.qid.type !== e.qid.type) throw new StyxError(Ename.perm);
    const rename = d.name !== "" && d.name !== e.name;
    if (rename) {
      checkName(d.name);
      if (e === this.tree.root) throw new StyxError(Ename.perm);
      need(e.parent, c, AWRITE);
      if (e.parent.children!.has(d.name)) throw new StyxError(Ename.exists);
    }
    let newLength: number | null = null;
    if (d.length !== NOCHANGE64) {
      if (e.children) {
        if (d.length !== 0n) throw new StyxError(Ename.isDir);
      } else if (d.length !== BigInt(e.length)) {
        need(e, c, AWRITE);
        if (d.length > BigInt(this.tree.maxFileSize)) throw new StyxError("file too large");
        newLength = Number(d.length);
      }
    }
    let newMode: number | null = null;
    if (d.mode !== NOCHANGE32 && d.mode !== e.mode) {
      if (!isOwner) throw new StyxError(Ename.perm);
      if ((d.mode & DMDIR) !== (e.mode & DMDIR)) throw new StyxError(Ename.perm);
      newMode = (d.mode & (DMDIR | DMAPPEND | DMEXCL | 0o777)) >>> 0;
    }
    if (d.mtime !== NOCHANGE32 && d.mtime !== e.mtime && !isOwner) {
      throw new StyxError(Ename.perm);
    }
    if (d.uid !== "" && d.uid !== e.uid) throw new StyxError(Ename.perm);
    if (d.gid !== "" && d.gid !== e.gid) {
      if (!isOwner || !inGroup(c, d.gid)) throw new StyxError(Ename.perm);
    }
    if (d.muid !== "" && d.muid !== e.muid) throw new StyxError(Ename.perm);

    if (rename) {
      const dir = e.parent;
      dir.children!.delete(e.name);
      e.name = d.name;
      dir.children!.set(e.name, e);
      this.tree.touch(dir, c.user);
    }
    if (newLength !== null) {
      setLength(e, newLength);
      this.tree.touch(e, c.user);
    }
    if (newMode !== null) {
      e.mode = newMode;
      e.qid.type = qidType(newMode);
    }
    if (d.gid !== "") e.gid = d.gid;
    if (d.mtime !== NOCHANGE32) e.mtime = d.mtime;
    if (d.atime !== NOCHANGE32) e.atime = d.atime;
  }

  remove(opts?: OpOptions): Promise<void> {
    const other = this.#for(opts);
    if (other) return other.remove(opts);
    const e = this.entry;
    if (e.removed) return Promise.reject(new StyxError(Ename.notFound));
    if (e === this.tree.root) return Promise.reject(new StyxError(Ename.perm));
    if ((access(e.parent, this.caller) & AWRITE) === 0) {
      return Promise.reject(new StyxError(Ename.perm));
    }
    if (e.children && e.children.size > 0) return Promise.reject(new StyxError(Ename.notEmpty));
    this.tree.unlink(e, this.caller.user);
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function setLength(e: Entry, n: number): void {
  if (n > e.data.length) {
    const buf = new Uint8Array(Math.max(n, Math.min(e.data.length * 2, n + (1 << 24))));
    buf.set(e.data.subarray(0, e.length));
    e.data = buf;
  } else if (n < e.length) {
    e.data.fill(0, n, e.length);
  }
  e.length = n;
}

class MemFile implements OpenFile {
  readonly qid: Qid;
  readonly iounit = 0;
  #closed = false;

  constructor(
    readonly tree: Store,
    readonly entry: Entry,
    readonly caller: Caller,
    readonly mode: number,
  ) {
    this.qid = { ...entry.qid };
  }

  #check(bits: number): void {
    if (this.#closed) throw new StyxError(Ename.notOpen);
    if ((openBits(this.mode) & bits) === 0 && !(bits === AREAD && (this.mode & 3) === OEXEC)) {
      throw new StyxError(Ename.perm);
    }
  }

  read(offset: bigint, count: number, opts?: ReadOptions): Promise<Uint8Array> {
    try {
      this.#check(AREAD);
      const e = this.entry;
      if (e.children) throw new StyxError(Ename.isDir);
      e.atime = this.tree.now();
      if (offset < 0n || offset >= BigInt(e.length) || count <= 0) {
        return Promise.resolve(new Uint8Array(0));
      }
      const start = Number(offset);
      const end = Math.min(e.length, start + count);
      // A copy (later writes must not change it), where the reader wants it.
      const out = opts?.alloc?.(end - start) ?? new Uint8Array(end - start);
      out.set(e.data.subarray(start, end));
      return Promise.resolve(out);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  write(offset: bigint, data: Uint8Array, _opts?: OpOptions): Promise<number> {
    try {
      this.#check(AWRITE);
      const e = this.entry;
      if (e.children) throw new StyxError(Ename.isDir);
      if (offset < 0n) throw new StyxError(`negative offset ${offset}`);
      const at = e.mode & DMAPPEND ? BigInt(e.length) : offset;
      const end = at + BigInt(data.length);
      if (end > BigInt(this.tree.maxFileSize)) throw new StyxError("file too large");
      const start = Number(at);
      if (start + data.length > e.length) setLength(e, start + data.length);
      e.data.set(data, start);
      this.tree.touch(e, this.caller.user);
      return Promise.resolve(data.length);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  readDir(_opts?: OpOptions): Promise<Dir[]> {
    try {
      this.#check(AREAD);
      const e = this.entry;
      if (!e.children) throw new StyxError(Ename.notDir);
      e.atime = this.tree.now();
      return Promise.resolve([...e.children.values()].map(dirOf));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    const e = this.entry;
    if (e.mode & DMEXCL) e.exclusive = false;
    if ((this.mode & ORCLOSE) && !e.removed && !(e.children && e.children.size > 0)) {
      this.tree.unlink(e, this.caller.user);
    }
    return Promise.resolve();
  }
}
