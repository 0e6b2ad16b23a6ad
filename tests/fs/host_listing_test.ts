// A large host directory served by `ferry listen`: many clients may hold it
// open at once without the server keeping a stat of every entry for each.
import assert from "node:assert/strict";
import { StyxClient } from "../../lib/styx/client.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";
import { OREAD } from "../../lib/styx/types.ts";
import { ferryArgv } from "../../lib/self.ts";

/** A process's resident memory, from ps(1): the test task's permissions do not cover /proc. */
function rssMiB(pid: number): number {
  const r = new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)], stdout: "piped" })
    .outputSync();
  const kb = Number(new TextDecoder().decode(r.stdout).trim());
  if (!r.success || !Number.isFinite(kb)) throw new Error(`ps found no process ${pid}`);
  return kb / 1024;
}

Deno.test("ferry listen: twenty clients each holding a 20,000-entry directory open cost the server little", async () => {
  const N = 20_000;
  const dir = await Deno.makeTempDir({ prefix: "ferry-listing-" });
  await Deno.mkdir(`${dir}/big`);
  for (let i = 0; i < N; i++) Deno.writeFileSync(`${dir}/big/entry${i}`, new Uint8Array(i % 7));
  const [exe, ...args] = ferryArgv();
  const server = new Deno.Command(exe!, {
    args: [...args, "listen", "-A", "tcp!127.0.0.1!0", dir],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const clients: StyxClient[] = [];
  try {
    const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let banner = "";
    while (!banner.includes("\n")) banner += (await reader.read()).value ?? "";
    reader.releaseLock();
    const port = Number(banner.match(/tcp!\S+!(\d+)/)![1]);
    const connect = async () => {
      const c = await StyxClient.connect(await tcpDial("127.0.0.1", port));
      clients.push(c);
      return c;
    };

    // The whole listing is right: every entry once, each with its size.
    const c0 = await connect();
    const all = await c0.ls(await c0.attach("glenda"), "/big");
    assert.equal(all.length, N);
    const byName = new Map(all.map((d) => [d.name, d]));
    assert.equal(byName.size, N);
    assert.equal(byName.get("entry12")!.length, 5n);

    const before = rssMiB(server.pid);
    for (let i = 0; i < 20; i++) {
      const c = await connect();
      const f = await c.openPath(await c.attach("glenda"), "/big", OREAD);
      const first = await f.read(0n, 8192);
      assert.ok(first.length > 0);
    }
    const grown = rssMiB(server.pid) - before;
    // Holding a stat per entry took about 1 KiB of RSS each, some 390 MiB
    // here, where names (and one batch of stats) take under 1 MiB per client.
    assert.ok(grown < 60, `the server grew by ${grown.toFixed(0)} MiB for 20 open listings`);
  } finally {
    for (const c of clients) await c.close().catch(() => {});
    server.kill("SIGTERM");
    await server.status;
    await server.stdout.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a host directory read again from the start is listed afresh; a name removed meanwhile is left out", async () => {
  const { HostTree } = await import("../../lib/fs/host.ts");
  const dir = await Deno.makeTempDir({ prefix: "ferry-listing-" });
  try {
    for (let i = 0; i < 600; i++) await Deno.writeTextFile(`${dir}/f${i}`, "x");
    const root = await new HostTree(dir).attach({ user: "glenda" }, "");
    const f = await root.open(OREAD);
    const it = f.dirEntries!();
    const first = await it.next();
    assert.ok(!first.done && first.value.length > 0 && first.value.length < 600);
    // Removed after the listing began: a later batch leaves it out.
    const seen = new Set(first.done ? [] : first.value.map((d) => d.name));
    const later = [...Array(600).keys()].map((i) => `f${i}`).find((n) => !seen.has(n))!;
    await Deno.remove(`${dir}/${later}`);
    let count = seen.size;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      assert.ok(!r.value.some((d) => d.name === later));
      count += r.value.length;
    }
    assert.equal(count, 599);
    await Deno.writeTextFile(`${dir}/new`, "y");
    const again = await f.readDir();
    assert.equal(again.length, 600);
    assert.ok(again.some((d) => d.name === "new"));
    await f.close();
    await root.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
