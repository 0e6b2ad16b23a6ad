/**
 * `ls -l` of a 10,000-entry remote directory through a namespace mount:
 * time and memory, beside the same listing of the host directory itself.
 * The server is a `ferry listen -A` child process.
 *
 * deno run -A bench/ls_probe.ts [--entries N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Namespace } from "../lib/ns/namespace.ts";
import { MemTree } from "../lib/fs/memory.ts";
import { dialStyx } from "../lib/net/connect.ts";
import { longListing } from "../lib/sh/builtins/util.ts";
import { ferryArgv } from "../lib/self.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { entries: { type: "string", default: "10000" } },
});
const N = Number(values.entries);
const dir = await Deno.makeTempDir({ prefix: "ferry-ls-" });
const empty = new Uint8Array(0);
for (let i = 0; i < N; i++) Deno.writeFileSync(`${dir}/file${String(i).padStart(5, "0")}`, empty);

const [exe, ...args] = ferryArgv();
const server = new Deno.Command(exe!, {
  args: [...args, "listen", "-A", "tcp!127.0.0.1!0", dir],
  stdout: "piped",
  stderr: "null",
}).spawn();
const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
let banner = "";
while (!banner.includes("\n")) banner += (await reader.read()).value ?? "";
const addr = banner.match(/(tcp!\S+)/)![1]!;

try {
  // The host listing, for scale: readdir + lstat of every entry.
  let t = performance.now();
  let count = 0;
  for (const e of Deno.readDirSync(dir)) {
    Deno.lstatSync(`${dir}/${e.name}`);
    count++;
  }
  const hostMs = performance.now() - t;

  const ns = new Namespace(new MemTree(), { caller: { user: "bench" } });
  const d = await dialStyx(addr, { insecure: true, user: "bench" });
  await ns.mount(d.tree, "/", { source: addr });
  const rss0 = Deno.memoryUsage().rss;
  t = performance.now();
  const entries = await ns.readDir("/");
  const lines = longListing(entries.map((dir) => ({ dir, name: dir.name })));
  const nsMs = performance.now() - t;
  const rss1 = Deno.memoryUsage().rss;
  if (lines.length !== count) throw new Error(`listed ${lines.length} of ${count} entries`);
  console.log(
    `ls -l of ${N} remote entries: ${nsMs.toFixed(0)} ms, RSS +${
      ((rss1 - rss0) / 2 ** 20).toFixed(1)
    } MiB (total ${(rss1 / 2 ** 20).toFixed(0)} MiB); host readdir+lstat of the same dir: ${
      hostMs.toFixed(0)
    } ms`,
  );
  d.close();
} finally {
  server.kill("SIGTERM");
  await server.status;
  await Deno.remove(dir, { recursive: true });
}
