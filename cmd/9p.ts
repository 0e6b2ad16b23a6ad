/**
 * `ferry 9p`: a one-shot Styx client in the manner of plan9port's 9p(1).
 * `read` streams a file to stdout and `write` streams stdin into one.
 *
 * @module
 */

import { fail, parse, UsageError, warnInsecure } from "../lib/cli.ts";
import { dialStyx } from "../lib/net/connect.ts";
import { PEER_NEEDS_TLS } from "../lib/net/mismatch.ts";
import { readStream, type RemoteNode, type StyxClient, writeFrom } from "../lib/styx/client.ts";
import { DMDIR, OREAD, OTRUNC, OWRITE } from "../lib/styx/types.ts";
import { formatDir } from "../lib/styx/trace.ts";
import { traceEnabled } from "../lib/styx/trace.ts";

const spec = {
  usage:
    "ferry 9p [-A] -a ADDR [-u USER] [--aname NAME] [-D] ls [-l]|read|write|stat|create|mkdir|rm PATH",
  about: "Run one Styx operation against the server at ADDR and exit.\n" +
    "  ls [-l] PATH   list a directory (or name a file)\n" +
    "  read PATH      copy the file to standard output\n" +
    "  write PATH     replace the file's contents with standard input\n" +
    "  stat PATH      print the file's directory entry\n" +
    "  create PATH    create an empty file\n" +
    "  mkdir PATH     create a directory\n" +
    "  rm PATH        remove a file or empty directory",
  options: {
    A: { type: "boolean" as const },
    a: { type: "string" as const },
    u: { type: "string" as const },
    aname: { type: "string" as const },
    peer: { type: "string" as const },
    certs: { type: "string" as const },
    C: { type: "string" as const },
    l: { type: "boolean" as const },
    D: { type: "boolean" as const },
  },
  optionsHelp: [
    "  -A            no authentication or encryption (warns)",
    "  -a ADDR       server dial string, e.g. 'tcp!127.0.0.1!6666'",
    "  -u USER       user name to attach as under -A (default $USER)",
    "  --aname NAME  attach name (spec)",
    "  --peer NAME   node name the server's certificate must carry (default: the host",
    "                dialled), e.g. when a relay's /net forwards ADDR to that node",
    "  --certs DIR   credentials directory (default $FERRY_CERTS, else ~/.ferry/certs)",
    "  -C ALG        Inferno algorithm name, mapped onto a TLS 1.3 cipher choice",
    "  -D            trace Styx messages on stderr",
  ].join("\n"),
};

type Op = (c: StyxClient, root: RemoteNode, path: string, long: boolean) => Promise<void>;

const enc = new TextEncoder();

async function out(text: string): Promise<void> {
  const b = enc.encode(text);
  let off = 0;
  while (off < b.length) off += await Deno.stdout.write(b.subarray(off));
}

const ops: Record<string, Op> = {
  async ls(c, root, path, long) {
    // One walk: a directory is listed, a file is named by its own stat.
    const entries = await c.ls(root, path);
    entries.sort((x, y) => x.name < y.name ? -1 : x.name > y.name ? 1 : 0);
    if (long) {
      // The shell's formatter loads only for -l.
      const { longListing } = await import("../lib/sh/builtins/util.ts");
      const lines = longListing(entries.map((dir) => ({ dir, name: dir.name })));
      await out(lines.map((l) => l + "\n").join(""));
    } else {
      await out(entries.map((d) => d.name + "\n").join(""));
    }
  },
  async read(c, root, path) {
    const f = await c.openPath(root, path, OREAD);
    try {
      // Each chunk is written out whole before the next is asked for, so
      // its memory can carry a later Tread: RSS stays flat whatever the size.
      for await (const chunk of readStream(f, { reuse: true })) {
        let off = 0;
        while (off < chunk.length) off += await Deno.stdout.write(chunk.subarray(off));
      }
    } finally {
      await f.close();
    }
  },
  async write(c, root, path) {
    const f = await c.openPath(root, path, OWRITE | OTRUNC);
    try {
      await writeFrom(f, Deno.stdin.readable);
    } finally {
      await f.close();
    }
  },
  async stat(c, root, path) {
    await out(formatDir(await c.stat(root, path)) + "\n");
  },
  async create(c, root, path) {
    await c.create(root, path, { perm: 0o666 });
  },
  async mkdir(c, root, path) {
    await c.create(root, path, { perm: DMDIR | 0o777 });
  },
  async rm(c, root, path) {
    await c.remove(root, path);
  },
};

/** Run `ferry 9p`. */
export async function run(args: string[]): Promise<number> {
  let cmd = "9p";
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    const [op, path, ...extra] = p.positionals;
    if (op === undefined || path === undefined || extra.length > 0) {
      throw new UsageError(`need an operation and a path\nusage: ${spec.usage}`);
    }
    const fn = ops[op];
    if (!fn) throw new UsageError(`unknown operation '${op}'\nusage: ${spec.usage}`);
    cmd = `9p ${op}`;
    const addr = p.values.a;
    if (typeof addr !== "string") throw new UsageError(`-a ADDR is required\nusage: ${spec.usage}`);
    const insecure = p.values.A === true;
    if (insecure && p.values.peer !== undefined) throw new UsageError(PEER_NEEDS_TLS);
    if (insecure) warnInsecure("9p");
    const user = (p.values.u as string | undefined) ?? Deno.env.get("USER") ?? "none";
    const d = await dialStyx(addr, {
      insecure,
      user,
      aname: p.values.aname as string | undefined,
      peer: p.values.peer as string | undefined,
      certDir: p.values.certs as string | undefined,
      alg: p.values.C as string | undefined,
      trace: p.values.D === true || traceEnabled(),
    });
    try {
      const root = await d.client.attach(user, (p.values.aname as string | undefined) ?? "");
      try {
        await fn(d.client, root, path, p.values.l === true);
      } catch (e) {
        throw new Error(`${path}: ${(e as Error).message}`);
      } finally {
        // The hang-up below frees every fid on the server; a one-shot
        // command does not wait a round trip to clunk its root first.
        root.close().catch(() => {});
      }
    } finally {
      d.close();
    }
    return 0;
  } catch (e) {
    return fail(cmd, e);
  }
}
