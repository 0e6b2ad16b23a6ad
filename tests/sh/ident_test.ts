/**
 * Exports made from `ferry sh` serve as the verified caller, not as the
 * shell's user: a real `ferry sh` process running as root listens over
 * mutual TLS with certificates from the test's CA, and clients holding user
 * certificates for "mallory" (an ordinary host account here), "root",
 * "alice" and "bob" attach to what it exports.
 *
 * The shell runs in a private mount namespace whose /etc/passwd also lists
 * mallory, so that she is a host account without touching the machine's.
 */

import assert from "node:assert/strict";
import { writeCredentials } from "../../lib/auth/ca.ts";
import type { Credentials } from "../../lib/auth/link.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { Namespace } from "../../lib/ns/namespace.ts";
import { RemoteTree, StyxClient } from "../../lib/styx/client.ts";
import { tlsDial } from "../../lib/transport/tls.ts";
import { makeFixture } from "../auth/fixture.ts";
import { freePort } from "../manifest/cluster.ts";

const REPO = new URL("../../", import.meta.url).pathname;
const enc = new TextEncoder();
const dec = new TextDecoder();
const MALLORY_UID = 4242;

/**
 * True while process `pid` exists and has not ended. Asks ps(1): the test
 * task's permissions do not cover reading /proc (only --allow-all does).
 */
function alive(pid: number): boolean {
  const r = new Deno.Command("ps", {
    args: ["-o", "stat=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const stat = new TextDecoder().decode(r.stdout).trim();
  return r.success && stat !== "" && !stat.startsWith("Z");
}

/** `ferry sh` as root, fed commands on its standard input. */
class Shell {
  readonly child: Deno.ChildProcess;
  out = "";
  err = "";
  #w: WritableStreamDefaultWriter<Uint8Array>;
  #pumps: Promise<void>[];

  constructor(root: string, certs: string, passwd: string) {
    const ferry = [Deno.execPath(), "run", "--allow-all", `${REPO}cmd/ferry.ts`, "sh", "-r", root];
    this.child = new Deno.Command("unshare", {
      args: [
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$0" /etc/passwd && exec "$@"',
        passwd,
        ...ferry,
      ],
      env: { USER: "root", FERRY_CERTS: certs, FERRY_NAME: "srv" },
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#w = this.child.stdin.getWriter();
    const pump = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
      const d = new TextDecoder();
      for await (const c of s) add(d.decode(c, { stream: true }));
    };
    this.#pumps = [
      pump(this.child.stdout, (t) => (this.out += t)),
      pump(this.child.stderr, (t) => (this.err += t)),
    ];
  }

  /** Run `line`, then wait until the shell has printed `mark` after it. */
  async run(line: string, mark: string): Promise<void> {
    await this.#w.write(enc.encode(`${line}\necho ${mark}\n`));
    // A bound so that a stuck shell fails the test with what it printed.
    const give = Date.now() + 60_000;
    while (!this.out.includes(`${mark}\n`)) {
      if (!alive(this.child.pid)) await this.#ended();
      if (Date.now() > give) {
        throw new Error(`no '${mark}' after '${line}': out: ${this.out}\nerr: ${this.err}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Throw with everything the shell printed, once its output has all arrived. */
  async #ended(): Promise<never> {
    const st = await this.child.status;
    await Promise.allSettled(this.#pumps);
    throw new Error(
      `ferry sh ended (exit ${st.code}, signal ${st.signal}): ${this.err}${this.out}`,
    );
  }

  /** Wait until standard error holds `text`. */
  async stderrHas(text: string): Promise<void> {
    while (!this.err.includes(text)) {
      if (!alive(this.child.pid)) await this.#ended();
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** The pid of `ferry sh` itself (the child of `unshare`'s exec chain). */
  get pid(): number {
    return this.child.pid;
  }

  async close(): Promise<void> {
    await this.#w.close().catch(() => {});
    this.child.kill("SIGKILL");
    await this.child.status;
    await Promise.allSettled(this.#pumps);
  }
}

/** A namespace whose /n holds what `creds` sees when it attaches to port `port`. */
async function attachAs(creds: Credentials, port: number) {
  const conn = await tlsDial("127.0.0.1", port, { creds, peer: "srv" });
  const client = await StyxClient.connect(conn);
  const mem = new MemTree();
  await mem.mkdirp("/n");
  const ns = new Namespace(mem, { caller: { user: creds.name } });
  // The uname is a lie the server must ignore: it uses the certificate's name.
  await ns.mount(new RemoteTree(client, { uname: "root" }), "/n");
  return {
    ns,
    async close() {
      await ns.close();
      await client.close();
    },
  };
}

async function errorOf(p: Promise<unknown>): Promise<string> {
  return await p.then(() => "", (e: Error) => e.message);
}

Deno.test({
  name: "ferry sh exports act for the verified caller",
  ignore: Deno.uid() !== 0,
  fn: async (t) => {
    const fx = await makeFixture();
    const tmp = await Deno.makeTempDir({ prefix: "ferry-ident-" });
    const certs = `${tmp}/certs`;
    const srv = await fx.creds("srv", "node", { sans: ["127.0.0.1"] });
    await writeCredentials(certs, "srv", srv.cert, srv.key);
    await Deno.writeTextFile(`${certs}/ca.pem`, srv.ca);
    const mallory = await fx.creds("mallory", "user");
    const root = await fx.creds("root", "user");
    const alice = await fx.creds("alice", "user");
    const bob = await fx.creds("bob", "user");

    const passwd = `${tmp}/passwd`;
    await Deno.writeTextFile(
      passwd,
      (await Deno.readTextFile("/etc/passwd")) +
        `mallory:x:${MALLORY_UID}:${MALLORY_UID}::/nonexistent:/usr/sbin/nologin\n`,
    );
    // A host directory with a file only root may read, and one anyone may.
    const files = `${tmp}/files`;
    await Deno.mkdir(files, { mode: 0o755 });
    await Deno.chmod(files, 0o755);
    await Deno.writeTextFile(`${files}/secret`, "root only\n", { mode: 0o600 });
    await Deno.chmod(`${files}/secret`, 0o600);
    await Deno.writeTextFile(`${files}/public`, "for everyone\n", { mode: 0o644 });
    await Deno.chmod(`${files}/public`, 0o644);
    await Deno.mkdir(`${files}/drop`);
    await Deno.chmod(`${files}/drop`, 0o777);
    await Deno.mkdir(`${tmp}/root`);

    const sleeper = new Deno.Command("sleep", { args: ["300"], stdout: "null", stderr: "null" })
      .spawn();
    const sh = new Shell(`${tmp}/root`, certs, passwd);
    const progPort = freePort();
    const hostPort = freePort();
    const allowPort = freePort();
    try {
      await sh.run(
        `listen 'tcp!127.0.0.1!${progPort}' { echo $user >> /tmp/users; export /prog & }`,
        "prog-ready",
      );
      await sh.run(`listen 'tcp!127.0.0.1!${hostPort}' { export '#U*${files}' & }`, "host-ready");

      await t.step("mallory cannot kill root's processes through /prog", async () => {
        const m = await attachAs(mallory, progPort);
        try {
          const status = dec.decode(await m.ns.readFile(`/n/${sleeper.pid}/status`));
          assert.match(status, /\broot\b/);
          for (const pid of [sleeper.pid, sh.pid]) {
            for (const cmd of ["kill", "killgrp"]) {
              const err = await errorOf(
                m.ns.writeFile(`/n/${pid}/ctl`, enc.encode(cmd), { create: false }),
              );
              assert.match(err, /permission denied/, `${cmd} of ${pid} was allowed`);
            }
          }
        } finally {
          await m.close();
        }
        assert.ok(alive(sleeper.pid), "root's sleep was killed");
        assert.ok(alive(sh.pid), "the listening shell was killed");
      });

      await t.step("root's certificate may kill root's process", async () => {
        const r = await attachAs(root, progPort);
        try {
          await r.ns.writeFile(`/n/${sleeper.pid}/ctl`, enc.encode("kill"), { create: false });
        } finally {
          await r.close();
        }
        assert.equal((await sleeper.status).signal, "SIGKILL");
      });

      await t.step("$user in the listen block is each connection's verified name", async () => {
        const users = await Deno.readTextFile(`${tmp}/root/tmp/users`);
        assert.deepEqual(users.trim().split("\n"), ["mallory", "root"]);
      });

      await t.step("a host export checks the caller's host permissions", async () => {
        const m = await attachAs(mallory, hostPort);
        try {
          assert.equal(dec.decode(await m.ns.readFile("/n/public")), "for everyone\n");
          assert.match(await errorOf(m.ns.readFile("/n/secret")), /permission denied/);
          assert.match(
            await errorOf(m.ns.writeFile("/n/public", enc.encode("mine"))),
            /permission denied/,
          );
          // What she may create is hers on the host.
          await m.ns.writeFile("/n/drop/note", enc.encode("mallory was here"));
          assert.equal((await Deno.lstat(`${files}/drop/note`)).uid, MALLORY_UID);
          assert.equal((await m.ns.stat("/n/drop/note")).uid, "mallory");
        } finally {
          await m.close();
        }
        const r = await attachAs(root, hostPort);
        try {
          assert.equal(dec.decode(await r.ns.readFile("/n/secret")), "root only\n");
        } finally {
          await r.close();
        }
        assert.equal(await Deno.readTextFile(`${files}/public`), "for everyone\n");
      });

      await t.step("listen --allow admits only those it names", async () => {
        await sh.run(
          `listen --allow alice 'tcp!127.0.0.1!${allowPort}' { export /prog & }`,
          "allow-ready",
        );
        const a = await attachAs(alice, allowPort);
        try {
          assert.ok((await a.ns.readDir("/n")).length > 0);
        } finally {
          await a.close();
        }
        const err = await errorOf(attachAs(bob, allowPort));
        assert.match(err, /'bob' is not allowed to connect here/);
        await sh.stderrHas("'bob' is not allowed to connect here");
      });

      await t.step("listen refuses a bad --allow with a message", async () => {
        await sh.run(
          `listen --allow ',' 'tcp!127.0.0.1!0' { export /prog & }; echo status: $status`,
          "bad-allow",
        );
        assert.match(sh.out, /status: --allow ',' names nobody/);
        await sh.run(
          `listen -A --allow alice 'tcp!127.0.0.1!0' { export /prog & }; echo status: $status`,
          "allow-A",
        );
        assert.match(sh.out, /status: --allow needs verified callers/);
      });
    } finally {
      await sh.close();
      try {
        sleeper.kill("SIGKILL");
      } catch { /* already gone */ }
      await sleeper.status;
      await Deno.remove(tmp, { recursive: true });
      await fx.cleanup();
    }
  },
});
