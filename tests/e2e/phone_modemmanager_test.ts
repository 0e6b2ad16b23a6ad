/**
 * /phone against the real ModemManager: `ferry phone --backend modemmanager`
 * runs as its own process on a private system bus, with a simulated AT modem
 * on a pseudo-terminal behind the daemon (tests/dev/phone/mmfixture.ts), and
 * this test mounts its /phone over mutual TLS as a desktop would. What the
 * modem really sent is checked at the modem's side.
 *
 * Needs root with CAP_SYS_ADMIN and the Debian packages modemmanager and
 * dbus; says why and skips otherwise.
 */

import assert from "node:assert/strict";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { OREAD, OWRITE } from "../../lib/styx/types.ts";
import type { Node } from "../../lib/fs/tree.ts";
import { tlsDial } from "../../lib/transport/tls.ts";
import { writeCredentials } from "../../lib/auth/ca.ts";
import { makeFixture } from "../auth/fixture.ts";
import { MmFixture, mmSkipReason, waitFor } from "../dev/phone/mmfixture.ts";

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const enc = new TextEncoder();
const dec = new TextDecoder();

const skip = mmSkipReason();
if (skip) console.log(`phone_modemmanager_test: skipped: ${skip}`);

async function walk(root: Node, name: string): Promise<Node> {
  const r = await root.walk(name.split("/"));
  assert.ok(r.node, `no ${name}`);
  return r.node;
}

async function cat(root: Node, name: string): Promise<string> {
  const f = await (await walk(root, name)).open(OREAD);
  try {
    let out = "";
    for (let off = 0n;;) {
      const b = await f.read(off, 8192);
      if (b.length === 0) return out;
      out += dec.decode(b);
      off += BigInt(b.length);
    }
  } finally {
    await f.close();
  }
}

async function echo(root: Node, name: string, text: string): Promise<void> {
  const f = await (await walk(root, name)).open(OWRITE);
  try {
    await f.write(0n, enc.encode(text));
  } finally {
    await f.close();
  }
}

/** Every line read from /phone/events, kept in order. */
class Events {
  lines: string[] = [];
  #taken = new Set<number>();
  #floor = 0;
  #stopped = false;

  constructor(private file: Awaited<ReturnType<Node["open"]>>) {
    this.#loop();
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      let b: Uint8Array;
      try {
        b = await this.file.read(0n, 8192);
      } catch {
        return;
      }
      if (b.length === 0) return;
      this.lines.push(...dec.decode(b).split("\n").filter((l) => l));
    }
  }

  /**
   * The first line not yet taken that matches `re` (lines before it stay
   * available: events from two sources may come in either order).
   */
  async next(re: RegExp): Promise<RegExpMatchArray> {
    let m: RegExpMatchArray | null = null;
    await waitFor(() => {
      for (let i = this.#floor; i < this.lines.length; i++) {
        if (this.#taken.has(i)) continue;
        m = this.lines[i]!.match(re);
        if (m) {
          this.#taken.add(i);
          while (this.#taken.has(this.#floor)) this.#floor++;
          return true;
        }
      }
      return false;
    }, `no event matching ${re}; events so far: ${JSON.stringify(this.lines)}`);
    return m!;
  }

  stop(): void {
    this.#stopped = true;
  }
}

Deno.test({
  name: "phone: /phone over mutual TLS with the real ModemManager and a simulated modem",
  ignore: skip !== "",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const mm = await MmFixture.start();
    const fx = await makeFixture();
    const state = await Deno.makeTempDir({ prefix: "ferry-phone-mm-" });
    const certs = `${fx.dir}/node`;
    const node = await fx.creds("phonehost", "node", { sans: ["127.0.0.1"] });
    await writeCredentials(certs, "phonehost", node.cert, node.key);
    await Deno.writeTextFile(`${certs}/ca.pem`, node.ca);
    const glenda = await fx.creds("glenda", "user");
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        FERRY,
        "phone",
        "--backend",
        "modemmanager",
        "--state",
        state,
        "--listen",
        "tcp!127.0.0.1!0",
        "--certs",
        certs,
        "--name",
        "phonehost",
      ],
      env: mm.env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let stderr = "";
    const errDone = (async () => {
      for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) stderr += c;
    })();
    let client: StyxClient | undefined;
    let events: Events | undefined;
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let first = "";
      while (!first.includes("\n")) {
        const r = await reader.read();
        if (r.done) throw new Error(`ferry phone exited: ${stderr}`);
        first += r.value;
      }
      const port = first.match(/on tcp!127\.0\.0\.1!(\d+)/)?.[1];
      assert.ok(port, `unexpected first line '${first}'`);
      const conn = await tlsDial("127.0.0.1", Number(port), { creds: glenda, peer: "phonehost" });
      client = await StyxClient.connect(conn);
      const root = await new RemoteTree(client).attach({ user: "glenda" }, "");
      const ev = new Events(await (await walk(root, "events")).open(OREAD));
      events = ev;

      await t.step("status names the modem, its network and signal", async () => {
        await waitFor(
          async () => /modem registered/.test(await cat(root, "status")),
          "the modem never showed as registered",
        );
        const st = await cat(root, "status");
        assert.match(st, /^backend modemmanager$/m);
        assert.match(st, /^modem registered \(Simulated AT modem\)$/m);
        assert.match(st, /^operator Ferry Mobile$/m);
        assert.match(st, /^signal \d+$/m);
      });

      const sendAndCheck = async (text: string, encoding: string, parts: number) => {
        await echo(root, "sms", `send 6412345678 '${text.replaceAll("'", "''")}'`);
        const [line, id] = await ev.next(/^(?:sent|failed) (\d+)/);
        assert.match(line!, /^sent/, `send failed: ${line}`);
        const s = await mm.state();
        const got = s.messages.find((m) => m.text === text);
        assert.ok(got, `the modem never sent '${text}': ${JSON.stringify(s.messages)}`);
        assert.equal(got.number, "6412345678");
        assert.equal(got.encoding, encoding);
        assert.equal(got.parts, parts);
        assert.match(
          await cat(root, "sms"),
          new RegExp(`^${id} \\S+ out 6412345678 sent ${parts} `, "m"),
        );
      };

      await t.step("sending: GSM-7, UCS-2 and a three-part message reach the modem", async () => {
        await sendAndCheck("Hello from Ferry: {ok} €5 [äü] ~ñ@", "gsm7", 1);
        await sendAndCheck("Привет, 日本 👋", "ucs2", 1);
        const long = Array.from({ length: 40 }, (_, i) => `part${i} of a long one`).join(" ")
          .slice(0, 400);
        await sendAndCheck(long, "gsm7", 3);
      });

      await t.step("receiving: a single and a multi-part message", async () => {
        await mm.modem("sms 5550001 hi there, desktop");
        const [, id] = await ev.next(/^sms 5550001 (\d+)$/);
        assert.match(
          await cat(root, "sms"),
          new RegExp(`^${id} \\S+ in 5550001 received 1 'hi there, desktop'$`, "m"),
        );
        const long = "Long incoming message. ".repeat(12).trim(); // 275 septets: two parts
        await mm.modem(`sms 5550002 ${long}`);
        const [, id2] = await ev.next(/^sms 5550002 (\d+)$/);
        assert.match(
          await cat(root, "sms"),
          new RegExp(`^${id2} \\S+ in 5550002 received 2 '${long}'$`, "m"),
        );
        const ucs = "Ответ: 好的 ✓";
        await mm.modem(`sms 5550003 ${ucs}`);
        await ev.next(/^sms 5550003 \d+$/);
        assert.match(await cat(root, "sms"), new RegExp(`in 5550003 received 1 '${ucs}'$`, "m"));
      });

      await t.step("an incoming call: ring, answer and hang up from the desktop", async () => {
        await mm.modem("ring 5551234");
        await ev.next(/^ring 5551234$/);
        await echo(root, "ctl", "answer");
        await ev.next(/^answered 5551234$/);
        assert.deepEqual((await mm.state()).call, {
          dir: "in",
          state: "active",
          number: "5551234",
        });
        assert.match(await cat(root, "status"), /^call active 5551234$/m);
        await echo(root, "ctl", "hangup");
        await ev.next(/^hangup$/);
        await waitFor(async () => (await mm.state()).call === null, "the modem never hung up");
        assert.deepEqual((await mm.state()).calls.slice(-3), [
          "remote-ring 5551234",
          "answer",
          "hangup",
        ]);
      });

      await t.step("an outgoing call: dial, the far end answers, then hangs up", async () => {
        await echo(root, "ctl", "dial 5559876");
        await waitFor(async () => (await mm.state()).call?.number === "5559876", "never dialled");
        assert.match(await cat(root, "status"), /^call dialing 5559876$/m);
        await mm.modem("answer");
        await ev.next(/^answered 5559876$/);
        await mm.modem("hangup");
        await ev.next(/^hangup$/);
        assert.match(await cat(root, "status"), /^call idle$/m);
      });

      await t.step("a missed call", async () => {
        await mm.modem("ring 5554321");
        await ev.next(/^ring 5554321$/);
        await mm.modem("hangup");
        await ev.next(/^missed 5554321$/);
        assert.match(await cat(root, "status"), /^call idle$/m);
      });

      await t.step("a call from a withheld number still rings", async () => {
        await mm.modem("ring");
        await ev.next(/^ring ''$/);
        await echo(root, "ctl", "answer");
        await ev.next(/^answered ''$/);
        await mm.modem("hangup");
        await ev.next(/^hangup$/);
      });

      await t.step("the modem refusing a send: reported failed, kept, not lost", async () => {
        await mm.modem("refuse on");
        await echo(root, "sms", "send 6412345678 'refused one'");
        const [, id] = await ev.next(/^failed (\d+) 'Unknown \(Message\.Unknown\)'$/);
        await mm.modem("refuse off");
        assert.ok((await mm.state()).refused >= 1);
        assert.match(
          await cat(root, "sms"),
          new RegExp(`^${id} \\S+ out 6412345678 'failed: [^']+' 1 'refused one'$`, "m"),
        );
        // Sent again on request, it goes.
        await echo(root, "sms", `resend ${id}`);
        await ev.next(new RegExp(`^sent ${id}$`));
        assert.ok((await mm.state()).messages.some((m) => m.text === "refused one"));
      });

      await t.step(
        "ModemManager restarting: the modem goes, comes back, nothing lost",
        async () => {
          await mm.stopDaemon();
          await ev.next(/^modem gone$/);
          assert.match(await cat(root, "status"), /^modem unavailable/m);
          await echo(root, "sms", "send 6412345678 'while the modem was away'");
          // A message reaches the modem while nobody is listening: stored on it.
          await mm.modem("sms 5550010 while you were out");
          assert.match(await cat(root, "status"), /^pending 1$/m);
          assert.match(
            await cat(root, "sms"),
            /out 6412345678 queued 1 'while the modem was away'$/m,
          );
          await mm.startDaemon();
          await ev.next(/^modem ready$/);
          const [, id] = await ev.next(/^sent (\d+)$/);
          await ev.next(/^sms 5550010 \d+$/);
          assert.ok((await mm.state()).messages.some((m) => m.text === "while the modem was away"));
          assert.match(
            await cat(root, "sms"),
            new RegExp(`^${id} \\S+ out 6412345678 sent 1 'while`, "m"),
          );
          // And it still hears the modem.
          await mm.modem("sms 5550009 after the restart");
          await ev.next(/^sms 5550009 \d+$/);
        },
      );
    } catch (e) {
      console.error(
        `ferry phone said:\n${stderr}\nModemManager's log (end):\n${mm.log.slice(-8000)}`,
      );
      throw e;
    } finally {
      events?.stop();
      await client?.close().catch(() => {});
      child.kill("SIGTERM");
      await child.status;
      await child.stdout.cancel().catch(() => {});
      await errDone.catch(() => {});
      await mm.stop();
      await fx.cleanup();
      await Deno.remove(state, { recursive: true }).catch(() => {});
    }
  },
});
