/**
 * The raw-TCP peer for the read benchmark: sends one file's bytes to each
 * connection with 256 KiB writes, then closes it. Prints its address first.
 *
 * @module
 */

const path = Deno.args[0];
if (!path) {
  console.error("usage: raw_server.ts FILE");
  Deno.exit(2);
}
const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`raw on tcp!127.0.0.1!${(l.addr as Deno.NetAddr).port}`);
for await (const c of l) {
  (async () => {
    const f = await Deno.open(path);
    const buf = new Uint8Array(256 * 1024);
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await c.write(buf.subarray(off, n));
    }
    f.close();
    c.close();
  })();
}
