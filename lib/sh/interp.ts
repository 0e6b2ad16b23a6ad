/**
 * The interpreter of Ferry's shell. Every command runs with the shell's
 * namespace; a command followed by `&` runs in the background with a forked
 * namespace, so its binds and mounts never reach the shell that started it.
 * Builtins are connected by in-memory pipes; redirections open files through
 * the namespace. A failing command prints its error Inferno's way
 * (`ls: /x: file does not exist`), sets `$status` and the shell goes on.
 *
 * @module
 */

import type { Cmd, Redir, Seq, Word } from "./ast.ts";
import { parse, ShSyntaxError } from "./parser.ts";
import type { Caller, Node, OpenFile, OpOptions, Tree } from "../fs/tree.ts";
import type { Conn } from "../transport/conn.ts";
import {
  type Dir,
  Ename,
  errorString,
  ORDWR,
  OREAD,
  OTRUNC,
  OWRITE,
  StyxError,
} from "../styx/types.ts";
import {
  asReader,
  asWriter,
  BytePipe,
  type ByteReader,
  type ByteWriter,
  Collector,
  emptyReader,
  FileStream,
  nullWriter,
  type ShIO,
  userError,
  writeText,
} from "./io.ts";
import { cleanPath } from "./path.ts";
import { matchGlob } from "./glob.ts";
import type { BindFlags, MountEntry, MountFlags } from "../ns/namespace.ts";

/**
 * What the shell needs from a namespace (lib/ns's Namespace provides it).
 * Paths are absolute and clean, or device paths such as `#U*` + "/home".
 */
export interface ShellNamespace extends Tree {
  /** Who the namespace acts for. */
  readonly caller: Caller;
  /** A copy whose changes the original never sees. */
  fork(): ShellNamespace;
  /** Bind `source` on `target`. */
  bind(source: string, target: string, flags?: BindFlags): Promise<void>;
  /** Attach to `tree` and mount its root on `target`. */
  mount(
    tree: Tree,
    target: string,
    flags?: MountFlags,
  ): Promise<void>;
  /** Undo a bind or mount on `target` (only `source`'s, when given). */
  unmount(source: string | undefined, target: string): Promise<void>;
  /** The mount table, in order. */
  mounts(): MountEntry[];
  /** The node at `path`, walked for `opts.caller` when given; the caller closes it. */
  resolve(path: string, opts?: OpOptions): Promise<Node>;
  /** The directory entry of `path`. */
  stat(path: string): Promise<Dir>;
  /** The entries of directory `path`. */
  readDir(path: string): Promise<Dir[]>;
  /** Open `path` with a 9P mode. */
  open(path: string, mode: number, opts?: OpOptions): Promise<OpenFile>;
  /** Create `path` with 9P `perm` and open it with `mode`. */
  create(path: string, perm: number, mode: number): Promise<OpenFile>;
  /** Remove `path`. */
  remove(path: string): Promise<void>;
  /** Apply a Twstat to `path`. */
  wstat(path: string, dir: Dir): Promise<void>;
}

/** Printed as-is (no command prefix), status "usage". */
export class ShUsageError extends Error {
  /**
   * An error printing `usage: ` and the synopsis.
   * @param usage the command's synopsis, e.g. "ls [-l] [file ...]"
   */
  constructor(usage: string) {
    super(`usage: ${usage}`);
    this.name = "ShUsageError";
  }
}

/** Thrown by `exit`: ends the shell (or the background job) running it. */
export class ShExit extends Error {
  /**
   * The shell ends with `status`.
   * @param status the exit status ("" for success)
   */
  constructor(readonly status: string) {
    super(`exit ${status}`);
    this.name = "ShExit";
  }
}

/**
 * Thrown by `raise`: unwinds to the nearest `rescue` whose pattern matches,
 * or to the loop it ends (`break`, `continue`); uncaught, it becomes $status.
 */
export class ShRaise extends Error {
  /**
   * Raise `exception`.
   * @param exception its name, e.g. "break"
   */
  constructor(readonly exception: string) {
    super(`exception '${exception}'`);
    this.name = "ShRaise";
  }
}

/** What a builtin is given. */
export interface BuiltinCtx {
  /** The shell running the command. */
  sh: Shell;
  /** The command's name as typed. */
  name: string;
  /** Where the command reads and writes. */
  io: ShIO;
  /** Aborted when the command is killed or interrupted. */
  signal: AbortSignal;
}

/**
 * A builtin command: resolves to a status ("" or nothing for success), or
 * throws an Error whose message is printed after `name: `.
 */
export type Builtin = (ctx: BuiltinCtx, args: string[]) => Promise<string | void>;

/** A background job of this Ferry process, as `ps` shows it. */
export interface Job {
  /** Job number, as `kill` and `$apid` know it. */
  pid: number;
  /** Who started it. */
  user: string;
  /** The command text. */
  cmd: string;
  /** When it started. */
  started: Date;
  /** Whether it still runs. */
  state: "running" | "done";
  /** Aborting it is `kill`. */
  abort: AbortController;
  /** Settles when the job has ended. */
  done: Promise<void>;
}

/** The background jobs shared by a shell and all shells forked from it. */
export class JobTable {
  #next = 1;
  /** Running jobs by pid. */
  readonly jobs: Map<number, Job> = new Map();
  #changed: (() => void)[] = [];

  /** Start `fn` as a job; it is removed from the table when it ends. */
  start(cmd: string, user: string, fn: (signal: AbortSignal) => Promise<void>): Job {
    const abort = new AbortController();
    const pid = this.#next++;
    const job: Job = {
      pid,
      user,
      cmd,
      started: new Date(),
      state: "running",
      abort,
      done: Promise.resolve(),
    };
    this.jobs.set(pid, job);
    job.done = (async () => {
      try {
        await fn(abort.signal);
      } catch {
        // The job reports its own errors.
      } finally {
        job.state = "done";
        this.jobs.delete(pid);
        const ws = this.#changed;
        this.#changed = [];
        for (const w of ws) w();
      }
    })();
    return job;
  }

  /** Kill job `pid`; false when there is no such job. */
  kill(pid: number): boolean {
    const j = this.jobs.get(pid);
    if (!j) return false;
    j.abort.abort(new StyxError("killed"));
    return true;
  }

  /** Kill every job. */
  killAll(): void {
    for (const pid of [...this.jobs.keys()]) this.kill(pid);
  }

  /** Resolves once no job is left. */
  async waitAll(): Promise<void> {
    while (this.jobs.size > 0) {
      await new Promise<void>((r) => this.#changed.push(r));
    }
  }
}

/** Options for a new {@link Shell}. */
export interface ShellOptions {
  /** The namespace commands run in. */
  ns: ShellNamespace;
  /** $user; defaults to the namespace's caller. */
  user?: string;
  /** Current directory (default "/"). */
  cwd?: string;
  /** Standard input, output and error (default: none, discarded). */
  io?: Partial<ShIO>;
  /** Builtin table (default: all of Ferry's builtins, see builtins/mod.ts). */
  builtins?: Map<string, Builtin>;
  /** Shared job table (default: a new one). */
  jobs?: JobTable;
}

type Scope = Map<string, string[]>;

/** A word value with a note of which members may be file name patterns. */
interface Item {
  s: string;
  glob: boolean;
}

/** Open files held by one command's redirections. */
interface Opened {
  io: ShIO;
  files: OpenFile[];
}

/**
 * A shell: a namespace, a current directory, variables and the job table.
 *
 * @example
 * ```ts ignore
 * const sh = new Shell({ ns: await Namespace.standard({ user: "alice" }), builtins });
 * await sh.run("mkdir /tmp/x; echo hello > /tmp/x/f; cat /tmp/x/f");
 * ```
 */
export class Shell {
  /** The namespace commands run in. */
  ns: ShellNamespace;
  /** Current directory, absolute and clean. */
  cwd: string;
  /** $user. */
  readonly user: string;
  /** Default standard input, output and error. */
  io: ShIO;
  /** Builtins by name. */
  readonly builtins: Map<string, Builtin>;
  /** Background jobs, shared with forked shells. */
  readonly jobs: JobTable;
  /** The connection `export` serves, inside a `listen` block. */
  /** Set inside a `listen` block. */
  listenConn?: Conn;
  /** Aborted when this shell (a background job) is killed. */
  signal: AbortSignal = new AbortController().signal;
  /** Set once `exit` has run. */
  exited = false;
  /** Remote mounts made by this shell, closed by unmount when no longer in the table. */
  readonly dialed: { source: string; target: string; close(): void }[];
  /** Functions defined with `fn`, by name: the body block's text. */
  readonly functions: Map<string, string> = new Map();
  #scopes: Scope[];
  #parsed = new Map<string, Seq>();

  /** Make a shell; see {@link ShellOptions}. */
  constructor(opts: ShellOptions) {
    this.ns = opts.ns;
    this.cwd = opts.cwd ?? "/";
    this.user = opts.user ?? opts.ns.caller.user;
    this.io = {
      stdin: opts.io?.stdin ?? emptyReader,
      stdout: opts.io?.stdout ?? nullWriter,
      stderr: opts.io?.stderr ?? nullWriter,
    };
    this.builtins = opts.builtins ?? new Map();
    this.jobs = opts.jobs ?? new JobTable();
    this.dialed = [];
    this.#scopes = [new Map([["user", [this.user]], ["status", [""]], ["ifs", [" \t\n"]]])];
  }

  /** A child shell: forked namespace, copied variables, same jobs and builtins. */
  fork(): Shell {
    const child = new Shell({
      ns: this.ns.fork(),
      user: this.user,
      cwd: this.cwd,
      io: this.io,
      builtins: this.builtins,
      jobs: this.jobs,
    });
    const flat: Scope = new Map();
    for (const s of this.#scopes) for (const [k, v] of s) flat.set(k, [...v]);
    child.#scopes = [flat];
    for (const [k, v] of this.functions) child.functions.set(k, v);
    child.listenConn = this.listenConn;
    child.signal = this.signal;
    return child;
  }

  /** The value of variable `name` (empty when unset). */
  get(name: string): string[] {
    for (let i = this.#scopes.length - 1; i >= 0; i--) {
      const v = this.#scopes[i]!.get(name);
      if (v !== undefined) return v;
    }
    return [];
  }

  /** Set `name`: in the innermost scope when `local`, else where it is defined (or globally). */
  set(name: string, value: string[], local = false): void {
    if (local) {
      this.#scopes[this.#scopes.length - 1]!.set(name, value);
      return;
    }
    for (let i = this.#scopes.length - 1; i >= 0; i--) {
      const s = this.#scopes[i]!;
      if (s.has(name)) {
        s.set(name, value);
        return;
      }
    }
    this.#scopes[0]!.set(name, value);
  }

  /** $status as one string ("" means success). */
  get status(): string {
    return this.get("status").join(" ");
  }

  /** A path argument made absolute against the current directory; device paths (#U…) pass through. */
  path(p: string): string {
    if (p.startsWith("#")) return p;
    return cleanPath(p, this.cwd);
  }

  /**
   * Parse and run `src`. A syntax error is printed as
   * `sh: line L, column C: …` and becomes the status. Resolves to $status.
   */
  async run(src: string, io: ShIO = this.io): Promise<string> {
    let seq: Seq;
    try {
      seq = parse(src);
    } catch (e) {
      if (!(e instanceof ShSyntaxError)) throw e;
      await this.#report(io, `sh: ${e.message}`);
      this.set("status", ["syntax error"]);
      return "syntax error";
    }
    try {
      return await this.runSeq(seq, io);
    } catch (e) {
      if (e instanceof ShExit) {
        this.exited = true;
        this.set("status", [e.status]);
        return e.status;
      }
      if (e instanceof ShRaise) {
        // Nothing rescued it: like Inferno's prompt, the shell takes it as a status.
        this.set("status", [e.exception]);
        return e.exception;
      }
      throw e;
    }
  }

  /** Run a parsed sequence. `exit` propagates as {@link ShExit}. */
  async runSeq(seq: Seq, io: ShIO = this.io): Promise<string> {
    for (const item of seq.items) {
      if (this.signal.aborted) {
        const status = abortStatus(this.signal);
        this.set("status", [status]);
        return status;
      }
      if (item.background) {
        const child = this.fork();
        const bgio: ShIO = { stdin: emptyReader, stdout: io.stdout, stderr: io.stderr };
        const job = this.jobs.start(item.text, this.user, async (signal) => {
          child.signal = anySignal(signal, this.signal);
          try {
            await child.exec(item.cmd, bgio);
          } catch (e) {
            if (!(e instanceof ShExit) && !(e instanceof ShRaise)) {
              await child.#report(bgio, `sh: ${userError(e)}`);
            }
          }
        });
        this.set("apid", [String(job.pid)]);
        continue;
      }
      await this.exec(item.cmd, io);
    }
    return this.status;
  }

  /** Run one command; resolves to its status and sets $status. */
  async exec(cmd: Cmd, io: ShIO): Promise<string> {
    let status: string;
    try {
      status = await this.#exec(cmd, io);
    } catch (e) {
      if (e instanceof ShExit || e instanceof ShRaise) throw e;
      status = userError(e);
      await this.#report(io, `sh: ${status}`);
    }
    this.set("status", [status]);
    return status;
  }

  async #exec(cmd: Cmd, io: ShIO): Promise<string> {
    switch (cmd.kind) {
      case "assign": {
        const names: string[] = [];
        for (const n of cmd.names) names.push(...(await this.expand(n)));
        const value = await this.expandAll(cmd.value);
        if (names.length === 0) throw new Error("assignment to an empty name list");
        names.forEach((n, i) => {
          const v = i === names.length - 1 ? value.slice(i) : value.slice(i, i + 1);
          this.set(n, v, cmd.local);
        });
        return "";
      }
      case "and": {
        const s = await this.exec(cmd.left, io);
        return s === "" ? await this.exec(cmd.right, io) : s;
      }
      case "or": {
        const s = await this.exec(cmd.left, io);
        return s !== "" ? await this.exec(cmd.right, io) : s;
      }
      case "pipe": {
        const pipes = cmd.cmds.slice(1).map(() => new BytePipe());
        const runs = cmd.cmds.map(async (c, i) => {
          const inPipe = i > 0 ? pipes[i - 1]! : undefined;
          const outPipe = i < pipes.length ? pipes[i]! : undefined;
          const cio: ShIO = {
            stdin: inPipe ?? io.stdin,
            stdout: outPipe ?? io.stdout,
            stderr: io.stderr,
          };
          try {
            return await this.exec(c, cio);
          } finally {
            outPipe?.closeWrite();
            inPipe?.closeRead();
          }
        });
        const statuses = await Promise.all(runs);
        return statuses[statuses.length - 1] ?? "";
      }
      case "simple":
        return await this.#simple(cmd.words, cmd.redirs, io);
    }
  }

  async #simple(words: Word[], redirs: Redir[], io: ShIO): Promise<string> {
    const args = await this.expandAll(words);
    const opened = await this.#redirect(redirs, io);
    try {
      return await this.call(args, opened.io);
    } finally {
      for (const f of opened.files) await f.close().catch(() => {});
    }
  }

  /**
   * Run the command `args` names (a `{block}`, a function defined with
   * `fn`, or a builtin) with the rest as its arguments, and resolve to its
   * status. Errors are printed here, as for a command typed; `exit` and
   * `raise` propagate.
   */
  async call(args: string[], io: ShIO): Promise<string> {
    if (args.length === 0) return "";
    const name = args[0]!;
    if (name.startsWith("{")) return await this.#block(name, args.slice(1), io);
    const body = this.functions.get(name);
    if (body !== undefined) return await this.#block(body, args.slice(1), io, name);
    const fn = this.builtins.get(name);
    if (!fn) {
      await this.#report(io, `sh: ${name}: command not found`);
      return "command not found";
    }
    const ctx: BuiltinCtx = { sh: this, name, io, signal: this.signal };
    try {
      return (await fn(ctx, args.slice(1))) ?? "";
    } catch (e) {
      if (e instanceof ShExit || e instanceof ShRaise) throw e;
      if (this.signal.aborted) return abortStatus(this.signal);
      if (e instanceof ShUsageError) {
        await this.#report(io, e.message);
        return "usage";
      }
      const msg = userError(e);
      await this.#report(io, `${name}: ${msg}`);
      return msg;
    }
  }

  /** Run a block given as text, with $* set to `args`, in a new scope. */
  async #block(text: string, args: string[], io: ShIO, self = text): Promise<string> {
    let seq = this.#parsed.get(text);
    if (seq === undefined) {
      try {
        seq = parse(text);
      } catch (e) {
        throw new Error(e instanceof ShSyntaxError ? `bad block: ${e.message}` : String(e));
      }
      // Loops run the same few blocks again and again: keep the last ones parsed.
      if (this.#parsed.size >= 256) this.#parsed.delete(this.#parsed.keys().next().value!);
      this.#parsed.set(text, seq);
    }
    // A braced block parses to a single command: the block itself.
    const inner = seq.items.length === 1 && seq.items[0]!.cmd.kind === "simple"
      ? seq.items[0]!.cmd.words
      : [];
    const first = inner.length === 1 ? inner[0] : undefined;
    const body = first?.kind === "block" ? first.body : seq;
    return await this.runBlock(body, args, io, self);
  }

  /** Run `body` in a new variable scope with `$*` = `args` (and `$0` = `self`). */
  async runBlock(body: Seq, args: string[], io: ShIO, self = ""): Promise<string> {
    this.#scopes.push(new Map([["*", args], ["0", [self]]]));
    try {
      return await this.runSeq(body, io);
    } finally {
      this.#scopes.pop();
    }
  }

  /** Run the block `text` (a `{…}` argument) with $* = `args`. */
  runText(text: string, args: string[], io: ShIO = this.io): Promise<string> {
    return this.#block(text, args, io);
  }

  async #redirect(redirs: Redir[], io: ShIO): Promise<Opened> {
    const out: Opened = { io: { ...io }, files: [] };
    const fds: (ByteReader | ByteWriter)[] = [io.stdin, io.stdout, io.stderr];
    try {
      for (const r of redirs) {
        if (r.fd > 2) throw new Error(`file descriptor ${r.fd} is not supported (only 0, 1 and 2)`);
        if (r.dupFrom !== undefined) {
          if (r.dupFrom > 2) {
            throw new Error(`file descriptor ${r.dupFrom} is not supported (only 0, 1 and 2)`);
          }
          // >[1=0]: fd 1 now refers to whatever fd 0 refers to, as dup(2) does.
          fds[r.fd] = fds[r.dupFrom]!;
          continue;
        }
        const names = await this.expand(r.target!);
        if (names.length !== 1) {
          throw new Error(`redirection needs one file name, got ${names.length}`);
        }
        const p = this.path(names[0]!);
        let f: OpenFile;
        try {
          f = await this.#openFor(r.op, p);
        } catch (e) {
          throw new Error(`${names[0]}: ${userError(e)}`);
        }
        out.files.push(f);
        const offset = r.op === ">>" ? (await this.ns.stat(p)).length : 0n;
        fds[r.fd] = new FileStream(f, {
          name: names[0]!,
          read: r.op === "<" || r.op === "<>",
          write: r.op !== "<",
          offset,
          signal: this.signal,
        });
      }
    } catch (e) {
      for (const f of out.files) await f.close().catch(() => {});
      throw e;
    }
    out.io = {
      stdin: asReader(fds[0]!, 0),
      stdout: asWriter(fds[1]!, 1),
      stderr: asWriter(fds[2]!, 2),
    };
    return out;
  }

  async #openFor(op: Redir["op"], p: string): Promise<OpenFile> {
    // An open may block too (a /net listen file): ctrl-c interrupts it.
    const opts = { signal: this.signal };
    if (op === "<") return await this.ns.open(p, OREAD, opts);
    if (op === "<>") return await this.ns.open(p, ORDWR, opts);
    const mode = op === ">" ? OWRITE | OTRUNC : OWRITE;
    try {
      return await this.ns.open(p, mode, opts);
    } catch (e) {
      if (errorString(e) === Ename.notFound) return await this.ns.create(p, 0o666, OWRITE);
      if (op === ">") {
        // Some synthetic files refuse truncation; a plain write open is what they expect.
        try {
          return await this.ns.open(p, OWRITE, opts);
        } catch {
          throw e;
        }
      }
      throw e;
    }
  }

  /** Expand several words into one argument list (patterns matched last). */
  async expandAll(words: Word[]): Promise<string[]> {
    const out: string[] = [];
    for (const w of words) out.push(...(await this.expand(w)));
    return out;
  }

  /** The value of one word: a list of strings. */
  async expand(w: Word): Promise<string[]> {
    const items = await this.#items(w);
    const out: string[] = [];
    for (const it of items) {
      if (it.glob && /[*?[]/.test(it.s)) out.push(...(await this.#glob(it.s)));
      else out.push(it.s);
    }
    return out;
  }

  async #items(w: Word): Promise<Item[]> {
    switch (w.kind) {
      case "lit":
        return [{ s: w.value, glob: !w.quoted }];
      case "block":
        return [{ s: w.text, glob: false }];
      case "list": {
        const out: Item[] = [];
        for (const i of w.items) out.push(...(await this.#items(i)));
        return out;
      }
      case "var": {
        const names = await this.#items(w.name);
        const vals: string[] = [];
        for (const n of names) vals.push(...this.#lookup(n.s));
        if (w.mode === "count") return [{ s: String(vals.length), glob: false }];
        if (w.mode === "join") return [{ s: vals.join(" "), glob: false }];
        return vals.map((s) => ({ s, glob: false }));
      }
      case "subst": {
        const c = new Collector();
        await this.runSeq(w.body, { stdin: emptyReader, stdout: c, stderr: this.io.stderr });
        const text = c.text();
        if (!w.split) return [{ s: text, glob: false }];
        const ifs = this.get("ifs").join("") || " \t\n";
        const parts: string[] = [];
        let cur = "";
        for (const ch of text) {
          if (ifs.includes(ch)) {
            if (cur) parts.push(cur);
            cur = "";
          } else cur += ch;
        }
        if (cur) parts.push(cur);
        return parts.map((s) => ({ s, glob: false }));
      }
      case "concat": {
        const l = await this.#items(w.left);
        const r = await this.#items(w.right);
        if (l.length === 0 || r.length === 0) {
          throw new Error("null list in concatenation");
        }
        const join = (a: Item, b: Item): Item => ({ s: a.s + b.s, glob: a.glob || b.glob });
        if (l.length === r.length) return l.map((a, i) => join(a, r[i]!));
        if (l.length === 1) return r.map((b) => join(l[0]!, b));
        if (r.length === 1) return l.map((a) => join(a, r[0]!));
        throw new Error(`bad concatenation of lists of ${l.length} and ${r.length} elements`);
      }
    }
  }

  #lookup(name: string): string[] {
    if (/^[1-9][0-9]*$/.test(name)) {
      const v = this.get("*")[Number(name) - 1];
      return v === undefined ? [] : [v];
    }
    return this.get(name);
  }

  /** File names matching `pattern` in the namespace, sorted; the pattern itself when none. */
  async #glob(pattern: string): Promise<string[]> {
    const abs = pattern.startsWith("/");
    const parts = pattern.split("/").filter((p) => p !== "");
    let bases: string[] = [abs ? "/" : ""];
    for (const part of parts) {
      const next: string[] = [];
      const join = (b: string, n: string) => (b === "" ? n : b.endsWith("/") ? b + n : `${b}/${n}`);
      if (!/[*?[]/.test(part)) {
        for (const b of bases) next.push(join(b, part));
      } else {
        for (const b of bases) {
          let entries: Dir[];
          try {
            entries = await this.ns.readDir(this.path(b === "" ? "." : b));
          } catch {
            continue;
          }
          // A union lists a name once per member; a pattern matches the name once.
          const names = [...new Set(entries.map((d) => d.name))]
            .filter((n) => matchGlob(part, n)).sort();
          for (const n of names) next.push(join(b, n));
        }
      }
      bases = next;
      if (bases.length === 0) break;
    }
    if (bases.length === 0) return [pattern];
    // Names made without a directory read may not exist; keep those that do.
    const found: string[] = [];
    for (const b of bases) {
      try {
        await this.ns.stat(this.path(b));
        found.push(b);
      } catch { /* no such file */ }
    }
    return found.length > 0 ? found : [pattern];
  }

  async #report(io: ShIO, line: string): Promise<void> {
    try {
      await writeText(io.stderr, line + "\n");
    } catch { /* stderr gone */ }
  }
}

/** The status of a command stopped by `signal`: "killed", "interrupted"… */
function abortStatus(signal: AbortSignal): string {
  const r: unknown = signal.reason;
  return r instanceof StyxError ? r.message : "interrupted";
}

/** A signal aborted when any of `signals` is. */
export function anySignal(...signals: AbortSignal[]): AbortSignal {
  return AbortSignal.any(signals);
}
