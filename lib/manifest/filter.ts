/**
 * A tree seen through exportfs -P style patterns: files the filter hides
 * cannot be walked to, created or listed. Used for host exports with a
 * `filter` list.
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
    return new FilterNode(await this.inner.attach(caller, aname), [], this.filter);
  }
}

function hidden(filter: readonly string[], rel: string[]): boolean {
  return rel.length > 0 && hiddenBy(filter, rel.join("/")) !== undefined;
}

class FilterNode implements Node {
  constructor(
    readonly inner: Node,
    readonly rel: string[],
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
    return { qids: r.qids, node: new FilterNode(r.node, rel, this.filter) };
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

  wstat(dir: Dir, opts?: OpOptions): Promise<void> {
    if (dir.name !== "" && hidden(this.filter, [...this.rel.slice(0, -1), dir.name])) {
      return Promise.reject(new StyxError(Ename.perm));
    }
    return this.inner.wstat(dir, opts);
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
