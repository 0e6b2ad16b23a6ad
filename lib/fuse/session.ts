/**
 * One FUSE connection serving a {@link Tree}: reads kernel requests from
 * /dev/fuse, maps each onto walk/open/read/write/create/stat/wstat/remove
 * of the tree, and writes the replies. Requests run concurrently; an
 * INTERRUPT aborts the matching request's signal (a remote tree turns that
 * into Tflush).
 *
 * Inodes: the kernel's node ids name (parent, name) pairs. A node id holds
 * a walked {@link Node} only once an operation needed one, so listing a big
 * directory with READDIRPLUS costs no walks at all.
 *
 * @module
 */

import {
  type Dir,
  DMDIR,
  Ename,
  errorString,
  nullDir,
  ORDWR,
  OREAD,
  OTRUNC,
  OWRITE,
  QTAPPEND,
  QTDIR,
  StyxError,
} from "../styx/types.ts";
import { type Node, type OpenFile, walkOpen, walkStat } from "../fs/tree.ts";
import { Errno, readFd, waitReadable, waitReadableNow, writeParts } from "./ffi.ts";
import {
  type Attr,
  attrOut,
  cString,
  decodeInHeader,
  decodeInitIn,
  direntSize,
  ENTRY_OUT,
  entryOut,
  Fattr,
  FOPEN_DIRECT_IO,
  FOPEN_KEEP_CACHE,
  IN_HEADER,
  InitFlag,
  initOut,
  KERNEL_MAJOR,
  KERNEL_MINOR,
  Op,
  openOut,
  OUT_HEADER,
  putDirent,
  putEntry,
  statfsOut,
  utf8Length,
  type Validity,
  writeOut,
} from "./proto.ts";

/** Tuning of a {@link FuseSession}. */
export interface SessionOptions {
  /** How long the kernel may trust a name lookup, in seconds (default 1). */
  entryTimeout?: number;
  /** How long the kernel may trust file attributes, in seconds (default 1). */
  attrTimeout?: number;
  /** Bypass the page cache for every file (default: only for files of length 0). */
  directIo?: boolean;
  /** Largest READ/WRITE the kernel sends, in bytes (default 1 MiB). */
  maxIo?: number;
  /** Owner shown for every file (default: this process's uid). */
  uid?: number;
  /** Group shown for every file (default: this process's gid). */
  gid?: number;
  /** Print each request and its result on stderr. */
  debug?: boolean;
}

const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_TRUNC = 0o1000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const DT_DIR = 4;
const DT_REG = 8;
const ROOT_ID = 1n;
/** Files up to this size are read in the same round trip as they are opened. */
const HEAD_MAX = 128 * 1024;
/** Files opened ahead of a reader going through a directory in order (tar, cp -r, grep -r). */
const AHEAD = 16;
/** In-order opens in one directory before files are opened ahead. */
const AHEAD_AFTER = 2;
/** Subdirectory listings read ahead of a walk through a tree (ls -R, find, tar, git). */
const DIRS_AHEAD = 8;
/** Subdirectories read for lookups after the one being looked up during a scan. */
const SCAN_AHEAD = 4;
/** Most subdirectories held read ahead of the kernel's lookups. */
const UNSEEN_MAX = 64;
/** Subdirectories of one directory opened before their siblings are read ahead. */
const DIRS_AHEAD_AFTER = 2;
/**
 * How long the loop waits for the next request on its own thread, when
 * nothing else is in flight, before handing the wait to a worker thread.
 * A program doing one call after another (tar, git, ls) sends its next
 * request within microseconds of a reply; the worker thread's hand-over
 * costs more than the request itself.
 */
const IDLE_WAIT_MS = 2;
/** Microtask turns given to requests answered without waiting on anything. */
const SETTLE_TURNS = 16;
/** Longest a released file waits for an open to share its clunk's write. */
const CLOSE_DELAY_MS = 2;

/**
 * The errno value a Styx error string stands for, matched on Plan 9's
 * wording (as 9pfuse does): "file does not exist" is ENOENT, "permission
 * denied" EACCES, "file exists" EEXIST, "directory not empty" ENOTEMPTY,
 * "is a directory" EISDIR, "not a directory" ENOTDIR; anything else EIO.
 *
 * @example
 * ```ts
 * import { errnoOf } from "./session.ts";
 * if (errnoOf(new Error("file does not exist")) !== 2) throw new Error("wrong");
 * ```
 */
export function errnoOf(e: unknown): number {
  const s = errorString(e).toLowerCase();
  if (s.includes("does not exist") || s.includes("not found") || s.includes("no such")) {
    return Errno.ENOENT;
  }
  if (s.includes("permission denied") || s.includes("prohibited")) return Errno.EACCES;
  if (s.includes("not empty")) return Errno.ENOTEMPTY;
  if (s.includes("not a directory") || s.includes("walk in non-directory")) return Errno.ENOTDIR;
  if (s.includes("is a directory")) return Errno.EISDIR;
  if (s.includes("exists")) return Errno.EEXIST;
  if (s === Ename.interrupted) return Errno.EINTR;
  if (s.includes("name too long")) return Errno.ENAMETOOLONG;
  if (s.includes("illegal name")) return Errno.EINVAL;
  if (s.includes("read-only") || s.includes("read only")) return Errno.EROFS;
  if (s.includes("no space")) return Errno.ENOSPC;
  return Errno.EIO;
}

/** A local failure carrying its errno directly. */
class Fail extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

/** The errno value for a failure of either kind. */
function errnoFrom(e: unknown): number {
  return e instanceof Fail ? e.errno : errnoOf(e);
}

interface Inode {
  id: bigint;
  /** `${id}/`: the start of the keys of the names in this directory. */
  prefix: string;
  parent: Inode | null;
  name: string;
  qpath: bigint;
  isDir: boolean;
  node: Node | null;
  /** Rename epoch the cached node was walked in (paths may be stale after a rename). */
  epoch: number;
  walking: Promise<Node> | null;
  nlookup: number;
  /** Length as last seen (stat, lookup or directory read). */
  length: bigint;
  /** Attributes as last seen, and when (performance.now()); 0: not to be reused. */
  dir: Dir | null;
  dirAt: number;
  /** For directories: the entries by name as last read, and when. */
  listing: Map<string, Dir> | null;
  listingAt: number;
  listingLoad: Promise<Map<string, Dir> | null> | null;
  /**
   * For directories: the entries of `listing` in order when they were read
   * ahead (or for lookups) and no OPENDIR has used them yet; the next one may.
   */
  unread: Dir[] | null;
  /** For directories: `listing` was read to answer lookups (names are being looked up one by one). */
  scanned?: boolean;
  /** For directories: bumped by every change made through the mount (a load begun before is stale). */
  gen: number;
  /** For directories: subdirectories opened (by name) since `dirsAt`, and the one opened last. */
  dirsOpened?: Set<string>;
  dirsAt?: number;
  lastDir?: string;
  /** For directories: the subdirectories of `listing`, in its order and sorted, with places. */
  subdirs?: {
    of: Map<string, Dir>;
    listed: [string[], Map<string, number>];
    sorted: [string[], Map<string, number>];
  };
  /** Lookups that missed the listing since `missAt`. */
  misses: number;
  missAt: number;
  /** For directories: entry names of `listing` in its order, and each name's place (made when needed). */
  order?: { of: Map<string, Dir>; names: string[]; place: Map<string, number> };
  /** For directories: place of the file opened last, and how many opens in a row came in order. */
  lastOpen?: number;
  streak?: number;
}

/** An inode with nothing cached yet. */
function inode(
  id: bigint,
  parent: Inode | null,
  name: string,
  qpath: bigint,
  isDir: boolean,
  node: Node | null,
  epoch: number,
  nlookup: number,
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
    nlookup,
    length: 0n,
    dir: null,
    dirAt: -Infinity,
    listing: null,
    listingAt: -Infinity,
    listingLoad: null,
    unread: null,
    gen: 0,
    misses: 0,
    missAt: 0,
  };
}

/** A small file opened and read ahead of the kernel asking for it. */
interface Prefetch {
  ino: Inode;
  qpath: bigint;
  /** Opened with the start of the file read along. */
  file: Promise<OpenFile | null>;
  at: number;
}

interface Handle {
  ino: Inode;
  /** The open file; null for a directory whose entries were read ahead (opened when needed). */
  file: OpenFile | null;
  direct: boolean;
  /** The start of the file was read together with the open: the first read at 0 asks for it. */
  head: boolean;
  entries: Dir[] | null;
  /** `entries` were read ahead: the first READDIR at offset 0 uses them. */
  fresh: boolean;
}

/** `p`, or a rejection with "interrupted" as soon as `signal` aborts. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new StyxError(Ename.interrupted));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new StyxError(Ename.interrupted));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/** Work to do once a request's reply has been written. */
interface Late {
  after: (() => void) | null;
}

/** A name a directory entry can carry on the host. */
function usableName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") &&
    !name.includes("\0");
}

function key(parent: Inode, name: string): string {
  return parent.prefix + name;
}

/**
 * Serves `root` on an open, mounted /dev/fuse descriptor until the kernel
 * ends the connection (unmount) or {@link FuseSession.stop} is called.
 */
export class FuseSession {
  readonly #fd: number;
  readonly #root: Inode;
  readonly #t: Validity;
  readonly #opts: SessionOptions;
  readonly #maxIo: number;
  readonly #uid: number;
  readonly #gid: number;
  readonly #inodes = new Map<bigint, Inode>();
  readonly #byKey = new Map<string, Inode>();
  readonly #handles = new Map<bigint, Handle>();
  readonly #inflight = new Map<bigint, AbortController>();
  readonly #ahead = new Map<Inode, Prefetch>();
  /** Files released by the kernel, to be closed with the next open. */
  #closing: OpenFile[] = [];
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Subdirectories read ahead during a scan before the kernel looked them up, by key. */
  readonly #unseen = new Map<string, Inode>();
  readonly #headerBytes = new Uint8Array(OUT_HEADER);
  readonly #header = new DataView(this.#headerBytes.buffer);
  #nextId = 2n;
  #nextFh = 1n;
  #epoch = 0;
  #stopped = false;
  readonly #done: Promise<void>;
  #resolveInit!: () => void;
  /** Resolves once the kernel's FUSE_INIT has been answered. */
  readonly initialised: Promise<void>;

  /** Serve `root` on the mounted device `fd`; the loop starts at once. */
  constructor(fd: number, root: Node, opts: SessionOptions = {}) {
    this.#fd = fd;
    this.#opts = opts;
    this.#t = {
      entryMs: (opts.entryTimeout ?? 1) * 1000,
      attrMs: (opts.attrTimeout ?? 1) * 1000,
    };
    this.#maxIo = opts.maxIo ?? 1024 * 1024;
    this.#uid = opts.uid ?? Deno.uid() ?? 0;
    this.#gid = opts.gid ?? Deno.gid() ?? 0;
    this.#root = inode(ROOT_ID, null, "", root.qid.path, true, root, Infinity, 1);
    this.#inodes.set(ROOT_ID, this.#root);
    this.initialised = new Promise((r) => (this.#resolveInit = r));
    this.#done = this.#loop();
  }

  /** Resolves when the connection has ended. */
  get done(): Promise<void> {
    return this.#done;
  }

  /** Number of node ids the kernel currently holds. */
  get inodeCount(): number {
    return this.#inodes.size;
  }

  /** Number of open files and directories. */
  get openHandles(): number {
    return this.#handles.size;
  }

  /** Stop reading requests (the caller unmounts and closes the descriptor). */
  stop(): void {
    this.#stopped = true;
    for (const c of this.#inflight.values()) c.abort();
  }

  async #loop(): Promise<void> {
    const buf = new Uint8Array(this.#maxIo + 64 * 1024);
    try {
      while (!this.#stopped) {
        const r = readFd(this.#fd, buf);
        if ("n" in r) {
          if (r.n === 0) break;
          try {
            this.#dispatch(buf.slice(0, r.n));
          } catch (e) {
            // A request that cannot be decoded: answer it if it can be named.
            if (r.n >= IN_HEADER) this.#reply(decodeInHeader(buf).unique, Errno.EIO);
            if (this.#opts.debug) console.error(`fuse: bad request: ${(e as Error).message}`);
          }
          // Requests answered from what is at hand write their replies first.
          for (let i = 0; i < SETTLE_TURNS && this.#inflight.size > 0; i++) await null;
          if (this.#inflight.size > 0) continue; // maybe more queued; else wait below
          const w = await this.#waitIdle();
          if (w === "gone") break;
          continue;
        }
        if (r.errno === Errno.EINTR || r.errno === Errno.ENOENT) continue;
        if (r.errno === Errno.EAGAIN) {
          for (let i = 0; i < SETTLE_TURNS && this.#inflight.size > 0; i++) await null;
          const w = this.#inflight.size === 0
            ? await this.#waitIdle()
            : await waitReadable(this.#fd);
          if (w === "gone") break;
          continue;
        }
        break; // ENODEV: unmounted; anything else: the connection is unusable
      }
    } finally {
      this.#stopped = true;
      this.#resolveInit();
      for (const c of this.#inflight.values()) c.abort();
      this.#flushCloses();
      if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
      const hs = [...this.#handles.values()];
      this.#handles.clear();
      for (const p of [...this.#ahead.values()]) this.#drop(p);
      await Promise.allSettled(hs.map((h) => h.file?.close()));
      const nodes = [...this.#inodes.values()].filter((i) => i !== this.#root && i.node);
      await Promise.allSettled(nodes.map((i) => i.node!.close()));
    }
  }

  /**
   * Close `f` soon: with the next open sent to the server (the clunk then
   * shares its write), or after CLOSE_DELAY_MS. Nothing waits on a clunk.
   */
  #closeLater(f: OpenFile): void {
    this.#closing.push(f);
    // One timer at a time; flushing early leaves it to find nothing.
    this.#closeTimer ??= setTimeout(() => {
      this.#closeTimer = undefined;
      this.#flushCloses();
    }, CLOSE_DELAY_MS);
  }

  /** Close every file {@link #closeLater} holds. */
  #flushCloses(): void {
    if (this.#closing.length === 0) return;
    const fs = this.#closing;
    this.#closing = [];
    for (const f of fs) f.close().catch(() => {});
  }

  /**
   * Wait for the next request when no request is in flight: here, on the
   * loop's own thread, for a moment (nothing waits on the event loop), then
   * on a worker thread so that the event loop runs meanwhile.
   */
  #waitIdle(): Promise<"ready" | "gone"> | "ready" | "gone" {
    const w = waitReadableNow(this.#fd, IDLE_WAIT_MS);
    if (w !== "timeout") return w;
    return waitReadable(this.#fd);
  }

  #reply(unique: bigint, err: number, parts: Uint8Array[] = []): void {
    let len = OUT_HEADER;
    for (const p of parts) len += p.length;
    // One header, reused: writev has copied it by the time it returns.
    const hv = this.#header;
    hv.setUint32(0, len, true);
    hv.setInt32(4, err === 0 ? 0 : -err, true);
    hv.setBigUint64(8, unique, true);
    const e = writeParts(this.#fd, [this.#headerBytes, ...parts]);
    // ENOENT: the request was interrupted and is gone; others: connection over.
    if (e !== 0 && e !== Errno.ENOENT && this.#opts.debug) {
      console.error(`fuse: reply to ${unique} failed: errno ${e}`);
    }
  }

  #dispatch(req: Uint8Array): void {
    const h = decodeInHeader(req);
    const body = req.subarray(IN_HEADER, h.len);
    if (h.opcode === Op.FORGET) {
      this.#forget(h.nodeid, new DataView(body.buffer, body.byteOffset).getBigUint64(0, true));
      return;
    }
    if (h.opcode === Op.BATCH_FORGET) {
      const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
      const count = v.getUint32(0, true);
      for (let i = 0; i < count && 8 + i * 16 + 16 <= body.length; i++) {
        this.#forget(v.getBigUint64(8 + i * 16, true), v.getBigUint64(16 + i * 16, true));
      }
      return;
    }
    if (h.opcode === Op.INTERRUPT) {
      const target = new DataView(body.buffer, body.byteOffset).getBigUint64(0, true);
      this.#inflight.get(target)?.abort();
      return;
    }
    if (h.opcode === Op.INIT) {
      this.#init(h.unique, body);
      return;
    }
    const ac = new AbortController();
    this.#inflight.set(h.unique, ac);
    const started = this.#opts.debug ? performance.now() : 0;
    const late: Late = { after: null };
    this.#handle(h.opcode, h.nodeid, body, ac.signal, late).then(
      (parts) => {
        this.#inflight.delete(h.unique);
        if (this.#opts.debug) {
          console.error(
            `fuse: op ${h.opcode} node ${h.nodeid} ok (${
              (performance.now() - started).toFixed(1)
            } ms)`,
          );
        }
        if (parts !== null) this.#reply(h.unique, 0, parts);
        late.after?.();
      },
      (e) => {
        this.#inflight.delete(h.unique);
        const err = e instanceof Fail ? e.errno : ac.signal.aborted ? Errno.EINTR : errnoOf(e);
        if (this.#opts.debug) {
          console.error(`fuse: op ${h.opcode} node ${h.nodeid} error ${err}: ${errorString(e)}`);
        }
        this.#reply(h.unique, err);
      },
    );
  }

  #init(unique: bigint, body: Uint8Array): void {
    const i = decodeInitIn(body);
    if (i.major !== KERNEL_MAJOR || i.minor < 12) {
      this.#reply(unique, Errno.EIO);
      return;
    }
    const want = InitFlag.ASYNC_READ | InitFlag.ATOMIC_O_TRUNC | InitFlag.BIG_WRITES |
      InitFlag.AUTO_INVAL_DATA | InitFlag.DO_READDIRPLUS | InitFlag.ASYNC_DIO |
      InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES;
    const pages = Math.max(1, Math.floor(this.#maxIo / 4096));
    this.#reply(unique, 0, [
      initOut({
        minor: Math.min(i.minor, KERNEL_MINOR),
        maxReadahead: i.maxReadahead,
        flags: i.flags & want,
        maxBackground: 64,
        congestionThreshold: 48,
        maxWrite: this.#maxIo,
        maxPages: Math.min(pages, 256),
      }),
    ]);
    this.#resolveInit();
  }

  // -- inodes -----------------------------------------------------------------

  #inode(id: bigint): Inode {
    const i = this.#inodes.get(id);
    if (!i) throw new Fail(Errno.ENOENT);
    return i;
  }

  #forget(id: bigint, n: bigint): void {
    const i = this.#inodes.get(id);
    if (!i || i === this.#root) return;
    i.nlookup -= Number(n);
    if (i.nlookup > 0) return;
    this.#inodes.delete(id);
    if (i.parent && this.#byKey.get(key(i.parent, i.name)) === i) {
      this.#byKey.delete(key(i.parent, i.name));
    }
    const node = i.node;
    i.node = null;
    node?.close().catch(() => {});
  }

  /** Record a lookup of `name` in `parent` (one more kernel reference). */
  #remember(parent: Inode, name: string, d: Dir, node: Node | null): Inode {
    const k = key(parent, name);
    const old = this.#byKey.get(k);
    const isDir = (d.qid.type & QTDIR) !== 0;
    if (old && old.qpath === d.qid.path && old.isDir === isDir) {
      old.nlookup++;
      this.#saw(old, d);
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
      ino.nlookup = 1;
      this.#saw(ino, d);
      if (node) {
        ino.node = node;
        ino.epoch = this.#epoch;
      }
    } else {
      ino = this.#newInode(parent, name, d.qid.path, isDir, node);
      ino.nlookup = 1;
      this.#saw(ino, d);
    }
    this.#inodes.set(ino.id, ino);
    this.#byKey.set(k, ino);
    return ino;
  }

  /** A new inode for `name` in `parent` (not yet known to the kernel: nlookup 0). */
  #newInode(
    parent: Inode,
    name: string,
    qpath: bigint,
    isDir: boolean,
    node: Node | null,
  ): Inode {
    return inode(this.#nextId++, parent, name, qpath, isDir, node, this.#epoch, 0);
  }

  /** The node for `ino`, walking from its nearest known ancestor when needed. */
  #nodeOf(ino: Inode): Promise<Node> {
    if (ino.node && (ino === this.#root || ino.epoch === this.#epoch)) {
      return Promise.resolve(ino.node);
    }
    if (ino.walking) return ino.walking;
    const stale = ino.node;
    ino.node = null;
    stale?.close().catch(() => {});
    const p = ino.parent;
    if (!p) return Promise.reject(new Fail(Errno.ENOENT));
    const epoch = this.#epoch;
    const w = (async () => {
      const pn = await this.#nodeOf(p);
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
  async #pathTo(ino: Inode): Promise<[Node, string[]]> {
    const names: string[] = [];
    let cur = ino;
    for (;;) {
      if (cur.node && (cur === this.#root || cur.epoch === this.#epoch)) return [cur.node, names];
      // Leave room for one more name: a Twalk carries at most 16.
      if (cur.walking || !cur.parent || names.length >= 15) {
        return [await this.#nodeOf(cur), names];
      }
      names.unshift(cur.name);
      cur = cur.parent;
    }
  }

  /** `ino` is being changed through this mount: forget what was cached about it. */
  #changed(ino: Inode): void {
    // -Infinity, not 0: performance.now() counts from process start, so 0
    // would still look fresh during a new mount's first second.
    ino.dirAt = -Infinity;
    if (ino.parent) this.#unlist(ino.parent);
    const p = this.#ahead.get(ino);
    if (p) this.#drop(p);
  }

  /**
   * Directory `dir` is being changed through this mount: forget its
   * listing, and make any read of it still under way unable to keep what
   * it reads.
   */
  #unlist(dir: Inode): void {
    dir.listing = null;
    dir.unread = null;
    dir.listingLoad = null;
    dir.gen++;
    // Its subdirectories read ahead by name may no longer be what those names are.
    for (const [k, ino] of this.#unseen) if (ino.parent === dir) this.#unseen.delete(k);
  }

  /** Forget a file opened ahead, clunking it. */
  #drop(p: Prefetch): void {
    if (this.#ahead.get(p.ino) === p) this.#ahead.delete(p.ino);
    p.file.then((f) => f?.close()).catch(() => {});
  }

  /** The file `ino` opened ahead moments ago (unchanged since), taken for use, or null. */
  #takeAhead(ino: Inode): Prefetch | null {
    const p = this.#ahead.get(ino);
    if (!p) return null;
    this.#ahead.delete(ino);
    if (performance.now() - p.at < this.#t.attrMs && p.qpath === ino.qpath) return p;
    this.#drop(p);
    return null;
  }

  /**
   * `ino` was opened for reading. When its directory is being read file
   * by file in listing order, open and read the next small files now, so
   * that their opens find them waiting instead of costing a round trip each.
   */
  #readAhead(ino: Inode): void {
    const dir = ino.parent;
    if (!dir || !dir.listing || this.#t.attrMs <= 0) return;
    if (performance.now() - dir.listingAt >= this.#t.entryMs) return;
    const listing = dir.listing;
    if (dir.order?.of !== listing) {
      const names = [...listing.keys()];
      dir.order = { of: listing, names, place: new Map(names.map((n, i) => [n, i])) };
    }
    const { names, place } = dir.order;
    const at = place.get(ino.name);
    if (at === undefined) return;
    const last = dir.lastOpen ?? -2;
    dir.streak = at > last && at <= last + AHEAD + 1 ? (dir.streak ?? 0) + 1 : 0;
    dir.lastOpen = at;
    if (dir.streak < AHEAD_AFTER) return;
    const now = performance.now();
    for (const p of [...this.#ahead.values()]) {
      if (now - p.at >= this.#t.attrMs) this.#drop(p);
    }
    for (let i = at + 1; i <= at + AHEAD && i < names.length; i++) {
      if (this.#ahead.size >= AHEAD * 2) break;
      const name = names[i]!;
      const next = this.#byKey.get(key(dir, name));
      const d = listing.get(name);
      if (!next || !d || next.isDir || this.#ahead.has(next) || next.qpath !== d.qid.path) continue;
      if (d.length <= 0n || d.length > BigInt(HEAD_MAX) || (d.qid.type & QTAPPEND) !== 0) continue;
      if (this.#opts.directIo) continue;
      const signal = new AbortController().signal;
      // One byte more than the length: a short reply shows the end of the file.
      const file = this.#openIno(next, OREAD, signal, Number(d.length) + 1).catch(() => null);
      this.#ahead.set(next, { ino: next, qpath: next.qpath, file, at: now });
    }
  }

  #setListing(dir: Inode, entries: Dir[], unread: boolean): void {
    const m = new Map<string, Dir>();
    for (const e of entries) m.set(e.name, e);
    dir.listing = m;
    dir.listingAt = performance.now();
    dir.unread = unread ? entries : null;
  }

  /**
   * Read directory `dir` whole (walk, open, read, clunk) and keep it as its
   * listing, not yet used by an OPENDIR. Resolves with the listing, or null
   * when the directory was changed through this mount meanwhile. One read
   * at a time per directory; every caller shares it.
   */
  #loadListing(dir: Inode, forLookups: boolean): Promise<Map<string, Dir> | null> {
    if (dir.listingLoad) return dir.listingLoad;
    const gen = dir.gen;
    // Shared by every caller: no one caller's interrupt may end it.
    const signal = new AbortController().signal;
    const load: Promise<Map<string, Dir> | null> = (async () => {
      const f = await this.#openIno(dir, OREAD, signal, Number.MAX_SAFE_INTEGER);
      try {
        const entries = await f.readDir({ signal });
        if (dir.gen !== gen) return null;
        this.#setListing(dir, entries, true);
        dir.scanned = forLookups;
        return dir.listing;
      } finally {
        f.close().catch(() => {});
      }
    })().finally(() => {
      if (dir.listingLoad === load) dir.listingLoad = null;
    });
    dir.listingLoad = load;
    return load;
  }

  /**
   * Entries of `dir` read ahead (or for lookups) within the entry timeout
   * and not used by an OPENDIR yet: taken for this one, or null.
   */
  async #takeListing(dir: Inode, signal: AbortSignal): Promise<Dir[] | null> {
    if (dir.listingLoad) await abortable(dir.listingLoad.catch(() => null), signal);
    const e = dir.unread;
    if (!e || performance.now() - dir.listingAt >= this.#t.entryMs) return null;
    dir.unread = null;
    return e;
  }

  /**
   * Directory `ino` is being opened. When its parent's subdirectories are
   * being opened one after another (ls -R, find, du, tar, git status), read
   * the next few ahead, so that their OPENDIR and READDIR find the entries
   * waiting instead of costing a round trip and the server's directory
   * read each, one after another.
   */
  #openedDir(ino: Inode): void {
    const p = ino.parent;
    if (!p || this.#t.entryMs <= 0) return;
    const now = performance.now();
    const listing = p.listing;
    if (!listing || now - p.listingAt >= this.#t.entryMs) return;
    if (!p.dirsOpened || now - (p.dirsAt ?? -Infinity) >= this.#t.entryMs) {
      p.dirsOpened = new Set();
      p.lastDir = undefined;
    }
    p.dirsAt = now;
    const prev = p.lastDir;
    p.dirsOpened.add(ino.name);
    p.lastDir = ino.name;
    if (p.dirsOpened.size < DIRS_AHEAD_AFTER) return;
    const subs = this.#subdirs(p, listing);
    // Programs go through a directory in the order it lists (find, tar, git)
    // or sorted by name (ls): follow whichever the last two opens fit, or both.
    const orders: Array<[string[], Map<string, number>]> = [];
    for (const o of [subs.listed, subs.sorted]) {
      const at = o[1].get(ino.name);
      const before = prev === undefined ? undefined : o[1].get(prev);
      if (at !== undefined && (before === undefined || before < at)) orders.push(o);
    }
    if (orders.length === 0) orders.push(subs.listed, subs.sorted);
    const cursors = orders.map((o) => (o[1].get(ino.name) ?? -1) + 1);
    let pending = 0;
    for (let step = 0; pending < DIRS_AHEAD && step < DIRS_AHEAD * 4; step++) {
      let moved = false;
      for (let k = 0; k < orders.length && pending < DIRS_AHEAD; k++) {
        const names = orders[k]![0];
        const i = cursors[k]!;
        if (i >= names.length) continue;
        cursors[k] = i + 1;
        moved = true;
        const name = names[i]!;
        if (p.dirsOpened.has(name)) continue;
        const child = this.#byKey.get(key(p, name));
        const d = listing.get(name);
        if (!child || !child.isDir || !d || child.qpath !== d.qid.path) continue;
        pending++;
        if (child.listingLoad) continue;
        if (child.unread && now - child.listingAt < this.#t.entryMs) continue;
        this.#loadListing(child, false).catch(() => null);
      }
      if (!moved) break;
    }
  }

  /**
   * Subdirectory `dir` of `parent` was looked up during a scan: read it
   * whole for the lookups that follow, and the next few subdirectories
   * after it in name order (the order of git's index and of sorted lists)
   * too, even before the kernel looks them up.
   */
  #scanAhead(parent: Inode, dir: Inode, listing: Map<string, Dir>): void {
    const now = performance.now();
    const load = (ino: Inode) => {
      if (ino.listingLoad || (ino.listing && now - ino.listingAt < this.#t.entryMs)) return;
      this.#loadListing(ino, true).catch(() => null);
    };
    load(dir);
    const [names, places] = this.#subdirs(parent, listing).sorted;
    const at = places.get(dir.name);
    if (at === undefined) return;
    for (let i = at + 1; i < names.length && i <= at + SCAN_AHEAD; i++) {
      const name = names[i]!;
      const d = listing.get(name)!;
      const k = key(parent, name);
      let child = this.#byKey.get(k) ?? this.#unseen.get(k);
      if (child && (!child.isDir || child.qpath !== d.qid.path)) continue;
      if (!child) {
        if (this.#unseen.size >= UNSEEN_MAX) {
          const oldest = this.#unseen.keys().next().value;
          if (oldest !== undefined) this.#unseen.delete(oldest);
        }
        child = this.#newInode(parent, name, d.qid.path, true, null);
        this.#unseen.set(k, child);
      }
      load(child);
    }
  }

  /** The subdirectories in `listing` of `dir`, in listing order and sorted by name. */
  #subdirs(dir: Inode, listing: Map<string, Dir>): NonNullable<Inode["subdirs"]> {
    if (dir.subdirs?.of === listing) return dir.subdirs;
    const names: string[] = [];
    for (const [name, d] of listing) if ((d.qid.type & QTDIR) !== 0) names.push(name);
    const sorted = [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const places = (ns: string[]) => new Map(ns.map((n, i) => [n, i]));
    dir.subdirs = {
      of: listing,
      listed: [names, places(names)],
      sorted: [sorted, places(sorted)],
    };
    return dir.subdirs;
  }

  /**
   * The fresh listing of directory `dir` to answer a lookup from, or null.
   * A directory read moments ago answers at once; after a few lookups
   * that missed within one entry timeout (ls -l, git status, make) the
   * whole directory is read once instead of walking to each name.
   */
  async #listingFor(dir: Inode, signal: AbortSignal): Promise<Map<string, Dir> | null> {
    const now = performance.now();
    if (dir.listing && now - dir.listingAt < this.#t.entryMs) return dir.listing;
    if (this.#t.entryMs <= 0) return null;
    let load = dir.listingLoad;
    if (!load) {
      if (now - dir.missAt > this.#t.entryMs) dir.misses = 0;
      dir.missAt = now;
      if (++dir.misses < 3) return null;
      dir.misses = 0;
      load = this.#loadListing(dir, true);
    }
    try {
      return await abortable(load, signal);
    } catch (e) {
      if (signal.aborted) throw e;
      return null; // fall back to a walk
    }
  }

  /** Note fresh attributes of `ino`. */
  #saw(ino: Inode, d: Dir): void {
    ino.length = d.length;
    ino.dir = d;
    ino.dirAt = performance.now();
  }

  #attr(d: Dir): Attr {
    const isDir = (d.qid.type & QTDIR) !== 0 || (d.mode & DMDIR) !== 0;
    const size = d.length;
    return {
      ino: d.qid.path === 0n ? 0xffffffffffffn : d.qid.path,
      size,
      blocks: (size + 511n) / 512n,
      atime: d.atime,
      mtime: d.mtime,
      ctime: d.mtime,
      mode: (isDir ? S_IFDIR : S_IFREG) | (d.mode & 0o777),
      nlink: isDir ? 2 : 1,
      uid: this.#uid,
      gid: this.#gid,
      blksize: 128 * 1024,
    };
  }

  #entry(ino: Inode, d: Dir): Uint8Array {
    return entryOut(ino.id, this.#attr(d), this.#t);
  }

  /** A lookup's answer "no such name", which the kernel may remember for `ms`. */
  #negative(ms: number): Uint8Array {
    const a: Attr = {
      ino: 0n,
      size: 0n,
      blocks: 0n,
      atime: 0,
      mtime: 0,
      ctime: 0,
      mode: 0,
      nlink: 0,
      uid: 0,
      gid: 0,
      blksize: 0,
    };
    return entryOut(0n, a, { entryMs: Math.max(0, ms), attrMs: 0 });
  }

  /**
   * Open `ino` with 9P `mode`, walking from its nearest walked ancestor:
   * one round trip to a tree that can walk and open in one go. With
   * `readAhead`, the start of the file is read along with the open.
   */
  async #openIno(
    ino: Inode,
    mode: number,
    signal: AbortSignal,
    readAhead?: number,
  ): Promise<OpenFile> {
    const [base, names] = await this.#pathTo(ino);
    // Files closed meanwhile are clunked first, in the same write.
    this.#flushCloses();
    return await walkOpen(base, names, mode, { signal, readAhead });
  }

  /** Walk `names` from `pn` and stat the file reached: one round trip where the tree can. */
  async #walkStat(pn: Node, names: string[], signal: AbortSignal): Promise<[Node, Dir]> {
    const w = await walkStat(pn, names, { signal });
    return [w.node, w.dir];
  }

  #newHandle(ino: Inode, file: OpenFile | null, direct: boolean): bigint {
    const fh = this.#nextFh++;
    this.#handles.set(fh, {
      ino,
      file,
      direct,
      entries: null,
      fresh: false,
      head: false,
    });
    return fh;
  }

  #handleOf(fh: bigint): Handle {
    const h = this.#handles.get(fh);
    if (!h) throw new Fail(Errno.EBADF);
    return h;
  }

  // -- requests ---------------------------------------------------------------

  /** Run one request; resolves with the reply body, or null for "no reply". */
  async #handle(
    op: number,
    nodeid: bigint,
    body: Uint8Array,
    signal: AbortSignal,
    late: Late,
  ): Promise<Uint8Array[] | null> {
    const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
    const o = { signal };
    switch (op) {
      case Op.LOOKUP: {
        const parent = this.#inode(nodeid);
        const [name] = cString(body, 0);
        if (!parent.isDir) throw new Fail(Errno.ENOTDIR);
        const listing = await this.#listingFor(parent, signal);
        if (listing) {
          const d = listing.get(name);
          if (!d) return [this.#negative(this.#t.entryMs - (performance.now() - parent.listingAt))];
          const ino = this.#remember(parent, name, d, null);
          // Names are being looked up one by one through this directory (git
          // status, make, ls -l of named files): the subdirectory looked up now
          // is likely next, so read it whole while the kernel goes on.
          if (parent.scanned && ino.isDir && ino.qpath === d.qid.path) {
            this.#scanAhead(parent, ino, listing);
          }
          return [this.#entry(ino, d)];
        }
        const [pn, path] = await this.#pathTo(parent);
        const gen = parent.gen;
        let found: [Node, Dir];
        try {
          path.push(name);
          found = await this.#walkStat(pn, path, signal);
        } catch (e) {
          // Not there: the kernel may remember that for the entry timeout,
          // unless this mount changed the directory meanwhile.
          if (!signal.aborted && gen === parent.gen && errnoFrom(e) === Errno.ENOENT) {
            return [this.#negative(this.#t.entryMs)];
          }
          throw e;
        }
        const [node, d] = found;
        const ino = this.#remember(parent, name, d, node);
        return [this.#entry(ino, d)];
      }
      case Op.GETATTR: {
        const ino = this.#inode(nodeid);
        // Attributes read moments ago by a lookup or READDIRPLUS serve again.
        const age = performance.now() - ino.dirAt;
        if (ino.dir && age < this.#t.attrMs) {
          const left = { entryMs: this.#t.entryMs, attrMs: this.#t.attrMs - age };
          return [attrOut(this.#attr(ino.dir), left)];
        }
        let d: Dir;
        if (ino.node === null && ino.walking === null && ino.parent) {
          const [pn, path] = await this.#pathTo(ino.parent);
          path.push(ino.name);
          const [node, st] = await this.#walkStat(pn, path, signal);
          if (ino.node === null && ino.walking === null) {
            ino.node = node;
            ino.epoch = this.#epoch;
          } else node.close().catch(() => {});
          d = st;
        } else {
          d = await (await this.#nodeOf(ino)).stat(o);
        }
        this.#saw(ino, d);
        return [attrOut(this.#attr(d), this.#t)];
      }
      case Op.SETATTR: {
        const ino = this.#inode(nodeid);
        this.#changed(ino);
        const d = await this.#setattr(ino, v, o);
        this.#changed(ino);
        this.#saw(ino, d);
        return [attrOut(this.#attr(d), this.#t)];
      }
      case Op.ACCESS:
        throw new Fail(Errno.ENOSYS); // the server decides; the kernel stops asking
      case Op.STATFS:
        return [statfsOut({
          blocks: 1n << 30n,
          bfree: 1n << 29n,
          bavail: 1n << 29n,
          files: 1n << 24n,
          ffree: 1n << 23n,
          bsize: 4096,
          namelen: 255,
        })];
      case Op.OPEN: {
        const ino = this.#inode(nodeid);
        const flags = v.getUint32(0, true);
        const acc = flags & O_ACCMODE;
        let mode = acc === O_WRONLY ? OWRITE : acc === O_RDWR ? ORDWR : OREAD;
        if (flags & O_TRUNC) mode |= OTRUNC;
        if (acc !== 0 || flags & O_TRUNC) this.#changed(ino);
        // Files that say they are empty are often synthetic (ctl, status): read them directly.
        // Append-only files ignore offsets: their writes must go one at a time, in order.
        const direct = this.#opts.directIo === true ||
          ((ino.dir?.qid.type ?? 0) & QTAPPEND) !== 0 ||
          (!(flags & O_TRUNC) && acc !== O_WRONLY && ino.length === 0n);
        const ahead = mode === OREAD && !direct ? this.#takeAhead(ino) : null;
        const early = ahead ? await ahead.file : null;
        if (ahead && early) {
          const fh = this.#newHandle(ino, early, false);
          this.#handles.get(fh)!.head = true;
          this.#readAhead(ino);
          return [openOut(fh, FOPEN_KEEP_CACHE)];
        }
        // One byte more than the length: a short reply shows the end of the file.
        const small = mode === OREAD && !direct && ino.length > 0n &&
          ino.length <= BigInt(HEAD_MAX);
        const file = await this.#openIno(
          ino,
          mode,
          signal,
          small ? Number(ino.length) + 1 : undefined,
        );
        const fh = this.#newHandle(ino, file, direct);
        this.#handles.get(fh)!.head = small;
        if (mode === OREAD && !direct) this.#readAhead(ino);
        // The page cache is kept across opens; AUTO_INVAL_DATA drops it when
        // a fresh stat shows another mtime or size.
        return [openOut(fh, direct ? FOPEN_DIRECT_IO : FOPEN_KEEP_CACHE)];
      }
      case Op.OPENDIR: {
        const ino = this.#inode(nodeid);
        this.#openedDir(ino);
        const ahead = await this.#takeListing(ino, signal);
        if (ahead) {
          // Read moments ago: the directory is opened only if it is read again.
          const fh = this.#newHandle(ino, null, false);
          const h = this.#handles.get(fh)!;
          h.entries = ahead;
          h.fresh = true;
          return [openOut(fh, 0)];
        }
        // The first directory read goes out with the open.
        const file = await this.#openIno(ino, OREAD, signal, Number.MAX_SAFE_INTEGER);
        return [openOut(this.#newHandle(ino, file, false), 0)];
      }
      case Op.READ: {
        const h = this.#handleOf(v.getBigUint64(0, true));
        const off = v.getBigUint64(8, true);
        const size = v.getUint32(16, true);
        const file = h.file;
        if (!file) throw new Fail(Errno.EISDIR);
        const parts = await this.#read(h, file, off, size, signal);
        // The reply copies the data into the kernel: the buffers can carry later replies.
        const release = file.release?.bind(file);
        if (release) {
          late.after = () => {
            for (const p of parts) release(p);
          };
        }
        return parts;
      }
      case Op.WRITE: {
        const h = this.#handleOf(v.getBigUint64(0, true));
        const off = v.getBigUint64(8, true);
        const size = v.getUint32(16, true);
        const data = body.subarray(40, 40 + size);
        this.#changed(h.ino);
        const n = await this.#write(h, off, data, signal);
        this.#changed(h.ino);
        return [writeOut(n)];
      }
      case Op.READDIR:
      case Op.READDIRPLUS: {
        const h = this.#handleOf(v.getBigUint64(0, true));
        const off = v.getBigUint64(8, true);
        const size = v.getUint32(16, true);
        if (h.fresh && off === 0n) {
          h.fresh = false;
        } else if (off === 0n || h.entries === null) {
          h.fresh = false;
          if (!h.file) {
            const f = await this.#openIno(h.ino, OREAD, signal);
            if (h.file) f.close().catch(() => {});
            else h.file = f;
          }
          const gen = h.ino.gen;
          h.entries = await h.file!.readDir({ signal });
          if (h.ino.gen === gen) this.#setListing(h.ino, h.entries, false);
        }
        return [this.#dirents(h, Number(off), size, op === Op.READDIRPLUS)];
      }
      case Op.RELEASE:
      case Op.RELEASEDIR: {
        const fh = v.getBigUint64(0, true);
        const h = this.#handles.get(fh);
        this.#handles.delete(fh);
        // Nothing waits on a clunk: answer at once.
        if (h?.file) this.#closeLater(h.file);
        return [];
      }
      case Op.FLUSH:
        // Writes reach the server before WRITE is answered: nothing to flush
        // at close. ENOSYS tells the kernel to stop sending FLUSH at all.
        throw new Fail(Errno.ENOSYS);
      case Op.FSYNC:
      case Op.FSYNCDIR:
        this.#handleOf(v.getBigUint64(0, true));
        return [];
      case Op.CREATE: {
        const parent = this.#inode(nodeid);
        const flags = v.getUint32(0, true);
        const perm = v.getUint32(4, true) & 0o777;
        const [name] = cString(body, 16);
        const acc = flags & O_ACCMODE;
        const mode = acc === O_WRONLY ? OWRITE : acc === O_RDWR ? ORDWR : OREAD;
        const pn = await this.#nodeOf(parent);
        this.#unlist(parent);
        this.#flushCloses();
        const c = await pn.create(name, perm, mode, o);
        this.#unlist(parent);
        let d: Dir;
        try {
          d = await c.node.stat(o);
        } catch (e) {
          await c.file.close().catch(() => {});
          await c.node.close().catch(() => {});
          throw e;
        }
        const ino = this.#remember(parent, name, d, c.node);
        const fh = this.#newHandle(ino, c.file, this.#opts.directIo === true);
        return [this.#entry(ino, d), openOut(fh, this.#opts.directIo ? FOPEN_DIRECT_IO : 0)];
      }
      case Op.MKDIR: {
        const parent = this.#inode(nodeid);
        const perm = v.getUint32(0, true) & 0o777;
        const [name] = cString(body, 8);
        const pn = await this.#nodeOf(parent);
        this.#unlist(parent);
        const c = await pn.create(name, (DMDIR | perm) >>> 0, OREAD, o);
        this.#unlist(parent);
        await c.file.close().catch(() => {});
        let d: Dir;
        try {
          d = await c.node.stat(o);
        } catch (e) {
          await c.node.close().catch(() => {});
          throw e;
        }
        return [this.#entry(this.#remember(parent, name, d, c.node), d)];
      }
      case Op.UNLINK:
      case Op.RMDIR: {
        const parent = this.#inode(nodeid);
        const [name] = cString(body, 0);
        const pn = await this.#nodeOf(parent);
        const w = await pn.walk([name], o);
        if (!w.node) throw new Fail(Errno.ENOENT);
        const isDir = (w.node.qid.type & QTDIR) !== 0;
        if (op === Op.UNLINK && isDir) {
          await w.node.close();
          throw new Fail(Errno.EISDIR);
        }
        if (op === Op.RMDIR && !isDir) {
          await w.node.close();
          throw new Fail(Errno.ENOTDIR);
        }
        this.#unlist(parent);
        await w.node.remove(o);
        this.#unlist(parent);
        this.#unname(parent, name);
        return [];
      }
      case Op.RENAME:
      case Op.RENAME2: {
        const newdir = v.getBigUint64(0, true);
        let at = 8;
        if (op === Op.RENAME2) {
          if (v.getUint32(8, true) !== 0) throw new Fail(Errno.EINVAL);
          at = 16;
        }
        const [oldname, next] = cString(body, at);
        const [newname] = cString(body, next);
        await this.#rename(this.#inode(nodeid), this.#inode(newdir), oldname, newname, signal);
        return [];
      }
      case Op.DESTROY:
        return [];
      default:
        // xattrs, links, locks, ioctl, poll, fallocate, lseek...: not in Styx.
        throw new Fail(Errno.ENOSYS);
    }
  }

  #unname(parent: Inode, name: string): void {
    const k = key(parent, name);
    const ino = this.#byKey.get(k);
    if (!ino) return;
    this.#byKey.delete(k);
    ino.parent = null;
    const p = this.#ahead.get(ino);
    if (p) this.#drop(p);
    const node = ino.node;
    ino.node = null;
    node?.close().catch(() => {});
  }

  async #setattr(ino: Inode, v: DataView, o: { signal: AbortSignal }): Promise<Dir> {
    const valid = v.getUint32(0, true);
    const node = await this.#nodeOf(ino);
    const cur = await node.stat(o);
    const d = nullDir();
    let change = false;
    if (valid & Fattr.SIZE) {
      d.length = v.getBigUint64(16, true);
      change = true;
    }
    const now = Math.floor(Date.now() / 1000);
    if (valid & Fattr.MTIME) {
      d.mtime = valid & Fattr.MTIME_NOW ? now : Number(v.getBigUint64(40, true));
      change = true;
    }
    if (valid & Fattr.ATIME) {
      d.atime = valid & Fattr.ATIME_NOW ? now : Number(v.getBigUint64(32, true));
      change = true;
    }
    if (valid & Fattr.MODE) {
      const mode = v.getUint32(68, true);
      d.mode = ((cur.mode & ~0o777) | (mode & 0o777)) >>> 0;
      change = true;
    }
    if (
      (valid & Fattr.UID && v.getUint32(76, true) !== this.#uid) ||
      (valid & Fattr.GID && v.getUint32(80, true) !== this.#gid)
    ) {
      throw new Fail(Errno.EPERM);
    }
    if (!change) return cur;
    await node.wstat(d, o);
    return await node.stat(o);
  }

  async #rename(
    parent: Inode,
    newdir: Inode,
    oldname: string,
    newname: string,
    signal: AbortSignal,
  ): Promise<void> {
    // Styx renames only within a directory; EXDEV makes mv fall back to copy and remove.
    if (parent !== newdir) throw new Fail(Errno.EXDEV);
    if (oldname === newname) return;
    const o = { signal };
    this.#unlist(parent);
    const pn = await this.#nodeOf(parent);
    const w = await pn.walk([oldname], o);
    if (!w.node) throw new Fail(Errno.ENOENT);
    const node = w.node;
    const isDir = (node.qid.type & QTDIR) !== 0;
    try {
      const d = nullDir();
      d.name = newname;
      try {
        await node.wstat(d, o);
      } catch (e) {
        if (errnoOf(e) !== Errno.EEXIST) throw e;
        // rename(2) replaces the target; Twstat does not: remove it first.
        const t = await pn.walk([newname], o);
        if (!t.node) throw e;
        const targetDir = (t.node.qid.type & QTDIR) !== 0;
        if (targetDir !== isDir) {
          await t.node.close();
          throw new Fail(isDir ? Errno.ENOTDIR : Errno.EISDIR);
        }
        await t.node.remove(o);
        await node.wstat(d, o);
      }
    } finally {
      node.close().catch(() => {});
    }
    this.#unlist(parent);
    this.#unname(parent, newname);
    const k = key(parent, oldname);
    const ino = this.#byKey.get(k);
    if (ino) {
      this.#byKey.delete(k);
      ino.name = newname;
      this.#byKey.set(key(parent, newname), ino);
      const stale = ino.node;
      ino.node = null;
      stale?.close().catch(() => {});
    }
    // Nodes below a renamed directory hold its old path: walk them again.
    if (isDir) this.#epoch++;
  }

  /** Read for the kernel; the reply is written from the parts as they are (no copy). */
  async #read(
    h: Handle,
    file: OpenFile,
    off: bigint,
    size: number,
    signal: AbortSignal,
  ): Promise<Uint8Array[]> {
    if (h.head && off === 0n) {
      // The file answers from the start it read along with the open.
      h.head = false;
      return [await file.read(off, size, { signal })];
    }
    const unit = file.iounit;
    if (h.direct || unit <= 0 || size <= unit) return [await file.read(off, size, { signal })];
    // Several Treads in flight for one large kernel read.
    const parts: Promise<Uint8Array>[] = [];
    for (let at = 0; at < size; at += unit) {
      parts.push(file.read(off + BigInt(at), Math.min(unit, size - at), { signal }));
    }
    const got = await Promise.all(parts);
    const out: Uint8Array[] = [];
    for (let i = 0; i < got.length; i++) {
      out.push(got[i]!);
      if (got[i]!.length < Math.min(unit, size - i * unit)) break; // end of file
    }
    return out;
  }

  async #write(h: Handle, off: bigint, data: Uint8Array, signal: AbortSignal): Promise<number> {
    const file = h.file;
    if (!file) throw new Fail(Errno.EISDIR);
    const unit = file.iounit;
    if (h.direct || unit <= 0 || data.length <= unit) {
      return await file.write(off, data, { signal });
    }
    const parts: Promise<number>[] = [];
    for (let at = 0; at < data.length; at += unit) {
      parts.push(file.write(off + BigInt(at), data.subarray(at, at + unit), { signal }));
    }
    const got = await Promise.all(parts);
    let total = 0;
    for (let i = 0; i < got.length; i++) {
      total += got[i]!;
      if (got[i]! < Math.min(unit, data.length - i * unit)) break;
    }
    return total;
  }

  #dirents(h: Handle, start: number, size: number, plus: boolean): Uint8Array {
    const entries = h.entries ?? [];
    // Sized to what fits, not to `size`: the kernel may offer a megabyte.
    let total = 0;
    let end = start;
    const lens: number[] = [];
    for (; end < entries.length; end++) {
      const name = entries[end]!.name;
      const len = utf8Length(name);
      lens.push(len);
      if (!usableName(name)) continue;
      const need = direntSize(len, plus);
      if (total + need > size) break;
      total += need;
    }
    const b = new Uint8Array(total);
    const v = new DataView(b.buffer);
    let pos = 0;
    for (let i = start; i < end; i++) {
      const d = entries[i]!;
      if (!usableName(d.name)) continue;
      const a = this.#attr(d);
      const type = (a.mode & 0o170000) === S_IFDIR ? DT_DIR : DT_REG;
      if (plus) {
        const ino = this.#remember(h.ino, d.name, d, null);
        putEntry(v, pos, ino.id, a, this.#t);
        pos += ENTRY_OUT;
      }
      pos += putDirent(b, v, pos, a.ino, i + 1, type, d.name, lens[i - start]!);
    }
    return b;
  }
}
