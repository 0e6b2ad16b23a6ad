/**
 * File name patterns of sh(1): `*`, `?` and `[class]` (with `^` to
 * complement and `a-z` ranges).
 *
 * @module
 */

/**
 * True when `name` matches the one-element pattern `pattern`.
 *
 * @example
 * ```ts
 * import { matchGlob } from "./glob.ts";
 * if (!matchGlob("*.b", "ls.b") || matchGlob("[^a]*", "abc")) throw new Error("glob");
 * ```
 */
export function matchGlob(pattern: string, name: string): boolean {
  return match(pattern, 0, name, 0);
}

function match(p: string, pi: number, s: string, si: number): boolean {
  while (pi < p.length) {
    const c = p[pi]!;
    if (c === "*") {
      for (let k = si; k <= s.length; k++) if (match(p, pi + 1, s, k)) return true;
      return false;
    }
    if (si >= s.length) return false;
    if (c === "?") {
      pi++;
      si++;
      continue;
    }
    if (c === "[") {
      const end = p.indexOf("]", pi + 2);
      if (end < 0) {
        if (s[si] !== "[") return false;
        pi++;
        si++;
        continue;
      }
      let cls = p.slice(pi + 1, end);
      const neg = cls.startsWith("^");
      if (neg) cls = cls.slice(1);
      const ch = s[si]!;
      let ok = false;
      for (let k = 0; k < cls.length; k++) {
        const a = cls[k]!;
        if (cls[k + 1] === "-" && k + 2 < cls.length) {
          const b = cls[k + 2]!;
          if (ch >= a && ch <= b) ok = true;
          k += 2;
        } else if (ch === a) ok = true;
      }
      if (ok === neg) return false;
      pi = end + 1;
      si++;
      continue;
    }
    if (c !== s[si]) return false;
    pi++;
    si++;
  }
  return si === s.length;
}
