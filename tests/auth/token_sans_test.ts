/**
 * Dialling by address: a token carries the extra names and addresses its
 * certificate will have, the CA decides them (not the device), and a node
 * enrolled with its address answers a dial to that address.
 */
import assert from "node:assert/strict";
import { CertificateAuthority } from "../../lib/auth/ca.ts";
import { identityOf, parseCert } from "../../lib/auth/certs.ts";
import { enroll, startSigner } from "../../lib/auth/enroll.ts";
import { loadCredentials } from "../../lib/auth/link.ts";
import { parseToken } from "../../lib/auth/token.ts";
import { tlsDial, tlsListen } from "../../lib/transport/tls.ts";

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const dec = new TextDecoder();

async function ferry(args: string[]) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FERRY, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

async function openssl(args: string[]): Promise<string> {
  const r = await new Deno.Command("openssl", { args, stdout: "piped", stderr: "piped" }).output();
  return dec.decode(r.stdout) + dec.decode(r.stderr);
}

/** The token with its names replaced, as a device might try. */
function withNames(token: string, names: string[]): string {
  const body = token.slice("ferry1.".length).replace(/-/g, "+").replace(/_/g, "/");
  const o = JSON.parse(atob(body + "=".repeat((4 - body.length % 4) % 4)));
  o.a = names;
  return "ferry1." +
    btoa(JSON.stringify(o)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

Deno.test("tokens carry the names the CA grants, and only those", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-token-sans-" });
  const caDir = `${tmp}/ca`;
  let ca: CertificateAuthority | undefined;
  const logs: string[] = [];
  try {
    assert.equal((await ferry(["ca", "init", "sansca", "--dir", caDir])).code, 0);
    ca = await CertificateAuthority.open(caDir);
    const signer = await startSigner(ca, "127.0.0.1", 0, { log: (m) => logs.push(m) });
    try {
      await t.step("ferry ca token --san: the certificate carries DNS and IP names", async () => {
        const r = await ferry([
          "ca",
          "token",
          "srv",
          "--san",
          "127.0.0.1",
          "--san",
          "Files.Example",
          "--dir",
          caDir,
        ]);
        assert.equal(r.code, 0, r.err);
        const token = r.out.trim();
        assert.deepEqual(parseToken(token).sans, ["127.0.0.1", "files.example"]);
        const e = await enroll("127.0.0.1", signer.port, token, `${tmp}/srv`);
        assert.deepEqual(e.sans, ["files.example", "127.0.0.1"]);
        const text = await openssl(["x509", "-in", `${tmp}/srv/srv.pem`, "-noout", "-text"]);
        assert.match(
          text,
          /DNS:srv, IP Address:127\.0\.0\.1, DNS:files\.example, URI:ferry:node\/srv/,
        );
        assert.ok(
          logs.some((l) =>
            /enrolled node 'srv' serial [0-9a-f]+ for '127\.0\.0\.1', 'files\.example'/.test(l)
          ),
        );
      });

      await t.step("names the device asks for beyond the token are not granted", async () => {
        const token = await ca!.token("pi", { sans: ["127.0.0.1"] });
        const e = await enroll("127.0.0.1", signer.port, token, `${tmp}/pi`, {
          sans: ["127.0.0.1", "10.9.9.9", "evil.example"],
        });
        assert.deepEqual(e.sans, ["127.0.0.1"]);
        assert.deepEqual(e.notGranted, ["10.9.9.9", "evil.example"]);
        const id = identityOf(parseCert(await Deno.readTextFile(`${tmp}/pi/pi.pem`)));
        assert.deepEqual([id.dns, id.ips], [["pi"], ["127.0.0.1"]]);
        assert.ok(
          logs.some((l) => l.includes("'pi' also asked for '10.9.9.9', 'evil.example'")),
          logs.join("\n"),
        );
      });

      await t.step("a token whose names were changed is not the CA's", async () => {
        const token = await ca!.token("cam", { sans: ["127.0.0.1"] });
        for (const names of [["127.0.0.1", "10.9.9.9"], []]) {
          await assert.rejects(
            enroll("127.0.0.1", signer.port, withNames(token, names), `${tmp}/cam`),
            /the signer refused: Unknown enrolment token/,
          );
        }
        // The real one still works.
        const e = await enroll("127.0.0.1", signer.port, token, `${tmp}/cam`);
        assert.deepEqual(e.sans, ["127.0.0.1"]);
      });

      await t.step("ferry enroll --san warns about a name the token does not grant", async () => {
        const token = (await ferry(["ca", "token", "lamp", "--dir", caDir])).out.trim();
        const r = await ferry([
          "enroll",
          `tcp!127.0.0.1!${signer.port}`,
          token,
          "--dir",
          `${tmp}/lamp`,
          "--san",
          "10.9.9.9",
        ]);
        assert.equal(r.code, 0, r.err);
        assert.match(
          r.err,
          /the certificate does not carry '10\.9\.9\.9' \(the token does not grant it\).*--san 10\.9\.9\.9/,
        );
      });

      await t.step("a node enrolled with its address is dialled by that address", async () => {
        const alice = await ca!.issue("alice", { kind: "user" });
        const aliceCreds = {
          ca: ca!.certPem,
          cert: alice.certPem,
          key: alice.keyPem,
          name: "alice",
        };
        for (
          const [dir, name, ok] of [[`${tmp}/srv`, "srv", true], [
            `${tmp}/lamp`,
            "lamp",
            false,
          ]] as const
        ) {
          const creds = await loadCredentials(dir, name);
          const l = await tlsListen("127.0.0.1", 0, { creds, onRefused: () => {} });
          try {
            const port = Number(l.addr.split("!")[2]);
            const it = l[Symbol.asyncIterator]();
            const accepted = it.next();
            const c = await tlsDial("127.0.0.1", port, { creds: aliceCreds }).catch((e: Error) =>
              e
            );
            if (ok) {
              assert.ok(!(c instanceof Error), String(c));
              assert.equal(c.peer.identity, "srv");
              c.close();
              ((await accepted).value as { close(): void }).close();
            } else {
              assert.ok(c instanceof Error);
              assert.match(
                c.message,
                /server certificate 'lamp' is for 'lamp', not '127\.0\.0\.1'/,
              );
            }
          } finally {
            l.close();
          }
        }
      });

      await t.step("ferry ca token --manifest grants the host of the node's address", async () => {
        const file = `${tmp}/cluster.toml`;
        await Deno.writeTextFile(
          file,
          `[nodes.gate]\naddress = "tcp!10.77.0.2!8000"\n\n[nodes.any]\naddress = "tcp!*!8000"\n`,
        );
        const r = await ferry(["ca", "token", "gate", "--manifest", file, "--dir", caDir]);
        assert.equal(r.code, 0, r.err);
        assert.deepEqual(parseToken(r.out.trim()).sans, ["10.77.0.2"]);
        const any = await ferry(["ca", "token", "any", "--manifest", file, "--dir", caDir]);
        assert.equal(any.code, 0, any.err);
        assert.deepEqual(parseToken(any.out.trim()).sans, []);
        assert.match(any.err, /node 'any' listens on 'tcp!\*!8000', which names no host/);
        const none = await ferry(["ca", "token", "nosuch", "--manifest", file, "--dir", caDir]);
        assert.equal(none.code, 1);
        assert.match(
          none.err,
          /'nosuch' is not a node of '.*cluster\.toml' \(its nodes: gate, any\)/,
        );
        const bad = await ferry(["ca", "token", "x", "--san", "not an address", "--dir", caDir]);
        assert.match(bad.err, /Invalid --san 'not an address'/);
      });
    } finally {
      signer.close();
    }
  } finally {
    ca?.close();
    await Deno.remove(tmp, { recursive: true });
  }
});
