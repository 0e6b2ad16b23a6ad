/**
 * Paths below an export root resolved by the kernel, never through a
 * symlink: Linux's openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS
 * from a descriptor held on the root, called through Deno's FFI. Every
 * later call (stat, read, chmod, unlink...) works on the descriptor that
 * openat2 returned, or on a name inside a directory descriptor it returned,
 * so nothing a local user changes on the host between a client's walk and
 * its use of the fid can lead the call anywhere else.
 *
 * Descriptors come from libc, not from Deno, because Deno does not let a
 * program adopt a raw descriptor (and grants /proc/self/fd only under
 * --allow-all), so reads and writes are made here too: pread(2)/pwrite(2),
 * on the calling thread when small, on a worker thread when large.
 *
 * Needs Linux 5.6 or later (openat2), x86-64 or arm64, and --allow-ffi;
 * {@link openat2Beneath} returns undefined when any of these is missing.
 *
 * @module
 */

import {
  type Beneath,
  type BeneathDir,
  type BeneathFile,
  type HostStat,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  SYNC_IO,
} from "./beneath.ts";
import { cstr, errnoVia, openLibc } from "../libc.ts";

/** Open flags that differ between the architectures Linux runs Ferry on. */
const ARCH: Record<string, { directory: number; nofollow: number }> = {
  x86_64: { directory: 0o200000, nofollow: 0o400000 },
  aarch64: { directory: 0o40000, nofollow: 0o100000 },
};
const O_RDONLY = 0;
const O_WRONLY = 1;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const O_PATH = 0o10000000;
const RESOLVE_NO_SYMLINKS = 0x04;
const RESOLVE_BENEATH = 0x08;
const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const AT_REMOVEDIR = 0x200;
const AT_EMPTY_PATH = 0x1000;
const STATX_BASIC_STATS = 0x7ff;
const RENAME_NOREPLACE = 1;
const UTIME_OMIT = (1 << 30) - 2;
const SYS_OPENAT2 = 437n;
const SYS_FCHMODAT2 = 452n;
const ENOSYS = 38;
const EINVAL = 22;
const EPERM = 1;

/** errno values the host tree turns into Plan 9 errors, by name. */
const CODES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  9: "EBADF",
  13: "EACCES",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  26: "ETXTBSY",
  27: "EFBIG",
  28: "ENOSPC",
  30: "EROFS",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  95: "EOPNOTSUPP",
  122: "EDQUOT",
};

const symbols = {
  openat2: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "buffer", "usize"],
    result: "i64",
  },
  fchmodat2: { name: "syscall", parameters: ["i64", "i32", "buffer", "u32", "i32"], result: "i64" },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  pread: { name: "pread64", parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite: { name: "pwrite64", parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  preadAsync: {
    name: "pread64",
    parameters: ["i32", "buffer", "usize", "i64"],
    result: "isize",
    nonblocking: true,
  },
  pwriteAsync: {
    name: "pwrite64",
    parameters: ["i32", "buffer", "usize", "i64"],
    result: "isize",
    nonblocking: true,
  },
  ftruncate: { name: "ftruncate64", parameters: ["i32", "i64"], result: "i32" },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  fchownat: { parameters: ["i32", "buffer", "u32", "u32", "i32"], result: "i32" },
  utimensat: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  renameat: { parameters: ["i32", "buffer", "i32", "buffer"], result: "i32" },
  renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
  getdents64: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  lseek: { name: "lseek64", parameters: ["i32", "i64", "i32"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
let libc: Libc | null | undefined;

/** The C library, or null when FFI cannot be used here. */
function lib(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux" || !ARCH[Deno.build.arch]) return null;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
  } catch {
    return null;
  }
  try {
    libc = openLibc(symbols, "openat2");
  } catch {
    // No C library to be had: the checked-path resolver serves instead.
  }
  return libc;
}

const dec = new TextDecoder();

const EMPTY = cstr("");
const DOT = cstr(".");

/** A failed system call, carrying the errno's name as `code` (as Node's errors do). */
class HostCallError extends Error {
  readonly code: string;
  constructor(call: string, readonly errno: number) {
    const code = CODES[errno] ?? `errno ${errno}`;
    super(`${call}: ${code}`);
    this.code = code;
  }
}

function errno(l: Libc): number {
  return errnoVia(l.__errno_location);
}

/** `r` when it is not negative; else throw the calling thread's errno. */
function check(l: Libc, call: string, r: number | bigint): number {
  const n = Number(r);
  if (n < 0) throw new HostCallError(call, errno(l));
  return n;
}

/** struct open_how {u64 flags; u64 mode; u64 resolve}, reused for every call. */
const how = new BigUint64Array(3);
const howBytes = new Uint8Array(how.buffer);
const how32 = new Uint32Array(how.buffer);
/** getdents64 records, reused by every listing (each is read in one synchronous go). */
const dents = new Uint8Array(64 * 1024);
const dentsView = new DataView(dents.buffer);
/** struct statx, 256 bytes, reused for every call. */
const sx = new Uint8Array(256);
const sxv = new DataView(sx.buffer);

/** The path argument of the call being made: each is used before the next is built. */
const pathBuf = new Uint8Array(4096);

/**
 * `s` NUL-terminated for a synchronous call: ASCII (nearly every path) is
 * written into {@link pathBuf}, since a fresh encoding per call costs more
 * than the system call it is for; anything else gets its own copy.
 */
function pathArg(s: string): Uint8Array {
  const n = s.length;
  if (n >= pathBuf.length) return cstr(s);
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return cstr(s);
    pathBuf[i] = c;
  }
  pathBuf[n] = 0;
  // The call reads up to the NUL: no view of the exact length is needed.
  return pathBuf;
}

/** The last device seen: nearly every stat is of the same one. */
let lastDev = { major: -1, minor: -1, dev: 0n };

/** st_dev as glibc's makedev builds it, so it matches what stat(2) reports. */
function makedev(major: number, minor: number): bigint {
  const last = lastDev;
  if (last.major === major && last.minor === minor) return last.dev;
  const dev = (BigInt((major & 0xfffff000) >>> 0) << 32n) | (BigInt(major & 0xfff) << 8n) |
    (BigInt((minor & 0xffffff00) >>> 0) << 12n) | BigInt(minor & 0xff);
  lastDev = { major, minor, dev };
  return dev;
}

/** The little-endian u64 at `off`, as a number (file sizes and times stay below 2^53). */
function u64(off: number): number {
  return sxv.getUint32(off + 4, true) * 0x100000000 + sxv.getUint32(off, true);
}

function ms(off: number): number {
  const sec = sxv.getInt32(off + 4, true) * 0x100000000 + sxv.getUint32(off, true);
  return sec * 1000 + Math.floor(sxv.getUint32(off + 8, true) / 1e6);
}

/** The statx buffer as a HostStat. */
function decodeStatx(): HostStat {
  return {
    dev: makedev(sxv.getUint32(136, true), sxv.getUint32(140, true)),
    ino: sxv.getBigUint64(32, true),
    mode: sxv.getUint16(28, true),
    uid: sxv.getUint32(20, true),
    gid: sxv.getUint32(24, true),
    size: u64(40),
    atimeMs: ms(64),
    ctimeMs: ms(96),
    mtimeMs: ms(112),
  };
}

/**
 * A resolver for `realRoot` through openat2, or undefined when this
 * process cannot use it (not Linux, no --allow-ffi, a kernel before 5.6).
 */
export function openat2Beneath(realRoot: string): Beneath | undefined {
  const l = lib();
  if (!l) return undefined;
  const arch = ARCH[Deno.build.arch]!;
  const O_DIRECTORY = arch.directory;
  const O_NOFOLLOW = arch.nofollow;

  function openat2(dirfd: number, path: Uint8Array, flags: number, mode = 0): number {
    // Written as 32-bit halves (both architectures are little-endian): no bigint per call.
    how32[0] = flags | O_CLOEXEC;
    how32[1] = 0;
    how32[2] = mode;
    how32[3] = 0;
    how32[4] = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
    how32[5] = 0;
    return check(l!, "openat2", l!.openat2(SYS_OPENAT2, dirfd, path, howBytes, 24n));
  }

  how[0] = BigInt(O_PATH | O_DIRECTORY | O_CLOEXEC);
  how[1] = 0n;
  how[2] = 0n;
  const rootfd = Number(l.openat2(SYS_OPENAT2, AT_FDCWD, cstr(realRoot), howBytes, 24n));
  // ENOSYS before Linux 5.6, EPERM from some container seccomp filters; a
  // root that cannot be opened at all gets its error from the fallback.
  if (rootfd < 0) return undefined;

  const rel = (names: readonly string[]) => names.length === 0 ? DOT : pathArg(names.join("/"));

  /** Open `names` below the root with `flags`; the caller closes it. */
  const open = (names: readonly string[], flags: number, mode = 0) =>
    openat2(rootfd, rel(names), flags, mode);

  function fstat(fd: number): HostStat {
    check(
      l!,
      "statx",
      l!.statx(fd, EMPTY, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, sx),
    );
    return decodeStatx();
  }

  function statAt(dirfd: number, name: string): HostStat {
    check(l!, "statx", l!.statx(dirfd, cstr(name), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, sx));
    return decodeStatx();
  }

  /** Run `fn` on `names` opened with `flags`, closing it after. */
  function withFd<T>(names: readonly string[], flags: number, fn: (fd: number) => T): T {
    const fd = open(names, flags);
    try {
      return fn(fd);
    } finally {
      l!.close(fd);
    }
  }

  /** An O_PATH descriptor of `names` that is not a symlink (chmod and the like would follow it). */
  function withObject<T>(names: readonly string[], fn: (fd: number, st: HostStat) => T): T {
    return withFd(names, O_PATH | O_NOFOLLOW, (fd) => {
      const st = fstat(fd);
      if ((st.mode & S_IFMT) === S_IFLNK) throw new HostCallError("open", 40);
      return fn(fd, st);
    });
  }

  function parentOf(names: readonly string[]): [readonly string[], string] {
    const name = names[names.length - 1];
    if (name === undefined) throw new HostCallError("open", 1);
    return [names.slice(0, -1), name];
  }

  function chmod(names: readonly string[], perm: number): void {
    withObject(names, (fd) => {
      const r = Number(l!.fchmodat2(SYS_FCHMODAT2, fd, EMPTY, perm, AT_EMPTY_PATH));
      if (r === 0) return;
      const e = errno(l!);
      if (e !== ENOSYS && e !== EPERM) throw new HostCallError("chmod", e);
      // No fchmodat2 (before Linux 6.6, or filtered): open the object itself,
      // as resolved as ever, to get a descriptor fchmod takes.
      withFd(names, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, (fd2) => {
        check(l!, "chmod", l!.fchmod(fd2, perm));
      });
    });
  }

  function file(fd: number, size: number): BeneathFile {
    let closed = false;
    return {
      size,
      pread(buf, pos) {
        if (buf.length <= SYNC_IO) {
          try {
            return Promise.resolve(
              check(l!, "read", l!.pread(fd, buf, BigInt(buf.length), BigInt(pos))),
            );
          } catch (e) {
            return Promise.reject(e);
          }
        }
        return l!.preadAsync(fd, buf, BigInt(buf.length), BigInt(pos)).then((n) => {
          if (Number(n) < 0) throw new HostCallError("read", 5);
          return Number(n);
        });
      },
      preadNow(buf, pos) {
        return check(l!, "read", l!.pread(fd, buf, BigInt(buf.length), BigInt(pos)));
      },
      pwriteNow(data, off, pos) {
        const part = off === 0 ? data : data.subarray(off);
        return check(l!, "write", l!.pwrite(fd, part, BigInt(part.length), BigInt(pos)));
      },
      pwrite(data, off, pos) {
        const part = off === 0 ? data : data.subarray(off);
        if (part.length <= SYNC_IO) {
          try {
            return Promise.resolve(
              check(l!, "write", l!.pwrite(fd, part, BigInt(part.length), BigInt(pos))),
            );
          } catch (e) {
            return Promise.reject(e);
          }
        }
        return l!.pwriteAsync(fd, part, BigInt(part.length), BigInt(pos)).then((n) => {
          if (Number(n) < 0) throw new HostCallError("write", 5);
          return Number(n);
        });
      },
      stat: () => fstat(fd),
      close() {
        if (closed) return;
        closed = true;
        l!.close(fd);
      },
    };
  }

  function dir(fd: number): BeneathDir {
    let closed = false;
    return {
      names() {
        check(l!, "lseek", l!.lseek(fd, 0n, 0));
        const out: string[] = [];
        for (;;) {
          const n = check(l!, "getdents64", l!.getdents64(fd, dents, BigInt(dents.length)));
          if (n === 0) return out;
          // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
          for (let off = 0; off < n;) {
            const reclen = dentsView.getUint16(off + 16, true);
            const start = off + 19;
            let end = dents.indexOf(0, start);
            if (end < 0 || end > off + reclen) end = off + reclen;
            const name = dec.decode(dents.subarray(start, end));
            if (name !== "." && name !== "..") out.push(name);
            off += reclen;
          }
        }
      },
      lstat: (name) => statAt(fd, name),
      close() {
        if (closed) return;
        closed = true;
        l!.close(fd);
      },
    };
  }

  const self: Beneath = {
    kind: "openat2",
    lstat(names) {
      const name = names.length === 1 ? names[0]! : "";
      if (name !== "" && name !== "." && name !== ".." && !name.includes("/")) {
        // A name directly below the root has no directory on its way that a
        // symlink could replace: one statx that does not follow the name
        // itself is as safe as openat2, and a third of the system calls.
        check(
          l!,
          "statx",
          l!.statx(rootfd, pathArg(name), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, sx),
        );
        return decodeStatx();
      }
      return withFd(names, O_PATH | O_NOFOLLOW, fstat);
    },

    open(names, access, trunc) {
      const fd = open(names, access | O_NOFOLLOW | O_NONBLOCK);
      try {
        const st = fstat(fd);
        const type = st.mode & S_IFMT;
        if (type === S_IFDIR) return { st, dir: dir(fd) };
        // Only regular files: a FIFO or device is listed but not served.
        if (type !== S_IFREG) throw new HostCallError("open", 13);
        if (trunc) {
          check(l!, "truncate", l!.ftruncate(fd, 0n));
          return { st: fstat(fd), file: file(fd, 0) };
        }
        return { st, file: file(fd, st.size) };
      } catch (e) {
        l!.close(fd);
        throw e;
      }
    },

    create(names, access, perm) {
      const fd = open(names, access | O_CREAT | O_EXCL | O_NOFOLLOW, perm);
      try {
        // Exactly `perm`, whatever the umask.
        check(l!, "chmod", l!.fchmod(fd, perm));
        return { st: fstat(fd), file: file(fd, 0) };
      } catch (e) {
        l!.close(fd);
        throw e;
      }
    },

    mkdir(names, perm) {
      const [parent, name] = parentOf(names);
      withFd(parent, O_PATH | O_DIRECTORY, (dirfd) => {
        check(l!, "mkdir", l!.mkdirat(dirfd, cstr(name), perm));
      });
      chmod(names, perm);
      return self.lstat(names);
    },

    truncate(names, length) {
      withFd(names, O_WRONLY | O_NOFOLLOW | O_NONBLOCK, (fd) => {
        if ((fstat(fd).mode & S_IFMT) !== S_IFREG) throw new HostCallError("truncate", 13);
        check(l!, "truncate", l!.ftruncate(fd, BigInt(length)));
      });
    },

    chmod,

    utimes(names, atime, mtime) {
      const ts = new BigInt64Array([
        BigInt(atime ?? 0),
        BigInt(atime === undefined ? UTIME_OMIT : 0),
        BigInt(mtime ?? 0),
        BigInt(mtime === undefined ? UTIME_OMIT : 0),
      ]);
      withObject(names, (fd) => {
        check(l!, "utimes", l!.utimensat(fd, EMPTY, new Uint8Array(ts.buffer), AT_EMPTY_PATH));
      });
    },

    chgrp(names, gid) {
      withObject(names, (fd) => {
        check(l!, "chown", l!.fchownat(fd, EMPTY, 0xffffffff, gid, AT_EMPTY_PATH));
      });
    },

    chown(names, uid, gid) {
      withObject(names, (fd) => {
        check(l!, "chown", l!.fchownat(fd, EMPTY, uid >>> 0, gid >>> 0, AT_EMPTY_PATH));
      });
    },

    rename(names, to) {
      const [parent, from] = parentOf(names);
      withFd(parent, O_PATH | O_DIRECTORY, (dirfd) => {
        const a = cstr(from);
        const b = cstr(to);
        if (l!.renameat2(dirfd, a, dirfd, b, RENAME_NOREPLACE) === 0) return;
        const e = errno(l!);
        if (e !== EINVAL && e !== ENOSYS) throw new HostCallError("rename", e);
        // A file system without RENAME_NOREPLACE: look first.
        let exists = true;
        try {
          statAt(dirfd, to);
        } catch {
          exists = false;
        }
        if (exists) throw new HostCallError("rename", 17);
        check(l!, "rename", l!.renameat(dirfd, a, dirfd, b));
      });
    },

    remove(names) {
      const [parent, name] = parentOf(names);
      withFd(parent, O_PATH | O_DIRECTORY, (dirfd) => {
        const isDir = (statAt(dirfd, name).mode & S_IFMT) === S_IFDIR;
        check(l!, "remove", l!.unlinkat(dirfd, cstr(name), isDir ? AT_REMOVEDIR : 0));
      });
    },
  };
  rootFds.register(self, rootfd);
  return self;
}

/** The root's descriptor lives as long as the resolver that uses it. */
const rootFds = new FinalizationRegistry<number>((fd) => lib()?.close(fd));
