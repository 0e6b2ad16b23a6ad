import assert from "node:assert/strict";

const REPO = new URL("../../", import.meta.url).pathname;

async function ferrySh(args: string[], stdin?: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${REPO}cmd/ferry.ts`, "sh", ...args],
    env: { USER: "glenda" },
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("ferry sh: -c, script files, standard input, exit status", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "ferry-cmd-sh-" });
  try {
    await t.step("-c runs commands; the status is the last command's", async () => {
      const ok = await ferrySh(["-r", root, "-c", "echo $user; ls -d /tmp /n"]);
      assert.deepEqual(ok, { code: 0, stdout: "glenda\n/tmp\n/n\n", stderr: "" });
      const bad = await ferrySh(["-r", root, "-c", "ls /nonexistent"]);
      assert.deepEqual(bad, {
        code: 1,
        stdout: "",
        stderr: "ls: /nonexistent: file does not exist\n",
      });
    });

    await t.step("a script file gets $* and reports syntax errors by line and column", async () => {
      const script = `${root}/script`;
      await Deno.writeTextFile(script, "# greet\necho hello $*\necho $#*\n");
      assert.deepEqual(await ferrySh(["-r", root, script, "a", "b"]), {
        code: 0,
        stdout: "hello a b\n2\n",
        stderr: "",
      });
      await Deno.writeTextFile(script, "echo one\nls {\n  echo x\n} }\n");
      assert.deepEqual(await ferrySh(["-r", root, script]), {
        code: 1,
        stdout: "",
        stderr: "sh: line 4, column 3: unexpected '}'\n",
      });
      const missing = await ferrySh(["-r", root, `${root}/nothing`]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /^sh: cannot read script '.*nothing'/);
    });

    await t.step("commands from standard input; errors do not end the shell", async () => {
      const r = await ferrySh(
        ["-r", root],
        "foo\necho after\n{\necho in block\n}\nexit\necho never\n",
      );
      assert.deepEqual(r, {
        code: 0,
        stdout: "after\nin block\n",
        stderr: "sh: foo: command not found\n",
      });
    });

    await t.step("bad command lines", async () => {
      const r = await ferrySh(["-r", root, "-x"]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^sh: Unknown option '-x'/);
      const both = await ferrySh(["-r", root, "-c", "echo", `${root}/f`]);
      assert.equal(both.code, 1);
      assert.match(both.stderr, /give -c or a FILE, not both/);
    });

    await t.step("the namespace starts with /net from '#I' and /prog from '#p'", async () => {
      const r = await ferrySh(["-r", root, "-c", "ns; ls /net"]);
      assert.deepEqual(r, {
        code: 0,
        stdout: "bind '#I' /net\nbind '#p' /prog\n/net/cs\n/net/dns\n/net/tcp\n/net/udp\n",
        stderr: "",
      });
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("ferry sh: without USER and LOGNAME, $user is the uid's account name", async () => {
  const root = await Deno.makeTempDir({ prefix: "ferry-cmd-sh-user-" });
  try {
    const id = await new Deno.Command("id", { args: ["-un"], stdout: "piped" }).output();
    const account = new TextDecoder().decode(id.stdout).trim();
    assert.notEqual(account, "");
    const env: Record<string, string> = {};
    for (const k of ["PATH", "HOME", "DENO_DIR"]) {
      const v = Deno.env.get(k);
      if (v !== undefined) env[k] = v;
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${REPO}cmd/ferry.ts`, "sh", "-r", root, "-c", "echo $user"],
      clearEnv: true,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.equal(dec.decode(out.stderr), "");
    assert.equal(dec.decode(out.stdout), `${account}\n`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
