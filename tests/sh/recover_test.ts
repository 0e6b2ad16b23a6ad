/**
 * The shell's view of a server that goes away: `mount -r` comes back by
 * itself, a plain mount stays lost, errors name the mount, and `ns` marks
 * lost mounts with a comment.
 */
import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { harness } from "./harness.ts";
import { Server } from "../styx/restartable.ts";

Deno.test("mount -r survives a server restart; a plain mount says it is lost", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/x`, "hello\n");
  const srv = new Server(dir);
  srv.start();
  const root = new MemTree({ owner: "glenda" });
  await root.mkdirp("/n/r");
  await root.mkdirp("/n/p");
  const ns = new Namespace(root, { caller: { user: "glenda" } });
  const { sh, run } = harness({ ns, user: "glenda" });
  const addr = `tcp!127.0.0.1!${srv.port}`;
  try {
    assert.equal((await run(`mount -r -A '${addr}' /n/r`))[2], "");
    assert.equal((await run(`mount -A '${addr}' /n/p`))[2], "");
    assert.deepEqual(await run("cat /n/r/x /n/p/x"), ["hello\nhello\n", "", ""]);

    await srv.stop();
    const [, e1, s1] = await run("cat /n/r/x");
    assert.notEqual(s1, "");
    assert.match(e1, new RegExp(`'/n/r' is no longer connected \\(${addr}: [^)]+\\)`));
    const [, e2] = await run("cat /n/p/x");
    assert.match(e2, /'\/n\/p' is no longer connected \(tcp!127\.0\.0\.1!\d+: [^)]+\)/);
    assert.doesNotMatch(e1 + e2, /file does not exist|hungup/);
    // ns marks both, in a comment, so that the listing still replays.
    const [listing] = await run("ns");
    assert.match(listing, /^mount -r -A \S+ \/n\/r # lost: .*redialling/m);
    assert.match(listing, /^mount -A [^-]\S+ \/n\/p # lost: tcp!127\.0\.0\.1!\d+: /m);

    srv.start();
    // The recovering mount comes back with no action by the user.
    let ok = false;
    for (let i = 0; !ok; i++) {
      if (i > 300) throw new Error("mount -r did not come back");
      const [o, e, s] = await run("cat /n/r/x");
      if (s === "") {
        assert.equal(o, "hello\n");
        ok = true;
      } else {
        assert.match(e, /'\/n\/r' is no longer connected/);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const [after] = await run("ns");
    assert.doesNotMatch(after, /\/n\/r # lost/);
    // The plain mount stays lost until it is mounted again.
    assert.match((await run("cat /n/p/x"))[1], /'\/n\/p' is no longer connected/);
    assert.equal((await run("unmount /n/p; unmount /n/r"))[2], "");
  } finally {
    await sh.jobs.waitAll();
    for (const d of sh.dialed) d.close();
    await ns.close();
    await srv.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
