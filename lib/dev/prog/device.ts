/**
 * The /prog device (`#p`), following Inferno's prog(3) as far as a host
 * allows: one directory per host process (from Linux's /proc) holding
 *
 * - `status`: one line, "pid pgrp user state memoryK command", as Inferno
 *   prints it (the state is a word: ready, sleep, disk, stopped, exiting...);
 * - `cmdline`: the arguments, separated by blanks;
 * - `wait`: a read blocks until the process ends, then gives
 *   "pid 'command' exited";
 * - `ctl`: `kill` (SIGKILL to the process) and `killgrp` (to its process
 *   group); only the process's owner (the caller's user name equals the
 *   process's user name) or a member of an admin group may write it,
 *   everyone else gets "permission denied". `killgrp` checks every process
 *   in the group the same way and, when one fails, kills none and names it;
 * - `ns`: the namespace of Ferry's own processes, when a hook supplies it.
 *
 * @example
 * ```ts
 * import { ProgDevice } from "./device.ts";
 * const root = await new ProgDevice().tree().attach({ user: "glenda" }, "");
 * const { node } = await root.walk([String(Deno.pid), "status"]);
 * const f = await node!.open(0);
 * const line = new TextDecoder().decode(await f.read(0n, 256));
 * if (!line.trim().startsWith(String(Deno.pid))) throw new Error(line);
 * await f.close();
 * ```
 *
 * @module
 */

import {
  type Command,
  type Ctx,
  dir,
  type DirEntry,
  type Entry,
  file,
  runCtl,
  SynthTree,
  textFile,
} from "../../fs/synthetic.ts";
import { type Caller, type Tree, withSignal } from "../../fs/tree.ts";
import { type HostUsers, hostUsers } from "../../fs/users.ts";
import { Ename, StyxError } from "../../styx/types.ts";
import { listPids, type ProcInfo, readProc, STATE_WORDS } from "./procfs.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Options for {@link ProgDevice}. */
export interface ProgOptions {
  /** Groups whose members may kill any process (default none). */
  adminGroups?: string[];
  /** Where the process file system is (default "/proc"). */
  procRoot?: string;
  /** The namespace text of a Ferry process, for its `ns` file; undefined hides the file. */
  nsOf?: (pid: number) => string | undefined;
  /** How often a `wait` read checks whether its process has ended (default 200 ms). */
  pollMs?: number;
  /** Sends a signal; default Deno.kill (a negative pid is a process group). */
  kill?: (pid: number, signal: Deno.Signal) => void;
}

const GONE = "process exited";

/** The status line of a process, as /prog/N/status gives it. */
export function statusLine(p: ProcInfo, user: string): string {
  const state = STATE_WORDS[p.stateLetter] ?? p.stateLetter;
  const cmd = p.argv[0] !== undefined ? p.argv[0].split("/").at(-1) ?? p.name : p.name;
  return `${String(p.pid).padStart(8)} ${String(p.pgrp).padStart(8)} ${user.padStart(10)} ${
    state.padStart(10)
  } ${String(p.rssKiB).padStart(5)}K ${cmd}\n`;
}

/** The /prog device over the host's processes. */
export class ProgDevice {
  readonly #opts: ProgOptions;
  readonly #tree: SynthTree;
  #users: HostUsers | undefined;

  /** A device showing the host's processes. */
  constructor(opts: ProgOptions = {}) {
    this.#opts = opts;
    this.#tree = new SynthTree(dir("", (ctx) => this.#list(ctx)), {
      uid: "prog",
      checkPerm: false,
    });
  }

  /** The device as a tree. */
  tree(): Tree {
    return this.#tree;
  }

  /** True when `caller` may kill a process owned by `owner`. */
  mayKill(caller: Caller, owner: string): boolean {
    if (caller.user === owner) return true;
    const admin = this.#opts.adminGroups ?? [];
    return (caller.groups ?? []).some((g) => admin.includes(g));
  }

  async #userName(uid: number): Promise<string> {
    this.#users ??= await hostUsers();
    return this.#users.userName(uid);
  }

  get #root(): string {
    return this.#opts.procRoot ?? "/proc";
  }

  async #list(_ctx: Ctx): Promise<Entry[]> {
    const pids = await listPids(this.#root);
    const entries = await Promise.all(pids.map(async (pid) => {
      const p = await readProc(pid, this.#root);
      if (p === null || p.uid < 0) return null;
      return this.#procDir(pid, await this.#userName(p.uid), p.start);
    }));
    return entries.filter((e): e is DirEntry => e !== null);
  }

  async #info(pid: number, start: string): Promise<ProcInfo> {
    const p = await readProc(pid, this.#root);
    if (!p || p.start !== start) throw new StyxError(GONE);
    return p;
  }

  #signal(pid: number, target: number, sig: Deno.Signal): void {
    const kill = this.#opts.kill ?? ((p: number, s: Deno.Signal) => Deno.kill(p, s));
    try {
      kill(target, sig);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new StyxError(GONE);
      if (e instanceof Deno.errors.PermissionDenied) throw new StyxError(Ename.perm);
      const msg = e instanceof Error ? e.message : String(e);
      if (/EPERM|not permitted/i.test(msg)) throw new StyxError(Ename.perm);
      if (/ESRCH|no such process/i.test(msg)) throw new StyxError(GONE);
      throw new StyxError(`cannot signal process ${pid}: ${msg}`);
    }
  }

  #procDir(pid: number, user: string, start: string): DirEntry {
    const ro = { uid: user, perm: 0o444 };
    const table: Command[] = [
      {
        name: "kill",
        run: async (_a, ctx) => {
          await this.#info(pid, start);
          if (!this.mayKill(ctx.caller, user)) throw new StyxError(Ename.perm);
          this.#signal(pid, pid, "SIGKILL");
        },
      },
      {
        name: "killgrp",
        run: async (_a, ctx) => {
          const p = await this.#info(pid, start);
          if (!this.mayKill(ctx.caller, user)) throw new StyxError(Ename.perm);
          if (p.pgrp <= 1) throw new StyxError(`process ${pid} has no group to kill`);
          await this.#checkGroup(ctx.caller, p.pgrp);
          this.#signal(pid, -p.pgrp, "SIGKILL");
        },
      },
    ];
    const kids: Entry[] = [
      textFile("status", async () => statusLine(await this.#info(pid, start), user), ro),
      textFile("cmdline", async () => {
        const p = await this.#info(pid, start);
        return (p.argv.length > 0 ? p.argv.join(" ") : p.name) + "\n";
      }, ro),
      file("wait", () => {
        let done = false;
        return {
          read: async (_off, _count, ctx) => {
            if (done) return new Uint8Array(0);
            const p = await readProc(pid, this.#root);
            const cmd = p?.name ?? "?";
            await withSignal(this.#waitGone(pid, start, ctx.signal), ctx.signal);
            done = true;
            return enc.encode(`${pid} '${cmd}' exited\n`);
          },
        };
      }, ro),
      file("ctl", () => ({
        write: async (_off, data, ctx) => {
          await runCtl(dec.decode(data), table, ctx);
          return data.length;
        },
      }), { uid: user, perm: 0o200 }),
    ];
    const ns = this.#opts.nsOf?.(pid);
    if (ns !== undefined) {
      kids.push(textFile("ns", () => this.#opts.nsOf?.(pid) ?? "", ro));
    }
    return dir(String(pid), kids, { uid: user, perm: 0o555, id: start });
  }

  /**
   * Refuse, naming the first process that fails, unless `caller` may kill
   * every process in group `pgrp`. A process that joins the group between
   * this check and the signal is not checked: the kernel offers no way to
   * signal a group only if it is unchanged.
   */
  async #checkGroup(caller: Caller, pgrp: number): Promise<void> {
    for (const other of await listPids(this.#root)) {
      const q = await readProc(other, this.#root);
      if (q === null || q.pgrp !== pgrp) continue;
      const owner = q.uid < 0 ? "?" : await this.#userName(q.uid);
      if (!this.mayKill(caller, owner)) {
        throw new StyxError(
          `${Ename.perm}: process ${other} in group ${pgrp} belongs to '${owner}'; nothing killed`,
        );
      }
    }
  }

  async #waitGone(pid: number, start: string, signal?: AbortSignal): Promise<void> {
    const ms = this.#opts.pollMs ?? 200;
    for (;;) {
      if (signal?.aborted) throw new StyxError(Ename.interrupted);
      const p = await readProc(pid, this.#root);
      if (!p || p.start !== start || p.stateLetter === "Z" || p.stateLetter === "X") return;
      await new Promise((r) => setTimeout(r, ms));
    }
  }
}
