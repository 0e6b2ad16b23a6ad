// The '#P' phone device: spec parsing, one shared phone per device, binding
// into a namespace, and `ferry sh --phone` as a real child process.

import assert from "node:assert/strict";
import {
  parsePhoneSpec,
  PHONE_DEVICE,
  PhoneDevice,
  phoneDevice,
} from "../../../lib/dev/phone/device.ts";
import { Namespace } from "../../../lib/ns/namespace.ts";
import { OREAD, OTRUNC, OWRITE } from "../../../lib/styx/types.ts";
import type { OpenFile } from "../../../lib/fs/tree.ts";

const FERRY = new URL("../../../cmd/ferry.ts", import.meta.url).pathname;
const enc = new TextEncoder();
const dec = new TextDecoder();

async function readAll(f: OpenFile): Promise<string> {
  let out = "";
  let off = 0n;
  for (;;) {
    const b = await f.read(off, 8192);
    if (b.length === 0) return out;
    out += dec.decode(b);
    off += BigInt(b.length);
  }
}

Deno.test("phone device", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-phone-dev-" });
  try {
    await t.step("parsePhoneSpec", () => {
      assert.deepEqual(parsePhoneSpec("sim"), { backend: "sim" });
      assert.deepEqual(parsePhoneSpec("sim:/a:b"), { backend: "sim", stateDir: "/a:b" });
      assert.deepEqual(parsePhoneSpec("termux:/s"), { backend: "termux", stateDir: "/s" });
      assert.deepEqual(parsePhoneSpec("modemmanager:2"), { backend: "modemmanager", modem: "2" });
      assert.throws(() => parsePhoneSpec("nokia"), /Bad phone 'nokia'.*sim, modemmanager, termux/);
      assert.throws(() => parsePhoneSpec("sim:"), /Bad phone 'sim:': nothing after ':'/);
      assert.throws(() => parsePhoneSpec(""), /Bad phone ''/);
    });

    await t.step("one phone per device, opened on first use", async () => {
      const dev = new PhoneDevice({ backend: "sim", stateDir: `${tmp}/shared` });
      const [a, b] = await Promise.all([dev.tree(), dev.tree()]);
      assert.equal(a, b);
      assert.equal(await dev.phone(), await dev.phone());
      await dev.close();
      await assert.rejects(() => dev.tree(), /The phone device is closed/);
    });

    await t.step("a second phone on the same state is refused, naming it", async () => {
      const one = new PhoneDevice({ backend: "sim", stateDir: `${tmp}/busy` });
      await one.tree();
      const two = new PhoneDevice({ backend: "sim", stateDir: `${tmp}/busy` });
      await assert.rejects(
        () => two.tree(),
        /Cannot start the sim phone \(state '.*busy'\): A simulated phone is already running/,
      );
      await two.close();
      await one.close();
    });

    await t.step("bind '#P' /phone; send; close records the outcome", async () => {
      const state = `${tmp}/bound`;
      await Deno.mkdir(`${tmp}/root/phone`, { recursive: true });
      const dev = new PhoneDevice({ backend: "sim", stateDir: state, uid: "glenda" });
      assert.equal(dev.device, PHONE_DEVICE);
      const devices = new Map([[dev.device, phoneDevice(dev)]]);
      const ns = await Namespace.standard({ user: "glenda", rootDir: `${tmp}/root`, devices });
      await ns.bind(PHONE_DEVICE, "/phone");
      await assert.rejects(() => ns.bind("#Px", "/phone"), /'#P' takes none/);
      const w = await ns.open("/phone/sms", OWRITE | OTRUNC);
      await w.write(0n, enc.encode("send 6412345678 'hello'\n"));
      await assert.rejects(() => w.write(0n, enc.encode("send 12ab hi\n")), /bad number '12ab'/);
      await w.close();
      const r = await ns.open("/phone/sms", OREAD);
      assert.match(await readAll(r), /^1 \S+ out 6412345678 \S+ 1 'hello'\n$/);
      await r.close();
      await dev.close();
      const saved = JSON.parse(await Deno.readTextFile(`${state}/sms.json`)) as {
        messages: { status: string }[];
      };
      assert.deepEqual(saved.messages.map((m) => m.status), ["sent"]);
    });

    await t.step("ferry sh --phone sim:STATE", async () => {
      const state = `${tmp}/sh-state`;
      const sh = (args: string[]) =>
        new Deno.Command(Deno.execPath(), {
          args: ["run", "--allow-all", FERRY, "sh", "-r", `${tmp}/sh-root`, ...args],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).output();
      const ok = await sh([
        "--phone",
        `sim:${state}`,
        "-c",
        "echo send 6412345678 'hello' >/phone/sms; cat /phone/sms; ls /phone",
      ]);
      assert.equal(ok.code, 0, dec.decode(ok.stderr));
      const out = dec.decode(ok.stdout);
      assert.match(out, /^1 \S+ out 6412345678 \S+ 1 'hello'$/m);
      assert.match(out, /^\/phone\/events$/m);
      const outbox = await Deno.readTextFile(`${state}/sim-outbox.jsonl`);
      assert.match(outbox, /"text":"hello"/);
      // The store says sent, so a restart does not send it again.
      const again = await sh(["--phone", `sim:${state}`, "-c", "cat /phone/sms"]);
      assert.equal(again.code, 0, dec.decode(again.stderr));
      assert.match(dec.decode(again.stdout), /out 6412345678 sent 1 'hello'/);
      assert.equal((await Deno.readTextFile(`${state}/sim-outbox.jsonl`)).split("\n").length, 2);

      const bad = await sh(["--phone", "nokia", "-c", "ls /phone"]);
      assert.equal(bad.code, 1);
      assert.match(dec.decode(bad.stderr), /sh: Bad phone 'nokia'/);

      // SIGTERM stops the phone in order: the message is recorded, the socket removed.
      const term = `${tmp}/term-state`;
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", FERRY, "sh", "-r", `${tmp}/sh-root`, "--phone", `sim:${term}`]
          .concat(["-c", "echo send 6412345678 bye >/phone/sms; echo ready; sleep 60"]),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = child.stdout.getReader();
      let seen = "";
      while (!seen.includes("ready")) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += dec.decode(value);
      }
      reader.releaseLock();
      child.kill("SIGTERM");
      const st = await child.output();
      assert.equal(st.code, 143, dec.decode(st.stderr));
      const termSaved = JSON.parse(await Deno.readTextFile(`${term}/sms.json`)) as {
        messages: { status: string }[];
      };
      assert.deepEqual(termSaved.messages.map((m) => m.status), ["sent"]);
      await assert.rejects(() => Deno.stat(`${term}/sim.sock`), Deno.errors.NotFound);

      // Without --phone there is no /phone.
      const none = await sh(["-c", "ls /phone"]);
      assert.equal(dec.decode(none.stdout), "");
    });
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
});
