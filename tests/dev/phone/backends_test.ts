// The ModemManager and Termux backends, run against stand-in executables
// placed first on PATH. Each stand-in checks the exact arguments it gets
// (anything else exits 64), logs them, and prints output in the real tool's
// documented format from files the test writes.

import assert from "node:assert/strict";
import type { Node } from "../../../lib/fs/tree.ts";
import { OREAD, OWRITE } from "../../../lib/styx/types.ts";
import { Phone } from "../../../lib/dev/phone/tree.ts";
import { ModemManagerBackend, parseMmTime } from "../../../lib/dev/phone/modemmanager.ts";
import { TermuxBackend } from "../../../lib/dev/phone/termux.ts";
import { tokenize } from "../../../lib/fs/synthetic.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function walk(root: Node, name: string): Promise<Node> {
  const r = await root.walk([name]);
  assert.ok(r.node);
  return r.node;
}
async function cat(root: Node, name: string): Promise<string> {
  const f = await (await walk(root, name)).open(OREAD);
  const b = await f.read(0n, 65536);
  await f.close();
  return dec.decode(b);
}
async function echo(root: Node, name: string, text: string): Promise<void> {
  const f = await (await walk(root, name)).open(OWRITE);
  try {
    await f.write(0n, enc.encode(text));
  } finally {
    await f.close();
  }
}

// Logs "name<US>arg1<US>arg2..." one invocation per line.
const LOG = `printf '%s' "$(basename "$0")" >>"$STANDIN/log"
for a in "$@"; do printf '\\037%s' "$a" >>"$STANDIN/log"; done
printf '\\n' >>"$STANDIN/log"
bad() { echo "error: unexpected arguments: $*" >&2; exit 64; }
`;

const MMCLI = `#!/bin/bash
${LOG}
S="$STANDIN"
case "$1|$2|$3|$4" in
  "-m|any|--messaging-list-sms|-J") cat "$S/sms-list.json" 2>/dev/null || echo '{"modem.messaging.sms":[]}' ;;
  "-m|any|--voice-list-calls|-J") cat "$S/calls.json" 2>/dev/null || echo '{"modem.voice.call":[]}' ;;
  "-m|any|-J|") cat "$S/modem.json" ;;
  -s\\|*\\|-J\\|) cat "$S/sms-$2.json" ;;
  -o\\|*\\|-J\\|) cat "$S/call-$2.json" ;;
  -s\\|*\\|--send\\|)
    if [ -e "$S/send-error" ]; then
      echo "error: couldn't send the SMS: 'GDBus.Error:org.freedesktop.ModemManager1.Error.Core.Failed: no network'" >&2
      exit 1
    fi
    echo "successfully sent the SMS" ;;
  -o\\|*\\|--start\\|) echo "successfully started the call" ;;
  -o\\|*\\|--accept\\|) echo "successfully accepted the call" ;;
  -o\\|*\\|--hangup\\|) echo "successfully hung up the call" ;;
  -m\\|any\\|--messaging-create-sms=*\\|) [ $# -eq 3 ] || bad "$@"
    echo "Successfully created new SMS: /org/freedesktop/ModemManager1/SMS/7" ;;
  -m\\|any\\|--voice-create-call=number=*\\|) [ $# -eq 3 ] || bad "$@"
    echo "Successfully created new call: /org/freedesktop/ModemManager1/Call/3" ;;
  *) bad "$@" ;;
esac
`;

const TERMUX_SEND = `#!/bin/bash
${LOG}
[ $# -eq 3 ] && [ "$1" = "-n" ] || bad "$@"
if [ -e "$STANDIN/send-error" ]; then echo "Error: no SIM" >&2; exit 1; fi
`;
const TERMUX_LIST = `#!/bin/bash
${LOG}
[ "$*" = "-t inbox -l 50" ] || bad "$@"
cat "$STANDIN/inbox.json" 2>/dev/null || echo '[]'
`;
const TERMUX_CALL = `#!/bin/bash
${LOG}
[ $# -eq 1 ] || bad "$@"
`;
const TERMUX_INFO = `#!/bin/bash
${LOG}
[ $# -eq 0 ] || bad "$@"
cat <<'EOF'
{
  "data_enabled": "true",
  "device_software_version": "01",
  "network_operator_name": "Spark NZ",
  "network_type": "lte",
  "network_roaming": false,
  "phone_count": 1,
  "phone_type": "gsm",
  "sim_state": "ready"
}
EOF
`;

interface StandIn {
  dir: string;
  env: Record<string, string>;
  calls(): Promise<string[][]>;
  clear(): Promise<void>;
  put(name: string, content: unknown): Promise<void>;
}

async function standIns(scripts: Record<string, string>): Promise<StandIn> {
  const dir = await Deno.makeTempDir();
  await Deno.mkdir(`${dir}/bin`);
  for (const [name, text] of Object.entries(scripts)) {
    await Deno.writeTextFile(`${dir}/bin/${name}`, text, { mode: 0o755 });
  }
  await Deno.writeTextFile(`${dir}/log`, "");
  return {
    dir,
    env: { PATH: `${dir}/bin:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`, STANDIN: dir },
    async calls() {
      const text = await Deno.readTextFile(`${dir}/log`);
      return text.split("\n").filter((l) => l !== "").map((l) => l.split("\x1f"));
    },
    clear: () => Deno.writeTextFile(`${dir}/log`, ""),
    put: (name, content) =>
      Deno.writeTextFile(
        `${dir}/${name}`,
        typeof content === "string" ? content : JSON.stringify(content),
      ),
  };
}

Deno.test("modemmanager backend against a stand-in mmcli", async (t) => {
  const si = await standIns({ mmcli: MMCLI });
  const stateDir = `${si.dir}/state`;
  const errors: string[] = [];
  const mm = new ModemManagerBackend({ env: si.env, pollMs: 0 });
  const phone = await Phone.open({ backend: mm, stateDir, log: (m) => errors.push(m) });
  const root = await phone.tree().attach({ user: "glenda" }, "");
  const events = await (await walk(root, "events")).open(OREAD);
  const next = async () => dec.decode(await events.read(0n, 8192));
  try {
    await t.step("send: create then send, with exact arguments", async () => {
      await echo(root, "sms", "send +6412345678 'it''s ok, really'");
      assert.equal(await next(), "sent 1\n");
      assert.deepEqual(await si.calls(), [
        [
          "mmcli",
          "-m",
          "any",
          `--messaging-create-sms=text="it's ok, really",number='+6412345678'`,
        ],
        ["mmcli", "-s", "7", "--send"],
      ]);
      await echo(root, "sms", "send 555 hello there");
      assert.equal(await next(), "sent 2\n");
      assert.deepEqual((await si.calls())[2], [
        "mmcli",
        "-m",
        "any",
        "--messaging-create-sms=text='hello there',number='555'",
      ]);
    });

    await t.step("a failed send shows mmcli's reason", async () => {
      await si.put("send-error", "");
      await echo(root, "sms", "send 555 nope");
      assert.deepEqual(tokenize(await next()), [
        "failed",
        "3",
        "'mmcli' failed (exit 1): error: couldn't send the SMS: " +
        "'GDBus.Error:org.freedesktop.ModemManager1.Error.Core.Failed: no network'",
      ]);
      const last = (await cat(root, "sms")).trimEnd().split("\n").at(-1)!;
      assert.match(tokenize(last)[4]!, /^failed: 'mmcli' failed \(exit 1\): error: couldn't/);
      await Deno.remove(`${si.dir}/send-error`);
    });

    await t.step("received messages are polled once each", async () => {
      await si.clear();
      await si.put("sms-list.json", {
        "modem.messaging.sms": [
          "/org/freedesktop/ModemManager1/SMS/4",
          "/org/freedesktop/ModemManager1/SMS/5",
        ],
      });
      await si.put("sms-4.json", {
        sms: {
          "dbus-path": "/org/freedesktop/ModemManager1/SMS/4",
          content: { number: "+64211", text: 'hi "there"\nline 2', data: "--" },
          properties: {
            "pdu-type": "deliver",
            state: "received",
            storage: "me",
            timestamp: "2026-11-27T09:00:00+13",
          },
        },
      });
      await si.put("sms-5.json", {
        sms: {
          "dbus-path": "/org/freedesktop/ModemManager1/SMS/5",
          content: { number: "+64999", text: "part" },
          properties: { "pdu-type": "deliver", state: "receiving" },
        },
      });
      await mm.poll();
      assert.equal(await next(), "sms +64211 4\n");
      assert.deepEqual(await si.calls(), [
        ["mmcli", "-m", "any", "--messaging-list-sms", "-J"],
        ["mmcli", "-s", "4", "-J"],
        ["mmcli", "-s", "5", "-J"],
        ["mmcli", "-m", "any", "--voice-list-calls", "-J"],
      ]);
      await si.put("sms-5.json", {
        sms: {
          content: { number: "+64999", text: "whole" },
          properties: { "pdu-type": "deliver", state: "received" },
        },
      });
      await mm.poll();
      assert.equal(await next(), "sms +64999 5\n");
      await mm.poll();
      const lines = (await cat(root, "sms")).trimEnd().split("\n");
      assert.equal(lines.length, 5);
      assert.match(
        lines[3]!,
        /^4 2026-11-26T20:00:00.000Z in \+64211 received 1 'hi "there"\\nline 2'$/,
      );
    });

    await t.step("an incoming call rings, is answered, and the caller hangs up", async () => {
      await si.put("calls.json", { "modem.voice.call": ["/org/freedesktop/ModemManager1/Call/1"] });
      await si.put("call-1.json", {
        call: {
          "dbus-path": "/org/freedesktop/ModemManager1/Call/1",
          properties: { number: "+64555", direction: "incoming", state: "ringing-in" },
        },
      });
      await mm.poll();
      assert.equal(await next(), "ring +64555\n");
      await si.clear();
      await echo(root, "ctl", "answer");
      assert.equal(await next(), "answered +64555\n");
      assert.deepEqual(await si.calls(), [["mmcli", "-o", "1", "--accept"]]);
      assert.match(await cat(root, "status"), /^call active \+64555$/m);
      await assert.rejects(echo(root, "ctl", "mute"), {
        message: "mute: ModemManager cannot mute calls; mute the microphone in the audio mixer",
      });
      await si.put("calls.json", { "modem.voice.call": [] });
      await mm.poll();
      assert.equal(await next(), "hangup\n");
      assert.match(await cat(root, "status"), /^call idle$/m);
    });

    await t.step("an incoming call that stops ringing is missed", async () => {
      await si.put("calls.json", { "modem.voice.call": ["/org/freedesktop/ModemManager1/Call/2"] });
      await si.put("call-2.json", {
        call: { properties: { number: "777", direction: "incoming", state: "ringing-in" } },
      });
      await mm.poll();
      assert.equal(await next(), "ring 777\n");
      await si.put("call-2.json", {
        call: { properties: { number: "777", direction: "incoming", state: "terminated" } },
      });
      await mm.poll();
      assert.equal(await next(), "missed 777\n");
      await si.put("calls.json", { "modem.voice.call": [] });
    });

    await t.step("dial, the other end answers, we hang up", async () => {
      await si.clear();
      await echo(root, "ctl", "dial 5551234");
      assert.deepEqual(await si.calls(), [
        ["mmcli", "-m", "any", "--voice-create-call=number=5551234"],
        ["mmcli", "-o", "3", "--start"],
      ]);
      assert.match(await cat(root, "status"), /^call dialing 5551234$/m);
      await si.put("calls.json", { "modem.voice.call": ["/org/freedesktop/ModemManager1/Call/3"] });
      await si.put("call-3.json", {
        call: { properties: { number: "5551234", direction: "outgoing", state: "active" } },
      });
      await mm.poll();
      assert.equal(await next(), "answered 5551234\n");
      await si.clear();
      await echo(root, "ctl", "hangup");
      assert.equal(await next(), "hangup\n");
      assert.deepEqual(await si.calls(), [["mmcli", "-o", "3", "--hangup"]]);
    });

    await t.step("status from mmcli -J", async () => {
      await si.put("modem.json", {
        modem: {
          "3gpp": { "operator-name": "Spark NZ", "registration-state": "home" },
          generic: {
            model: "EG25",
            state: "registered",
            "signal-quality": { recent: "yes", value: "67" },
          },
        },
      });
      const s = await cat(root, "status");
      assert.match(s, /^backend modemmanager$/m);
      assert.match(s, /^modem registered \(EG25\)$/m);
      assert.match(s, /^operator Spark NZ$/m);
      assert.match(s, /^signal 67$/m);
    });
    assert.deepEqual(errors, []);
  } finally {
    await events.close();
    await phone.close();
    await Deno.remove(si.dir, { recursive: true });
  }
});

Deno.test("a missing mmcli is named, and the tree keeps serving", async () => {
  const dir = await Deno.makeTempDir();
  const errors: string[] = [];
  const mm = new ModemManagerBackend({ env: { PATH: `${dir}/empty` }, pollMs: 0 });
  const phone = await Phone.open({ backend: mm, stateDir: dir, log: (m) => errors.push(m) });
  try {
    const root = await phone.tree().attach({ user: "glenda" }, "");
    assert.match(
      await cat(root, "status"),
      /^modem unavailable: cannot run 'mmcli': program not found$/m,
    );
    const events = await (await walk(root, "events")).open(OREAD);
    await echo(root, "sms", "send 555 hi");
    assert.deepEqual(tokenize(dec.decode(await events.read(0n, 8192))), [
      "failed",
      "1",
      "cannot run 'mmcli': program not found",
    ]);
    await assert.rejects(echo(root, "ctl", "dial 555"), {
      message: "dial: cannot run 'mmcli': program not found",
    });
    await mm.poll();
    await mm.poll();
    assert.deepEqual(errors, ["modemmanager: cannot run 'mmcli': program not found"]);
    assert.match(await cat(root, "sms"), /failed: cannot run/);
    await events.close();
  } finally {
    await phone.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("termux backend against stand-in Termux:API programs", async (t) => {
  const si = await standIns({
    "termux-sms-send": TERMUX_SEND,
    "termux-sms-list": TERMUX_LIST,
    "termux-telephony-call": TERMUX_CALL,
    "termux-telephony-deviceinfo": TERMUX_INFO,
  });
  const stateDir = `${si.dir}/state`;
  const errors: string[] = [];
  const tx = new TermuxBackend({ env: si.env, pollMs: 0 });
  const phone = await Phone.open({ backend: tx, stateDir, log: (m) => errors.push(m) });
  const root = await phone.tree().attach({ user: "glenda" }, "");
  const events = await (await walk(root, "events")).open(OREAD);
  const next = async () => dec.decode(await events.read(0n, 8192));
  try {
    await t.step("send", async () => {
      await echo(root, "sms", "send 6412345678 'hello  world'");
      assert.equal(await next(), "sent 1\n");
      assert.deepEqual(await si.calls(), [["termux-sms-send", "-n", "6412345678", "hello  world"]]);
      await si.put("send-error", "");
      await echo(root, "sms", "send 555 x");
      assert.equal(await next(), "failed 2 '''termux-sms-send'' failed (exit 1): Error: no SIM'\n");
      await Deno.remove(`${si.dir}/send-error`);
    });

    await t.step("inbox is polled; each message is stored once", async () => {
      await si.clear();
      await si.put("inbox.json", [
        {
          threadid: 4,
          type: "inbox",
          read: false,
          number: "+64211",
          received: "2026-11-27 10:01:00",
          body: "second",
          _id: 12,
        },
        {
          threadid: 4,
          type: "inbox",
          read: true,
          number: "+64211",
          received: "2026-11-27 10:00:00",
          body: "first",
          _id: 11,
        },
      ]);
      await tx.poll();
      assert.equal(await next(), "sms +64211 3\n");
      assert.equal(await next(), "sms +64211 4\n");
      await tx.poll();
      assert.deepEqual(await si.calls(), [
        ["termux-sms-list", "-t", "inbox", "-l", "50"],
        ["termux-sms-list", "-t", "inbox", "-l", "50"],
      ]);
      const lines = (await cat(root, "sms")).trimEnd().split("\n");
      assert.equal(lines.length, 4);
      assert.deepEqual(tokenize(lines[2]!).slice(2), ["in", "+64211", "received", "1", "first"]);
    });

    await t.step("dial works; answer, hangup and mute say Termux cannot", async () => {
      await si.clear();
      await echo(root, "ctl", "dial 5551234");
      assert.deepEqual(await si.calls(), [["termux-telephony-call", "5551234"]]);
      assert.match(await cat(root, "status"), /^call idle$/m);
      await assert.rejects(echo(root, "ctl", "answer"), {
        message: "answer: Termux cannot answer calls; answer on the phone",
      });
      await assert.rejects(echo(root, "ctl", "hangup"), {
        message: "hangup: Termux cannot end calls; hang up on the phone",
      });
      await assert.rejects(echo(root, "ctl", "mute"), {
        message: "mute: Termux cannot mute calls",
      });
    });

    await t.step("status", async () => {
      const s = await cat(root, "status");
      assert.match(s, /^modem gsm lte ready$/m);
      assert.match(s, /^operator Spark NZ$/m);
    });
    assert.deepEqual(errors, []);
  } finally {
    await events.close();
    await phone.close();
    await Deno.remove(si.dir, { recursive: true });
  }
});

Deno.test("mmcli timestamps with an hours-only offset", () => {
  assert.equal(parseMmTime("2025-08-21T17:20:16-05")?.toISOString(), "2025-08-21T22:20:16.000Z");
  assert.equal(parseMmTime("2025-08-21T17:20:16+05:30")?.toISOString(), "2025-08-21T11:50:16.000Z");
  assert.equal(parseMmTime(""), undefined);
  assert.equal(parseMmTime("garbage"), undefined);
});
