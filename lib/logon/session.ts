/**
 * `ferry logon -u USER FILE -- COMMAND`: run COMMAND, as USER's host
 * account, in a private Linux mount namespace where every mount point of
 * USER's composed namespace is a FUSE mount of that part of the namespace
 * at its own path (`/usr/alice`, `/n/files`, `/phone`), as Plan 9 gives
 * each process its own namespace.
 *
 * Two processes do it. The launcher ({@link launch}, run as root) starts
 * Ferry again under util-linux `unshare --mount --propagation private`, so
 * nothing it mounts is seen outside; that second process composes the
 * namespace, builds the view (see view.ts), mounts, and runs COMMAND
 * through `setpriv` as the account ({@link runInView}), serving FUSE until
 * COMMAND exits. When it exits (or is killed) the mounts go with the
 * namespace's last process. COMMAND's exit status is logon's.
 *
 * @module
 */

import type { Namespace } from "../ns/namespace.ts";
import { type FuseMount, mountTree } from "../fuse/mount.ts";
import { ferryArgv } from "../self.ts";
import type { Account } from "./account.ts";
import { buildView, outermost, planView, type View } from "./view.ts";
import type { Node } from "../fs/tree.ts";
import { QTDIR } from "../styx/types.ts";
import { mountNamespace } from "./sys.ts";

/** Set by the launcher for the second process: the launcher's mount namespace. */
export const OUTER_NS_ENV = "FERRY_LOGON_OUTER_NS";

/**
 * True in the process the launcher started: it runs in a mount namespace
 * other than the launcher's.
 */
export function inPrivateNamespace(): boolean {
  const outer = Deno.env.get(OUTER_NS_ENV);
  return outer !== undefined && outer !== "" && outer !== mountNamespace();
}

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
 * down and the stage removed. A group signal (`timeout`, a closed terminal)
 * reaches this process twice, once from the launcher.
 */
class Signals {
  /** The first SIGTERM or SIGHUP that came before there was a command to pass it to. */
  pending: Deno.Signal | undefined;
  #child: Deno.ChildProcess | undefined;
  readonly #handlers: [Deno.Signal, () => void][];

  constructor() {
    const ignore = () => {};
    const pass = (sig: Deno.Signal) => () => {
      if (!this.#child) {
        this.pending ??= sig;
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

/** Wait for `child` with {@link Signals} in place. */
async function waitFor(child: Deno.ChildProcess): Promise<number> {
  const signals = new Signals();
  try {
    return await signals.wait(child);
  } finally {
    signals.release();
  }
}

/**
 * Start `ferry logon ARGS` again in a new private mount namespace and
 * return its exit status. Needs root (or CAP_SYS_ADMIN).
 */
export async function launch(args: readonly string[]): Promise<number> {
  if (Deno.uid() !== 0) {
    throw new Error(
      "a private mount namespace needs root: run 'ferry logon … -- COMMAND' as root " +
        "(through sudo at an SSH logon, see the README); the command itself runs as the user's account",
    );
  }
  const child = new Deno.Command("unshare", {
    args: ["--mount", "--propagation", "private", "--", ...ferryArgv(), "logon", ...args],
    env: { [OUTER_NS_ENV]: mountNamespace() },
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return await waitFor(child);
}

/**
 * True when `ferry logon ARGS` asks for a private mount namespace (a `--`
 * or `--ssh` among its options, no --help) and this process is not yet in
 * one: then Ferry can start itself there before loading anything else.
 */
export function launchesAtOnce(args: readonly string[]): boolean {
  const dashes = args.indexOf("--");
  const own = dashes < 0 ? args : args.slice(0, dashes);
  if (own.includes("-h") || own.includes("--help")) return false;
  return (dashes >= 0 || own.includes("--ssh")) && !inPrivateNamespace();
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
  /** The host account COMMAND runs as (never uid 0). */
  account: Account;
  /** The command and its arguments. */
  command: readonly string[];
  /** Told about each mount made (default: nothing). */
  onMount?: (target: string) => void;
  /** Told about each mount point left out, and why (default: nothing). */
  onSkip?: (target: string, why: string) => void;
}

/**
 * In a private mount namespace, as root: mount every outermost mount point
 * of `ns` at its own path, run the command as the account, serve until it
 * exits, then take everything down. Returns the command's exit status.
 */
export async function runInView(ns: Namespace, opts: ViewOptions): Promise<number> {
  const { account } = opts;
  if (account.uid === 0) {
    throw new Error(
      `host account '${account.name}' is root: logon never runs a command as root; ` +
        `set 'account' for user '${opts.user}' in the manifest to an unprivileged account`,
    );
  }
  // Only directories can be mounted on directories: a file bound on a file
  // stays visible only to Ferry's own shell.
  const nodes = new Map<string, Node>();
  await Promise.all(
    outermost(ns.mounts().map((m) => m.target)).map(async (target) => {
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
  const signals = new Signals();
  const stage = await Deno.makeTempDir({ prefix: "ferry-logon-" });
  let view: View | undefined;
  const mounts: FuseMount[] = [];
  try {
    view = await buildView(await planView([...nodes.keys()]), stage);
    const v = view;
    await Promise.all([...v.paths].map(async ([target, at]) => {
      const node = nodes.get(target)!;
      const m = await mountTree(node, at, {
        uid: account.uid,
        gid: account.gid,
        allowOther: true,
        fsname: `ferry-logon:${opts.user}`,
      });
      mounts.push(m);
      opts.onMount?.(target);
    }));
    if (signals.pending) return 128 + (SIGNALS[signals.pending] ?? 0);
    return await spawnAs(account, opts.command, v.root, signals);
  } finally {
    await Promise.allSettled(mounts.map((m) => m.close()));
    if (view) await view.close();
    else await Deno.remove(stage).catch(() => {});
    signals.release();
  }
}

async function spawnAs(
  account: Account,
  command: readonly string[],
  root: string,
  signals: Signals,
): Promise<number> {
  const env = Deno.env.toObject();
  for (const k of Object.keys(env)) {
    if (k.startsWith("SUDO_") || k === OUTER_NS_ENV) delete env[k];
  }
  Object.assign(env, {
    HOME: account.home,
    USER: account.name,
    LOGNAME: account.name,
    SHELL: account.shell,
    PATH: env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
  });
  // The home directory as the command will see it (under the mounts).
  let wd = "/";
  try {
    if ((await Deno.stat(root === "/" ? account.home : root + account.home)).isDirectory) {
      wd = account.home;
    }
  } catch { /* no home: start at / */ }
  const setpriv = [
    "setpriv",
    `--reuid=${account.uid}`,
    `--regid=${account.gid}`,
    "--init-groups",
    "--",
    ...command,
  ];
  const args = root === "/" ? setpriv : ["unshare", `--root=${root}`, `--wd=${wd}`, ...setpriv];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(args[0]!, {
      args: args.slice(1),
      env,
      clearEnv: true,
      cwd: root === "/" ? wd : "/",
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (e) {
    throw new Error(`cannot run '${command[0]}': ${(e as Error).message}`);
  }
  return await signals.wait(child);
}
