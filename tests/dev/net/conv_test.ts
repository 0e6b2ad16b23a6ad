import { concatBytes } from "../../../lib/bytes.ts";
import assert from "node:assert/strict";
import { TcpConv } from "../../../lib/dev/net/conv.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Wait until `cond` holds, yielding to the event loop between looks. */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 1));
}

Deno.test("TcpConv reads", async (t) => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let gone = 0;
  const conv = new TcpConv(0, "glenda", 1, () => gone++);
  const [, far] = await Promise.all([
    conv.connect(`127.0.0.1!${l.addr.port}`),
    l.accept(),
  ]);
  try {
    await t.step("one read answers with everything queued, from several socket reads", async () => {
      await far.write(enc.encode("x"));
      assert.equal(dec.decode(await conv.read(1024)), "x");
      // Reading has begun, so the conversation keeps reading ahead.
      for (const s of ["ab", "cd", "ef"]) {
        const want = conv.queued + s.length;
        await far.write(enc.encode(s));
        await until(() => conv.queued === want);
      }
      assert.equal(conv.status(), "Established qin 6\n");
      assert.equal(dec.decode(await conv.read(1024)), "abcdef");
      assert.equal(conv.queued, 0);
    });

    await t.step("a read takes no more than its count and leaves the rest in order", async () => {
      await far.write(enc.encode("hello"));
      await far.write(enc.encode(" world"));
      await until(() => conv.queued === 11);
      assert.equal(dec.decode(await conv.read(3)), "hel");
      assert.equal(dec.decode(await conv.read(4)), "lo w");
      assert.equal(dec.decode(await conv.read(100)), "orld");
    });

    await t.step("large reads arrive whole and in order", async () => {
      const big = new Uint8Array(3 * 1024 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
      const w = (async () => {
        let off = 0;
        while (off < big.length) off += await far.write(big.subarray(off));
        far.close();
      })();
      const got: Uint8Array[] = [];
      let total = 0;
      for (;;) {
        const b = await conv.read(256 * 1024);
        if (b.length === 0) break;
        assert.ok(b.length <= 256 * 1024, `read of ${b.length} bytes exceeds its count`);
        got.push(b.slice());
        total += b.length;
      }
      await w;
      assert.equal(total, big.length);
      const all = concatBytes(got, total);
      assert.deepEqual(all, big);
      // End of stream stays end of stream.
      assert.equal((await conv.read(10)).length, 0);
    });
  } finally {
    conv.ref();
    conv.unref();
    l.close();
    try {
      far.close();
    } catch { /* closed by the last step */ }
  }
  assert.equal(gone, 1);
  await assert.rejects(conv.read(10), /hungup/);
});
