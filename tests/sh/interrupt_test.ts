// ctrl-c in an interactive `ferry sh`, typed into a real terminal (tmux):
// it interrupts a read that would block until a process ends, at once, with a
// Tflush when the file is remote, and the lines typed meanwhile still run.
import assert from "node:assert/strict";
import { Namespace } from "../../lib/ns/namespace.ts";
import { Shell } from "../../lib/sh/interp.ts";
import { builtins } from "../../lib/sh/builtins/mod.ts";
import { Collector } from "../../lib/sh/io.ts";
import { StyxError } from "../../lib/styx/types.ts";
import { netDevice } from "../../lib/dev/net/mod.ts";
import { freePort } from "../manifest/cluster.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const FERRY = `${Deno.execPath()} run --allow-all ${REPO}cmd/ferry.ts`;
const dec = new TextDecoder();

async function hasTmux(): Promise<boolean> {
  try {
    return (await new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" })
      .output()).success;
  } catch {
    return false;
  }
}

/** Poll `get` until `pred` holds; fail naming `what` and the last value. */
async function until(get: () => Promise<string>, pred: (s: string) => boolean, what: string) {
  let s = "";
  for (let i = 0; i < 800; i++) {
    s = await get();
    if (pred(s)) return s;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`never saw ${what}:\n${s}`);
}

Deno.test("ctrl-c interrupts a blocked read at once; lines typed ahead still run", async (t) => {
  if (!(await hasTmux())) {
    console.log("SKIPPED: tmux is not installed");
    return;
  }
  const root = await Deno.makeTempDir({ prefix: "ferry-intr-" });
  const serverRoot = await Deno.makeTempDir({ prefix: "ferry-intr-srv-" });
  const sock = `ferry-intr-${Deno.pid}`;
  const tmux = async (...args: string[]) => {
    const o = await new Deno.Command("tmux", { args: ["-L", sock, ...args], stdout: "piped" })
      .output();
    return { ok: o.success, out: dec.decode(o.stdout) };
  };
  const screen = async () => (await tmux("capture-pane", "-p", "-t", "sh", "-S", "-100")).out;
  const lines = (s: string) => s.split("\n").map((l) => l.trimEnd());
  const type = async (text: string) => {
    await tmux("send-keys", "-t", "sh", "-l", text);
    await tmux("send-keys", "-t", "sh", "Enter");
  };
  // A process that outlives the test's reads: its wait file blocks.
  const sleeper = new Deno.Command("sleep", { args: ["1000"] }).spawn();
  const pid = sleeper.pid;
  const port = freePort();
  const traceFile = `${serverRoot}/trace`;
  // The server traces every Styx message it gets to `traceFile`.
  const server = new Deno.Command("bash", {
    args: [
      "-c",
      `exec ${FERRY} sh -r ${serverRoot} -c "listen -A 'tcp!127.0.0.1!${port}' {export /}" ` +
      `2>${traceFile}`,
    ],
    env: { USER: "glenda", FERRY_TRACE: "1" },
    stdin: "null",
    stdout: "null",
  }).spawn();
  const traced = () => Deno.readTextFile(traceFile);
  try {
    const cmd = `env USER=glenda ${FERRY} sh -r ${root}`;
    assert.ok((await tmux("new-session", "-d", "-s", "sh", "-x", "100", "-y", "40", cmd)).ok);
    await until(screen, (s) => s.startsWith(";"), "the prompt");

    await t.step("a local /prog/N/wait", async () => {
      await type(`cat /prog/${pid}/wait`);
      await until(screen, (s) => lines(s).includes(`; cat /prog/${pid}/wait`), "the command");
      await type("echo one");
      await type("echo two");
      await tmux("send-keys", "-t", "sh", "C-c");
      const s = await until(
        screen,
        (s) => lines(s).includes("one") && lines(s).includes("two"),
        "the lines typed ahead run",
      );
      assert.ok(lines(s).includes("^C"), s);
      // The sleeping process is still there: only ctrl-c ended the read.
      assert.ok((await new Deno.Command("kill", { args: ["-0", String(pid)] }).output()).success);
    });

    await t.step("a ctrl-c typed before the command has started", async () => {
      // All in one burst: the shell reads the keys after the Enter before it
      // runs the command, and the ctrl-c among them is still the command's.
      await tmux(
        "send-keys",
        "-t",
        "sh",
        `cat /prog/${pid}/wait`,
        "Enter",
        "echo four",
        "Enter",
        "C-c",
      );
      const s = await until(screen, (s) => lines(s).includes("four"), "the line typed ahead run");
      assert.equal(lines(s).filter((l) => l === "^C").length, 2, s);
      assert.ok((await new Deno.Command("kill", { args: ["-0", String(pid)] }).output()).success);
    });

    await t.step("a remote /prog/N/wait is flushed", async () => {
      await until(
        async () => {
          try {
            const c = await Deno.connect({ hostname: "127.0.0.1", port });
            c.close();
            return "up";
          } catch {
            return "";
          }
        },
        (s) => s === "up",
        "the server listening",
      );
      await type(`mkdir -p /n/remote; mount -A 'tcp!127.0.0.1!${port}' /n/remote`);
      await type(`cat /n/remote/prog/${pid}/wait`);
      // The read is on the wire before ctrl-c is typed.
      await until(
        async () => (await traced()) + (await screen()),
        (s) => /Tread/.test(s),
        "the Tread at the server",
      );
      await type("echo three");
      await tmux("send-keys", "-t", "sh", "C-c");
      await until(screen, (s) => lines(s).includes("three"), "the line typed ahead");
      await until(traced, (s) => /Tflush/.test(s), "a Tflush at the server");
      assert.ok((await new Deno.Command("kill", { args: ["-0", String(pid)] }).output()).success);
    });
  } finally {
    await tmux("kill-server");
    sleeper.kill("SIGKILL");
    await sleeper.status;
    server.kill("SIGTERM");
    await server.status;
    await Deno.remove(root, { recursive: true });
    await Deno.remove(serverRoot, { recursive: true });
  }
});

Deno.test("an interrupted command stops waiting in an open of /net/tcp/N/listen", async () => {
  const root = await Deno.makeTempDir({ prefix: "ferry-intr-open-" });
  const devices = new Map([["#I", netDevice()]]);
  const ns = await Namespace.standard({ user: "glenda", rootDir: root, devices });
  await ns.bind("#I", "/net");
  const out = new Collector();
  const err = new Collector();
  const sh = new Shell({ ns, builtins: builtins(), io: { stdout: out, stderr: err } });
  try {
    const ctrl = new AbortController();
    sh.signal = ctrl.signal;
    // Announce, then wait for a call that never comes: the open of listen blocks.
    const running = sh.run(
      "{echo announce 127.0.0.1!0 >[1=0]; cat /net/tcp/*/listen} <> /net/tcp/clone",
    );
    for (let i = 0; !/Announced/.test(await status(ns)); i++) {
      if (i > 400) throw new Error("the conversation was never announced");
      await new Promise((r) => setTimeout(r, 10));
    }
    ctrl.abort(new StyxError("interrupted"));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stuck = new Promise<string>((r) => {
      timer = setTimeout(() => r("still waiting in the open"), 20_000);
    });
    try {
      assert.equal(await Promise.race([running, stuck]), "interrupted");
    } finally {
      clearTimeout(timer);
    }
    assert.equal(err.text(), "");
  } finally {
    await ns.close();
    await Deno.remove(root, { recursive: true });
  }
});

/** The status lines of every tcp conversation in `ns`. */
async function status(ns: Namespace): Promise<string> {
  let all = "";
  for (const d of await ns.readDir("/net/tcp")) {
    if (!/^\d+$/.test(d.name)) continue;
    all += dec.decode(await ns.readFile(`/net/tcp/${d.name}/status`));
  }
  return all;
}
