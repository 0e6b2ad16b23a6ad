/**
 * ByteQueue fed by a real child's standard output, as a cpu node reads a
 * command's output: every byte arrives, in order, whatever the sizes of
 * the child's writes and of the reads taken.
 */
import assert from "node:assert/strict";
import { ByteQueue } from "../../lib/cpu/streams.ts";

async function sha256(b: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(b)));
  return [...d].map((x) => x.toString(16).padStart(2, "0")).join("");
}

Deno.test("a child's output reaches the reader whole and in order through a ByteQueue", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-streams-" });
  try {
    // Small writes and large ones, so the pipe holds short and long runs.
    const data = new Uint8Array(6 * 1024 * 1024 + 12345);
    for (let i = 0; i < data.length; i += 65536) {
      crypto.getRandomValues(data.subarray(i, Math.min(i + 65536, data.length)));
    }
    await Deno.writeFile(`${dir}/data`, data);
    const script = `head -c 1000 ${dir}/data; sleep 0.05; tail -c +1001 ${dir}/data | ` +
      `dd bs=300k status=none`;
    const child = new Deno.Command("sh", { args: ["-c", script], stdout: "piped" }).spawn();
    const q = ByteQueue.of(child.stdout, 1 << 20);
    const parts: Uint8Array[] = [];
    let total = 0;
    // Reads of odd sizes, some larger than anything the pipe holds at once.
    for (let i = 0;; i++) {
      const b = await q.read([7, 100_000, 3 << 20, 65536][i % 4]!);
      if (b.length === 0) break;
      parts.push(b);
      total += b.length;
    }
    assert.equal((await child.status).code, 0);
    const got = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      got.set(p, at);
      at += p.length;
    }
    assert.equal(total, data.length);
    assert.equal(await sha256(got), await sha256(data));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
