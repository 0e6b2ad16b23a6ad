/**
 * Per-process namespaces, as bind(1) describes them: a root tree plus a
 * mount table saying which trees answer at which paths.
 *
 * - `bind new old` (and `mount`) makes `old` show `new`, hiding what was
 *   there until `unmount`; with `before` or `after` the two make a union
 *   directory whose members are searched in order, so the first one holding a
 *   name wins; `create` marks the member where new files go.
 * - Mount points are canonical paths in the namespace, and every node
 *   remembers the path it was reached by, so ".." out of a mount point goes
 *   to the parent in the namespace, never to the parent on the server.
 * - `fork()` copies the table: the child's changes never reach the parent,
 *   nor the parent's the child.
 * - A namespace is itself a {@link Tree}: its nodes apply the mount table on
 *   every walk, so serving it over Styx shows the composed view, unions
 *   included.
 *
 * Two deliberate choices: mounts belong to namespace paths (a mount made at
 * `/a/x` is not seen through another path that reaches the same file), and
 * a mount point with a single member accepts new files without `-c`; only a
 * union needs a member marked `-c`.
 *
 * @example
 * ```ts
 * import { Namespace } from "./namespace.ts";
 * import { MemTree } from "../fs/memory.ts";
 * const root = new MemTree();
 * await root.mkdirp("/dis");
 * await root.writeFile("/usr/glenda/dis/hello", "mine");
 * await root.writeFile("/dis/ls", "system");
 * const ns = new Namespace(root, { caller: { user: "glenda" } });
 * await ns.bind("/usr/glenda/dis", "/dis", { before: true });
 * const names = (await ns.readDir("/dis")).map((d) => d.name).sort();
 * if (names.join() !== "hello,ls") throw new Error("no union");
 * await ns.close();
 * ```
 *
 * @module
 */

import { concatBytes } from "../bytes.ts";
import {
  type Caller,
  type Created,
  type Node,
  type OpenFile,
  type OpOptions,
  type Tree,
  type WalkResult,
  withoutOpenMode,
} from "../fs/tree.ts";
import { Ename, MAXWELEM, OEXEC, OREAD, OTRUNC, OWRITE, QTDIR, StyxError } from "../styx/types.ts";
import type { Dir, Qid } from "../styx/types.ts";
import { ConnectionLostError } from "../styx/client_lost.ts";
import {
  type Member,
  type MountEntry,
  type MountOrder,
  type MountPoint,
  MountTable,
  type PathNode,
  SharedNodes,
} from "./mount_table.ts";
import { cleanPath, joinNames, splitNames } from "./path.ts";
import { OwnedFile, UnionDir } from "./union.ts";
import {
  checkDeviceName,
  defaultRootDir,
  type DeviceFactory,
  hostDevice,
  prepareRootDir,
  splitDevicePath,
} from "./devices.ts";

export type { MountEntry } from "./mount_table.ts";
export type { DeviceFactory } from "./devices.ts";
export { cleanPath } from "./path.ts";

/** How a bind or mount joins what is at the mount point: -b, -a, -c. */
export interface BindFlags {
  /** -b: the new tree goes before what is there (its names win). */
  before?: boolean;
  /** -a: the new tree goes after what is there (existing names win). */
  after?: boolean;
  /** -c: new files created in the union go here. */
  create?: boolean;
}

/** Options of {@link Namespace.mount}. */
export interface MountFlags extends BindFlags {
  /** What to call the source in listings and in `unmount`, e.g. "tcp!host!8000". */
  source?: string;
  /** Attach name (spec) passed to the tree. */
  aname?: string;
  /** Recorded for listings: the mount was made with -A. */
  insecure?: boolean;
  /** Recorded for listings: the node the server had to prove it was (`--peer`). */
  peer?: string;
}

/** Options of {@link Namespace.standard}. */
export interface StandardOptions {
  /** User the namespace acts for. */
  user: string;
  /** Root directory on the host (like `emu -r`); default $FERRY_ROOT or ~/.ferry/root. */
  rootDir?: string;
  /** Devices by name besides `#U` (`#I`, `#p`…); a program lists its own (see cmd/devices.ts). */
  devices?: ReadonlyMap<string, DeviceFactory>;
}

/** Options of {@link Namespace.writeFile}. */
export interface WriteFileOptions extends OpOptions {
  /** Write at the end instead of replacing the contents. */
  append?: boolean;
  /** Create the file when it does not exist (default true). */
  create?: boolean;
}

interface Layer {
  node: Node;
  create: boolean;
}

/** A place in the namespace: the path it was reached by and the nodes answering there. */
interface Loc {
  names: string[];
  layers: Layer[];
  /** True at a mount point. */
  mounted: boolean;
  /** The mount table's node for this path (undefined: nothing mounted at or below). */
  at: PathNode | undefined;
  /** The table generation `at` was looked up in. */
  gen: number;
  /**
   * Set when `layers` are the members of mount point `point`, one layer per
   * slot as {@link Engine.through} counts them, in table generation `gen`.
   */
  slots?: { point: MountPoint; gen: number };
}

interface Walked {
  qids: Qid[];
  loc?: Loc;
}

function isNotFound(e: unknown): boolean {
  return e instanceof StyxError && e.message === Ename.notFound;
}

/**
 * True for the error of a mount whose server went away: it is never
 * mistaken for a missing name, nor hidden by another member of a union.
 */
function isLost(e: unknown): boolean {
  return e instanceof ConnectionLostError;
}

/** A tree reached over a connection that can be lost (a remote tree). */
interface Connected {
  /** Why the connection is gone ("ADDRESS: reason"), or undefined while it is up. */
  readonly lost: string | undefined;
  /** True for a tree that redials when the connection is lost (listed as mount -r). */
  readonly recovers?: boolean;
}

/** A mounted root that names its mount point in its errors (a remote tree's). */
interface MountAware {
  mountedOn(path: string): void;
}

async function closeLayers(layers: readonly Layer[]): Promise<void> {
  if (layers.length === 1) {
    try {
      await layers[0]!.node.close();
    } catch {
      // Closing releases; a failure leaves nothing to do.
    }
    return;
  }
  await Promise.allSettled(layers.map((l) => l.node.close()));
}

async function cloneNode(n: Node, opts?: OpOptions): Promise<Node> {
  const r = await n.walk([], opts);
  if (!r.node) throw new StyxError(Ename.notFound);
  return r.node;
}

/**
 * Walk `names` in the first layer that has names[0]. Throws when none has it;
 * returns a partial result when a later name is missing.
 */
function walkLayers(
  layers: readonly Layer[],
  names: string[],
  opts?: OpOptions,
): Promise<WalkResult> {
  // No async frame of its own for the common single layer: every walk comes here.
  if (layers.length === 1) return walkChunked(layers[0]!.node, names, opts);
  return walkUnion(layers, names, opts);
}

async function walkUnion(
  layers: readonly Layer[],
  names: string[],
  opts?: OpOptions,
): Promise<WalkResult> {
  let first: unknown;
  let lost: unknown;
  for (const l of layers) {
    let r: WalkResult;
    try {
      r = await tryWalkChunked(l.node, names, opts);
    } catch (e) {
      first ??= e;
      if (isLost(e)) lost ??= e;
      continue;
    }
    if (!isMiss(r)) return r;
  }
  throw lost ?? first ?? new StyxError(Ename.notFound);
}

/** True for the `{ qids: [] }` of a first name that is not there. */
function isMiss(r: WalkResult): boolean {
  return r.node === undefined && r.qids.length === 0;
}

/**
 * {@link walkChunked} in one member of a union: a missing first name is a
 * miss (`{ qids: [] }`), asked for without an exception where the tree can.
 */
function tryWalkChunked(node: Node, names: string[], opts?: OpOptions): Promise<WalkResult> {
  // No async frame of its own on the common path: a union asks this of every member.
  if (node.tryWalk && names.length <= MAXWELEM) return node.tryWalk(names, opts);
  return catchMiss(node, names, opts);
}

async function catchMiss(node: Node, names: string[], opts?: OpOptions): Promise<WalkResult> {
  try {
    return await walkChunked(node, names, opts);
  } catch (e) {
    if (isNotFound(e) && !isLost(e)) return { qids: [] };
    throw e;
  }
}

/**
 * What an open listing of a union says: for each member slot, the names it
 * holds (undefined: not known). Valid in the table generation it was read
 * in, while the listing stays open, and until the namespace changes a file.
 */
interface Listing {
  gen: number;
  names: (Set<string> | undefined)[];
  /** The open union directory it came from. */
  owner: object;
}

/** node.walk in pieces of at most MAXWELEM names. */
function walkChunked(node: Node, names: string[], opts?: OpOptions): Promise<WalkResult> {
  return names.length <= MAXWELEM ? node.walk(names, opts) : walkLong(node, names, opts);
}

async function walkLong(node: Node, names: string[], opts?: OpOptions): Promise<WalkResult> {
  opts = withoutOpenMode(opts); // only a walk's last node may be opened along with it
  const qids: Qid[] = [];
  let cur = node;
  try {
    for (let i = 0; i < names.length; i += MAXWELEM) {
      let r: WalkResult;
      try {
        r = await cur.walk(names.slice(i, i + MAXWELEM), opts);
      } catch (e) {
        if (i === 0) throw e;
        return { qids };
      }
      qids.push(...r.qids);
      if (!r.node) return { qids };
      if (cur !== node) await cur.close();
      cur = r.node;
    }
    const done = cur;
    cur = node;
    return { qids, node: done };
  } finally {
    if (cur !== node) await cur.close();
  }
}

/** Let go of the members' retained sources; only the last holder waits for their nodes to close. */
function releaseAll(members: readonly Member[]): Promise<unknown> | undefined {
  let waits: Promise<void>[] | undefined;
  for (let i = 0; i < members.length; i++) {
    const p = members[i]!.nodes?.release();
    if (p) (waits ??= []).push(p);
  }
  return waits && Promise.all(waits);
}

/** The path resolver shared by a namespace and the nodes it hands out. */
class Engine {
  #rootNode: Promise<Node> | null = null;
  /** Listings of unions held open: a walk skips the members they show lack a name. */
  #listings = new WeakMap<MountPoint, Listing>();
  /** How many listings are held, so that a walk with none open looks for none. */
  #listingCount = 0;

  constructor(
    readonly rootTree: Tree,
    readonly caller: Caller,
    readonly table: MountTable,
  ) {}

  #root(): Promise<Node> {
    this.#rootNode ??= this.rootTree.attach(this.caller, "").catch((e) => {
      this.#rootNode = null;
      throw e;
    });
    return this.#rootNode;
  }

  async closeRoot(): Promise<void> {
    const r = this.#rootNode;
    this.#rootNode = null;
    if (r) await (await r.catch(() => null))?.close();
  }

  /** The table node for `loc`, looked up again if the table changed since. */
  #at(loc: Loc): PathNode | undefined {
    const gen = this.table.generation;
    if (loc.gen !== gen) {
      loc.at = this.table.find(loc.names);
      loc.gen = gen;
    }
    return loc.at;
  }

  /** What an open listing of `point` says each member slot holds, if one is open and current. */
  #listed(point: MountPoint): (Set<string> | undefined)[] | undefined {
    if (this.#listingCount === 0) return undefined;
    const l = this.#listings.get(point);
    return l?.gen === this.table.generation ? l.names : undefined;
  }

  /** Keep what a listing of `point` showed, until {@link forget} or {@link forgetListings}. */
  remember(point: MountPoint, listing: Listing): void {
    if (!this.#listings.has(point)) this.#listingCount++;
    this.#listings.set(point, listing);
  }

  /** The listing of `point` made by `owner` is closed. */
  forget(point: MountPoint, owner: object): void {
    if (this.#listings.get(point)?.owner !== owner) return;
    this.#listings.delete(point);
    this.#listingCount--;
  }

  /** A name was made or renamed through the namespace: what every listing said is stale. */
  forgetListings(): void {
    this.#listings = new WeakMap();
    this.#listingCount = 0;
  }

  /** The namespace root, with a mount on "/" applied. */
  async rootLoc(opts?: OpOptions): Promise<Loc> {
    const root = await this.#root();
    const at = this.table.root;
    const gen = this.table.generation;
    if (at.point) {
      return await this.enter(
        [],
        at,
        async () => [{ node: await cloneNode(root, opts), create: false }],
        opts,
      );
    }
    const layers = [{ node: await cloneNode(root, opts), create: false }];
    return { names: [], layers, mounted: false, at, gen };
  }

  /**
   * The members of the mount point at `at`, each cloned; `under` yields the
   * directory that was there before, when the union keeps it.
   */
  async enter(
    names: string[],
    at: PathNode,
    under: () => Promise<Layer[]>,
    opts?: OpOptions,
  ): Promise<Loc> {
    const gen = this.table.generation;
    const point = at.point;
    if (!point) throw new StyxError(Ename.notFound);
    const members = point.members;
    for (const m of members) m.nodes?.retain();
    try {
      const parts = await Promise.allSettled(members.map(async (m): Promise<Layer[]> => {
        if (m.nodes === null) return await under();
        const out: Layer[] = [];
        try {
          for (const n of m.nodes.nodes) {
            out.push({ node: await cloneNode(n, opts), create: m.create });
          }
        } catch (e) {
          await closeLayers(out);
          throw e;
        }
        return out;
      }));
      const layers: Layer[] = [];
      let first: unknown;
      for (const p of parts) {
        if (p.status === "fulfilled") layers.push(...p.value);
        else if (isLost(p.reason) && !isLost(first)) first = p.reason;
        else first ??= p.reason;
      }
      if (layers.length === 0) throw first ?? new StyxError(Ename.notFound);
      const slots = members.reduce((n, m) => n + (m.nodes?.nodes.length ?? 1), 0);
      const loc: Loc = { names, layers, mounted: true, at, gen };
      if (first === undefined && layers.length === slots) loc.slots = { point, gen };
      return loc;
    } finally {
      const w = releaseAll(members);
      if (w) await w;
    }
  }

  /** Resolve absolute `names` from the root; the whole path must exist. */
  async resolveNames(names: string[], opts?: OpOptions): Promise<Loc> {
    const at = this.table.root;
    const o = withoutOpenMode(opts);
    if (names.length > 0 && !at.point) {
      // Walk from the root node itself: no clone needed.
      const node = await this.#root();
      const gen = this.table.generation;
      const root: Loc = { names: [], layers: [{ node, create: false }], mounted: false, at, gen };
      const w = await this.walk(root, names, opts);
      if (!w.loc) throw new StyxError(Ename.notFound);
      return w.loc;
    }
    const root = await this.rootLoc(o);
    if (names.length === 0) return root;
    try {
      const w = await this.walk(root, names, opts);
      if (!w.loc) throw new StyxError(Ename.notFound);
      return w.loc;
    } finally {
      await closeLayers(root.layers);
    }
  }

  /**
   * Walk `run` from `cur`: `np` plain names to the directory holding mount
   * point `point`, the point's own name, then on down, without materialising
   * the union: the first member holding the name after the point wins. The
   * qids are the plain names', the mount point's, then the rest's. Throws
   * when the first plain name (with none, the mount point itself) cannot be
   * walked.
   *
   * The member that was there before the mount walks `run` from `cur` in
   * one go; the plain names are walked on their own only when another
   * member answers first.
   */
  async through(
    cur: Loc,
    run: string[],
    np: number,
    point: MountPoint,
    opts?: OpOptions,
  ): Promise<WalkResult> {
    // The table replaces a point's members, never changes them in place:
    // this array stays as it is across the awaits below.
    // Indexed loops: for-of costs an iterator per member in this async frame,
    // measurably so on a walk that every member is asked about.
    const members = point.members;
    for (let i = 0; i < members.length; i++) members[i]!.nodes?.retain();
    const name = run[np + 1]!;
    /** The names below the mount point, sliced when a member is asked. */
    let below: string[] | undefined;
    /** The plain names' qids, once walked (a partial walk leaves fewer). */
    let plainQids: Qid[] | undefined = np === 0 ? [] : undefined;
    let mountQid: Qid | undefined;
    let first: unknown;
    let lost: unknown;
    const known = this.#listed(point);
    let slot = 0;
    let found: WalkResult | undefined;
    try {
      for (let i = 0; i < members.length; i++) {
        const m = members[i]!;
        if (m.nodes === null) {
          slot++;
          let r: WalkResult;
          try {
            r = await walkLayers(cur.layers, run, opts);
          } catch (e) {
            if (np > 0) throw e; // the first plain name is not there
            first ??= e;
            continue;
          }
          const n = r.qids.length;
          if (n < np) return r; // the plain names stopped short
          if (n === np) {
            plainQids = r.qids; // no mount point's name here
            continue;
          }
          mountQid ??= r.qids[np]!;
          if (n === np + 1) {
            plainQids = r.qids.slice(0, np);
            continue;
          }
          r.qids[np] = mountQid;
          return r;
        }
        const nodes = m.nodes.nodes;
        for (let k = 0; k < nodes.length; k++) {
          const n = nodes[k]!;
          mountQid ??= n.qid;
          const here = known?.[slot];
          slot++;
          if (here ? !here.has(name) : n.lacks?.(name, opts) === true) continue;
          let r: WalkResult;
          try {
            r = await tryWalkChunked(n, below ??= run.slice(np + 1), opts);
          } catch (e) {
            first ??= e;
            if (isLost(e)) lost ??= e;
            continue;
          }
          if (isMiss(r)) continue;
          found = r;
          break;
        }
        if (found) break;
      }
    } finally {
      const w = releaseAll(members);
      if (w) await w;
    }
    let pq = plainQids;
    if (pq === undefined) {
      try {
        const r = await walkLayers(cur.layers, run.slice(0, np), opts);
        await r.node?.close();
        pq = r.qids;
      } catch (e) {
        await found?.node?.close();
        throw e;
      }
    }
    if (pq.length < np) {
      await found?.node?.close();
      return { qids: pq };
    }
    if (found) {
      found.qids.unshift(...pq, mountQid!);
      return found;
    }
    // Nothing answered below a mount whose server is gone: say so.
    if (lost !== undefined) throw lost;
    if (mountQid === undefined) {
      if (pq.length === 0 || isLost(first)) throw first ?? new StyxError(Ename.notFound);
      return { qids: pq };
    }
    return { qids: [...pq, mountQid] };
  }

  /**
   * Walk `names` from `start` (which stays the caller's), applying the mount
   * table at every step. Throws when names[0] cannot be walked; returns a
   * partial result when a later name cannot. ".." never climbs above the
   * first `floor` names.
   */
  async walk(start: Loc, names: string[], opts?: OpOptions, floor = 0): Promise<Walked> {
    // Only the walk that reaches the last name may carry openMode.
    const finalOpts = opts;
    opts = withoutOpenMode(opts);
    if (names.length === 0) {
      const layers: Layer[] = [];
      try {
        for (const l of start.layers) {
          layers.push({ node: await cloneNode(l.node, opts), create: l.create });
        }
      } catch (e) {
        await closeLayers(layers);
        throw e;
      }
      return { qids: [], loc: { ...start, layers } };
    }
    const qids: Qid[] = [];
    let cur = start;
    const advance = async (next: Loc) => {
      if (cur !== start) await closeLayers(cur.layers);
      cur = next;
    };
    const partial = (e: unknown): Walked => {
      if (qids.length === 0 || isLost(e)) throw e;
      return { qids };
    };
    try {
      let i = 0;
      while (i < names.length) {
        if (names[i] === "..") {
          let next: Loc;
          try {
            next = cur.names.length <= floor
              ? (await this.walk(cur, [], opts)).loc!
              : await this.resolveNames(cur.names.slice(0, -1), opts);
          } catch (e) {
            return partial(e);
          }
          qids.push(next.layers[0]!.node.qid);
          await advance(next);
          i++;
          continue;
        }
        // A run of names up to the next mount point or "..".
        const gen = this.table.generation;
        let at = this.#at(cur);
        let j = i;
        let point: MountPoint | undefined;
        while (j < names.length && names[j] !== "..") {
          at = at?.children.get(names[j]!);
          j++;
          if (at?.point) {
            point = at.point;
            break;
          }
        }
        const plainEnd = point ? j - 1 : j;
        // Names after the mount point, up to the next one or "..".
        let at2: PathNode | undefined = at;
        let k = j;
        let point2: MountPoint | undefined;
        while (point && k < names.length && names[k] !== "..") {
          at2 = at2?.children.get(names[k]!);
          k++;
          if (at2?.point) {
            point2 = at2.point;
            break;
          }
        }
        const afterEnd = point2 ? k - 1 : k;
        if (point && afterEnd > j) {
          // Through the mount point without cloning its members.
          const run = i === 0 && afterEnd === names.length ? names : names.slice(i, afterEnd);
          let r: WalkResult;
          try {
            r = await this.through(
              cur,
              run,
              plainEnd - i,
              point,
              !point2 && afterEnd === names.length ? finalOpts : opts,
            );
          } catch (e) {
            return partial(e);
          }
          qids.push(...r.qids);
          if (!r.node) return { qids };
          await advance({
            names: cur.names.concat(run),
            layers: [{ node: r.node, create: false }],
            mounted: false,
            at: point2 ? undefined : at2,
            gen: point2 ? -1 : gen,
          });
          i = afterEnd;
          continue;
        }
        let parent = cur;
        if (plainEnd > i) {
          const plain = names.slice(i, plainEnd);
          let r: WalkResult;
          try {
            r = await walkLayers(
              cur.layers,
              plain,
              !point && j === names.length ? finalOpts : opts,
            );
          } catch (e) {
            return partial(e);
          }
          qids.push(...r.qids);
          if (!r.node) return { qids };
          parent = {
            names: cur.names.concat(plain),
            layers: [{ node: r.node, create: false }],
            mounted: false,
            at: point ? undefined : at,
            gen: point ? -1 : gen,
          };
          await advance(parent);
        }
        i = j;
        if (!point) continue;
        const pointName = names[j - 1]!;
        const from = parent;
        let next: Loc;
        try {
          next = await this.enter(from.names.concat(pointName), at!, async () => {
            try {
              const r = await walkLayers(from.layers, [pointName], opts);
              return r.node ? [{ node: r.node, create: false }] : [];
            } catch {
              return [];
            }
          }, opts);
        } catch (e) {
          return partial(e);
        }
        qids.push(next.layers[0]!.node.qid);
        await advance(next);
      }
      const done = cur;
      if (done === start) return { qids, loc: (await this.walk(start, [], opts)).loc! };
      cur = start;
      return { qids, loc: done };
    } finally {
      if (cur !== start) await closeLayers(cur.layers);
    }
  }
}

/** A node of the namespace: it remembers its path and applies the mount table on walks. */
class NsNode implements Node {
  readonly #engine: Engine;
  readonly #loc: Loc;
  readonly #floor: number;
  readonly #caller: Caller | undefined;
  #closed = false;

  /**
   * `floor`: how many leading names ".." cannot climb above (the root of an
   * export). `caller`: who a served node acts for; every operation passes it
   * on, so the trees below check the client, not the namespace's owner.
   */
  constructor(engine: Engine, loc: Loc, floor = 0, caller?: Caller) {
    this.#engine = engine;
    this.#loc = loc;
    this.#floor = floor;
    this.#caller = caller;
  }

  #opts(opts?: OpOptions): OpOptions | undefined {
    return this.#caller === undefined ? opts : { ...opts, caller: this.#caller };
  }

  get qid(): Qid {
    return this.#loc.layers[0]!.node.qid;
  }

  /** The canonical namespace path of this node. */
  get path(): string {
    return joinNames(this.#loc.names);
  }

  /** Hand the underlying nodes over (for a bind source); this node is then closed. */
  take(): Node[] {
    this.#closed = true;
    return this.#loc.layers.map((l) => l.node);
  }

  #check(): void {
    if (this.#closed) throw new StyxError(Ename.badFid);
  }

  async walk(names: string[], opts?: OpOptions): Promise<WalkResult> {
    this.#check();
    opts = this.#opts(opts);
    for (const n of names) {
      if (n === "" || n === "." || n.includes("/") || n.includes("\0")) {
        throw new StyxError(Ename.badName);
      }
    }
    const w = await this.#engine.walk(this.#loc, names, opts, this.#floor);
    return w.loc
      ? { qids: w.qids, node: new NsNode(this.#engine, w.loc, this.#floor, this.#caller) }
      : { qids: w.qids };
  }

  async open(mode: number, opts?: OpOptions): Promise<OpenFile> {
    this.#check();
    opts = this.#opts(opts);
    const layers = this.#loc.layers;
    if (layers.length === 1) return await layers[0]!.node.open(mode, opts);
    const how = mode & 3;
    if ((how !== OREAD && how !== OEXEC) || (mode & OTRUNC) !== 0) {
      throw new StyxError(Ename.isDir);
    }
    const opened = await Promise.allSettled(layers.map((l) => l.node.open(mode, opts)));
    const files: OpenFile[] = [];
    let first: unknown;
    for (const o of opened) {
      if (o.status === "fulfilled") files.push(o.value);
      else first ??= o.reason;
    }
    if (files.length === 0) throw first;
    const slots = this.#loc.slots;
    const engine = this.#engine;
    if (!slots || files.length !== layers.length || slots.gen !== engine.table.generation) {
      return new UnionDir(files, []);
    }
    // While this listing is open, walks through the union skip the members
    // it shows lack a name: listing a union and then walking each name
    // would otherwise ask every earlier member, a round trip each if remote.
    return new UnionDir(files, [], {
      listed: (owner, lists) => {
        const names = lists.map((l) => l && new Set(l.map((d) => d.name)));
        engine.remember(slots.point, { gen: slots.gen, owner, names });
      },
      closed: (owner) => {
        engine.forget(slots.point, owner);
      },
    });
  }

  async create(name: string, perm: number, mode: number, opts?: OpOptions): Promise<Created> {
    this.#check();
    opts = this.#opts(opts);
    const loc = this.#loc;
    let layer = loc.layers[0]!;
    if (loc.mounted && loc.layers.length > 1) {
      const marked = loc.layers.find((l) => l.create);
      if (!marked) {
        throw new StyxError(
          `mounted directory forbids creation: no member of union '${
            joinNames(loc.names)
          }' was bound with -c`,
        );
      }
      layer = marked;
      for (const l of loc.layers) {
        let r: WalkResult | undefined;
        try {
          r = await l.node.walk([name], opts);
        } catch {
          continue;
        }
        await r.node?.close();
        if (r.node) throw new StyxError(Ename.exists);
      }
    }
    this.#engine.forgetListings(); // a new name: what listings said is stale
    const c = await layer.node.create(name, perm, mode, opts);
    const child: Loc = {
      names: loc.names.concat(name),
      layers: [{ node: c.node, create: false }],
      mounted: false,
      at: undefined,
      gen: -1,
    };
    return { node: new NsNode(this.#engine, child, this.#floor, this.#caller), file: c.file };
  }

  async stat(opts?: OpOptions): Promise<Dir> {
    this.#check();
    const d = await this.#loc.layers[0]!.node.stat(this.#opts(opts));
    const last = this.#loc.names[this.#loc.names.length - 1];
    if (this.#loc.mounted && last !== undefined) d.name = last;
    return d;
  }

  async wstat(dir: Dir, opts?: OpOptions): Promise<void> {
    this.#check();
    if (dir.name !== "") this.#engine.forgetListings(); // a rename makes a new name
    await this.#loc.layers[0]!.node.wstat(dir, this.#opts(opts));
  }

  async remove(opts?: OpOptions): Promise<void> {
    this.#check();
    this.#closed = true;
    const [first, ...rest] = this.#loc.layers;
    try {
      await first!.node.remove(this.#opts(opts));
    } finally {
      await closeLayers(rest);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await closeLayers(this.#loc.layers);
  }
}

/** Turn a missing file into an error that names the path and its role. */
function named(role: string, p: string, e: unknown): Error {
  const msg = e instanceof Error ? e.message : String(e);
  return new Error(`${role[0]!.toUpperCase()}${role.slice(1)} '${p}': ${msg}`);
}

function orderOf(flags: BindFlags | undefined): MountOrder {
  if (flags?.before && flags?.after) {
    throw new Error("Cannot bind both before (-b) and after (-a); choose one");
  }
  return flags?.before ? "before" : flags?.after ? "after" : "replace";
}

function isDirQid(q: Qid): boolean {
  return (q.type & QTDIR) !== 0;
}

/**
 * A per-process namespace: a root tree and a mount table. It is itself a
 * {@link Tree}, so it can be served. Paths given to its methods are cleaned
 * with {@link cleanPath}; a path starting with '#' names a device directly.
 */
export class Namespace implements Tree {
  /** Who the namespace acts for: trees are attached and devices made as this caller. */
  readonly caller: Caller;
  #engine: Engine;
  readonly #devices: Map<string, DeviceFactory>;

  /** A namespace showing `root` at "/", with nothing mounted. */
  constructor(root: Tree, opts: { caller: Caller; devices?: ReadonlyMap<string, DeviceFactory> }) {
    this.caller = opts.caller;
    this.#engine = new Engine(root, opts.caller, new MountTable());
    this.#devices = new Map(opts.devices ?? []);
  }

  /**
   * The default namespace of a new shell: the host directory `rootDir`
   * (made on first use, with /n /tmp /usr /dev /net /prog) at "/", `#U` for
   * the host file system, and the devices in `opts.devices`.
   */
  static async standard(opts: StandardOptions): Promise<Namespace> {
    const dir = opts.rootDir ?? defaultRootDir();
    // Loaded here: the host tree brings node:fs, the slowest module a
    // one-shot command would load, and only a standard namespace needs it.
    const [{ HostTree }] = await Promise.all([import("../fs/host.ts"), prepareRootDir(dir)]);
    const root = new HostTree(dir);
    await root.ready();
    const devices = new Map(opts.devices ?? []);
    for (const name of devices.keys()) checkDeviceName(name);
    devices.set("#U", hostDevice(dir));
    return new Namespace(root, { caller: { user: opts.user }, devices });
  }

  /** Make `name` ('#' and one letter) stand for the trees `f` makes. */
  registerDevice(name: string, f: DeviceFactory): void {
    checkDeviceName(name);
    this.#devices.set(name, f);
  }

  /** A copy for a child process: from now on neither sees the other's changes. */
  fork(): Namespace {
    const child = new Namespace(this.#engine.rootTree, {
      caller: this.caller,
      devices: this.#devices,
    });
    child.#engine = new Engine(this.#engine.rootTree, this.caller, this.#engine.table.clone());
    return child;
  }

  /** Make the tree for device path `p` ('#U*' + "/home") and attach to it. */
  async #device(p: string, caller: Caller = this.caller): Promise<Node> {
    const { name, spec } = splitDevicePath(p);
    const f = this.#devices.get(name);
    if (!f) throw new Error(`Unknown device '${name}' in '${p}'`);
    const tree = await f(spec, caller);
    return await tree.attach(caller, "");
  }

  /** Resolve a bind target or source, naming it in the error. */
  async #resolveNamed(role: string, p: string): Promise<NsNode> {
    try {
      const n = await this.resolve(p);
      if (!(n instanceof NsNode)) throw new Error("a device path cannot be a mount point");
      return n;
    } catch (e) {
      throw named(role, p, e);
    }
  }

  async #attachAt(
    kind: "bind" | "mount",
    source: string,
    nodes: Node[],
    target: string,
    flags: MountFlags | undefined,
    aname = "",
    conn?: { lost?: () => string | undefined; recover: boolean },
  ): Promise<void> {
    let order: MountOrder;
    try {
      order = orderOf(flags);
      if (target.startsWith("#")) throw new Error(`Cannot ${kind} onto device path '${target}'`);
      const t = await this.#resolveNamed("mount point", target);
      try {
        const tdir = isDirQid(t.qid);
        const sdir = isDirQid(nodes[0]!.qid);
        if (tdir !== sdir) {
          throw new Error(
            `Cannot ${kind} ${sdir ? "directory" : "file"} '${source}' onto ${
              tdir ? "directory" : "file"
            } '${target}'`,
          );
        }
        if (order !== "replace" && !tdir) {
          throw new Error(`Cannot make a union at '${target}': it is not a directory`);
        }
      } finally {
        await t.close();
      }
    } catch (e) {
      await Promise.allSettled(nodes.map((n) => n.close()));
      throw e;
    }
    const member: Member = {
      source,
      kind,
      create: flags?.create ?? false,
      nodes: new SharedNodes(nodes),
    };
    if (aname !== "") member.aname = aname;
    if (conn?.lost) member.lost = conn.lost;
    if (conn?.recover) member.recover = true;
    if (kind === "mount" && flags?.insecure) member.insecure = true;
    if (kind === "mount" && flags?.peer) member.peer = flags.peer;
    const dropped = this.#engine.table.add(target, member, order);
    await Promise.allSettled(dropped.map((s) => s.release()));
  }

  /**
   * `bind [-b|-a] [-c] source target`: make `target` show `source`, a path in
   * this namespace (a union there brings all its members) or a device path
   * such as '#U*' + "/home". Both must exist; a directory binds onto a
   * directory and a file onto a file.
   */
  async bind(source: string, target: string, flags?: BindFlags): Promise<void> {
    const src = cleanPath(source);
    const tgt = cleanPath(target);
    let nodes: Node[];
    if (src.startsWith("#")) {
      try {
        nodes = [await this.#device(src)];
      } catch (e) {
        throw named("source", src, e);
      }
    } else {
      nodes = (await this.#resolveNamed("source", src)).take();
    }
    await this.#attachAt("bind", src, nodes, tgt, flags);
  }

  /**
   * `mount [-b|-a] [-c] tree target`: attach to `tree` (with `flags.aname`) and
   * put its root at `target`. `flags.source` names it in listings and for
   * `unmount` (e.g. the dial string).
   */
  async mount(tree: Tree, target: string, flags?: MountFlags): Promise<void> {
    const tgt = cleanPath(target);
    const aname = flags?.aname ?? "";
    const node = await tree.attach(this.caller, aname);
    // A remote root names its mount point once its server is gone.
    const aware = node as Node & Partial<MountAware>;
    if (typeof aware.mountedOn === "function") aware.mountedOn(tgt);
    const c = tree as Tree & Partial<Connected>;
    const conn = {
      lost: "lost" in tree ? () => c.lost : undefined,
      recover: c.recovers === true,
    };
    await this.#attachAt("mount", flags?.source ?? "-", [node], tgt, flags, aname, conn);
  }

  /**
   * `unmount [source] target`: take `source` (as given to bind or mount) out
   * of the mount point `target`, or everything mounted there when `source` is
   * undefined. What was hidden shows again. Throws when nothing matches.
   */
  async unmount(source: string | undefined, target: string): Promise<void> {
    const tgt = cleanPath(target);
    const src = source === undefined
      ? undefined
      : source.startsWith("/") || source.startsWith("#")
      ? cleanPath(source)
      : source;
    const dropped = this.#engine.table.remove(tgt, src);
    if (dropped === null) {
      if (src === undefined || !this.#engine.table.has(tgt)) {
        throw new Error(`Cannot unmount: '${tgt}' is not mounted`);
      }
      throw new Error(`Cannot unmount: '${src}' is not mounted on '${tgt}'`);
    }
    await Promise.allSettled(dropped.map((s) => s.release()));
  }

  /** The mount table as bind and mount lines, in an order that rebuilds it. */
  mounts(): MountEntry[] {
    return this.#engine.table.entries();
  }

  /**
   * The node at `path`, after every mount on the way. The caller closes it.
   * A device path ('#U*' + "/tmp") gives the device's own node.
   */
  async resolve(path: string, opts?: OpOptions): Promise<Node> {
    return await this.#resolveFloor(path, false, opts);
  }

  async #resolveFloor(path: string, rooted: boolean, opts?: OpOptions): Promise<Node> {
    // splitNames cleans as it splits; only device paths need cleanPath.
    if (path.startsWith("#")) return await this.#device(cleanPath(path), opts?.caller);
    const names = splitNames(path);
    const loc = await this.#engine.resolveNames(names, opts);
    return new NsNode(this.#engine, loc, rooted ? names.length : 0, opts?.caller);
  }

  async #with<T>(
    path: string,
    opts: OpOptions | undefined,
    f: (n: Node) => Promise<T>,
  ): Promise<T> {
    const n = await this.resolve(path, opts);
    try {
      return await f(n);
    } finally {
      await n.close();
    }
  }

  /** The directory entry of `path` (a mount point shows the mounted root under its own name). */
  stat(path: string, opts?: OpOptions): Promise<Dir> {
    return this.#with(path, opts, (n) => n.stat(opts));
  }

  /** The entries of directory `path`; a union lists each name once, the first member's winning. */
  readDir(path: string, opts?: OpOptions): Promise<Dir[]> {
    return this.#with(path, opts, async (n) => {
      const f = await n.open(OREAD, opts);
      try {
        return await f.readDir(opts);
      } finally {
        await f.close();
      }
    });
  }

  /** Open `path` with 9P `mode`; closing the file releases everything it holds. */
  async open(path: string, mode: number, opts?: OpOptions): Promise<OpenFile> {
    // The last walk may send the open along with it (a remote tree does).
    const n = await this.resolve(path, { ...opts, openMode: mode });
    try {
      return new OwnedFile(await n.open(mode, opts), n);
    } catch (e) {
      await n.close();
      throw e;
    }
  }

  /**
   * Create `path` with 9P `perm` and open it with `mode`. In a union the file
   * goes to the first member bound with -c; with none, creation is refused
   * with an error naming the union.
   */
  async create(path: string, perm: number, mode: number, opts?: OpOptions): Promise<OpenFile> {
    const p = cleanPath(path);
    const names = splitNames(p);
    const name = names.pop();
    if (name === undefined || p.startsWith("#")) {
      throw new Error(`Cannot create '${p}': it is a root`);
    }
    return await this.#with(joinNames(names), opts, async (dir) => {
      const c = await dir.create(name, perm, mode, opts);
      return new OwnedFile(c.file, c.node);
    });
  }

  /** Remove `path`. */
  async remove(path: string, opts?: OpOptions): Promise<void> {
    const n = await this.resolve(path, opts);
    await n.remove(opts);
  }

  /** Apply a Twstat to `path`. */
  wstat(path: string, dir: Dir, opts?: OpOptions): Promise<void> {
    return this.#with(path, opts, (n) => n.wstat(dir, opts));
  }

  /** The whole contents of file `path`. */
  async readFile(path: string, opts?: OpOptions): Promise<Uint8Array> {
    const f = await this.open(path, OREAD, opts);
    try {
      if (isDirQid(f.qid)) throw new StyxError(Ename.isDir);
      const size = f.iounit > 0 ? f.iounit : 64 * 1024;
      const parts: Uint8Array[] = [];
      let total = 0;
      for (;;) {
        const b = await f.read(BigInt(total), size, opts);
        if (b.length === 0) break;
        parts.push(b);
        total += b.length;
      }
      return concatBytes(parts, total);
    } finally {
      await f.close();
    }
  }

  /**
   * Replace the contents of `path` with `data` (or add them at the end with
   * `append`), creating the file (mode 0666) unless `create` is false.
   */
  async writeFile(path: string, data: Uint8Array, opts?: WriteFileOptions): Promise<void> {
    const append = opts?.append ?? false;
    let f: OpenFile;
    let offset = 0n;
    try {
      f = await this.open(path, append ? OWRITE : OWRITE | OTRUNC, opts);
    } catch (e) {
      if (!isNotFound(e) || opts?.create === false) throw e;
      f = await this.create(path, 0o666, OWRITE, opts);
    }
    try {
      if (append) offset = (await this.stat(path, opts)).length;
      const size = f.iounit > 0 ? f.iounit : 64 * 1024;
      let done = 0;
      while (done < data.length) {
        const n = await f.write(offset + BigInt(done), data.subarray(done, done + size), opts);
        if (n <= 0) throw new StyxError(Ename.io);
        done += n;
      }
    } finally {
      await f.close();
    }
  }

  /**
   * As a tree: attach gives the node at `aname` ("" for the root), which ".."
   * never climbs above; every walk applies the mount table. Every operation
   * acts for `caller`: the trees below check the client's permissions, not
   * those of the namespace's own user (a remote mount still speaks with the
   * identity it was mounted with).
   */
  attach(caller: Caller, aname: string): Promise<Node> {
    return this.#resolveFloor(aname === "" ? "/" : aname, true, { caller });
  }

  /**
   * A tree showing this namespace from `path` down, for export: ".." stops at
   * `path`, and a device path ('#U*' + "/home") serves that device. As with
   * {@link attach}, every operation acts for the attaching caller.
   */
  subtree(path: string): Tree {
    const p = cleanPath(path);
    return { attach: (caller: Caller) => this.#resolveFloor(p, true, { caller }) };
  }

  /** Release every mounted tree and the root; the namespace is empty afterwards. */
  async close(): Promise<void> {
    const dropped = this.#engine.table.clear();
    await Promise.allSettled(dropped.map((s) => s.release()));
    await this.#engine.closeRoot();
  }
}
