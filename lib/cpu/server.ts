/**
 * The node's side of `ferry cpu`: a `cpu` export, served as a Styx tree
 * like any other export, that runs commands for the users on its access
 * list, each as the host account the manifest gives the user.
 *
 * ```
 * clone        open it to make a session; read gives its number N; writes
 *              are ctl messages; closing it ends the session (hangs up)
 * N/ctl        exec ARG…   run ARGs (a zero-length list is refused)
 *              shell [COMMAND] the account's login shell, with -c COMMAND
 *              pty ROWS COLS [TERM]  before exec: run on a pseudo-terminal
 *              winch ROWS COLS the terminal's new window size
 *              intr            ^C: SIGINT to the command's process group
 *                              (on a pty: the terminal's interrupt character)
 *              kill            SIGKILL to the process group
 * N/stdin      writes go to the command's standard input; a zero-length
 *              write closes it
 * N/stdout     the command's standard output; a zero-length read is the end
 * N/stderr     its standard error
 * N/wait       blocks until the command ends, then reads its exit status
 * N/ns         the caller's namespace, reversed: reads give the Styx
 *              requests the node makes of the caller's composed namespace,
 *              and the caller writes the replies back
 * ```
 *
 * A session's files are its owner's alone. The command runs in a helper
 * process (`ferry cpu --session`, see session.ts) in a private mount
 * namespace, in a new process group, with the caller's namespace mounted
 * at /n/client through FUSE, the helper reaching it through a Unix socket
 * that this process joins to N/ns. The helper learns who runs what as the
 * first thing on that socket, so one is kept started ahead of need (as
 * root): a command then waits for no Ferry to start on the node. A session
 * on a pseudo-terminal starts its own helper, inside the terminal. The
 * helper's second connection to the socket brings the command's exit
 * status as the helper exits, ahead of the helper's own.
 *
 * @module
 */

import type { Caller, Tree } from "../fs/tree.ts";
import {
  type Command,
  type Ctx,
  dir,
  type Entry,
  file,
  runCtl,
  sliceAt,
  SynthTree,
} from "../fs/synthetic.ts";
import { withSignal } from "../fs/tree.ts";
import { StyxError } from "../styx/types.ts";
import type { Manifest } from "../manifest/schema.ts";
import { type Account, lookupAccount } from "../logon/account.ts";
import { ferryArgv } from "../self.ts";
import { ByteQueue, newestOnly } from "./streams.ts";
import { TcpConn } from "../transport/tcp.ts";
import type { Conn } from "../transport/conn.ts";

const HUNG_UP = "the session is hung up";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Options of {@link CpuService}. */
export interface CpuServiceOptions {
  /** The node's name, for messages. */
  node: string;
  /** The manifest in force (read at each exec, so a reload counts). */
  manifest: () => Manifest;
  /** Where status lines go. */
  log?: (line: string) => void;
  /** The command line that starts Ferry (default: this Ferry's). */
  ferry?: string[];
  /**
   * Keep one helper started ahead of need (default: when running as root),
   * so that a command does not wait for Ferry to start on the node.
   */
  spare?: boolean;
}

/** Signal numbers for exit statuses (128+N) of a helper killed by a signal. */
const SIGNO: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGPIPE: 13,
  SIGTERM: 15,
};

/** Serves `cpu` exports: one per export of kind `cpu` on a node. */
export class CpuService {
  readonly #opts: CpuServiceOptions;
  readonly #sessions = new Map<number, CpuSession>();
  #next = 1;
  readonly #tree: SynthTree;
  #spare: Helper | undefined;
  /** A spare helper being started, until it is ready (or put away, if closed meanwhile). */
  #starting: Promise<void> | undefined;
  #closed = false;

  /** A service running commands as `opts.manifest()` says. */
  constructor(opts: CpuServiceOptions) {
    this.#opts = opts;
    this.#replenish();
    if (this.#keepsSpare) void sweepStaleHelperDirs();
    const clone = file("clone", (ctx) => {
      const id = this.#next++;
      const s = new CpuSession(id, ctx.caller, this.#opts, () => this.#takeSpare());
      this.#sessions.set(id, s);
      s.ended.then(() => {
        this.#sessions.delete(id);
        this.#replenish();
      });
      const text = enc.encode(`${id}\n`);
      return {
        read: (off, count) => sliceAt(text, off, count),
        write: async (_off, data, wctx) => {
          await runCtl(dec.decode(data), s.ctl, wctx);
          return data.length;
        },
        close: () => s.hangup(),
      };
    }, { perm: 0o666 });
    this.#tree = new SynthTree(
      dir("", (ctx) => [clone, ...this.#mine(ctx)], { perm: 0o555 }),
      { checkPerm: false },
    );
  }

  /** The export's tree. */
  tree(): Tree {
    return this.#tree;
  }

  #mine(ctx: Ctx): Entry[] {
    return [...this.#sessions.values()].filter((s) => s.owner === ctx.caller.user).map((s) =>
      s.entry()
    );
  }

  /** Whether this service keeps a helper ready (by default only as root). */
  get #keepsSpare(): boolean {
    return this.#opts.spare ?? Deno.uid() === 0;
  }

  /**
   * Start a spare helper unless one is there or starting. Called at the
   * start and when a session ends, not when one takes the spare: a helper
   * starting would take CPU from the command that has just begun.
   */
  #replenish(): void {
    if (this.#closed || this.#spare || this.#starting) return;
    if (!this.#keepsSpare) return;
    const ferry = this.#opts.ferry ?? ferryArgv();
    this.#starting = startHelper(ferry, helperEnv("dumb"), undefined, "ferry-cpu-spare-").then(
      async (h) => {
        this.#starting = undefined;
        // Closed meanwhile: close() awaits this, so the helper and its
        // directory are gone before the node exits.
        if (this.#closed) return await h.kill().then(() => h.dispose());
        this.#spare = h;
        // One that dies unused (killed by hand, say) is not handed out.
        h.child.status.then(() => {
          if (this.#spare === h) this.#spare = undefined;
          void h.dispose();
        });
      },
      (e) => {
        this.#starting = undefined;
        this.#opts.log?.(`cpu: cannot start a helper ahead of need: ${e.message}`);
      },
    );
  }

  /** The spare helper, if one is ready. */
  #takeSpare(): Helper | undefined {
    const h = this.#spare;
    this.#spare = undefined;
    return h;
  }

  /** End every session and stop the spare helper. */
  async close(): Promise<void> {
    this.#closed = true;
    const spare = this.#spare;
    this.#spare = undefined;
    await Promise.allSettled([
      ...[...this.#sessions.values()].map((s) => s.hangup()),
      spare?.kill().then(() => spare.dispose()),
      this.#starting,
    ]);
  }
}

/** One command run for one caller. */
class CpuSession {
  readonly owner: string;
  readonly ended: Promise<void>;
  #end!: () => void;
  #child: Deno.ChildProcess | undefined;
  #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #stdout: ByteQueue | undefined;
  #stderr: ByteQueue | undefined;
  /** The command's exit status, as soon as the helper reports it. */
  #status: Promise<number> | undefined;
  /** The helper's own exit status, once it has exited. */
  #exited: Promise<number> | undefined;
  #pty: { rows: number; cols: number } | undefined;
  #term: string | undefined;
  #ns: Promise<Conn> | undefined;
  #nsIn: ByteQueue | undefined;
  #hungUp = false;
  #started: ((running: boolean) => void) | undefined;
  /** True once the command runs; false if the session was hung up before it ran. */
  readonly #running = new Promise<boolean>((r) => (this.#started = r));

  /** The account the manifest named when the session was made, looked up then. */
  #lookup: { name: string; account: Promise<Account | undefined> } | undefined;

  constructor(
    readonly id: number,
    readonly caller: Caller,
    readonly opts: CpuServiceOptions,
    readonly spare: () => Helper | undefined,
  ) {
    this.owner = caller.user;
    this.ended = new Promise((r) => (this.#end = r));
    // Looked up (a getent) while the caller opens the session's files and
    // asks for the command; exec uses it only for the account the
    // manifest names by then.
    try {
      const name = Deno.uid() === 0 ? opts.manifest().users.get(this.owner)?.account : undefined;
      if (name !== undefined) {
        const account = lookupAccount(name);
        account.catch(() => {});
        this.#lookup = { name, account };
      }
    } catch { /* exec looks it up, and says what is wrong */ }
  }

  readonly ctl: Command[] = [
    {
      name: "exec",
      min: 1,
      max: Infinity,
      usage: "COMMAND [ARG...]",
      run: (args) => this.#exec(args),
    },
    {
      name: "shell",
      min: 0,
      max: 1,
      usage: "[COMMAND]",
      run: (args) => this.#exec(args, true),
    },
    {
      name: "pty",
      min: 2,
      max: 3,
      usage: "ROWS COLS [TERM]",
      run: ([r, c, term]) => {
        if (this.#child) throw new StyxError("the command is already running");
        if (term !== undefined && !/^[A-Za-z0-9._+-]{1,64}$/.test(term)) {
          throw new StyxError(`bad terminal type '${term}'`);
        }
        this.#pty = size(r!, c!);
        this.#term = term;
      },
    },
    {
      name: "winch",
      min: 2,
      usage: "ROWS COLS",
      run: async ([r, c]) => await this.#winch(size(r!, c!)),
    },
    { name: "intr", run: async () => await this.#interrupt() },
    { name: "kill", run: () => this.#signal("SIGKILL") },
  ];

  entry(): Entry {
    const need = () => {
      if (!this.#child) throw new StyxError("no command is running: write 'exec COMMAND' first");
    };
    return dir(String(this.id), [
      file("ctl", () => ({
        write: async (_off, data, ctx) => {
          await runCtl(dec.decode(data), this.ctl, ctx);
          return data.length;
        },
      }), { perm: 0o200, uid: this.owner }),
      file("stdin", () => ({
        write: async (_off, data, ctx) => {
          if (!await withSignal(this.#running, ctx.signal)) throw new StyxError(HUNG_UP);
          if (data.length === 0) {
            await this.#stdin?.close().catch(() => {});
            return 0;
          }
          try {
            await this.#stdin!.write(data);
          } catch {
            throw new StyxError("the command's standard input is closed");
          }
          return data.length;
        },
      }), { perm: 0o200, uid: this.owner }),
      file("stdout", () => ({
        read: async (_off, count, ctx) => {
          if (!await withSignal(this.#running, ctx.signal)) return new Uint8Array(0);
          return await this.#stdout!.read(count, ctx.signal, allocOf(ctx));
        },
      }), { perm: 0o400, uid: this.owner }),
      file("stderr", () => ({
        read: async (_off, count, ctx) => {
          if (!await withSignal(this.#running, ctx.signal)) return new Uint8Array(0);
          return await this.#stderr!.read(count, ctx.signal, allocOf(ctx));
        },
      }), { perm: 0o400, uid: this.owner }),
      file("wait", () => {
        let text: Uint8Array | undefined;
        return {
          read: async (off, count, ctx) => {
            need();
            text ??= enc.encode(`${await withSignal(this.#status!, ctx.signal)}\n`);
            return sliceAt(text, off, count);
          },
        };
      }, { perm: 0o400, uid: this.owner }),
      file("ns", () => ({
        read: async (_off, count, ctx) => {
          if (!await withSignal(this.#running, ctx.signal)) return new Uint8Array(0);
          return await this.#nsIn!.read(count, ctx.signal, allocOf(ctx));
        },
        write: async (_off, data, ctx) => {
          if (!await withSignal(this.#running, ctx.signal)) throw new StyxError(HUNG_UP);
          const conn = await this.#ns!;
          await conn.write(data);
          return data.length;
        },
      }), { perm: 0o600, uid: this.owner }),
    ], { perm: 0o500, uid: this.owner });
  }

  async #exec(words: string[], shell = false): Promise<void> {
    if (this.#child || this.#hungUp) throw new StyxError("the command is already running");
    if (Deno.uid() !== 0) {
      throw new StyxError(
        `node '${this.opts.node}' does not run as root, which a cpu export needs (private mount namespaces, the command's account)`,
      );
    }
    const m = this.opts.manifest();
    const user = this.owner;
    const spec = m.users.get(user);
    if (!spec) {
      throw new StyxError(`user '${user}' is not in node '${this.opts.node}''s manifest`);
    }
    const account =
      await (this.#lookup?.name === spec.account
        ? this.#lookup.account
        : lookupAccount(spec.account));
    if (!account) {
      throw new StyxError(
        `user '${user}' runs as host account '${spec.account}', which does not exist on node '${this.opts.node}'`,
      );
    }
    // Root only by the manifest's own word (account = "root"), never by a
    // user's name, a numeric name or another account that is uid 0 here.
    if (
      account.uid === 0 &&
      !(spec.accountNamed && spec.account === "root" && account.name === "root")
    ) {
      throw new StyxError(
        `user '${user}' would run as host account '${account.name}', which is root: cpu runs a command as root only for a user whose manifest entry says account = "${account.name}"`,
      );
    }
    const args = !shell ? words : words.length ? [account.shell, "-c", words[0]!] : [
      account.shell,
      "-l",
    ];
    if (this.#hungUp) throw new StyxError(HUNG_UP);
    let helper: Helper;
    try {
      // A helper started ahead of need has Ferry loaded already; one on a
      // pseudo-terminal is started for the session, at the terminal's size.
      helper = (!this.#pty && this.spare()) ||
        await startHelper(this.opts.ferry ?? ferryArgv(), this.#env(), this.#pty);
    } catch (e) {
      throw new StyxError(`cannot start the command: ${(e as Error).message}`);
    }
    if (this.#hungUp) {
      await helper.kill();
      await helper.dispose();
      throw new StyxError(HUNG_UP);
    }
    this.#child = helper.child;
    const job: Job = { user, account, command: args, root: account.uid === 0 };
    this.#ns = helper.conn.then(async (c) => {
      await sendJob(c, job);
      return new TcpConn(c, { authenticated: false });
    });
    this.#ns.catch(() => {});
    const child = this.#child;
    this.#stdin = child.stdin.getWriter();
    this.#stdout = ByteQueue.of(child.stdout);
    this.#stderr = ByteQueue.of(child.stderr);
    this.#nsIn = new ByteQueue(async () => {
      try {
        return await (await this.#ns!).read();
      } catch {
        return null;
      }
    });
    const exited = child.status.then((s) =>
      s.signal !== null ? 128 + (SIGNO[s.signal] ?? 0) : s.code
    );
    this.#exited = exited;
    // The helper says the status before it exits (tearing a process down
    // takes milliseconds), so the caller has it, and the command's output,
    // without waiting for that; one that dies without saying gives its own.
    this.#status = helper.status.then((code) => code ?? exited);
    exited.then(async () => {
      // What the command left running in its group goes with it, as its
      // namespace does.
      try {
        Deno.kill(-child.pid, "SIGKILL");
      } catch { /* nothing left */ }
      (await this.#ns!.catch(() => undefined))?.close();
      await helper.dispose();
    }, () => {});
    this.opts.log?.(`cpu: '${user}' runs '${args.join(" ")}' as '${account.name}'`);
    this.#started!(true);
  }

  /**
   * The helper's environment, which the command inherits: only what Ferry
   * itself needs to start and the caller's terminal type, none of the
   * node's own settings.
   */
  #env(): Record<string, string> {
    return helperEnv(this.#pty ? this.#term ?? "xterm" : "dumb");
  }

  // One stty at a time, the newest size last: overlapping ones could end
  // in either order.
  #resize = newestOnly(async (sz: { rows: number; cols: number }) => {
    if (!this.#child) return;
    // The pty `script` made is its child's standard input.
    const tty = await findPty(this.#child.pid);
    if (!tty) return;
    await new Deno.Command("stty", {
      args: ["-F", tty, "rows", String(sz.rows), "cols", String(sz.cols)],
      stdout: "null",
      stderr: "null",
    }).output();
  });

  async #winch(sz: { rows: number; cols: number }): Promise<void> {
    if (!this.#pty || !this.#child) return;
    this.#pty = sz;
    await this.#resize(sz);
  }

  async #interrupt(): Promise<void> {
    if (!this.#child) throw new StyxError("no command is running: write 'exec COMMAND' first");
    if (this.#pty) {
      // The terminal's interrupt character: the line discipline signals the
      // foreground group, which a shell on the pty has set.
      await this.#stdin?.write(new Uint8Array([3])).catch(() => {});
      return;
    }
    this.#signal("SIGINT");
  }

  #signal(sig: Deno.Signal): void {
    if (!this.#child) throw new StyxError("no command is running: write 'exec COMMAND' first");
    try {
      Deno.kill(-this.#child.pid, sig);
    } catch { /* already gone */ }
  }

  /** End the session: SIGHUP to the command's group, SIGKILL if it lingers. */
  async hangup(): Promise<void> {
    if (this.#hungUp) return;
    this.#hungUp = true;
    const child = this.#child;
    if (child) {
      let done = false;
      this.#exited!.finally(() => (done = true));
      try {
        Deno.kill(-child.pid, "SIGHUP");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        if (!done) {
          try {
            Deno.kill(-child.pid, "SIGKILL");
          } catch { /* already gone */ }
        }
      }, 3000);
      await this.#exited!.catch(() => {});
      clearTimeout(timer);
      await this.#stdin?.close().catch(() => {});
    } else {
      this.#started!(false);
    }
    this.#end();
  }
}

/** What a helper is told to run, the first thing on its socket. */
export interface Job {
  /** The Ferry user. */
  user: string;
  /** The host account the command runs as. */
  account: Account;
  /** The command and its arguments. */
  command: string[];
  /** The account is root and the manifest names it for the user (checked by the node). */
  root?: boolean;
}

/**
 * A helper process (`ferry cpu --session SOCKET`): in a new session and a
 * private mount namespace, with its standard input, output and error piped
 * to this process, waiting for its {@link Job} on SOCKET.
 */
interface Helper {
  child: Deno.ChildProcess;
  /** The helper's connection, once it has started. */
  conn: Promise<Deno.UnixConn>;
  /**
   * The exit status the helper reports on its second connection as it
   * exits (see session.ts), or undefined if it ends without one.
   */
  status: Promise<number | undefined>;
  /** SIGKILL to the helper's process group; resolves once the helper is reaped. */
  kill(): Promise<void>;
  /** Close the socket and remove the helper's directory. */
  dispose(): Promise<void>;
}

async function startHelper(
  ferry: string[],
  env: Record<string, string>,
  pty?: { rows: number; cols: number },
  prefix = "ferry-cpu-",
): Promise<Helper> {
  const dir = await Deno.makeTempDir({ prefix });
  const sock = `${dir}/ns`;
  let listener: Deno.UnixListener | undefined;
  const closeListener = () => {
    try {
      listener?.close();
    } catch { /* already closed */ }
    listener = undefined;
  };
  const dispose = async () => {
    closeListener();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    listener = Deno.listen({ transport: "unix", path: sock });
    const l = listener;
    // The first connection brings the job and carries the caller's
    // namespace; the second, the helper's exit status. Once both are
    // connected the socket's directory has done its work.
    const conn = l.accept();
    conn.catch(() => {});
    const second = conn.then(() => l.accept()).finally(dispose);
    second.catch(() => {});
    const status = second.then(readStatus, () => undefined);
    // A new session, so the command's process group is its own to signal.
    // The helper makes its private mount namespace when its job comes (see
    // runInView): made now, a spare's would be a copy of the node's mounts
    // as they were when it started.
    const inner = [...ferry, "cpu"];
    inner.push("--session", sock);
    const argv = pty
      ? [
        "setsid",
        "script",
        "-qfec",
        `stty rows ${pty.rows} cols ${pty.cols}; exec ${inner.map(sh).join(" ")}`,
        "/dev/null",
      ]
      : ["setsid", ...inner];
    const child = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      env,
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Gone before it connected: nothing will.
    child.status.then(closeListener);
    const kill = async () => {
      try {
        Deno.kill(-child.pid, "SIGKILL");
      } catch {
        // No such group yet: setsid(1) has not made it. The process itself.
        try {
          Deno.kill(child.pid, "SIGKILL");
        } catch { /* already gone */ }
      }
      await child.status;
    };
    return { child, conn, status, kill, dispose };
  } catch (e) {
    await dispose();
    throw e;
  }
}

/** How old a helper's directory must be before a node takes it for one left over. */
const STALE_MS = 10 * 60_000;

/**
 * Remove the helper directories (`/tmp/ferry-cpu-*`) that a node killed
 * outright while it started a helper left behind: this user's, ten
 * minutes old or more, and with no socket, or one that nothing listens on.
 * A live node's are in use for well under a second, then removed by the
 * node.
 * @param tmp where helper directories are made
 * @returns the directories removed
 */
export async function sweepStaleHelperDirs(tmp = "/tmp"): Promise<string[]> {
  const removed: string[] = [];
  const uid = Deno.uid();
  try {
    for await (const e of Deno.readDir(tmp)) {
      if (!e.isDirectory || !/^ferry-cpu-(?:spare-)?[0-9a-f]+$/.test(e.name)) continue;
      const dir = `${tmp}/${e.name}`;
      try {
        const st = await Deno.stat(dir);
        if (st.uid !== uid || Date.now() - (st.mtime?.getTime() ?? Date.now()) < STALE_MS) continue;
        const names: string[] = [];
        for await (const f of Deno.readDir(dir)) names.push(f.name);
        if (names.some((n) => n !== "ns")) continue;
        if (names.length > 0) {
          const c = await Deno.connect({ transport: "unix", path: `${dir}/ns` }).catch(() => null);
          if (c) {
            c.close();
            continue;
          }
        }
        await Deno.remove(dir, { recursive: true });
        removed.push(dir);
      } catch { /* gone meanwhile, or not ours to judge */ }
    }
  } catch { /* no such directory to look in */ }
  return removed;
}

/**
 * A helper's environment, which the command inherits: only what Ferry
 * itself needs to start and the terminal type, none of the node's own
 * settings.
 */
function helperEnv(term: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ["PATH", "HOME", "DENO_DIR", "LANG", "LC_ALL", "TZ"]) {
    const v = Deno.env.get(k);
    if (v !== undefined) env[k] = v;
  }
  env.PATH ??= "/usr/local/bin:/usr/bin:/bin";
  env.TERM = term;
  return env;
}

/**
 * The exit status a helper reports on `conn`: a decimal number and a
 * newline, written as it exits; undefined if it closes without one.
 */
async function readStatus(conn: Deno.UnixConn): Promise<number | undefined> {
  const buf = new Uint8Array(16);
  let n = 0;
  try {
    while (n < buf.length) {
      const got = await conn.read(buf.subarray(n));
      if (got === null) break;
      n += got;
      if (buf[n - 1] === 0x0a) break;
    }
  } catch {
    /* gone: no status */
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
  const m = /^(\d{1,3})\n$/.exec(dec.decode(buf.subarray(0, n)));
  return m ? Number(m[1]) : undefined;
}

/** Write `job` on `conn`: its length (4 bytes, big-endian), then its JSON. */
async function sendJob(conn: Deno.Conn, job: Job): Promise<void> {
  const body = enc.encode(JSON.stringify(job));
  const msg = new Uint8Array(4 + body.length);
  new DataView(msg.buffer).setUint32(0, body.length);
  msg.set(body, 4);
  for (let at = 0; at < msg.length;) at += await conn.write(msg.subarray(at));
}

/**
 * The reply buffer the Styx server offers a read, where it offers one (the
 * data then goes out with no further copy), else none.
 */
function allocOf(ctx: Ctx): ((n: number) => Uint8Array) | undefined {
  return (ctx as Ctx & { alloc?: (n: number) => Uint8Array }).alloc;
}

function size(r: string, c: string): { rows: number; cols: number } {
  const rows = Number(r);
  const cols = Number(c);
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows <= 0 || cols <= 0) {
    throw new StyxError(`bad window size '${r} ${c}': want ROWS COLS, both positive`);
  }
  return { rows, cols };
}

/** `word` quoted for sh(1). */
function sh(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The pseudo-terminal `script` (pid `pid`) runs its child on. Asks ps(1):
 * Deno grants /proc only under --allow-all, which `deno task ferry` does not.
 */
async function findPty(pid: number): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("ps", {
      args: ["-o", "tty=", "--ppid", String(pid)],
      stdout: "piped",
      stderr: "null",
    }).output();
    for (const t of new TextDecoder().decode(out.stdout).split("\n")) {
      const name = t.trim();
      if (name.startsWith("pts/")) return `/dev/${name}`;
    }
  } catch { /* gone */ }
  return undefined;
}
