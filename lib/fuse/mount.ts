/**
 * Mount a {@link Tree} (a remote Styx tree, a namespace, any tree) on a
 * host directory through the kernel's FUSE, so every program on the
 * machine sees it; and unmount it again.
 *
 * Ferry speaks the FUSE kernel protocol itself on /dev/fuse and calls
 * mount(2)/umount2(2) through Deno's FFI on libc: no libfuse, no
 * fusermount, no native add-on. That needs root (or CAP_SYS_ADMIN) and
 * Deno's --allow-ffi permission.
 *
 * @module
 */

import type { Caller, Node, Tree } from "../fs/tree.ts";
import {
  closeFd,
  Errno,
  ffiAllowed,
  MNT_DETACH,
  mountFuse,
  openFuseDevice,
  umount,
} from "./ffi.ts";
import { strerror } from "../libc.ts";
import { FuseSession, type SessionOptions } from "./session.ts";

/** How long close() waits for the session to end after a lazy unmount. */
const CLOSE_GRACE_MS = 2000;

export { errnoOf, FuseSession, type SessionOptions } from "./session.ts";

/** Options of {@link mountTree}. */
export interface MountOptions extends SessionOptions {
  /** Name shown as the mount's source in /proc/mounts (default "ferry"). */
  fsname?: string;
  /** Let users other than the mounter use the mount (default true). */
  allowOther?: boolean;
  /** Kernel readahead for the mount in KiB (default 4096; 0 keeps the kernel's). */
  readaheadKb?: number;
  /** Who attaches to the tree (default: the host user name). */
  caller?: Caller;
  /** Attach name (default ""). */
  aname?: string;
}

/** A live FUSE mount. */
export interface FuseMount {
  /** The absolute mount point. */
  readonly mountpoint: string;
  /** The session answering the kernel. */
  readonly session: FuseSession;
  /** Resolves when the kernel has ended the connection (unmounted, last user gone). */
  readonly done: Promise<void>;
  /**
   * Unmount: a normal unmount, or a lazy one when the mount is busy (open
   * files keep working until closed). Resolves with which it was.
   */
  unmount(): Promise<"unmounted" | "detached">;
  /** Detach the mount and drop the connection at once (open files fail with ENOTCONN). */
  close(): Promise<void>;
}

/**
 * Why FUSE cannot be used here, or null when it can: needs /dev/fuse,
 * root, and the ffi permission.
 */
export function fuseUnavailable(): string | null {
  if (!ffiAllowed()) return "FUSE needs Deno's --allow-ffi permission";
  try {
    closeFd(openFuseDevice());
  } catch (e) {
    return `${(e as Error).message} (is FUSE available in this kernel or container?)`;
  }
  if (Deno.uid() !== 0) return "mounting needs root (this process is not uid 0)";
  return null;
}

/**
 * Parse a `-o` option list: attr_timeout=S, entry_timeout=S, direct_io,
 * max_io=BYTES, readahead_kb=N, fsname=NAME, debug. Throws naming the first
 * option it does not know or whose value is bad.
 *
 * @example
 * ```ts
 * import { parseMountOptions } from "./mount.ts";
 * const o = parseMountOptions("attr_timeout=5,entry_timeout=0.5");
 * if (o.attrTimeout !== 5 || o.entryTimeout !== 0.5) throw new Error("wrong");
 * ```
 */
export function parseMountOptions(list: string, into: MountOptions = {}): MountOptions {
  for (const raw of list.split(",")) {
    const item = raw.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? undefined : item.slice(eq + 1);
    const num = (min: number, max: number): number => {
      const n = Number(value);
      if (value === undefined || value === "" || !Number.isFinite(n) || n < min || n > max) {
        throw new Error(
          `bad value '${
            value ?? ""
          }' for mount option '${name}': want a number from ${min} to ${max}`,
        );
      }
      return n;
    };
    switch (name) {
      case "attr_timeout":
        into.attrTimeout = num(0, 86400);
        break;
      case "entry_timeout":
        into.entryTimeout = num(0, 86400);
        break;
      case "direct_io":
        into.directIo = true;
        break;
      case "max_io":
        into.maxIo = Math.floor(num(4096, 1024 * 1024) / 4096) * 4096;
        break;
      case "readahead_kb":
        into.readaheadKb = Math.floor(num(0, 65536));
        break;
      case "fsname":
        if (!value || /[,\s]/.test(value)) {
          throw new Error(`bad value '${value ?? ""}' for mount option 'fsname'`);
        }
        into.fsname = value;
        break;
      case "debug":
        into.debug = true;
        break;
      case "allow_other":
        into.allowOther = true;
        break;
      default:
        throw new Error(`unknown mount option '${item}'`);
    }
  }
  return into;
}

async function setReadahead(mountpoint: string, kb: number): Promise<void> {
  try {
    const st = await Deno.stat(mountpoint);
    const dev = st.dev;
    const major = (dev >> 8) & 0xfff;
    const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    await Deno.writeTextFile(`/sys/class/bdi/${major}:${minor}/read_ahead_kb`, `${kb}\n`);
  } catch {
    // Only a tuning: the mount works with the kernel's default readahead.
  }
}

/**
 * Mount `tree` (attached as `opts.caller`) or an already attached `root`
 * node on the directory `mountpoint`.
 *
 * @example
 * ```ts ignore
 * import { mountTree } from "./mount.ts";
 * import { MemTree } from "../fs/memory.ts";
 * const m = await mountTree(new MemTree(), "/mnt/x", { attrTimeout: 1 });
 * // ... every program on the host now sees the tree at /mnt/x ...
 * await m.unmount();
 * ```
 */
export async function mountTree(
  tree: Tree | Node,
  mountpoint: string,
  opts: MountOptions = {},
): Promise<FuseMount> {
  const why = fuseUnavailable();
  if (why) throw new Error(`cannot mount on '${mountpoint}': ${why}`);
  let mp: string;
  try {
    // Synchronous, so the calling thread's mounts count (a logon's private
    // namespace is its main thread's).
    mp = Deno.realPathSync(mountpoint);
    if (!Deno.statSync(mp).isDirectory) throw new Error("not a directory");
  } catch (e) {
    const msg = e instanceof Deno.errors.NotFound ? "no such directory" : (e as Error).message;
    throw new Error(`cannot mount on '${mountpoint}': ${msg}`);
  }
  const root: Node = "attach" in tree
    ? await tree.attach(opts.caller ?? { user: Deno.env.get("USER") ?? "none" }, opts.aname ?? "")
    : tree;
  const maxIo = opts.maxIo ?? 1024 * 1024;
  let fd: number;
  try {
    fd = openFuseDevice();
  } catch (e) {
    throw new Error(`cannot mount on '${mountpoint}': ${(e as Error).message}`);
  }
  const uid = Deno.uid() ?? 0;
  const gid = Deno.gid() ?? 0;
  const data = [
    `fd=${fd}`,
    "rootmode=40000",
    `user_id=${uid}`,
    `group_id=${gid}`,
    `max_read=${maxIo}`,
    ...(opts.allowOther === false ? [] : ["allow_other"]),
  ].join(",");
  try {
    mountFuse(opts.fsname ?? "ferry", mp, "fuse.ferry", data);
  } catch (e) {
    closeFd(fd);
    throw new Error(`cannot mount on '${mountpoint}': ${(e as Error).message}`);
  }
  const session = new FuseSession(fd, root, { ...opts, maxIo });
  let closed = false;
  const done = session.done.finally(() => {
    if (!closed) {
      closed = true;
      closeFd(fd);
    }
  });
  await session.initialised;
  const ra = opts.readaheadKb ?? 4096;
  if (ra > 0) await setReadahead(mp, ra);
  return {
    mountpoint: mp,
    session,
    done,
    async unmount() {
      const how = await unmountPath(mp);
      await done;
      return how;
    },
    async close() {
      umount(mp, MNT_DETACH);
      session.stop();
      if (!closed) {
        closed = true;
        closeFd(fd);
      }
      // A detached mount lives on while anything still holds it, and closing
      // the descriptor does not wake a read already blocked on it: wait for
      // the session a little, not for ever (the read ends with the mount).
      let timer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((r) => {
        const t = setTimeout(r, CLOSE_GRACE_MS);
        Deno.unrefTimer(t);
        timer = t;
      });
      await Promise.race([done.catch(() => {}), grace]);
      clearTimeout(timer);
    },
  };
}

/**
 * Unmount whatever is mounted on `mountpoint`: a normal unmount, or a lazy
 * one (MNT_DETACH) when it is busy. Throws when nothing is mounted there.
 */
export function unmountPath(mountpoint: string): Promise<"unmounted" | "detached"> {
  let e = umount(mountpoint, 0);
  if (e === 0) return Promise.resolve("unmounted");
  if (e === Errno.EBUSY) {
    e = umount(mountpoint, MNT_DETACH);
    if (e === 0) return Promise.resolve("detached");
  }
  const why = e === Errno.EINVAL ? "not a mount point" : strerror(e);
  return Promise.reject(new Error(`cannot unmount '${mountpoint}': ${why}`));
}
