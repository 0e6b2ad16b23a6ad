/**
 * Dialling a mutually authenticated TLS link over TCP: Deno's own TLS
 * with `ferry-link/2` first (see tls_native.ts), node:tls with
 * `ferry-link/1` only when that is refused or an algorithm is asked for
 * (see tls.ts). Apart from tls.ts so that a dial loads node:tls only when
 * it needs it: loading it costs a one-shot command such as `ferry logon`
 * about a tenth of its start.
 *
 * @module
 */

import type { Conn } from "./conn.ts";
import { tcpDial } from "./tcp.ts";
import { PeerRefusedError } from "../auth/verify.ts";
import { type Credentials, followCredentials, type LinkOptions } from "../auth/link.ts";
import { isCertificateFailure, nativeTlsDial } from "./tls_native.ts";
import { LinkError } from "./link_exchange.ts";

/**
 * Dial `host:port` and set up a mutually authenticated TLS link. The server
 * must present a node certificate for `opts.peer` (default: `host`).
 *
 * @example
 * ```ts ignore
 * const creds = await loadCredentials("certs");
 * const conn = await tlsDial("fileserver", 6666, { creds });
 * console.log(conn.peer.identity);
 * ```
 */
export async function tlsDial(host: string, port: number, opts: LinkOptions): Promise<Conn> {
  // The credentials as their directory has them now (a renewed certificate, the latest CRL).
  const src = await followCredentials(opts.creds);
  try {
    return await dialWith(host, port, { ...opts, creds: src.current() });
  } finally {
    src.close();
  }
}

async function dialWith(
  host: string,
  port: number,
  opts: LinkOptions & { creds: Credentials },
): Promise<Conn> {
  const bare = host.replace(/^\[|\]$/g, "");
  if (!opts.alg) {
    // Deno's own TLS first: several times faster to read from. When it
    // refuses the server's certificate, dial again through node:tls below,
    // whose ferry-link/1 tells both ends precisely what was wrong.
    try {
      const c = await nativeTlsDial(bare, port, opts, opts.creds, opts.peer ?? host);
      if (c) return c;
    } catch (e) {
      if (!isCertificateFailure(e)) {
        throw e instanceof PeerRefusedError ? e : new LinkError((e as Error).message);
      }
    }
  }
  // TLS runs over a Deno TCP connection rather than node:tls's own socket:
  // the same code path as a tunnel, and reads from the network stop when the
  // reader stops (node:tls's own socket kept buffering: hundreds of MiB for
  // one bulk transfer).
  let raw: Conn;
  try {
    raw = await tcpDial(bare, port);
  } catch (e) {
    throw new LinkError(`cannot connect to ${host}:${port}: ${(e as Error).message}`);
  }
  const { tlsWrapClient } = await import("./tls.ts");
  return await tlsWrapClient(raw, { ...opts, peer: opts.peer ?? host });
}
