/**
 * Revocation and renewal on every kind of listener, each run as users run
 * it (separate `ferry` processes): `ferry listen`, the shell's `listen`
 * directly and through a mounted remote /net, `ferry up` directly and
 * `via` another node, `ferry phone` and `ferry logon --export`.
 *
 * Every listener watches the CA's own directory. For each kind, with one
 * session of alice's open:
 *
 * - re-issuing the listener's certificate into that directory (as
 *   `ferry renew` does) makes a fresh client see the new serial, and the
 *   open session keeps working;
 * - `ferry ca revoke alice` ends the open session within the bound the
 *   README states (7 s), and a new session of hers is refused.
 *
 * The kinds run side by side, each with its own CA, so the whole table
 * costs about as long as its slowest row.
 */
import assert from "node:assert/strict";
import { CertificateAuthority, writeCredentials } from "../../lib/auth/ca.ts";
import { type IdentifiedConn, loadCredentials } from "../../lib/auth/link.ts";
import type { Credentials } from "../../lib/auth/link.ts";
import { signFile } from "../../lib/manifest/sign.ts";
import { ferryArgv } from "../../lib/self.ts";
import { type RemoteNode, StyxClient } from "../../lib/styx/client.ts";
import { tlsDial } from "../../lib/transport/tls.ts";
import type { Conn } from "../../lib/transport/conn.ts";
import { freePort } from "../manifest/cluster.ts";

/** The bound the README's Security section states for the CA host. */
const REVOCATION_BOUND_MS = 7000;
/** A renewed certificate is served after the next look at the directory (every 2 s). */
const RENEWAL_BOUND_MS = 7000;
/** Cold starts of several Deno processes on a busy machine. */
const START_MS = 90_000;

const dec = new TextDecoder();

/** One kind's world: a CA directory the listener watches, alice's own directory, processes. */
class World {
  readonly children: { child: Deno.ChildProcess; args: string[]; log: string[] }[] = [];
  constructor(readonly dir: string) {}
  get ca(): string {
    return `${this.dir}/ca`;
  }
  get user(): string {
    return `${this.dir}/alice`;
  }

  /** Start a long-running `ferry ARGS` child; returns its process id. */
  spawn(args: string[], env: Record<string, string> = {}): number {
    const [exe, ...pre] = ferryArgv();
    const child = new Deno.Command(exe!, {
      args: [...pre, ...args],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const log: string[] = [];
    const drain = async (s: ReadableStream<Uint8Array>) => {
      for await (const c of s) log.push(dec.decode(c));
    };
    drain(child.stdout).catch(() => {});
    drain(child.stderr).catch(() => {});
    this.children.push({ child, args, log });
    return child.pid;
  }

  /** Run `ferry ARGS` to completion; throws with its output unless it succeeds. */
  async run(args: string[]): Promise<string> {
    const [exe, ...pre] = ferryArgv();
    const o = await new Deno.Command(exe!, { args: [...pre, ...args], stdin: "null" }).output();
    const out = dec.decode(o.stdout);
    if (o.code !== 0) {
      throw new Error(`'ferry ${args.join(" ")}' failed: ${out}${dec.decode(o.stderr)}`);
    }
    return out;
  }

  /** What the children printed, for a failure message. */
  logs(): string {
    return this.children.map((c) => `--- ferry ${c.args.join(" ")}\n${c.log.join("")}`).join("\n");
  }

  async stop(): Promise<void> {
    for (const { child } of this.children.reverse()) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
    }
  }
}

/** Where alice connects, and which node's certificate the listener serves. */
interface Target {
  port: number;
  /** The node the listener serves as (its certificate is renewed). */
  node: string;
  /** The attach name. */
  aname: string;
  /** For a listener announced through another's /net: the process that must hold the port. */
  portHeldBy?: number;
}

/** One row of the table: how to start that kind of listener. */
interface Kind {
  name: string;
  /** Start the listener (and whatever it needs) in `w`. */
  start(w: World): Promise<Target>;
}

const manifest = (src: string, gw: number, n2: number) => `
[nodes.gw]
address = "tcp!127.0.0.1!${gw}"

[nodes.gw.exports.files]
kind = "host"
path = "${src}"
access = ["alice"]

[nodes.gw.exports.net]
kind = "net"
access = ["n2"]

[nodes.n2]
address = "tcp!127.0.0.1!${n2}"
via = "gw"

[nodes.n2.exports.files]
kind = "host"
path = "${src}"
access = ["alice"]

[users.alice]
namespace = ""
`;

async function signedManifest(w: World, gw: number, n2: number): Promise<string> {
  const src = `${w.dir}/src`;
  await Deno.mkdir(src, { recursive: true });
  await Deno.writeTextFile(`${src}/hello.txt`, "hello\n");
  const file = `${w.dir}/cluster.toml`;
  await Deno.writeTextFile(file, manifest(src, gw, n2));
  await signFile(file, w.ca);
  return file;
}

const KINDS: Kind[] = [
  {
    name: "ferry listen",
    async start(w) {
      const port = freePort();
      const src = `${w.dir}/src`;
      await Deno.mkdir(src);
      w.spawn(["listen", "--certs", w.ca, `tcp!127.0.0.1!${port}`, src], { FERRY_NAME: "n1" });
      return { port, node: "n1", aname: "" };
    },
  },
  {
    name: "ferry sh: listen",
    start(w) {
      const port = freePort();
      w.spawn(
        ["sh", "-r", `${w.dir}/root`, "-c", `listen 'tcp!127.0.0.1!${port}' { export /tmp & }`],
        { FERRY_CERTS: w.ca, FERRY_NAME: "n1" },
      );
      return Promise.resolve({ port, node: "n1", aname: "" });
    },
  },
  {
    name: "ferry sh: listen through a mounted remote /net",
    async start(w) {
      const gw = freePort();
      const port = freePort();
      // The remote end exports its /net; the listener mounts it and announces through it.
      const remote = w.spawn(
        ["sh", "-r", `${w.dir}/root-gw`, "-c", `listen 'tcp!127.0.0.1!${gw}' { export /net & }`],
        { FERRY_CERTS: w.ca, FERRY_NAME: "gw" },
      );
      await answers(gw);
      w.spawn(
        [
          "sh",
          "-r",
          `${w.dir}/root`,
          "-c",
          `mount 'tcp!127.0.0.1!${gw}' /net; listen 'tcp!127.0.0.1!${port}' { export /tmp & }`,
        ],
        { FERRY_CERTS: w.ca, FERRY_NAME: "n1" },
      );
      return { port, node: "n1", aname: "", portHeldBy: remote };
    },
  },
  {
    name: "ferry up",
    async start(w) {
      const gw = freePort();
      const file = await signedManifest(w, gw, freePort());
      w.spawn(["up", file, "--node", "gw", "--certs", w.ca, "--poll", "0"]);
      return { port: gw, node: "gw", aname: "files" };
    },
  },
  {
    name: "ferry up via",
    async start(w) {
      const gw = freePort();
      const n2 = freePort();
      const file = await signedManifest(w, gw, n2);
      const remote = w.spawn(["up", file, "--node", "gw", "--certs", w.ca, "--poll", "0"]);
      // n2 reaches the outside only through gw: start it once gw answers.
      await answers(gw);
      w.spawn(["up", file, "--node", "n2", "--certs", w.ca, "--poll", "0"]);
      return { port: n2, node: "n2", aname: "files", portHeldBy: remote };
    },
  },
  {
    name: "ferry phone",
    start(w) {
      const port = freePort();
      w.spawn([
        "phone",
        "--backend",
        "sim",
        "--state",
        `${w.dir}/phone`,
        "--listen",
        `tcp!127.0.0.1!${port}`,
        "--certs",
        w.ca,
        "--name",
        "n1",
      ]);
      return Promise.resolve({ port, node: "n1", aname: "" });
    },
  },
  {
    name: "ferry logon --export",
    async start(w) {
      const port = freePort();
      const file = await signedManifest(w, freePort(), freePort());
      w.spawn(
        [
          "logon",
          "-u",
          "alice",
          file,
          "-q",
          "--certs",
          w.user,
          "--export",
          `tcp!127.0.0.1!${port}`,
          "--export-certs",
          w.ca,
        ],
        { FERRY_NAME: "n1" },
      );
      return { port, node: "n1", aname: "" };
    },
  },
];

/** Resolves once something accepts TCP connections on `port`. */
async function answers(port: number): Promise<void> {
  await retry(START_MS, `nothing ever listened on port ${port}`, async () => {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
  });
}

/** An open Styx session of alice's. */
interface Session {
  conn: Conn;
  client: StyxClient;
  root: RemoteNode;
  /** The serial of the certificate the listener presented. */
  serial: string;
  close(): void;
}

async function open(t: Target, creds: Credentials): Promise<Session> {
  const conn = await tlsDial("127.0.0.1", t.port, { creds, peer: t.node });
  try {
    const client = await StyxClient.connect(conn);
    const root = await client.attach("alice", t.aname);
    await root.stat();
    return {
      conn,
      client,
      root,
      serial: (conn as IdentifiedConn).peerCert.serial,
      close: () => void client.close(),
    };
  } catch (e) {
    conn.close();
    throw e;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retry `f` until it succeeds or `ms` have passed; the last error otherwise. */
async function retry<T>(ms: number, what: string, f: () => Promise<T>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      if (Date.now() > end) throw new Error(`${what}: ${(e as Error).message}`);
      await sleep(200);
    }
  }
}

interface Figures {
  renewalMs: number;
  revocationMs: number;
}

/**
 * Re-issue the listener's certificate into the directory it watches; a
 * fresh client must then see the new serial, and `open` keep working.
 * Resolves with how long the new certificate took to be served.
 */
async function renewal(w: World, target: Target, alice: Credentials, s1: Session) {
  const issued = await w.run([
    "ca",
    "issue",
    target.node,
    "--node",
    "--force",
    "--san",
    "127.0.0.1",
    "--dir",
    w.ca,
  ]);
  const serial = /serial ([0-9a-f]+)/.exec(issued)![1]!;
  assert.notEqual(serial, s1.serial);
  const renewedAt = Date.now();
  await retry(RENEWAL_BOUND_MS, "the renewed certificate was never served", async () => {
    const s = await open(target, alice);
    s.close();
    if (s.serial !== serial) throw new Error(`a fresh client still sees serial ${s.serial}`);
  });
  const ms = Date.now() - renewedAt;
  // The session opened before the renewal carries on.
  await s1.root.stat();
  return ms;
}

/**
 * `ferry ca revoke alice` in the directory the listener watches: `s1` must
 * end within the README's bound and a new session of alice's be refused.
 * Resolves with how long the open session outlived the revocation.
 */
async function revocation(w: World, target: Target, alice: Credentials, s1: Session) {
  await w.run(["ca", "revoke", "alice", "--dir", w.ca]);
  const revokedAt = Date.now();
  const ended = await Promise.race([
    s1.conn.closed.then(() => true),
    sleep(REVOCATION_BOUND_MS).then(() => false),
  ]);
  const ms = Date.now() - revokedAt;
  assert.ok(ended, `alice's open session outlived the revocation by ${ms} ms`);
  await assert.rejects(open(target, alice), /revoked/);
  return ms;
}

/** The assertions every kind shares. */
async function exercise(kind: Kind): Promise<Figures> {
  const w = new World(await Deno.makeTempDir({ prefix: "ferry-revoke-" }));
  const sessions: Session[] = [];
  try {
    const ca = await CertificateAuthority.init(w.ca, "revoke-ca");
    try {
      for (const n of ["n1", "gw", "n2"]) {
        const r = await ca.issue(n, { kind: "node", sans: ["127.0.0.1"] });
        await writeCredentials(w.ca, n, r.certPem, r.keyPem, { force: true });
      }
      const a = await ca.issue("alice", { kind: "user" });
      await writeCredentials(w.user, "alice", a.certPem, a.keyPem, { force: true });
      await Deno.writeTextFile(`${w.user}/ca.pem`, ca.certPem);
    } finally {
      ca.close();
    }
    const alice = await loadCredentials(w.user, "alice");
    const target = await kind.start(w);
    const s1 = await retry(
      START_MS,
      "the listener never accepted alice",
      () => open(target, alice),
    );
    sessions.push(s1);
    if (target.portHeldBy !== undefined) {
      // Announced through the remote /net: the remote process holds the port.
      const ss = await new Deno.Command("ss", { args: ["-ltnpH", `sport = :${target.port}`] })
        .output();
      assert.match(dec.decode(ss.stdout), new RegExp(`pid=${target.portHeldBy},`));
    }

    // Renewal and revocation are checked one after the other, each failure
    // reported on its own.
    const failures: string[] = [];
    let renewalMs = NaN;
    try {
      renewalMs = await renewal(w, target, alice, s1);
    } catch (e) {
      failures.push(`renewal: ${(e as Error).message}`);
    }
    let revocationMs = NaN;
    try {
      revocationMs = await revocation(w, target, alice, s1);
    } catch (e) {
      failures.push(`revocation: ${(e as Error).message}`);
    }
    if (failures.length) throw new Error(failures.join("\n"));
    return { renewalMs, revocationMs };
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${w.logs()}`);
  } finally {
    for (const s of sessions) s.close();
    await w.stop();
    await Deno.remove(w.dir, { recursive: true });
  }
}

Deno.test("revocation and renewal reach every kind of listener", async (t) => {
  const results = await Promise.allSettled(KINDS.map((k) => exercise(k)));
  for (const [i, k] of KINDS.entries()) {
    await t.step(k.name, () => {
      const r = results[i]!;
      if (r.status === "rejected") throw r.reason;
      console.log(
        `${k.name}: renewal served after ${r.value.renewalMs} ms, open session ended ${r.value.revocationMs} ms after revocation`,
      );
    });
  }
});
