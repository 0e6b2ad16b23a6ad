import assert from "node:assert/strict";
import * as path from "node:path";
import { Namespace } from "../../lib/ns/namespace.ts";
import { hostDevice, splitDevicePath, STANDARD_DIRS } from "../../lib/ns/devices.ts";
import { MemTree } from "../../lib/fs/memory.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function names(ns: Namespace, p: string): Promise<string[]> {
  return (await ns.readDir(p)).map((d) => d.name).sort();
}

Deno.test("devices by name", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-ns-" });
  const host = path.join(tmp, "host");
  const rootDir = path.join(tmp, "root");
  await Deno.mkdir(path.join(host, "home", "alice"), { recursive: true });
  await Deno.writeTextFile(path.join(host, "home", "alice", "notes"), "alice's notes");
  await Deno.writeTextFile(path.join(host, "single"), "one file");
  try {
    await t.step("splitDevicePath", () => {
      assert.deepEqual(splitDevicePath("#U*/home"), { name: "#U", spec: "*/home" });
      assert.deepEqual(splitDevicePath("#U"), { name: "#U", spec: "" });
      assert.deepEqual(splitDevicePath("#p"), { name: "#p", spec: "" });
      assert.throws(() => splitDevicePath("#"), /Bad device path '#'/);
    });

    await t.step(
      "standard namespace: root dir made on first use with the standard dirs",
      async () => {
        const ns = await Namespace.standard({ user: "alice", rootDir });
        assert.deepEqual(await names(ns, "/"), [...STANDARD_DIRS].sort());
        for (const d of STANDARD_DIRS) {
          assert.ok((await Deno.stat(path.join(rootDir, d))).isDirectory);
        }
        assert.equal(ns.caller.user, "alice");
        // Second use keeps what is there.
        await Deno.writeTextFile(path.join(rootDir, "tmp", "kept"), "k");
        const again = await Namespace.standard({ user: "alice", rootDir });
        assert.deepEqual(await names(again, "/tmp"), ["kept"]);
        await ns.close();
        await again.close();
      },
    );

    await t.step("#U* is the host root, #U*/sub a subtree, #U the root dir", async () => {
      const ns = await Namespace.standard({ user: "alice", rootDir });
      await ns.bind("#U*", "/n");
      assert.ok((await names(ns, "/n")).includes(tmp.split("/")[1]!));
      assert.equal(dec.decode(await ns.readFile(`/n${host}/home/alice/notes`)), "alice's notes");
      await ns.unmount("#U*", "/n");

      await ns.bind(`#U*${host}/home`, "/usr");
      assert.deepEqual(await names(ns, "/usr"), ["alice"]);
      assert.equal(dec.decode(await ns.readFile("/usr/alice/notes")), "alice's notes");
      // Writes reach the host.
      await ns.writeFile("/usr/alice/new", enc.encode("from ferry"));
      assert.equal(await Deno.readTextFile(path.join(host, "home", "alice", "new")), "from ferry");
      // .. out of the bound subtree goes to / in the namespace, not to the host's parent.
      assert.deepEqual(await names(ns, "/usr/.."), [...STANDARD_DIRS].sort());
      assert.deepEqual(ns.mounts(), [
        { kind: "bind", flags: "", source: `#U*${host}/home`, target: "/usr" },
      ]);

      await ns.bind("#U", "/tmp");
      assert.deepEqual(await names(ns, "/tmp"), [...STANDARD_DIRS].sort());
      await ns.unmount(undefined, "/tmp");

      // A file as a device path binds onto a file.
      await ns.bind(`#U*${host}/single`, "/usr/alice/notes");
      assert.equal(dec.decode(await ns.readFile("/usr/alice/notes")), "one file");

      // A device path can be read directly.
      assert.equal(dec.decode(await ns.readFile(`#U*${host}/single`)), "one file");
      await ns.close();
    });

    await t.step("a missing host path is named", async () => {
      const ns = await Namespace.standard({ user: "alice", rootDir });
      await assert.rejects(
        ns.bind(`#U*${host}/missing`, "/usr"),
        (e: Error) => e.message.includes(`${host}/missing`) && /does not exist/.test(e.message),
      );
      await assert.rejects(ns.bind("#Ufoo", "/usr"), /Bad '#U' spec 'foo'/);
      assert.deepEqual(ns.mounts(), []);
      await ns.close();
    });

    await t.step("devices given to a standard namespace and registered by hand", async () => {
      const phone = new MemTree();
      await phone.writeFile("/sms", "");
      const devices = new Map([["#f", () => phone]]);
      const ns = await Namespace.standard({ user: "alice", rootDir, devices });
      await ns.bind("#f", "/dev");
      assert.deepEqual(await names(ns, "/dev"), ["sms"]);
      ns.registerDevice("#H", hostDevice(host));
      await ns.bind("#H/home", "/n");
      assert.deepEqual(await names(ns, "/n"), ["alice"]);
      assert.throws(() => ns.registerDevice("U", hostDevice(host)), /Bad device name 'U'/);
      await ns.close();
    });

    await t.step("a device module loaded adds nothing: only the table given counts", async () => {
      const { netDevice } = await import("../../lib/dev/net/mod.ts");
      await import("../../lib/dev/prog/mod.ts");
      const bare = await Namespace.standard({ user: "alice", rootDir });
      await assert.rejects(bare.bind("#I", "/net"), /#I/);
      await assert.rejects(bare.bind("#p", "/prog"), /#p/);
      await bare.close();
      const ns = await Namespace.standard({
        user: "alice",
        rootDir,
        devices: new Map([["#I", netDevice()]]),
      });
      await ns.bind("#I", "/net");
      assert.ok((await names(ns, "/net")).includes("tcp"));
      await assert.rejects(ns.bind("#p", "/prog"), /#p/);
      await ns.close();
      await assert.rejects(
        Namespace.standard({ user: "alice", rootDir, devices: new Map([["net", netDevice()]]) }),
        /Bad device name 'net'/,
      );
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
