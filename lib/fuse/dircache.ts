/**
 * The directory cache and read-ahead policy of a FUSE session: listings
 * kept for the entry timeout to answer lookups and OPENDIR from, and the
 * heuristics that read ahead of a program walking a tree (subdirectories
 * of `ls -R`, `find`, `tar`, `git status`; small files of `tar`, `cp -r`,
 * `grep -r`) so that its requests find the answers waiting instead of
 * costing a round trip each.
 *
 * @module
 */

import { type Dir, OREAD, QTAPPEND, QTDIR } from "../styx/types.ts";
import { type OpenFile, withSignal } from "../fs/tree.ts";
import type { Inode, InodeTable } from "./inodes.ts";
import type { Validity } from "./proto.ts";
import { firstOfEachName } from "../ns/union.ts";

/** Files up to this size are read in the same round trip as they are opened. */
export const HEAD_MAX = 128 * 1024;
/** Files opened ahead of a reader going through a directory in order (tar, cp -r, grep -r). */
const AHEAD = 16;
/** In-order opens in one directory before files are opened ahead. */
const AHEAD_AFTER = 2;
/** Subdirectory listings read ahead of a walk through a tree (ls -R, find, tar, git). */
const DIRS_AHEAD = 8;
/** Subdirectories read for lookups after the one being looked up during a scan. */
const SCAN_AHEAD = 4;
/** Subdirectories of one directory opened before their siblings are read ahead. */
const DIRS_AHEAD_AFTER = 2;

/** Names in an order, and each name's place in it. */
type Order = [string[], Map<string, number>];

/** How a directory's entries are being used: what the read-ahead heuristics go by. */
interface Pattern {
  /** Lookups that missed the listing since `missAt`. */
  misses: number;
  missAt: number;
  /** Subdirectories opened (by name) since `dirsAt`, and the one opened last. */
  dirsOpened?: Set<string>;
  dirsAt?: number;
  lastDir?: string;
  /** The subdirectories of a listing, in its order and sorted. */
  subdirs?: { of: Map<string, Dir>; listed: Order; sorted: Order };
  /** Entry names of a listing in its order, and each name's place. */
  order?: { of: Map<string, Dir>; names: string[]; place: Map<string, number> };
  /** Place of the file opened last, and how many opens in a row came in order. */
  lastOpen?: number;
  streak?: number;
}

/** What the cache keeps about one directory. */
export interface DirState {
  /** The entries by name as last read, and when. */
  listing: Map<string, Dir> | null;
  listingAt: number;
  listingLoad: Promise<Map<string, Dir> | null> | null;
  /**
   * The entries of `listing` in order when they were read ahead (or for
   * lookups) and no OPENDIR has used them yet; the next one may.
   */
  unread: Dir[] | null;
  /** `listing` was read to answer lookups (names are being looked up one by one). */
  scanned: boolean;
  /** Bumped by every change made through the mount (a load begun before is stale). */
  gen: number;
  readonly pattern: Pattern;
}

/** A small file opened and read ahead of the kernel asking for it. */
interface Prefetch {
  ino: Inode;
  qpath: bigint;
  /** Opened with the start of the file read along. */
  file: Promise<OpenFile | null>;
  at: number;
}

/** Opens `ino` with 9P `mode`, reading `readAhead` bytes at offset 0 along. */
export type Opener = (
  ino: Inode,
  mode: number,
  signal: AbortSignal,
  readAhead?: number,
) => Promise<OpenFile>;

/** The directory cache and read-ahead policy over one session's inodes. */
export class DirCache {
  readonly #ahead = new Map<Inode, Prefetch>();

  /**
   * A cache over `inodes`, trusting what it read for `t`; `open` opens
   * files and directories. With `directIo`, no file is read ahead.
   */
  constructor(
    readonly inodes: InodeTable,
    readonly t: Validity,
    readonly open: Opener,
    readonly directIo: boolean,
  ) {}

  /** What is kept about directory `dir`. */
  state(dir: Inode): DirState {
    return dir.cache ??= {
      listing: null,
      listingAt: -Infinity,
      listingLoad: null,
      unread: null,
      scanned: false,
      gen: 0,
      pattern: { misses: 0, missAt: 0 },
    };
  }

  /** `ino` is being changed through this mount: forget what was cached about it. */
  changed(ino: Inode): void {
    // -Infinity, not 0: performance.now() counts from process start, so 0
    // would still look fresh during a new mount's first second.
    ino.dirAt = -Infinity;
    if (ino.parent) this.unlist(ino.parent);
    this.forgetAhead(ino);
  }

  /**
   * Directory `dir` is being changed through this mount: forget its
   * listing, and make any read of it still under way unable to keep what
   * it reads.
   */
  unlist(dir: Inode): void {
    const s = this.state(dir);
    s.listing = null;
    s.unread = null;
    s.listingLoad = null;
    s.gen++;
    // Its subdirectories read ahead by name may no longer be what those names are.
    this.inodes.dropUnseenIn(dir);
  }

  /** Forget the file `ino` opened ahead, if any, clunking it. */
  forgetAhead(ino: Inode): void {
    const p = this.#ahead.get(ino);
    if (p) this.#drop(p);
  }

  /** Forget every file opened ahead (the session is ending). */
  dropAll(): void {
    for (const p of [...this.#ahead.values()]) this.#drop(p);
  }

  #drop(p: Prefetch): void {
    if (this.#ahead.get(p.ino) === p) this.#ahead.delete(p.ino);
    p.file.then((f) => f?.close()).catch(() => {});
  }

  /** The file `ino` opened ahead moments ago (unchanged since), taken for use, or null. */
  async takeAhead(ino: Inode): Promise<OpenFile | null> {
    const p = this.#ahead.get(ino);
    if (!p) return null;
    this.#ahead.delete(ino);
    if (performance.now() - p.at < this.t.attrMs && p.qpath === ino.qpath) return await p.file;
    this.#drop(p);
    return null;
  }

  /**
   * `ino` was opened for reading. When its directory is being read file
   * by file in listing order, open and read the next small files now, so
   * that their opens find them waiting instead of costing a round trip each.
   */
  readAhead(ino: Inode): void {
    const dir = ino.parent;
    const s = dir?.cache;
    if (!dir || !s?.listing || this.t.attrMs <= 0 || this.directIo) return;
    if (performance.now() - s.listingAt >= this.t.entryMs) return;
    const listing = s.listing;
    const pat = s.pattern;
    if (pat.order?.of !== listing) {
      const names = [...listing.keys()];
      pat.order = { of: listing, names, place: new Map(names.map((n, i) => [n, i])) };
    }
    const { names, place } = pat.order;
    const at = place.get(ino.name);
    if (at === undefined) return;
    const last = pat.lastOpen ?? -2;
    pat.streak = at > last && at <= last + AHEAD + 1 ? (pat.streak ?? 0) + 1 : 0;
    pat.lastOpen = at;
    if (pat.streak < AHEAD_AFTER) return;
    const now = performance.now();
    for (const p of [...this.#ahead.values()]) {
      if (now - p.at >= this.t.attrMs) this.#drop(p);
    }
    for (let i = at + 1; i <= at + AHEAD && i < names.length; i++) {
      if (this.#ahead.size >= AHEAD * 2) break;
      const name = names[i]!;
      const next = this.inodes.child(dir, name);
      const d = listing.get(name);
      if (!next || !d || next.isDir || this.#ahead.has(next) || next.qpath !== d.qid.path) continue;
      if (d.length <= 0n || d.length > BigInt(HEAD_MAX) || (d.qid.type & QTAPPEND) !== 0) continue;
      const signal = new AbortController().signal;
      // One byte more than the length: a short reply shows the end of the file.
      const file = this.open(next, OREAD, signal, Number(d.length) + 1).catch(() => null);
      this.#ahead.set(next, { ino: next, qpath: next.qpath, file, at: now });
    }
  }

  /** Keep `entries` as the listing of `dir`; `unread`: read ahead, for the next OPENDIR. */
  setListing(dir: Inode, entries: Dir[], unread: boolean): void {
    const m = new Map<string, Dir>();
    for (const e of entries) m.set(e.name, e);
    const s = this.state(dir);
    s.listing = m;
    s.listingAt = performance.now();
    s.unread = unread ? entries : null;
  }

  /**
   * Read directory `dir` whole (walk, open, read, clunk) and keep it as its
   * listing, not yet used by an OPENDIR. Resolves with the listing, or null
   * when the directory was changed through this mount meanwhile. One read
   * at a time per directory; every caller shares it.
   */
  #loadListing(dir: Inode, forLookups: boolean): Promise<Map<string, Dir> | null> {
    const s = this.state(dir);
    if (s.listingLoad) return s.listingLoad;
    const gen = s.gen;
    // Shared by every caller: no one caller's interrupt may end it.
    const signal = new AbortController().signal;
    const load: Promise<Map<string, Dir> | null> = (async () => {
      const f = await this.open(dir, OREAD, signal, Number.MAX_SAFE_INTEGER);
      try {
        // A union lists a name once per member; the kernel gets the first
        // only (the file a lookup finds), so a name never stands for two inodes.
        const entries = firstOfEachName(await f.readDir({ signal }));
        if (s.gen !== gen) return null;
        this.setListing(dir, entries, true);
        s.scanned = forLookups;
        return s.listing;
      } finally {
        f.close().catch(() => {});
      }
    })().finally(() => {
      if (s.listingLoad === load) s.listingLoad = null;
    });
    s.listingLoad = load;
    return load;
  }

  /**
   * Entries of `dir` read ahead (or for lookups) within the entry timeout
   * and not used by an OPENDIR yet: taken for this one, or null.
   */
  async takeListing(dir: Inode, signal: AbortSignal): Promise<Dir[] | null> {
    const s = dir.cache;
    if (!s) return null;
    if (s.listingLoad) await withSignal(s.listingLoad.catch(() => null), signal);
    const e = s.unread;
    if (!e || performance.now() - s.listingAt >= this.t.entryMs) return null;
    s.unread = null;
    return e;
  }

  /**
   * Directory `ino` is being opened. When its parent's subdirectories are
   * being opened one after another (ls -R, find, du, tar, git status), read
   * the next few ahead, so that their OPENDIR and READDIR find the entries
   * waiting instead of costing a round trip and the server's directory
   * read each, one after another.
   */
  openedDir(ino: Inode): void {
    const p = ino.parent;
    const s = p?.cache;
    if (!p || !s || this.t.entryMs <= 0) return;
    const now = performance.now();
    const listing = s.listing;
    if (!listing || now - s.listingAt >= this.t.entryMs) return;
    const pat = s.pattern;
    if (!pat.dirsOpened || now - (pat.dirsAt ?? -Infinity) >= this.t.entryMs) {
      pat.dirsOpened = new Set();
      pat.lastDir = undefined;
    }
    pat.dirsAt = now;
    const prev = pat.lastDir;
    pat.dirsOpened.add(ino.name);
    pat.lastDir = ino.name;
    if (pat.dirsOpened.size < DIRS_AHEAD_AFTER) return;
    const subs = this.#subdirs(s, listing);
    // Programs go through a directory in the order it lists (find, tar, git)
    // or sorted by name (ls): follow whichever the last two opens fit, or both.
    const orders: Order[] = [];
    for (const o of [subs.listed, subs.sorted]) {
      const at = o[1].get(ino.name);
      const before = prev === undefined ? undefined : o[1].get(prev);
      if (at !== undefined && (before === undefined || before < at)) orders.push(o);
    }
    if (orders.length === 0) orders.push(subs.listed, subs.sorted);
    interleave(orders, ino.name, pat.dirsOpened, (name) => {
      const child = this.inodes.child(p, name);
      const d = listing.get(name);
      if (!child || !child.isDir || !d || child.qpath !== d.qid.path) return false;
      const cs = child.cache;
      if (cs?.listingLoad) return true;
      if (cs?.unread && now - cs.listingAt < this.t.entryMs) return true;
      this.#loadListing(child, false).catch(() => null);
      return true;
    });
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
      const s = ino.cache;
      if (s && (s.listingLoad || (s.listing && now - s.listingAt < this.t.entryMs))) return;
      this.#loadListing(ino, true).catch(() => null);
    };
    load(dir);
    const [names, places] = this.#subdirs(this.state(parent), listing).sorted;
    const at = places.get(dir.name);
    if (at === undefined) return;
    for (let i = at + 1; i < names.length && i <= at + SCAN_AHEAD; i++) {
      const name = names[i]!;
      const d = listing.get(name)!;
      let child = this.inodes.child(parent, name) ?? this.inodes.unseen(parent, name);
      if (child && (!child.isDir || child.qpath !== d.qid.path)) continue;
      if (!child) {
        child = this.inodes.newInode(parent, name, d.qid.path, true, null);
        this.inodes.addUnseen(child);
      }
      load(child);
    }
  }

  /** The subdirectories in `listing`, in listing order and sorted by name. */
  #subdirs(s: DirState, listing: Map<string, Dir>): NonNullable<Pattern["subdirs"]> {
    if (s.pattern.subdirs?.of === listing) return s.pattern.subdirs;
    const names: string[] = [];
    for (const [name, d] of listing) if ((d.qid.type & QTDIR) !== 0) names.push(name);
    const sorted = [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const places = (ns: string[]) => new Map(ns.map((n, i) => [n, i]));
    s.pattern.subdirs = {
      of: listing,
      listed: [names, places(names)],
      sorted: [sorted, places(sorted)],
    };
    return s.pattern.subdirs;
  }

  /**
   * The fresh listing of directory `dir` to answer a lookup from, or null.
   * A directory read moments ago answers at once; after a few lookups
   * that missed within one entry timeout (ls -l, git status, make) the
   * whole directory is read once instead of walking to each name.
   */
  async listingFor(dir: Inode, signal: AbortSignal): Promise<Map<string, Dir> | null> {
    const now = performance.now();
    const s = this.state(dir);
    if (s.listing && now - s.listingAt < this.t.entryMs) return s.listing;
    if (this.t.entryMs <= 0) return null;
    let load = s.listingLoad;
    if (!load) {
      const pat = s.pattern;
      if (now - pat.missAt > this.t.entryMs) pat.misses = 0;
      pat.missAt = now;
      if (++pat.misses < 3) return null;
      pat.misses = 0;
      load = this.#loadListing(dir, true);
    }
    try {
      return await withSignal(load, signal);
    } catch (e) {
      if (signal.aborted) throw e;
      return null; // fall back to a walk
    }
  }

  /**
   * `ino`, a subdirectory of `parent`, was looked up in `listing`. When
   * names are being looked up one by one through `parent` (git status,
   * make, ls -l of named files), the subdirectory looked up now is likely
   * next: read it whole while the kernel goes on.
   */
  lookedUp(parent: Inode, ino: Inode, d: Dir, listing: Map<string, Dir>): void {
    if (parent.cache?.scanned && ino.isDir && ino.qpath === d.qid.path) {
      this.#scanAhead(parent, ino, listing);
    }
  }
}

/**
 * Visit the names after `from` in each of `orders` in turn, skipping those
 * in `opened`, until DIRS_AHEAD visits have counted (`visit` returns true).
 */
function interleave(
  orders: Order[],
  from: string,
  opened: Set<string>,
  visit: (name: string) => boolean,
): void {
  const cursors = orders.map((o) => (o[1].get(from) ?? -1) + 1);
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
      if (!opened.has(name) && visit(name)) pending++;
    }
    if (!moved) break;
  }
}
