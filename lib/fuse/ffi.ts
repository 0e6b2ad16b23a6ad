/**
 * The few libc calls a FUSE mount needs, through Deno's FFI: open the
 * /dev/fuse device, mount(2) and umount2(2), poll(2) on a worker thread and
 * non-blocking read(2)/writev(2) on the main thread. Needs --allow-ffi and
 * (for mount and umount) root.
 *
 * @module
 */

import { cstr, errnoVia, openLibc, strerror } from "../libc.ts";

/** Linux errno values used by the FUSE layer. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ENODATA: 61,
  EOPNOTSUPP: 95,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
} as const;

const O_RDWR = 0o2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const MS_NOSUID = 2;
const MS_NODEV = 4;
/** umount2 flag: detach now, finish when the last user goes away. */
export const MNT_DETACH = 2;
const POLLIN = 0x001;
const POLLERR = 0x008;
const POLLHUP = 0x010;
const POLLNVAL = 0x020;

const symbols = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  pollNow: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32" },
  mount: {
    parameters: ["buffer", "buffer", "buffer", "u64", "buffer"],
    result: "i32",
  },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
let libc: Libc | undefined;

function lib(): Libc {
  return libc ??= openLibc(symbols, "FUSE");
}

const errno = (l: Libc) => errnoVia(l.__errno_location);

/** A failed system call: `errno` holds the error number. */
export class SysError extends Error {
  /** Make the error for `call` on `what` failing with `errno`. */
  constructor(readonly call: string, readonly errno: number, what: string) {
    super(`${call} ${what}: ${strerror(errno)}`);
    this.name = "SysError";
  }
}

/** True when FFI can be used (the --allow-ffi permission was granted). */
export function ffiAllowed(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

/** Open /dev/fuse read-write, non-blocking, close-on-exec; returns the descriptor. */
export function openFuseDevice(path = "/dev/fuse"): number {
  const l = lib();
  const fd = l.open(cstr(path), O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) throw new SysError("open", errno(l), `'${path}'`);
  return fd;
}

/** Close a descriptor (errors are ignored: there is nothing to do about them). */
export function closeFd(fd: number): void {
  lib().close(fd);
}

/**
 * mount(2) a FUSE file system served on `fd` at `target` with
 * nosuid,nodev and the option string `data` ("fd=N,rootmode=40000,...").
 */
export function mountFuse(source: string, target: string, fstype: string, data: string): void {
  const l = lib();
  const r = l.mount(
    cstr(source),
    cstr(target),
    cstr(fstype),
    BigInt(MS_NOSUID | MS_NODEV),
    cstr(data),
  );
  if (r !== 0) throw new SysError("mount", errno(l), `'${target}'`);
}

/** umount2(2); returns 0 or the errno value (EBUSY, EINVAL for "not mounted", ...). */
export function umount(target: string, flags = 0): number {
  const l = lib();
  return l.umount2(cstr(target), flags) === 0 ? 0 : errno(l);
}

/** What one non-blocking read of the device gave. */
export type ReadResult = { n: number } | { errno: number };

/** One read(2) into `buf` (the descriptor is non-blocking: EAGAIN means "nothing yet"). */
export function readFd(fd: number, buf: Uint8Array<ArrayBuffer>): ReadResult {
  const l = lib();
  const n = Number(l.read(fd, buf, BigInt(buf.length)));
  if (n < 0) return { errno: errno(l) };
  return { n };
}

/**
 * writev(2) `parts` to `fd` as one write (a FUSE reply must be a single
 * write). Returns 0 or the errno value.
 */
export function writeParts(fd: number, parts: Uint8Array[]): number {
  const l = lib();
  if (iov.length < parts.length * 2) iov = new BigUint64Array(parts.length * 2);
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    iov[i * 2] = p.length === 0
      ? 0n
      : BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(p as Uint8Array<ArrayBuffer>)));
    iov[i * 2 + 1] = BigInt(p.length);
  }
  for (;;) {
    const n = Number(l.writev(fd, iov, parts.length));
    if (n >= 0) return 0;
    const e = errno(l);
    if (e !== Errno.EINTR) return e;
  }
}

/** The iovec array of {@link writeParts}, reused (writev has copied by the time it returns). */
let iov = new BigUint64Array(16);

/**
 * Wait on a worker thread until `fd` is readable. Resolves "ready", or
 * "gone" when the device reports an error (the file system was unmounted
 * or the connection aborted).
 */
export async function waitReadable(fd: number): Promise<"ready" | "gone"> {
  const l = lib();
  const pfd = new Uint8Array(8);
  const v = new DataView(pfd.buffer);
  for (;;) {
    v.setInt32(0, fd, true);
    v.setInt16(4, POLLIN, true);
    v.setInt16(6, 0, true);
    const r = await l.poll(pfd, 1n, -1);
    if (r < 0) continue; // EINTR: try again
    const rev = v.getInt16(6, true);
    if (rev & (POLLERR | POLLHUP | POLLNVAL)) return "gone";
    if (rev & POLLIN) return "ready";
  }
}

const pollBuf = new Uint8Array(8);
const pollView = new DataView(pollBuf.buffer);

/**
 * Wait on this thread, at most `ms` milliseconds, until `fd` is readable:
 * "ready", "gone" (as {@link waitReadable}) or "timeout". Blocks the event
 * loop meanwhile: only for short waits when nothing else is due.
 */
export function waitReadableNow(fd: number, ms: number): "ready" | "gone" | "timeout" {
  const l = lib();
  pollView.setInt32(0, fd, true);
  pollView.setInt16(4, POLLIN, true);
  pollView.setInt16(6, 0, true);
  const r = l.pollNow(pollBuf, 1n, ms);
  if (r <= 0) return "timeout"; // EINTR counts as a timeout: the caller waits again
  const rev = pollView.getInt16(6, true);
  if (rev & (POLLERR | POLLHUP | POLLNVAL)) return "gone";
  return "ready";
}
