// The simulated modem's PDU codec: the textbook SMS-SUBMIT example decodes,
// and the SMS-DELIVER parts it builds decode back to the text, split where
// phones split (153 septets, 67 UCS-2 units) with one concatenation header.

import assert from "node:assert/strict";
import { decodeDeliver, decodeSubmit, deliverPdus } from "./pdu.ts";

Deno.test("PDU codec of the simulated modem", async (t) => {
  await t.step("the textbook SMS-SUBMIT: 'hellohello' to +46708251358", () => {
    const p = decodeSubmit("0011000B916407281553F80000AA0AE8329BFD4697D9EC37");
    assert.deepEqual(p, { number: "+46708251358", encoding: "gsm7", text: "hellohello" });
  });

  const when = new Date("2026-12-03T10:00:00Z");
  await t.step("one-part deliveries: GSM-7 with extension characters, and UCS-2", () => {
    const [g] = deliverPdus("5550001", "{x} €5 [ok]", 1, when);
    assert.deepEqual(decodeDeliver(g!), {
      number: "5550001",
      encoding: "gsm7",
      text: "{x} €5 [ok]",
    });
    const [u] = deliverPdus("+64211", "日本 👋", 1, when);
    assert.deepEqual(decodeDeliver(u!), { number: "+64211", encoding: "ucs2", text: "日本 👋" });
  });

  await t.step("long texts split into concatenated parts that join back", () => {
    const long = "0123456789".repeat(20); // 200 septets: 153 + 47
    const parts = deliverPdus("5550002", long, 7, when).map(decodeDeliver);
    assert.deepEqual(parts.map((p) => [p.text.length, p.concat]), [
      [153, { ref: 7, total: 2, seq: 1 }],
      [47, { ref: 7, total: 2, seq: 2 }],
    ]);
    assert.equal(parts.map((p) => p.text).join(""), long);
    const ucs = "Ж".repeat(100); // 67 + 33
    const uparts = deliverPdus("5550003", ucs, 8, when).map(decodeDeliver);
    assert.deepEqual(uparts.map((p) => p.text.length), [67, 33]);
    assert.equal(uparts.map((p) => p.text).join(""), ucs);
  });
});
