/**
 * A node killed outright while it starts a helper leaves the helper's
 * directory behind; the next node to start removes such leftovers, and
 * nothing that may still be in use.
 */
import assert from "node:assert/strict";
import { sweepStaleHelperDirs } from "../../lib/cpu/server.ts";

Deno.test("a starting node removes helper directories left over, and nothing in use", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-sweep-" });
  const old = new Date(Date.now() - 3600_000);
  const make = async (name: string, age: Date | null, socket: "none" | "dead" | "live") => {
    const dir = `${tmp}/${name}`;
    await Deno.mkdir(dir);
    let l: Deno.UnixListener | undefined;
    if (socket !== "none") {
      l = Deno.listen({ transport: "unix", path: `${dir}/ns` });
      if (socket === "dead") {
        l.close();
        l = undefined;
      }
    }
    if (age) await Deno.utime(dir, age, age);
    return l;
  };
  const live: Deno.UnixListener[] = [];
  try {
    await make("ferry-cpu-spare-0a1b2c", old, "none");
    await make("ferry-cpu-3d4e5f", old, "dead");
    live.push((await make("ferry-cpu-spare-aaaa01", old, "live"))!);
    await make("ferry-cpu-spare-bbbb02", null, "none");
    await make("ferry-cpu-spare-cccc03", old, "none");
    await Deno.writeTextFile(`${tmp}/ferry-cpu-spare-cccc03/notes`, "someone's\n");
    await Deno.utime(`${tmp}/ferry-cpu-spare-cccc03`, old, old);
    await make("ferry-cpu-kill-dddd04", old, "none");

    const removed = (await sweepStaleHelperDirs(tmp)).map((d) => d.slice(tmp.length + 1)).sort();
    assert.deepEqual(removed, ["ferry-cpu-3d4e5f", "ferry-cpu-spare-0a1b2c"]);
    const left = [...Deno.readDirSync(tmp)].map((e) => e.name).sort();
    assert.deepEqual(left, [
      "ferry-cpu-kill-dddd04",
      "ferry-cpu-spare-aaaa01",
      "ferry-cpu-spare-bbbb02",
      "ferry-cpu-spare-cccc03",
    ]);
    // No directory to look in: nothing removed, and no error.
    assert.deepEqual(await sweepStaleHelperDirs(`${tmp}/no-such-dir`), []);
  } finally {
    for (const l of live) l.close();
    await Deno.remove(tmp, { recursive: true });
  }
});
