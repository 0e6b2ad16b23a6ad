/**
 * Path names in a namespace: Plan 9's cleanname rules and splitting into
 * walk elements.
 *
 * @module
 */

/**
 * Clean a path the way Plan 9's cleanname does: a relative path is taken
 * relative to `cwd` (default "/"), repeated slashes collapse, "." elements go,
 * and ".." removes the element before it (".." at the root stays at the root).
 * A path naming a device (such as `#U*` followed by a path) keeps its device part as its root.
 *
 * @example
 * ```ts
 * import { cleanPath } from "./path.ts";
 * if (cleanPath("/usr//glenda/./lib/../bin") !== "/usr/glenda/bin") throw new Error("bad");
 * if (cleanPath("../x", "/usr/glenda") !== "/usr/x") throw new Error("bad");
 * const star = "#U*";
 * if (cleanPath(`${star}/home/../tmp`) !== `${star}/tmp`) throw new Error("bad");
 * ```
 */
export function cleanPath(p: string, cwd = "/"): string {
  const full = p.startsWith("/") || p.startsWith("#") ? p : `${cwd}/${p}`;
  if (full.startsWith("#")) {
    const slash = full.indexOf("/");
    const root = slash < 0 ? full : full.slice(0, slash);
    const names = slash < 0 ? [] : splitNames(full.slice(slash));
    return names.length === 0 ? root : `${root}/${names.join("/")}`;
  }
  return joinNames(splitNames(full));
}

/**
 * The elements of a path after cleaning: "/a/b" gives ["a", "b"], "/" gives [].
 * ".." elements that would climb above the root are dropped.
 *
 * @example
 * ```ts
 * import { splitNames } from "./path.ts";
 * if (splitNames("/a//b/../c").join(",") !== "a,c") throw new Error("bad");
 * ```
 */
export function splitNames(p: string): string[] {
  const out: string[] = [];
  for (const e of p.split("/")) {
    if (e === "" || e === ".") continue;
    if (e === "..") {
      out.pop();
      continue;
    }
    out.push(e);
  }
  return out;
}

/**
 * The canonical path string for a list of names ("/" for none).
 *
 * @example
 * ```ts
 * import { joinNames } from "./path.ts";
 * if (joinNames(["a", "b"]) !== "/a/b") throw new Error("bad");
 * ```
 */
export function joinNames(names: readonly string[]): string {
  return names.length === 0 ? "/" : `/${names.join("/")}`;
}

/**
 * The path one element deeper than the canonical path `dir`.
 *
 * @example
 * ```ts
 * import { childPath } from "./path.ts";
 * if (childPath("/", "a") !== "/a" || childPath("/a", "b") !== "/a/b") throw new Error("bad");
 * ```
 */
export function childPath(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}
