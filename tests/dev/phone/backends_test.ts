// The Termux backend, run against stand-in executables placed first on
// PATH: each checks the exact arguments it gets (anything else exits 64),
// logs them, and prints output in the real tool's documented format from
// files the test writes. The ModemManager backend with no daemon on a
// private bus (the real daemon is in tests/e2e/phone_modemmanager_test.ts).

import assert from "node:assert/strict";
import type { Node } from "../../../lib/fs/tree.ts";
import { OREAD, OWRITE } from "../../../lib/styx/types.ts";
import { Phone } from "../../../lib/dev/phone/tree.ts";
import { ModemManagerBackend, parseMmTime } from "../../../lib/dev/phone/modemmanager.ts";
import { TermuxBackend } from "../../../lib/dev/phone/termux.ts";
import { tokenize } from "../../../lib/fs/synthetic.ts";

const enc = new TextEncoder();
const hasDbus = await new Deno.Command("dbus-daemon", { args: ["--version"], stdout: "null" })
  .output().then((r) => r.success, () => false);
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

const TERMUX_SEND = `#!/bin/bash
${LOG}
[ $# -eq 2 ] && [ "$1" = "-n" ] || bad "$@"
cat >>"$STANDIN/stdin"
printf '\n--\n' >>"$STANDIN/stdin"
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

Deno.test({
  name: "modemmanager backend with no ModemManager on the bus: unavailable, sends stay queued",
  ignore: !hasDbus,
  async fn() {
    const dir = await Deno.makeTempDir();
    const sock = `${dir}/bus.sock`;
    await Deno.writeTextFile(
      `${dir}/bus.conf`,
      `<busconfig><type>system</type><listen>unix:path=${sock}</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/>
<allow receive_sender="*"/></policy></busconfig>`,
    );
    const bus = new Deno.Command("dbus-daemon", {
      args: ["--config-file", `${dir}/bus.conf`, "--nofork", "--nopidfile"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const errors: string[] = [];
    let phone: Phone | undefined;
    try {
      for (let i = 0; i < 100; i++) {
        if (await Deno.stat(sock).then(() => true, () => false)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const mm = new ModemManagerBackend({ busAddress: `unix:path=${sock}` });
      phone = await Phone.open({ backend: mm, stateDir: dir, log: (m) => errors.push(m) });
      const root = await phone.tree().attach({ user: "glenda" }, "");
      assert.match(
        await cat(root, "status"),
        /^modem unavailable: ModemManager reports no modem$/m,
      );
      await echo(root, "sms", "send 555 hi");
      await phone.drain();
      assert.match(await cat(root, "sms"), /^1 \S+ out 555 queued 1 'hi'$/m);
      assert.match(await cat(root, "status"), /^pending 1$/m);
      await assert.rejects(echo(root, "ctl", "dial 555"), {
        message: "dial: ModemManager reports no modem",
      });
      await assert.rejects(echo(root, "sms", "resend 1"), {
        message: "resend: message 1 is queued",
      });
      assert.deepEqual(errors, []);
    } finally {
      await phone?.close();
      bus.kill("SIGTERM");
      await bus.status;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("modemmanager backend: a bus that is not there is named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const mm = new ModemManagerBackend({ busAddress: `unix:path=${dir}/none.sock` });
    await assert.rejects(
      Phone.open({ backend: mm, stateDir: dir }),
      new RegExp(`^Error: Cannot reach the system bus at 'unix:path=${dir}/none.sock'`),
    );
  } finally {
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
      // A backslash sequence that sh's echo would expand goes through as typed.
      await echo(root, "sms", "send 6412345678 'hello  world \\c not cut'");
      assert.equal(await next(), "sent 1\n");
      assert.deepEqual(await si.calls(), [["termux-sms-send", "-n", "6412345678"]]);
      assert.equal(await Deno.readTextFile(`${si.dir}/stdin`), "hello  world \\c not cut\n--\n");
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
          sender: "Aroha",
          address: "+64211",
          number: "+64211",
          received: "2026-11-27 10:01:00",
          body: "second",
          _id: 12,
        },
        {
          threadid: 4,
          type: "inbox",
          read: true,
          address: "+64211",
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

Deno.test("ModemManager timestamps with an hours-only offset", () => {
  assert.equal(parseMmTime("2025-08-21T17:20:16-05")?.toISOString(), "2025-08-21T22:20:16.000Z");
  assert.equal(parseMmTime("2025-08-21T17:20:16+05:30")?.toISOString(), "2025-08-21T11:50:16.000Z");
  assert.equal(parseMmTime(""), undefined);
  assert.equal(parseMmTime("garbage"), undefined);
});
