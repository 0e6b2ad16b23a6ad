// Control flow as sh-std(1) describes it: a true status is the empty string,
// and a command's status is that of the last command it ran.
import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { harness } from "./harness.ts";
import { StyxClient } from "../../lib/styx/client.ts";
import { tcpDial } from "../../lib/transport/tcp.ts";

const REPO = new URL("../../", import.meta.url).pathname;

Deno.test("sh-std: if, while, for, fn, and, or, !, ~, raise and rescue", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "ferry-sh-std-" });
  const ns = await Namespace.standard({ user: "glenda", rootDir: root });
  const { sh, run } = harness({ ns });
  try {
    await t.step("load std is accepted; other modules are named as unknown", async () => {
      assert.deepEqual(await run("load std"), ["", "", ""]);
      const [, e] = await run("load tk");
      assert.equal(e, "load: 'tk': no such module (Ferry's shell has 'std' built in)\n");
    });

    await t.step("if takes condition-action pairs and an else", async () => {
      const prog = "if {~ $x 1} {echo one} {~ $x 2} {echo two} {echo other}";
      assert.deepEqual(await run(`x=1; ${prog}`), ["one\n", "", ""]);
      assert.deepEqual(await run(`x=2; ${prog}`), ["two\n", "", ""]);
      assert.deepEqual(await run(`x=9; ${prog}`), ["other\n", "", ""]);
      // No action ran: the status is the last condition's.
      assert.deepEqual(await run("if {~ a b} {echo no}"), ["", "", "no match"]);
      assert.deepEqual(await run("if {~ abc 'a*'} {echo pattern}"), ["pattern\n", "", ""]);
      const [, e, s] = await run("if echo {echo}");
      assert.equal(e, "usage: if {cond} {action} [{cond} {action}]... [{elseaction}]\n");
      assert.equal(s, "usage");
    });

    await t.step("for sets the variable to each item; while loops on its condition", async () => {
      assert.deepEqual(await run("for i in a b c {echo item $i}"), [
        "item a\nitem b\nitem c\n",
        "",
        "",
      ]);
      assert.deepEqual(await run("n=(1 2 3); while {! ~ $#n 0} {(h n)=$n; echo $h}; echo $#n"), [
        "1\n2\n3\n0\n",
        "",
        "",
      ]);
      assert.deepEqual(await run("while {~ a b} {echo never}"), ["", "", ""]);
      assert.deepEqual(await run("apply {echo got $1} x y"), ["got x\ngot y\n", "", ""]);
    });

    await t.step("raise break and continue end a loop or one pass", async () => {
      assert.deepEqual(await run("for i in a b c d {if {~ $i c} {raise break}; echo $i}"), [
        "a\nb\n",
        "",
        "",
      ]);
      assert.deepEqual(await run("for i in a b c {if {~ $i b} {raise continue}; echo $i}"), [
        "a\nc\n",
        "",
        "",
      ]);
      assert.deepEqual(
        await run("rescue 'oops*' {echo caught $exception} {echo before; raise oops-1; echo no}"),
        ["before\ncaught oops-1\n", "", ""],
      );
      // Not rescued: the rest of the program is skipped, the name is the status.
      assert.deepEqual(await run("raise failed; echo not reached"), ["", "", "failed"]);
    });

    await t.step("fn defines a command with $*; fn without a body removes it", async () => {
      assert.deepEqual(await run("fn greet {echo hello $*; status $1}; greet world"), [
        "hello world\n",
        "",
        "world",
      ]);
      assert.deepEqual(await run("greet ''"), ["hello \n", "", ""]);
      assert.deepEqual(await run("fn greet; greet"), [
        "",
        "sh: greet: command not found\n",
        "command not found",
      ]);
      // A function may stand in for a builtin, and may recurse.
      await run("fn countdown {if {! ~ $1 0} {echo $1; countdown `{echo $2} 0}}");
      // The innermost if ran no action: its status is its condition's.
      assert.deepEqual(await run("countdown 1 0"), ["1\n", "", "false"]);
    });

    await t.step("a listen block branches and calls a function", async () => {
      await run("mkdir -p /usr/glenda; echo served > /usr/glenda/f");
      await run("fn serve {export /usr/glenda}");
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (l.addr as Deno.NetAddr).port;
      l.close();
      const [, e, s] = await run(
        `listen -A 'tcp!127.0.0.1!${port}' {if {~ $user glenda} {serve} {echo refused}}`,
      );
      assert.match(e, /^(listen: warning: -A given: .*\n)?$/);
      assert.equal(s, "");
      const client = await StyxClient.connect(await tcpDial("127.0.0.1", port));
      try {
        const top = await client.attach("glenda");
        assert.equal(new TextDecoder().decode(await client.readFile(top, "/f")), "served\n");
        await top.close();
      } finally {
        await client.close();
        sh.jobs.killAll();
        await sh.jobs.waitAll();
      }
    });

    await t.step("and, or, ! and no", async () => {
      assert.deepEqual(await run("and {echo a} {~ x y} {echo never}"), ["a\n", "", "no match"]);
      assert.deepEqual(await run("or {~ x y} {echo b} {echo never}"), ["b\n", "", ""]);
      assert.deepEqual(await run("! ~ a b && echo inverted"), ["inverted\n", "", ""]);
      assert.deepEqual(await run("! echo -n"), ["", "", "false"]);
      assert.deepEqual(await run("no; echo $status; no x"), ["\n", "", "yes"]);
    });
  } finally {
    await ns.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("ferry sh: a script branches and loops", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-sh-script-" });
  try {
    const script = `${dir}/count.sh`;
    await Deno.writeTextFile(
      script,
      [
        "load std",
        "fn classify {",
        "\tif {~ $1 '*.b'} {echo $1 is Limbo source} {echo $1 is something else}",
        "}",
        "for f in $* {classify $f}",
        "n=()",
        "while {! ~ $#n 3} {n=($n x)}",
        "echo $#n",
      ].join("\n"),
    );
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", `${REPO}cmd/ferry.ts`, "sh", "-r", dir, script, "ls.b", "x"],
      env: { USER: "glenda" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    assert.equal(dec.decode(o.stderr), "");
    assert.equal(dec.decode(o.stdout), "ls.b is Limbo source\nx is something else\n3\n");
    assert.equal(o.code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
