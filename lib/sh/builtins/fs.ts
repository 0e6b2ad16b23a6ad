/**
 * File builtins: ls, cat, echo, cp, mv, rm, mkdir, cd, pwd. Each works on
 * the shell's namespace and reports per-file errors as
 * `ls: /x: file does not exist`, going on with the other arguments.
 *
 * @module
 */

import { type Dir, DMDIR, nullDir, OREAD, OTRUNC, OWRITE, QTDIR } from "../../styx/types.ts";
import { type Builtin, type BuiltinCtx, ShUsageError } from "../interp.ts";
import { FileReader, FileWriter, userError, writeText } from "../io.ts";
import { baseName, dirName, joinPath } from "../path.ts";
import { getopts, longListing } from "./util.ts";
import { firstOfEachName } from "../../ns/union.ts";

async function warn(ctx: BuiltinCtx, msg: string): Promise<void> {
  await writeText(ctx.io.stderr, `${ctx.name}: ${msg}\n`);
}

const isDir = (d: Dir) => (d.qid.type & QTDIR) !== 0 || (d.mode & DMDIR) !== 0;

/**
 * ls [-l] [-d] [-c] [file ...]. A union lists a name once per member, as
 * Inferno's ls does; -c keeps only the first, the file the name reaches.
 */
export const ls: Builtin = async (ctx, args) => {
  const o = getopts(args, "ldc", "ls [-l] [-d] [-c] [file ...]");
  const sh = ctx.sh;
  const names = o.rest.length > 0 ? o.rest : ["."];
  let status = "";
  const shown: { dir: Dir; name: string }[] = [];
  for (const arg of names) {
    const p = sh.path(arg);
    let d: Dir;
    try {
      d = await sh.ns.stat(p);
    } catch (e) {
      status = userError(e);
      await warn(ctx, `${arg}: ${status}`);
      continue;
    }
    if (!isDir(d) || o.flags.has("d")) {
      shown.push({ dir: d, name: arg });
      continue;
    }
    let entries: Dir[];
    try {
      entries = await sh.ns.readDir(p);
      if (o.flags.has("c")) entries = firstOfEachName(entries);
    } catch (e) {
      status = userError(e);
      await warn(ctx, `${arg}: ${status}`);
      continue;
    }
    // Stable: duplicate names of a union stay in union order.
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      shown.push({ dir: e, name: o.rest.length > 0 ? joinPath(arg, e.name) : e.name });
    }
  }
  const lines = o.flags.has("l") ? longListing(shown) : shown.map((s) => s.name);
  if (lines.length > 0) await writeText(ctx.io.stdout, lines.join("\n") + "\n");
  return status;
};

/** cat [file ...]: no files means standard input. */
export const cat: Builtin = async (ctx, args) => {
  if (args.length === 0) {
    for (;;) {
      const c = await ctx.io.stdin.read();
      if (c === null) return;
      await ctx.io.stdout.write(c);
    }
  }
  let status = "";
  for (const arg of args) {
    try {
      const f = await ctx.sh.ns.open(ctx.sh.path(arg), OREAD, { signal: ctx.signal });
      try {
        const r = new FileReader(f, 0n, 65536, ctx.signal);
        for (;;) {
          if (ctx.signal.aborted) throw new Error("interrupted");
          const c = await r.read();
          if (c === null) break;
          await ctx.io.stdout.write(c);
        }
      } finally {
        await f.close();
      }
    } catch (e) {
      // Interrupted: the shell says so once, not once per file.
      if (ctx.signal.aborted) throw e;
      status = userError(e);
      await warn(ctx, `${arg}: ${status}`);
    }
  }
  return status;
};

/** echo [-n] [arg ...] */
export const echo: Builtin = async (ctx, args) => {
  let nl = true;
  if (args[0] === "-n") {
    nl = false;
    args = args.slice(1);
  }
  await writeText(ctx.io.stdout, args.join(" ") + (nl ? "\n" : ""));
};

/** An error about a path other than the argument being worked on. */
class PathError extends Error {
  constructor(readonly path: string, message: string) {
    super(message);
  }
}

/** Report `e` about argument `arg` (or the path the error names). */
async function report(ctx: BuiltinCtx, arg: string, e: unknown): Promise<string> {
  const status = userError(e);
  await warn(ctx, `${e instanceof PathError ? e.path : arg}: ${status}`);
  return status;
}

/** Copy the file at `src` to `dst` (created or truncated) through the namespace. */
async function copyFile(ctx: BuiltinCtx, src: string, dst: string, srcDir: Dir): Promise<void> {
  const ns = ctx.sh.ns;
  const from = await ns.open(src, OREAD);
  try {
    let to;
    try {
      to = await ns.open(dst, OWRITE | OTRUNC);
    } catch {
      try {
        to = await ns.create(dst, srcDir.mode & 0o777 | 0o600, OWRITE);
      } catch (e) {
        throw new PathError(dst, userError(e));
      }
    }
    try {
      const r = new FileReader(from, 0n, 65536, ctx.signal);
      const w = new FileWriter(to);
      for (;;) {
        if (ctx.signal.aborted) throw new Error("interrupted");
        const c = await r.read();
        if (c === null) break;
        await w.write(c);
      }
    } finally {
      await to.close();
    }
  } finally {
    await from.close();
  }
}

/** Where `src` goes: into `dst` when it is a directory, else `dst` itself. */
async function target(ctx: BuiltinCtx, src: string, dst: string): Promise<string> {
  try {
    const d = await ctx.sh.ns.stat(dst);
    if (isDir(d)) return joinPath(dst, baseName(src));
  } catch { /* a new name */ }
  return dst;
}

/** cp file1 file2, or cp file ... dir */
export const cp: Builtin = async (ctx, args) => {
  const o = getopts(args, "", "cp file1 file2 | cp file ... dir");
  if (o.rest.length < 2) throw new ShUsageError("cp file1 file2 | cp file ... dir");
  const sh = ctx.sh;
  const dst = sh.path(o.rest[o.rest.length - 1]!);
  const srcs = o.rest.slice(0, -1);
  if (srcs.length > 1) {
    const d = await sh.ns.stat(dst).catch(() => undefined);
    if (!d || !isDir(d)) throw new Error(`${o.rest[o.rest.length - 1]}: not a directory`);
  }
  let status = "";
  for (const s of srcs) {
    const src = sh.path(s);
    try {
      const sd = await sh.ns.stat(src);
      if (isDir(sd)) throw new Error("is a directory");
      const to = await target(ctx, src, dst);
      if (to === src) throw new Error(`cannot copy '${s}' onto itself`);
      await copyFile(ctx, src, to, sd);
    } catch (e) {
      status = await report(ctx, s, e);
    }
  }
  return status;
};

/** mv file1 file2, or mv file ... dir */
export const mv: Builtin = async (ctx, args) => {
  const o = getopts(args, "", "mv file1 file2 | mv file ... dir");
  if (o.rest.length < 2) throw new ShUsageError("mv file1 file2 | mv file ... dir");
  const sh = ctx.sh;
  const dst = sh.path(o.rest[o.rest.length - 1]!);
  let status = "";
  for (const s of o.rest.slice(0, -1)) {
    const src = sh.path(s);
    try {
      const sd = await sh.ns.stat(src);
      const to = await target(ctx, src, dst);
      if (to === src) continue;
      if (dirName(to) === dirName(src)) {
        // Same directory: a rename is a wstat of the name.
        try {
          await sh.ns.stat(to);
          await sh.ns.remove(to);
        } catch { /* nothing to replace */ }
        const d = nullDir();
        d.name = baseName(to);
        await sh.ns.wstat(src, d);
      } else {
        if (isDir(sd)) throw new Error("cannot move a directory to another directory");
        await copyFile(ctx, src, to, sd);
        await sh.ns.remove(src);
      }
    } catch (e) {
      status = await report(ctx, s, e);
    }
  }
  return status;
};

async function removeAll(ctx: BuiltinCtx, p: string): Promise<void> {
  const d = await ctx.sh.ns.stat(p);
  if (isDir(d)) {
    // A union lists a name once per member; the name reaches only the first.
    const entries = firstOfEachName(await ctx.sh.ns.readDir(p));
    for (const e of entries) await removeAll(ctx, joinPath(p, e.name));
  }
  await ctx.sh.ns.remove(p);
}

/** rm [-r] [-f] file ... */
export const rm: Builtin = async (ctx, args) => {
  const o = getopts(args, "rf", "rm [-fr] file ...");
  let status = "";
  for (const a of o.rest) {
    const p = ctx.sh.path(a);
    try {
      if (o.flags.has("r")) await removeAll(ctx, p);
      else await ctx.sh.ns.remove(p);
    } catch (e) {
      if (o.flags.has("f")) continue;
      status = userError(e);
      await warn(ctx, `${a}: ${status}`);
    }
  }
  return status;
};

/** mkdir [-p] dir ... */
export const mkdir: Builtin = async (ctx, args) => {
  const o = getopts(args, "p", "mkdir [-p] dir ...");
  let status = "";
  const ns = ctx.sh.ns;
  const make = async (p: string, parents: boolean): Promise<void> => {
    if (parents) {
      const d = await ns.stat(p).catch(() => undefined);
      if (d) {
        if (!isDir(d)) throw new Error("not a directory");
        return;
      }
      if (p !== "/") await make(dirName(p), true);
    }
    const f = await ns.create(p, DMDIR | 0o777, OREAD);
    await f.close();
  };
  for (const a of o.rest) {
    try {
      await make(ctx.sh.path(a), o.flags.has("p"));
    } catch (e) {
      status = userError(e);
      await warn(ctx, `${a}: ${status}`);
    }
  }
  return status;
};

/** cd [dir]: without dir, /usr/$user. */
export const cd: Builtin = async (ctx, args) => {
  if (args.length > 1) throw new ShUsageError("cd [directory]");
  const arg = args[0] ?? `/usr/${ctx.sh.user}`;
  const p = ctx.sh.path(arg);
  let d: Dir;
  try {
    d = await ctx.sh.ns.stat(p);
  } catch (e) {
    throw new Error(`${arg}: ${userError(e)}`);
  }
  if (!isDir(d)) throw new Error(`${arg}: not a directory`);
  ctx.sh.cwd = p;
};

/** pwd */
export const pwd: Builtin = async (ctx) => {
  await writeText(ctx.io.stdout, ctx.sh.cwd + "\n");
};
