/**
 * The FUSE kernel protocol (7.31 as spoken here): opcodes, init flags and
 * the little-endian structs exchanged over /dev/fuse, as
 * include/uapi/linux/fuse.h lays them out.
 *
 * @module
 */

/** Opcodes of the requests the kernel sends. */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
} as const;

/** FUSE_INIT capability flags used here. */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  ATOMIC_O_TRUNC: 1 << 3,
  BIG_WRITES: 1 << 5,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
} as const;

/** SETATTR `valid` bits. */
export const Fattr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
} as const;

/** fuse_open_out.open_flags. */
export const FOPEN_DIRECT_IO = 1;
/** fuse_open_out.open_flags: keep the page cache across opens. */
export const FOPEN_KEEP_CACHE = 2;

/** The protocol version answered at FUSE_INIT. */
export const KERNEL_MAJOR = 7;
/** Highest minor version whose structures this module lays out. */
export const KERNEL_MINOR = 31;

/** sizeof(struct fuse_in_header) */
export const IN_HEADER = 40;
/** sizeof(struct fuse_out_header) */
export const OUT_HEADER = 16;
/** sizeof(struct fuse_attr) */
export const ATTR_SIZE = 88;
/** sizeof(struct fuse_entry_out) */
export const ENTRY_OUT = 40 + ATTR_SIZE;
/** sizeof(struct fuse_dirent) without the name */
export const DIRENT_BASE = 24;

/** struct fuse_in_header, decoded. */
export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

/** Decode the header at the start of a request. */
export function decodeInHeader(b: Uint8Array): InHeader {
  if (b.length < IN_HEADER) {
    throw new RangeError(`FUSE request of ${b.length} bytes is shorter than its header`);
  }
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    len: v.getUint32(0, true),
    opcode: v.getUint32(4, true),
    unique: v.getBigUint64(8, true),
    nodeid: v.getBigUint64(16, true),
    uid: v.getUint32(24, true),
    gid: v.getUint32(28, true),
    pid: v.getUint32(32, true),
  };
}

/** File attributes as struct fuse_attr carries them. */
export interface Attr {
  ino: bigint;
  size: bigint;
  blocks: bigint;
  atime: number;
  mtime: number;
  ctime: number;
  /** st_mode including the S_IFDIR/S_IFREG type bits. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  blksize: number;
}

/** Write a non-negative integer below 2^53 as a little-endian u64 (no BigInt made). */
function putU64(v: DataView, off: number, n: number): void {
  v.setUint32(off, n >>> 0, true);
  v.setUint32(off + 4, Math.floor(n / 0x100000000) >>> 0, true);
}

/** Write a time in seconds (negative ones as 0) as a u64. */
function putTime(v: DataView, off: number, t: number): void {
  putU64(v, off, t > 0 ? Math.floor(t) : 0);
}

/** Write `a` as struct fuse_attr at `off` of `v`. */
export function putAttr(v: DataView, off: number, a: Attr): void {
  v.setBigUint64(off, a.ino, true);
  v.setBigUint64(off + 8, a.size, true);
  v.setBigUint64(off + 16, a.blocks, true);
  putTime(v, off + 24, a.atime);
  putTime(v, off + 32, a.mtime);
  putTime(v, off + 40, a.ctime);
  v.setUint32(off + 48, 0, true);
  v.setUint32(off + 52, 0, true);
  v.setUint32(off + 56, 0, true);
  v.setUint32(off + 60, a.mode >>> 0, true);
  v.setUint32(off + 64, a.nlink, true);
  v.setUint32(off + 68, a.uid, true);
  v.setUint32(off + 72, a.gid, true);
  v.setUint32(off + 76, 0, true); // rdev
  v.setUint32(off + 80, a.blksize, true);
  v.setUint32(off + 84, 0, true); // flags
}

/** Cache lifetimes, in milliseconds. */
export interface Validity {
  entryMs: number;
  attrMs: number;
}

function putValid(v: DataView, off: number, ms: number): void {
  putU64(v, off, Math.floor(Math.max(0, ms) / 1000));
}
function putValidNsec(v: DataView, off: number, ms: number): void {
  v.setUint32(off, Math.min(999999999, Math.round((Math.max(0, ms) % 1000) * 1e6)), true);
}

/** Write struct fuse_entry_out at `off`. */
export function putEntry(
  v: DataView,
  off: number,
  nodeid: bigint,
  a: Attr,
  t: Validity,
): void {
  v.setBigUint64(off, nodeid, true);
  v.setBigUint64(off + 8, 0n, true); // generation
  putValid(v, off + 16, t.entryMs);
  putValid(v, off + 24, t.attrMs);
  putValidNsec(v, off + 32, t.entryMs);
  putValidNsec(v, off + 36, t.attrMs);
  putAttr(v, off + 40, a);
}

/** struct fuse_entry_out as bytes. */
export function entryOut(nodeid: bigint, a: Attr, t: Validity): Uint8Array {
  const b = new Uint8Array(ENTRY_OUT);
  putEntry(new DataView(b.buffer), 0, nodeid, a, t);
  return b;
}

/** struct fuse_attr_out as bytes. */
export function attrOut(a: Attr, t: Validity): Uint8Array {
  const b = new Uint8Array(16 + ATTR_SIZE);
  const v = new DataView(b.buffer);
  putValid(v, 0, t.attrMs);
  putValidNsec(v, 8, t.attrMs);
  putAttr(v, 16, a);
  return b;
}

/** struct fuse_open_out as bytes. */
export function openOut(fh: bigint, flags: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, fh, true);
  v.setUint32(8, flags, true);
  return b;
}

/** struct fuse_write_out as bytes. */
export function writeOut(size: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setUint32(0, size, true);
  return b;
}

/** struct fuse_statfs_out (struct fuse_kstatfs) as bytes. */
export function statfsOut(s: {
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  bsize: number;
  namelen: number;
}): Uint8Array {
  const b = new Uint8Array(80);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, s.blocks, true);
  v.setBigUint64(8, s.bfree, true);
  v.setBigUint64(16, s.bavail, true);
  v.setBigUint64(24, s.files, true);
  v.setBigUint64(32, s.ffree, true);
  v.setUint32(40, s.bsize, true);
  v.setUint32(44, s.namelen, true);
  v.setUint32(48, s.bsize, true); // frsize
  return b;
}

/** What the kernel offered in FUSE_INIT. */
export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

/** Decode fuse_init_in from a request body. */
export function decodeInitIn(body: Uint8Array): InitIn {
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  return {
    major: v.getUint32(0, true),
    minor: v.getUint32(4, true),
    maxReadahead: body.length >= 12 ? v.getUint32(8, true) : 0,
    flags: body.length >= 16 ? v.getUint32(12, true) : 0,
  };
}

/** struct fuse_init_out as bytes. */
export function initOut(o: {
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  maxPages: number;
}): Uint8Array {
  const b = new Uint8Array(64);
  const v = new DataView(b.buffer);
  v.setUint32(0, KERNEL_MAJOR, true);
  v.setUint32(4, o.minor, true);
  v.setUint32(8, o.maxReadahead, true);
  v.setUint32(12, o.flags >>> 0, true);
  v.setUint16(16, o.maxBackground, true);
  v.setUint16(18, o.congestionThreshold, true);
  v.setUint32(20, o.maxWrite, true);
  v.setUint32(24, 1, true); // time_gran: 1 ns
  v.setUint16(28, o.maxPages, true);
  return b;
}

/** Space one directory entry takes in a READDIR reply. */
export function direntSize(nameLen: number, plus: boolean): number {
  return (plus ? ENTRY_OUT : 0) + ((DIRENT_BASE + nameLen + 7) & ~7);
}

const nameEncoder = new TextEncoder();

/**
 * Write struct fuse_dirent at `off`: the name (`len` bytes of UTF-8, from
 * `utf8Length`) included, zero padded. Returns the bytes used.
 */
export function putDirent(
  b: Uint8Array,
  v: DataView,
  off: number,
  ino: bigint,
  next: number,
  type: number,
  name: string,
  len: number,
): number {
  v.setBigUint64(off, ino, true);
  v.setUint32(off + 8, next >>> 0, true);
  v.setUint32(off + 12, Math.floor(next / 0x100000000) >>> 0, true);
  v.setUint32(off + 16, len, true);
  v.setUint32(off + 20, type, true);
  const at = off + DIRENT_BASE;
  if (len === name.length) {
    for (let i = 0; i < len; i++) b[at + i] = name.charCodeAt(i);
  } else {
    nameEncoder.encodeInto(name, b.subarray(at, at + len));
  }
  const size = (DIRENT_BASE + len + 7) & ~7;
  b.fill(0, at + len, off + size);
  return size;
}

/** Read a NUL-terminated name starting at `off`; returns it and the offset after the NUL. */
export function cString(b: Uint8Array, off: number): [string, number] {
  let end = b.indexOf(0, off);
  if (end < 0) end = b.length;
  return [new TextDecoder().decode(b.subarray(off, end)), end + 1];
}

// -- request bodies -----------------------------------------------------------
//
// One decoder per request, each named after the struct the kernel sends
// (the body is what follows struct fuse_in_header).

function view(body: Uint8Array): DataView {
  return new DataView(body.buffer, body.byteOffset, body.byteLength);
}

/** A request whose body is only a name (LOOKUP, UNLINK, RMDIR): the name. */
export function decodeNameIn(body: Uint8Array): string {
  return cString(body, 0)[0];
}

/** struct fuse_forget_in: how many lookups the kernel forgets. */
export function decodeForgetIn(body: Uint8Array): bigint {
  return view(body).getBigUint64(0, true);
}

/** struct fuse_batch_forget_in with its fuse_forget_one entries: [node id, lookups] pairs. */
export function decodeBatchForgetIn(body: Uint8Array): Array<[bigint, bigint]> {
  const v = view(body);
  const count = v.getUint32(0, true);
  const out: Array<[bigint, bigint]> = [];
  for (let i = 0; i < count && 8 + i * 16 + 16 <= body.length; i++) {
    out.push([v.getBigUint64(8 + i * 16, true), v.getBigUint64(16 + i * 16, true)]);
  }
  return out;
}

/** struct fuse_interrupt_in: the unique id of the request to interrupt. */
export function decodeInterruptIn(body: Uint8Array): bigint {
  return view(body).getBigUint64(0, true);
}

/** struct fuse_setattr_in, decoded (times in seconds). */
export interface SetattrIn {
  /** Which fields are set: {@link Fattr} bits. */
  valid: number;
  size: bigint;
  atime: bigint;
  mtime: bigint;
  mode: number;
  uid: number;
  gid: number;
}

/** Decode struct fuse_setattr_in. */
export function decodeSetattrIn(body: Uint8Array): SetattrIn {
  const v = view(body);
  return {
    valid: v.getUint32(0, true),
    size: v.getBigUint64(16, true),
    atime: v.getBigUint64(32, true),
    mtime: v.getBigUint64(40, true),
    mode: v.getUint32(68, true),
    uid: v.getUint32(76, true),
    gid: v.getUint32(80, true),
  };
}

/** struct fuse_open_in: the open(2) flags. */
export function decodeOpenIn(body: Uint8Array): number {
  return view(body).getUint32(0, true);
}

/** struct fuse_read_in (READ, READDIR, READDIRPLUS), decoded. */
export interface ReadIn {
  fh: bigint;
  offset: bigint;
  size: number;
}

/** Decode struct fuse_read_in. */
export function decodeReadIn(body: Uint8Array): ReadIn {
  const v = view(body);
  return {
    fh: v.getBigUint64(0, true),
    offset: v.getBigUint64(8, true),
    size: v.getUint32(16, true),
  };
}

/** sizeof(struct fuse_write_in): the data follows it. */
const WRITE_IN = 40;

/** struct fuse_write_in and the data after it (a view, not a copy). */
export interface WriteIn {
  fh: bigint;
  offset: bigint;
  data: Uint8Array;
}

/** Decode struct fuse_write_in. */
export function decodeWriteIn(body: Uint8Array): WriteIn {
  const v = view(body);
  const size = v.getUint32(16, true);
  return {
    fh: v.getBigUint64(0, true),
    offset: v.getBigUint64(8, true),
    data: body.subarray(WRITE_IN, WRITE_IN + size),
  };
}

/** The file handle that starts struct fuse_release_in and struct fuse_fsync_in. */
export function decodeFhIn(body: Uint8Array): bigint {
  return view(body).getBigUint64(0, true);
}

/** struct fuse_create_in and the name after it, decoded. */
export interface CreateIn {
  flags: number;
  /** Permission bits only. */
  perm: number;
  name: string;
}

/** Decode struct fuse_create_in and its name. */
export function decodeCreateIn(body: Uint8Array): CreateIn {
  const v = view(body);
  return {
    flags: v.getUint32(0, true),
    perm: v.getUint32(4, true) & 0o777,
    name: cString(body, 16)[0],
  };
}

/** Decode struct fuse_mkdir_in and its name: the permission bits and the name. */
export function decodeMkdirIn(body: Uint8Array): { perm: number; name: string } {
  return { perm: view(body).getUint32(0, true) & 0o777, name: cString(body, 8)[0] };
}

/** struct fuse_rename_in / fuse_rename2_in and the two names after it, decoded. */
export interface RenameIn {
  newdir: bigint;
  /** RENAME2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE...); 0 for RENAME. */
  flags: number;
  oldname: string;
  newname: string;
}

/** Decode a RENAME (`two` false) or RENAME2 (`two` true) body. */
export function decodeRenameIn(body: Uint8Array, two: boolean): RenameIn {
  const v = view(body);
  const flags = two ? v.getUint32(8, true) : 0;
  const [oldname, next] = cString(body, two ? 16 : 8);
  const [newname] = cString(body, next);
  return { newdir: v.getBigUint64(0, true), flags, oldname, newname };
}
