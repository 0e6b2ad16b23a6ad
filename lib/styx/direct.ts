/**
 * Sending a reply on a plain TCP connection at once, with one send(2)
 * through FFI, instead of through an asynchronous write.
 *
 * A client that waits for each reply before it sends the next request
 * (Inferno's `mount`, 9pfuse) waits, for each one, for the server's write
 * to go round Deno's event loop: a promise made, the socket written on the
 * loop's next turn, the promise settled on the one after. A send(2) made
 * while the reply is in hand costs the system call alone (about 2 µs less
 * per request, measured on one CPU). It is used only where it cannot
 * change what reaches the peer: a plain TCP connection (never TLS, whose
 * bytes must pass through the TLS layer), whose descriptor the runtime
 * shows and whose addresses, asked of the kernel, are the connection's own;
 * only while no asynchronous write is under way on it (the caller keeps
 * the order); never once the connection is closed (the descriptor number
 * may then name another file). Anything the socket does not take at once,
 * and every failure, is left to the ordinary write.
 *
 * @module
 */

import type { Conn } from "../transport/conn.ts";
import { TcpConn } from "../transport/tcp.ts";
import { openLibc } from "../libc.ts";

const symbols = {
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
} as const;

/** send(2) flags: never block, never raise SIGPIPE (a failed send is the ordinary write's to report). */
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const AF_INET = 2;
const AF_INET6 = 10;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];
let libc: Libc | null | undefined;

/** The C library, or null when FFI cannot be used here. */
function lib(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux") return null;
  try {
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    libc = openLibc(symbols, "direct replies");
  } catch {
    // No FFI here: every reply takes the ordinary write.
  }
  return libc;
}

/**
 * Sends as much of `data` as the socket takes at once and says how much:
 * 0 when the socket is full, the connection closed, or the send failed
 * (the ordinary write then waits for room, or meets and reports the same
 * failure).
 */
export type DirectSend = (data: Uint8Array) => number;

/**
 * A {@link DirectSend} for `conn`, or null when `conn` is not a plain TCP
 * connection whose descriptor is known for certain (or FFI is not allowed).
 */
export function directSender(conn: Conn): DirectSend | null {
  // Exactly a TcpConn over a Deno TCP connection: a subclass, or a TcpConn
  // over a TLS connection, writes through TLS.
  if (!(conn instanceof TcpConn) || conn.constructor !== TcpConn) return null;
  const raw = conn.raw as Deno.Conn & { handshake?: unknown };
  if (raw.constructor?.name !== "TcpConn" || typeof raw.handshake === "function") return null;
  if (raw.remoteAddr.transport !== "tcp" || raw.localAddr.transport !== "tcp") return null;
  const fd = runtimeFd(raw);
  if (fd === undefined) return null;
  const l = lib();
  if (l === null) return null;
  // The runtime's word is checked with the kernel's: the descriptor must be
  // a socket between exactly this connection's two addresses.
  try {
    if (!sameAddr(l.getsockname, fd, raw.localAddr)) return null;
    if (!sameAddr(l.getpeername, fd, raw.remoteAddr)) return null;
  } catch {
    return null;
  }
  const flags = MSG_DONTWAIT | MSG_NOSIGNAL;
  return (data) => {
    if (conn.isClosed) return 0;
    const n = Number(l.send(fd, data, BigInt(data.length), flags));
    return n > 0 ? n : 0;
  };
}

/** The descriptor Deno keeps under an internal symbol, if this runtime shows it. */
function runtimeFd(raw: Deno.Conn): number | undefined {
  const sym = Object.getOwnPropertySymbols(raw).find((s) => s.description === "Deno.internal.fd");
  const fd = sym === undefined ? undefined : (raw as unknown as Record<symbol, unknown>)[sym];
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

/** True when `call` (getsockname or getpeername) on `fd` gives `addr`. */
function sameAddr(
  call: (fd: number, sa: Uint8Array, len: Uint8Array) => number,
  fd: number,
  addr: Deno.Addr,
): boolean {
  if (addr.transport !== "tcp") return false;
  const sa = new Uint8Array(128);
  const len = new Uint32Array([sa.length]);
  if (call(fd, sa, new Uint8Array(len.buffer)) !== 0) return false;
  const v = new DataView(sa.buffer);
  const family = v.getUint16(0, true);
  const port = v.getUint16(2, false);
  if (port !== addr.port) return false;
  if (family === AF_INET) return ip4(sa.subarray(4, 8)) === addr.hostname;
  if (family === AF_INET6) return ip6Matches(sa.subarray(8, 24), addr.hostname);
  return false;
}

function ip4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** True when the 16 bytes `b` are the IPv6 address `host` (or its IPv4-mapped form). */
function ip6Matches(b: Uint8Array, host: string): boolean {
  const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (mapped && ip4(b.subarray(12, 16)) === host) return true;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b[i]! << 8 | b[i + 1]!);
  return parse6(host)?.every((g, i) => g === groups[i]) ?? false;
}

/** The eight groups of IPv6 address `s` (brackets and a zone allowed), or null. */
function parse6(s: string): number[] | null {
  let h = s.replace(/^\[|\]$/g, "");
  const zone = h.indexOf("%");
  if (zone >= 0) h = h.slice(0, zone);
  const halves = h.split("::");
  if (halves.length > 2) return null;
  const part = (x: string): number[] | null => {
    if (x === "") return [];
    const out: number[] = [];
    for (const g of x.split(":")) {
      if (g.includes(".")) {
        const q = g.split(".").map(Number);
        if (q.length !== 4 || q.some((n) => !(n >= 0 && n <= 255))) return null;
        out.push(q[0]! << 8 | q[1]!, q[2]! << 8 | q[3]!);
      } else {
        const n = parseInt(g, 16);
        if (!/^[0-9a-f]{1,4}$/i.test(g)) return null;
        out.push(n);
      }
    }
    return out;
  };
  const a = part(halves[0]!);
  const b = halves.length === 2 ? part(halves[1]!) : [];
  if (a === null || b === null) return null;
  if (halves.length === 1) return a.length === 8 ? a : null;
  const fill = 8 - a.length - b.length;
  if (fill < 1) return null;
  return [...a, ...new Array<number>(fill).fill(0), ...b];
}
