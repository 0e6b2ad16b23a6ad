/**
 * A tree view of part of a namespace: what `export PATH` serves. Its root
 * is the file at PATH; `..` at that root stays there, so a client can never
 * walk out of what was exported. Every operation acts for the client that
 * attached (its verified identity over TLS), so the trees below check the
 * client's permissions, not those of the shell's user.
 *
 * @module
 */

import type { Caller, Created, Node, OpenFile, OpOptions, Tree, WalkResult } from "../fs/tree.ts";
import type { Dir, Qid } from "../styx/types.ts";
import { DirMappedFile } from "../fs/dirmap.ts";

/** Something that resolves a path to a node (a namespace). */
export interface Resolver {
  /**
   * The node at `path`; the caller closes it. `opts.caller`, when given, is
   * who the walk (and the node it gives) acts for.
   */
  resolve(path: string, opts?: OpOptions): Promise<Node>;
}

/**
 * A {@link Tree} whose root is `path` in `ns`.
 *
 * @example
 * ```ts ignore
 * const tree = subtree(ns, "/usr/alice");
 * await serve(conn, tree, {});
 * ```
 */
export function subtree(ns: Resolver, path: string): Tree {
  return {
    async attach(caller: Caller, _aname: string): Promise<Node> {
      const root = await ns.resolve(path, { caller });
      return new ViewNode(root, 0, root.qid, caller);
    },
  };
}

class ViewNode implements Node {
  constructor(
    readonly inner: Node,
    readonly depth: number,
    readonly rootQid: Qid,
    readonly caller: Caller,
  ) {}

  get qid(): Qid {
    return this.inner.qid;
  }

  /** `opts` with this view's caller: every request acts for the client. */
  #as(opts?: OpOptions): OpOptions {
    return { ...opts, caller: this.caller };
  }

  async walk(names: string[], opts?: OpOptions): Promise<WalkResult> {
    opts = this.#as(opts);
    // Drop each ".." that would leave the view's root; it answers with the root's qid.
    const passed: string[] = [];
    const plan: ("stay" | "go")[] = [];
    let depth = this.depth;
    for (const n of names) {
      if (n === ".." && depth === 0) {
        plan.push("stay");
      } else {
        plan.push("go");
        passed.push(n);
        depth += n === ".." ? -1 : 1;
      }
    }
    if (passed.length === 0) {
      const r = await this.inner.walk([], opts);
      const qids = names.map(() => this.rootQid);
      return {
        qids,
        node: r.node ? new ViewNode(r.node, 0, this.rootQid, this.caller) : undefined,
      };
    }
    let r: WalkResult;
    try {
      r = await this.inner.walk(passed, opts);
    } catch (e) {
      const firstGo = plan.indexOf("go");
      if (firstGo > 0) return { qids: names.slice(0, firstGo).map(() => this.rootQid) };
      throw e;
    }
    const qids: Qid[] = [];
    let k = 0;
    for (const step of plan) {
      if (step === "stay") {
        qids.push(this.rootQid);
        continue;
      }
      const q = r.qids[k++];
      if (q === undefined) break;
      qids.push(q);
    }
    if (!r.node || qids.length < names.length) return { qids };
    return { qids, node: new ViewNode(r.node, depth, this.rootQid, this.caller) };
  }

  async open(mode: number, opts?: OpOptions): Promise<OpenFile> {
    return viewFile(await this.inner.open(mode, this.#as(opts)));
  }

  async create(name: string, perm: number, mode: number, opts?: OpOptions): Promise<Created> {
    const c = await this.inner.create(name, perm, mode, this.#as(opts));
    return {
      node: new ViewNode(c.node, this.depth + 1, this.rootQid, this.caller),
      file: viewFile(c.file),
    };
  }

  async stat(opts?: OpOptions): Promise<Dir> {
    return unsigned(await this.inner.stat(this.#as(opts)));
  }

  wstat(dir: Dir, opts?: OpOptions): Promise<void> {
    return this.inner.wstat(dir, this.#as(opts));
  }

  remove(opts?: OpOptions): Promise<void> {
    return this.inner.remove(this.#as(opts));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Dir.mode as the unsigned 32-bit number the wire carries, whatever the tree computed. */
function unsigned(d: Dir): Dir {
  return d.mode < 0 ? { ...d, mode: d.mode >>> 0 } : d;
}

function viewFile(inner: OpenFile): OpenFile {
  return new DirMappedFile(inner, (ds) => ds.map(unsigned));
}
