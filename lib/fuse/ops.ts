/**
 * What each FUSE request does to the tree: lookups, attributes, opens,
 * reads, writes, directory listings, creation, removal and renames, in
 * terms of walk/open/read/write/create/stat/wstat/remove of the nodes.
 * The kernel's requests reach these through the opcode table of
 * handlers.ts; a tree that can walk and stat, or walk and open, in one go
 * (lib/fs/tree.ts) is asked to.
 *
 * @module
 */

import {
  type Dir,
  DMDIR,
  nullDir,
  ORDWR,
  OREAD,
  OTRUNC,
  OWRITE,
  QTAPPEND,
  QTDIR,
} from "../styx/types.ts";
import { type Node, type OpenFile, walkOpen, walkStat } from "../fs/tree.ts";
import { utf8Length } from "../bytes.ts";
import { Errno } from "./ffi.ts";
import { ErrnoError, errnoOf } from "./errno.ts";
import { type Inode, InodeTable, saw } from "./inodes.ts";
import { DirCache, HEAD_MAX } from "./dircache.ts";
import { firstOfEachName } from "../ns/union.ts";
import { attrOf, negativeEntry, S_IFDIR } from "./attrs.ts";
import {
  type Attr,
  attrOut,
  type CreateIn,
  direntSize,
  ENTRY_OUT,
  entryOut,
  Fattr,
  FOPEN_DIRECT_IO,
  FOPEN_KEEP_CACHE,
  openOut,
  putDirent,
  putEntry,
  type ReadIn,
  type RenameIn,
  type SetattrIn,
  statfsOut,
  type Validity,
  type WriteIn,
  writeOut,
} from "./proto.ts";

const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_TRUNC = 0o1000;
const DT_DIR = 4;
const DT_REG = 8;
/** Longest a released file waits for an open to share its clunk's write. */
const CLOSE_DELAY_MS = 2;

/** A reply's parts, or null for no reply. */
export type Reply = Uint8Array[] | null;

/** Work to do once a request's reply has been written. */
export interface Late {
  after: (() => void) | null;
}

/** An open file or directory the kernel holds a handle to. */
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

/** A name a directory entry can carry on the host. */
function usableName(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/") &&
    !name.includes("\0");
}

/** The 9P open mode for open(2) `flags`. */
function modeOf(flags: number): number {
  const acc = flags & O_ACCMODE;
  return acc === O_WRONLY ? OWRITE : acc === O_RDWR ? ORDWR : OREAD;
}

/** What FUSE requests do to one tree. */
export class FuseOps {
  readonly inodes: InodeTable;
  readonly cache: DirCache;
  readonly #handles = new Map<bigint, Handle>();
  #nextFh = 1n;
  /** Files released by the kernel, to be closed with the next open. */
  #closing: OpenFile[] = [];
  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  /** Serve `root`; `t` says how long the kernel may trust answers. */
  constructor(
    root: Node,
    readonly t: Validity,
    readonly uid: number,
    readonly gid: number,
    readonly directIo: boolean,
  ) {
    this.inodes = new InodeTable(root);
    this.cache = new DirCache(
      this.inodes,
      t,
      (ino, mode, signal, readAhead) => this.#openIno(ino, mode, signal, readAhead),
      directIo,
    );
  }

  // -- attributes -------------------------------------------------------------

  #attr(d: Dir): Attr {
    return attrOf(d, this.uid, this.gid);
  }

  #entry(ino: Inode, d: Dir): Uint8Array {
    return entryOut(ino.id, this.#attr(d), this.t);
  }

  // -- opening and closing ----------------------------------------------------

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
    const [base, names] = await this.inodes.pathTo(ino);
    // Files closed meanwhile are clunked first, in the same write.
    this.flushCloses();
    return await walkOpen(base, names, mode, { signal, readAhead });
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
      this.flushCloses();
    }, CLOSE_DELAY_MS);
  }

  /** Close every file released and not yet closed. */
  flushCloses(): void {
    if (this.#closing.length === 0) return;
    const fs = this.#closing;
    this.#closing = [];
    for (const f of fs) f.close().catch(() => {});
  }

  #newHandle(ino: Inode, file: OpenFile | null, direct: boolean, head = false): bigint {
    const fh = this.#nextFh++;
    this.#handles.set(fh, { ino, file, direct, entries: null, fresh: false, head });
    return fh;
  }

  #handleOf(fh: bigint): Handle {
    const h = this.#handles.get(fh);
    if (!h) throw new ErrnoError(Errno.EBADF);
    return h;
  }

  /** The session is over: close every file and node it holds. */
  async shutdown(): Promise<void> {
    this.flushCloses();
    if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
    const hs = [...this.#handles.values()];
    this.#handles.clear();
    this.cache.dropAll();
    await Promise.allSettled(hs.map((h) => h.file?.close()));
    await Promise.allSettled(this.inodes.takeNodes().map((n) => n.close()));
  }

  // -- requests ---------------------------------------------------------------

  /** LOOKUP `name` in directory `nodeid`. */
  async lookup(nodeid: bigint, name: string, signal: AbortSignal): Promise<Reply> {
    const parent = this.inodes.get(nodeid);
    if (!parent.isDir) throw new ErrnoError(Errno.ENOTDIR);
    const listing = await this.cache.listingFor(parent, signal);
    if (listing) {
      const d = listing.get(name);
      if (!d) {
        const age = performance.now() - this.cache.state(parent).listingAt;
        return [negativeEntry(this.t.entryMs - age)];
      }
      const ino = this.inodes.remember(parent, name, d, null);
      this.cache.lookedUp(parent, ino, d, listing);
      return [this.#entry(ino, d)];
    }
    const [pn, path] = await this.inodes.pathTo(parent);
    const gen = this.cache.state(parent).gen;
    let found;
    try {
      path.push(name);
      found = await walkStat(pn, path, { signal });
    } catch (e) {
      // Not there: the kernel may remember that for the entry timeout,
      // unless this mount changed the directory meanwhile.
      if (!signal.aborted && gen === this.cache.state(parent).gen && errnoOf(e) === Errno.ENOENT) {
        return [negativeEntry(this.t.entryMs)];
      }
      throw e;
    }
    const ino = this.inodes.remember(parent, name, found.dir, found.node);
    return [this.#entry(ino, found.dir)];
  }

  /** GETATTR of `nodeid`. */
  async getattr(nodeid: bigint, signal: AbortSignal): Promise<Reply> {
    const ino = this.inodes.get(nodeid);
    // Attributes read moments ago by a lookup or READDIRPLUS serve again.
    const age = performance.now() - ino.dirAt;
    if (ino.dir && age < this.t.attrMs) {
      const left = { entryMs: this.t.entryMs, attrMs: this.t.attrMs - age };
      return [attrOut(this.#attr(ino.dir), left)];
    }
    let d: Dir;
    if (ino.node === null && ino.walking === null && ino.parent) {
      const [pn, path] = await this.inodes.pathTo(ino.parent);
      path.push(ino.name);
      const w = await walkStat(pn, path, { signal });
      this.inodes.adopt(ino, w.node);
      d = w.dir;
    } else {
      d = await (await this.inodes.nodeOf(ino)).stat({ signal });
    }
    saw(ino, d);
    return [attrOut(this.#attr(d), this.t)];
  }

  /** SETATTR of `nodeid`: size, times and permission bits become a Twstat. */
  async setattr(nodeid: bigint, a: SetattrIn, signal: AbortSignal): Promise<Reply> {
    const ino = this.inodes.get(nodeid);
    this.cache.changed(ino);
    const o = { signal };
    const node = await this.inodes.nodeOf(ino);
    const cur = await node.stat(o);
    const d = nullDir();
    let change = false;
    if (a.valid & Fattr.SIZE) {
      d.length = a.size;
      change = true;
    }
    const now = Math.floor(Date.now() / 1000);
    if (a.valid & Fattr.MTIME) {
      d.mtime = a.valid & Fattr.MTIME_NOW ? now : Number(a.mtime);
      change = true;
    }
    if (a.valid & Fattr.ATIME) {
      d.atime = a.valid & Fattr.ATIME_NOW ? now : Number(a.atime);
      change = true;
    }
    if (a.valid & Fattr.MODE) {
      d.mode = ((cur.mode & ~0o777) | (a.mode & 0o777)) >>> 0;
      change = true;
    }
    if (
      (a.valid & Fattr.UID && a.uid !== this.uid) || (a.valid & Fattr.GID && a.gid !== this.gid)
    ) {
      throw new ErrnoError(Errno.EPERM);
    }
    let after = cur;
    if (change) {
      await node.wstat(d, o);
      after = await node.stat(o);
    }
    this.cache.changed(ino);
    saw(ino, after);
    return [attrOut(this.#attr(after), this.t)];
  }

  /** OPEN `nodeid` with open(2) `flags`. */
  async open(nodeid: bigint, flags: number, signal: AbortSignal): Promise<Reply> {
    const ino = this.inodes.get(nodeid);
    const acc = flags & O_ACCMODE;
    let mode = modeOf(flags);
    if (flags & O_TRUNC) mode |= OTRUNC;
    if (acc !== 0 || flags & O_TRUNC) this.cache.changed(ino);
    // Files that say they are empty are often synthetic (ctl, status): read them directly.
    // Append-only files ignore offsets: their writes must go one at a time, in order.
    const direct = this.directIo ||
      ((ino.dir?.qid.type ?? 0) & QTAPPEND) !== 0 ||
      (!(flags & O_TRUNC) && acc !== O_WRONLY && ino.length === 0n);
    const early = mode === OREAD && !direct ? await this.cache.takeAhead(ino) : null;
    if (early) {
      const fh = this.#newHandle(ino, early, false, true);
      this.cache.readAhead(ino);
      return [openOut(fh, FOPEN_KEEP_CACHE)];
    }
    // One byte more than the length: a short reply shows the end of the file.
    const small = mode === OREAD && !direct && ino.length > 0n && ino.length <= BigInt(HEAD_MAX);
    const file = await this.#openIno(ino, mode, signal, small ? Number(ino.length) + 1 : undefined);
    const fh = this.#newHandle(ino, file, direct, small);
    if (mode === OREAD && !direct) this.cache.readAhead(ino);
    // The page cache is kept across opens; AUTO_INVAL_DATA drops it when
    // a fresh stat shows another mtime or size.
    return [openOut(fh, direct ? FOPEN_DIRECT_IO : FOPEN_KEEP_CACHE)];
  }

  /** OPENDIR `nodeid`. */
  async opendir(nodeid: bigint, signal: AbortSignal): Promise<Reply> {
    const ino = this.inodes.get(nodeid);
    this.cache.openedDir(ino);
    const ahead = await this.cache.takeListing(ino, signal);
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

  /** READ; the reply is written from the parts as they are (no copy). */
  async read(r: ReadIn, signal: AbortSignal, late: Late): Promise<Reply> {
    const h = this.#handleOf(r.fh);
    const file = h.file;
    if (!file) throw new ErrnoError(Errno.EISDIR);
    const parts = await this.#read(h, file, r.offset, r.size, signal);
    // The reply copies the data into the kernel: the buffers can carry later replies.
    const release = file.release?.bind(file);
    if (release) {
      late.after = () => {
        for (const p of parts) release(p);
      };
    }
    return parts;
  }

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

  /** WRITE; several Twrites in flight for one large kernel write. */
  async write(w: WriteIn, signal: AbortSignal): Promise<Reply> {
    const h = this.#handleOf(w.fh);
    this.cache.changed(h.ino);
    const file = h.file;
    if (!file) throw new ErrnoError(Errno.EISDIR);
    const { data, offset } = w;
    const unit = file.iounit;
    let total = 0;
    if (h.direct || unit <= 0 || data.length <= unit) {
      total = await file.write(offset, data, { signal });
    } else {
      const parts: Promise<number>[] = [];
      for (let at = 0; at < data.length; at += unit) {
        parts.push(file.write(offset + BigInt(at), data.subarray(at, at + unit), { signal }));
      }
      const got = await Promise.all(parts);
      for (let i = 0; i < got.length; i++) {
        total += got[i]!;
        if (got[i]! < Math.min(unit, data.length - i * unit)) break;
      }
    }
    this.cache.changed(h.ino);
    return [writeOut(total)];
  }

  /** READDIR or READDIRPLUS (`plus`). */
  async readdir(r: ReadIn, plus: boolean, signal: AbortSignal): Promise<Reply> {
    const h = this.#handleOf(r.fh);
    const off = r.offset;
    if (h.fresh && off === 0n) {
      h.fresh = false;
    } else if (off === 0n || h.entries === null) {
      h.fresh = false;
      if (!h.file) {
        const f = await this.#openIno(h.ino, OREAD, signal);
        if (h.file) f.close().catch(() => {});
        else h.file = f;
      }
      const gen = this.cache.state(h.ino).gen;
      // One entry per name, as in DirCache: a union's duplicates stay out.
      h.entries = firstOfEachName(await h.file!.readDir({ signal }));
      if (this.cache.state(h.ino).gen === gen) this.cache.setListing(h.ino, h.entries, false);
    }
    return [this.#dirents(h, Number(off), r.size, plus)];
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
        const ino = this.inodes.remember(h.ino, d.name, d, null);
        putEntry(v, pos, ino.id, a, this.t);
        pos += ENTRY_OUT;
      }
      pos += putDirent(b, v, pos, a.ino, i + 1, type, d.name, lens[i - start]!);
    }
    return b;
  }

  /** RELEASE or RELEASEDIR of handle `fh`. */
  release(fh: bigint): Reply {
    const h = this.#handles.get(fh);
    this.#handles.delete(fh);
    // Nothing waits on a clunk: answer at once.
    if (h?.file) this.#closeLater(h.file);
    return [];
  }

  /** FSYNC or FSYNCDIR: writes reach the server before WRITE is answered. */
  fsync(fh: bigint): Reply {
    this.#handleOf(fh);
    return [];
  }

  /** STATFS: Styx has no such thing; plenty of room is claimed. */
  statfs(): Reply {
    return [statfsOut({
      blocks: 1n << 30n,
      bfree: 1n << 29n,
      bavail: 1n << 29n,
      files: 1n << 24n,
      ffree: 1n << 23n,
      bsize: 4096,
      namelen: 255,
    })];
  }

  /** CREATE `c.name` in directory `nodeid`, opened. */
  async create(nodeid: bigint, c: CreateIn, signal: AbortSignal): Promise<Reply> {
    const parent = this.inodes.get(nodeid);
    const o = { signal };
    const pn = await this.inodes.nodeOf(parent);
    this.cache.unlist(parent);
    this.flushCloses();
    const made = await pn.create(c.name, c.perm, modeOf(c.flags), o);
    this.cache.unlist(parent);
    let d: Dir;
    try {
      d = await made.node.stat(o);
    } catch (e) {
      await made.file.close().catch(() => {});
      await made.node.close().catch(() => {});
      throw e;
    }
    const ino = this.inodes.remember(parent, c.name, d, made.node);
    const fh = this.#newHandle(ino, made.file, this.directIo);
    return [this.#entry(ino, d), openOut(fh, this.directIo ? FOPEN_DIRECT_IO : 0)];
  }

  /** MKDIR `name` in directory `nodeid`. */
  async mkdir(nodeid: bigint, perm: number, name: string, signal: AbortSignal): Promise<Reply> {
    const parent = this.inodes.get(nodeid);
    const o = { signal };
    const pn = await this.inodes.nodeOf(parent);
    this.cache.unlist(parent);
    const c = await pn.create(name, (DMDIR | perm) >>> 0, OREAD, o);
    this.cache.unlist(parent);
    await c.file.close().catch(() => {});
    let d: Dir;
    try {
      d = await c.node.stat(o);
    } catch (e) {
      await c.node.close().catch(() => {});
      throw e;
    }
    return [this.#entry(this.inodes.remember(parent, name, d, c.node), d)];
  }

  /** UNLINK (`dir` false) or RMDIR (`dir` true) of `name` in directory `nodeid`. */
  async remove(nodeid: bigint, name: string, dir: boolean, signal: AbortSignal): Promise<Reply> {
    const parent = this.inodes.get(nodeid);
    const o = { signal };
    const pn = await this.inodes.nodeOf(parent);
    const w = await pn.walk([name], o);
    if (!w.node) throw new ErrnoError(Errno.ENOENT);
    const isDir = (w.node.qid.type & QTDIR) !== 0;
    if (isDir !== dir) {
      await w.node.close();
      throw new ErrnoError(isDir ? Errno.EISDIR : Errno.ENOTDIR);
    }
    this.cache.unlist(parent);
    await w.node.remove(o);
    this.cache.unlist(parent);
    this.#unname(parent, name);
    return [];
  }

  #unname(parent: Inode, name: string): void {
    const ino = this.inodes.unname(parent, name);
    if (ino) this.cache.forgetAhead(ino);
  }

  /** RENAME or RENAME2 of `r.oldname` in directory `nodeid`. */
  async rename(nodeid: bigint, r: RenameIn, signal: AbortSignal): Promise<Reply> {
    if (r.flags !== 0) throw new ErrnoError(Errno.EINVAL);
    const parent = this.inodes.get(nodeid);
    const newdir = this.inodes.get(r.newdir);
    const { oldname, newname } = r;
    // Styx renames only within a directory; EXDEV makes mv fall back to copy and remove.
    if (parent !== newdir) throw new ErrnoError(Errno.EXDEV);
    if (oldname === newname) return [];
    const o = { signal };
    this.cache.unlist(parent);
    const pn = await this.inodes.nodeOf(parent);
    const w = await pn.walk([oldname], o);
    if (!w.node) throw new ErrnoError(Errno.ENOENT);
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
        if (((t.node.qid.type & QTDIR) !== 0) !== isDir) {
          await t.node.close();
          throw new ErrnoError(isDir ? Errno.ENOTDIR : Errno.EISDIR);
        }
        await t.node.remove(o);
        await node.wstat(d, o);
      }
    } finally {
      node.close().catch(() => {});
    }
    this.cache.unlist(parent);
    this.#unname(parent, newname);
    this.inodes.renamed(parent, oldname, newname, isDir);
    return [];
  }
}
