/**
 * Path names as the shell sees them: absolute, slash-separated, with `.`
 * and `..` resolved lexically (as Plan 9's cleanname does).
 *
 * @module
 */

import { childPath } from "../ns/path.ts";

// The shell cleans paths exactly as the namespace does, device paths included.
export { cleanPath } from "../ns/path.ts";

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

/** Join a clean directory path and a name. */
export const joinPath: (dir: string, name: string) => string = childPath;
