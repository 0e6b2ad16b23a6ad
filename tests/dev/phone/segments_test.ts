import assert from "node:assert/strict";
import { countSegments, isGsm7 } from "../../../lib/dev/phone/segments.ts";

Deno.test("SMS segments", async (t) => {
  await t.step("GSM-7: 160 single, 153 per part", () => {
    assert.deepEqual(countSegments("a".repeat(160)), { encoding: "gsm7", units: 160, count: 1 });
    assert.equal(countSegments("a".repeat(161)).count, 2);
    assert.equal(countSegments("a".repeat(306)).count, 2);
    assert.equal(countSegments("a".repeat(307)).count, 3);
    assert.equal(countSegments("hello").count, 1);
  });
  await t.step("extension characters count double and are not split", () => {
    assert.ok(isGsm7("€[]{}^~|\\"));
    assert.deepEqual(countSegments("€".repeat(80)), { encoding: "gsm7", units: 160, count: 1 });
    assert.equal(countSegments("€".repeat(81)).count, 2);
    // 152 septets then a two-septet character: it moves to the next part.
    assert.equal(countSegments("a".repeat(152) + "€" + "a".repeat(151)).count, 2);
    assert.equal(countSegments("a".repeat(152) + "€" + "a".repeat(152)).count, 3);
  });
  await t.step("UCS-2: 70 single, 67 per part, code units", () => {
    assert.equal(isGsm7("привет"), false);
    assert.deepEqual(countSegments("ж".repeat(70)), { encoding: "ucs2", units: 70, count: 1 });
    assert.equal(countSegments("ж".repeat(71)).count, 2);
    assert.equal(countSegments("ж".repeat(134)).count, 2);
    assert.equal(countSegments("ж".repeat(135)).count, 3);
    // An emoji is two UTF-16 code units.
    assert.deepEqual(countSegments("😀".repeat(35)), { encoding: "ucs2", units: 70, count: 1 });
    assert.equal(countSegments("😀".repeat(36)).count, 2);
    // A surrogate pair is never split: 66 units then a pair starts a new part.
    assert.equal(countSegments("ж".repeat(66) + "😀" + "ж".repeat(66)).count, 3);
    // Accented letters in the GSM alphabet keep GSM-7.
    assert.equal(countSegments("äöüñ").encoding, "gsm7");
  });
});
