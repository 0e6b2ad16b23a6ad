/**
 * Synthetic file trees: build a {@link Tree} from a small description instead
 * of implementing every Node method by hand. Devices (/net, /prog, /phone)
 * describe their files here and supply only what is special about them.
 *
 * - {@link dir}: a directory with fixed children, or children computed on
 *   each walk and directory read (one directory per process, say).
 * - {@link textFile}: content produced on open; each open reads its own
 *   snapshot at any offset.
 * - {@link ctlFile}: written lines are parsed against a command table
 *   ({@link Command}); unknown commands and bad argument counts are refused
 *   with an error naming them.
 * - {@link file}: anything else: per-open state and read/write handlers that
 *   may block; a blocked handler sees the request's AbortSignal and must
 *   reject promptly when the request is flushed.
 * - {@link Broadcast} and {@link eventFile}: an event stream where every
 *   open reader gets every event published after its open, one per read.
 *
 * qid paths are unique and never 0: each file gets a number the first time
 * its path (plus optional {@link Common.id}) is seen, and keeps it.
 *
 * @example
 * ```ts
 * import { ctlFile, dir, SynthTree, textFile } from "./synthetic.ts";
 * let greeting = "hello";
 * const tree = new SynthTree(dir("", [
 *   textFile("greeting", () => greeting + "\n"),
 *   ctlFile("ctl", [
 *     { name: "set", min: 1, max: 1, run: ([word]) => { greeting = word!; } },
 *   ]),
 * ]));
 * const root = await tree.attach({ user: "glenda" }, "");
 * const { node } = await root.walk(["ctl"]);
 * const f = await node!.open(1);
 * await f.write(0n, new TextEncoder().encode("set bye"));
 * if (greeting !== "bye") throw new Error("ctl write did not run");
 * ```
 *
 * @module
 */

import {
  type Caller,
  type Created,
  type Node,
  type OpenFile,
  type OpOptions,
  type ReadOptions,
  type Tree,
  type WalkResult,
  withSignal,
} from "./tree.ts";
import {
  type Dir,
  DMDIR,
  Ename,
  OEXEC,
  ORDWR,
  OTRUNC,
  OWRITE,
  type Qid,
  QTDIR,
  QTFILE,
  StyxError,
} from "../styx/types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What a handler is told about the request it serves. */
export interface Ctx {
  /** Who is asking. */
  caller: Caller;
  /** Aborted when the request is flushed or the connection goes away. */
  signal?: AbortSignal;
}

/** What a read handler is told: the request plus where to get buffers (see ReadOptions). */
export interface ReadCtx extends Ctx, Pick<ReadOptions, "alloc" | "allocAhead"> {}

/** What an open handler is told: the request plus the 9P open mode. */
export interface OpenCtx extends Ctx {
  /** 9P open mode (OREAD, OWRITE, ORDWR, possibly with OTRUNC). */
  mode: number;
}

/** Fields every entry shares. */
export interface Common {
  /** Name in its directory (the root's name is ignored; "/" is shown). */
  name: string;
  /** Permission bits (0o444, 0o666, ...); DMDIR is added for directories. */
  perm?: number;
  /** Owner; defaults to the tree's owner. */
  uid?: string;
  /** Group; defaults to the owner. */
  gid?: string;
  /**
   * Extra identity for qid allocation: two entries with the same path but a
   * different `id` (a process that exited and a new one with the same pid)
   * get different qid paths.
   */
  id?: string;
}

/** One open instance of a file: per-open state lives in its closure. */
export interface Handle {
  /** Read up to `count` bytes at `offset`; may block (honour ctx.signal). */
  read?(offset: bigint, count: number, ctx: ReadCtx): Uint8Array | Promise<Uint8Array>;
  /** Write `data` at `offset`; returns bytes taken; may block. */
  write?(offset: bigint, data: Uint8Array, ctx: Ctx): number | Promise<number>;
  /** Called once when the open file is closed (clunked). */
  close?(): void | Promise<void>;
}

/** A file: {@link FileEntry.open} makes a {@link Handle} per open. */
export interface FileEntry extends Common {
  /** Marks a file. */
  kind: "file";
  /** Length reported by stat; 0 (the synthetic-file custom) by default. */
  length?: (ctx: Ctx) => bigint | Promise<bigint>;
  /** Called on each open after the permission check; returns the handle. */
  open(ctx: OpenCtx): Handle | Promise<Handle>;
}

/** A directory whose children are fixed or computed on each walk/read. */
export interface DirEntry extends Common {
  /** Marks a directory. */
  kind: "dir";
  /** The children, or a function computing them for this request. */
  children: Entry[] | ((ctx: Ctx) => Entry[] | Promise<Entry[]>);
}

/** Anything a synthetic tree can hold. */
export type Entry = FileEntry | DirEntry;

/** Options for {@link SynthTree}. */
export interface SynthOptions {
  /** Owner of entries that name none (default "ferry"). */
  uid?: string;
  /** Time reported as atime/mtime, in seconds (default: tree creation). */
  mtime?: number;
  /**
   * Check permissions against the mode bits (default true). When false,
   * handlers decide on their own using ctx.caller.
   */
  checkPerm?: boolean;
}

/**
 * A directory entry.
 *
 * @example
 * ```ts
 * import { dir, textFile } from "./synthetic.ts";
 * const procs = dir("prog", () => [1, 2].map((n) => dir(String(n), [textFile("status", () => "ok\n")])));
 * ```
 */
export function dir(
  name: string,
  children: DirEntry["children"],
  opts: Omit<Common, "name"> = {},
): DirEntry {
  return { kind: "dir", name, children, ...opts };
}

/** Options for {@link textFile}. */
export interface TextOptions extends Omit<Common, "name"> {
  /** Called with the whole text of each write (the file is read-only without it). */
  write?: (text: string, ctx: Ctx) => void | Promise<void>;
}

/**
 * A file whose text is produced on each open; every open reads its own
 * snapshot at any offset.
 *
 * @example
 * ```ts
 * import { textFile } from "./synthetic.ts";
 * const status = textFile("status", () => `up ${performance.now() | 0}\n`);
 * ```
 */
export function textFile(
  name: string,
  produce: (ctx: Ctx) => string | Promise<string>,
  opts: TextOptions = {},
): FileEntry {
  const { write, ...common } = opts;
  return {
    kind: "file",
    name,
    perm: write ? 0o666 : 0o444,
    ...common,
    async open(ctx) {
      let snapshot: Uint8Array | undefined;
      if ((ctx.mode & 3) === 0 || (ctx.mode & 3) === ORDWR) {
        snapshot = enc.encode(await produce(ctx));
      }
      return {
        read: (offset, count) => sliceAt(snapshot ?? new Uint8Array(0), offset, count),
        write: write
          ? async (_off, data, wctx) => {
            await write(dec.decode(data), wctx);
            return data.length;
          }
          : undefined,
      };
    },
  };
}

/** Return up to `count` bytes of `data` starting at `offset`. */
export function sliceAt(data: Uint8Array, offset: bigint, count: number): Uint8Array {
  if (offset >= BigInt(data.length)) return new Uint8Array(0);
  const start = Number(offset);
  return data.subarray(start, Math.min(data.length, start + count));
}

/** One command of a ctl file's table (like lib9p's Cmdtab). */
export interface Command {
  /** First word of the line, e.g. "dial". */
  name: string;
  /** Fewest arguments after the name (default 0). */
  min?: number;
  /** Most arguments after the name (default: `min`; Infinity for any). */
  max?: number;
  /** Shown in the error for a wrong argument count, e.g. "NUMBER". */
  usage?: string;
  /** Runs the command; throw a StyxError to refuse it. */
  run(args: string[], ctx: Ctx): void | Promise<void>;
}

/**
 * Split a line into words the way Ferry's shell does: blanks separate
 * words; single quotes group, and '' inside quotes is a literal quote.
 * Throws on an unterminated quote.
 *
 * @example
 * ```ts
 * import { tokenize } from "./synthetic.ts";
 * const w = tokenize("send 64123 'it''s here'");
 * if (w[2] !== "it's here") throw new Error("bad quoting");
 * ```
 */
export function tokenize(line: string): string[] {
  const words: string[] = [];
  let i = 0;
  const n = line.length;
  while (i < n) {
    while (i < n && /\s/.test(line[i]!)) i++;
    if (i >= n) break;
    let word = "";
    while (i < n && !/\s/.test(line[i]!)) {
      if (line[i] === "'") {
        i++;
        for (;;) {
          if (i >= n) throw new StyxError(`unterminated quote in '${line}'`);
          if (line[i] === "'") {
            if (line[i + 1] === "'") {
              word += "'";
              i += 2;
              continue;
            }
            i++;
            break;
          }
          word += line[i++];
        }
      } else {
        word += line[i++];
      }
    }
    words.push(word);
  }
  return words;
}

/**
 * Quote `word` so {@link tokenize} gives it back unchanged: words with
 * blanks, quotes or nothing at all are wrapped in single quotes.
 *
 * @example
 * ```ts
 * import { quote } from "./synthetic.ts";
 * if (quote("it's") !== "'it''s'") throw new Error("bad quote");
 * ```
 */
export function quote(word: string): string {
  if (word !== "" && !/[\s'#;&|^$=`{}()<>"\\]/.test(word)) return word;
  return `'${word.replaceAll("'", "''")}'`;
}

/** Split `text` at newlines that are not inside single quotes. */
export function splitLines(text: string): string[] {
  const lines: string[] = [];
  let inQuote = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "'") inQuote = !inQuote;
    else if (c === "\n" && !inQuote) {
      lines.push(text.slice(start, i));
      start = i + 1;
    }
  }
  lines.push(text.slice(start));
  return lines;
}

/**
 * Run every non-blank line of `text` against `table`. An unknown command
 * gives "unknown ctl message 'foo'"; a wrong argument count gives
 * "bad ctl message 'name': usage: name USAGE".
 */
export async function runCtl(text: string, table: Command[], ctx: Ctx): Promise<void> {
  for (const line of splitLines(text)) {
    const words = tokenize(line);
    const [name, ...args] = words;
    if (name === undefined) continue;
    const cmd = table.find((c) => c.name === name);
    if (!cmd) throw new StyxError(`unknown ctl message '${name}'`);
    const min = cmd.min ?? 0;
    const max = cmd.max ?? min;
    if (args.length < min || args.length > max) {
      const usage = cmd.usage ? ` ${cmd.usage}` : "";
      throw new StyxError(`bad ctl message '${name}': usage: ${name}${usage}`);
    }
    await cmd.run(args, ctx);
  }
}

/** Options for {@link ctlFile}. */
export interface CtlOptions extends Omit<Common, "name"> {
  /** Text served on read (a snapshot per open); reads give nothing without it. */
  read?: (ctx: Ctx) => string | Promise<string>;
}

/**
 * A control file: each write is one or more lines of commands from `table`.
 *
 * @example
 * ```ts
 * import { ctlFile } from "./synthetic.ts";
 * const ctl = ctlFile("ctl", [{ name: "hangup", run() {} }]);
 * ```
 */
export function ctlFile(name: string, table: Command[], opts: CtlOptions = {}): FileEntry {
  const { read, ...common } = opts;
  return {
    kind: "file",
    name,
    perm: read ? 0o666 : 0o222,
    ...common,
    async open(ctx) {
      let snapshot: Uint8Array | undefined;
      if (read && ((ctx.mode & 3) === 0 || (ctx.mode & 3) === ORDWR)) {
        snapshot = enc.encode(await read(ctx));
      }
      return {
        read: (offset, count) => sliceAt(snapshot ?? new Uint8Array(0), offset, count),
        write: async (_off, data, wctx) => {
          await runCtl(dec.decode(data), table, wctx);
          return data.length;
        },
      };
    },
  };
}

/**
 * A file with custom per-open handlers.
 *
 * @example
 * ```ts
 * import { file } from "./synthetic.ts";
 * let count = 0;
 * const counter = file("counter", () => {
 *   const mine = ++count; // per-open state
 *   return { read: (off) => new TextEncoder().encode(off === 0n ? `${mine}\n` : "") };
 * });
 * ```
 */
export function file(
  name: string,
  open: FileEntry["open"],
  opts: Omit<Common, "name"> & { length?: FileEntry["length"] } = {},
): FileEntry {
  return { kind: "file", name, perm: 0o444, ...opts, open };
}

/** Rejects with "interrupted" once `signal` aborts. */
/** A reader's place in a {@link Broadcast}. */
export interface Cursor<T> {
  /** The next event after the previous one; waits for it. Rejects "interrupted" on abort. */
  next(signal?: AbortSignal): Promise<T>;
  /** Stop receiving; a pending next() rejects with "i/o on hungup channel". */
  close(): void;
}

/**
 * Fan-out of events: every cursor gets every event published after it was
 * made, in order, however slowly it reads (events queue per cursor).
 *
 * @example
 * ```ts
 * import { Broadcast } from "./synthetic.ts";
 * const b = new Broadcast<string>();
 * const c1 = b.cursor(), c2 = b.cursor();
 * b.publish("ring 555");
 * if (await c1.next() !== "ring 555" || await c2.next() !== "ring 555") throw new Error();
 * ```
 */
export class Broadcast<T> {
  #cursors = new Set<CursorImpl<T>>();

  /** Deliver `event` to every open cursor. */
  publish(event: T): void {
    for (const c of this.#cursors) c.push(event);
  }

  /** A new cursor that sees events published from now on. */
  cursor(): Cursor<T> {
    const c = new CursorImpl<T>(() => this.#cursors.delete(c));
    this.#cursors.add(c);
    return c;
  }

  /** Number of open cursors. */
  get readers(): number {
    return this.#cursors.size;
  }

  /** Close every cursor. */
  close(): void {
    for (const c of [...this.#cursors]) c.close();
  }
}

class CursorImpl<T> implements Cursor<T> {
  #queue: T[] = [];
  #waiter: { resolve: (v: T) => void; reject: (e: unknown) => void } | undefined;
  #closed = false;
  constructor(private onClose: () => void) {}

  push(ev: T): void {
    if (this.#closed) return;
    const w = this.#waiter;
    if (w) {
      this.#waiter = undefined;
      w.resolve(ev);
    } else {
      this.#queue.push(ev);
    }
  }

  next(signal?: AbortSignal): Promise<T> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift()!);
    if (this.#closed) return Promise.reject(new StyxError(Ename.hungup));
    if (signal?.aborted) return Promise.reject(new StyxError(Ename.interrupted));
    if (this.#waiter) return Promise.reject(new StyxError("read already pending on this file"));
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => {
        if (this.#waiter === waiter) this.#waiter = undefined;
        reject(new StyxError(Ename.interrupted));
      };
      const waiter = {
        resolve: (v: T) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(v);
        },
        reject: (e: unknown) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      this.#waiter = waiter;
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(new StyxError(Ename.hungup));
    this.onClose();
  }
}

/**
 * A read-only file where each read blocks until the next event of `source`
 * and returns it as one newline-terminated line. Every open gets every
 * event published after its open. A read with a count smaller than the
 * line gets the first part; the rest comes with the next read.
 *
 * @example
 * ```ts
 * import { Broadcast, eventFile } from "./synthetic.ts";
 * const events = new Broadcast<string>();
 * const f = eventFile("events", events);
 * ```
 */
export function eventFile(
  name: string,
  source: Broadcast<string>,
  opts: Omit<Common, "name"> = {},
): FileEntry {
  return {
    kind: "file",
    name,
    perm: 0o444,
    ...opts,
    open() {
      const cur = source.cursor();
      let rest: Uint8Array | undefined;
      return {
        async read(_off, count, ctx) {
          if (!rest || rest.length === 0) {
            const ev = await cur.next(ctx.signal);
            rest = enc.encode(ev.endsWith("\n") ? ev : ev + "\n");
          }
          const out = rest.subarray(0, count);
          rest = rest.subarray(out.length);
          return out;
        },
        close: () => cur.close(),
      };
    },
  };
}

interface Place {
  entry: Entry;
  key: string;
}

/**
 * A {@link Tree} built from a root {@link DirEntry}.
 *
 * @example
 * ```ts
 * import { dir, SynthTree, textFile } from "./synthetic.ts";
 * const tree = new SynthTree(dir("", [textFile("hello", () => "hi\n")]));
 * const root = await tree.attach({ user: "glenda" }, "");
 * ```
 */
export class SynthTree implements Tree {
  readonly #paths = new Map<string, bigint>();
  #next = 1n;
  /** Owner of entries that name none. */
  readonly uid: string;
  /** atime/mtime of every entry, in seconds. */
  readonly mtime: number;
  /** Whether opens are checked against the mode bits. */
  readonly checkPerm: boolean;

  /** Serve the tree described by `root`. */
  constructor(readonly root: DirEntry, opts: SynthOptions = {}) {
    this.uid = opts.uid ?? "ferry";
    this.mtime = opts.mtime ?? Math.floor(Date.now() / 1000);
    this.checkPerm = opts.checkPerm ?? true;
  }

  /** Attach as `caller`; `aname` is ignored. */
  attach(caller: Caller, _aname: string): Promise<Node> {
    return Promise.resolve(new SynthNode(this, caller, [{ entry: this.root, key: "" }]));
  }

  /** The qid path for `key`, allocated on first sight (never 0). */
  qidPath(key: string): bigint {
    let p = this.#paths.get(key);
    if (p === undefined) {
      p = this.#next++;
      this.#paths.set(key, p);
    }
    return p;
  }

  /** Compute the children of a directory entry for this request. */
  async children(d: DirEntry, ctx: Ctx): Promise<Entry[]> {
    return typeof d.children === "function" ? await d.children(ctx) : d.children;
  }

  /** The qid of an entry at `key`. */
  qidOf(entry: Entry, key: string): Qid {
    return {
      type: entry.kind === "dir" ? QTDIR : QTFILE,
      version: 0,
      path: this.qidPath(key),
    };
  }

  /** The Dir (stat) of an entry at `key`. */
  async dirOf(entry: Entry, key: string, ctx: Ctx, isRoot = false): Promise<Dir> {
    const uid = entry.uid ?? this.uid;
    const perm = entry.perm ?? (entry.kind === "dir" ? 0o555 : 0o444);
    const length = entry.kind === "file" && entry.length ? await entry.length(ctx) : 0n;
    return {
      type: 0,
      dev: 0,
      qid: this.qidOf(entry, key),
      mode: ((perm & 0o777) | (entry.kind === "dir" ? DMDIR : 0)) >>> 0,
      atime: this.mtime,
      mtime: this.mtime,
      length,
      name: isRoot ? "/" : entry.name,
      uid,
      gid: entry.gid ?? uid,
      muid: uid,
    };
  }

  /** True when `caller` may open `entry` with 9P `mode`. */
  allowed(entry: Entry, caller: Caller, mode: number): boolean {
    if (!this.checkPerm) return true;
    const perm = entry.perm ?? (entry.kind === "dir" ? 0o555 : 0o444);
    const uid = entry.uid ?? this.uid;
    const gid = entry.gid ?? uid;
    let bits = perm & 7;
    if (caller.user === uid) bits = (perm >> 6) & 7;
    else if (caller.groups?.includes(gid)) bits = (perm >> 3) & 7;
    let need = 0;
    switch (mode & 3) {
      case 0:
        need = 4;
        break;
      case OWRITE:
        need = 2;
        break;
      case ORDWR:
        need = 6;
        break;
      case OEXEC:
        need = 1;
        break;
    }
    if (mode & OTRUNC) need |= 2;
    return (bits & need) === need;
  }
}

function childKey(parent: string, e: Entry): string {
  return `${parent}/${e.name}${e.id !== undefined ? `#${e.id}` : ""}`;
}

class SynthNode implements Node {
  readonly qid: Qid;
  constructor(
    private tree: SynthTree,
    private caller: Caller,
    private places: Place[],
  ) {
    const here = places[places.length - 1]!;
    this.qid = tree.qidOf(here.entry, here.key);
  }

  get #here(): Place {
    return this.places[this.places.length - 1]!;
  }

  async walk(names: string[], opts?: OpOptions): Promise<WalkResult> {
    const caller = opts?.caller ?? this.caller;
    const ctx: Ctx = { caller, signal: opts?.signal };
    let places = this.places;
    const qids: Qid[] = [];
    for (const [i, name] of names.entries()) {
      const here = places[places.length - 1]!;
      let next: Place[] | undefined;
      if (here.entry.kind !== "dir") {
        if (i === 0) throw new StyxError(Ename.walkNoDir);
        return { qids };
      }
      if (name === "..") {
        next = places.length > 1 ? places.slice(0, -1) : places;
      } else {
        const kids = await this.tree.children(here.entry, ctx);
        const e = kids.find((k) => k.name === name);
        if (e) next = [...places, { entry: e, key: childKey(here.key, e) }];
      }
      if (!next) {
        if (i === 0) throw new StyxError(Ename.notFound);
        return { qids };
      }
      places = next;
      const p = places[places.length - 1]!;
      qids.push(this.tree.qidOf(p.entry, p.key));
    }
    return { qids, node: new SynthNode(this.tree, caller, places) };
  }

  async open(mode: number, opts?: OpOptions): Promise<OpenFile> {
    const { entry, key } = this.#here;
    const caller = opts?.caller ?? this.caller;
    const ctx: Ctx = { caller, signal: opts?.signal };
    if (entry.kind === "dir") {
      if ((mode & 3) !== 0 || mode & OTRUNC) throw new StyxError(Ename.isDir);
      if (!this.tree.allowed(entry, caller, 0)) throw new StyxError(Ename.perm);
      return new DirFile(this.tree, entry, key, caller, this.qid);
    }
    if (!this.tree.allowed(entry, caller, mode)) throw new StyxError(Ename.perm);
    const handle = await entry.open({ ...ctx, mode });
    return new SynthFile(handle, mode, caller, this.qid);
  }

  create(): Promise<Created> {
    return Promise.reject(new StyxError(Ename.noCreate));
  }

  stat(opts?: OpOptions): Promise<Dir> {
    const { entry, key } = this.#here;
    return this.tree.dirOf(
      entry,
      key,
      { caller: opts?.caller ?? this.caller, signal: opts?.signal },
      this.places.length === 1,
    );
  }

  wstat(d: Dir): Promise<void> {
    // Truncating to zero (what `echo x >file` sends through 9pfuse) is harmless
    // on a synthetic file; anything else is refused.
    const untouched = d.name === "" && d.uid === "" && d.gid === "" &&
      d.mode === 0xffffffff && d.mtime === 0xffffffff && d.atime === 0xffffffff;
    if (untouched && (d.length === 0n || d.length === 0xffffffffffffffffn)) {
      return Promise.resolve();
    }
    return Promise.reject(new StyxError(Ename.noWstat));
  }

  remove(): Promise<void> {
    return Promise.reject(new StyxError(Ename.noRemove));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

class SynthFile implements OpenFile {
  readonly iounit = 0;
  #closed = false;
  constructor(
    private handle: Handle,
    private mode: number,
    private caller: Caller,
    readonly qid: Qid,
  ) {}

  async read(offset: bigint, count: number, opts?: ReadOptions): Promise<Uint8Array> {
    const m = this.mode & 3;
    if (m !== 0 && m !== ORDWR && m !== OEXEC) throw new StyxError(Ename.notOpen);
    if (!this.handle.read) return new Uint8Array(0);
    const ctx: ReadCtx = {
      caller: this.caller,
      signal: opts?.signal,
      alloc: opts?.alloc,
      allocAhead: opts?.allocAhead,
    };
    return await withSignal(
      Promise.resolve(this.handle.read(offset, count, ctx)),
      opts?.signal,
    );
  }

  async write(offset: bigint, data: Uint8Array, opts?: OpOptions): Promise<number> {
    const m = this.mode & 3;
    if (m !== OWRITE && m !== ORDWR) throw new StyxError(Ename.notOpen);
    if (!this.handle.write) throw new StyxError(Ename.perm);
    return await withSignal(
      Promise.resolve(
        this.handle.write(offset, data, { caller: this.caller, signal: opts?.signal }),
      ),
      opts?.signal,
    );
  }

  readDir(): Promise<Dir[]> {
    return Promise.reject(new StyxError(Ename.notDir));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.handle.close?.();
  }
}

class DirFile implements OpenFile {
  readonly iounit = 0;
  constructor(
    private tree: SynthTree,
    private entry: DirEntry,
    private key: string,
    private caller: Caller,
    readonly qid: Qid,
  ) {}

  read(): Promise<Uint8Array> {
    return Promise.reject(new StyxError(Ename.isDir));
  }

  write(): Promise<number> {
    return Promise.reject(new StyxError(Ename.isDir));
  }

  async readDir(opts?: OpOptions): Promise<Dir[]> {
    const ctx: Ctx = { caller: this.caller, signal: opts?.signal };
    const kids = await this.tree.children(this.entry, ctx);
    return await Promise.all(kids.map((k) => this.tree.dirOf(k, childKey(this.key, k), ctx)));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
