import assert from "node:assert/strict";
import { ferryArgv } from "../../lib/self.ts";
import { freePort, makeCluster } from "./cluster.ts";

const dec = new TextDecoder();

/** A ferry child process whose standard error is collected as it comes. */
class Ferry {
  readonly proc: Deno.ChildProcess;
  stderr = "";
  stdout = "";
  readonly #done: Promise<void>;

  constructor(args: string[]) {
    const [exe, ...pre] = ferryArgv();
    this.proc = new Deno.Command(exe!, {
      args: [...pre, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const drain = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
      for await (const c of s) add(dec.decode(c));
    };
    this.#done = Promise.all([
      drain(this.proc.stderr, (t) => this.stderr += t),
      drain(this.proc.stdout, (t) => this.stdout += t),
    ]).then(() => {});
  }

  /** Wait until standard error, from offset `from`, matches `re` (or the process ends). */
  async waitFor(re: RegExp, from = 0): Promise<string> {
    for (let i = 0; i < 1200; i++) {
      const m = this.stderr.slice(from).match(re);
      if (m) return m[0];
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`no ${re} from ferry; it said:\n${this.stderr}`);
  }

  async result(): Promise<{ code: number; out: string; err: string }> {
    const st = await this.proc.status;
    await this.#done;
    return { code: st.code, out: this.stdout, err: this.stderr };
  }

  async stop(): Promise<void> {
    try {
      this.proc.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.result();
  }
}

function manifest(dir: string, port: number, bob: boolean): string {
  return `[nodes.files]
address = "tcp!127.0.0.1!${port}"

[nodes.files.exports.home]
kind = "host"
path = "${dir}/home"
access = [${bob ? '"alice", "bob"' : '"alice"'}]

[users.alice]
namespace = """
mount -c files!home /n/home
"""

[users.bob]
${
    bob
      ? `namespace = """
mount -c files!home /n/home
"""`
      : ""
  }
`;
}

Deno.test("an older signed manifest put back is refused by ferry up and ferry logon", async (t) => {
  const c = await makeCluster();
  const procs: Ferry[] = [];
  try {
    await Deno.mkdir(`${c.dir}/home`);
    await Deno.writeTextFile(`${c.dir}/home/hello.txt`, "hello\n");
    await c.issue("files", "node");
    await c.issue("alice", "user");
    await c.issue("bob", "user");
    const port = freePort();
    const file = await c.write(manifest(c.dir, port, true));
    // Keep the first signed copy, as someone with write access to the file could.
    await Deno.copyFile(file, `${c.dir}/old.toml`);
    await Deno.copyFile(`${file}.sig`, `${c.dir}/old.toml.sig`);
    assert.match(await Deno.readTextFile(`${file}.sig`), /\nserial 1\n/);

    const up = (): Ferry => {
      const p = new Ferry([
        "up",
        file,
        "--node",
        "files",
        "--certs",
        c.certs("files"),
        "--poll",
        "50",
      ]);
      procs.push(p);
      return p;
    };
    const logon = async (user: string, cmd: string) => {
      const p = new Ferry([
        "logon",
        "-u",
        user,
        "--certs",
        c.certs(user),
        "-r",
        `${c.dir}/root-${user}`,
        "-q",
        file,
        "-c",
        cmd,
      ]);
      return await p.result();
    };

    const node = up();
    await node.waitFor(/up: node 'files' serving/);

    await t.step("a newer manifest, signed, takes bob's access away", async () => {
      const from = node.stderr.length;
      await c.write(manifest(c.dir, port, false));
      assert.match(await Deno.readTextFile(`${file}.sig`), /\nserial 2\n/);
      await node.waitFor(/up: reloaded \(the manifest changed\): manifest serial 2/, from);
      const a = await logon("alice", "cat /n/home/hello.txt");
      assert.equal(a.out, "hello\n", a.err);
    });

    await t.step("the older signed copy put back: the node keeps serial 2", async () => {
      const from = node.stderr.length;
      await Deno.copyFile(`${c.dir}/old.toml.sig`, `${file}.sig`);
      await Deno.copyFile(`${c.dir}/old.toml`, file);
      const said = await node.waitFor(/its serial 1 is lower than serial 2[^\n]*/, from);
      assert.match(said, /already applied here/);
      assert.doesNotMatch(node.stderr.slice(from), /manifest serial 1/);
      // bob's own logon takes the old manifest (he never applied a newer one), but
      // the node still answers with serial 2's access list.
      const b = await logon("bob", "cat /n/home/hello.txt");
      assert.doesNotMatch(b.out, /hello/);
      assert.match(b.err, /permission denied/);
    });

    await t.step("logon refuses it once it has applied a newer one", async () => {
      const a = await logon("alice", "cat /n/home/hello.txt");
      assert.notEqual(a.code, 0);
      assert.doesNotMatch(a.out, /hello/);
      assert.match(
        a.err,
        /Refusing manifest '.*cluster\.toml': its serial 1 is lower than serial 2/,
      );
    });

    await t.step("a restarted node still refuses it", async () => {
      await node.stop();
      const again = up();
      const r = await again.result();
      assert.notEqual(r.code, 0);
      assert.match(r.err, /its serial 1 is lower than serial 2/);
    });

    await t.step("the current manifest, signed again, is taken", async () => {
      await c.write(manifest(c.dir, port, false));
      assert.match(await Deno.readTextFile(`${file}.sig`), /\nserial 3\n/);
      const n = up();
      await n.waitFor(/up: node 'files' serving/);
      const a = await logon("alice", "cat /n/home/hello.txt");
      assert.equal(a.out, "hello\n", a.err);
      assert.match(await Deno.readTextFile(`${c.certs("files")}/manifest.applied`), / 3\n$/);
    });
  } finally {
    for (const p of procs) await p.stop();
    await c.cleanup();
  }
});
