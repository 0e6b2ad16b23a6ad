/**
 * How many SMS segments a text takes, counted the way phones count them:
 * texts made only of the GSM 03.38 default alphabet use 7-bit septets (160
 * in one message, 153 per part of a longer one; characters from the
 * extension table take two septets and are never split across parts);
 * anything else is sent as UCS-2 (70 UTF-16 code units in one message, 67
 * per part; a surrogate pair is never split).
 *
 * @module
 */

const BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
  "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const EXTENSION = "\f^{}\\[~]|€";

const basic = new Set(BASIC);
const extension = new Set(EXTENSION);

/** The result of {@link countSegments}. */
export interface SegmentInfo {
  /** "gsm7" when every character is in the GSM default alphabet, else "ucs2". */
  encoding: "gsm7" | "ucs2";
  /** Septets (gsm7) or UTF-16 code units (ucs2) the text needs. */
  units: number;
  /** Number of SMS parts. */
  count: number;
}

/** True when `text` can be sent with the GSM 7-bit default alphabet. */
export function isGsm7(text: string): boolean {
  for (const ch of text) if (!basic.has(ch) && !extension.has(ch)) return false;
  return true;
}

/** Parts needed for `sizes` (units per indivisible character) at `per` units a part. */
function parts(sizes: number[], per: number): number {
  let count = 1;
  let used = 0;
  for (const s of sizes) {
    if (used + s > per) {
      count++;
      used = 0;
    }
    used += s;
  }
  return count;
}

/**
 * Count the segments of `text`.
 *
 * @example
 * ```ts
 * import { countSegments } from "./segments.ts";
 * if (countSegments("a".repeat(161)).count !== 2) throw new Error();
 * if (countSegments("ä".repeat(70)).count !== 1) throw new Error(); // ä is GSM-7
 * if (countSegments("日".repeat(71)).count !== 2) throw new Error();
 * ```
 */
export function countSegments(text: string): SegmentInfo {
  if (isGsm7(text)) {
    const sizes = [...text].map((ch) => (extension.has(ch) ? 2 : 1));
    const units = sizes.reduce((a, b) => a + b, 0);
    return { encoding: "gsm7", units, count: units <= 160 ? 1 : parts(sizes, 153) };
  }
  const sizes = [...text].map((ch) => ch.length);
  const units = text.length;
  return { encoding: "ucs2", units, count: units <= 70 ? 1 : parts(sizes, 67) };
}
