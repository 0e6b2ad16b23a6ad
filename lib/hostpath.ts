/**
 * Host file names (POSIX): joining, resolving against the working
 * directory, and taking apart, all lexical. Kept here rather than taken
 * from node:path, whose loading costs a one-shot command milliseconds.
 *
 * @example
 * ```ts
 * import { basename, dirname, join, resolve } from "./hostpath.ts";
 * if (join("/home/glenda", ".ferry", "../lib") !== "/home/glenda/lib") throw new Error("join");
 * if (join("a", "", "b/") !== "a/b" || join("..", "x") !== "../x") throw new Error("relative");
 * if (dirname("/etc/ferry/cluster.toml") !== "/etc/ferry" || dirname("x") !== ".") throw new Error("dirname");
 * if (basename("/etc/ferry/") !== "ferry") throw new Error("basename");
 * if (resolve("/etc/ferry", "nodes.ns") !== "/etc/ferry/nodes.ns") throw new Error("resolve");
 * if (resolve("/etc", "/srv//a/./b") !== "/srv/a/b") throw new Error("absolute wins");
 * ```
 *
 * @module
 */

/** `p` with "." and empty elements gone and ".." taken lexically ("." for nothing). */
export function normalize(p: string): string {
  const abs = p.startsWith("/");
  const out: string[] = [];
  for (const e of p.split("/")) {
    if (e === "" || e === ".") continue;
    if (e === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!abs) out.push(e);
      // ".." at the root stays at the root.
      continue;
    }
    out.push(e);
  }
  const body = out.join("/");
  return abs ? `/${body}` : body === "" ? "." : body;
}

/** The parts joined with "/", then normalized. */
export function join(...parts: string[]): string {
  return normalize(parts.filter((s) => s !== "").join("/"));
}

/** An absolute name: the parts from the last absolute one, else from the working directory. */
export function resolve(...parts: string[]): string {
  const from: string[] = [];
  for (let i = parts.length - 1; i >= 0; i--) {
    const s = parts[i]!;
    if (s === "") continue;
    from.unshift(s);
    if (s.startsWith("/")) return normalize(from.join("/"));
  }
  return normalize(`${Deno.cwd()}/${from.join("/")}`);
}

/** The directory part of `p` ("." for a bare name, "/" for the root). */
export function dirname(p: string): string {
  const t = p.replace(/\/+$/, "");
  if (t === "") return p.startsWith("/") ? "/" : ".";
  const slash = t.lastIndexOf("/");
  if (slash < 0) return ".";
  return slash === 0 ? "/" : t.slice(0, slash).replace(/\/+$/, "") || "/";
}

/** The last element of `p`, trailing slashes ignored. */
export function basename(p: string): string {
  const t = p.replace(/\/+$/, "");
  return t.slice(t.lastIndexOf("/") + 1);
}
