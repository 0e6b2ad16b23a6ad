import assert from "node:assert/strict";
import { ProgDevice } from "../../../lib/dev/prog/device.ts";
import { parseStat } from "../../../lib/dev/prog/procfs.ts";
import { hostUsers } from "../../../lib/fs/users.ts";
import { MemTree } from "../../../lib/fs/memory.ts";
import { Namespace } from "../../../lib/ns/namespace.ts";
import { serve } from "../../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../../lib/styx/client.ts";
import { tcpDial, tcpListen } from "../../../lib/transport/tcp.ts";
import { OREAD, OWRITE } from "../../../lib/styx/types.ts";
import type { Conn } from "../../../lib/transport/conn.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

function sleeper(): Deno.ChildProcess {
  return new Deno.Command("sleep", { args: ["300"], stdout: "null", stderr: "null" }).spawn();
}

async function nsOver(
  tree: import("../../../lib/fs/tree.ts").Tree,
  user: string,
  groups?: string[],
) {
  const mem = new MemTree();
  await mem.mkdirp("/prog");
  const ns = new Namespace(mem, { caller: { user, groups } });
  await ns.mount(tree, "/prog");
  return ns;
}

Deno.test("parseStat copes with odd command names", () => {
  const s = parseStat("42 (a) b (c)) S 1 40 40 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 9999 0 0");
  assert.equal(s.name, "a) b (c)");
  assert.equal(s.state, "S");
  assert.equal(s.ppid, 1);
  assert.equal(s.pgrp, 40);
  assert.equal(s.start, "9999");
});

Deno.test("/prog device after prog(3)", async (t) => {
  const me = (await hostUsers()).userName(Deno.uid() ?? 0);
  const dev = new ProgDevice({ adminGroups: ["wheel"], pollMs: 20 });
  const children: Deno.ChildProcess[] = [];
  try {
    await t.step("one directory per process; status and cmdline", async () => {
      const child = sleeper();
      children.push(child);
      const ns = await nsOver(dev.tree(), me);
      const names = (await ns.readDir("/prog")).map((d) => d.name);
      assert.ok(names.includes(String(child.pid)));
      assert.ok(names.includes(String(Deno.pid)));
      const d = await ns.stat(`/prog/${child.pid}`);
      assert.equal(d.uid, me);
      const status = dec.decode(await ns.readFile(`/prog/${child.pid}/status`));
      const f = status.trim().split(/\s+/);
      assert.equal(f[0], String(child.pid));
      assert.equal(f[2], me);
      assert.match(f[3]!, /^(sleep|ready)$/);
      assert.match(f[4]!, /^\d+K$/);
      assert.equal(f[5], "sleep");
      assert.match(
        dec.decode(await ns.readFile(`/prog/${child.pid}/cmdline`)),
        /^(\/\S+\/)?sleep 300\n$/,
      );
      await ns.close();
    });

    await t.step("kill: refused to others, allowed to the owner; wait sees the end", async () => {
      const child = children[0]!;
      const other = await nsOver(dev.tree(), "mallory");
      const ctl = await other.open(`/prog/${child.pid}/ctl`, OWRITE);
      await assert.rejects(ctl.write(0n, enc.encode("kill")), /permission denied/);
      await assert.rejects(ctl.write(0n, enc.encode("explode")), /unknown ctl message 'explode'/);
      await ctl.close();
      await other.close();
      const ns = await nsOver(dev.tree(), me);
      const wait = await ns.open(`/prog/${child.pid}/wait`, OREAD);
      const waited = wait.read(0n, 100);
      await ns.writeFile(`/prog/${child.pid}/ctl`, enc.encode("kill"), { create: false });
      const st = await child.status;
      assert.equal(st.signal, "SIGKILL");
      assert.equal(dec.decode(await waited), `${child.pid} 'sleep' exited\n`);
      await wait.close();
      await assert.rejects(ns.stat(`/prog/${child.pid}`), /does not exist/);
      await ns.close();
    });

    await t.step(
      "a wait read interrupted before it starts fails, and nothing is left over",
      async () => {
        // The read's poll would later fail on the aborted signal too; that
        // failure must not surface as an uncaught error that ends the program.
        const child = sleeper();
        children.push(child);
        const ns = await nsOver(dev.tree(), me);
        const wait = await ns.open(`/prog/${child.pid}/wait`, OREAD);
        const ac = new AbortController();
        ac.abort();
        await assert.rejects(wait.read(0n, 100, { signal: ac.signal }), /interrupted/);
        // Long enough for several polls.
        await new Promise((r) => setTimeout(r, 100));
        await wait.close();
        await ns.close();
        child.kill("SIGKILL");
        await child.status;
      },
    );

    await t.step("an admin group may kill anyone's process", async () => {
      const child = sleeper();
      children.push(child);
      const ns = await nsOver(dev.tree(), "boss", ["wheel"]);
      await ns.writeFile(`/prog/${child.pid}/ctl`, enc.encode("kill"), { create: false });
      assert.equal((await child.status).signal, "SIGKILL");
      await ns.close();
    });

    await t.step("list and kill across a Styx mount", async () => {
      const child = sleeper();
      children.push(child);
      const l = tcpListen("127.0.0.1", 0);
      const conns: Conn[] = [];
      (async () => {
        for await (const c of l) {
          conns.push(c);
          serve(c, dev.tree()).catch(() => {});
        }
      })();
      const port = Number(l.addr.split("!")[2]);
      const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
      try {
        const intruder = await nsOver(new RemoteTree(client, { uname: "mallory" }), "mallory");
        const names = (await intruder.readDir("/prog")).map((d) => d.name);
        assert.ok(names.includes(String(child.pid)));
        await assert.rejects(
          intruder.writeFile(`/prog/${child.pid}/ctl`, enc.encode("kill"), { create: false }),
          /permission denied/,
        );
        await intruder.close();
        const owner = await nsOver(new RemoteTree(client), me);
        await owner.writeFile(`/prog/${child.pid}/ctl`, enc.encode("kill"), { create: false });
        assert.equal((await child.status).signal, "SIGKILL");
        await owner.close();
      } finally {
        await client.close();
        l.close();
        for (const c of conns) c.close();
      }
    });
  } finally {
    for (const c of children) {
      try {
        c.kill("SIGKILL");
      } catch { /* already gone */ }
      await c.status;
    }
  }
});

/** Pids in process group `pgrp`, from /proc. */
async function groupOf(pgrp: number): Promise<Map<number, number>> {
  const { listPids, readProc } = await import("../../../lib/dev/prog/procfs.ts");
  const out = new Map<number, number>();
  for (const pid of await listPids()) {
    const p = await readProc(pid);
    if (p?.pgrp === pgrp && p.stateLetter !== "Z") out.set(pid, p.uid);
  }
  return out;
}

Deno.test({
  name: "killgrp refuses a group holding someone else's process, names it, kills nothing",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    // A new process group: a root shell, a root sleep, and a sleep running as nobody.
    const leader = new Deno.Command("setsid", {
      args: [
        "sh",
        "-c",
        "setpriv --reuid=nobody --regid=nogroup --clear-groups sleep 300 & sleep 300 & wait",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const dev = new ProgDevice({ adminGroups: ["wheel"], pollMs: 20 });
    try {
      let members = await groupOf(leader.pid);
      while (![...members.values()].includes(65534) || members.size < 3) {
        await new Promise((r) => setTimeout(r, 20));
        members = await groupOf(leader.pid);
      }
      const nobodys = [...members].find(([, uid]) => uid === 65534)![0];
      const roots = [...members].filter(([, uid]) => uid === 0).map(([pid]) => pid);

      // nobody owns the process it names, but not the rest of its group.
      const ns = await nsOver(dev.tree(), "nobody");
      const err = await ns.writeFile(`/prog/${nobodys}/ctl`, enc.encode("killgrp"), {
        create: false,
      }).then(() => null, (e: Error) => e);
      assert.ok(err, "killgrp was allowed");
      assert.match(err.message, /permission denied/);
      const named = Number(/process (\d+)/.exec(err.message)?.[1]);
      assert.ok(roots.includes(named), `'${err.message}' names no root process of the group`);
      assert.deepEqual([...(await groupOf(leader.pid)).keys()].sort(), [...members.keys()].sort());
      await ns.close();

      // An admin may kill every member.
      const admin = await nsOver(dev.tree(), "boss", ["wheel"]);
      await admin.writeFile(`/prog/${nobodys}/ctl`, enc.encode("killgrp"), { create: false });
      assert.equal((await leader.status).signal, "SIGKILL");
      await admin.close();
    } finally {
      try {
        Deno.kill(-leader.pid, "SIGKILL");
      } catch { /* already gone */ }
      await leader.status;
    }
  },
});
