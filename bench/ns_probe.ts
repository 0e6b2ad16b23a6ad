/**
 * Path resolution through a namespace: walks per second through a namespace
 * with 100 mounts and a 4-deep union, the name sought in each member in
 * turn, against the same walk through a namespace with no mounts, in the
 * same run. Peer: the no-mount namespace over the same in-memory tree
 * (target: at most 2x slower for any member).
 *
 * Run: deno run --allow-read --allow-env bench/ns_probe.ts [SECS] [--json]
 * (each case walks for about 5 x SECS seconds, in 50 turns taken in rotation).
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { Namespace } from "../lib/ns/namespace.ts";
import { MemTree } from "../lib/fs/memory.ts";
import { median } from "./util.ts";

const PATH = "/usr/glenda/lib/deep/er/still/file";

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: { json: { type: "boolean" } },
  allowPositionals: true,
});

/**
 * The cases, each a namespace over the same tree. In "member K" the union
 * on /usr/glenda has four members: the directory that was there, which alone
 * holds "lib", and three empty directories, K-1 of them bound before it.
 */
async function setup(): Promise<[string, Namespace][]> {
  const root = new MemTree({ owner: "glenda" });
  await root.writeFile(PATH, "x");
  for (let i = 0; i < 100; i++) await root.mkdirp(`/n/m${i}`);
  for (let i = 0; i < 4; i++) await root.mkdirp(`/union${i}/empty`);
  const caller = { user: "glenda" };
  // 100 mounts, one of them a 4-deep union on /usr/glenda that the walk crosses.
  const union = async (member: number) => {
    const ns = new Namespace(root, { caller });
    for (let i = 0; i < 97; i++) await ns.bind(`/union${i % 4}`, `/n/m${i}`);
    for (let i = 0; i < 3; i++) {
      await ns.bind(
        `/union${i}`,
        "/usr/glenda",
        i < member - 1 ? { before: true } : { after: true },
      );
    }
    if (ns.mounts().length !== 100) throw new Error("setup did not make 100 mounts");
    return ns;
  };
  // 100 mounts, none on the walked path.
  const elsewhere = new Namespace(root, { caller });
  for (let i = 0; i < 100; i++) await elsewhere.bind(`/union${i % 4}`, `/n/m${i}`);
  const cases: [string, Namespace][] = [
    ["no mounts", new Namespace(root, { caller })],
    ["100 mounts, none on the path", elsewhere],
  ];
  for (let m = 1; m <= 4; m++) {
    cases.push([`100 mounts, 4-deep union, name in member ${m}`, await union(m)]);
  }
  return cases;
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
  const secs = Number(positionals[0] ?? "1");
  const cases = await setup();
  for (const [, ns] of cases) await rate(ns, 200); // warm up
  // Many short turns, each round starting one case further on: a burst of
  // load elsewhere on the machine, or whatever a case leaves behind for the
  // next, then falls on every case alike rather than on a few of them.
  const rounds = 50;
  const r = cases.map((): number[] => []);
  for (let round = 0; round < rounds; round++) {
    for (let j = 0; j < cases.length; j++) {
      const i = (round + j) % cases.length;
      r[i]!.push(await rate(cases[i]![1], (secs * 5000) / rounds));
    }
  }
  const base = median(r[0]!);
  const fmt = (x: number) => Math.round(x).toLocaleString("en");
  if (values.json) {
    for (const [i, [label]] of cases.entries()) {
      if (i === 0) continue;
      const v = median(r[i]!);
      console.log(JSON.stringify([
        `walk of ${PATH}, ${label}, walks per CPU second (median of ${rounds} turns)`,
        fmt(v),
        `no mounts ${fmt(base)}`,
        `${(base / v).toFixed(2)}x`,
      ]));
    }
  } else {
    console.log(
      `walk of ${PATH} (7 elements), per CPU second, medians of ${rounds} turns of ${
        (secs * 5000) / rounds
      } ms:`,
    );
    for (const [i, [label]] of cases.entries()) {
      const v = median(r[i]!);
      console.log(`  ${label.padEnd(44)} ${fmt(v).padStart(9)} walks/s  ${(base / v).toFixed(2)}x`);
    }
    console.log("  (members ahead of the one holding the name say at once that they lack it)");
  }
  for (const [, ns] of cases) await ns.close();
}
