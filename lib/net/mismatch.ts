/**
 * Telling a user that the two ends disagree about `-A`. A plain (-A)
 * client that dials a TLS listener gets a TLS alert record back for its
 * Tversion; a TLS client that dials a plain listener is hung up on in the
 * middle of its handshake. Neither says why by itself, so:
 *
 * - {@link watchForTls} looks at the first bytes a plain client receives:
 *   a TLS record (content type 0x15 alert or 0x16 handshake, version
 *   0x03 0x00-0x04) is not a Styx reply (an Rversion or Rerror would have
 *   type 101 or 107 where the record has its length);
 * - {@link speaksPlainStyx} is asked after a TLS handshake failed: it
 *   sends a plain Tversion on a fresh connection and reports whether a
 *   Styx reply came back.
 *
 * @module
 */

import type { Conn } from "../transport/conn.ts";
import { StyxError } from "../styx/types.ts";

/** What a plain (-A) client is told when the server wants TLS. */
export const NEEDS_TLS = "the server requires TLS: drop -A";
/** What a TLS client is told when the server speaks plain Styx. */
export const SPEAKS_PLAIN = "the server speaks plain Styx (it was started with -A)";
/** `--peer` names a certificate, which only a TLS link has. */
export const PEER_NEEDS_TLS =
  "--peer names the node whose certificate must answer, and -A has no certificates: drop one of them";

const RVERSION = 101;
const RERROR = 107;

/** True when `b` starts with a TLS record header rather than a Styx reply. */
export function looksLikeTls(b: Uint8Array): boolean {
  if (b.length < 5) return false;
  return (b[0] === 0x15 || b[0] === 0x16) && b[1] === 0x03 && b[2]! <= 0x04 &&
    b[4] !== RVERSION && b[4] !== RERROR;
}

/**
 * Make the first read of a plain (-A) client's `conn` fail with
 * {@link NEEDS_TLS} when it brings a TLS record. Only the first read is
 * looked at; the Conn (and its class, which fast paths test for) stays the
 * same object.
 */
export function watchForTls(conn: Conn): Conn {
  const c = conn as Conn & { readInto?: (buf: Uint8Array) => Promise<number | null> };
  const read = c.read;
  const readInto = c.readInto;
  let first = true;
  const restore = () => {
    first = false;
    // Put the originals back by assignment: deleting properties would leave
    // the connection object in V8's slower dictionary mode.
    c.read = read;
    if (readInto) c.readInto = readInto;
  };
  const refuse = () => {
    c.close();
    return new StyxError(NEEDS_TLS);
  };
  c.read = async function () {
    const check = first;
    restore();
    const b = await read.call(c);
    if (check && b && looksLikeTls(b)) throw refuse();
    return b;
  };
  if (readInto) {
    c.readInto = async function (buf: Uint8Array) {
      const check = first;
      restore();
      const n = await readInto.call(c, buf);
      if (check && n !== null && looksLikeTls(buf.subarray(0, n))) throw refuse();
      return n;
    };
  }
  return c;
}

/** A Tversion (tag NOTAG, msize 8192, "9P2000"), written out by hand to keep this module small. */
const TVERSION = new Uint8Array([
  19,
  0,
  0,
  0,
  100,
  0xff,
  0xff,
  0x00,
  0x20,
  0,
  0,
  6,
  0,
  ...new TextEncoder().encode("9P2000"),
]);

/**
 * After a TLS handshake failed: send a plain Tversion on `conn` (a fresh
 * connection to the same server) and say whether a Styx Rversion or Rerror
 * comes back within `ms`. Closes `conn`.
 */
export async function speaksPlainStyx(conn: Conn, ms = 3000): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await conn.write(TVERSION.slice());
    const late = new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)));
    let got = new Uint8Array(0);
    while (got.length < 7) {
      const b = await Promise.race([conn.read(), late]);
      if (b === null) return false;
      const next = new Uint8Array(got.length + b.length);
      next.set(got);
      next.set(b, got.length);
      got = next;
    }
    const size = got[0]! | got[1]! << 8 | got[2]! << 16 | got[3]! << 24;
    const tag = got[5]! | got[6]! << 8;
    return size >= 7 && size <= 1 << 20 && tag === 0xffff &&
      (got[4] === RVERSION || got[4] === RERROR);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}

/** True for a TLS handshake that failed the way a plain listener makes it fail. */
export function handshakeFailed(e: unknown): boolean {
  return e instanceof Error &&
    /closed during the TLS handshake|does not speak TLS/.test(e.message);
}
