/**
 * `ls -l` of a union of four remote members: the directory is listed, then
 * every name is walked and stat'ed, as a served namespace's client (or
 * FUSE) does. While the listing is open, a walk asks only the member the
 * listing showed has the name; with it closed, every earlier member is
 * asked first, a round trip each. Peer: the same names in one remote
 * directory. Each member is a `ferry listen -A` child process.
 *
 * deno run -A bench/union_probe.ts [--names 400] [--reps 3] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Namespace } from "../lib/ns/namespace.ts";
import { MemTree } from "../lib/fs/memory.ts";
import { dialStyx } from "../lib/net/connect.ts";
import { OREAD } from "../lib/styx/types.ts";
import { ferryArgv } from "../lib/self.ts";
import { median } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    names: { type: "string", default: "400" },
    reps: { type: "string", default: "3" },
    json: { type: "boolean" },
  },
});
const N = Number(values.names);
const REPS = Math.max(1, Number(values.reps));

const tmp = await Deno.makeTempDir({ prefix: "ferry-union-" });
const procs: Deno.ChildProcess[] = [];
async function listen(dir: string): Promise<string> {
  const [exe, ...args] = ferryArgv();
  const p = new Deno.Command(exe!, {
    args: [...args, "listen", "-A", "tcp!127.0.0.1!0", dir],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  procs.push(p);
  const r = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!banner.includes("\n")) banner += (await r.read()).value ?? "";
  r.releaseLock();
  return banner.match(/(tcp!\S+)/)![1]!;
}

try {
  // Member i holds every name i (mod 4); "all" holds every name.
  await Deno.mkdir(`${tmp}/all`);
  for (let m = 0; m < 4; m++) await Deno.mkdir(`${tmp}/m${m}`);
  for (let i = 0; i < N; i++) {
    await Deno.writeTextFile(`${tmp}/m${i % 4}/f${i}`, "x");
    await Deno.writeTextFile(`${tmp}/all/f${i}`, "x");
  }
  const ns = new Namespace(new MemTree(), { caller: { user: "bench" } });
  const root = await ns.resolve("/");
  for (const d of ["u", "p"]) {
    const c = await root.create(d, 0x80000000 | 0o777, OREAD);
    await c.file.close();
    await c.node.close();
  }
  await root.close();
  const dials = [];
  for (let m = 0; m < 4; m++) {
    const addr = await listen(`${tmp}/m${m}`);
    const d = await dialStyx(addr, { insecure: true, user: "bench" });
    dials.push(d);
    await ns.mount(d.tree, "/u", { after: m > 0, source: addr });
  }
  const pAddr = await listen(`${tmp}/all`);
  const pd = await dialStyx(pAddr, { insecure: true, user: "bench" });
  dials.push(pd);
  await ns.mount(pd.tree, "/p", { source: pAddr });

  const lsl = async (dir: string, keepOpen: boolean): Promise<number> => {
    const t = performance.now();
    const f = await ns.open(dir, OREAD);
    const names = (await f.readDir()).map((d) => d.name);
    if (!keepOpen) await f.close();
    for (const n of names) await ns.stat(`${dir}/${n}`);
    if (keepOpen) await f.close();
    if (names.length !== N) throw new Error(`listed ${names.length} of ${N}`);
    return performance.now() - t;
  };
  const open: number[] = [], closed: number[] = [], plain: number[] = [];
  await lsl("/u", true);
  for (let i = 0; i < REPS; i++) {
    open.push(await lsl("/u", true));
    closed.push(await lsl("/u", false));
    plain.push(await lsl("/p", true));
  }
  const o = median(open), c = median(closed), p = median(plain);
  if (values.json) {
    const what = `list + stat ${N} names, union of 4 remote members, ms (median of ${REPS})`;
    const peer = `one remote dir ${p.toFixed(0)}`;
    console.log(
      JSON.stringify([`${what}, listing open`, o.toFixed(0), peer, `${(o / p).toFixed(2)}x`]),
    );
    console.log(
      JSON.stringify([`${what}, listing closed`, c.toFixed(0), peer, `${(c / p).toFixed(2)}x`]),
    );
  } else {
    console.log(
      `list + stat ${N} names, 4 remote members: ${o.toFixed(0)} ms with the listing open, ` +
        `${c.toFixed(0)} ms with it closed first; one remote dir: ${p.toFixed(0)} ms ` +
        `(${(o / p).toFixed(2)}x and ${(c / p).toFixed(2)}x)`,
    );
  }
  await ns.close();
  for (const d of dials) d.close();
} finally {
  for (const p of procs) {
    p.kill("SIGTERM");
    await p.status;
  }
  await Deno.remove(tmp, { recursive: true });
}
