import assert from "node:assert/strict";
import type { Node } from "../../../lib/fs/tree.ts";
import { OREAD, OWRITE } from "../../../lib/styx/types.ts";
import { Phone } from "../../../lib/dev/phone/tree.ts";
import { SIM_OUTBOX, SimBackend, simInject } from "../../../lib/dev/phone/sim.ts";
import type {
  BackendSink,
  BackendStatus,
  PhoneBackend,
  SendResult,
} from "../../../lib/dev/phone/backend.ts";
import { tokenize } from "../../../lib/fs/synthetic.ts";
import { memPipe } from "../../../lib/transport/pipe.ts";
import { serve } from "../../../lib/styx/server.ts";
import { RemoteTree, StyxClient } from "../../../lib/styx/client.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function walk(root: Node, name: string): Promise<Node> {
  const r = await root.walk([name]);
  assert.ok(r.node, `walk ${name}`);
  return r.node;
}

async function cat(root: Node, name: string): Promise<string> {
  const f = await (await walk(root, name)).open(OREAD);
  let out = "";
  let off = 0n;
  for (;;) {
    const b = await f.read(off, 8192);
    if (b.length === 0) break;
    off += BigInt(b.length);
    out += dec.decode(b);
  }
  await f.close();
  return out;
}

async function echo(root: Node, name: string, text: string): Promise<void> {
  const f = await (await walk(root, name)).open(OWRITE);
  try {
    await f.write(0n, enc.encode(text));
  } finally {
    await f.close();
  }
}

/** Test the /phone tree's semantics through any root node (local or remote). */
export async function phoneSemantics(
  t: Deno.TestContext,
  root: Node,
  phone: Phone,
  stateDir: string,
): Promise<void> {
  const inject = (...args: string[]) => simInject(stateDir, args);

  await t.step("directory and initial status", async () => {
    const f = await root.open(OREAD);
    assert.deepEqual((await f.readDir()).map((d) => d.name), [
      "sms",
      "ctl",
      "status",
      "events",
      "conv",
    ]);
    await f.close();
    const status = await cat(root, "status");
    assert.match(status, /^modem sim$/m);
    assert.match(status, /^operator Ferry Sim$/m);
    assert.match(status, /^call idle$/m);
    assert.match(status, /^pending 0$/m);
  });

  // A reader that stays open across the steps below.
  const events = await (await walk(root, "events")).open(OREAD);
  const next = async () => dec.decode(await events.read(0n, 8192));

  await t.step("send an SMS through /phone/sms", async () => {
    await echo(root, "sms", "send 6412345678 'hello'\n");
    assert.equal(await next(), "sent 1\n");
    await echo(root, "sms", "send +6412345678 it''s two words");
    assert.equal(await next(), "sent 2\n");
    const lines = (await cat(root, "sms")).trimEnd().split("\n").map(tokenize);
    assert.equal(lines.length, 2);
    const [id, time, dir, number, status, segs, text] = lines[0]!;
    assert.deepEqual([id, dir, number, status, segs, text], [
      "1",
      "out",
      "6412345678",
      "sent",
      "1",
      "hello",
    ]);
    assert.ok(!Number.isNaN(Date.parse(time!)));
    assert.deepEqual(lines[1]!.slice(2), ["out", "+6412345678", "sent", "1", "its two words"]);
    const outbox = (await Deno.readTextFile(`${stateDir}/${SIM_OUTBOX}`)).trim().split("\n");
    assert.deepEqual(outbox.map((l) => JSON.parse(l).text), ["hello", "its two words"]);
  });

  await t.step("long texts count segments", async () => {
    await echo(root, "sms", `send 555 '${"x".repeat(161)}'`);
    await echo(root, "sms", `send 555 '${"ж".repeat(71)}'`);
    assert.equal(await next(), "sent 3\n");
    assert.equal(await next(), "sent 4\n");
    const lines = (await cat(root, "sms")).trimEnd().split("\n").map(tokenize);
    assert.equal(lines[2]![5], "2");
    assert.equal(lines[3]![5], "2");
  });

  await t.step("bad input is refused and nothing changes", async () => {
    const before = await cat(root, "sms");
    await assert.rejects(echo(root, "sms", "send 12ab hi"), { message: "sms: bad number '12ab'" });
    await assert.rejects(echo(root, "sms", "send 555 ''"), { message: "sms: empty text" });
    await assert.rejects(echo(root, "sms", "send 555"), {
      message: "bad ctl message 'send': usage: send NUMBER 'text'",
    });
    await assert.rejects(echo(root, "sms", "post 555 hi"), {
      message: "unknown ctl message 'post'",
    });
    await assert.rejects(echo(root, "ctl", "foo"), { message: "unknown ctl message 'foo'" });
    await assert.rejects(echo(root, "ctl", "answer"), { message: "answer: nothing is ringing" });
    await assert.rejects(echo(root, "ctl", "hangup"), {
      message: "hangup: no call in progress",
    });
    await assert.rejects(echo(root, "ctl", "dial 55x"), { message: "dial: bad number '55x'" });
    await assert.rejects(echo(root, "ctl", "dial"), {
      message: "bad ctl message 'dial': usage: dial NUMBER",
    });
    await assert.rejects(echo(root, "status", "x"), { message: "permission denied" });
    assert.equal(await cat(root, "sms"), before);
  });

  await t.step("a call: two readers see ring, answer, hangup", async () => {
    const second = await (await walk(root, "events")).open(OREAD);
    const r1 = next();
    const r2 = second.read(0n, 8192);
    await inject("call", "5551234");
    assert.equal(await r1, "ring 5551234\n");
    assert.equal(dec.decode(await r2), "ring 5551234\n");
    assert.match(await cat(root, "status"), /^call ringing 5551234$/m);
    await echo(root, "ctl", "answer\n");
    assert.equal(await next(), "answered 5551234\n");
    assert.equal(dec.decode(await second.read(0n, 8192)), "answered 5551234\n");
    assert.match(await cat(root, "status"), /^call active 5551234$/m);
    await echo(root, "ctl", "mute");
    assert.match(await cat(root, "status"), /^muted yes$/m);
    await echo(root, "ctl", "unmute");
    await echo(root, "ctl", "hangup");
    assert.equal(await next(), "hangup\n");
    assert.equal(dec.decode(await second.read(0n, 8192)), "hangup\n");
    await second.close();
    assert.match(await cat(root, "status"), /^call idle$/m);
  });

  await t.step("missed call, remote hangup, outgoing call", async () => {
    await inject("call", "777");
    assert.equal(await next(), "ring 777\n");
    await inject("hangup");
    assert.equal(await next(), "missed 777\n");
    await echo(root, "ctl", "dial 888");
    assert.match(await cat(root, "status"), /^call dialing 888$/m);
    await assert.rejects(echo(root, "ctl", "dial 999"), {
      message: "dial: a call is already dialing 888",
    });
    await inject("answer");
    assert.equal(await next(), "answered 888\n");
    assert.match(await cat(root, "status"), /^call active 888$/m);
    await inject("hangup");
    assert.equal(await next(), "hangup\n");
  });

  await t.step("incoming SMS", async () => {
    await inject("sms", "4321", "hi", "there");
    assert.equal(await next(), "sms 4321 5\n");
    const last = (await cat(root, "sms")).trimEnd().split("\n").map(tokenize).at(-1)!;
    assert.deepEqual(last.slice(2), ["in", "4321", "received", "1", "hi there"]);
    await assert.rejects(inject("sms", "12ab", "x"), { message: "inject sms: bad number '12ab'" });
    await assert.rejects(inject("bogus"), /unknown injection 'bogus'/);
  });

  await t.step("a failed send shows the reason", async () => {
    await inject("signal", "0");
    await echo(root, "sms", "send 555 'are you there?'");
    assert.equal(await next(), "failed 6 'no signal'\n");
    const last = (await cat(root, "sms")).trimEnd().split("\n").map(tokenize).at(-1)!;
    assert.equal(last[4], "failed: no signal");
    await assert.rejects(echo(root, "ctl", "dial 555"), { message: "dial: no signal" });
    await inject("signal", "80");
    // Kept with its reason, and sent on request once the network is back.
    await echo(root, "sms", "resend 6");
    assert.equal(await next(), "sent 6\n");
    assert.match(await cat(root, "sms"), /^6 \S+ out 555 sent 1 'are you there\?'$/m);
    await assert.rejects(echo(root, "sms", "resend 6"), { message: "resend: message 6 is sent" });
    await assert.rejects(echo(root, "sms", "resend 99"), {
      message: "resend: no outgoing message 99",
    });
    await assert.rejects(echo(root, "sms", "resend x"), { message: "resend: bad message id 'x'" });
  });

  await t.step("conversations by number under /phone/conv", async () => {
    const conv = await walk(root, "conv");
    const d = await conv.open(OREAD);
    assert.deepEqual((await d.readDir()).map((e) => e.name), [
      "6412345678",
      "+6412345678",
      "4321",
      "555",
    ]);
    await d.close();
    assert.match(await cat(conv, "4321"), /^5 \S+ in 4321 received 1 'hi there'\n$/);
    await echo(conv, "4321", "send 'hello back'");
    assert.equal(await next(), "sent 7\n");
    const lines = (await cat(conv, "4321")).trimEnd().split("\n").map(tokenize);
    assert.deepEqual(lines.map((l) => [l[0], l[2], l[6]]), [["5", "in", "hi there"], [
      "7",
      "out",
      "hello back",
    ]]);
    // The flat log keeps everything, the new message last.
    assert.match(await cat(root, "sms"), /^1 [\s\S]*\n7 \S+ out 4321 sent 1 'hello back'\n$/);
    await assert.rejects(echo(conv, "4321", "dial"), /unknown ctl message 'dial'/);
    await assert.rejects(conv.walk(["999"]), { message: "file does not exist" });
  });

  await t.step("a flushed read returns promptly", async () => {
    const ac = new AbortController();
    const p = events.read(0n, 8192, { signal: ac.signal });
    ac.abort();
    await assert.rejects(p, { message: "interrupted" });
    await inject("call", "42");
    assert.equal(await next(), "ring 42\n");
    await inject("hangup");
    assert.equal(await next(), "missed 42\n");
  });

  await events.close();
  assert.equal(phone.events.readers, 0);
}

Deno.test("/phone over the simulator, through the Tree interface", async (t) => {
  const stateDir = await Deno.makeTempDir();
  const phone = await Phone.open({ backend: new SimBackend({ stateDir }), stateDir });
  try {
    const root = await phone.tree().attach({ user: "glenda" }, "");
    await phoneSemantics(t, root, phone, stateDir);
  } finally {
    await phone.close();
    await Deno.remove(stateDir, { recursive: true });
  }
});

/** A backend whose sends never finish (the modem went away mid-send). */
class StuckBackend implements PhoneBackend {
  readonly name: string = "stuck";
  sends: string[] = [];
  start(_sink: BackendSink): Promise<void> {
    return Promise.resolve();
  }
  sendSms(_n: string, text: string): Promise<SendResult> {
    this.sends.push(text);
    return new Promise(() => {});
  }
  dial(): Promise<void> {
    return Promise.resolve();
  }
  answer(): Promise<void> {
    return Promise.resolve();
  }
  hangup(): Promise<void> {
    return Promise.resolve();
  }
  mute(): Promise<void> {
    return Promise.resolve();
  }
  status(): Promise<BackendStatus> {
    return Promise.resolve({ modem: "stuck", operator: "", signal: "" });
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

Deno.test("queued messages survive a restart and are sent exactly once", async (t) => {
  const stateDir = await Deno.makeTempDir();
  try {
    await t.step("queue while the modem is stuck", async () => {
      const stuck = new StuckBackend();
      const phone = await Phone.open({ backend: stuck, stateDir });
      const root = await phone.tree().attach({ user: "glenda" }, "");
      await echo(root, "sms", "send 111 one");
      await echo(root, "sms", "send 222 two");
      await echo(root, "sms", "send 333 three");
      assert.match(await cat(root, "status"), /^pending 3$/m);
      assert.deepEqual(stuck.sends, ["one"]);
      await phone.close();
      const saved = JSON.parse(await Deno.readTextFile(`${stateDir}/sms.json`));
      assert.deepEqual(
        saved.messages.map((m: { status: string }) => m.status),
        ["queued", "queued", "queued"],
      );
    });

    await t.step("restart sends each pending message once", async () => {
      const sim = new SimBackend({ stateDir, listen: false });
      const phone = await Phone.open({ backend: sim, stateDir });
      await phone.drain();
      const root = await phone.tree().attach({ user: "glenda" }, "");
      const lines = (await cat(root, "sms")).trimEnd().split("\n").map(tokenize);
      assert.deepEqual(lines.map((l) => [l[0], l[4], l[6]]), [
        ["1", "sent", "one"],
        ["2", "sent", "two"],
        ["3", "sent", "three"],
      ]);
      assert.match(await cat(root, "status"), /^pending 0$/m);
      await phone.close();
    });

    await t.step("another restart sends nothing again", async () => {
      const sim = new SimBackend({ stateDir, listen: false });
      const phone = await Phone.open({ backend: sim, stateDir });
      await phone.drain();
      await phone.close();
      const outbox = (await Deno.readTextFile(`${stateDir}/${SIM_OUTBOX}`)).trim().split("\n");
      assert.deepEqual(outbox.map((l) => JSON.parse(l).text), ["one", "two", "three"]);
    });

    await t.step("a store that cannot be saved refuses the write and keeps nothing", async () => {
      const phone = await Phone.open({
        backend: new SimBackend({ stateDir, listen: false }),
        stateDir,
      });
      const root = await phone.tree().attach({ user: "glenda" }, "");
      const before = await cat(root, "sms");
      await Deno.mkdir(`${stateDir}/sms.json.tmp`); // the temporary file cannot be written
      await assert.rejects(echo(root, "sms", "send 444 four"), /Cannot save message store/);
      assert.equal(await cat(root, "sms"), before);
      await Deno.remove(`${stateDir}/sms.json.tmp`);
      await echo(root, "sms", "send 444 four");
      await phone.drain();
      assert.match(await cat(root, "sms"), /^4 .* out 444 sent 1 'four'$/m);
      await phone.close();
    });

    await t.step("a damaged store is refused and kept", async () => {
      await Deno.writeTextFile(`${stateDir}/sms.json`, "{not json");
      await assert.rejects(
        Phone.open({ backend: new SimBackend({ stateDir, listen: false }), stateDir }),
        /Message store '.*sms\.json' is damaged/,
      );
      assert.equal(await Deno.readTextFile(`${stateDir}/sms.json`), "{not json");
    });
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

Deno.test("sim injection with no simulator running names the state dir", async () => {
  const stateDir = await Deno.makeTempDir();
  try {
    await assert.rejects(simInject(stateDir, ["call", "555"]), /No simulated phone is running/);
    const a = new SimBackend({ stateDir });
    const phone = await Phone.open({ backend: a, stateDir });
    await assert.rejects(
      Phone.open({ backend: new SimBackend({ stateDir }), stateDir }),
      /already running/,
    );
    await phone.close();
  } finally {
    await Deno.remove(stateDir, { recursive: true });
  }
});

Deno.test("/phone over the simulator, through a Styx server and client", async (t) => {
  const stateDir = await Deno.makeTempDir();
  const phone = await Phone.open({ backend: new SimBackend({ stateDir }), stateDir });
  const [a, b] = memPipe();
  const served = serve(b, phone.tree());
  const client = await StyxClient.connect(a);
  try {
    const root = await new RemoteTree(client).attach({ user: "glenda" }, "");
    await phoneSemantics(t, root, phone, stateDir);
    await root.close();
  } finally {
    await client.close();
    await served;
    await phone.close();
    await Deno.remove(stateDir, { recursive: true });
  }
});

/** A backend whose modem comes and goes, as ModemManager's does when it restarts. */
class FlakyModem extends StuckBackend {
  override readonly name: string = "flaky";
  sink: BackendSink | undefined;
  present = true;
  override start(sink: BackendSink): Promise<void> {
    this.sink = sink;
    return Promise.resolve();
  }
  override sendSms(_n: string, text: string): Promise<SendResult> {
    this.sends.push(text);
    return Promise.resolve(
      this.present ? { ok: true } : { ok: false, reason: "modem unavailable", retry: true },
    );
  }
}

Deno.test("while the modem is gone sends stay queued; they go once it is back", async () => {
  const stateDir = await Deno.makeTempDir();
  const modem = new FlakyModem();
  const phone = await Phone.open({ backend: modem, stateDir });
  try {
    const root = await phone.tree().attach({ user: "glenda" }, "");
    const events = await (await walk(root, "events")).open(OREAD);
    const next = async () => dec.decode(await events.read(0n, 8192));
    // Gone without telling: the send comes back "retry" and stays queued.
    modem.present = false;
    await echo(root, "sms", "send 111 one");
    await phone.drain();
    assert.match(await cat(root, "sms"), /^1 \S+ out 111 queued 1 'one'$/m);
    // Known gone: nothing is tried at all.
    await modem.sink!.event({ type: "modem", state: "gone" });
    assert.equal(await next(), "modem gone\n");
    await echo(root, "sms", "send 222 two");
    await phone.drain();
    assert.deepEqual(modem.sends, ["one"]);
    assert.match(await cat(root, "status"), /^pending 2$/m);
    // Back: both go, in order, once each.
    modem.present = true;
    await modem.sink!.event({ type: "modem", state: "ready" });
    assert.equal(await next(), "modem ready\n");
    assert.equal(await next(), "sent 1\n");
    assert.equal(await next(), "sent 2\n");
    assert.deepEqual(modem.sends, ["one", "one", "two"]);
    assert.match(await cat(root, "status"), /^pending 0$/m);
    await events.close();
  } finally {
    await phone.close();
    await Deno.remove(stateDir, { recursive: true });
  }
});
