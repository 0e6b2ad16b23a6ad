/**
 * A host directory as a file tree: Inferno's `#U`. Everything below the
 * exported root can be read and (unless read-only) written, created, removed
 * and changed with wstat; nothing outside it can be reached.
 *
 * Containment:
 * - ".." at the root stays at the root;
 * - names that are empty, ".", or hold "/" or NUL are refused ("illegal name");
 * - a symlink is followed only when its target (resolved with realpath) lies
 *   inside the root. A symlink that points outside is listed by directory
 *   reads (with the link's own lstat data) but cannot be walked through or
 *   opened: that gives "permission denied". Stat of a node reached through
 *   a symlink shows the target's data under the name that was walked.
 * - Nodes hold the resolved path (as `cd -P` would), so ".." after following
 *   a symlink goes to the parent of its target.
 * - Every host call resolves that path again from the root and follows no
 *   symlink anywhere in it (./beneath.ts): a directory or file swapped for
 *   a symlink after the walk gives "permission denied", never the place the
 *   link points to. On Linux with --allow-ffi the kernel does this
 *   (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, then calls on the
 *   descriptor it returns), so it holds whatever happens on the host
 *   meanwhile; elsewhere each path is checked just before use, which a swap
 *   racing that one call could slip past. {@link HostTree.containment}
 *   says which.
 * - A bind mount or hard link placed inside the root by the host's
 *   administrator is served like any other file.
 *
 * Host semantics worth knowing:
 * - Every operation runs with the permissions of the Ferry process, and a
 *   verified caller whose name is a host account is also held to that
 *   account's permission bits (see hostperm.ts); files it creates are given
 *   to it when the process may do so.
 * - Only regular files and directories can be opened; FIFOs, sockets and
 *   devices are listed but opening them gives "permission denied".
 * - Created files get `perm & (~0666 | (dirperm & 0666))`, directories
 *   `perm & (~0777 | (dirperm & 0777))` (open(5)), set exactly, whatever
 *   the process umask. DMAPPEND and DMEXCL are not host concepts: create
 *   ignores them and wstat refuses to set them. wstat changes only the 0777
 *   permission bits (any set-id or sticky bits are cleared by a chmod).
 * - qid.path is the inode number for files on the root's device (mixed with
 *   the device number for other devices), and never 0. qid.version changes
 *   with the file's mtime, ctime and size, and with every write made through
 *   this tree or a sibling (see {@link HostTreeSiblings}).
 *
 * Speed: metadata calls (lstat, open, close, mkdir, rename...) are made
 * synchronously, since an asynchronous file-system call costs several times
 * more than the system call itself and walk/open/clunk of small files is a
 * hot path. Data is read and written at explicit positions (pread/pwrite), so
 * concurrent reads on one open file never race. Transfers up to one default
 * iounit (512 KiB) are made synchronously: from the page cache that takes
 * tens of microseconds, less than a trip through the thread pool costs.
 * Larger ones go asynchronously so that they do not hold up other requests.
 * (Sending 64 KiB reads through the thread pool too was measured with 64
 * clients at once: more CPU per byte and no more bytes per second. A
 * listener uses more cores by running one tree per event loop instead,
 * tied together as siblings.)
 * Directory reads yield to the event loop every few hundred entries. With
 * openat2, a walk step (openat2, statx, close through FFI) costs less than
 * one Deno.lstatSync; the checked fallback adds a realpath to each call.
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
  type Dir,
  DMDIR,
  Ename,
  errorString,
  ORCLOSE,
  ORDWR,
  OTRUNC,
  OWRITE,
  type Qid,
  QTDIR,
  QTFILE,
  StyxError,
} from "../styx/types.ts";
import { encodeDir } from "../styx/codec.ts";
import { type HostUsers, hostUsers } from "./users.ts";
import { accountFor, AEXEC, AREAD, AWRITE, mustOwn, need } from "./hostperm.ts";
import {
  type Access,
  type Beneath,
  type BeneathDir,
  type BeneathFile,
  checkedBeneath,
  type HostStat,
  loadCheckedBeneath,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  SYNC_IO,
} from "./beneath.ts";
import { openat2Beneath } from "./openat2.ts";

/** Options for {@link HostTree}. */
export interface HostTreeOptions {
  /** Refuse every change (write, create, remove, wstat) with "permission denied". */
  readOnly?: boolean;
  /**
   * Ties to other trees serving the same directory in other workers of
   * this process (a listener with one event loop per core), so that all of
   * them behave as one tree would.
   */
  siblings?: HostTreeSiblings;
}

/** What trees serving one directory from several workers share (see {@link HostTreeOptions}). */
export interface HostTreeSiblings {
  /**
   * Write counts, mixed into qid.version, in shared memory (a
   * SharedArrayBuffer, at least {@link WRITE_SLOTS} counters): a write
   * through any of the trees changes the version every one of them reports.
   */
  writes: Int32Array;
  /**
   * Told of every rename made through this tree (the old and new path
   * below the root), to pass to the other trees' {@link HostTree.renamed}.
   */
  onRename?(from: string[], to: string[]): void;
}

/**
 * Write counters a tree keeps: one per file, by qid.path modulo this many.
 * Two files sharing one only change each other's qid.version needlessly,
 * and the memory stays the same however many files are written.
 */
export const WRITE_SLOTS = 4096;

/** Largest single read or write the tree performs (the server splits at iounit anyway). */
const MAX_IO = 16 * 1024 * 1024;
const MASK64 = (1n << 64n) - 1n;
const ALL32 = 0xffffffff;
const ALL64 = MASK64;
/** Dir.mode flag bits other than DMDIR: none of them can be set on a host file. */
const MODE_FLAGS = 0x7fff0000;
/** Directory entries stat'ed at a time: between two yields, and as one batch of dirEntries. */
const DIR_BATCH = 256;

/** State shared by every node of one attached tree. */
interface Ctx {
  realRoot: string;
  /** Every host call goes through it: none follows a symlink. */
  host: Beneath;
  rootDev: bigint;
  users: HostUsers;
  readOnly: boolean;
  /** Writes made through this tree (and its siblings), by qid.path: mixed into qid.version. */
  writes: Int32Array;
  /** Every node not yet closed, so a rename can move the others that name the same file. */
  live: Set<HostNode>;
  onRename?: (from: string[], to: string[]) => void;
}

/**
 * A host directory served as a {@link Tree}.
 *
 * @example
 * ```ts
 * import { HostTree } from "./host.ts";
 * import { OREAD } from "../styx/types.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/hello`, "hi\n");
 * const root = await new HostTree(dir, { readOnly: true }).attach({ user: "glenda" }, "");
 * const { node } = await root.walk(["hello"]);
 * const f = await node!.open(OREAD);
 * const text = new TextDecoder().decode(await f.read(0n, 100));
 * await f.close();
 * await Deno.remove(dir, { recursive: true });
 * if (text !== "hi\n") throw new Error("wrong");
 * ```
 */
export class HostTree implements Tree {
  /**
   * Writes copy their data and keep no reference to it, so a server may
   * reuse the buffer of a Twrite once the write has resolved.
   */
  readonly copiesWrites = true;
  /** The directory as given to the constructor. */
  readonly root: string;
  /** True when every change is refused. */
  readonly readOnly: boolean;
  #ctx: Promise<Ctx> | undefined;
  #containment: Beneath["kind"] | undefined;
  readonly #siblings: HostTreeSiblings | undefined;
  /** Nodes live once the context is made; renames come only after that. */
  #live: Set<HostNode> | undefined;

  /** Export `root`; nothing is checked until {@link ready} or the first attach. */
  constructor(root: string, opts: HostTreeOptions = {}) {
    this.root = root;
    this.readOnly = opts.readOnly ?? false;
    const w = opts.siblings?.writes;
    if (w && w.length < WRITE_SLOTS) {
      throw new RangeError(`siblings.writes holds ${w.length} counters; ${WRITE_SLOTS} are needed`);
    }
    this.#siblings = opts.siblings;
  }

  /**
   * A rename made through a sibling tree (see {@link HostTreeSiblings}):
   * nodes of this tree that name the file, or something below it, follow
   * it as they follow renames made through this tree.
   */
  renamed(from: string[], to: string[]): void {
    if (this.#live) moveNodes(this.#live, from, to);
  }

  /**
   * Check that the root exists and is a directory. Throws an Error that
   * names the directory when it is not (a local error, for command lines).
   */
  async ready(): Promise<void> {
    await this.#context();
  }

  /**
   * How paths are kept below the root, once {@link ready} (or an attach)
   * has run: "openat2" when the kernel resolves every path from the root
   * without following symlinks (Linux 5.6+, --allow-ffi); "checked" when
   * each path is checked with realpath before use, which a symlink swapped
   * in on the host during that call could still slip past.
   */
  get containment(): "openat2" | "checked" | undefined {
    return this.#containment;
  }

  #context(): Promise<Ctx> {
    this.#ctx ??= (async () => {
      let realRoot: string;
      let host: Beneath;
      let st: HostStat;
      try {
        realRoot = Deno.realPathSync(this.root);
        if (!Deno.statSync(realRoot).isDirectory) throw new StyxError(Ename.notDir);
        const beneath = openat2Beneath(realRoot);
        if (beneath) host = beneath;
        else {
          await loadCheckedBeneath();
          host = checkedBeneath(realRoot);
        }
        st = host.lstat([]);
      } catch (e) {
        this.#ctx = undefined;
        throw new Error(`cannot export '${this.root}': ${hostError(e).message}`);
      }
      this.#containment = host.kind;
      const live = this.#live = new Set<HostNode>();
      return {
        realRoot,
        host,
        rootDev: st.dev,
        users: await hostUsers(),
        readOnly: this.readOnly,
        writes: this.#siblings?.writes ?? new Int32Array(WRITE_SLOTS),
        live,
        onRename: this.#siblings?.onRename,
      };
    })();
    return this.#ctx;
  }

  /**
   * Attach to the root, or with a non-empty `aname` ("sub/dir") to a
   * directory below it, reached as a walk would reach it.
   */
  async attach(caller: Caller, aname: string): Promise<Node> {
    let ctx: Ctx;
    try {
      ctx = await this.#context();
    } catch {
      throw new StyxError(Ename.notFound);
    }
    let root: HostNode;
    try {
      root = new HostNode(ctx, [], "/", qidOf(ctx, ctx.host.lstat([])), caller);
    } catch (e) {
      throw hostError(e);
    }
    const names = aname.split("/").filter((n) => n !== "" && n !== ".");
    if (names.length === 0) return root;
    const r = await root.walk(names);
    if (!r.node) throw new StyxError(Ename.notFound);
    return r.node;
  }
}

/** Turn a host failure into a StyxError with Plan 9 wording (never a host path). */
function hostError(e: unknown): StyxError {
  if (e instanceof StyxError) return e;
  const code = e instanceof Error ? (e as Error & { code?: unknown }).code : undefined;
  switch (code) {
    case "ENOENT":
      return new StyxError(Ename.notFound);
    case "EACCES":
    case "EPERM":
    case "EROFS":
    case "ELOOP":
    case "EXDEV":
      return new StyxError(Ename.perm);
    case "EEXIST":
      return new StyxError(Ename.exists);
    case "EISDIR":
      return new StyxError(Ename.isDir);
    case "ENOTDIR":
      return new StyxError(Ename.notDir);
    case "ENOTEMPTY":
      return new StyxError(Ename.notEmpty);
    case "ENAMETOOLONG":
      return new StyxError(Ename.tooLong);
    case "ENOSPC":
    case "EDQUOT":
      return new StyxError("file system full");
    case "EFBIG":
      return new StyxError("file too large");
    case "EBUSY":
    case "ETXTBSY":
      return new StyxError("file in use");
    case "EBADF":
      return new StyxError(Ename.notOpen);
  }
  if (
    e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied ||
    e instanceof Deno.errors.AlreadyExists || e instanceof Deno.errors.IsADirectory ||
    e instanceof Deno.errors.NotADirectory
  ) {
    return new StyxError(errorString(e));
  }
  return new StyxError(Ename.io);
}

/** Run a synchronous host call, turning its failure into a StyxError. */
function sys<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw hostError(e);
  }
}

function checkName(name: string): void {
  if (name === "" || name === "." || name.includes("/") || name.includes("\0")) {
    throw new StyxError(Ename.badName);
  }
}

function pathOf(ctx: Ctx, rel: readonly string[]): string {
  if (rel.length === 0) return ctx.realRoot;
  return ctx.realRoot === "/" ? "/" + rel.join("/") : ctx.realRoot + "/" + rel.join("/");
}

/** The path of `real` below the root, or undefined when it is outside. */
function relOf(ctx: Ctx, real: string): string[] | undefined {
  if (real === ctx.realRoot) return [];
  const prefix = ctx.realRoot === "/" ? "/" : ctx.realRoot + "/";
  if (!real.startsWith(prefix)) return undefined;
  return real.slice(prefix.length).split("/");
}

function seconds(ms: number): number {
  return Math.floor(ms / 1000) >>> 0;
}

function isDir(st: HostStat): boolean {
  return (st.mode & S_IFMT) === S_IFDIR;
}

function isLink(st: HostStat): boolean {
  return (st.mode & S_IFMT) === S_IFLNK;
}

/** A 32-bit mixing step (murmur3's finaliser): every input bit moves every output bit. */
function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Fold the non-negative integer `x` (below 2^53) into the hash `h`, both 32-bit halves. */
function fold(h: number, x: number): number {
  return mix32(mix32(h ^ (x >>> 0)) ^ Math.floor(x / 0x100000000));
}

/** The qid.path of the file `st` describes. */
function qidPath(ctx: Ctx, st: HostStat): bigint {
  const path = st.dev === ctx.rootDev
    ? st.ino
    : (st.ino ^ ((st.dev ^ ctx.rootDev) << 40n)) & MASK64;
  return path === 0n ? 1n << 63n : path;
}

function qidOf(ctx: Ctx, st: HostStat): Qid {
  // Plain numbers, not bigint: this runs for every walk and stat.
  const path = qidPath(ctx, st);
  let v = fold(0, st.mtimeMs);
  v = fold(v, st.ctimeMs);
  v = fold(v, st.size);
  v = fold(v, Atomics.load(ctx.writes, writeSlot(path)));
  return { type: isDir(st) ? QTDIR : QTFILE, version: v, path };
}

/** The write counter of the file with qid.path `path`. */
function writeSlot(path: bigint): number {
  return Number(BigInt.asUintN(32, path)) % WRITE_SLOTS;
}

/** Nodes naming `from` or something below it now name `to` (a rename within one directory). */
function moveNodes(live: Set<HostNode>, from: string[], to: string[]): void {
  const old = from[from.length - 1];
  const now = to[to.length - 1]!;
  for (const n of live) {
    if (n.rel.length >= from.length && from.every((x, i) => n.rel[i] === x)) {
      // Clones of this file that were walked by its own name take the new one.
      if (n.rel.length === from.length && n.name === old) n.name = now;
      n.rel = [...to, ...n.rel.slice(from.length)];
    }
  }
}

function dirOf(ctx: Ctx, st: HostStat, name: string): Dir {
  const uid = ctx.users.userName(st.uid);
  const dir = isDir(st);
  return {
    type: 0,
    dev: 0,
    qid: qidOf(ctx, st),
    mode: ((st.mode & 0o777) | (dir ? DMDIR : 0)) >>> 0,
    atime: seconds(st.atimeMs),
    mtime: seconds(st.mtimeMs),
    length: dir ? 0n : BigInt(st.size),
    name,
    uid,
    gid: ctx.users.groupName(st.gid),
    muid: uid,
  };
}

/** True when the host said the same of a file both times (a symlink never is: it is refused). */
function sameStat(a: HostStat, b: HostStat): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.mode === b.mode && a.uid === b.uid &&
    a.gid === b.gid && a.size === b.size && a.mtimeMs === b.mtimeMs &&
    a.ctimeMs === b.ctimeMs && a.atimeMs === b.atimeMs && !isLink(b);
}

/** The largest offset a host file is read or written at. */
const MAX_POSITION = BigInt(Number.MAX_SAFE_INTEGER);

function toPosition(offset: bigint): number {
  if (offset < 0n || offset > MAX_POSITION) {
    throw new StyxError(`offset ${offset} is beyond what the host file system supports`);
  }
  return Number(offset);
}

function wantsWrite(mode: number): boolean {
  const acc = mode & 3;
  return acc === OWRITE || acc === ORDWR || (mode & OTRUNC) !== 0;
}

/** The access bits opening with 9P `mode` needs. */
function openBits(mode: number): number {
  const acc = mode & 3;
  const bits = acc === OWRITE ? AWRITE : acc === ORDWR ? AREAD | AWRITE : acc === 3 ? AEXEC : AREAD;
  return (mode & OTRUNC) !== 0 ? bits | AWRITE : bits;
}

/** The access a 9P open mode asks of the host (OEXEC reads). */
function access(mode: number): Access {
  const acc = mode & 3;
  return acc === OWRITE ? 1 : acc === ORDWR ? 2 : 0;
}

/** A file or directory below the root, reached by walking. */
class HostNode implements Node {
  #qid: Qid;
  /** What {@link statEntryNow} made last, and from what. */
  #lastStat: { st: HostStat; name: string; writes: number; entry: Uint8Array } | null = null;

  /**
   * `rel` is the resolved path below the root (no symlink in it); `name`
   * is the name the client walked, which differs when it walked a symlink.
   * `caller`: who the node acts for, unless an operation names another.
   */
  constructor(
    readonly ctx: Ctx,
    public rel: string[],
    public name: string,
    qid: Qid,
    readonly caller?: Caller,
  ) {
    this.#qid = qid;
    ctx.live.add(this);
  }

  /** The host account an operation is checked as (undefined: not checked). */
  #acct(opts?: OpOptions) {
    return accountFor(this.ctx.users, opts?.caller ?? this.caller);
  }

  #parentStat(): HostStat {
    return this.ctx.host.lstat(this.rel.slice(0, -1));
  }

  get qid(): Qid {
    return this.#qid;
  }

  get place(): readonly string[] {
    return this.rel;
  }

  walk(names: string[], opts?: OpOptions): Promise<WalkResult> {
    try {
      return Promise.resolve(this.#walk(names, opts, false));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** A walk whose missing first name gives `{ qids: [] }`, for unions. */
  tryWalk(names: string[], opts?: OpOptions): Promise<WalkResult> {
    try {
      return Promise.resolve(this.#walk(names, opts, true));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The walk, made at once: only system calls. */
  walkNow(names: string[], opts?: OpOptions): WalkResult {
    return this.#walk(names, opts, false);
  }

  #walk(names: string[], opts: OpOptions | undefined, miss: boolean): WalkResult {
    // Nodes walked to act for whoever walked.
    const caller = opts?.caller ?? this.caller;
    if (names.length === 0) {
      return { qids: [], node: new HostNode(this.ctx, this.rel, this.name, this.#qid, caller) };
    }
    const qids: Qid[] = [];
    let rel = this.rel;
    let qid = this.#qid;
    let walked = this.name;
    const acct = this.#acct(opts);
    for (const name of names) {
      try {
        checkName(name);
        if ((qid.type & QTDIR) === 0) throw new StyxError(Ename.walkNoDir);
        if (acct) need(acct, this.ctx.host.lstat(rel), AEXEC);
        [rel, qid, walked] = this.#step(rel, name);
      } catch (e) {
        if (qids.length > 0 || (miss && (e as { code?: unknown } | null)?.code === "ENOENT")) {
          return { qids };
        }
        throw hostError(e);
      }
      qids.push(qid);
    }
    return { qids, node: new HostNode(this.ctx, rel, walked, qid, caller) };
  }

  #step(rel: string[], name: string): [string[], Qid, string] {
    const ctx = this.ctx;
    if (name === "..") {
      const up = rel.slice(0, -1);
      return [up, qidOf(ctx, ctx.host.lstat(up)), up[up.length - 1] ?? "/"];
    }
    const next = rel.length === 0 ? [name] : [...rel, name];
    const st = ctx.host.lstat(next);
    if (!isLink(st)) return [next, qidOf(ctx, st), name];
    // realpath only computes where the link leads; the path found is then
    // used like any other, through the resolver, which refuses a symlink
    // anywhere in it.
    const real = Deno.realPathSync(pathOf(ctx, next));
    const inside = relOf(ctx, real);
    if (!inside) throw new StyxError(Ename.perm);
    const target = ctx.host.lstat(inside);
    if (isLink(target)) throw new StyxError(Ename.perm);
    return [inside, qidOf(ctx, target), name];
  }

  open(mode: number, opts?: OpOptions): Promise<OpenFile> {
    try {
      return Promise.resolve(this.#open(mode, opts));
    } catch (e) {
      return Promise.reject(hostError(e));
    }
  }

  #open(mode: number, opts?: OpOptions): OpenFile {
    const ctx = this.ctx;
    if (ctx.readOnly && (wantsWrite(mode) || (mode & ORCLOSE) !== 0)) {
      throw new StyxError(Ename.perm);
    }
    const acct = this.#acct(opts);
    if (acct) {
      const st = ctx.host.lstat(this.rel);
      need(acct, st, isDir(st) ? AREAD : openBits(mode));
      if (mode & ORCLOSE) need(acct, this.#parentStat(), AWRITE | AEXEC);
    }
    // A symlink here replaced the walked file: the resolver refuses it.
    const r = ctx.host.open(this.rel, access(mode), (mode & OTRUNC) !== 0);
    this.#qid = qidOf(ctx, r.st);
    if (r.dir) {
      if (wantsWrite(mode)) {
        r.dir.close();
        throw new StyxError(Ename.isDir);
      }
      return new HostDir(this, r.dir, mode);
    }
    return new HostFile(this, r.file!, mode);
  }

  create(name: string, perm: number, mode: number, opts?: OpOptions): Promise<Created> {
    try {
      return Promise.resolve(this.#create(name, perm, mode, opts));
    } catch (e) {
      return Promise.reject(hostError(e));
    }
  }

  #create(name: string, perm: number, mode: number, opts?: OpOptions): Created {
    const ctx = this.ctx;
    checkName(name);
    if (name === "..") throw new StyxError(Ename.badName);
    if (ctx.readOnly) throw new StyxError(Ename.perm);
    if ((this.#qid.type & QTDIR) === 0) throw new StyxError(Ename.notDir);
    const dirSt = ctx.host.lstat(this.rel);
    if (!isDir(dirSt)) throw new StyxError(Ename.notDir);
    const acct = this.#acct(opts);
    const caller = opts?.caller ?? this.caller;
    need(acct, dirSt, AWRITE | AEXEC);
    // What a checked caller creates is its own, as on the host.
    const own = (names: string[]): HostStat | undefined => {
      if (!acct) return undefined;
      try {
        ctx.host.chown(names, acct.uid, acct.gid);
        return ctx.host.lstat(names);
      } catch {
        return undefined; // only a process running as root may give a file away
      }
    };
    const dirperm = dirSt.mode & 0o777;
    const rel = [...this.rel, name];
    if ((perm & DMDIR) !== 0) {
      if (wantsWrite(mode)) throw new StyxError(Ename.isDir);
      const bits = perm & (~0o777 | dirperm) & 0o777;
      const st = ctx.host.mkdir(rel, bits);
      const node = new HostNode(ctx, rel, name, qidOf(ctx, own(rel) ?? st), caller);
      try {
        const r = ctx.host.open(rel, 0, false);
        if (!r.dir) throw new StyxError(Ename.notDir);
        return { node, file: new HostDir(node, r.dir, mode) };
      } catch (e) {
        ctx.live.delete(node);
        throw e;
      }
    }
    const bits = perm & (~0o666 | (dirperm & 0o666)) & 0o777;
    const r = ctx.host.create(rel, access(mode), bits);
    const node = new HostNode(ctx, rel, name, qidOf(ctx, own(rel) ?? r.st), caller);
    return { node, file: new HostFile(node, r.file, mode) };
  }

  stat(_opts?: OpOptions): Promise<Dir> {
    try {
      return Promise.resolve(this.statNow());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The stat, made at once: one system call or three. */
  statNow(_opts?: OpOptions): Dir {
    try {
      return this.#dirFrom(this.ctx.host.lstat(this.rel));
    } catch (e) {
      throw hostError(e);
    }
  }

  /** The Dir the host's answer `st` for this node makes. */
  #dirFrom(st: HostStat): Dir {
    // Nodes hold resolved paths: a symlink here replaced the walked file.
    if (isLink(st)) throw new StyxError(Ename.perm);
    const d = dirOf(this.ctx, st, this.name);
    this.#qid = d.qid;
    return d;
  }

  /**
   * {@link statNow} as the bytes of its stat(5) entry, size[2] included:
   * while the host's answer (and the name, and the writes counted) stay as
   * they were, the entry made last time is given again, which saves
   * building and encoding it for a client that stats the same file over
   * and over. The buffer is the node's, valid until its next call.
   */
  statEntryNow(): Uint8Array {
    let st: HostStat;
    try {
      st = this.ctx.host.lstat(this.rel);
    } catch (e) {
      throw hostError(e);
    }
    const last = this.#lastStat;
    const writes = Atomics.load(this.ctx.writes, writeSlot(qidPath(this.ctx, st)));
    if (
      last !== null && last.name === this.name && last.writes === writes &&
      sameStat(last.st, st)
    ) {
      return last.entry;
    }
    let d: Dir;
    try {
      // The host's answer just taken, not a second lstat.
      d = this.#dirFrom(st);
    } catch (e) {
      throw hostError(e);
    }
    const entry = encodeDir(d);
    this.#lastStat = { st, name: this.name, writes, entry };
    return entry;
  }

  wstat(d: Dir, opts?: OpOptions): Promise<void> {
    try {
      this.#wstat(d, opts);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(hostError(e));
    }
  }

  #wstat(d: Dir, opts?: OpOptions): void {
    const ctx = this.ctx;
    const host = ctx.host;
    if (ctx.readOnly) throw new StyxError(Ename.perm);
    const st = host.lstat(this.rel);
    // Nodes hold resolved paths: a symlink here appeared after the walk.
    if (isLink(st)) throw new StyxError(Ename.perm);
    // The name compared and kept is the file's own, not the one walked.
    const cur = dirOf(ctx, st, this.rel[this.rel.length - 1] ?? "/");
    const dir = isDir(st);

    // Check everything first, so a refused wstat changes nothing.
    if (d.type !== 0xffff && d.type !== cur.type) throw new StyxError(Ename.noWstat);
    if (d.dev !== ALL32 && d.dev !== cur.dev) throw new StyxError(Ename.noWstat);
    if (d.qid.type !== 0xff && d.qid.type !== cur.qid.type) throw new StyxError(Ename.noWstat);
    if (d.qid.path !== ALL64 && d.qid.path !== cur.qid.path) throw new StyxError(Ename.noWstat);
    if (d.uid !== "" && d.uid !== cur.uid && d.uid !== String(st.uid)) {
      throw new StyxError(Ename.noWstat);
    }
    if (d.muid !== "" && d.muid !== cur.muid) throw new StyxError(Ename.noWstat);

    let newName: string | undefined;
    if (d.name !== "" && d.name !== cur.name && d.name !== this.name) {
      checkName(d.name);
      if (d.name === ".." || this.rel.length === 0) throw new StyxError(Ename.badName);
      newName = d.name;
    }
    let length: number | undefined;
    if (d.length !== ALL64 && d.length !== cur.length) {
      if (dir) throw new StyxError(Ename.isDir);
      length = toPosition(d.length);
    }
    let perm: number | undefined;
    if (d.mode !== ALL32) {
      if ((d.mode & DMDIR) !== 0 && !dir) throw new StyxError(Ename.noWstat);
      // Plan 9 flags the host cannot keep (DMAPPEND, DMEXCL, DMAUTH, ...) are
      // refused; Unix file-type and set-id bits (9pfuse passes st_mode through,
      // e.g. 0100644) are ignored.
      if ((d.mode & MODE_FLAGS) !== 0) throw new StyxError(Ename.noWstat);
      if ((d.mode & 0o777) !== (cur.mode & 0o777)) perm = d.mode & 0o777;
    }
    const mtime = d.mtime !== ALL32 && d.mtime !== cur.mtime ? d.mtime : undefined;
    const atime = d.atime !== ALL32 && d.atime !== cur.atime ? d.atime : undefined;
    let gid: number | undefined;
    if (d.gid !== "" && d.gid !== cur.gid && d.gid !== String(st.gid)) {
      gid = ctx.users.gid(d.gid);
      if (gid === undefined) throw new StyxError("unknown group");
    }
    const acct = this.#acct(opts);
    if (acct) {
      // As on the host: the owner changes modes, times and groups (only to
      // one of its own), anyone who may write changes the length, and a
      // rename needs write permission in the directory.
      if (perm !== undefined || mtime !== undefined || atime !== undefined || gid !== undefined) {
        mustOwn(acct, st);
      }
      if (gid !== undefined && !acct.gids.has(gid)) throw new StyxError(Ename.perm);
      if (length !== undefined) need(acct, st, AWRITE);
      if (newName !== undefined) need(acct, this.#parentStat(), AWRITE | AEXEC);
    }
    if (newName !== undefined) {
      let exists = true;
      try {
        host.lstat([...this.rel.slice(0, -1), newName]);
      } catch (e) {
        if (hostError(e).message !== Ename.notFound) throw e;
        exists = false;
      }
      if (exists) throw new StyxError(Ename.exists);
    }

    if (length !== undefined) host.truncate(this.rel, length);
    if (perm !== undefined) host.chmod(this.rel, perm);
    if (mtime !== undefined || atime !== undefined) host.utimes(this.rel, atime, mtime);
    if (gid !== undefined) host.chgrp(this.rel, gid);
    if (newName !== undefined) {
      const from = this.rel;
      host.rename(from, newName);
      const to = [...from.slice(0, -1), newName];
      moveNodes(ctx.live, from, to);
      this.name = newName;
      ctx.onRename?.(from, to);
    }
  }

  remove(opts?: OpOptions): Promise<void> {
    // The node is released whether or not the remove succeeds.
    this.ctx.live.delete(this);
    try {
      if (this.ctx.readOnly || this.rel.length === 0) throw new StyxError(Ename.perm);
      const acct = this.#acct(opts);
      if (acct) {
        const dir = this.#parentStat();
        need(acct, dir, AWRITE | AEXEC);
        // In a sticky directory (/tmp) only the file's or the directory's owner removes.
        if (dir.mode & 0o1000 && dir.uid !== acct.uid) mustOwn(acct, this.ctx.host.lstat(this.rel));
      }
      this.ctx.host.remove(this.rel);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(hostError(e));
    }
  }

  close(): Promise<void> {
    this.ctx.live.delete(this);
    return Promise.resolve();
  }

  closeNow(): void {
    this.ctx.live.delete(this);
  }
}

/** An open regular file: reads and writes at explicit positions (pread/pwrite). */
class HostFile implements OpenFile {
  readonly iounit = 0;
  #closed = false;
  /** Reads and writes in flight: the descriptor is closed only after them. */
  #busy = 0;
  #idle: (() => void) | undefined;

  /** The file's size as last seen: reads below it skip a size check. */
  #size: number;

  constructor(readonly node: HostNode, readonly file: BeneathFile, readonly mode: number) {
    this.#size = file.size;
  }

  get qid(): Qid {
    return this.node.qid;
  }

  async #io<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new StyxError(Ename.notOpen);
    this.#busy++;
    try {
      return await fn();
    } catch (e) {
      throw hostError(e);
    } finally {
      if (--this.#busy === 0) this.#idle?.();
    }
  }

  read(offset: bigint, count: number, opts?: ReadOptions): Promise<Uint8Array> {
    return this.#io(async () => {
      if ((this.mode & 3) === OWRITE) throw new StyxError(Ename.perm);
      const pos = toPosition(offset);
      let n = Math.min(Math.max(0, Math.trunc(count)), MAX_IO);
      if (n === 0) return new Uint8Array(0);
      // Size the buffer by what the file holds, so a large read of a small
      // file allocates little; look again only at the last known end.
      if (pos >= this.#size) this.#size = this.file.stat().size;
      n = Math.min(n, this.#size - pos);
      if (n <= 0) return new Uint8Array(0);
      const buf = opts?.alloc?.(n) ?? new Uint8Array(n);
      const got = await this.file.pread(buf, pos);
      return got === n ? buf : buf.subarray(0, got);
    });
  }

  write(offset: bigint, data: Uint8Array, _opts?: OpOptions): Promise<number> {
    return this.#io(async () => {
      const acc = this.mode & 3;
      if (acc !== OWRITE && acc !== ORDWR) throw new StyxError(Ename.perm);
      const pos = toPosition(offset);
      toPosition(offset + BigInt(data.length));
      let done = 0;
      while (done < data.length) {
        const n = await this.file.pwrite(data, done, pos + done);
        if (n <= 0) throw new StyxError(Ename.io);
        done += n;
      }
      this.#wrote(pos + done);
      return done;
    });
  }

  /** The read made at once when it is one system call's worth (see SYNC_IO). */
  readNow(offset: bigint, count: number, opts?: ReadOptions): Uint8Array | undefined {
    const file = this.file;
    if (!file.preadNow || count > SYNC_IO) return undefined;
    try {
      if (this.#closed) throw new StyxError(Ename.notOpen);
      if ((this.mode & 3) === OWRITE) throw new StyxError(Ename.perm);
      const pos = toPosition(offset);
      let n = Math.min(Math.max(0, Math.trunc(count)), MAX_IO);
      if (n === 0) return new Uint8Array(0);
      // As read: the buffer sized by what the file holds.
      if (pos >= this.#size) this.#size = file.stat().size;
      n = Math.min(n, this.#size - pos);
      if (n <= 0) return new Uint8Array(0);
      const buf = opts?.alloc?.(n) ?? new Uint8Array(n);
      const got = file.preadNow(buf, pos);
      return got === n ? buf : buf.subarray(0, got);
    } catch (e) {
      throw hostError(e);
    }
  }

  /** The write made at once when it is one system call's worth (see SYNC_IO). */
  writeNow(offset: bigint, data: Uint8Array): number | undefined {
    const file = this.file;
    if (!file.pwriteNow || data.length > SYNC_IO) return undefined;
    try {
      if (this.#closed) throw new StyxError(Ename.notOpen);
      const acc = this.mode & 3;
      if (acc !== OWRITE && acc !== ORDWR) throw new StyxError(Ename.perm);
      const pos = toPosition(offset);
      // (The end as a number first: a bigint is made only near the limit.)
      if (pos + data.length > Number.MAX_SAFE_INTEGER) toPosition(offset + BigInt(data.length));
      let done = 0;
      while (done < data.length) {
        const n = file.pwriteNow(data, done, pos + done);
        if (n <= 0) throw new StyxError(Ename.io);
        done += n;
      }
      this.#wrote(pos + done);
      return done;
    } catch (e) {
      throw hostError(e);
    }
  }

  /** Bookkeeping after a write that ended at `end`: the size, and qid.version. */
  #wrote(end: number): void {
    if (end > this.#size) this.#size = end;
    Atomics.add(this.node.ctx.writes, writeSlot(this.node.qid.path), 1);
  }

  readDir(_opts?: OpOptions): Promise<Dir[]> {
    return Promise.reject(new StyxError(Ename.notDir));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#busy > 0) await new Promise<void>((r) => (this.#idle = r));
    try {
      this.file.close();
    } catch {
      // Nothing to do: the descriptor is gone either way.
    }
    if (this.mode & ORCLOSE) removeOnClose(this.node);
  }
}

/** ORCLOSE: Plan 9 clunks succeed even when the remove fails. */
function removeOnClose(node: HostNode): void {
  try {
    node.ctx.host.remove(node.rel);
  } catch {
    // Nothing to report: the clunk itself succeeded.
  }
}

/** An open directory: its entries, each with its stat. */
class HostDir implements OpenFile {
  readonly iounit = 0;
  #closed = false;

  constructor(readonly node: HostNode, readonly dir: BeneathDir, readonly mode: number) {}

  get qid(): Qid {
    return this.node.qid;
  }

  read(_offset: bigint, _count: number, _opts?: OpOptions): Promise<Uint8Array> {
    return Promise.reject(new StyxError(Ename.isDir));
  }

  write(_offset: bigint, _data: Uint8Array, _opts?: OpOptions): Promise<number> {
    return Promise.reject(new StyxError(Ename.isDir));
  }

  async readDir(opts?: OpOptions): Promise<Dir[]> {
    const out: Dir[] = [];
    const it = this.dirEntries(opts);
    for (let r = await it.next(); !r.done; r = await it.next()) {
      for (const d of r.value) out.push(d);
      // setImmediate, not setTimeout(0): a timer costs milliseconds a yield.
      await new Promise((res) => setImmediate(res));
    }
    return out;
  }

  /**
   * The entries DIR_BATCH at a time, each batch stat'ed when asked for:
   * an open directory holds its names, not every entry's stat.
   */
  async *dirEntries(opts?: OpOptions): AsyncGenerator<Dir[]> {
    if (this.#closed) throw new StyxError(Ename.notOpen);
    const names = sys(() => this.dir.names());
    for (let i = 0; i < names.length; i += DIR_BATCH) {
      if (opts?.signal?.aborted) throw new StyxError(Ename.interrupted);
      if (this.#closed) throw new StyxError(Ename.notOpen);
      const out: Dir[] = [];
      for (const name of names.slice(i, i + DIR_BATCH)) {
        const d = this.#entry(name);
        if (d) out.push(d);
      }
      if (out.length > 0) yield out;
    }
  }

  /**
   * One directory entry. A symlink to somewhere inside the root shows its
   * target's stat under the link's name; one pointing outside (or dangling)
   * shows the link itself. An entry that vanished meanwhile is left out.
   */
  #entry(name: string): Dir | undefined {
    const ctx = this.node.ctx;
    try {
      const st = this.dir.lstat(name);
      if (isLink(st)) {
        try {
          const inside = relOf(ctx, Deno.realPathSync(pathOf(ctx, [...this.node.rel, name])));
          const target = inside && ctx.host.lstat(inside);
          if (target && !isLink(target)) return dirOf(ctx, target, name);
        } catch {
          // Dangling or unreadable: show the link itself.
        }
      }
      return dirOf(ctx, st, name);
    } catch {
      return undefined;
    }
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    this.dir.close();
    if (this.mode & ORCLOSE) removeOnClose(this.node);
    return Promise.resolve();
  }
}
