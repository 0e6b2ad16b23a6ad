/**
 * One rule for the default credentials directory: $FERRY_CERTS, else
 * ~/.ferry/certs, whatever the current directory; every command's help says
 * so in the same words.
 */
import assert from "node:assert/strict";
import { makeFixture } from "./fixture.ts";
import { writeCredentials } from "../../lib/auth/ca.ts";

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const dec = new TextDecoder();
const RULE = "$FERRY_CERTS, else ~/.ferry/certs";
const DENO_DIR = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;

async function ferry(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FERRY, ...args],
    stdout: "piped",
    stderr: "piped",
    // A different HOME must not move Deno's own cache; an empty
    // FERRY_CERTS counts as unset.
    env: { DENO_DIR, FERRY_CERTS: "", FERRY_NAME: "", ...opts.env },
    cwd: opts.cwd,
  }).output();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("every command that takes credentials states the same default", async () => {
  const commands = [
    ["9p"],
    ["ca"],
    ["sign"],
    ["down"],
    ["enroll"],
    ["mount"],
    ["listen"],
    ["logon"],
    ["phone"],
    ["renew"],
    ["sh"],
    ["signer"],
    ["up"],
  ];
  for (const c of commands) {
    const r = await ferry([...c, "--help"], { env: { HOME: "/nonexistent" } });
    const text = (r.out + r.err).replace(/\s+/g, " ");
    assert.ok(
      text.includes(RULE),
      `'ferry ${c.join(" ")} --help' does not say '${RULE}':\n${text}`,
    );
    assert.doesNotMatch(text, /\.\/certs/, `'ferry ${c.join(" ")} --help' still says ./certs`);
  }
});

Deno.test("credentials in the current directory are not used by default", async (t) => {
  const f = await makeFixture("defaultsca");
  const home = await Deno.makeTempDir({ prefix: "ferry-home-" });
  const work = await Deno.makeTempDir({ prefix: "ferry-cwd-" });
  try {
    // Valid credentials in ./certs of the current directory, none at home.
    const alice = await f.creds("alice", "user");
    await writeCredentials(`${work}/certs`, "alice", alice.cert, alice.key);
    await Deno.writeTextFile(`${work}/certs/ca.pem`, alice.ca);
    const dial = ["9p", "-a", "tcp!127.0.0.1!1", "read", "x"];

    await t.step("without $FERRY_CERTS: ~/.ferry/certs, named in the error", async () => {
      const r = await ferry(dial, { env: { HOME: home }, cwd: work });
      assert.notEqual(r.code, 0);
      assert.match(r.err, new RegExp(`no credentials in '${home}/\\.ferry/certs'`));
    });

    await t.step("$FERRY_CERTS wins over the home directory", async () => {
      const r = await ferry(dial, { env: { HOME: home, FERRY_CERTS: `${work}/certs` } });
      assert.notEqual(r.code, 0);
      // The credentials were found: the failure is the dial itself.
      assert.doesNotMatch(r.err, /no credentials/);
      assert.match(r.err, /cannot dial 'tcp!127\.0\.0\.1!1'/);
    });

    await t.step("'ferry ca init' without --dir writes under the home directory", async () => {
      const r = await ferry(["ca", "init", "homeca"], { env: { HOME: home }, cwd: work });
      assert.equal(r.code, 0, r.err);
      await Deno.stat(`${home}/.ferry/certs/ca.key`);
      await assert.rejects(Deno.stat(`${work}/certs/ca.key`));
    });
  } finally {
    await f.cleanup();
    await Deno.remove(home, { recursive: true });
    await Deno.remove(work, { recursive: true });
  }
});
