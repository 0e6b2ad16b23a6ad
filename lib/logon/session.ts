/**
 * `ferry logon -u USER FILE -- COMMAND`: run COMMAND, as USER's host
 * account, in a private Linux mount namespace where every mount point of
 * USER's composed namespace is a FUSE mount of that part of the namespace
 * at its own path (`/usr/alice`, `/n/files`, `/phone`), as Plan 9 gives
 * each process its own namespace.
 *
 * One process does it, as root: it composes the namespace, then its main
 * thread enters a private mount namespace of its own (unshare(2) through
 * FFI, see sys.ts), builds the view there (see view.ts), mounts, and runs
 * COMMAND through `setpriv` as the account ({@link runInView}), serving
 * FUSE until COMMAND exits. Nothing it mounts is seen outside, and the
 * mounts go with the namespace's last process when it exits (or is
 * killed). COMMAND's exit status is logon's.
 *
 * @module
 */

import type { Namespace } from "../ns/namespace.ts";
import { type FuseMount, fuseUnavailable, mountTree } from "../fuse/mount.ts";
import type { Account } from "./account.ts";
import { buildView, outermost, planView, type View } from "./view.ts";
import type { Node } from "../fs/tree.ts";
import { QTDIR } from "../styx/types.ts";
import { enterPrivateMountNamespace, loadMountCalls, mountDevice, withRoot } from "./sys.ts";

/** Exit status of a child the way a shell reports it (128+N when killed by signal N). */
function exitCode(s: Deno.CommandStatus): number {
  if (s.signal !== null) return 128 + (SIGNALS[s.signal] ?? 0);
  return s.code;
}

const SIGNALS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

/**
 * Signals while a logon runs: SIGINT and SIGQUIT (which a terminal sends to
 * the whole foreground group, the command included) leave this process
 * alone; SIGTERM and SIGHUP are passed on to the command once it runs, and
 * before that (or after it) only noted, so that the mounts are always taken
 * down and the stage removed.
 */
class Signals {
  /** The first SIGTERM or SIGHUP that came before there was a command to pass it to. */
  pending: Deno.Signal | undefined;
  /** Resolves when {@link pending} is set. */
  readonly arrived: Promise<void>;
  #arrive!: () => void;
  #child: Deno.ChildProcess | undefined;
  readonly #handlers: [Deno.Signal, () => void][];

  constructor() {
    this.arrived = new Promise((r) => (this.#arrive = r));
    const ignore = () => {};
    const pass = (sig: Deno.Signal) => () => {
      if (!this.#child) {
        this.pending ??= sig;
        this.#arrive();
        return;
      }
      try {
        this.#child.kill(sig);
      } catch { /* already gone */ }
    };
    this.#handlers = [
      ["SIGINT", ignore],
      ["SIGQUIT", ignore],
      ["SIGTERM", pass("SIGTERM")],
      ["SIGHUP", pass("SIGHUP")],
    ];
    for (const [sig, f] of this.#handlers) Deno.addSignalListener(sig, f);
  }

  /** Wait for `child`, passing signals on to it; its exit status as a shell gives it. */
  async wait(child: Deno.ChildProcess): Promise<number> {
    this.#child = child;
    try {
      return exitCode(await child.status);
    } finally {
      this.#child = undefined;
    }
  }

  /** Stop handling signals. */
  release(): void {
    for (const [sig, f] of this.#handlers) Deno.removeSignalListener(sig, f);
  }
}

/** The command a logon runs: `command` if given, else the account's login shell. */
export function commandFor(
  account: Account,
  command: readonly string[],
  sshCommand?: string,
): string[] {
  if (command.length > 0) return [...command];
  if (sshCommand !== undefined && sshCommand !== "") return [account.shell, "-c", sshCommand];
  return [account.shell, "-l"];
}

/** Options of {@link runInView}. */
export interface ViewOptions {
  /** The Ferry user (names the mounts in /proc/mounts). */
  user: string;
  /** The host account COMMAND runs as (uid 0 only with `rootByManifest`). */
  account: Account;
  /**
   * The manifest names root as the user's account (`account = "root"`), as a
   * `cpu` export allows; `ferry logon` never sets it.
   */
  rootByManifest?: boolean;
  /** The command and its arguments. */
  command: readonly string[];
  /** Told about each mount made (default: nothing). */
  onMount?: (target: string) => void;
  /** Told about each mount point left out, and why (default: nothing). */
  onSkip?: (target: string, why: string) => void;
  /**
   * Nodes to mount as they are at these paths, beside the mount points of
   * the namespace (which has none at or above them): a tree attached for
   * the view, with no walk through the namespace to reach it. Closed with
   * the view. Each must be a directory; given as a promise, the view is
   * built while it is reached.
   */
  roots?: ReadonlyMap<string, Node | Promise<Node>>;
  /**
   * End the process with the command's exit status as soon as the command
   * has exited, rather than return it: the private mount namespace, its
   * FUSE mounts and their sessions, and every link go with the process, so
   * only the stage directory (on the host's file system) is removed first.
   * For a caller that has nothing left to do but exit.
   */
  exitWhenDone?: boolean;
}

/**
 * As root: enter a private mount namespace (this thread's, see sys.ts),
 * mount every outermost mount point of `ns` at its own path there, run the
 * command as the account, serve until it exits, then take everything
 * down. Returns the command's exit status.
 */
export async function runInView(ns: Namespace, opts: ViewOptions): Promise<number> {
  const { account } = opts;
  if (account.uid === 0 && !opts.rootByManifest) {
    throw new Error(
      `host account '${account.name}' is root: logon never runs a command as root; ` +
        `set 'account' for user '${opts.user}' in the manifest to an unprivileged account`,
    );
  }
  if (Deno.uid() !== 0) {
    throw new Error(
      "a private mount namespace needs root: run 'ferry logon … -- COMMAND' as root " +
        "(through sudo at an SSH logon, see the README); the command itself runs as the user's account",
    );
  }
  // Only directories can be mounted on directories: a file bound on a file
  // stays visible only to Ferry's own shell. The mount points are resolved
  // while this thread makes its private mount namespace.
  const nodes = new Map<string, Node>();
  const roots = opts.roots ?? new Map<string, Node>();
  const targets = outermost([...ns.mounts().map((m) => m.target), ...roots.keys()]);
  // The given roots are directories: the view is built for them while
  // they are still being reached.
  const rooted = targets.filter((t) => roots.has(t));
  const reaching = Promise.all(rooted.map(async (t) => [t, await roots.get(t)!] as const));
  reaching.catch(() => {});
  const resolving = Promise.all(
    targets.filter((t) => !roots.has(t)).map(async (target) => {
      try {
        const node = await ns.resolve(target);
        if (node.qid.type & QTDIR) nodes.set(target, node);
        else {
          await node.close();
          opts.onSkip?.(target, "it is a file, not a directory");
        }
      } catch (e) {
        opts.onSkip?.(target, (e as Error).message);
      }
    }),
  );
  const staging = Deno.makeTempDir({ prefix: "ferry-logon-" });
  staging.catch(() => {});
  const signals = new Signals();
  let view: View | undefined;
  const mounts: FuseMount[] = [];
  try {
    prepareView();
    enterPrivateMountNamespace();
    const [stage] = await Promise.all([staging, resolving]);
    view = buildView(planView([...nodes.keys(), ...rooted]), stage);
    // A hangup while they are reached ends the wait (the view then comes
    // down), as it would have ended the process before there was one.
    const reached = await Promise.race([reaching, signals.arrived.then(() => [])]);
    if (signals.pending) return 128 + (SIGNALS[signals.pending] ?? 0);
    for (const [t, node] of reached) nodes.set(t, node);
    const v = view;
    // From here this thread must not look at its own FUSE mounts with a
    // synchronous call: the answer needs this thread. So the working
    // directory is found first, and readahead set without asking the mounts.
    const wd = await homeIn(ns, account.home, v.root, [...v.paths.keys()]);
    await Promise.all([...v.paths].map(async ([target, at]) => {
      const node = nodes.get(target)!;
      const m = await mountTree(node, at, {
        uid: account.uid,
        gid: account.gid,
        allowOther: true,
        fsname: `ferry-logon:${opts.user}`,
        readaheadKb: 0,
      });
      mounts.push(m);
      opts.onMount?.(target);
    }));
    setReadahead(mounts.map((m) => m.mountpoint), READAHEAD_KB);
    if (signals.pending) return 128 + (SIGNALS[signals.pending] ?? 0);
    // Deno reads /proc on the spawning thread (its stack's bounds, the
    // first time): a mount over /proc there would wait for this thread.
    const overProc = [...v.paths.keys()].some((t) => t === "/proc" || t.startsWith("/proc/"));
    const code = await spawnAs(account, opts.command, v.root, wd, signals, overProc);
    if (opts.exitWhenDone) {
      // Unmounting each mount and closing each session one by one would
      // only do before exit what the exit does anyway.
      v.close();
      Deno.exit(code);
    }
    return code;
  } finally {
    await Promise.allSettled(mounts.map((m) => m.close()));
    if (view) view.close();
    else await staging.then((d) => Deno.remove(d)).catch(() => {});
    signals.release();
  }
}

/**
 * Do ahead of need what {@link runInView} does first on this thread: find
 * the programs it runs and load the system calls it makes. A caller with
 * time to spare (waiting for a link, or for a job) calls it then; calling
 * it again costs nothing.
 */
export function prepareView(): void {
  if (prepared) return;
  prepared = true;
  // Programs this thread starts are found now: once the view is mounted,
  // a PATH directory may lie under a FUSE mount only this thread can
  // answer, while it waits for the spawn.
  resolveTools(["setpriv", "unshare"]);
  // Deno loads its process code at the first look at Deno.Command: a few
  // milliseconds better spent now than between the mounts and the command.
  void Deno.Command;
  loadMountCalls();
  // Opens /dev/fuse once and loads the FUSE system calls; a reason it
  // cannot be used is reported by the mounts themselves.
  fuseUnavailable();
}

let prepared = false;

const tools = new Map<string, string>();

/** Find each of `names` along PATH now (synchronously), for {@link tool}. */
function resolveTools(names: string[]): void {
  const dirs = (Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin").split(":");
  for (const n of names) {
    for (const d of dirs) {
      try {
        if (d && Deno.statSync(`${d}/${n}`).isFile) {
          tools.set(n, `${d}/${n}`);
          break;
        }
      } catch { /* not here */ }
    }
  }
}

/** The path {@link resolveTools} found for `name`, else `name` itself. */
function tool(name: string): string {
  return tools.get(name) ?? name;
}

/** Kernel readahead for the mounts, in KiB (as mountTree's default). */
const READAHEAD_KB = 4096;

/**
 * Set the kernel's readahead for the FUSE mounts at `points` (only a
 * tuning). Each mount's device number is asked of the kernel without
 * asking the mount (see {@link mountDevice}): this thread answers it.
 */
function setReadahead(points: readonly string[], kb: number): void {
  for (const at of points) {
    try {
      Deno.writeTextFileSync(`/sys/class/bdi/${mountDevice(at)}/read_ahead_kb`, `${kb}\n`);
    } catch { /* the kernel's default readahead (writing /sys needs --allow-all) */ }
  }
}

/**
 * The command's working directory: the account's home as the command will
 * see it, if it is a directory there, else "/". A home at or below a mount
 * point is looked up in the namespace, not through the mount.
 */
async function homeIn(
  ns: Namespace,
  home: string,
  root: string,
  targets: readonly string[],
): Promise<string> {
  try {
    if (targets.some((t) => home === t || home.startsWith(t + "/"))) {
      const node = await ns.resolve(home);
      const dir = (node.qid.type & QTDIR) !== 0;
      await node.close();
      return dir ? home : "/";
    }
    // Synchronous: this thread's mounts are the ones the command sees.
    return Deno.statSync(root === "/" ? home : root + home).isDirectory ? home : "/";
  } catch {
    return "/";
  }
}

async function spawnAs(
  account: Account,
  command: readonly string[],
  root: string,
  wd: string,
  signals: Signals,
  overProc: boolean,
): Promise<number> {
  const env = Deno.env.toObject();
  for (const k of Object.keys(env)) {
    if (k.startsWith("SUDO_")) delete env[k];
  }
  Object.assign(env, {
    HOME: account.home,
    USER: account.name,
    LOGNAME: account.name,
    SHELL: account.shell,
    PATH: env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
  });
  const setpriv = [
    `--reuid=${account.uid}`,
    `--regid=${account.gid}`,
    "--init-groups",
    "--",
    ...command,
  ];
  // The root and working directory are the child's from the start: it is
  // spawned from this thread while its root is the view's (withRoot), and
  // changes directory itself, before it execs (cwd): while Deno spawns,
  // this thread waits, and cannot answer a FUSE lookup the change needs.
  // Where a mount covers /proc, unshare(1) changes the root instead.
  const viaUnshare = root !== "/" && overProc;
  const spawn = () =>
    new Deno.Command(tool(viaUnshare ? "unshare" : "setpriv"), {
      args: viaUnshare ? [`--root=${root}`, `--wd=${wd}`, "setpriv", ...setpriv] : setpriv,
      env,
      clearEnv: true,
      cwd: viaUnshare ? "/" : wd,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  let child: Deno.ChildProcess;
  try {
    child = root === "/" || viaUnshare ? spawn() : withRoot(root, spawn);
  } catch (e) {
    throw new Error(`cannot run '${command[0]}': ${(e as Error).message}`);
  }
  return await signals.wait(child);
}
