/**
 * Shared fixture of the FUSE tests: a Ferry server exporting a fresh host
 * directory over loopback TCP, a client attached to it, and a directory to
 * mount on.
 *
 * @module
 */

import assert from "node:assert/strict";
import { HostTree } from "../../lib/fs/host.ts";
import { serve } from "../../lib/styx/server.ts";
import { tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { type Dialed, dialStyx } from "../../lib/net/connect.ts";

const dec = new TextDecoder();

/** Run `script` under bash with a hard time limit; fail with its stderr. */
export async function ok(script: string, limit = 60): Promise<string> {
  const o = await new Deno.Command("timeout", {
    args: ["-s", "KILL", String(limit), "bash", "-c", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(o.code, 0, `'${script}' failed (${o.code}): ${dec.decode(o.stderr)}`);
  return dec.decode(o.stdout);
}

/** A served source directory, a client of it and a mount point, all under `work`. */
export interface Served {
  work: string;
  /** The exported host directory. */
  src: string;
  /** An empty directory to mount on. */
  mp: string;
  /** The client, attached as glenda. */
  d: Dialed;
  /** Hang up, stop serving and remove `work`. */
  close(): Promise<void>;
}

/** Serve a new temporary directory (named after `prefix`) and dial it. */
export async function served(prefix: string): Promise<Served> {
  const work = await Deno.makeTempDir({ prefix });
  const src = `${work}/src`;
  const mp = `${work}/mnt`;
  await Deno.mkdir(mp);
  await Deno.mkdir(src);
  const l = tcpListen("127.0.0.1", 0);
  const conns: Conn[] = [];
  const tree = new HostTree(src);
  (async () => {
    for await (const c of l) {
      conns.push(c);
      serve(c, tree).catch(() => {});
    }
  })();
  const d = await dialStyx(l.addr, { insecure: true, user: "glenda" });
  return {
    work,
    src,
    mp,
    d,
    async close() {
      d.close();
      l.close();
      for (const c of conns) c.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    },
  };
}
