// `ferry 9p read` streams a file to stdout in the memory of a few Treads,
// whatever the file's size: a large read must not balloon the client.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const hasTime = (() => {
  try {
    return Deno.statSync("/usr/bin/time").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "ferry 9p read of a 256 MiB file: every byte arrives, and the client stays under 100 MiB",
  ignore: !hasTime,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ferry-9pread-" });
    const server = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", FERRY, "listen", "-A", "tcp!127.0.0.1!0", dir],
      stdout: "piped",
      stderr: "null",
    });
    let proc: Deno.ChildProcess | undefined;
    try {
      // Every MiB different, so a chunk sent twice or out of order shows.
      const want = createHash("sha256");
      const f = await Deno.open(`${dir}/big`, { write: true, create: true });
      const mib = new Uint8Array(2 ** 20);
      crypto.getRandomValues(mib.subarray(0, 65536));
      for (let i = 0; i < 256; i++) {
        new DataView(mib.buffer).setUint32(70000, i);
        mib.copyWithin(65536 + (i % 7) * 4096, 0, 4096);
        want.update(mib);
        let off = 0;
        while (off < mib.length) off += await f.write(mib.subarray(off));
      }
      f.close();

      proc = server.spawn();
      const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let banner = "";
      while (!/tcp!\S+/.test(banner)) banner += (await reader.read()).value ?? "";
      reader.releaseLock();
      const addr = banner.match(/(tcp!\S+)/)![1]!;

      const client = new Deno.Command("/usr/bin/time", {
        args: [
          "-f",
          "maxrss %M",
          Deno.execPath(),
          "run",
          "-A",
          FERRY,
          "9p",
          "-A",
          "-a",
          addr,
          "read",
          "/big",
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const got = createHash("sha256");
      let n = 0;
      for await (const chunk of client.stdout) {
        got.update(chunk);
        n += chunk.length;
      }
      const err = await new Response(client.stderr).text();
      const st = await client.status;
      assert.equal(st.code, 0, err);
      assert.equal(n, 256 * 2 ** 20);
      assert.equal(got.digest("hex"), want.digest("hex"));
      const kib = Number(err.match(/maxrss (\d+)/)![1]);
      assert.ok(kib < 100 * 1024, `ferry 9p read peaked at ${(kib / 1024).toFixed(0)} MiB`);
    } finally {
      if (proc) {
        proc.kill("SIGTERM");
        await proc.status;
        await proc.stdout.cancel().catch(() => {});
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});
