/**
 * Byte helpers every room may use: joining chunks and counting UTF-8 bytes.
 * This module imports nothing.
 *
 * @module
 */

/**
 * One buffer holding `parts` in order; `total` is their summed length when
 * the caller already knows it. Always a fresh copy.
 *
 * @example
 * ```ts
 * import { concatBytes } from "./bytes.ts";
 * import assert from "node:assert/strict";
 * const b = concatBytes([new Uint8Array([1, 2]), new Uint8Array([3])]);
 * assert.deepEqual([...b], [1, 2, 3]);
 * ```
 */
export function concatBytes(
  parts: readonly Uint8Array[],
  total?: number,
): Uint8Array<ArrayBuffer> {
  let n = total;
  if (n === undefined) {
    n = 0;
    for (const p of parts) n += p.length;
  }
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * The number of bytes `s` takes in UTF-8, counting a lone surrogate as the
 * three bytes of U+FFFD (what TextEncoder writes for it).
 *
 * @example
 * ```ts
 * import { utf8Length } from "./bytes.ts";
 * import assert from "node:assert/strict";
 * assert.equal(utf8Length("héllo"), 6);
 * ```
 */
export function utf8Length(s: string): number {
  const n = s.length;
  let bytes = n;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) {
      bytes += 1;
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        // A surrogate pair: 4 bytes for 2 UTF-16 units.
        bytes += 2;
        i++;
      } else {
        bytes += 2;
      }
    } else {
      bytes += 2;
    }
  }
  return bytes;
}
