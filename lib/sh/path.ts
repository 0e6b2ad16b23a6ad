/**
 * Path names as the shell sees them: absolute, slash-separated, with `.`
 * and `..` resolved lexically (as Plan 9's cleanname does).
 *
 * @module
 */

/**
 * Make `p` absolute against `cwd` and clean it.
 *
 * @example
 * ```ts
 * import { cleanPath } from "./path.ts";
 * if (cleanPath("../b/./c", "/a/x") !== "/a/b/c") throw new Error("cleanPath");
 * ```
 */
export function cleanPath(p: string, cwd = "/"): string {
  const full = p.startsWith("/") ? p : `${cwd}/${p}`;
  const out: string[] = [];
  for (const part of full.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return "/" + out.join("/");
}

/** The last element of `p` ("/" for the root). */
export function baseName(p: string): string {
  const c = p.replace(/\/+$/, "");
  const i = c.lastIndexOf("/");
  return c === "" ? "/" : c.slice(i + 1);
}

/** Everything before the last element of the clean absolute path `p`. */
export function dirName(p: string): string {
  const i = p.lastIndexOf("/");
  return i <= 0 ? "/" : p.slice(0, i);
}

/** Join a directory and a name. */
export function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}
