import assert from "node:assert/strict";
import {
  type DialAddr,
  formatDialString,
  listenHost,
  parseDialString,
} from "../../lib/net/dial.ts";
import { serviceName, servicePort, SERVICES } from "../../lib/net/services.ts";

Deno.test("parseDialString", async (t) => {
  const good: [string, DialAddr, { net?: string; service?: string }?][] = [
    ["tcp!example.org!6666", { net: "tcp", host: "example.org", service: "6666", port: 6666 }],
    ["tcp!*!8000", { net: "tcp", host: "*", service: "8000", port: 8000 }],
    ["tcp!*!0", { net: "tcp", host: "*", service: "0", port: 0 }],
    ["net!example.org!styx", { net: "tcp", host: "example.org", service: "styx", port: 6666 }],
    ["net!fs!9fs", { net: "tcp", host: "fs", service: "9fs", port: 564 }],
    ["127.0.0.1!8000", { net: "tcp", host: "127.0.0.1", service: "8000", port: 8000 }],
    ["localhost!styx", { net: "tcp", host: "localhost", service: "styx", port: 6666 }],
    ["udp!10.0.0.1!domain", { net: "udp", host: "10.0.0.1", service: "domain", port: 53 }],
    ["tcp!host-1.example!https", {
      net: "tcp",
      host: "host-1.example",
      service: "https",
      port: 443,
    }],
    ["tcp!signer!signer", { net: "tcp", host: "signer", service: "signer", port: 6670 }],
    ["tcp![::1]!6666", { net: "tcp", host: "::1", service: "6666", port: 6666 }],
    ["tcp!::1!6666", { net: "tcp", host: "::1", service: "6666", port: 6666 }],
    ["[fe80::1%eth0]!ssh", { net: "tcp", host: "fe80::1%eth0", service: "ssh", port: 22 }],
    ["::ffff:10.1.2.3!80", { net: "tcp", host: "::ffff:10.1.2.3", service: "80", port: 80 }],
    // Defaults fill in what is left out.
    ["example.org", { net: "tcp", host: "example.org", service: "styx", port: 6666 }, {
      service: "styx",
    }],
    ["tcp!example.org", { net: "tcp", host: "example.org", service: "styx", port: 6666 }, {
      service: "styx",
    }],
    ["example.org!25", { net: "udp", host: "example.org", service: "25", port: 25 }, {
      net: "udp",
    }],
    ["tcp!h!65535", { net: "tcp", host: "h", service: "65535", port: 65535 }],
  ];
  for (const [s, want, defaults] of good) {
    await t.step(`accepts ${s}`, () => {
      assert.deepEqual(parseDialString(s, defaults), want);
    });
  }

  const bad: [string, string][] = [
    ["", "bad dial string '': it is empty"],
    ["tcp!host", "bad dial string 'tcp!host': missing port"],
    ["example.org", "bad dial string 'example.org': missing port"],
    ["tcp!host!", "bad dial string 'tcp!host!': missing port"],
    ["tcp!!6666", "bad dial string 'tcp!!6666': missing host"],
    ["tcp", "bad dial string 'tcp': missing host"],
    ["!host!6666", "bad dial string '!host!6666': missing network"],
    ["il!host!6666", "bad dial string 'il!host!6666': unknown network 'il'"],
    ["tcp!host!nosuch", "bad dial string 'tcp!host!nosuch': unknown service 'nosuch'"],
    ["tcp!host!65536", "bad dial string 'tcp!host!65536': port '65536' is out of range"],
    ["tcp!host!-1", "bad dial string 'tcp!host!-1': unknown service '-1'"],
    ["tcp!a!b!c", "bad dial string 'tcp!a!b!c': too many '!'-separated fields"],
    ["tcp!bad host!1", "bad dial string 'tcp!bad host!1': bad host 'bad host'"],
    ["tcp![::1!1", "bad dial string 'tcp![::1!1': bad host '[::1'"],
    ["tcp![host]!1", "bad dial string 'tcp![host]!1': bad host '[host]'"],
    ["tcp!::g!1", "bad dial string 'tcp!::g!1': bad IPv6 address '::g'"],
    ["tcp!-h!1", "bad dial string 'tcp!-h!1': bad host '-h'"],
    ["tcp!host!toString", "bad dial string 'tcp!host!toString': unknown service 'toString'"],
    ["constructor!host!1", "bad dial string 'constructor!host!1': unknown network"],
  ];
  for (const [s, msg] of bad) {
    await t.step(`rejects '${s}'`, () => {
      assert.throws(() => parseDialString(s), (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.ok(e.message.startsWith(msg), `got ${JSON.stringify(e.message)}`);
        return true;
      });
    });
  }
});

Deno.test("formatDialString", async (t) => {
  await t.step("round trips", () => {
    for (
      const s of [
        "tcp!*!8000",
        "tcp!example.org!styx",
        "udp!10.0.0.1!53",
        "tcp!::1!6666",
        "tcp!h!9fs",
      ]
    ) {
      assert.equal(formatDialString(parseDialString(s)), s);
    }
  });
  await t.step("net becomes tcp, brackets are dropped", () => {
    assert.equal(formatDialString(parseDialString("net!h!styx")), "tcp!h!styx");
    assert.equal(formatDialString(parseDialString("[::1]!80")), "tcp!::1!80");
  });
  await t.step("a service that does not match the port is written as the port", () => {
    assert.equal(formatDialString({ net: "tcp", host: "h", service: "styx", port: 1 }), "tcp!h!1");
  });
});

Deno.test("listenHost", () => {
  assert.equal(listenHost(parseDialString("tcp!*!1")), "0.0.0.0");
  assert.equal(listenHost(parseDialString("tcp!*!1"), "ipv6"), "::");
  assert.equal(listenHost(parseDialString("tcp!127.0.0.1!1")), "127.0.0.1");
  assert.equal(listenHost(parseDialString("tcp![::1]!1")), "::1");
});

Deno.test("services table", () => {
  assert.equal(servicePort("styx"), 6666);
  assert.equal(servicePort("9fs"), 564);
  assert.equal(servicePort("signer"), 6670);
  assert.equal(servicePort("nope"), undefined);
  assert.equal(servicePort("hasOwnProperty"), undefined);
  assert.equal(serviceName(6666), "styx");
  assert.equal(serviceName(1), undefined);
  for (const [name, port] of Object.entries(SERVICES)) {
    assert.ok(Number.isInteger(port) && port > 0 && port < 65536, name);
  }
});
