/**
 * Benchmark client, run as its own process by bench/run.ts so its resident
 * memory is its own. Prints one JSON line with its figures.
 *
 * deno run -A bench/client.ts MODE ADDR [ARGS]
 *   raw ADDR                      read a raw TCP stream to its end
 *   read ADDR PATH [--tls DIR] [--window N] [--fresh]
 *                                 read PATH through the Styx client (--fresh:
 *                                 a new buffer per chunk instead of reusing them)
 *   write ADDR PATH BYTES [--tls DIR]
 *   files ADDR DIR N [--tls DIR] [--lanes N]
 *                                 walk+open+read+clunk N files DIR/f0…, N at
 *                                 a time (default 16)
 *
 * Every mode takes --msize N, the largest message to offer.
 *   idle ADDR N                   hold N attached idle connections until stdin closes
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readStream, StyxClient, writeFrom } from "../lib/styx/client.ts";
import { dialConn } from "../lib/net/connect.ts";
import { parseDialString } from "../lib/net/dial.ts";
import { OREAD, OTRUNC, OWRITE } from "../lib/styx/types.ts";

const { positionals, values } = parseArgs({
  args: Deno.args,
  options: {
    tls: { type: "string" },
    window: { type: "string" },
    // Let the stream allocate a fresh buffer per chunk (no reuse).
    fresh: { type: "boolean" },
    msize: { type: "string" },
    lanes: { type: "string" },
  },
  allowPositionals: true,
});
const [mode, addr, a1, a2] = positionals;
let peakRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
}, 50);

function report(o: Record<string, number | string>): void {
  peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
  console.log(JSON.stringify({ ...o, rssMiB: +(peakRss / 2 ** 20).toFixed(1) }));
}

async function connect(): Promise<StyxClient> {
  const conn = await dialConn(addr!, { insecure: !values.tls, certDir: values.tls });
  return await StyxClient.connect(conn, values.msize ? { msize: Number(values.msize) } : {});
}

// The clock starts when the transfer starts (after connecting, attaching
// and opening), so process start-up is not counted against either side.
let t0 = performance.now();
let cpu0 = 0;
const start = () => {
  cpu0 = cpuSecs();
  t0 = performance.now();
};
const secs = () => (performance.now() - t0) / 1000;

/** User + system CPU seconds this process has used (Linux; 0 elsewhere). */
function cpuSecs(): number {
  try {
    const st = Deno.readTextFileSync("/proc/self/stat");
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

switch (mode) {
  case "raw": {
    const a = parseDialString(addr!);
    const c = await Deno.connect({ hostname: a.host, port: a.port });
    start();
    const buf = new Uint8Array(256 * 1024);
    let n = 0;
    for (;;) {
      const r = await c.read(buf);
      if (r === null) break;
      n += r;
    }
    c.close();
    const s = secs();
    report({ bytes: n, seconds: s, mbs: n / 1e6 / s });
    break;
  }
  case "read": {
    const client = await connect();
    const root = await client.attach("bench");
    const f = await client.openPath(root, a1!, OREAD);
    let n = 0;
    const window = values.window ? Number(values.window) : undefined;
    start();
    // Each chunk is counted and dropped before the next: its memory can be reused.
    const reuse = values.fresh !== true;
    for await (const chunk of readStream(f, { window, reuse })) n += chunk.length;
    await f.close();
    const s = secs();
    const cpuSec = +(cpuSecs() - cpu0).toFixed(2);
    report({ bytes: n, seconds: s, mbs: n / 1e6 / s, msize: client.msize, cpuSec });
    await client.close();
    break;
  }
  case "write": {
    const client = await connect();
    const root = await client.attach("bench");
    const total = Number(a2);
    await client.create(root, a1!).catch(() => {/* already there */});
    const f = await client.openPath(root, a1!, OWRITE | OTRUNC);
    const piece = new Uint8Array(1024 * 1024).fill(0x61);
    let sent = 0;
    const src = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (sent >= total) return ctl.close();
        const n = Math.min(piece.length, total - sent);
        sent += n;
        // The same bytes every time: writeFrom copies each chunk into its
        // Twrites, so the source need not allocate (as the raw stream does not).
        ctl.enqueue(piece.subarray(0, n));
      },
    }, { highWaterMark: 2 });
    start();
    const n = await writeFrom(f, src);
    await f.close();
    const s = secs();
    report({ bytes: Number(n), seconds: s, mbs: Number(n) / 1e6 / s });
    await client.close();
    break;
  }
  case "files": {
    const client = await connect();
    const root = await client.attach("bench");
    const count = Number(a2);
    const start = performance.now();
    let bytes = 0;
    // Several files in flight at once, as a real copy tool would do.
    const lanes = values.lanes ? Number(values.lanes) : 16;
    let next = 0;
    await Promise.all(
      Array.from({ length: lanes }, async () => {
        while (next < count) {
          const i = next++;
          const f = await client.openPath(root, `${a1}/f${i}`, OREAD);
          const n = (await f.read(0n, 8192)).length;
          bytes += n;
          await f.close();
        }
      }),
    );
    const s = (performance.now() - start) / 1000;
    report({ files: count, bytes, seconds: s, filesPerSec: count / s });
    await client.close();
    break;
  }
  case "idle": {
    const count = Number(a1);
    const clients: StyxClient[] = [];
    for (let i = 0; i < count; i++) {
      const c = await connect();
      await c.attach("bench");
      clients.push(c);
    }
    console.log(JSON.stringify({ connected: clients.length }));
    // Hold them until told to stop.
    for await (const _ of Deno.stdin.readable) { /* wait for EOF */ }
    for (const c of clients) await c.close();
    break;
  }
  default:
    console.error(`bench client: unknown mode '${mode}'`);
    Deno.exit(2);
}
clearInterval(sampler);
