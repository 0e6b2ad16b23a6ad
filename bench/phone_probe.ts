/**
 * /phone speed, for each backend that runs here:
 *
 * - event latency: from the modem's event (the simulated AT modem writing
 *   `+CMTI` or `RING`; for the sim backend, an injection) to the line on
 *   /phone/events, median and p99;
 * - SMS round trip: from the write to /phone/sms to the modem receiving
 *   the `+CMGS` PDU (sim backend: to its outbox write, seen as "sent").
 *
 * The modemmanager backend runs against the real ModemManager on a private
 * bus with the simulated modem (tests/dev/phone/mmfixture.ts: root and the
 * Debian packages modemmanager and dbus; skipped otherwise, saying why).
 * Times cross processes on one machine, so they use the wall clock
 * (performance.timeOrigin + performance.now()). Peer: none; a polling
 * backend's latency is its poll interval (3 s before this backend followed
 * D-Bus signals).
 *
 * Run: deno run -A bench/phone_probe.ts [--rounds N] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Phone } from "../lib/dev/phone/tree.ts";
import { SimBackend, simInject } from "../lib/dev/phone/sim.ts";
import { ModemManagerBackend } from "../lib/dev/phone/modemmanager.ts";
import { OREAD, OWRITE } from "../lib/styx/types.ts";
import type { Node } from "../lib/fs/tree.ts";
import { MmFixture, mmSkipReason } from "../tests/dev/phone/mmfixture.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string", default: "20" }, json: { type: "boolean" } },
});
const ROUNDS = Number(values.rounds);
const now = () => performance.timeOrigin + performance.now();
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Every /phone/events line with the time it was read. */
class Events {
  lines: { line: string; at: number }[] = [];
  #seen = 0;
  #wake: (() => void) | undefined;

  constructor(private f: Awaited<ReturnType<Node["open"]>>) {
    this.#loop();
  }

  async #loop(): Promise<void> {
    for (;;) {
      let b: Uint8Array;
      try {
        b = await this.f.read(0n, 8192);
      } catch {
        return;
      }
      if (b.length === 0) return;
      const at = now();
      for (const line of dec.decode(b).split("\n").filter((l) => l)) this.lines.push({ line, at });
      this.#wake?.();
    }
  }

  async next(re: RegExp): Promise<{ m: RegExpMatchArray; at: number }> {
    const deadline = now() + 30_000;
    for (;;) {
      for (let i = this.#seen; i < this.lines.length; i++) {
        const m = this.lines[i]!.line.match(re);
        if (m) {
          this.#seen = i + 1;
          return { m, at: this.lines[i]!.at };
        }
      }
      if (now() > deadline) throw new Error(`no event matching ${re} within 30 s`);
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 100);
      });
    }
  }
}

async function write(root: Node, name: string, text: string): Promise<void> {
  const { node } = await root.walk([name]);
  const f = await node!.open(OWRITE);
  try {
    await f.write(0n, enc.encode(text));
  } finally {
    await f.close();
  }
}

function stats(xs: number[]): { median: number; p99: number; n: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
  return { median: at(0.5), p99: at(0.99), n: s.length };
}

type Row = [string, string, number, number, number];
const rows: Row[] = [];
function report(backend: string, figure: string, xs: number[]): void {
  const s = stats(xs);
  rows.push([backend, figure, s.median, s.p99, s.n]);
  if (!values.json) {
    console.log(
      `${backend.padEnd(13)} ${figure.padEnd(36)} median ${s.median.toFixed(1).padStart(7)} ms` +
        `   p99 ${s.p99.toFixed(1).padStart(7)} ms   (n=${s.n})`,
    );
  }
}

async function benchSim(): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-phone-bench-" });
  const phone = await Phone.open({ backend: new SimBackend({ stateDir: dir }), stateDir: dir });
  try {
    const root = await phone.tree().attach({ user: "glenda" }, "");
    const ev = new Events(await (await root.walk(["events"])).node!.open(OREAD));
    const smsLat: number[] = [], ringLat: number[] = [], rtt: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      let t0 = now();
      await simInject(dir, ["sms", "5550001", `bench ${i}`]);
      smsLat.push((await ev.next(/^sms 5550001 \d+$/)).at - t0);
      t0 = now();
      await simInject(dir, ["call", "5550002"]);
      ringLat.push((await ev.next(/^ring 5550002$/)).at - t0);
      await simInject(dir, ["hangup"]);
      await ev.next(/^missed 5550002$/);
      t0 = now();
      await write(root, "sms", `send 6412345678 'round trip ${i}'`);
      rtt.push((await ev.next(/^sent \d+$/)).at - t0);
    }
    report("sim", "event latency: sms", smsLat);
    report("sim", "event latency: ring", ringLat);
    report("sim", "SMS round trip (to outbox, 'sent')", rtt);
  } finally {
    await phone.close();
    await Deno.remove(dir, { recursive: true });
  }
}

async function benchMm(): Promise<void> {
  const skip = mmSkipReason();
  if (skip) {
    console.log(`modemmanager: skipped: ${skip}`);
    return;
  }
  const mm = await MmFixture.start();
  const dir = await Deno.makeTempDir({ prefix: "ferry-phone-bench-" });
  const backend = new ModemManagerBackend({ busAddress: mm.busAddress });
  const phone = await Phone.open({ backend, stateDir: dir, log: () => {} });
  try {
    const root = await phone.tree().attach({ user: "glenda" }, "");
    const ev = new Events(await (await root.walk(["events"])).node!.open(OREAD));
    const smsLat: number[] = [], ringLat: number[] = [], missLat: number[] = [];
    const rtt: number[] = [], sentLat: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      let t0 = now();
      await mm.modem(`sms 5550001 bench ${i}`);
      smsLat.push((await ev.next(/^sms 5550001 \d+$/)).at - t0);
      t0 = now();
      await mm.modem("ring 5550002");
      ringLat.push((await ev.next(/^ring 5550002$/)).at - t0);
      t0 = now();
      await mm.modem("hangup");
      missLat.push((await ev.next(/^missed 5550002$/)).at - t0);
      const text = `round trip ${i}`;
      t0 = now();
      await write(root, "sms", `send 6412345678 '${text}'`);
      const sent = await ev.next(/^(sent|failed) \d+/);
      if (sent.m[1] !== "sent") throw new Error(`send failed: ${sent.m.input}`);
      sentLat.push(sent.at - t0);
      const got = (await mm.state()).messages.find((m) => m.text === text);
      if (!got) throw new Error(`the modem never got '${text}'`);
      rtt.push(got.at - t0);
      // ModemManager drops a +CMTI that comes while it reads the one before.
      await new Promise((r) => setTimeout(r, 1300));
    }
    report("modemmanager", "event latency: sms (+CMTI)", smsLat);
    report("modemmanager", "event latency: ring (RING)", ringLat);
    report("modemmanager", "event latency: missed (NO CARRIER)", missLat);
    report("modemmanager", "SMS round trip (to +CMGS)", rtt);
    report("modemmanager", "SMS write to 'sent' event", sentLat);
  } finally {
    await phone.close();
    await mm.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

await benchSim();
await benchMm();
if (values.json) { for (const r of rows) console.log(JSON.stringify(r)); }
