import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { type Harness, harness as shellHarness } from "./harness.ts";

const harness = (ns: Namespace, user = "glenda") => shellHarness({ ns, user });

async function memShell(): Promise<{ h: Harness; tree: MemTree; ns: Namespace }> {
  const tree = new MemTree({ owner: "glenda" });
  for (const d of ["/n", "/tmp", "/usr/glenda", "/dev", "/net", "/prog", "/appl", "/dis"]) {
    await tree.mkdirp(d);
  }
  await tree.writeFile("/appl/hello.b", "implement Hello;\n");
  await tree.writeFile("/dis/ls", "system ls\n");
  const ns = new Namespace(tree, { caller: { user: "glenda" } });
  return { h: harness(ns), tree, ns };
}

Deno.test("interp: files, variables, redirections and pipes on a memory namespace", async (t) => {
  const { h, tree, ns } = await memShell();
  try {
    await t.step("echo, variables, $user, $status", async () => {
      assert.deepEqual(await h.run("echo hello world"), ["hello world\n", "", ""]);
      assert.deepEqual(await h.run("echo -n a; echo b"), ["ab\n", "", ""]);
      assert.deepEqual(await h.run("x=value; echo $x $user"), ["value glenda\n", "", ""]);
      assert.deepEqual(await h.run('l=(a b c); echo $#l $"l'), [
        "3 a b c\n",
        "",
        "",
      ]);
      assert.deepEqual(await h.run("s=x; echo $s^.b pre$s (a b)^1"), ["x.b prex a1 b1\n", "", ""]);
      await h.run("ls /nonexistent");
      assert.deepEqual(await h.run("echo $status"), ["file does not exist\n", "", ""]);
      assert.deepEqual(await h.run("echo 'it''s'"), ["it's\n", "", ""]);
    });

    await t.step("redirections go through the namespace", async () => {
      assert.deepEqual(await h.run("echo one > /tmp/f; echo two >> /tmp/f; cat /tmp/f"), [
        "one\ntwo\n",
        "",
        "",
      ]);
      assert.equal(new TextDecoder().decode(await tree.readFile("/tmp/f")), "one\ntwo\n");
      assert.deepEqual(await h.run("echo three > /tmp/f; cat < /tmp/f"), ["three\n", "", ""]);
      const [, err, status] = await h.run("cat < /tmp/missing");
      assert.equal(err, "sh: /tmp/missing: file does not exist\n");
      assert.equal(status, "/tmp/missing: file does not exist");
      assert.deepEqual(await h.run("ls /nothing >[2=1]"), [
        "ls: /nothing: file does not exist\n",
        "",
        "file does not exist",
      ]);
    });

    await t.step("pipes between builtins", async () => {
      assert.deepEqual(await h.run("echo piped | cat | cat"), ["piped\n", "", ""]);
      assert.deepEqual(await h.run("cat /appl/hello.b | cat > /tmp/copy; cat /tmp/copy"), [
        "implement Hello;\n",
        "",
        "",
      ]);
    });

    await t.step("ls, mkdir, cp, mv, rm, cd, pwd", async () => {
      assert.deepEqual(await h.run("mkdir /tmp/myappl; ls /tmp"), [
        "/tmp/copy\n/tmp/f\n/tmp/myappl\n",
        "",
        "",
      ]);
      assert.deepEqual(await h.run("cd /tmp; pwd; ls"), ["/tmp\ncopy\nf\nmyappl\n", "", ""]);
      assert.deepEqual(await h.run("cp f myappl; ls myappl; cat myappl/f"), [
        "myappl/f\nthree\n",
        "",
        "",
      ]);
      assert.deepEqual(await h.run("mv myappl/f myappl/g; ls myappl"), ["myappl/g\n", "", ""]);
      assert.deepEqual(await h.run("mv myappl/g /tmp/h; ls myappl; cat h"), ["three\n", "", ""]);
      assert.deepEqual(await h.run("rm h copy; ls"), ["f\nmyappl\n", "", ""]);
      assert.deepEqual(await h.run("mkdir -p a/b/c; ls -d a/b/c"), ["a/b/c\n", "", ""]);
      assert.deepEqual((await h.run("rm a"))[2], "directory not empty");
      assert.deepEqual(await h.run("rm -r a; ls"), ["f\nmyappl\n", "", ""]);
      const [out] = await h.run("ls -l f");
      assert.match(out, /^--rw-rw-rw- M \d+ glenda glenda 6 \w{3} [ \d]\d \d\d:\d\d f\n$/);
      assert.deepEqual(await h.run("cd /nonexistent"), [
        "",
        "cd: /nonexistent: file does not exist\n",
        "/nonexistent: file does not exist",
      ]);
      assert.deepEqual(await h.run("pwd; cd /; pwd"), ["/tmp\n/\n", "", ""]);
      assert.deepEqual(await h.run("ls -d /tmp/m*"), ["/tmp/myappl\n", "", ""]);
      assert.deepEqual(await h.run("ls '/tmp/m*'"), [
        "",
        "ls: /tmp/m*: file does not exist\n",
        "file does not exist",
      ]);
    });

    await t.step("errors never end the shell; unknown commands; syntax errors", async () => {
      assert.deepEqual(await h.run("foo; echo after"), [
        "after\n",
        "sh: foo: command not found\n",
        "",
      ]);
      assert.deepEqual(await h.run("echo a\necho b }"), [
        "",
        "sh: line 2, column 8: unexpected '}'\n",
        "syntax error",
      ]);
      assert.deepEqual(await h.run("bind"), ["", "usage: bind [-a|-b] [-c] new old\n", "usage"]);
      assert.equal(h.sh.exited, false);
    });

    await t.step("blocks, && and ||, @", async () => {
      assert.deepEqual(await h.run("{echo $*} hello world"), ["hello world\n", "", ""]);
      assert.deepEqual(await h.run("b={echo in block}; $b"), ["in block\n", "", ""]);
      assert.deepEqual(await h.run("ls /x >[2=1] && echo yes || echo no"), [
        "ls: /x: file does not exist\nno\n",
        "",
        "",
      ]);
      assert.deepEqual(await h.run('echo `{echo a b} "{echo c d}'), ["a b c d\n\n", "", ""]);
    });

    await t.step("bind, unions and ns", async () => {
      await h.run("mkdir /tmp/z; bind /appl /tmp/z");
      assert.deepEqual(await h.run("ls /tmp/z"), ["/tmp/z/hello.b\n", "", ""]);
      await h.run("mkdir -p /usr/glenda/dis; echo mine > /usr/glenda/dis/mycmd");
      assert.deepEqual(await h.run("bind -b /usr/glenda/dis /dis; ls /dis"), [
        "/dis/ls\n/dis/mycmd\n",
        "",
        "",
      ]);
      assert.deepEqual(await h.run("ns"), [
        "bind /appl /tmp/z\nbind -b /usr/glenda/dis /dis\n",
        "",
        "",
      ]);
      assert.deepEqual(await h.run("unmount /tmp/z; ls /tmp/z"), ["", "", ""]);
      const [, err, status] = await h.run("unmount /tmp/z");
      assert.match(err, /^unmount: .*'\/tmp\/z' is not mounted\n$/);
      assert.notEqual(status, "");
      const [, err2] = await h.run("bind /missing /tmp/z");
      assert.match(err2, /^bind: .*\/missing/);
    });

    await t.step("creating in a union needs a member marked -c", async () => {
      await h.run("mkdir /tmp/u1 /tmp/u2 /tmp/un; bind /tmp/u1 /tmp/un; bind -a /tmp/u2 /tmp/un");
      const [, err, status] = await h.run("echo x > /tmp/un/new");
      assert.match(err, /^sh: .*\/tmp\/un/);
      assert.notEqual(status, "");
      await h.run("unmount /tmp/u2 /tmp/un; bind -ac /tmp/u2 /tmp/un");
      assert.deepEqual(await h.run("echo x > /tmp/un/new; ls /tmp/u2"), ["/tmp/u2/new\n", "", ""]);
    });

    await t.step("background jobs get a forked namespace; ps and kill", async () => {
      await h.run("mkdir /tmp/bg; {bind /appl /tmp/bg; sleep 100} &");
      // Let the job start and bind.
      for (let i = 0; i < 50 && h.sh.jobs.jobs.size === 0; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const [ps] = await h.run("ps");
      assert.match(ps, /^\s+\d+ glenda\s+running\s+\{bind \/appl \/tmp\/bg; sleep 100\}\n$/);
      assert.deepEqual(await h.run("ls /tmp/bg"), ["", "", ""], "the parent does not see the bind");
      const pid = h.sh.get("apid")[0]!;
      assert.deepEqual(await h.run(`kill ${pid}`), ["", "", ""]);
      await h.sh.jobs.waitAll();
      assert.deepEqual(await h.run("ps"), ["", "", ""]);
      assert.deepEqual(await h.run("kill 999"), [
        "",
        "kill: 999: no such process\n",
        "no such process",
      ]);
    });

    await t.step("date, ndb/cs, exit", async () => {
      const [d] = await h.run("date");
      assert.match(d, /^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}\n$/);
      assert.deepEqual(await h.run("ndb/cs; ndb/dns"), [
        "",
        "ndb/cs: already running (/net/cs)\nndb/dns: already running (/net/dns)\n",
        "",
      ]);
      assert.deepEqual(await h.run("echo a; exit; echo b"), ["a\n", "", ""]);
      assert.equal(h.sh.exited, true);
    });
  } finally {
    await ns.close();
  }
});

Deno.test("interp: '#U' binds and host files", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "ferry-sh-root-" });
  const host = await Deno.makeTempDir({ prefix: "ferry-sh-host-" });
  const ns = await Namespace.standard({ user: "glenda", rootDir: root });
  const h = harness(ns);
  try {
    await Deno.writeTextFile(`${host}/notes.txt`, "from the host\n");
    await t.step("bind '#U*/dir' shows host files", async () => {
      assert.deepEqual(
        await h.run(`mkdir /tmp/z; bind '#U*${host}' /tmp/z; cat /tmp/z/notes.txt`),
        [
          "from the host\n",
          "",
          "",
        ],
      );
      await h.run("echo written > /tmp/z/new.txt");
      assert.equal(await Deno.readTextFile(`${host}/new.txt`), "written\n");
      assert.deepEqual(await h.run("ns"), [`bind '#U*${host}' /tmp/z\n`, "", ""]);
    });
    await t.step("the root directory holds /tmp", async () => {
      await h.run("echo x > /tmp/inroot");
      assert.equal(await Deno.readTextFile(`${root}/tmp/inroot`), "x\n");
    });
  } finally {
    await ns.close();
    await Deno.remove(root, { recursive: true });
    await Deno.remove(host, { recursive: true });
  }
});
