/**
 * Every host call a host tree makes, on paths below its root, none of them
 * following a symlink anywhere in the path. Two resolvers give that:
 *
 * - `openat2` (Linux 5.6+ with --allow-ffi, see ./openat2.ts): the kernel
 *   resolves each path from a descriptor held on the root with
 *   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, and the call then works on the
 *   descriptor it returned. Nothing a local user changes between a
 *   client's walk and its use of the fid can lead a call out of the root.
 * - `checked` (anywhere else): before each call, realpath(3) of the path
 *   (or of its parent, for calls that never follow the last component) must
 *   be the path itself, so a symlink swapped in before the call is refused;
 *   but one swapped in during the few microseconds between that check and
 *   the call is not seen.
 *
 * Paths are given as the names below the root, already checked (no "",
 * ".", ".." or "/"); the root is `[]`.
 *
 * @module
 */

import type * as NodeFs from "node:fs";

// node:fs is loaded only for the checked resolver (see
// loadCheckedBeneath): with openat2(2) a host tree does without it, and
// loading it costs a one-shot command such as `ferry logon` about a tenth
// of its start.
let fs: typeof NodeFs;

/** Load what {@link checkedBeneath} needs; await it before calling that. */
export async function loadCheckedBeneath(): Promise<void> {
  fs ??= await import("node:fs");
}

/** File type bits of a mode. */
export const S_IFMT = 0o170000;
/** A directory. */
export const S_IFDIR = 0o040000;
/** A regular file. */
export const S_IFREG = 0o100000;
/** A symbolic link. */
export const S_IFLNK = 0o120000;
/** Reads and writes up to this size are made on the calling thread. */
export const SYNC_IO = 512 * 1024 + 64;

/** What a host tree needs to know of a file (never following a symlink). */
export interface HostStat {
  dev: bigint;
  ino: bigint;
  /** st_mode: type bits and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
}

/** An open regular file. */
export interface BeneathFile {
  /** The size when it was opened. */
  readonly size: number;
  /** Read into `buf` at `pos` (pread: no shared file position). */
  pread(buf: Uint8Array, pos: number): Promise<number>;
  /** Write `data` from `off` at `pos` (pwrite); returns how many bytes were written. */
  pwrite(data: Uint8Array, off: number, pos: number): Promise<number>;
  /** {@link pwrite} on the calling thread, for writes up to SYNC_IO bytes. */
  pwriteNow?(data: Uint8Array, off: number, pos: number): number;
  /** {@link pread} on the calling thread, for reads up to SYNC_IO bytes. */
  preadNow?(buf: Uint8Array, pos: number): number;
  stat(): HostStat;
  /** Safe to call twice. */
  close(): void;
}

/** An open directory. */
export interface BeneathDir {
  /** Every entry's name, without "." and "..". */
  names(): string[];
  /** The entry `name` (a symlink is described, not followed). */
  lstat(name: string): HostStat;
  /** Safe to call twice. */
  close(): void;
}

/** 9P access modes, as the low two bits of an open mode. */
export type Access = 0 | 1 | 2;

/** Host calls below one root that never follow a symlink. */
export interface Beneath {
  /** Which resolver this is (see the module doc for what each guarantees). */
  readonly kind: "openat2" | "checked";
  /** Describe `names`; a symlink as the last name is described, not followed. */
  lstat(names: readonly string[]): HostStat;
  /** Open a regular file (truncated when `trunc`) or a directory (read only). */
  open(
    names: readonly string[],
    access: Access,
    trunc: boolean,
  ): { st: HostStat; file?: BeneathFile; dir?: BeneathDir };
  /** Create and open a new regular file with exactly `perm`. */
  create(names: readonly string[], access: Access, perm: number): {
    st: HostStat;
    file: BeneathFile;
  };
  /** Make a directory with exactly `perm`. */
  mkdir(names: readonly string[], perm: number): HostStat;
  truncate(names: readonly string[], length: number): void;
  chmod(names: readonly string[], perm: number): void;
  /** Set the times (seconds); an undefined one is left alone. */
  utimes(names: readonly string[], atime: number | undefined, mtime: number | undefined): void;
  chgrp(names: readonly string[], gid: number): void;
  /** Give the file to `uid` and `gid` (-1 leaves one alone); a symlink is not followed. */
  chown(names: readonly string[], uid: number, gid: number): void;
  /** Rename within the same directory; refused when `to` exists. */
  rename(names: readonly string[], to: string): void;
  /** Remove a file or an empty directory. */
  remove(names: readonly string[]): void;
}

function ms(d: Date | null): number {
  return d?.getTime() ?? 0;
}

/** A Deno.FileInfo as a HostStat. */
function fromInfo(st: Deno.FileInfo): HostStat {
  const type = st.isFile ? S_IFREG : st.isDirectory ? S_IFDIR : st.isSymlink ? S_IFLNK : 0;
  return {
    dev: BigInt(st.dev),
    ino: BigInt(st.ino ?? 0),
    mode: ((st.mode ?? 0) & 0o7777) | type,
    uid: st.uid ?? 0,
    gid: st.gid ?? 0,
    size: st.size,
    atimeMs: ms(st.atime),
    mtimeMs: ms(st.mtime),
    ctimeMs: ms(st.ctime),
  };
}

/** A node:fs descriptor's stat as a HostStat. */
function fstat(fd: number): HostStat {
  const st = fs.fstatSync(fd);
  return {
    dev: BigInt(st.dev),
    ino: BigInt(st.ino),
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    atimeMs: Math.floor(st.atimeMs),
    mtimeMs: Math.floor(st.mtimeMs),
    ctimeMs: Math.floor(st.ctimeMs),
  };
}

function fail(code: string, what: string): never {
  throw Object.assign(new Error(`${what}: ${code}`), { code });
}

function accessFlags(access: Access): number {
  const C = fs.constants;
  return access === 1 ? C.O_WRONLY : access === 2 ? C.O_RDWR : C.O_RDONLY;
}

/** A node:fs descriptor as a BeneathFile. */
function nodeFile(fd: number, size: number): BeneathFile {
  let closed = false;
  return {
    size,
    pread(buf, pos) {
      if (buf.length <= SYNC_IO) {
        try {
          return Promise.resolve(fs.readSync(fd, buf, 0, buf.length, pos));
        } catch (e) {
          return Promise.reject(e);
        }
      }
      return new Promise((resolve, reject) => {
        fs.read(fd, buf, 0, buf.length, pos, (e, n) => e ? reject(e) : resolve(n));
      });
    },
    pwriteNow: (data, off, pos) => fs.writeSync(fd, data, off, data.length - off, pos),
    preadNow: (buf, pos) => fs.readSync(fd, buf, 0, buf.length, pos),
    pwrite(data, off, pos) {
      const n = data.length - off;
      if (n <= SYNC_IO) {
        try {
          return Promise.resolve(fs.writeSync(fd, data, off, n, pos));
        } catch (e) {
          return Promise.reject(e);
        }
      }
      return new Promise((resolve, reject) => {
        fs.write(fd, data, off, n, pos, (e, w) => e ? reject(e) : resolve(w));
      });
    },
    stat: () => fstat(fd),
    close() {
      if (closed) return;
      closed = true;
      fs.closeSync(fd);
    },
  };
}

/** The checked-path resolver: see the module doc for what it cannot catch. */
export function checkedBeneath(realRoot: string): Beneath {
  if (!fs) throw new Error("the checked resolver is not loaded: await loadCheckedBeneath() first");
  const C = fs.constants;
  const pathOf = (names: readonly string[]) =>
    names.length === 0
      ? realRoot
      : realRoot === "/"
      ? "/" + names.join("/")
      : realRoot + "/" + names.join("/");

  /** The path of `names`, which must hold no symlink at all. */
  function real(names: readonly string[]): string {
    const p = pathOf(names);
    if (Deno.realPathSync(p) !== p) fail("ELOOP", "resolve");
    return p;
  }

  /** The path of `names`, whose parents must hold no symlink (the last name may be one). */
  function under(names: readonly string[]): string {
    if (names.length > 0) real(names.slice(0, -1));
    return pathOf(names);
  }

  /** The path of `names` when it names no symlink; with its stat. */
  function object(names: readonly string[]): [string, HostStat] {
    const p = under(names);
    const st = fromInfo(Deno.lstatSync(p));
    if ((st.mode & S_IFMT) === S_IFLNK) fail("ELOOP", "resolve");
    return [p, st];
  }

  function dir(names: readonly string[]): BeneathDir {
    return {
      names: () => Array.from(Deno.readDirSync(real(names)), (e) => e.name),
      lstat: (name) => fromInfo(Deno.lstatSync(pathOf([...names, name]))),
      close() {},
    };
  }

  return {
    kind: "checked",
    lstat: (names) => fromInfo(Deno.lstatSync(under(names))),

    open(names, access, trunc) {
      const [p, st] = object(names);
      const type = st.mode & S_IFMT;
      if (type === S_IFDIR) {
        if (access !== 0 || trunc) fail("EISDIR", "open");
        return { st, dir: dir(names) };
      }
      if (type !== S_IFREG) fail("EACCES", "open");
      let flags = accessFlags(access) | C.O_NOFOLLOW | C.O_NONBLOCK;
      if (trunc) flags |= C.O_TRUNC;
      const fd = fs.openSync(p, flags);
      try {
        const now = trunc ? fstat(fd) : st;
        return { st: now, file: nodeFile(fd, now.size) };
      } catch (e) {
        fs.closeSync(fd);
        throw e;
      }
    },

    create(names, access, perm) {
      const p = under(names);
      const fd = fs.openSync(p, accessFlags(access) | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, perm);
      try {
        fs.fchmodSync(fd, perm);
        return { st: fstat(fd), file: nodeFile(fd, 0) };
      } catch (e) {
        fs.closeSync(fd);
        throw e;
      }
    },

    mkdir(names, perm) {
      const p = under(names);
      fs.mkdirSync(p, perm);
      fs.chmodSync(real(names), perm);
      return fromInfo(Deno.lstatSync(p));
    },

    truncate(names, length) {
      const [p, st] = object(names);
      if ((st.mode & S_IFMT) !== S_IFREG) fail("EACCES", "truncate");
      fs.truncateSync(p, length);
    },

    chmod: (names, perm) => fs.chmodSync(real(names), perm),

    utimes(names, atime, mtime) {
      const [p, st] = object(names);
      fs.utimesSync(p, atime ?? st.atimeMs / 1000, mtime ?? st.mtimeMs / 1000);
    },

    chgrp: (names, gid) => fs.chownSync(real(names), -1, gid),

    chown: (names, uid, gid) => fs.lchownSync(real(names), uid, gid),

    rename(names, to) {
      const p = under(names);
      const target = pathOf([...names.slice(0, -1), to]);
      let exists = true;
      try {
        Deno.lstatSync(target);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        exists = false;
      }
      if (exists) fail("EEXIST", "rename");
      fs.renameSync(p, target);
    },

    remove(names) {
      const p = under(names);
      if (Deno.lstatSync(p).isDirectory) fs.rmdirSync(p);
      else fs.unlinkSync(p);
    },
  };
}
