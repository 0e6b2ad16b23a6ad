/**
 * Helpers shared by tests in several rooms.
 *
 * @module
 */

/**
 * `n` bytes of a repeatable pseudo-random pattern: the same `n` and `seed`
 * give the same bytes, and no short period hides a misplaced chunk.
 */
export function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
