/**
 * A probe of the Styx client's speed over loopback TCP, against a Ferry
 * server exporting a host directory in a child process:
 *
 * - read a large file (default 1 GiB) with readStream, against a raw Deno
 *   TCP stream of the same file's bytes from a child process;
 * - write the same amount with writeFrom;
 * - 1,000 files of 4 KiB: walk + open + read + clunk, one at a time and 16
 *   at a time;
 * - the client's resident memory during the big read.
 *
 * Usage: deno run -A bench/styx_client_probe.ts [--mib N] [--files N] [--no-raw] [--msize N]
 *        [--reps N]
 * (--no-raw skips the raw stream, so the client's memory figure is not
 * inflated by its garbage).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readStream, StyxClient, writeFrom } from "../lib/styx/client.ts";
import { serve } from "../lib/styx/server.ts";
import { HostTree } from "../lib/fs/host.ts";
import { tcpDial, tcpListen } from "../lib/transport/tcp.ts";
import { OREAD, OTRUNC, OWRITE } from "../lib/styx/types.ts";

const CHUNK = 256 * 1024;

async function serveMode(kind: string, path: string): Promise<void> {
  const l = tcpListen("127.0.0.1", 0);
  console.log(l.addr.split("!")[2]);
  for await (const c of l) {
    if (kind === "styx") {
      serve(c, new HostTree(path));
      continue;
    }
    // Raw: send the file's bytes as they are, then close.
    (async () => {
      const f = await Deno.open(path);
      const buf = new Uint8Array(CHUNK);
      for (;;) {
        const n = await f.read(buf);
        if (n === null) break;
        await c.write(buf.slice(0, n));
      }
      f.close();
      c.close();
    })();
  }
}

async function child(
  kind: string,
  path: string,
): Promise<{ port: number; proc: Deno.ChildProcess }> {
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--serve", kind, path],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = proc.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the ${kind} server exited before printing its port`);
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  proc.stdout.cancel().catch(() => {});
  return { port: Number(text.trim()), proc };
}

function mbs(bytes: number, ms: number): string {
  return (bytes / 1e6 / (ms / 1000)).toFixed(0);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mib: { type: "string", default: "1024" },
      files: { type: "string", default: "1000" },
      serve: { type: "string" },
      "no-raw": { type: "boolean", default: false },
      msize: { type: "string" },
      reps: { type: "string", default: "1" },
    },
    allowPositionals: true,
  });
  if (values.serve) {
    const path = Deno.args[Deno.args.length - 1]!;
    return await serveMode(values.serve, path);
  }
  const size = Number(values.mib) * 1024 * 1024;
  const nfiles = Number(values.files);
  const dir = await Deno.makeTempDir({ prefix: "ferry-probe-" });
  const procs: Deno.ChildProcess[] = [];
  try {
    // The big file.
    const big = `${dir}/big`;
    {
      const f = await Deno.open(big, { write: true, create: true });
      const block = new Uint8Array(CHUNK).map((_, i) => i * 7);
      for (let o = 0; o < size; o += CHUNK) await f.write(block);
      f.close();
    }
    await Deno.mkdir(`${dir}/small`);
    const small = new Uint8Array(4096).fill(65);
    for (let i = 0; i < nfiles; i++) await Deno.writeFile(`${dir}/small/f${i}`, small);

    const raw = await child("raw", big);
    const styx = await child("styx", dir);
    procs.push(raw.proc, styx.proc);

    const client = await StyxClient.connect(await tcpDial("127.0.0.1", styx.port), {
      msize: values.msize ? Number(values.msize) : undefined,
    });
    const root = await client.attach("probe");
    console.log(`msize ${client.msize}`);

    // Raw TCP read of the same bytes.
    const rawRead = async (): Promise<number> => {
      const c = await tcpDial("127.0.0.1", raw.port);
      const t0 = performance.now();
      let n = 0;
      for (;;) {
        const chunk = await c.read();
        if (chunk === null) break;
        n += chunk.length;
      }
      const ms = performance.now() - t0;
      if (n !== size) throw new Error(`raw read got ${n} bytes`);
      console.log(`raw TCP read      ${n} bytes  ${mbs(n, ms)} MB/s`);
      return n / 1e6 / (ms / 1000);
    };

    // Client read, with memory sampled.
    const styxRead = async (): Promise<number> => {
      const before = Deno.memoryUsage().rss;
      let peak = 0;
      const sampler = setInterval(() => (peak = Math.max(peak, Deno.memoryUsage().rss)), 20);
      const f = await client.openPath(root, "/big", OREAD);
      const t0 = performance.now();
      let n = 0;
      for await (const chunk of readStream(f)) n += chunk.length;
      const ms = performance.now() - t0;
      clearInterval(sampler);
      await f.close();
      if (n !== size) throw new Error(`styx read got ${n} bytes`);
      console.log(
        `styx read         ${n} bytes  ${mbs(n, ms)} MB/s  client RSS ${
          (before / 1048576).toFixed(0)
        } MiB before, peak ${(peak / 1048576).toFixed(0)} MiB`,
      );
      return n / 1e6 / (ms / 1000);
    };

    const reps = Number(values.reps);
    const raws: number[] = [];
    const styxs: number[] = [];
    for (let i = 0; i < reps; i++) {
      // The styx read goes first so its memory figure is not inflated by raw's garbage.
      styxs.push(await styxRead());
      if (!values["no-raw"]) raws.push(await rawRead());
    }
    if (raws.length > 0) {
      const med = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
      console.log(
        `median of ${reps}: raw ${med(raws).toFixed(0)} MB/s, styx ${
          med(styxs).toFixed(0)
        } MB/s, ratio ${(med(styxs) / med(raws)).toFixed(2)}`,
      );
    }

    // Client write from a stream of 256 KiB chunks.
    {
      let left = size;
      const block = new Uint8Array(CHUNK).fill(1);
      const src = new ReadableStream<Uint8Array>({
        pull(c) {
          if (left <= 0) return c.close();
          c.enqueue(block.slice());
          left -= CHUNK;
        },
      }, { highWaterMark: 0 });
      const f = await client.openPath(root, "/big", OWRITE | OTRUNC);
      const t0 = performance.now();
      const n = await writeFrom(f, src);
      const ms = performance.now() - t0;
      await f.close();
      console.log(`styx write        ${n} bytes  ${mbs(Number(n), ms)} MB/s`);
    }

    // Many small files.
    for (const par of [1, 16]) {
      const t0 = performance.now();
      let next = 0;
      let bytes = 0;
      await Promise.all(Array.from({ length: par }, async () => {
        while (next < nfiles) {
          const i = next++;
          const data = await client.readFile(root, `/small/f${i}`);
          bytes += data.length;
        }
      }));
      const ms = performance.now() - t0;
      if (bytes !== nfiles * 4096) throw new Error(`read ${bytes} bytes of small files`);
      console.log(
        `small files x${String(par).padEnd(2)}   ${nfiles} x 4 KiB  ${
          (nfiles / (ms / 1000)).toFixed(0)
        } files/s`,
      );
    }
    await client.close();
  } finally {
    for (const p of procs) {
      try {
        p.kill();
      } catch { /* gone */ }
      await p.status;
    }
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
