/**
 * Ferry's main demo, driven by the embedded default manifest
 * (manifests/demo.toml): a CA and its signer, three nodes on loopback that
 * each join the cluster with one command (`ferry up --join` and a token:
 * a file server with a home directory and /prog, a gateway with /net, a
 * phone behind NAT reached through the gateway's /net), a user logging on,
 * and the article's walkthrough done for real with mutual TLS; then a
 * change and a revocation published from the CA host reaching every node. Each step prints the command and what it shows. It
 * works in a temporary directory and removes it at the end.
 *
 * @module
 */

import { ferryArgv } from "../self.ts";
import { FerryChild } from "../child.ts";
import { lookupAccount } from "../logon/account.ts";

/** Options for {@link runDemo}. */
export interface DemoOptions {
  /** Keep the temporary directory (its path is printed). */
  keep?: boolean;
  /** Where the walkthrough is printed (default: console.log). */
  out?: (line: string) => void;
}

/** Loopback ports the demo's manifest uses. */
export interface DemoPorts {
  signer: number;
  files: number;
  gateway: number;
  phone: number;
}

/** The embedded default manifest, as shipped. */
export async function defaultManifestText(): Promise<string> {
  return await Deno.readTextFile(new URL("../../manifests/demo.toml", import.meta.url));
}

/**
 * The default manifest moved to `root` (instead of /tmp/ferry-demo) and
 * `ports` (instead of 17000-17003).
 *
 * @example
 * ```ts ignore
 * const text = demoManifest(await defaultManifestText(), "/tmp/x", { signer: 1, files: 2, gateway: 3, phone: 4 });
 * ```
 */
export function demoManifest(text: string, root: string, ports: DemoPorts): string {
  return text.replaceAll("/tmp/ferry-demo", root)
    .replaceAll("127.0.0.1!17000", `127.0.0.1!${ports.signer}`)
    .replaceAll("127.0.0.1!17001", `127.0.0.1!${ports.files}`)
    .replaceAll("127.0.0.1!17002", `127.0.0.1!${ports.gateway}`)
    .replaceAll("127.0.0.1!17003", `127.0.0.1!${ports.phone}`);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

interface Result {
  code: number;
  out: string;
  err: string;
}

const dec = new TextDecoder();

async function ferry(args: string[], stdin?: string): Promise<Result> {
  const [exe, ...pre] = ferryArgv();
  const child = new Deno.Command(exe!, {
    args: [...pre, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const o = await child.output();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

/**
 * Run the demo; resolves to the exit status (0 when every step showed what
 * it should).
 */
export async function runDemo(opts: DemoOptions = {}): Promise<number> {
  const say = opts.out ?? ((l: string) => console.log(l));
  const tmp = await Deno.makeTempDir({ prefix: "ferry-demo-" });
  const nodes = new Map<string, FerryChild>();
  let signer: FerryChild | undefined;
  const t0 = performance.now();

  const step = (title: string) => say(`\n== ${title}`);
  const show = (cmdline: string, r: { out: string; err: string }, maxLines = 40) => {
    say(`% ${cmdline}`);
    const lines = (r.out + r.err).trimEnd().split("\n").filter((l) => l !== "");
    for (const l of lines.slice(0, maxLines)) say(`  ${l}`);
    if (lines.length > maxLines) say(`  ... (${lines.length - maxLines} more lines)`);
  };
  const must = async (cmdline: string, args: string[], max?: number): Promise<Result> => {
    const r = await ferry(args);
    show(cmdline, r, max);
    if (r.code !== 0) throw new Error(`step failed: ${cmdline} (exit ${r.code})`);
    return r;
  };
  const short = (p: string) => p.replace(tmp, "$DEMO");

  try {
    say(`Ferry demo in ${tmp} (shown as $DEMO)`);
    const ca = `${tmp}/ca`;
    const ports: DemoPorts = {
      signer: freePort(),
      files: freePort(),
      gateway: freePort(),
      phone: freePort(),
    };
    const file = `${tmp}/cluster.toml`;
    const text = demoManifest(await defaultManifestText(), tmp, ports);
    await Deno.writeTextFile(file, text);
    await Deno.mkdir(`${tmp}/files/home/notes`, { recursive: true });
    await Deno.mkdir(`${tmp}/gateway/tmp`, { recursive: true });
    await Deno.mkdir(`${tmp}/phone/state`, { recursive: true });
    await Deno.writeTextFile(`${tmp}/files/home/hello.txt`, "hello from the file server's disk\n");
    await Deno.writeTextFile(`${tmp}/files/home/notes/todo`, "share the phone\n");
    // A host account named alice holds the Ferry user alice to its own
    // permissions in host trees; give it the home it is shown editing.
    const acct = await lookupAccount("alice");
    if (acct && Deno.uid() === 0) await chownTree(`${tmp}/files/home`, acct.uid, acct.gid);
    await Deno.writeTextFile(`${tmp}/files/home/id.key`, "not for export\n");
    await Deno.writeTextFile(`${tmp}/gateway/tmp/motd`, "the gateway's /tmp, read-only\n");

    step("1. A certificate authority; a token for each node, credentials for the users");
    await must("ferry ca init ferry-demo-ca", ["ca", "init", "ferry-demo-ca", "--dir", ca]);
    const tokens = new Map<string, string>();
    const addr = `tcp!127.0.0.1!${ports.signer}`;
    signer = new FerryChild(["signer", addr, "--dir", ca]);
    await signer.waitFor(/fingerprint sha256:\S+/);
    say(`% ferry signer '${addr}' &`);
    for (const l of signer.stdout.trim().split("\n")) if (l) say(`  ${l}`);
    for (const n of ["files", "gateway", "phone"]) {
      // --manifest: the certificate also carries the host of the node's address.
      const r = await ferry(["ca", "token", n, "--node", "--manifest", file, "--dir", ca]);
      const token = r.out.trim();
      show(`ferry ca token ${n} --node --manifest ${short(file)}`, {
        out: `${token.slice(0, 32)}…`,
        err: r.err,
      });
      if (r.code !== 0) throw new Error(`step failed: ferry ca token ${n}`);
      tokens.set(n, token);
    }
    for (const [u, g] of [["alice", "staff"], ["bob", "staff"]] as const) {
      await must(`ferry ca issue ${u} --user --group ${g}`, [
        "ca",
        "issue",
        u,
        "--user",
        "--group",
        g,
        "--dir",
        ca,
      ]);
      await copyCreds(ca, `${tmp}/${u}`, u);
    }

    step("2. The manifest: checked, then signed with the CA's key and published by the signer");
    say(
      `  nodes: files (${ports.files}), gateway (${ports.gateway}), phone via gateway (${ports.phone})`,
    );
    await must(`ferry check ${short(file)}`, ["check", file]);
    await must(`ferry sign ${short(file)}`, ["sign", "--dir", ca, file]);
    await signer.waitFor(/serving manifest serial 1/);
    // Kept to show in step 12 that an older signed copy cannot be put back.
    await Deno.copyFile(file, `${tmp}/cluster-first.toml`);
    await Deno.copyFile(`${file}.sig`, `${tmp}/cluster-first.toml.sig`);

    step("3. Three nodes join, one command each: enrol, fetch the signed manifest, serve");
    const up = (n: string, token?: string) =>
      new FerryChild([
        "up",
        "--join",
        addr,
        "--node",
        n,
        "--certs",
        `${tmp}/${n}/certs`,
        ...(token ? ["--token", token] : []),
      ]);
    for (const n of ["gateway", "files", "phone"]) {
      const c = up(n, tokens.get(n));
      nodes.set(n, c);
      const line = await c.waitFor(/node \S+ listening on \S+/);
      say(`% ferry up --join '${addr}' --node ${n} --token … &`);
      for (const l of (c.stderr + c.stdout).split("\n")) {
        if (/enrolling|^enrolled|manifest serial/.test(l)) say(`  ${short(l)}`);
      }
      say(`  ${line}`);
      const serving = c.stderr.match(/up: node .*/)?.[0];
      if (serving) say(`  ${serving}`);
    }

    const alice = ["logon", "-u", "alice", "--certs", `${tmp}/alice`, "-r", `${tmp}/root-alice`];
    const joined = ["--join", addr];
    step("4. alice logs on: her namespace is composed from the manifest the signer serves");
    await must(`ferry logon -u alice --join '${addr}' -c ns`, [...alice, ...joined, "-c", "ns"]);

    step("5. Remote files: the file server's home is alice's home (id.key is filtered out)");
    await must(`ferry logon -u alice -c 'ls -l /usr/alice; cat /usr/alice/hello.txt'`, [
      ...alice,
      "-q",
      ...joined,
      "-c",
      "ls -l /usr/alice; cat /usr/alice/hello.txt; echo 'edited by alice' > /usr/alice/notes/todo",
    ]);
    say(
      `  on the file server's disk: notes/todo = ${
        JSON.stringify(await Deno.readTextFile(`${tmp}/files/home/notes/todo`))
      }`,
    );

    step("6. Remote processes: the file server's /prog");
    const prog = await ferry([...alice, "-q", ...joined, "-c", "ls /n/files/prog"]);
    show("ferry logon -u alice -c 'ls /n/files/prog'", prog, 6);
    if (prog.code !== 0) say("  (the node process lacks the permission to read the host's /proc)");

    step("7. A remote network: the gateway's /net, and the phone behind NAT reached through it");
    await must(
      "ferry logon -u alice -c 'ls /n/gateway/net'",
      [...alice, "-q", ...joined, "-c", "ls /n/gateway/net"],
    );
    await must(
      "ferry logon -u alice -c 'echo send 6412345678 hello > /phone/sms; cat /phone/sms'",
      [
        ...alice,
        "-q",
        ...joined,
        "-c",
        "echo send 6412345678 'hello from alice' > /phone/sms; cat /phone/sms; cat /phone/status",
      ],
    );

    step("8. Access lists: bob is on staff but not on the phone's list");
    const bob = ["logon", "-u", "bob", "--certs", `${tmp}/bob`, "-r", `${tmp}/root-bob`];
    await must(`ferry logon -u bob --join '${addr}' -c ns`, [...bob, ...joined, "-c", "ns"]);
    const bad = `${tmp}/bob-phone.toml`;
    await Deno.writeTextFile(
      bad,
      text.replace(
        "mount -a gateway!tmp /tmp",
        "mount -a gateway!tmp /tmp\nmount phone!phone /phone",
      ),
    );
    const refused = await ferry(["check", bad]);
    show(`ferry check ${short(bad)}   (bob's namespace now mounts the phone)`, refused);
    if (refused.code === 0) throw new Error("a namespace the access list denies passed the check");

    step("9. A certificate for 'alice' from another CA is refused");
    const evil = `${tmp}/evil`;
    await ferry(["ca", "init", "ferry-demo-ca", "--dir", evil]);
    await ferry(["ca", "issue", "alice", "--user", "--group", "staff", "--dir", evil]);
    await copyCreds(evil, `${tmp}/mallory`, "alice");
    await Deno.copyFile(`${ca}/ca.pem`, `${tmp}/mallory/ca.pem`);
    const forged = await ferry([
      "logon",
      "-u",
      "alice",
      "--certs",
      `${tmp}/mallory`,
      "-r",
      `${tmp}/root-mallory`,
      file,
      "-c",
      "ls /usr/alice",
    ]);
    show("ferry logon -u alice -c 'ls /usr/alice'   (mallory's forged certificate)", forged, 8);
    if (forged.code === 0) throw new Error("a forged certificate was accepted");
    const forgedJoin = await ferry([
      "logon",
      "-u",
      "alice",
      "--certs",
      `${tmp}/mallory`,
      "-r",
      `${tmp}/root-mallory`,
      ...joined,
      "-c",
      "ls /usr/alice",
    ]);
    show("ferry logon -u alice --join … (the same certificate, at the signer)", forgedJoin, 4);
    if (forgedJoin.code === 0) throw new Error("the signer served a forged certificate");

    step(
      "10. A live change published from the CA host: the file server drops /prog, gains 'notes'",
    );
    const changed = text
      .replace(
        /\[nodes\.files\.exports\.prog\]\nkind = "prog"\naccess = \["alice"\]\n/,
        `[nodes.files.exports.notes]\nkind = "host"\npath = "${tmp}/files/home/notes"\naccess = ["alice"]\n`,
      )
      .replace("mount files!prog /n/files/prog", "mount files!notes /n/notes");
    await Deno.writeTextFile(file, changed);
    const files = nodes.get("files")!;
    const before = new Map([...nodes].map(([n, c]) => [n, c.stderr.length]));
    const signed = performance.now();
    await must(`ferry sign ${short(file)}`, ["sign", "--dir", ca, file]);
    for (const [n, c] of nodes) {
      await c.waitFor(/up: reloaded \(manifest serial 2 from the signer\)[^\n]*/, {
        stream: "stderr",
        from: before.get(n)!,
        ms: 15_000,
      });
      say(`  ${n}: ${c.stderr.slice(before.get(n)!).match(/up: reloaded[^\n]*/)![0]}`);
    }
    say(`  (every node applied it ${ms(signed)} after 'ferry sign' began)`);
    await must("ferry logon -u alice -c 'cat /n/notes/todo'", [
      ...alice,
      "-q",
      ...joined,
      "-c",
      "cat /n/notes/todo",
    ]);

    const pub = `${ca}/published/manifest.toml`;
    step("11. A tampered manifest is refused; the one served stays");
    const before2 = signer.stderr.length;
    await Deno.writeTextFile(pub, changed.replace('access = ["alice"]', 'access = ["*"]'));
    say(`% (edit ${short(pub)} without signing it)`);
    await signer.waitFor(/not serving[^\n]*/, { stream: "stderr", from: before2, ms: 15_000 });
    say(`  ${signer.stderr.slice(before2).trim().split("\n").join("\n  ")}`);

    step("12. The first signed manifest put back is refused: its serial is lower");
    const before3 = signer.stderr.length;
    await Deno.copyFile(`${tmp}/cluster-first.toml`, pub);
    await Deno.copyFile(`${tmp}/cluster-first.toml.sig`, `${pub}.sig`);
    say("% cp cluster-first.toml cluster-first.toml.sig $DEMO/ca/published/");
    await signer.waitFor(/not serving[^\n]*serial[^\n]*/, {
      stream: "stderr",
      from: before3,
      ms: 15_000,
    });
    say(`  ${signer.stderr.slice(before3).trim().split("\n").join("\n  ")}`);
    say("  (a node given that copy refuses it too: it keeps the highest serial it applied)");

    step("13. Revocation reaches every node within a second; bob's open session ends");
    const bobSession = new FerryChild([
      ...bob,
      ...joined,
      "-q",
      "-c",
      "cat /usr/bob/hello.txt; sleep 60",
    ]);
    await bobSession.waitFor(/hello from the file server/);
    say("% ferry logon -u bob --join … -c 'cat /usr/bob/hello.txt; sleep 60' &");
    const before4 = new Map([...nodes].map(([n, c]) => [n, c.stderr.length]));
    const revoked = performance.now();
    await must("ferry ca revoke bob", ["ca", "revoke", "bob", "--dir", ca]);
    for (const [n, c] of nodes) {
      await c.waitFor(/new CRL from the signer/, {
        stream: "stderr",
        from: before4.get(n)!,
        ms: 15_000,
      });
      say(`  ${n}: new CRL from the signer (${ms(revoked)} after 'ferry ca revoke' began)`);
    }
    await files.waitFor(/certificate of 'bob' was revoked[^\n]*/, {
      stream: "stderr",
      from: before4.get("files")!,
      ms: 15_000,
    });
    say(
      `  files: ${
        files.stderr.slice(before4.get("files")!).match(/refused[^\n]*revoked[^\n]*/)![0]
      } (${ms(revoked)})`,
    );
    await bobSession.stop();

    step("14. With the signer down, a node restarts from its cached manifest");
    await signer.stop();
    say("% kill <signer>");
    await must("ferry down --node files", [
      "down",
      "--node",
      "files",
      "--certs",
      `${tmp}/files/certs`,
    ]);
    await files.proc.status;
    const again = up("files");
    nodes.set("files", again);
    await again.waitFor(/node \S+ listening on \S+/);
    say(`% ferry up --join '${addr}' --node files &`);
    say(`  ${short(again.stderr.match(/up: cannot take[^\n]*/)?.[0] ?? "")}`);
    await must("ferry logon -u alice --join … -c 'cat /n/notes/todo'", [
      ...alice,
      "-q",
      ...joined,
      "-c",
      "cat /n/notes/todo",
    ]);

    step("15. ferry down");
    for (const n of ["phone", "files", "gateway"]) {
      await must(`ferry down --node ${n}`, ["down", "--node", n, "--certs", `${tmp}/${n}/certs`]);
      await nodes.get(n)!.proc.status;
      nodes.delete(n);
    }
    say(
      `\ndemo finished in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s: every session above was mutually authenticated and encrypted`,
    );
    return 0;
  } catch (e) {
    console.error(`demo: ${(e as Error).message}`);
    for (const [n, c] of nodes) {
      const tail = c.stderr.trim().split("\n").slice(-5).join("\n    ");
      if (tail) console.error(`  node '${n}' said:\n    ${tail}`);
    }
    return 1;
  } finally {
    for (const c of nodes.values()) await c.stop();
    await signer?.stop();
    if (opts.keep) say(`kept ${tmp}`);
    else await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

function ms(since: number): string {
  return `${Math.round(performance.now() - since)} ms`;
}

async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  await Deno.chown(path, uid, gid);
  for await (const e of Deno.readDir(path)) {
    if (e.isDirectory) await chownTree(`${path}/${e.name}`, uid, gid);
    else await Deno.chown(`${path}/${e.name}`, uid, gid);
  }
}

async function copyCreds(from: string, to: string, name: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true, mode: 0o700 });
  await Deno.copyFile(`${from}/ca.pem`, `${to}/ca.pem`);
  await Deno.copyFile(`${from}/${name}.pem`, `${to}/${name}.pem`);
  await Deno.copyFile(`${from}/${name}.key`, `${to}/${name}.key`);
  await Deno.chmod(`${to}/${name}.key`, 0o600);
}
