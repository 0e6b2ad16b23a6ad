/**
 * The article's sections "Namespaces", "Sharing directories and files",
 * "Binding the host filesystem" and "Accessing remote files", run as written
 * by real `ferry sh` processes on loopback (with -A, and a free port instead
 * of 8000), plus an interactive session typed into `ferry sh` through tmux.
 */

import assert from "node:assert/strict";
import { freePort } from "../manifest/cluster.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const FERRY = ["run", "--allow-all", `${REPO}cmd/ferry.ts`];

/** The warning a shell prints the first time -A is used. */
function warning(cmd: string): string {
  return `${cmd}: warning: -A given: this session is neither authenticated nor encrypted\n`;
}

/** What the article's ndb/cs and ndb/dns lines say: /net already serves both. */
const NDB = "ndb/cs: already running (/net/cs)\nndb/dns: already running (/net/dns)\n";

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `ferry sh -r root -c script` to the end. */
async function sh(root: string, script: string): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...FERRY, "sh", "-r", root, "-c", script],
    env: { USER: "glenda" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A `ferry sh` process we talk to through its standard input and output. */
class Session {
  readonly child: Deno.ChildProcess;
  #out = "";
  #err = "";
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reading: Promise<void>[];

  constructor(args: string[]) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: [...FERRY, "sh", ...args],
      env: { USER: "glenda" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    const pump = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
      const dec = new TextDecoder();
      for await (const c of s) add(dec.decode(c, { stream: true }));
    };
    this.#reading = [
      pump(this.child.stdout, (t) => (this.#out += t)),
      pump(this.child.stderr, (t) => (this.#err += t)),
    ];
  }

  get stdout(): string {
    return this.#out;
  }
  get stderr(): string {
    return this.#err;
  }

  /** Send `line` and wait until standard output holds `mark` (echoed by the line itself). */
  async send(line: string, mark: string): Promise<string> {
    const from = this.#out.length;
    await this.#writer.write(new TextEncoder().encode(`${line}; echo ${mark}\n`));
    for (let i = 0; i < 600; i++) {
      const at = this.#out.indexOf(mark + "\n", from);
      if (at >= 0) return this.#out.slice(from, at);
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no '${mark}' after ${JSON.stringify(line)}; stderr: ${this.#err}`);
  }

  /** Wait until standard output holds `text`. */
  async waitFor(text: string): Promise<void> {
    for (let i = 0; i < 600; i++) {
      if (this.#out.includes(text)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no '${text}' on standard output; stderr: ${this.#err}`);
  }

  /** End the process (SIGTERM) and collect its output. */
  async kill(): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.#writer.close().catch(() => {});
    await this.child.status;
    await Promise.allSettled(this.#reading);
  }

  /** Close standard input and wait for the shell to end. */
  async close(): Promise<Deno.CommandStatus> {
    await this.#writer.close().catch(() => {});
    const s = await this.child.status;
    await Promise.allSettled(this.#reading);
    return s;
  }
}

async function hostNames(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

Deno.test("article: namespaces, binds, the host file system, remote files", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-article-" });
  const serverRoot = `${tmp}/server-root`;
  const clientRoot = `${tmp}/client-root`;
  const home = `${tmp}/home/myuser`;
  await Deno.mkdir(home, { recursive: true });
  await Deno.writeTextFile(`${home}/notes.txt`, "remote notes\n");
  // What the client's root holds before the article's commands run.
  await Deno.mkdir(`${clientRoot}/appl`, { recursive: true });
  await Deno.writeTextFile(`${clientRoot}/appl/hello.b`, "implement Hello;\n");
  await Deno.mkdir(`${clientRoot}/dis`, { recursive: true });
  await Deno.writeTextFile(`${clientRoot}/dis/ls`, "global ls\n");
  await Deno.mkdir(`${clientRoot}/usr/myname/dis`, { recursive: true });
  await Deno.writeTextFile(`${clientRoot}/usr/myname/dis/ls`, "my ls\n");
  await Deno.writeTextFile(`${clientRoot}/usr/myname/dis/mine`, "only mine\n");
  let server: Session | undefined;
  try {
    await t.step("Sharing directories and files: bind and unions", async () => {
      const r = await sh(
        clientRoot,
        [
          "mkdir /tmp/myappl",
          "bind /appl /tmp/myappl",
          "ls /tmp/myappl",
          "bind -b /usr/myname/dis /dis",
          "ls /dis; cat /dis/ls",
          "unmount /dis",
          "bind -a /usr/myname/dis /dis",
          "ls /dis; cat /dis/ls",
          "ns",
        ].join("\n"),
      );
      assert.equal(r.stderr, "");
      assert.equal(r.code, 0);
      assert.equal(
        r.stdout,
        [
          "/tmp/myappl/hello.b",
          // A name in both members of a union is listed once per member.
          "/dis/ls",
          "/dis/ls",
          "/dis/mine",
          "my ls",
          "/dis/ls",
          "/dis/ls",
          "/dis/mine",
          "global ls",
          "bind '#I' /net",
          "bind '#p' /prog",
          "bind /appl /tmp/myappl",
          "bind -a /usr/myname/dis /dis",
          "",
        ].join("\n"),
      );
      // Processes that aren't children of that shell cannot see its binds.
      const other = await sh(clientRoot, "ls /tmp/myappl; ls /dis");
      assert.equal(other.stdout, "/dis/ls\n");
    });

    await t.step("Binding the host filesystem", async () => {
      const r = await sh(
        clientRoot,
        [
          "mkdir /tmp/z",
          "bind '#U*' /tmp/z",
          `ls -d /tmp/z${tmp}/home/myuser`,
          "bind '#U*/home' /tmp/z",
          "ls /tmp/z",
          "bind '#U*/home' /usr",
          "ls /usr",
        ].join("\n"),
      );
      assert.equal(r.stderr, "");
      const inHome = await hostNames("/home");
      assert.equal(
        r.stdout,
        [
          `/tmp/z${tmp}/home/myuser`,
          ...inHome.map((n) => `/tmp/z/${n}`),
          ...inHome.map((n) => `/usr/${n}`),
          "",
        ].join("\n"),
      );
    });

    const port = freePort();
    await t.step("Accessing remote files: listen and export", async () => {
      server = new Session(["-r", serverRoot]);
      await server.send(
        `ndb/cs; ndb/dns; listen -A 'tcp!*!${port}' { export '#U*${home}' & }`,
        "listening",
      );
      assert.equal(server.stderr, NDB + warning("listen"));
    });

    await t.step("Accessing remote files: mount, ls, cp, edit, unmount", async () => {
      const r = await sh(
        clientRoot,
        [
          "ndb/cs",
          "ndb/dns",
          "mkdir /tmp/myuser",
          `mount -A 'tcp!127.0.0.1!${port}' /tmp/myuser`,
          "cd /tmp/myuser",
          "ls",
          "cp notes.txt copy.txt",
          "echo edited on the client > new.txt",
          "echo more >> new.txt",
          "cat new.txt copy.txt",
          "ls",
          "ns",
          "cd /",
          "unmount /tmp/myuser",
          "ls /tmp/myuser",
        ].join("\n"),
      );
      assert.equal(r.stderr, NDB + warning("mount"));
      assert.equal(r.code, 0);
      assert.equal(
        r.stdout,
        [
          "notes.txt",
          "edited on the client",
          "more",
          "remote notes",
          "copy.txt",
          "new.txt",
          "notes.txt",
          "bind '#I' /net",
          "bind '#p' /prog",
          // As typed: ns output can be run again.
          `mount -A tcp!127.0.0.1!${port} /tmp/myuser`,
          "",
        ].join("\n"),
      );
      assert.equal(await Deno.readTextFile(`${home}/copy.txt`), "remote notes\n");
      assert.equal(await Deno.readTextFile(`${home}/new.txt`), "edited on the client\nmore\n");
      assert.deepEqual(await hostNames(`${clientRoot}/tmp/myuser`), []);
    });

    await t.step("an unreachable address fails with a named error; the shell goes on", async () => {
      const dead = freePort();
      const r = await sh(
        clientRoot,
        `mkdir -p /tmp/dead; mount -A 'tcp!127.0.0.1!${dead}' /tmp/dead; echo still here`,
      );
      assert.match(
        r.stderr,
        new RegExp(`^${warning("mount")}mount: .*tcp!127\\.0\\.0\\.1!${dead}`),
      );
      assert.equal(r.stdout, "still here\n");
    });

    await t.step(
      "a remote that disappears: errors, the shell survives, unmount works",
      async () => {
        const c = new Session(["-r", clientRoot]);
        try {
          await c.send(`mkdir -p /tmp/gone; mount -A 'tcp!127.0.0.1!${port}' /tmp/gone`, "m1");
          assert.equal(await c.send("ls /tmp/gone/notes.txt", "m2"), "/tmp/gone/notes.txt\n");
          await server!.kill();
          server = undefined;
          const out = await c.send("ls /tmp/gone >[2=1]", "m3");
          assert.match(out, /^ls: \/tmp\/gone: /);
          assert.equal(await c.send("unmount /tmp/gone; ls /tmp/gone", "m4"), "");
          const s = await c.close();
          assert.equal(s.code, 0);
        } finally {
          await c.kill();
        }
      },
    );
  } finally {
    await server?.kill();
    await Deno.remove(tmp, { recursive: true });
  }
});

async function tmuxAvailable(): Promise<boolean> {
  const ok = async () => {
    try {
      const s = await new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" })
        .output();
      return s.success;
    } catch {
      return false;
    }
  };
  if (await ok()) return true;
  try {
    await new Deno.Command("apt-get", {
      args: ["install", "-y", "tmux"],
      stdout: "null",
      stderr: "null",
    }).output();
  } catch { /* no apt-get */ }
  return await ok();
}

Deno.test("interactive ferry sh in a terminal (tmux)", async (t) => {
  if (!(await tmuxAvailable())) {
    console.log("SKIPPED: tmux is not installed and could not be installed with apt-get");
    return;
  }
  const root = await Deno.makeTempDir({ prefix: "ferry-tty-" });
  const sock = `ferry-test-${Deno.pid}`;
  const tmux = async (...args: string[]) => {
    const o = await new Deno.Command("tmux", { args: ["-L", sock, ...args], stdout: "piped" })
      .output();
    return { ok: o.success, out: new TextDecoder().decode(o.stdout) };
  };
  const screen = async () => (await tmux("capture-pane", "-p", "-t", "sh")).out;
  const waitScreen = async (pred: (s: string) => boolean, what: string) => {
    let s = "";
    for (let i = 0; i < 600; i++) {
      s = await screen();
      if (pred(s)) return s;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`screen never showed ${what}:\n${s}`);
  };
  const lines = (s: string) => s.split("\n").map((l) => l.trimEnd());
  const keys = (...k: string[]) => tmux("send-keys", "-t", "sh", ...k);
  try {
    const cmd = `env USER=glenda ${Deno.execPath()} ${FERRY.join(" ")} sh -r ${root}`;
    assert.ok((await tmux("new-session", "-d", "-s", "sh", "-x", "100", "-y", "30", cmd)).ok);
    await waitScreen((s) => s.startsWith(";"), "the prompt");

    await t.step("typing a command and reading its output", async () => {
      await keys("-l", "echo hello");
      await keys("Enter");
      await waitScreen((s) => lines(s).includes("hello"), "hello");
    });

    await t.step("left, backspace and insertion", async () => {
      await keys("-l", "echo abc");
      await keys("Left", "Left", "BSpace");
      await keys("-l", "X");
      await keys("Enter");
      await waitScreen((s) => lines(s).includes("Xbc"), "Xbc");
    });

    await t.step("ctrl-a, ctrl-e, ctrl-u and ctrl-w", async () => {
      await keys("-l", "cho one two");
      await keys("C-a");
      await keys("-l", "e");
      await keys("C-e", "C-w");
      await keys("-l", "three");
      await keys("Enter");
      await waitScreen((s) => lines(s).includes("one three"), "one three");
      await keys("-l", "garbage");
      await keys("C-u");
      await keys("-l", "echo after-u");
      await keys("Enter");
      await waitScreen((s) => lines(s).includes("after-u"), "after-u");
    });

    await t.step("up recalls history", async () => {
      await keys("Up", "Up", "Enter");
      await waitScreen(
        (s) => lines(s).filter((l) => l === "one three").length === 2,
        "one three twice",
      );
    });

    await t.step("errors are printed and the shell goes on", async () => {
      await keys("-l", "ls /nonexistent");
      await keys("Enter");
      await waitScreen(
        (s) => lines(s).includes("ls: /nonexistent: file does not exist"),
        "the ls error",
      );
      await keys("-l", "echo a }");
      await keys("Enter");
      await waitScreen(
        (s) => lines(s).includes("sh: line 1, column 8: unexpected '}'"),
        "the syntax error",
      );
      await keys("-l", "mkdir /tmp/d; cd /tmp/d; pwd");
      await keys("Enter");
      await waitScreen((s) => lines(s).includes("/tmp/d"), "pwd");
    });

    await t.step("ctrl-c interrupts a running command, not the shell", async () => {
      await keys("-l", "sleep 1000");
      await keys("Enter");
      await waitScreen((s) => lines(s).includes("; sleep 1000"), "the sleep");
      await keys("C-c");
      await keys("-l", "echo alive");
      await keys("Enter");
      await waitScreen((s) => lines(s).includes("alive"), "alive");
    });

    await t.step("a block spanning lines", async () => {
      await keys("-l", "{echo first");
      await keys("Enter");
      await keys("-l", "echo second}");
      await keys("Enter");
      await waitScreen((s) => {
        const l = lines(s);
        const i = l.indexOf("first");
        return i >= 0 && l[i + 1] === "second";
      }, "first and second");
    });

    await t.step("exit ends the shell and history is saved in the root directory", async () => {
      await keys("-l", "exit");
      await keys("Enter");
      for (let i = 0; i < 600 && (await tmux("has-session", "-t", "sh")).ok; i++) {
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.equal((await tmux("has-session", "-t", "sh")).ok, false);
      const hist = await Deno.readTextFile(`${root}/usr/glenda/lib/sh_history`);
      const h = hist.split("\n");
      assert.ok(h.includes("echo hello"), hist);
      assert.ok(h.includes("echo one three"), hist);
      assert.ok(h.includes("{echo first; echo second}"), hist);
    });
  } finally {
    await tmux("kill-server");
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("article: accessing remote networks (listen through a mounted remote /net)", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-remote-net-" });
  const remotePort = freePort();
  const clientPort = freePort();
  const remote = new Session(["-r", `${tmp}/remote`]);
  const client = new Session(["-r", `${tmp}/client`]);
  try {
    await remote.send(`listen -A 'tcp!*!${remotePort}' { export /net & }`, "r1");
    // The client connects outwards only, then listens through the remote's /net.
    await client.send(
      `echo on the client > /tmp/where; mount -A 'tcp!127.0.0.1!${remotePort}' /net`,
      "c1",
    );
    await client.send(`listen -A 'tcp!*!${clientPort}' { export / & }`, "c2");
    // A third machine reaches the client's files at the remote's port.
    const third = await sh(
      `${tmp}/third`,
      `mkdir /tmp/client; mount -A 'tcp!127.0.0.1!${clientPort}' /tmp/client; cat /tmp/client/tmp/where`,
    );
    assert.equal(third.stderr, warning("mount"));
    assert.equal(third.stdout, "on the client\n");
    assert.equal(client.stderr, warning("mount"));
    // The port was the remote's: with the remote gone, nobody answers there.
    await remote.kill();
    const after = await sh(
      `${tmp}/third`,
      `mount -A 'tcp!127.0.0.1!${clientPort}' /tmp/client`,
    );
    assert.match(after.stderr, new RegExp(`^${warning("mount")}mount: cannot dial`));
  } finally {
    await client.kill();
    await remote.kill();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("article: accessing remote resources (export /prog)", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-remote-prog-" });
  const port = freePort();
  const remote = new Session(["-r", `${tmp}/remote`]);
  try {
    await remote.send(`listen -A 'tcp!*!${port}' { export /prog & }`, "r1");
    const r = await sh(
      `${tmp}/client`,
      [
        "mkdir /tmp/debug",
        `mount -A 'tcp!127.0.0.1!${port}' /tmp/debug`,
        "ls /tmp/debug",
        "unmount /tmp/debug",
      ].join("; "),
    );
    assert.equal(r.stderr, warning("mount"));
    // The remote's own process is among those listed.
    const pid = remote.child.pid;
    assert.ok(r.stdout.split("\n").includes(`/tmp/debug/${pid}`), r.stdout.slice(0, 500));
  } finally {
    await remote.kill();
    await Deno.remove(tmp, { recursive: true });
  }
});
