/**
 * The mount table of a namespace: for each mount point (a canonical path in
 * the namespace), the ordered members that answer for it. A member is either
 * a bound or mounted source (one or more nodes, shared between forked copies
 * of the table and released when the last copy drops it) or the directory
 * that was at the mount point before a union was made there.
 *
 * Lookup follows a tree of path elements (one `Map` access per element), so
 * a walk learns as soon as nothing is mounted below where it is and stops
 * looking.
 *
 * @module
 */

import type { Node } from "../fs/tree.ts";
import { splitNames } from "./path.ts";

/** One line of a namespace listing, as the shell's `ns` prints it. */
export interface MountEntry {
  /** "bind" for a path or device spec, "mount" for a tree reached through a dial string. */
  kind: "bind" | "mount";
  /** Flags as typed: "", "-a", "-b", "-c", "-ac", "-bc", with "r" for a recovering mount. */
  flags: string;
  /** A namespace path, a device spec such as '#U*' + "/home", or a dial string. */
  source: string;
  /** The mount point. */
  target: string;
  /** For a mount, the attach name (spec) when one was given. */
  aname?: string;
  /** For a mount whose server went away: "ADDRESS: reason". */
  lost?: string;
  /** For a mount made with -A: no authentication, no encryption. */
  insecure?: boolean;
  /** For a mount, the node the server's certificate had to name (`--peer`). */
  peer?: string;
}

/** Nodes of a bind or mount source, shared by every copy of a table that holds them. */
export class SharedNodes {
  #refs = 1;
  #closed = false;
  /** The nodes, in union order (several when the source was itself a union). */
  readonly nodes: readonly Node[];

  /** Take ownership of `nodes`. */
  constructor(nodes: readonly Node[]) {
    this.nodes = nodes;
  }

  /** One more table holds these nodes. */
  retain(): this {
    this.#refs++;
    return this;
  }

  /**
   * One holder fewer; the last release closes the nodes and returns a
   * promise that settles when they are closed (undefined otherwise).
   */
  release(): Promise<void> | undefined {
    if (--this.#refs > 0 || this.#closed) return undefined;
    this.#closed = true;
    return Promise.allSettled(this.nodes.map((n) => n.close())).then(() => {});
  }
}

/** A member of a mount point. */
export interface Member {
  /** What the member came from, for listings and for `unmount SOURCE TARGET`. */
  source: string;
  /** "bind" or "mount"; the directory that was there before is "underlying". */
  kind: "bind" | "mount" | "underlying";
  /** For a mount, the attach name, when not empty. */
  aname?: string;
  /** For a mount made with -A. */
  insecure?: boolean;
  /** For a mount, the node the server had to prove it was (`--peer`). */
  peer?: string;
  /** New files in the union go to the first member with this set (-c). */
  create: boolean;
  /** The member's nodes; null for the underlying directory, found by walking. */
  nodes: SharedNodes | null;
  /** A mount that redials its server when it is lost (mount -r). */
  recover?: boolean;
  /** For a mount over a connection: why it is gone ("ADDRESS: reason"), or undefined. */
  lost?: () => string | undefined;
}

/** A mount point and its members, in the order names are looked up. */
export interface MountPoint {
  /** Canonical path of the mount point. */
  path: string;
  /**
   * Members, first looked up first. The table replaces the array rather
   * than changing it, so a walk may hold it across awaits without a copy.
   */
  members: readonly Member[];
}

/** A node of the table's tree of path elements. */
export interface PathNode {
  /** Elements below this one that lead to mount points. */
  readonly children: Map<string, PathNode>;
  /** The mount point at this path, if any. */
  point: MountPoint | undefined;
}

function pathNode(): PathNode {
  return { children: new Map(), point: undefined };
}

/** Where a new member goes: replacing the members, before them or after them. */
export type MountOrder = "replace" | "before" | "after";

/**
 * A table of mount points keyed by canonical path.
 *
 * @example
 * ```ts
 * import { MountTable } from "./mount_table.ts";
 * const t = new MountTable();
 * if (t.get("/n") !== undefined || t.size !== 0) throw new Error("not empty");
 * ```
 */
export class MountTable {
  /** Mount points by canonical path, in the order they were made. */
  #points: Map<string, MountPoint>;
  #root: PathNode = pathNode();
  #generation = 0;

  /** An empty table. */
  constructor() {
    this.#points = new Map();
  }

  /** Changes every time a mount point is made or removed, or its members change. */
  get generation(): number {
    return this.#generation;
  }

  /** The tree node for the root; `children` lead to every mount point. */
  get root(): PathNode {
    return this.#root;
  }

  /** The tree node for the path `names`, or undefined when nothing is mounted at or below it. */
  find(names: readonly string[]): PathNode | undefined {
    let n: PathNode | undefined = this.#root;
    for (const name of names) {
      n = n.children.get(name);
      if (n === undefined) return undefined;
    }
    return n;
  }

  #set(path: string, point: MountPoint): void {
    this.#points.set(path, point);
    let n = this.#root;
    for (const name of splitNames(path)) {
      let c = n.children.get(name);
      if (c === undefined) {
        c = pathNode();
        n.children.set(name, c);
      }
      n = c;
    }
    n.point = point;
    this.#generation++;
  }

  #delete(path: string): void {
    this.#points.delete(path);
    const names = splitNames(path);
    const trail: PathNode[] = [this.#root];
    for (const name of names) {
      const c = trail[trail.length - 1]!.children.get(name);
      if (c === undefined) break;
      trail.push(c);
    }
    if (trail.length === names.length + 1) trail[trail.length - 1]!.point = undefined;
    // Prune nodes that lead nowhere.
    for (let i = trail.length - 1; i > 0; i--) {
      const n = trail[i]!;
      if (n.point !== undefined || n.children.size > 0) break;
      trail[i - 1]!.children.delete(names[i - 1]!);
    }
    this.#generation++;
  }

  /** Number of mount points. */
  get size(): number {
    return this.#points.size;
  }

  /** The mount point at canonical path `path`, if any. */
  get(path: string): MountPoint | undefined {
    return this.#points.get(path);
  }

  /** True when `path` is a mount point. */
  has(path: string): boolean {
    return this.#points.has(path);
  }

  /**
   * Add `member` at `path`. A replace drops the members there; a union made
   * where there was none keeps the directory that was there as a member.
   * Returns the sources that were dropped (the caller releases them).
   */
  add(path: string, member: Member, order: MountOrder): SharedNodes[] {
    const point = this.#points.get(path);
    if (order === "replace" || point === undefined) {
      const dropped = point ? sourcesOf(point.members) : [];
      const members = order === "replace"
        ? [member]
        : order === "before"
        ? [member, underlying()]
        : [underlying(), member];
      if (point) this.#delete(path);
      this.#set(path, { path, members });
      return dropped;
    }
    // A new array, never a change in place: a walk under way keeps the one it
    // started with. The generation moves, as the members' positions did.
    point.members = order === "before" ? [member, ...point.members] : [...point.members, member];
    this.#generation++;
    return [];
  }

  /**
   * Remove the members at `path` whose source is `source` (all of them when
   * `source` is undefined). Returns the dropped sources, or null when nothing
   * matched. A mount point left with only its underlying directory goes away.
   */
  remove(path: string, source: string | undefined): SharedNodes[] | null {
    const point = this.#points.get(path);
    if (point === undefined) return null;
    if (source === undefined) {
      this.#delete(path);
      return sourcesOf(point.members);
    }
    const keep = point.members.filter((m) => m.kind === "underlying" || m.source !== source);
    if (keep.length === point.members.length) return null;
    const dropped = sourcesOf(point.members.filter((m) => !keep.includes(m)));
    if (keep.every((m) => m.kind === "underlying")) this.#delete(path);
    else {
      point.members = keep;
      this.#generation++;
    }
    return dropped;
  }

  /** A copy for a child namespace: it shares the sources but not the table. */
  clone(): MountTable {
    const t = new MountTable();
    for (const [path, point] of this.#points) {
      for (const m of point.members) m.nodes?.retain();
      t.#set(path, { path, members: point.members.map((m) => ({ ...m })) });
    }
    return t;
  }

  /** Empty the table, returning every source it held (the caller releases them). */
  clear(): SharedNodes[] {
    const all = [...this.#points.values()].flatMap((p) => sourcesOf(p.members));
    this.#points.clear();
    this.#root = pathNode();
    this.#generation++;
    return all;
  }

  /**
   * The table as the bind and mount commands that rebuild it, in order:
   * mount points in the order they were made; within one, a replace for the
   * first member, then `-a` for members after it, or, where the directory
   * that was there is kept, `-a` for the members after it and `-b` for those
   * before it (nearest first).
   */
  entries(): MountEntry[] {
    const out: MountEntry[] = [];
    for (const point of this.#points.values()) {
      const ms = point.members;
      const u = ms.findIndex((m) => m.kind === "underlying");
      const line = (m: Member, order: string): MountEntry => {
        const more = (m.create ? "c" : "") + (m.recover ? "r" : "");
        const e: MountEntry = {
          kind: m.kind === "mount" ? "mount" : "bind",
          flags: order || more ? `-${order}${more}` : "",
          source: m.source,
          target: point.path,
        };
        if (m.aname) e.aname = m.aname;
        const lost = m.lost?.();
        if (lost !== undefined) e.lost = lost;
        if (m.insecure) e.insecure = true;
        if (m.peer) e.peer = m.peer;
        return e;
      };
      if (u < 0) {
        ms.forEach((m, i) => out.push(line(m, i === 0 ? "" : "a")));
      } else {
        for (let i = u + 1; i < ms.length; i++) out.push(line(ms[i]!, "a"));
        for (let i = u - 1; i >= 0; i--) out.push(line(ms[i]!, "b"));
      }
    }
    return out;
  }
}

function underlying(): Member {
  return { source: "", kind: "underlying", create: false, nodes: null };
}

function sourcesOf(members: readonly Member[]): SharedNodes[] {
  return members.flatMap((m) => m.nodes ? [m.nodes] : []);
}
