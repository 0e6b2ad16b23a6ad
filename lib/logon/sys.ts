/**
 * The mount(2) calls a logon's private view needs beyond FUSE itself: a
 * private mount namespace, a tmpfs, recursive bind mounts, making a mount
 * unbindable, lazy unmounts. Through Deno's FFI on libc; needs --allow-ffi
 * and root.
 *
 * @module
 */

import { cstr, errnoVia, openLibc, strerror } from "../libc.ts";

const CLONE_NEWNS = 0x20000;
const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_BIND = 0x1000;
const MS_REC = 0x4000;
const MS_UNBINDABLE = 0x20000;
const MS_PRIVATE = 0x40000;
const MNT_DETACH = 2;
const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;
const AT_STATX_DONT_SYNC = 0x4000;
const STATX_TYPE = 0x1;
const O_RDONLY_DIRECTORY_CLOEXEC = 0o200000 | 0o2000000;
/** Offsets of stx_dev_major and stx_dev_minor in struct statx. */
const STX_DEV_MAJOR = 136;
const STX_DEV_MINOR = 140;

const symbols = {
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  unshare: { parameters: ["i32"], result: "i32" },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  chroot: { parameters: ["buffer"], result: "i32" },
  fchdir: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
let libc: Libc | undefined;

function lib(): Libc {
  return libc ??= openLibc(symbols, "a logon's mounts");
}

const cstrOrNull = (s: string | null) => s === null ? null : cstr(s);

function check(r: number, what: string): void {
  if (r === 0) return;
  throw new Error(`${what}: ${strerror(errnoVia(lib().__errno_location))}`);
}

function mount(src: string | null, target: string, type: string | null, flags: number, data = "") {
  return lib().mount(cstrOrNull(src), cstr(target), cstrOrNull(type), BigInt(flags), cstr(data));
}

/** Load the system calls this module makes (they load on first use otherwise). */
export function loadMountCalls(): void {
  lib();
}

/**
 * Move the calling thread (Deno's main thread, where JavaScript and
 * synchronous calls run) into a new mount namespace of its own with
 * private propagation. Nothing mounted from here on is seen by other
 * processes, and processes spawned from here on start in it.
 *
 * unshare(2) acts on the calling thread only: Deno's threads that exist
 * already, where asynchronous file operations run, stay in the old
 * namespace, while threads started later from this one join the new one.
 * So everything that must see the private mounts is done with synchronous
 * calls (and in child processes), and nothing may count on which view an
 * asynchronous call sees.
 */
export function enterPrivateMountNamespace(): void {
  check(lib().unshare(CLONE_NEWNS), "cannot make a private mount namespace");
  check(mount(null, "/", null, MS_REC | MS_PRIVATE), "cannot make the mounts private");
}

/** Mount an empty tmpfs on `target` with directory mode `mode`. */
export function mountTmpfs(target: string, mode = 0o755): void {
  const data = `mode=${mode.toString(8)},size=1m`;
  check(
    mount("ferry-view", target, "tmpfs", MS_NOSUID | MS_NODEV, data),
    `cannot mount a tmpfs on '${target}'`,
  );
}

/** Bind `src` (with every mount below it) on `target`. */
export function rbind(src: string, target: string): void {
  check(mount(src, target, null, MS_BIND | MS_REC), `cannot bind '${src}' on '${target}'`);
}

/** Make the mount at `target` unbindable, so recursive binds of its parents leave it out. */
export function makeUnbindable(target: string): void {
  check(mount(null, target, null, MS_UNBINDABLE), `cannot make '${target}' unbindable`);
}

/** Detach the mount at `target` and everything below it (a lazy unmount). */
export function detach(target: string): void {
  check(lib().umount2(cstr(target), MNT_DETACH), `cannot unmount '${target}'`);
}

/**
 * The device number, "MAJOR:MINOR", of the file system mounted at
 * `target`, from what the kernel has at hand: asked with
 * AT_STATX_DONT_SYNC, a FUSE file system is not asked for the root's
 * attributes, so this thread may ask about a mount only it answers.
 */
export function mountDevice(target: string): string {
  const buf = new Uint8Array(256);
  check(
    lib().statx(AT_FDCWD, cstr(target), AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_TYPE, buf),
    `cannot stat '${target}'`,
  );
  const v = new DataView(buf.buffer);
  return `${v.getUint32(STX_DEV_MAJOR, true)}:${v.getUint32(STX_DEV_MINOR, true)}`;
}

/**
 * Call `spawn` with this thread's root directory changed to `root` (as
 * chroot(2)), then change it and the working directory back. A process
 * spawned meanwhile from this thread (Deno forks from the calling thread)
 * starts with `root` as its root, as `unshare --root` would give it,
 * without a program of its own to exec. The thread must have a file
 * system context of its own (see {@link enterPrivateMountNamespace}),
 * and `root` must show the host's /proc, which Deno may read on this
 * thread as it spawns.
 */
export function withRoot<T>(root: string, spawn: () => T): T {
  const l = lib();
  const oldRoot = l.open(cstr("/"), O_RDONLY_DIRECTORY_CLOEXEC);
  check(oldRoot < 0 ? -1 : 0, "cannot open '/'");
  const oldCwd = l.open(cstr("."), O_RDONLY_DIRECTORY_CLOEXEC);
  try {
    check(oldCwd < 0 ? -1 : 0, "cannot open the working directory");
    check(l.chroot(cstr(root)), `cannot change the root to '${root}'`);
    try {
      return spawn();
    } finally {
      // Back out of the chroot: to the old root by its descriptor, root it
      // there, then back to where this thread was.
      check(l.fchdir(oldRoot), "cannot return to the old root");
      check(l.chroot(cstr(".")), "cannot restore the root");
      check(l.fchdir(oldCwd), "cannot return to the working directory");
    }
  } finally {
    l.close(oldRoot);
    if (oldCwd >= 0) l.close(oldCwd);
  }
}
