/**
 * Build a namespace from manifest entries, as Inferno's newns(2) does from
 * a namespace(6) file: `mount NODE!EXPORT` dials the node (through the
 * `net` export of its `via` node when it has one) with mutual TLS as the
 * user, and attaches with the export's name. Every node is dialed once and
 * all dials run at the same time; entries are then applied in order. An
 * entry that fails is reported and the rest still applied, unless its
 * mount point is one of the user's `required` ones. Every mount recovers
 * (as `mount -r` does): when a node goes away, its mounts fail with
 * "'/n/x' is no longer connected (...)", its connection is redialled with
 * backoff, and use carries on once it is back (see lib/styx/client_recover.ts).
 *
 * @module
 */

import { Namespace } from "../ns/namespace.ts";
import type { DeviceFactory } from "../ns/devices.ts";
import { MemTree } from "../fs/memory.ts";
import type { Tree } from "../fs/tree.ts";
import { DMDIR, Ename, OREAD, StyxError } from "../styx/types.ts";
import { RecoveringTree, type StyxClient } from "../styx/client.ts";
import { type Credentials, defaultCertsDir, loadCredentials } from "../auth/link.ts";
import { dialStyx } from "../net/connect.ts";
import { dialStyxVia } from "../net/nsdial.ts";
import { expand } from "./nsfile.ts";
import { netExportOf, resolveSource } from "./check.ts";
import type { Manifest, NodeSpec, NsEntry } from "./schema.ts";

/** Options for {@link applyNamespace} and {@link logon}. */
export interface ApplyOptions {
  /** The user the namespace is for (and whose credentials dial). */
  user: string;
  /** Credentials to dial with (else loaded from `certDir` for `user`). */
  creds?: Credentials;
  /** Directory holding `user`'s credentials. */
  certDir?: string;
  /** The namespace's root directory on this host (see Namespace.standard). */
  rootDir?: string;
  /**
   * The namespace's devices besides `#U` (see cmd/devices.ts); `#I` is bound
   * on /net and `#p` on /prog when present. Default: none.
   */
  devices?: ReadonlyMap<string, DeviceFactory>;
  /** $home (default the user's `home`, else "/usr/USER"). */
  home?: string;
  /** Mount points whose entries must succeed. */
  required?: readonly string[];
  /** Give up on one dial after this long (default 10 s). */
  timeoutMs?: number;
  /** Told about each entry as it is applied (default: nothing). */
  onEntry?: (r: EntryReport) => void;
  /** Print Styx messages on stderr. */
  trace?: boolean;
  /**
   * Dial through this dialer (made for the same manifest, user and
   * credentials), whose links may already be under way (see
   * {@link dialAhead}); the caller closes it. Default: a dialer of its own.
   */
  dialer?: NodeDialer;
}

/** What became of one entry. */
export interface EntryReport {
  entry: NsEntry;
  /** The line after $user and $home expansion. */
  line: string;
  ok: boolean;
  /** Why it failed. */
  error?: string;
}

/** A composed namespace and the connections under it. */
export interface Composed {
  ns: Namespace;
  /** Every entry, in order, with its outcome. */
  report: EntryReport[];
  /** The current directory the entries left (`cd`). */
  cwd: string;
  /** Unmount everything and hang up every connection. */
  close(): Promise<void>;
}

interface Link {
  tree: Tree;
  close(): Promise<void>;
}

/**
 * Dials nodes once each, concurrently, through `via` chains when needed.
 * Each link redials its node when the connection is lost.
 */
export class NodeDialer {
  readonly #links = new Map<string, Promise<Link>>();
  readonly #viaSpaces = new Map<string, Promise<Namespace>>();
  readonly #addressLinks: Link[] = [];
  constructor(
    readonly manifest: Manifest,
    readonly creds: Credentials,
    readonly user: string,
    readonly opts: { timeoutMs?: number; trace?: boolean } = {},
  ) {}

  /** A Styx connection to `node` (made on first use, shared after). */
  link(node: NodeSpec): Promise<Link> {
    let p = this.#links.get(node.name);
    if (!p) {
      p = this.#dial(node, [node.name]);
      p.catch(() => {});
      this.#links.set(node.name, p);
    }
    return p;
  }

  /**
   * A namespace whose /net is `node`'s net export, for dialing past it
   * (made once per node; it follows the node's link through losses).
   */
  netSpace(node: NodeSpec): Promise<Namespace> {
    let p = this.#viaSpaces.get(node.name);
    if (!p) {
      p = this.#netSpace(node);
      p.catch(() => this.#viaSpaces.delete(node.name));
      this.#viaSpaces.set(node.name, p);
    }
    return p;
  }

  async #netSpace(node: NodeSpec): Promise<Namespace> {
    const net = netExportOf(node);
    if (!net) throw new Error(`Node '${node.name}' has no export of kind 'net' to reach through`);
    const link = await this.link(node);
    const root = new MemTree();
    await root.mkdirp("/net");
    const ns = new Namespace(root, { caller: { user: this.user } });
    await ns.mount(link.tree, "/net", { source: `${node.name}!${net.name}`, aname: net.name });
    return ns;
  }

  async #dial(node: NodeSpec, seen: string[]): Promise<Link> {
    const tree = await RecoveringTree.connect({
      dial: () => this.#connect(node, seen),
      uname: this.user,
      address: node.address,
    });
    return { tree, close: () => tree.close() };
  }

  /** A new Styx connection to `node`, as `user`, with mutual TLS. */
  async #connect(node: NodeSpec, seen: string[]): Promise<StyxClient> {
    const ms = this.opts.timeoutMs ?? 10_000;
    const signal = AbortSignal.timeout(ms);
    const what = `cannot reach node '${node.name}' at '${node.address}'`;
    try {
      if (node.via !== undefined) {
        const hop = this.manifest.nodes.get(node.via);
        if (!hop) throw new Error(`unknown 'via' node '${node.via}'`);
        if (seen.includes(hop.name)) throw new Error(`'via' cycle through '${hop.name}'`);
        const ns = await this.netSpace(hop);
        const d = await dialStyxVia(ns, node.address, {
          insecure: false,
          creds: this.creds,
          peer: node.name,
          user: this.user,
          signal,
          trace: this.opts.trace,
        });
        return d.client;
      }
      const d = await dialStyx(node.address, {
        insecure: false,
        creds: this.creds,
        peer: node.name,
        user: this.user,
        timeoutMs: ms,
        signal,
        trace: this.opts.trace,
      });
      return d.client;
    } catch (e) {
      throw new Error(`${what}: ${(e as Error).message}`);
    }
  }

  /**
   * Dial a dial string through `ns`'s /net (so an earlier mount of a remote
   * /net carries it), expecting the certificate of `peer` (default: the
   * dialled host). Hung up by {@link close}.
   */
  async address(ns: Namespace, addr: string, opts: { peer?: string; alg?: string }): Promise<Link> {
    const d = await dialStyxVia(ns, addr, {
      insecure: false,
      creds: this.creds,
      peer: opts.peer,
      alg: opts.alg,
      user: this.user,
      signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10_000),
      trace: this.opts.trace,
    });
    const link = { tree: d.tree, close: async () => await d.close() };
    this.#addressLinks.push(link);
    return link;
  }

  /** Hang up every connection. */
  async close(): Promise<void> {
    await Promise.allSettled(this.#addressLinks.splice(0).map((l) => l.close()));
    const spaces = [...this.#viaSpaces.values()];
    await Promise.allSettled(spaces.map(async (p) => (await p).close()));
    for (const p of this.#links.values()) {
      await p.then((l) => l.close(), () => {});
    }
  }
}

/** Make directory `p` and its parents in `ns` when missing. */
async function mkdirs(ns: Namespace, p: string): Promise<void> {
  const names = p.split("/").filter((n) => n !== "");
  let cur = "";
  for (const n of names) {
    cur += `/${n}`;
    try {
      await ns.stat(cur);
    } catch (e) {
      if (!(e instanceof StyxError && e.message === Ename.notFound)) throw e;
      const f = await ns.create(cur, DMDIR | 0o755, OREAD);
      await f.close();
    }
  }
}

/**
 * Apply `entries` to a fresh standard namespace for `opts.user` (with '#I'
 * on /net and '#p' on /prog when `opts.devices` has them, as `ferry sh`
 * starts). Throws only when a
 * required entry fails (after closing what it made); every other failure is
 * in the report.
 *
 * @example
 * ```ts ignore
 * const c = await applyNamespace(m, m.users.get("alice")!.namespace, { user: "alice", certDir: "certs" });
 * for (const r of c.report) if (!r.ok) console.error(r.line, r.error);
 * await c.close();
 * ```
 */
export async function applyNamespace(
  m: Manifest,
  entries: readonly NsEntry[],
  opts: ApplyOptions,
): Promise<Composed> {
  const user = opts.user;
  const home = opts.home ?? m.users.get(user)?.home ?? `/usr/${user}`;
  const creds = opts.creds ?? await loadCredentials(opts.certDir ?? defaultCertsDir(), user);
  const dialer = opts.dialer ?? new NodeDialer(m, creds, user, opts);
  const devices = opts.devices ?? new Map();
  const ns = await Namespace.standard({ user, rootDir: opts.rootDir, devices });
  for (const [dev, at] of [["#I", "/net"], ["#p", "/prog"]] as const) {
    if (devices.has(dev)) await ns.bind(dev, at).catch(() => {});
  }
  const close = async () => {
    await ns.close().catch(() => {});
    if (!opts.dialer) await dialer.close();
  };
  const required = new Set(opts.required ?? m.users.get(user)?.required ?? []);
  const vars = { user, home };
  // Expand and start every dial first, so connections are made side by side.
  const prepared = entries.map((e) => {
    try {
      const args = e.args.map((a) => expand(a, vars));
      let src: ReturnType<typeof resolveSource> | undefined;
      if (e.op === "mount") {
        src = resolveSource(m, args[0]!);
        if (src.kind === "export") dialer.link(src.node);
      }
      return { e, args, src };
    } catch (err) {
      return { e, args: e.args, error: (err as Error).message };
    }
  });
  const report: EntryReport[] = [];
  let cwd = "/";
  try {
    for (const p of prepared) {
      const line = [p.e.op, ...flagsOf(p.e), ...p.args].join(" ");
      const r: EntryReport = { entry: p.e, line, ok: true };
      try {
        if ("error" in p && p.error !== undefined) throw new Error(p.error);
        await applyOne(ns, dialer, p.e, p.args, p.src, (d) => (cwd = d));
      } catch (err) {
        r.ok = false;
        r.error = (err as Error).message;
      }
      report.push(r);
      opts.onEntry?.(r);
      const target = p.e.op === "unmount" ? p.args[p.args.length - 1] : p.args[1];
      if (!r.ok && target !== undefined && required.has(target)) {
        throw new Error(
          `Required entry '${line}' (${p.e.where.file}:${p.e.where.line}) failed: ${r.error}`,
        );
      }
    }
  } catch (e) {
    await close();
    throw e;
  }
  return { ns, report, cwd, close };
}

function flagsOf(e: NsEntry): string[] {
  const f = (e.before ? "b" : "") + (e.after ? "a" : "") + (e.create ? "c" : "") +
    (e.recover ? "r" : "") + (e.insecure ? "A" : "");
  return [
    ...(f ? [`-${f}`] : []),
    ...(e.alg ? ["-C", e.alg] : []),
    ...(e.peer ? ["--peer", e.peer] : []),
  ];
}

async function applyOne(
  ns: Namespace,
  dialer: NodeDialer,
  e: NsEntry,
  args: string[],
  src: ReturnType<typeof resolveSource> | undefined,
  cd: (dir: string) => void,
): Promise<void> {
  const flags = { before: e.before, after: e.after, create: e.create };
  switch (e.op) {
    case "bind":
      if (!args[1]!.startsWith("#")) await mkdirs(ns, args[1]!);
      await ns.bind(args[0]!, args[1]!, flags);
      return;
    case "mount": {
      if (e.insecure) throw new Error("mount -A is refused: manifest mounts always use mutual TLS");
      if (src?.kind === "address") {
        const link = await dialer.address(ns, src.address, { peer: e.peer, alg: e.alg });
        await mkdirs(ns, args[1]!);
        await ns.mount(link.tree, args[1]!, {
          ...flags,
          source: args[0]!,
          aname: args[2] ?? "",
          peer: e.peer,
        });
        return;
      }
      if (e.peer !== undefined && src?.kind === "export" && e.peer !== src.node.name) {
        throw new Error(
          `'${
            args[0]
          }' is node '${src.node.name}' of this manifest: --peer '${e.peer}' does not apply (use a dial string)`,
        );
      }
      if (!src || src.kind !== "export") {
        throw new Error(`'${args[0]}' is not NODE!EXPORT of this manifest`);
      }
      const link = await dialer.link(src.node);
      const spec = args[2];
      const aname = spec === undefined || spec === ""
        ? src.export.name
        : `${src.export.name}/${spec}`;
      await mkdirs(ns, args[1]!);
      await ns.mount(link.tree, args[1]!, { ...flags, source: args[0]!, aname });
      return;
    }
    case "unmount":
      await ns.unmount(args.length === 2 ? args[0] : undefined, args[args.length - 1]!);
      return;
    case "cd":
      await ns.stat(args[0]!);
      cd(args[0]!);
      return;
    case "new":
    case "fork":
    case "nodev":
      // Each logon starts from a fresh namespace already; nothing to do.
      return;
  }
}

/**
 * Start dialing every node `user`'s namespace in `m` mounts from, through
 * `dialer`, without waiting: a later {@link logon} with the same dialer
 * finds the links made or under way. Entries that do not expand or resolve
 * are left for logon to report.
 */
export function dialAhead(m: Manifest, user: string, dialer: NodeDialer): void {
  const u = m.users.get(user);
  if (!u) return;
  const vars = { user, home: u.home ?? `/usr/${user}` };
  for (const e of u.namespace) {
    if (e.op !== "mount") continue;
    try {
      const src = resolveSource(m, expand(e.args[0]!, vars));
      if (src.kind === "export") dialer.link(src.node);
    } catch { /* reported by logon */ }
  }
}

/**
 * Compose `user`'s namespace from manifest `m` (their `namespace` entries
 * and `required` mount points).
 */
export async function logon(
  m: Manifest,
  user: string,
  opts: Omit<ApplyOptions, "user">,
): Promise<Composed> {
  const u = m.users.get(user);
  if (!u) {
    throw new Error(
      `Unknown user '${user}' in '${m.file}' (users: ${[...m.users.keys()].join(", ") || "none"})`,
    );
  }
  return await applyNamespace(m, u.namespace, {
    ...opts,
    user,
    home: opts.home ?? u.home,
    required: opts.required ?? u.required,
  });
}
