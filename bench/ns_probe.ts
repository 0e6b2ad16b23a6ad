/**
 * Path resolution through a namespace: walks per second through a namespace
 * with 100 mounts and a 4-deep union, against the same walk through a
 * namespace with no mounts, in the same run. Peer: the no-mount namespace
 * over the same in-memory tree (target: at most 2x slower).
 *
 * Run: deno run --allow-read --allow-env bench/ns_probe.ts [seconds-per-round]
 *
 * @module
 */

import process from "node:process";
import { Namespace } from "../lib/ns/namespace.ts";
import { MemTree } from "../lib/fs/memory.ts";
import { median } from "./util.ts";

const PATH = "/usr/glenda/lib/deep/er/still/file";

interface Setup {
  plain: Namespace;
  elsewhere: Namespace;
  mounted: Namespace;
  worst: Namespace;
}

async function setup(): Promise<Setup> {
  const root = new MemTree({ owner: "glenda" });
  await root.writeFile(PATH, "x");
  for (let i = 0; i < 100; i++) await root.mkdirp(`/n/m${i}`);
  for (let i = 0; i < 4; i++) await root.mkdirp(`/union${i}/empty`);
  const caller = { user: "glenda" };
  const plain = new Namespace(root, { caller });

  // 100 mounts, one of them a 4-deep union on /usr/glenda that the walk crosses.
  const build = async (order: "after" | "before") => {
    const ns = new Namespace(root, { caller });
    for (let i = 0; i < 97; i++) await ns.bind(`/union${i % 4}`, `/n/m${i}`);
    for (let i = 0; i < 3; i++) {
      await ns.bind(
        `/union${i}`,
        "/usr/glenda",
        order === "after" ? { after: true } : { before: true },
      );
    }
    return ns;
  };
  // 100 mounts, none on the walked path.
  const elsewhere = new Namespace(root, { caller });
  for (let i = 0; i < 100; i++) await elsewhere.bind(`/union${i % 4}`, `/n/m${i}`);
  // "after": the name is found in the first member; "before": only in the last.
  return { plain, elsewhere, mounted: await build("after"), worst: await build("before") };
}

/** CPU seconds this process has used: other load on the machine does not count in it. */
function cpuSecs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Walks per CPU second, over about `ms` of wall time. */
async function rate(ns: Namespace, ms: number): Promise<number> {
  let n = 0;
  const end = performance.now() + ms;
  const c0 = cpuSecs();
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++) {
      const node = await ns.resolve(PATH);
      await node.close();
    }
    n += 100;
  }
  return n / (cpuSecs() - c0);
}

if (import.meta.main) {
  const secs = Number(Deno.args[0] ?? "1");
  const all = await setup();
  if (all.mounted.mounts().length !== 100) throw new Error("setup did not make 100 mounts");
  const cases: [keyof Setup, string][] = [
    ["plain", "no mounts"],
    ["elsewhere", "100 mounts, none on the path"],
    ["mounted", "100 mounts, 4-deep union, name in member 1"],
    ["worst", "100 mounts, 4-deep union, name in member 4"],
  ];
  for (const [k] of cases) await rate(all[k], 200); // warm up
  const r = new Map<string, number[]>(cases.map(([k]) => [k, []]));
  for (let round = 0; round < 5; round++) {
    for (const [k] of cases) r.get(k)!.push(await rate(all[k], secs * 1000));
  }
  const base = median(r.get("plain")!);
  const fmt = (x: number) => Math.round(x).toLocaleString("en").padStart(9);
  console.log(`walk of ${PATH} (7 elements), per CPU second, medians of 5 rounds of ${secs}s:`);
  for (const [k, label] of cases) {
    const v = median(r.get(k)!);
    console.log(`  ${label.padEnd(44)} ${fmt(v)} walks/s  ${(base / v).toFixed(2)}x`);
  }
  console.log(
    "  (member 4: members 1-3 each answer a miss through tryWalk, without an exception)",
  );
  for (const [k] of cases) await all[k].close();
}
