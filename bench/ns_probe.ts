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

import { Namespace } from "../lib/ns/namespace.ts";
import { MemTree } from "../lib/fs/memory.ts";

const PATH = "/usr/glenda/lib/deep/er/still/file";

async function setup(): Promise<{ plain: Namespace; mounted: Namespace; worst: Namespace }> {
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
  // "after": the name is found in the first member; "before": only in the last.
  return { plain, mounted: await build("after"), worst: await build("before") };
}

async function rate(ns: Namespace, ms: number): Promise<number> {
  let n = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    for (let i = 0; i < 100; i++) {
      const node = await ns.resolve(PATH);
      await node.close();
    }
    n += 100;
  }
  return n / (ms / 1000);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

if (import.meta.main) {
  const secs = Number(Deno.args[0] ?? "1");
  const { plain, mounted, worst } = await setup();
  if (mounted.mounts().length !== 100) throw new Error("setup did not make 100 mounts");
  for (const ns of [plain, mounted, worst]) await rate(ns, 200); // warm up
  const r = { plain: [] as number[], mounted: [] as number[], worst: [] as number[] };
  for (let round = 0; round < 5; round++) {
    r.plain.push(await rate(plain, secs * 1000));
    r.mounted.push(await rate(mounted, secs * 1000));
    r.worst.push(await rate(worst, secs * 1000));
  }
  const p = median(r.plain), m = median(r.mounted), w = median(r.worst);
  const fmt = (x: number) => Math.round(x).toLocaleString("en");
  console.log(`walk of ${PATH} (7 elements), medians of 5 rounds of ${secs}s:`);
  console.log(`  no mounts:                                ${fmt(p)} walks/s`);
  console.log(
    `  100 mounts, 4-deep union, name in member 1: ${fmt(m)} walks/s (${
      (p / m).toFixed(2)
    }x slower)`,
  );
  console.log(
    `  100 mounts, 4-deep union, name in member 4: ${fmt(w)} walks/s (${
      (p / w).toFixed(2)
    }x slower)`,
  );
  for (const ns of [plain, mounted, worst]) await ns.close();
}
