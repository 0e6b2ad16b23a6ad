/**
 * A tree seen through exportfs -P style patterns: files the filter hides
 * cannot be walked to, created or listed. Used for host exports with a
 * `filter` list.
 *
 * A filter holds whatever a path becomes: a rename (Twstat of the name) is
 * refused when a pattern covers the old name, the new name, or, for a
 * directory, anything inside it under either name, since the files inside
 * would change paths without changing place. The error names the pattern.
 * Walks follow `..` by name, so a walk out of a directory and back in is
 * checked like any other path.
 *
 * @module
 */

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
import { Ename, QTDIR, StyxError } from "../styx/types.ts";
import type { Dir, Qid } from "../styx/types.ts";
import { hiddenBy } from "./check.ts";
import { DirMappedFile } from "../fs/dirmap.ts";

/**
 * `inner` with every file that `filter` hides ("-GLOB" patterns, see
 * {@link hiddenBy}) left out.
 *
 * @example
 * ```ts
 * import { FilterTree } from "./filter.ts";
 * import { MemTree } from "../fs/memory.ts";
 * const mem = new MemTree();
 * await mem.writeFile("/id.key", "secret");
 * const root = await new FilterTree(mem, ["-*.key"]).attach({ user: "glenda" }, "");
 * await root.walk(["id.key"]).then(() => { throw new Error("walked"); }, () => {});
 * await root.close();
 * ```
 */
export class FilterTree implements Tree {
  constructor(readonly inner: Tree, readonly filter: readonly string[]) {}

  async attach(caller: Caller, aname: string): Promise<Node> {
    // The attach name is a path too: the node's place in the filter is where it leads.
    const rel = aname.split("/").filter((n) => n !== "" && n !== ".");
    if (rel.includes("..") || rel.some((_, i) => hidden(this.filter, rel.slice(0, i + 1)))) {
      throw new StyxError(Ename.notFound);
    }
    return reached(await this.inner.attach(caller, aname), rel, this.filter);
  }
}

/**
 * `node`, reached by the names `rel`, seen through `filter`; refused when
 * where it really is (a symlink may lead elsewhere) is hidden.
 */
async function reached(node: Node, rel: string[], filter: readonly string[]): Promise<FilterNode> {
  const place = node.place ? [...node.place] : rel;
  if (place !== rel && place.some((_, i) => hidden(filter, place.slice(0, i + 1)))) {
    await node.close();
    throw new StyxError(Ename.notFound);
  }
  return new FilterNode(node, place, filter);
}

function hidden(filter: readonly string[], rel: string[]): boolean {
  return rel.length > 0 && hiddenBy(filter, rel.join("/")) !== undefined;
}

/**
 * The first pattern of `filter` that could match, as a whole path, something
 * inside directory `rel`: renaming the directory would move that under or
 * out from under the pattern. Patterns that match only a last element
 * ("*.key") do not count: a rename of a directory leaves its files' own
 * names alone.
 */
function coversInside(filter: readonly string[], rel: string[]): string | undefined {
  const inside = `${rel.join("/")}/`;
  return filter.find((f) => prefixRe(f.slice(1)).test(inside));
}

const prefixCache = new Map<string, RegExp>();

/**
 * A regular expression for every string that begins some path glob `g`
 * matches, with the glob read as {@link hiddenBy} reads it: "*" is any run
 * within one element, "**" any run across elements, "?" one character. A
 * bracket class is taken as any one character, which can only refuse more.
 */
function prefixRe(g: string): RegExp {
  let re = prefixCache.get(g);
  if (re) return re;
  // Each token is a single-character class, perhaps repeated.
  const tokens: { cls: string; star: boolean }[] = [];
  for (let i = 0; i < g.length; i++) {
    const c = g[i]!;
    if (c === "*") {
      const run = g[i + 1] === "*";
      while (g[i + 1] === "*") i++;
      tokens.push({ cls: run ? "[\\s\\S]" : "[^/]", star: true });
    } else if (c === "?") {
      tokens.push({ cls: "[^/]", star: false });
    } else if (c === "[") {
      const end = g.indexOf("]", i + 2);
      if (end < 0) tokens.push({ cls: "\\[", star: false });
      else {
        tokens.push({ cls: "[\\s\\S]", star: false });
        i = end;
      }
    } else {
      tokens.push({ cls: c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&"), star: false });
    }
  }
  // The prefixes of t1 t2 … tn: "" | t1 (prefixes of t2 … tn), or for a
  // repeated token t*, t* (prefixes of the rest).
  let body = "";
  for (let i = tokens.length - 1; i >= 0; i--) {
    const t = tokens[i]!;
    body = t.star ? `${t.cls}*${body}` : `(?:${t.cls}${body})?`;
  }
  re = new RegExp(`^${body}$`);
  prefixCache.set(g, re);
  return re;
}

class FilterNode implements Node {
  constructor(
    readonly inner: Node,
    /** Where the node is, from the export's root: what the filter is matched against. */
    public rel: string[],
    readonly filter: readonly string[],
  ) {}

  get qid(): Qid {
    return this.inner.qid;
  }

  async walk(names: string[], opts?: OpOptions): Promise<WalkResult> {
    // Walk only as far as the first hidden name.
    const rel = [...this.rel];
    let n = 0;
    for (; n < names.length; n++) {
      const name = names[n]!;
      // Servers refuse these names; a caller in this process must not slip them past the filter.
      if (name === "" || name === "." || name.includes("/")) break;
      if (name === "..") rel.pop();
      else rel.push(name);
      if (hidden(this.filter, rel)) break;
    }
    if (n === 0 && names.length > 0) throw new StyxError(Ename.notFound);
    // Stopped short: the node reached is not the one the caller will open.
    const r = await this.inner.walk(
      names.slice(0, n),
      n < names.length ? withoutOpenMode(opts) : opts,
    );
    if (n < names.length || !r.node) {
      await r.node?.close();
      return { qids: r.qids };
    }
    // Names that lead somewhere hidden fail the walk as a hidden name does.
    return { qids: r.qids, node: await reached(r.node, rel, this.filter) };
  }

  async open(mode: number, opts?: OpOptions): Promise<OpenFile> {
    const f = await this.inner.open(mode, opts);
    return (f.qid.type & QTDIR) !== 0 ? filterDir(f, this.rel, this.filter) : f;
  }

  async create(name: string, perm: number, mode: number, opts?: OpOptions): Promise<Created> {
    if (hidden(this.filter, [...this.rel, name])) throw new StyxError(Ename.perm);
    const c = await this.inner.create(name, perm, mode, opts);
    const node = new FilterNode(c.node, [...this.rel, name], this.filter);
    const file = (c.file.qid.type & QTDIR) !== 0
      ? filterDir(c.file, node.rel, this.filter)
      : c.file;
    return { node, file };
  }

  stat(opts?: OpOptions): Promise<Dir> {
    return this.inner.stat(opts);
  }

  async wstat(dir: Dir, opts?: OpOptions): Promise<void> {
    const from = this.rel;
    if (dir.name === "" || from.length === 0 || dir.name === from[from.length - 1]) {
      return await this.inner.wstat(dir, opts);
    }
    const to = [...from.slice(0, -1), dir.name];
    const isDir = (this.inner.qid.type & QTDIR) !== 0;
    const covers = (rel: string[], what: string): string | undefined => {
      const f = hiddenBy(this.filter, rel.join("/"));
      if (f) return `filter '${f}' covers '${rel.join("/")}'`;
      const inside = isDir ? coversInside(this.filter, rel) : undefined;
      return inside ? `filter '${inside}' covers what '${rel.join("/")}' ${what}` : undefined;
    };
    const why = covers(from, "holds") ?? covers(to, "would hold");
    if (why) {
      throw new StyxError(
        `${Ename.perm}: cannot rename '${from.join("/")}' to '${dir.name}': ${why}`,
      );
    }
    await this.inner.wstat(dir, opts);
    this.rel = to;
  }

  remove(opts?: OpOptions): Promise<void> {
    return this.inner.remove(opts);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A directory's open file showing only the entries `filter` does not hide. */
function filterDir(inner: OpenFile, rel: string[], filter: readonly string[]): OpenFile {
  return new DirMappedFile(inner, (all) => all.filter((d) => !hidden(filter, [...rel, d.name])));
}
