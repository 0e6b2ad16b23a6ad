/**
 * The article's "Sharing phone resources" section across real hosts: three
 * network namespaces on a private /24 that exists only between them.
 *
 * - `phone`: `ferry sh --phone sim:STATE`, so /phone is the simulated
 *   modem's tree; `echo send … >/phone/sms` works locally and
 *   `listen 'tcp!*!8000' { export /phone & }` serves it;
 * - `desktop`: mounts the phone's /phone at /tmp/phone and sends;
 * - `server`: `listen 'tcp!*!8000' { export /net & }` for the carrier case,
 *   where the phone accepts no inbound connection (nftables drops inbound
 *   SYNs), mounts the server's /net over its own and announces 8001 through
 *   it; the desktop reaches the phone at the server's address, sends, reads
 *   an incoming message and takes a call.
 *
 * Every connection uses mutual TLS with a CA made in a temp dir. Needs root;
 * the namespaces are removed in `finally` whatever happens.
 */

import assert from "node:assert/strict";
import { CertificateAuthority, writeCredentials } from "../../lib/auth/ca.ts";
import {
  blockInbound,
  connects,
  ferryIn,
  ferryOnce,
  type Hosts,
  hostsSkipReason,
  makeHosts,
  type Proc,
  reachable,
  run,
} from "./hosts.ts";

const skip = hostsSkipReason();
if (skip) console.log(`phone_netns_test: skipped: ${skip}`);

const NUMBER = "6412345678";

async function makeCerts(dir: string, hosts: Hosts): Promise<void> {
  const ca = await CertificateAuthority.init(dir, "phone-netns-test-ca");
  try {
    // In the carrier case the phone answers at the server's address (its
    // listen is announced there), so its certificate names that too.
    const names: [string, "node" | "user", string[]][] = [
      ["server", "node", [hosts.ip.server!]],
      ["phone", "node", [hosts.ip.phone!, hosts.ip.server!]],
      ["glenda", "user", []],
    ];
    for (const [name, kind, sans] of names) {
      const r = await ca.issue(name, { kind, sans });
      await writeCredentials(dir, name, r.certPem, r.keyPem);
    }
  } finally {
    ca.close();
  }
}

/** Wait until the simulator in `state` has transmitted a message with `text`. */
async function transmitted(state: string, text: string): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    const out = await Deno.readTextFile(`${state}/sim-outbox.jsonl`).catch(() => "");
    const sent = out.split("\n").filter((l) => l).map((l) => JSON.parse(l) as { text: string });
    if (sent.some((m) => m.text === text)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

Deno.test({
  name: "netns: the article's phone section across real hosts (direct and via the carrier)",
  ignore: skip !== "",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const tmp = await Deno.makeTempDir({ prefix: "ferry-phone-netns-" });
    const hosts = await makeHosts(["server", "phone", "desktop"], "fp");
    const procs: Proc[] = [];
    const certs = `${tmp}/certs`;
    const env = (h: string) => {
      const user = h === "desktop" ? "glenda" : h;
      return { USER: user, FERRY_CERTS: certs, FERRY_NAME: user };
    };
    const sh = (h: string, root: string, args: string[], stdin = false): Proc => {
      const p = ferryIn(hosts, h, ["sh", "-r", `${tmp}/${root}`, ...args], {
        env: env(h),
        stdin,
      });
      procs.push(p);
      return p;
    };
    const ip = hosts.ip;
    // A hang guard, not a time limit on Ferry: if something never comes,
    // ending the processes makes the waits fail instead of blocking forever.
    let hung = false;
    const guard = setTimeout(() => {
      hung = true;
      for (const p of procs) p.stop();
    }, 150_000);
    try {
      await Deno.mkdir(certs, { recursive: true, mode: 0o700 });
      await makeCerts(certs, hosts);
      let directPhone: Proc | undefined;

      await t.step("direct: the desktop mounts the phone's /phone and sends", async () => {
        const state = `${tmp}/state-direct`;
        directPhone = sh("phone", "phone-root", [
          "--phone",
          `sim:${state}`,
          "-c",
          [
            "echo send 6412345678 'from the phone itself' >/phone/sms",
            "cat /phone/sms",
            "listen 'tcp!*!8000' { export /phone & }",
            // The article's own line: no authentication (warned about).
            "listen -A 'tcp!*!8002' { export /phone & }",
            "echo listening",
          ].join("\n"),
        ]);
        await directPhone.waitFor(/listening/);
        assert.match(directPhone.out, /out 6412345678 \S+ 1 'from the phone itself'/);
        assert.ok(await transmitted(state, "from the phone itself"), directPhone.err);
        assert.ok(
          await reachable(hosts, "desktop", ip.phone!, 8000, { alive: () => !directPhone!.done }),
          `the phone never listened: ${directPhone.err}`,
        );

        const desktop = sh("desktop", "desktop-direct", [
          "-c",
          [
            "mkdir /tmp/phone",
            `mount 'tcp!${ip.phone}!8000' /tmp/phone`,
            `echo send ${NUMBER} 'hello' >/tmp/phone/sms`,
            "cat /tmp/phone/sms",
            "echo tls-done",
            "mkdir /tmp/plain",
            `mount -A 'tcp!${ip.phone}!8002' /tmp/plain`,
            `echo send ${NUMBER} 'hello without TLS' >/tmp/plain/sms`,
            "mkdir /tmp/refused",
            `mount -A 'tcp!${ip.phone}!8000' /tmp/refused`,
            "ls /tmp/refused",
            "echo desktop-done",
          ].join("\n"),
        ]);
        await desktop.waitFor(/desktop-done/);
        assert.match(desktop.out, /^2 \S+ out 6412345678 \S+ 1 'hello'$/m, desktop.err);
        assert.ok(await transmitted(state, "hello"), `not sent: ${directPhone.err}`);
        assert.ok(await transmitted(state, "hello without TLS"), desktop.err);
        // A plain mount of the TLS listener gets nothing.
        assert.match(desktop.out, /tls-done\ndesktop-done/, desktop.err);
      });

      await t.step("the carrier blocks inbound connections to the phone", async () => {
        await blockInbound(hosts, "phone");
        // The direct phone is still listening on 8000, yet nothing gets in.
        assert.equal(directPhone?.done, false, "the direct phone should still be running");
        assert.equal(await connects(hosts, "desktop", ip.phone!, 8000, 1), false);
        assert.equal(await connects(hosts, "server", ip.phone!, 8000, 1), false);
        await directPhone?.stop();
      });

      await t.step("carrier: the desktop reaches the phone through the server", async () => {
        const state = `${tmp}/state-carrier`;
        const server = sh("server", "server-root", [
          "-c",
          "listen 'tcp!*!8000' { export /net & }",
        ]);
        assert.ok(
          await reachable(hosts, "phone", ip.server!, 8000, { alive: () => !server.done }),
          `the server never listened: ${server.err}`,
        );
        const phone = sh("phone", "phone-root", [
          "--phone",
          `sim:${state}`,
          "-c",
          [
            `mount 'tcp!${ip.server}!8000' /net`,
            "listen 'tcp!*!8001' { export /phone & }",
            "echo listening",
          ].join("\n"),
        ]);
        await phone.waitFor(/listening/);
        assert.ok(
          await reachable(hosts, "desktop", ip.server!, 8001, { alive: () => !phone.done }),
          `the phone's listen never appeared on the server: ${phone.err}`,
        );

        const desktop = sh("desktop", "desktop-carrier", [], true);
        await desktop.send("mkdir /tmp/phone");
        await desktop.send(`mount 'tcp!${ip.server}!8001' /tmp/phone`);
        await desktop.send("ls /tmp/phone; echo mounted");
        await desktop.waitFor(/mounted/);
        assert.match(desktop.out, /\/tmp\/phone\/sms/, `mount failed: ${desktop.err}`);

        // Events from now on; the first SMS's "sent" shows the reader is in place
        // (an event published before the open reached the phone is not seen, so
        // send again until one is).
        await desktop.send("cat /tmp/phone/events &");
        await desktop.send(`echo send ${NUMBER} 'hello' >/tmp/phone/sms`);
        for (let k = 1; !(await desktop.waitForWithin(/^sent \d+$/m, 3000)); k++) {
          assert.ok(k < 10, `no events reached the desktop: ${desktop.out} ${desktop.err}`);
          await desktop.send(`echo send ${NUMBER} 'are you there ${k}' >/tmp/phone/sms`);
        }
        assert.ok(await transmitted(state, "hello"), `the phone sent nothing: ${phone.err}`);

        // An incoming SMS, read on the desktop.
        const sms = await ferryOnce(hosts, "phone", [
          "phone",
          "sim",
          "inject",
          "sms",
          "6415550000",
          "hi from the network",
          "--state",
          state,
        ]);
        assert.equal(sms.code, 0, sms.err);
        const [, id] = await desktop.waitFor(/^sms 6415550000 (\d+)$/m);
        await desktop.send("cat /tmp/phone/sms; echo listed");
        await desktop.waitFor(/listed/);
        assert.match(
          desktop.out,
          new RegExp(`^${id} \\S+ in 6415550000 received 1 'hi from the network'$`, "m"),
        );

        // A call: ring, answer from the desktop, status, hang up.
        const call = await ferryOnce(hosts, "phone", [
          "phone",
          "sim",
          "inject",
          "call",
          "5551234",
          "--state",
          state,
        ]);
        assert.equal(call.code, 0, call.err);
        await desktop.waitFor(/^ring 5551234$/m);
        await desktop.send("echo answer >/tmp/phone/ctl");
        await desktop.waitFor(/^answered 5551234$/m);
        await desktop.send("cat /tmp/phone/status; echo status-read");
        await desktop.waitFor(/call active 5551234\n[\s\S]*status-read/);
        await desktop.send("echo hangup >/tmp/phone/ctl");
        await desktop.waitFor(/^hangup$/m);
        // Bad input comes back with the phone's reason.
        await desktop.send("echo answer >/tmp/phone/ctl");
        await desktop.waitFor(/answer: nothing is ringing/, "err");
        await desktop.send("echo send 12ab hi >/tmp/phone/sms");
        await desktop.waitFor(/sms: bad number '12ab'/, "err");

        // Every TCP connection the phone has is one it made to the server.
        const conns = await run("ip", [
          "netns",
          "exec",
          hosts.ns("phone"),
          "ss",
          "-Htn",
          "state",
          "established",
        ]);
        const peers = conns.split("\n").filter((l) => l.trim()).map((l) => l.trim().split(/\s+/))
          .map((f) => f[f.length - 1]!);
        assert.ok(peers.length > 0, "the phone should have connections");
        for (const p of peers) assert.equal(p, `${ip.server}:8000`, `unexpected peer ${p}`);
      });
    } finally {
      clearTimeout(guard);
      if (hung) console.error("phone_netns_test: gave up waiting; processes were stopped");
      for (const p of procs) await p.stop();
      await hosts.cleanup();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  },
});
