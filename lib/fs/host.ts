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
 *   opened: that gives "permission denied".
 * - Nodes hold the resolved path (as `cd -P` would), so ".." after following
 *   a symlink goes to the parent of its target. Files are opened with
 *   O_NOFOLLOW, so a symlink that replaces a walked file is not followed.
 *
 * Host semantics worth knowing:
 * - Every operation runs with the permissions of the Ferry process; the
 *   caller's name is not mapped to a host user.
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
 *   this tree.
 *
 * @module
 */

import * as fsp from "node:fs/promises";
import { type BigIntStats, constants as C } from "node:fs";
import type { Caller, Created, Node, OpenFile, OpOptions, Tree, WalkResult } from "./tree.ts";
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
import { type HostUsers, hostUsers } from "./users.ts";

/** Options for {@link HostTree}. */
export interface HostTreeOptions {
  /** Refuse every change (write, create, remove, wstat) with "permission denied". */
  readOnly?: boolean;
}

/** Largest single read or write the tree performs (the server splits at iounit anyway). */
const MAX_IO = 16 * 1024 * 1024;
const MASK64 = (1n << 64n) - 1n;
const ALL32 = 0xffffffff;
/** Dir.mode flag bits other than DMDIR: none of them can be set on a host file. */
const MODE_FLAGS = 0x7fff0000;
const ALL64 = MASK64;
/** Directory entries stat'ed at once while reading a directory. */
const STAT_BATCH = 64;

/** State shared by every node of one attached tree. */
interface Ctx {
  realRoot: string;
  rootDev: bigint;
  users: HostUsers;
  readOnly: boolean;
  /** Writes made through this tree, per qid.path: mixed into qid.version. */
  writes: Map<bigint, number>;
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
  /** The directory as given to the constructor. */
  readonly root: string;
  /** True when every change is refused. */
  readonly readOnly: boolean;
  #ctx: Promise<Ctx> | undefined;

  /** Export `root`; nothing is checked until {@link ready} or the first attach. */
  constructor(root: string, opts: HostTreeOptions = {}) {
    this.root = root;
    this.readOnly = opts.readOnly ?? false;
  }

  /**
   * Check that the root exists and is a directory. Throws an Error that
   * names the directory when it is not (a local error, for command lines).
   */
  async ready(): Promise<void> {
    await this.#context();
  }

  #context(): Promise<Ctx> {
    this.#ctx ??= (async () => {
      let realRoot: string;
      let st: BigIntStats;
      try {
        realRoot = await fsp.realpath(this.root);
        st = await fsp.stat(realRoot, { bigint: true });
      } catch (e) {
        this.#ctx = undefined;
        throw new Error(`cannot export '${this.root}': ${errorString(e)}`);
      }
      if (!st.isDirectory()) {
        this.#ctx = undefined;
        throw new Error(`cannot export '${this.root}': not a directory`);
      }
      return {
        realRoot,
        rootDev: st.dev,
        users: await hostUsers(),
        readOnly: this.readOnly,
        writes: new Map(),
      };
    })();
    return this.#ctx;
  }

  /**
   * Attach to the root, or with a non-empty `aname` ("sub/dir") to a
   * directory below it, reached as a walk would reach it.
   */
  async attach(_caller: Caller, aname: string): Promise<Node> {
    let ctx: Ctx;
    try {
      ctx = await this.#context();
    } catch {
      throw new StyxError(Ename.notFound);
    }
    const st = await host(fsp.stat(ctx.realRoot, { bigint: true }));
    const root = new HostNode(ctx, [], qidOf(ctx, st));
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

async function host<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
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

function qidOf(ctx: Ctx, st: BigIntStats): Qid {
  let path = (st.ino ^ ((st.dev ^ ctx.rootDev) << 40n)) & MASK64;
  if (path === 0n) path = 1n << 63n;
  let v = st.mtimeNs ^ (st.ctimeNs << 7n) ^ (st.size << 17n);
  v ^= BigInt(ctx.writes.get(path) ?? 0) << 3n;
  v = (v ^ (v >> 32n) ^ (v >> 64n)) & 0xffffffffn;
  return { type: st.isDirectory() ? QTDIR : QTFILE, version: Number(v), path };
}

function dirOf(ctx: Ctx, st: BigIntStats, name: string): Dir {
  const isDir = st.isDirectory();
  const uid = ctx.users.userName(Number(st.uid));
  return {
    type: 0,
    dev: 0,
    qid: qidOf(ctx, st),
    mode: Number(st.mode & 0o777n) | (isDir ? DMDIR : 0),
    atime: Number(st.atimeNs / 1_000_000_000n) >>> 0,
    mtime: Number(st.mtimeNs / 1_000_000_000n) >>> 0,
    length: isDir ? 0n : st.size,
    name,
    uid,
    gid: ctx.users.groupName(Number(st.gid)),
    muid: uid,
  };
}

function toPosition(offset: bigint): number {
  if (offset < 0n || offset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new StyxError(`offset ${offset} is beyond what the host file system supports`);
  }
  return Number(offset);
}

function wantsWrite(mode: number): boolean {
  const acc = mode & 3;
  return acc === OWRITE || acc === ORDWR || (mode & OTRUNC) !== 0;
}

function lstat(p: string): Promise<BigIntStats> {
  return host(fsp.lstat(p, { bigint: true }));
}

/** A file or directory below the root, reached by walking. */
class HostNode implements Node {
  #qid: Qid;

  constructor(readonly ctx: Ctx, public rel: string[], qid: Qid) {
    this.#qid = qid;
  }

  get qid(): Qid {
    return this.#qid;
  }

  get path(): string {
    return pathOf(this.ctx, this.rel);
  }

  get name(): string {
    return this.rel[this.rel.length - 1] ?? "/";
  }

  async walk(names: string[], _opts?: OpOptions): Promise<WalkResult> {
    if (names.length === 0) return { qids: [], node: new HostNode(this.ctx, this.rel, this.#qid) };
    const qids: Qid[] = [];
    let rel = this.rel;
    let qid = this.#qid;
    for (const name of names) {
      try {
        checkName(name);
        if ((qid.type & QTDIR) === 0) throw new StyxError(Ename.walkNoDir);
        [rel, qid] = await this.#step(rel, name);
      } catch (e) {
        if (qids.length === 0) throw hostError(e);
        return { qids };
      }
      qids.push(qid);
    }
    return { qids, node: new HostNode(this.ctx, rel, qid) };
  }

  async #step(rel: string[], name: string): Promise<[string[], Qid]> {
    const ctx = this.ctx;
    if (name === "..") {
      const up = rel.slice(0, -1);
      return [up, qidOf(ctx, await lstat(pathOf(ctx, up)))];
    }
    const next = [...rel, name];
    const p = pathOf(ctx, next);
    const st = await lstat(p);
    if (!st.isSymbolicLink()) return [next, qidOf(ctx, st)];
    const real = await host(fsp.realpath(p));
    const inside = relOf(ctx, real);
    if (!inside) throw new StyxError(Ename.perm);
    const target = await lstat(real);
    return [inside, qidOf(ctx, target)];
  }

  async open(mode: number, _opts?: OpOptions): Promise<OpenFile> {
    const ctx = this.ctx;
    if (ctx.readOnly && (wantsWrite(mode) || (mode & ORCLOSE) !== 0)) {
      throw new StyxError(Ename.perm);
    }
    if (this.#qid.type & QTDIR) {
      if (wantsWrite(mode)) throw new StyxError(Ename.isDir);
      const st = await lstat(this.path);
      if (!st.isDirectory()) throw new StyxError(Ename.notDir);
      this.#qid = qidOf(ctx, st);
      return new HostDir(this, mode);
    }
    const acc = mode & 3;
    let flags = acc === OWRITE ? C.O_WRONLY : acc === ORDWR ? C.O_RDWR : C.O_RDONLY;
    if (mode & OTRUNC) flags |= C.O_TRUNC;
    flags |= C.O_NOFOLLOW | C.O_NONBLOCK;
    const fh = await host(fsp.open(this.path, flags));
    let st: BigIntStats;
    try {
      st = await host(fh.stat({ bigint: true }));
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
    if (!st.isFile()) {
      await fh.close().catch(() => {});
      throw new StyxError(st.isDirectory() ? Ename.isDir : Ename.perm);
    }
    this.#qid = qidOf(ctx, st);
    return new HostFile(this, fh, mode);
  }

  async create(name: string, perm: number, mode: number, _opts?: OpOptions): Promise<Created> {
    const ctx = this.ctx;
    checkName(name);
    if (name === "..") throw new StyxError(Ename.badName);
    if (ctx.readOnly) throw new StyxError(Ename.perm);
    if ((this.#qid.type & QTDIR) === 0) throw new StyxError(Ename.notDir);
    const dirSt = await lstat(this.path);
    if (!dirSt.isDirectory()) throw new StyxError(Ename.notDir);
    const dirperm = Number(dirSt.mode & 0o777n);
    const rel = [...this.rel, name];
    const p = pathOf(ctx, rel);
    if ((perm & DMDIR) !== 0) {
      if (wantsWrite(mode)) throw new StyxError(Ename.isDir);
      const bits = perm & (~0o777 | dirperm) & 0o777;
      await host(fsp.mkdir(p, bits));
      await host(fsp.chmod(p, bits));
      const node = new HostNode(ctx, rel, qidOf(ctx, await lstat(p)));
      return { node, file: new HostDir(node, mode) };
    }
    const bits = perm & (~0o666 | (dirperm & 0o666)) & 0o777;
    const acc = mode & 3;
    const flags = (acc === OWRITE ? C.O_WRONLY : acc === ORDWR ? C.O_RDWR : C.O_RDONLY) |
      C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
    const fh = await host(fsp.open(p, flags, bits));
    try {
      await host(fh.chmod(bits));
      const node = new HostNode(ctx, rel, qidOf(ctx, await host(fh.stat({ bigint: true }))));
      return { node, file: new HostFile(node, fh, mode) };
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  async stat(_opts?: OpOptions): Promise<Dir> {
    const st = await lstat(this.path);
    const d = dirOf(this.ctx, st, this.name);
    this.#qid = d.qid;
    return d;
  }

  async wstat(d: Dir, _opts?: OpOptions): Promise<void> {
    const ctx = this.ctx;
    if (ctx.readOnly) throw new StyxError(Ename.perm);
    const p = this.path;
    const st = await lstat(p);
    const cur = dirOf(ctx, st, this.name);
    const isDir = st.isDirectory();

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
    if (d.name !== "" && d.name !== cur.name) {
      checkName(d.name);
      if (d.name === ".." || this.rel.length === 0) throw new StyxError(Ename.badName);
      newName = d.name;
    }
    let length: number | undefined;
    if (d.length !== ALL64 && d.length !== cur.length) {
      if (isDir) throw new StyxError(Ename.isDir);
      length = toPosition(d.length);
    }
    let perm: number | undefined;
    if (d.mode !== ALL32) {
      if ((d.mode & DMDIR) !== 0 && !isDir) throw new StyxError(Ename.noWstat);
      // Plan 9 flags the host cannot keep (DMAPPEND, DMEXCL, DMAUTH, ...) are
      // refused; Unix file-type and set-id bits (9pfuse passes st_mode through,
      // e.g. 0100644) are ignored.
      if ((d.mode & MODE_FLAGS) !== 0) throw new StyxError(Ename.noWstat);
      if ((d.mode & 0o777) !== (cur.mode & 0o777)) perm = d.mode & 0o777;
    }
    const setM = d.mtime !== ALL32 && d.mtime !== cur.mtime;
    const setA = d.atime !== ALL32 && d.atime !== cur.atime;
    let gid: number | undefined;
    if (d.gid !== "" && d.gid !== cur.gid && d.gid !== String(st.gid)) {
      gid = ctx.users.gid(d.gid);
      if (gid === undefined) throw new StyxError("unknown group");
    }
    let target: string | undefined;
    if (newName !== undefined) {
      target = pathOf(ctx, [...this.rel.slice(0, -1), newName]);
      const exists = await fsp.lstat(target).then(() => true, (e) => {
        if ((e as { code?: string }).code === "ENOENT") return false;
        throw hostError(e);
      });
      if (exists) throw new StyxError(Ename.exists);
    }

    if (length !== undefined) await host(fsp.truncate(p, length));
    if (perm !== undefined) await host(fsp.chmod(p, perm));
    if (setM || setA) {
      const atime = setA ? d.atime : Number(st.atimeNs) / 1e9;
      const mtime = setM ? d.mtime : Number(st.mtimeNs) / 1e9;
      await host(fsp.utimes(p, atime, mtime));
    }
    if (gid !== undefined) await host(fsp.chown(p, -1, gid));
    if (target !== undefined && newName !== undefined) {
      await host(fsp.rename(p, target));
      this.rel = [...this.rel.slice(0, -1), newName];
    }
  }

  async remove(_opts?: OpOptions): Promise<void> {
    const ctx = this.ctx;
    if (ctx.readOnly || this.rel.length === 0) throw new StyxError(Ename.perm);
    await removePath(this.path);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

async function removePath(p: string): Promise<void> {
  const st = await lstat(p);
  if (st.isDirectory()) await host(fsp.rmdir(p));
  else await host(fsp.unlink(p));
}

/** An open regular file: reads and writes at explicit positions (pread/pwrite). */
class HostFile implements OpenFile {
  readonly iounit = 0;
  #closed = false;

  constructor(
    readonly node: HostNode,
    readonly fh: fsp.FileHandle,
    readonly mode: number,
  ) {}

  get qid(): Qid {
    return this.node.qid;
  }

  async read(offset: bigint, count: number, _opts?: OpOptions): Promise<Uint8Array> {
    if (this.#closed) throw new StyxError(Ename.notOpen);
    if ((this.mode & 3) === OWRITE) throw new StyxError(Ename.perm);
    const pos = toPosition(offset);
    const n = Math.min(Math.max(0, Math.trunc(count)), MAX_IO);
    if (n === 0) return new Uint8Array(0);
    const buf = new Uint8Array(n);
    const { bytesRead } = await host(this.fh.read(buf, 0, n, pos));
    return bytesRead === n ? buf : buf.subarray(0, bytesRead);
  }

  async write(offset: bigint, data: Uint8Array, _opts?: OpOptions): Promise<number> {
    if (this.#closed) throw new StyxError(Ename.notOpen);
    const acc = this.mode & 3;
    if (acc !== OWRITE && acc !== ORDWR) throw new StyxError(Ename.perm);
    const pos = toPosition(offset);
    if (pos + data.length > Number.MAX_SAFE_INTEGER) toPosition(offset + BigInt(data.length));
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await host(
        this.fh.write(data, done, data.length - done, pos + done),
      );
      if (bytesWritten <= 0) throw new StyxError(Ename.io);
      done += bytesWritten;
    }
    const writes = this.node.ctx.writes;
    const path = this.node.qid.path;
    writes.set(path, ((writes.get(path) ?? 0) + 1) >>> 0);
    return done;
  }

  readDir(_opts?: OpOptions): Promise<Dir[]> {
    return Promise.reject(new StyxError(Ename.notDir));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.fh.close().catch(() => {});
    if (this.mode & ORCLOSE) await removePath(this.node.path).catch(() => {});
  }
}

/** An open directory: its entries, each with its stat. */
class HostDir implements OpenFile {
  readonly iounit = 0;
  #closed = false;

  constructor(readonly node: HostNode, readonly mode: number) {}

  get qid(): Qid {
    return this.node.qid;
  }

  read(_offset: bigint, _count: number, _opts?: OpOptions): Promise<Uint8Array> {
    return Promise.reject(new StyxError(Ename.isDir));
  }

  write(_offset: bigint, _data: Uint8Array, _opts?: OpOptions): Promise<number> {
    return Promise.reject(new StyxError(Ename.isDir));
  }

  async readDir(_opts?: OpOptions): Promise<Dir[]> {
    if (this.#closed) throw new StyxError(Ename.notOpen);
    const ctx = this.node.ctx;
    const dir = this.node.path;
    const names = await host(fsp.readdir(dir));
    const out: Dir[] = [];
    for (let i = 0; i < names.length; i += STAT_BATCH) {
      const batch = names.slice(i, i + STAT_BATCH);
      const dirs = await Promise.all(batch.map((name) => entry(ctx, dir, name)));
      for (const d of dirs) if (d) out.push(d);
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.mode & ORCLOSE) await removePath(this.node.path).catch(() => {});
  }
}

/**
 * One directory entry. A symlink to somewhere inside the root shows its
 * target's stat under the link's name; one pointing outside (or dangling)
 * shows the link itself. An entry that vanished meanwhile is left out.
 */
async function entry(ctx: Ctx, dir: string, name: string): Promise<Dir | undefined> {
  const p = dir === "/" ? "/" + name : dir + "/" + name;
  try {
    const st = await fsp.lstat(p, { bigint: true });
    if (st.isSymbolicLink()) {
      try {
        const real = await fsp.realpath(p);
        if (relOf(ctx, real)) return dirOf(ctx, await fsp.lstat(real, { bigint: true }), name);
      } catch {
        // Dangling or unreadable: show the link itself.
      }
    }
    return dirOf(ctx, st, name);
  } catch {
    return undefined;
  }
}
