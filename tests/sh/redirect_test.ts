// Redirections as Inferno's sh(1) has them: `<>` opens a file for reading and
// writing, `>[1=0]` makes fd 1 refer to fd 0's file, so one open file carries
// a query and its answer.
import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import type { Builtin } from "../../lib/sh/interp.ts";
import { builtins } from "../../lib/sh/builtins/mod.ts";
import { harness } from "./harness.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();

async function ferrySh(root: string, command: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${REPO}cmd/ferry.ts`, "sh", "-r", root, "-c", command],
    env: { USER: "glenda" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("ferry sh: {echo query >[1=0]; cat} <>/net/cs asks the connection server", async () => {
  const root = await Deno.makeTempDir({ prefix: "ferry-sh-cs-" });
  try {
    const r = await ferrySh(root, "{echo 'tcp!127.0.0.1!8000' >[1=0]; cat} <>/net/cs");
    assert.equal(r.stderr, "");
    assert.equal(r.stdout, "/net/tcp/clone 127.0.0.1!8000");
    assert.equal(r.code, 0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("redirections: <>, fd duplication and their errors", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "ferry-sh-redir-" });
  const ns = await Namespace.standard({ user: "glenda", rootDir: root });
  const table = builtins();
  // Stands for a bug inside a command: a JavaScript error must not reach the user as such.
  const buggy: Builtin = () => Promise.reject(new TypeError("w.write is not a function"));
  table.set("buggy", buggy);
  const { run } = harness({ ns, builtins: table });
  try {
    await t.step("<> shares one offset between the write and the read", async () => {
      await run("echo 'first line' > /tmp/f; echo second >> /tmp/f");
      // The write replaces the first 6 bytes; the read goes on from there.
      assert.deepEqual(await run("{echo -n FIRST >[1=0]; cat} <> /tmp/f"), [
        " line\nsecond\n",
        "",
        "",
      ]);
      assert.equal(await Deno.readTextFile(`${root}/tmp/f`), "FIRST line\nsecond\n");
      assert.deepEqual(await run("cat <> /tmp/f"), ["FIRST line\nsecond\n", "", ""]);
    });

    await t.step(">[2=1] and >[1=2] send one stream where the other goes", async () => {
      assert.deepEqual(await run("ls /nothing >[2=1] > /tmp/both; cat /tmp/both"), [
        "ls: /nothing: file does not exist\n",
        "",
        "",
      ]);
      assert.deepEqual(await run("echo to-stderr >[1=2]"), ["", "to-stderr\n", ""]);
    });

    await t.step("using a file the way it was not opened names it", async () => {
      const [o, e, status] = await run("echo x < /tmp/f >[1=0]");
      assert.equal(o, "");
      assert.equal(e, "echo: '/tmp/f' is not open for writing\n");
      assert.equal(status, "'/tmp/f' is not open for writing");
      const [, e2] = await run("cat > /tmp/g >[0=1]");
      assert.equal(e2, "cat: '/tmp/g' is not open for reading\n");
      // Applied left to right: fd 0 gets what fd 1 was before the file.
      const [, e4] = await run("cat >[0=1] > /tmp/g");
      assert.equal(e4, "cat: file descriptor 0 is open for writing, not reading\n");
      const [, e3] = await run("echo x >[3] /tmp/g");
      assert.equal(e3, "sh: file descriptor 3 is not supported (only 0, 1 and 2)\n");
    });

    await t.step("a JavaScript error inside a command is reported as a Ferry bug", async () => {
      const [, e, status] = await run("buggy");
      assert.match(e, /^buggy: internal error in Ferry \(please report it/);
      assert.doesNotMatch(e, /TypeError|is not a function/);
      assert.match(status, /^internal error/);
    });
  } finally {
    await ns.close();
    await Deno.remove(root, { recursive: true });
  }
});
