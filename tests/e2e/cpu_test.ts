/**
 * End to end: `ferry cpu -u USER FILE NODE -c COMMAND` between two hosts
 * (network namespaces). The node runs `ferry up` with a `cpu` export; the
 * caller's namespace, whose root holds C sources that exist only on the
 * caller's side, is served back over the same link and seen on the node at
 * /n/client. Host account ferrya is made for the test (or reused) and
 * removed.
 */
import assert from "node:assert/strict";
import { writeCredentials } from "../../lib/auth/ca.ts";
import { ferryArgv } from "../../lib/self.ts";
import { lookupAccount } from "../../lib/logon/account.ts";
import { loadText } from "../../lib/manifest/load.ts";
import { checkManifest } from "../../lib/manifest/check.ts";
import { formatProblem, ManifestError } from "../../lib/manifest/schema.ts";
import { CpuService } from "../../lib/cpu/server.ts";
import { walkOpen } from "../../lib/fs/tree.ts";
import { ORDWR } from "../../lib/styx/types.ts";
import { freePort, makeCluster } from "../manifest/cluster.ts";
import { ferryIn, have, hostsSkipReason, makeHosts, type Proc, run } from "./hosts.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

function skipReason(): string {
  const r = hostsSkipReason();
  if (r) return r;
  const missing = ["unshare", "setpriv", "setsid", "getent", "useradd", "make", "cc"].filter(
    (c) => !have(c),
  );
  if (missing.length) return `missing ${missing.join(", ")}`;
  const fuse = new Deno.Command("test", { args: ["-c", "/dev/fuse"] }).outputSync();
  return fuse.success ? "" : "no /dev/fuse";
}

/** Make host account `name` unless it exists; returns a function that removes what was made. */
async function account(name: string): Promise<() => Promise<void>> {
  if (await lookupAccount(name)) return async () => {};
  await run("useradd", ["-m", "-s", "/bin/sh", name]);
  return async () => {
    for (let i = 0; i < 50; i++) {
      const r = await new Deno.Command("userdel", { args: ["-r", name], stderr: "null" }).output();
      if (r.success || (await lookupAccount(name)) === undefined) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`could not remove the test's host account '${name}'`);
  };
}

Deno.test("cpu export kind: an access list; no files, so never mounted", () => {
  const text = (extra: string, ns = "") => `
[nodes.build]
address = "tcp!127.0.0.1!7001"

[nodes.build.exports.cpu]
kind = "cpu"
access = ["alice"]
${extra}
[users.alice]
account = "al"
namespace = """
${ns}
"""
`;
  const m = loadText(text(""), "m.toml");
  const e = m.nodes.get("build")!.exports.get("cpu")!;
  assert.equal(e.kind, "cpu");
  assert.deepEqual(e.access, ["alice"]);
  assert.equal(m.users.get("alice")!.account, "al");
  assert.deepEqual(checkManifest(m), []);
  // A cpu export runs commands; mounting it is a mistake ferry check names.
  const mounted = checkManifest(loadText(text("", "mount build!cpu /n/cpu"), "m.toml"));
  assert.equal(mounted.length, 1);
  assert.match(formatProblem(mounted[0]!), /is a cpu export, which runs commands.*ferry cpu build/);
  // Keys of other kinds are refused by name.
  assert.throws(
    () => loadText(text('path = "/srv"'), "m.toml"),
    (err: unknown) => err instanceof ManifestError && /path/.test(err.message),
  );
});

Deno.test("cpu sessions are their owner's alone, and go when their clone file closes", async () => {
  const m = loadText('[users.alice]\nnamespace = ""\n[users.bob]\nnamespace = ""\n', "m.toml");
  const cpu = new CpuService({ node: "n", manifest: () => m });
  const tree = cpu.tree();
  const alice = await tree.attach({ user: "alice", authenticated: true }, "");
  const bob = await tree.attach({ user: "bob", authenticated: true }, "");
  const names = async (n: typeof alice) => {
    const d = await n.open(0);
    try {
      return (await d.readDir!()).map((e) => e.name).sort();
    } finally {
      await d.close();
    }
  };
  try {
    const clone = await walkOpen(alice, ["clone"], ORDWR);
    const id = dec.decode(await clone.read(0n, 64)).trim();
    assert.match(id, /^\d+$/);
    assert.deepEqual(await names(alice), ["clone", id].sort());
    assert.deepEqual(await names(bob), ["clone"]);
    await assert.rejects(bob.walk([id]), /file does not exist/);
    // Nothing runs until 'exec'; the session's output is empty once it is hung up.
    const w = await alice.walk([id, "stdout"]);
    assert.ok(w.node);
    const out = await w.node.open(0);
    const pending = out.read(0n, 100);
    await clone.close();
    assert.equal((await pending).length, 0);
    await out.close();
    await w.node.close();
    assert.deepEqual(await names(alice), ["clone"]);
  } finally {
    await alice.close();
    await bob.close();
    await cpu.close();
  }
});

const why = skipReason();
Deno.test({
  name: "cpu: a command on the node sees the caller's namespace at /n/client, over one link",
  ignore: why !== "",
  async fn() {
    const hosts = await makeHosts(["term", "cpu"], "fc");
    const port = freePort();
    const c = await makeCluster();
    const removeAccount = await account("ferrya");
    // The node keeps one helper started ahead of need ("ferry-cpu-spare-").
    const staging = () =>
      [...Deno.readDirSync("/tmp")].map((e) => e.name).filter((n) =>
        (n.startsWith("ferry-cpu-") && !n.startsWith("ferry-cpu-spare-")) ||
        n.startsWith("ferry-logon-")
      ).sort();
    const before = staging();
    let up: Proc | undefined;
    try {
      const ip = hosts.ip.cpu!;
      const node = await c.ca.issue("cpu", { kind: "node", sans: [ip] });
      await writeCredentials(c.certs("cpu"), "cpu", node.certPem, node.keyPem);
      await Deno.writeTextFile(`${c.certs("cpu")}/ca.pem`, c.ca.certPem);
      for (const u of ["ferrya", "ferryb", "rooty", "root", "ghost"]) await c.issue(u, "user");
      const file = await c.write(`
[nodes.cpu]
address = "tcp!${ip}!${port}"

[nodes.cpu.exports.cpu]
kind = "cpu"
access = ["ferrya", "rooty", "root", "ghost"]

[users.ferrya]
namespace = ""

[users.ferryb]
namespace = ""

[users.rooty]
account = "root"
namespace = ""

[users.root]
namespace = ""

[users.ghost]
account = "ferry-no-such-account"
namespace = ""
`);
      // The sources live only in the caller's namespace root.
      const root = `${c.dir}/root-ferrya`;
      const src = `${root}/src`;
      await Deno.mkdir(src, { recursive: true });
      await Deno.writeTextFile(
        `${src}/hello.c`,
        '#include <stdio.h>\nint main(void) { printf("hello from %s\\n", "afar"); return 0; }\n',
      );
      await Deno.writeTextFile(`${src}/Makefile`, "hello: hello.c\n\tcc -o hello hello.c\n");
      await run("chown", ["-R", "ferrya:", src]);
      await Deno.chmod(c.dir, 0o755);

      up = ferryIn(hosts, "cpu", [
        "up",
        file,
        "--node",
        "cpu",
        "--certs",
        c.certs("cpu"),
        "--poll",
        "0",
      ], { env: { FERRY_NODE_ONLY: "the node's own" } });
      await up.waitFor(/node cpu listening/);

      const cpuArgs = (user: string) => [
        "cpu",
        "-u",
        user,
        "--certs",
        c.certs(user),
        "-r",
        root,
        file,
        "cpu",
      ];
      const [exe, ...pre] = ferryArgv();
      const cpu = async (user: string, args: string[], input?: string) => {
        const child = new Deno.Command("ip", {
          args: ["netns", "exec", hosts.ns("term"), exe!, ...pre, ...cpuArgs(user), ...args],
          stdin: input === undefined ? "null" : "piped",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        if (input !== undefined) {
          const w = child.stdin.getWriter();
          await w.write(enc.encode(input));
          await w.close();
        }
        const o = await child.output();
        return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
      };

      // Build on the node from sources only the caller has; the exit status comes back.
      const uid = (await run("id", ["-u", "ferrya"])).trim();
      const built = await cpu("ferrya", [
        "-c",
        "id -u; cd /n/client/src && make && ./hello; exit 7",
      ]);
      assert.equal(built.code, 7, built.err + up.err);
      assert.match(built.out, new RegExp(`^${uid}\\n`));
      assert.match(built.out, /cc -o hello hello.c\nhello from afar\n/);
      // What make wrote landed in the caller's tree.
      assert.ok((await Deno.stat(`${src}/hello`)).isFile);

      // Standard input goes over, and standard error comes back apart.
      const piped = await cpu("ferrya", ["-c", "tr a-z A-Z; echo oops >&2"], "shout\n");
      assert.equal(piped.code, 0, piped.err);
      assert.equal(piped.out, "SHOUT\n");
      // The command's environment is its own, not the node's.
      const env = await cpu("ferrya", ["--", "env"]);
      assert.equal(env.code, 0, env.err);
      assert.match(env.out, /^USER=ferrya$/m);
      assert.doesNotMatch(env.out, /FERRY_NODE_ONLY/);
      assert.match(piped.err, /oops/);

      // A long output arrives whole and in order.
      const long = await cpu("ferrya", ["--", "seq", "1", "300000"]);
      assert.equal(long.code, 0, long.err);
      const lines = long.out.trimEnd().split("\n");
      assert.equal(lines.length, 300000);
      assert.equal(lines[0], "1");
      assert.equal(lines[299999], "300000");

      // Something mounted on the node after its spare helper started is
      // seen by the next command: the helper's view is made when its job
      // comes, not when it started.
      await new Promise((r) => setTimeout(r, 2000));
      const nodePid =
        (await run("pgrep", ["-o", "-f", "--", `--node cpu --certs ${c.certs("cpu")}`]))
          .trim();
      const late = `${c.dir}/late`;
      await run("nsenter", [
        "-t",
        nodePid,
        "-m",
        "sh",
        "-c",
        `mkdir -p ${late} && mount -t tmpfs ferry-late ${late} && echo mounted late > ${late}/hello`,
      ]);
      const lateRead = await cpu("ferrya", ["-c", `cat ${late}/hello`]);
      assert.equal(lateRead.code, 0, lateRead.err);
      assert.equal(lateRead.out, "mounted late\n");

      // A command killed by a signal: the status says so as a shell would.
      const killed = await cpu("ferrya", ["-c", "kill -KILL $$"]);
      assert.equal(killed.code, 128 + 9, killed.err);

      // A job the command leaves running holds its output open: the caller
      // still ends when the command does, with its status and all it wrote,
      // and the job goes with the command.
      const left = await cpu("ferrya", ["-c", "sleep 6666 & echo started; exit 4"]);
      assert.equal(left.code, 4, left.err);
      assert.equal(left.out, "started\n");
      const leftRunning = async () =>
        (await new Deno.Command("pgrep", { args: ["-u", "ferrya", "-f", "sleep 6666"] }).output())
          .success;
      for (let i = 0; await leftRunning(); i++) {
        assert.ok(i < 300, "the command's background job outlived it");
        await new Promise((r) => setTimeout(r, 100));
      }

      // ^C reaches the command's process group on the node.
      const child = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          hosts.ns("term"),
          exe!,
          ...pre,
          ...cpuArgs("ferrya"),
          "-c",
          // Short sleeps: a ^C that comes between "ready" and a sleep's
          // start would wait, trapped, for that whole sleep to end.
          "trap 'echo caught; exit 5' INT; echo ready; while :; do sleep 0.2; done",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let seen = "";
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      while (!seen.includes("ready\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += value;
      }
      assert.match(seen, /ready/);
      child.kill("SIGINT");
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        seen += value;
      }
      const st = await child.status;
      await child.stderr.cancel();
      assert.equal(st.code, 5);
      assert.match(seen, /caught/);

      // No command: a login shell on a pseudo-terminal the size of the
      // caller's, which follows the caller's when it changes.
      const cmdline = [exe!, ...pre, ...cpuArgs("ferrya")].map((w) => `'${w}'`).join(" ");
      const term = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          hosts.ns("term"),
          "script",
          "-qfec",
          `stty rows 30 cols 100; TERM=vt220 exec ${cmdline}`,
          "/dev/null",
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const keys = term.stdin.getWriter();
      let screen = "";
      const shown = term.stdout.pipeThrough(new TextDecoderStream()).getReader();
      // Bounded, so a terminal that stops answering fails the step with what it showed.
      const waitFor = async (re: RegExp, from = 0) => {
        const give = Date.now() + 30_000;
        while (!re.test(screen.slice(from))) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          const late = new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`no ${re} on the terminal: ${JSON.stringify(screen)}`)),
              Math.max(0, give - Date.now()),
            );
          });
          try {
            const { value, done } = await Promise.race([shown.read(), late]);
            if (done) throw new Error(`the session ended before ${re}: ${screen}`);
            screen += value;
          } finally {
            clearTimeout(timer);
          }
        }
      };
      await keys.write(enc.encode("echo tty:$(tty):$TERM; stty size\n"));
      await waitFor(/tty:\/dev\/pts\/\d+:vt220/);
      await waitFor(/^30 100\r?$/m);
      // The caller's terminal grows: the node's follows.
      let tty = "";
      for (
        const pid of (await run("pgrep", ["-f", "ferry.ts cpu -u ferrya"])).trim().split("\n")
      ) {
        // readlink(1): the test task's permissions do not cover /proc.
        const fd0 = (await run("readlink", [`/proc/${pid}/fd/0`]).catch(() => "")).trim();
        if (fd0.startsWith("/dev/pts/")) tty = fd0;
      }
      assert.notEqual(tty, "");
      await run("stty", ["-F", tty, "rows", "40", "cols", "120"]);
      // The new size reaches the node a moment later: ask until it shows.
      // A question typed before the last prompt came is echoed before it,
      // and its answer then follows that prompt on one line.
      for (let i = 0; !/^(?:\$ )?40 120\r?$/m.test(screen); i++) {
        assert.ok(i < 100, `the window size never changed: ${screen}`);
        if (i > 0) await new Promise((r) => setTimeout(r, 50));
        const mark = screen.length;
        await keys.write(enc.encode("stty size\n"));
        await waitFor(/^(?:\$ )?\d+ \d+\r?$/m, mark);
      }
      // ^C typed on the terminal stops what runs in the foreground there.
      // The foreground job prints its mark itself, so the ^C cannot arrive
      // before it runs (and land on the shell instead).
      await keys.write(enc.encode("sh -c 'echo $((6*7))go; exec sleep 600'\n"));
      await waitFor(/42go/);
      await keys.write(new Uint8Array([3]));
      await keys.write(enc.encode("echo back$((1+1))\n"));
      await waitFor(/back2/);
      await keys.write(enc.encode("exit 3\n"));
      // Bounded too: a session that does not end fails with what it showed.
      let stuck: ReturnType<typeof setTimeout> | undefined;
      const ts = await Promise.race([
        term.status,
        new Promise<never>((_, reject) => {
          stuck = setTimeout(() => {
            term.kill("SIGKILL");
            reject(
              new Error(`the session did not end after 'exit 3': ${JSON.stringify(screen)}`),
            );
          }, 30_000);
        }),
      ]).finally(() => clearTimeout(stuck));
      await keys.close().catch(() => {});
      await term.stderr.cancel();
      assert.equal(ts.code, 3, screen);

      // The caller killed outright: the link drops, and the command goes.
      const doomed = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          hosts.ns("term"),
          exe!,
          ...pre,
          ...cpuArgs("ferrya"),
          "--",
          "sh",
          "-c",
          "echo ready; exec sleep 7777",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const said = doomed.stdout.pipeThrough(new TextDecoderStream()).getReader();
      for (let got = ""; !got.includes("ready");) {
        const { value, done } = await said.read();
        assert.ok(!done, "the command never started");
        got += value;
      }
      const sleeping = async () =>
        (await new Deno.Command("pgrep", { args: ["-u", "ferrya", "-f", "sleep 7777"] }).output())
          .success;
      assert.ok(await sleeping());
      doomed.kill("SIGKILL");
      await doomed.status;
      await said.cancel();
      for (let i = 0; await sleeping(); i++) {
        assert.ok(i < 300, "the command outlived its caller");
        await new Promise((r) => setTimeout(r, 100));
      }

      // A user outside the access list is refused before anything runs.
      const marker = `${c.dir}/ran`;
      const refused = await cpu("ferryb", ["-c", `touch ${marker}`]);
      assert.equal(refused.code, 1);
      assert.match(
        refused.err,
        /refused 'ferryb' its cpu export 'cpu': permission denied: it is not on the export's access list/,
      );
      await assert.rejects(Deno.stat(marker));
      assert.match(up.err, /refused 'ferryb' attaching 'cpu'/);
      // On the list, but root by name only, or mapped to an account the node lacks: refused at exec.
      const byName = await cpu("root", ["-c", `touch ${marker}`]);
      assert.equal(byName.code, 1);
      assert.match(
        byName.err,
        /user 'root' would run as host account 'root', which is root: cpu runs a command as root only for a user whose manifest entry says account = "root"/,
      );
      const ghost = await cpu("ghost", ["-c", `touch ${marker}`]);
      assert.equal(ghost.code, 1);
      assert.match(ghost.err, /'ferry-no-such-account', which does not exist on node 'cpu'/);
      await assert.rejects(Deno.stat(marker));
      // Mapped to root by the manifest: runs as root.
      const rooty = await cpu("rooty", ["-c", "id -u"]);
      assert.equal(rooty.code, 0, rooty.err);
      assert.equal(rooty.out.trim(), "0");

      // A manifest altered after it was signed: refused, and nothing ran.
      const signedText = await Deno.readTextFile(file);
      await Deno.writeTextFile(file, signedText + "\n# altered\n");
      const altered = await cpu("ferrya", ["-c", `touch ${marker}`]);
      await Deno.writeTextFile(file, signedText);
      assert.equal(altered.code, 1);
      assert.match(altered.err, /altered after it was signed/);
      await assert.rejects(Deno.stat(marker));

      // Nothing of the sessions is left on the node. The altered manifest's
      // session was asked for before the caller checked the signature and
      // gave up: its helper may still be taking its view down.
      for (let i = 0; staging().join() !== before.join(); i++) {
        if (i === 200) assert.deepEqual(staging(), before);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      // Stopped as a user would: a node killed outright cannot put away
      // the helper it keeps ready.
      await up?.stop("SIGTERM");
      await removeAccount();
      await hosts.cleanup();
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cpu: a node behind another, dialled through its 'via' like any mount",
  ignore: why !== "",
  async fn() {
    const hosts = await makeHosts(["term", "gw", "cpu"], "fv");
    const c = await makeCluster();
    const removeAccount = await account("ferrya");
    const procs: Proc[] = [];
    try {
      const gwPort = freePort();
      const cpuPort = freePort();
      for (const n of ["gw", "cpu"]) {
        const r = await c.ca.issue(n, { kind: "node", sans: [hosts.ip[n]!] });
        await writeCredentials(c.certs(n), n, r.certPem, r.keyPem);
        await Deno.writeTextFile(`${c.certs(n)}/ca.pem`, c.ca.certPem);
      }
      await c.issue("ferrya", "user");
      // The cpu node listens only on the gateway's loopback, through the gateway's /net.
      const file = await c.write(`
[nodes.gw]
address = "tcp!${hosts.ip.gw}!${gwPort}"

[nodes.gw.exports.net]
kind = "net"
access = ["cpu", "ferrya"]

[nodes.cpu]
address = "tcp!127.0.0.1!${cpuPort}"
via = "gw"

[nodes.cpu.exports.cpu]
kind = "cpu"
access = ["ferrya"]

[users.ferrya]
namespace = ""
`);
      const root = `${c.dir}/root-ferrya`;
      await Deno.mkdir(`${root}/src`, { recursive: true });
      await Deno.writeTextFile(`${root}/src/note.txt`, "only on the caller\n");
      await Deno.chmod(c.dir, 0o755);
      for (const n of ["gw", "cpu"]) {
        const p = ferryIn(hosts, n, [
          "up",
          file,
          "--node",
          n,
          "--certs",
          c.certs(n),
          "--poll",
          "0",
        ]);
        procs.push(p);
        await p.waitFor(new RegExp(`node ${n} listening`));
      }
      const [exe, ...pre] = ferryArgv();
      const o = await new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          hosts.ns("term"),
          exe!,
          ...pre,
          "cpu",
          "-u",
          "ferrya",
          "--certs",
          c.certs("ferrya"),
          "-r",
          root,
          file,
          "cpu",
          "-c",
          "id -un; cat /n/client/src/note.txt; exit 4",
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = dec.decode(o.stderr);
      assert.equal(o.code, 4, err + procs.map((p) => p.err).join(""));
      assert.equal(dec.decode(o.stdout), "ferrya\nonly on the caller\n");
    } finally {
      for (const p of procs.reverse()) await p.stop("SIGTERM");
      await removeAccount();
      await hosts.cleanup();
      await c.cleanup();
    }
  },
});

Deno.test({
  name: "cpu: the helper kept ready for the next command goes when the service closes",
  ignore: why !== "",
  async fn() {
    const m = loadText('[users.alice]\nnamespace = ""\n', "m.toml");
    const spares = async () => {
      const o = await new Deno.Command("pgrep", {
        args: ["-f", "cpu --session /tmp/ferry-cpu-spare-"],
        stdout: "piped",
      }).output();
      return dec.decode(o.stdout).split("\n").filter((l) => l !== "").map(Number);
    };
    const already = new Set(await spares());
    const cpu = new CpuService({ node: "n", manifest: () => m, spare: true });
    let mine: number[] = [];
    try {
      // Started with the service, before any session asks for it.
      for (let i = 0; i < 600 && mine.length === 0; i++) {
        mine = (await spares()).filter((p) => !already.has(p));
        if (mine.length === 0) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(mine.length, 1, "no helper was started ahead of need");
    } finally {
      await cpu.close();
    }
    const left = (await spares()).filter((p) => mine.includes(p));
    assert.deepEqual(left, [], "the helper outlived its service");
  },
});

Deno.test({
  name:
    "cpu: a service closed while its spare helper starts leaves neither the helper nor its directory",
  ignore: why !== "",
  async fn() {
    const m = loadText('[users.alice]\nnamespace = ""\n', "m.toml");
    const dirs = () => {
      const out = new Set<string>();
      for (const e of Deno.readDirSync("/tmp")) {
        if (e.name.startsWith("ferry-cpu-spare-")) out.add(e.name);
      }
      return out;
    };
    const spares = async () => {
      const o = await new Deno.Command("pgrep", {
        args: ["-f", "cpu --session /tmp/ferry-cpu-spare-"],
        stdout: "piped",
      }).output();
      return new Set(dec.decode(o.stdout).split("\n").filter((l) => l !== ""));
    };
    const dirsBefore = dirs();
    const procsBefore = await spares();
    // Closed at once, and again a little later: the spare is being made
    // (its directory, its socket, its process) while the service closes.
    const newDirs: string[] = [];
    for (const wait of [0, 0, 1, 2, 5, 10, 20]) {
      const cpu = new CpuService({ node: "n", manifest: () => m, spare: true });
      if (wait) await new Promise((r) => setTimeout(r, wait));
      await cpu.close();
      // Looked at as soon as close() is done: a node exits then.
      newDirs.push(...[...dirs()].filter((d) => !dirsBefore.has(d) && !newDirs.includes(d)));
    }
    const newProcs = [...await spares()].filter((p) => !procsBefore.has(p));
    assert.deepEqual(newDirs, [], "a spare helper's directory was left");
    assert.deepEqual(newProcs, [], "a spare helper outlived its service");
  },
});

Deno.test({
  name: "cpu: a helper whose node goes before sending a job removes the node's directory",
  ignore: why !== "",
  async fn() {
    // This test plays the node: it makes the directory and the socket a
    // node makes for a helper started ahead of need, and then goes (as a
    // node killed outright does) without sending a job or cleaning up.
    const dir = await Deno.makeTempDir({ prefix: "ferry-cpu-spare-" });
    const sock = `${dir}/ns`;
    const l = Deno.listen({ transport: "unix", path: sock });
    const argv = ferryArgv();
    const helper = new Deno.Command(argv[0]!, {
      args: [...argv.slice(1), "cpu", "--session", sock],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    try {
      // The job's connection, and the one the status would come back on.
      const first = await l.accept();
      const second = await l.accept();
      l.close();
      first.close();
      second.close();
      const st = await helper.output();
      assert.equal(st.code, 0, dec.decode(st.stderr));
      await assert.rejects(Deno.stat(dir), Deno.errors.NotFound, "the helper left its directory");
    } finally {
      try {
        l.close();
      } catch { /* closed above */ }
      try {
        helper.kill("SIGKILL");
      } catch { /* already gone */ }
      await helper.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
