/**
 * End to end: `ferry logon -u USER FILE -- COMMAND` runs COMMAND as the
 * user's host account in a private mount namespace where the user's
 * namespace is mounted at its own paths; and Debian's OpenSSH `sshd`,
 * with `ForceCommand` running `ferry logon --ssh` through sudo, lands
 * each user who logs in with `ssh` in their own namespace. The trees live
 * on a `ferry up` node on another host (network namespaces); host
 * accounts ferrya and ferryb are made for the test (or reused) and removed.
 */
import assert from "node:assert/strict";
import { writeCredentials } from "../../lib/auth/ca.ts";
import { ferryArgv } from "../../lib/self.ts";
import { lookupAccount } from "../../lib/logon/account.ts";
import { freePort, makeCluster } from "../manifest/cluster.ts";
import { ferryIn, have, type Hosts, hostsSkipReason, makeHosts, Proc, REPO, run } from "./hosts.ts";

const dec = new TextDecoder();

function skipReason(extra: string[]): string {
  const r = hostsSkipReason();
  if (r) return r;
  const missing = ["unshare", "setpriv", "getent", "useradd", "git", "make", ...extra].filter(
    (c) => !have(c),
  );
  if (missing.length) return `missing ${missing.join(", ")}`;
  // Deno grants /dev and /proc/self only to --allow-all: ask test(1) and cat(1).
  const fuse = new Deno.Command("test", { args: ["-c", "/dev/fuse"] }).outputSync();
  return fuse.success ? "" : "no /dev/fuse";
}

/** Make host account `name` unless it exists; returns a function that removes what was made. */
async function account(name: string): Promise<() => Promise<void>> {
  const exists = await new Deno.Command("getent", { args: ["passwd", name], stdout: "null" })
    .output();
  // '*' rather than useradd's locked '!': sshd refuses a locked account even with a key
  // (an account left by an earlier run may have been made locked).
  if (exists.success) {
    await run("usermod", ["-p", "*", name]);
    return async () => {};
  }
  await run("useradd", ["-m", "-s", "/bin/sh", "-p", "*", name]);
  return async () => {
    // The last processes of a session that just ended may still be exiting.
    for (let i = 0; i < 50; i++) {
      const r = await new Deno.Command("userdel", { args: ["-r", name], stderr: "null" }).output();
      if (r.success || (await lookupAccount(name)) === undefined) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`could not remove the test's host account '${name}'`);
  };
}

/**
 * A cluster whose node `files` (at `ip`) serves `ferrya` and `ferryb` host
 * trees, one per user; ferrya's holds a git checkout with a Makefile.
 * Users' credentials share one root-owned directory, as on a login host.
 */
async function cluster(ip: string, port: number) {
  const c = await makeCluster();
  const node = await c.ca.issue("files", { kind: "node", sans: [ip] });
  await writeCredentials(c.certs("files"), "files", node.certPem, node.keyPem);
  await Deno.writeTextFile(`${c.certs("files")}/ca.pem`, c.ca.certPem);
  const users = `${c.dir}/users`;
  for (const u of ["ferrya", "ferryb", "ferryc", "rooty"]) {
    const r = await c.ca.issue(u, { kind: "user" });
    await writeCredentials(users, u, r.certPem, r.keyPem);
  }
  await Deno.writeTextFile(`${users}/ca.pem`, c.ca.certPem);
  const src = `${c.dir}/src`;
  await Deno.mkdir(`${src}/ferrya/proj`, { recursive: true });
  await Deno.mkdir(`${src}/ferryb`, { recursive: true });
  await Deno.writeTextFile(`${src}/ferrya/hello.txt`, "hello ferrya, from the file server\n");
  await Deno.writeTextFile(`${src}/ferrya/secret-ferrya.txt`, "ferrya only\n");
  await Deno.writeTextFile(`${src}/ferryb/hello.txt`, "hello ferryb\n");
  const proj = `${src}/ferrya/proj`;
  await Deno.writeTextFile(`${proj}/in.txt`, "made by make\n");
  await Deno.writeTextFile(
    `${proj}/Makefile`,
    "out.txt: in.txt\n\ttr a-z A-Z < in.txt > out.txt\n",
  );
  await Deno.writeTextFile(`${proj}/.gitignore`, "out.txt\n");
  const git = (args: string[]) =>
    run("git", ["-C", proj, "-c", "user.name=t", "-c", "user.email=t@example.com", ...args]);
  await git(["init", "-q", "-b", "main"]);
  await git(["add", "."]);
  await git(["commit", "-q", "-m", "first"]);
  const file = await c.write(`
[nodes.files]
address = "tcp!${ip}!${port}"

[nodes.files.exports.ferrya]
kind = "host"
path = "${src}/ferrya"
access = ["ferrya"]

[nodes.files.exports.ferryb]
kind = "host"
path = "${src}/ferryb"
access = ["ferryb", "ferryc", "rooty"]

[users.ferrya]
namespace = """
mount files!ferrya /n/files
mount files!ferrya /usr/$user
"""

[users.ferryb]
namespace = """
mount files!ferryb /n/files
"""

[users.ferryc]
account = "ferry-no-such-account"
namespace = "mount files!ferryb /n/files"

[users.rooty]
account = "root"
namespace = "mount files!ferryb /n/files"
`);
  return { c, file, users, src };
}

async function ferryUp(hosts: Hosts, file: string, certs: string): Promise<Proc> {
  const up = ferryIn(hosts, "files", [
    "up",
    file,
    "--node",
    "files",
    "--certs",
    certs,
    "--poll",
    "0",
  ]);
  await up.waitFor(/node files listening/);
  return up;
}

/** `ferry logon ARGS` run to completion on `host`; stdout and stderr. */
async function logonIn(
  ns: string,
  args: string[],
  env: Record<string, string> = {},
  wrap: string[] = [],
) {
  const [exe, ...pre] = ferryArgv();
  const o = await new Deno.Command("ip", {
    args: ["netns", "exec", ns, ...wrap, exe!, ...pre, "logon", ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
}

/** Stage directories of logons (each is removed when its logon ends). */
function stages(): string[] {
  return [...Deno.readDirSync("/tmp")].map((e) => e.name).filter((n) =>
    n.startsWith("ferry-logon-")
  );
}

/** Ferry's mounts in this process's mount namespace. */
async function ferryMounts(): Promise<string[]> {
  const text = await run("cat", ["/proc/self/mountinfo"]);
  return text.split("\n").filter((l) => /ferry-logon:|ferry-view/.test(l));
}

const why1 = skipReason([]);
Deno.test({
  name: "logon -- COMMAND: the namespace at its own paths, as the account, seen by nobody else",
  ignore: why1 !== "",
  async fn() {
    const hosts = await makeHosts(["files", "login"], "fl");
    const port = freePort();
    const { c, file, users, src } = await cluster(hosts.ip.files!, port);
    const removeAlice = await account("ferrya");
    // The node acts as the verified user's host account: ferrya's tree is hers.
    await run("chown", ["-R", "ferrya:", `${src}/ferrya`]);
    let up: Proc | undefined;
    let held: Proc | undefined;
    try {
      up = await ferryUp(hosts, file, c.certs("files"));
      const uid = (await run("id", ["-u", "ferrya"])).trim();
      const login = hosts.ns("login");
      const base = ["-q", "--certs", users, file];

      // Files, git and make on the other node's tree, as ferrya's account.
      const r = await logonIn(login, [
        "-u",
        "ferrya",
        ...base,
        "--",
        "sh",
        "-c",
        "id -u; cat /n/files/hello.txt; cat /usr/ferrya/hello.txt; cd /n/files/proj && " +
        "git status && make && cat out.txt; exit 7",
      ]);
      assert.equal(r.code, 7, r.err);
      const lines = r.out.split("\n");
      assert.equal(lines[0], uid);
      assert.match(
        r.out,
        /hello ferrya, from the file server\n.*hello ferrya, from the file server/s,
      );
      assert.match(r.out, /On branch main\nnothing to commit, working tree clean/);
      assert.match(r.out, /MADE BY MAKE/);
      assert.equal(await Deno.readTextFile(`${src}/ferrya/proj/out.txt`), "MADE BY MAKE\n");

      // One Ferry process runs a logon: it makes its private mount namespace
      // in-process, not by starting Ferry again under unshare(1).
      const chain = await logonIn(login, [
        "-u",
        "ferrya",
        ...base,
        "--",
        "sh",
        "-c",
        `p=$PPID; n=0; while [ "$p" -gt 1 ] && [ "$p" != ${Deno.pid} ]; do ` +
        `[ "$(cat /proc/$p/comm)" = deno ] && n=$((n+1)); ` +
        `p=$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2); done; echo $n`,
      ]);
      assert.equal(chain.code, 0, chain.err);
      assert.equal(chain.out, "1\n", "Ferry processes between the test and the command");

      // Nodes are dialled while the signature is checked, but a manifest
      // altered after it was signed is still refused before anything runs.
      const signedText = await Deno.readTextFile(file);
      const marker = `/tmp/ferry-altered-${Deno.pid}`;
      await Deno.writeTextFile(file, signedText + "\n# altered\n");
      const altered = await logonIn(login, ["-u", "ferrya", ...base, "--", "touch", marker]);
      await Deno.writeTextFile(file, signedText);
      assert.equal(altered.code, 1, altered.err);
      assert.match(altered.err, /altered after it was signed/);
      await assert.rejects(Deno.stat(marker));

      // While one logon runs, nothing of it shows outside its namespace.
      held = new Proc("held", "ip", [
        "netns",
        "exec",
        login,
        ...ferryArgv(),
        "logon",
        "-u",
        "ferrya",
        ...base,
        "--",
        "sh",
        "-c",
        "cat /n/files/hello.txt; read x; echo bye",
      ], { stdin: true });
      await held.waitFor(/hello ferrya/);
      assert.deepEqual(await ferryMounts(), []);
      await assert.rejects(Deno.stat("/n/files/hello.txt"));
      await held.send("");
      await held.waitFor(/bye/);
      assert.equal((await held.status).code, 0);

      // timeout(1) sends SIGTERM to logon and then to its whole process
      // group: whenever it comes, logon ends and still takes everything down.
      const timedOut = await logonIn(login, ["-u", "ferrya", ...base, "--", "sleep", "600"], {}, [
        "timeout",
        "-s",
        "TERM",
        "2",
      ]);
      assert.equal(timedOut.code, 124, timedOut.err);
      assert.deepEqual(stages(), []);

      // A command killed by a signal: logon says so the way a shell does.
      const killed = await logonIn(login, [
        "-u",
        "ferrya",
        ...base,
        "--",
        "sh",
        "-c",
        "kill -KILL $$",
      ]);
      assert.equal(killed.code, 128 + 9, killed.err);

      // A missing host account and the root account are refused before anything runs.
      const ferryc = await logonIn(login, ["-u", "ferryc", ...base, "--", "true"]);
      assert.equal(ferryc.code, 1);
      assert.match(ferryc.err, /host account 'ferry-no-such-account', which does not exist/);
      const rooty = await logonIn(login, ["-u", "rooty", ...base, "--", "true"]);
      assert.equal(rooty.code, 1);
      assert.match(rooty.err, /logon never runs a command as root/);
      // Run through sudo by ferrya: she is the user, nobody else, and only root's CA counts.
      const sudo = { SUDO_UID: uid, SUDO_GID: uid, SUDO_USER: "ferrya" };
      const asAlice = await logonIn(login, [...base, "--", "id", "-un"], sudo);
      assert.equal(asAlice.code, 0, asAlice.err);
      assert.equal(asAlice.out, "ferrya\n");
      const asBob = await logonIn(login, ["-u", "ferryb", ...base, "--", "true"], sudo);
      assert.equal(asBob.code, 1);
      assert.match(asBob.err, /'ferrya' may not log on as 'ferryb'/);
      const insecure = await logonIn(login, ["--insecure-manifest", ...base, "--", "true"], sudo);
      assert.equal(insecure.code, 1);
      assert.match(insecure.err, /--insecure-manifest and -r are refused/);
      const mine = await Deno.makeTempDir();
      try {
        await Deno.copyFile(`${users}/ca.pem`, `${mine}/ca.pem`);
        await Deno.chown(mine, Number(uid), Number(uid));
        const own = await logonIn(login, ["-q", "--certs", mine, file, "--", "true"], sudo);
        assert.equal(own.code, 1);
        assert.match(own.err, /must be owned by root and writable only by root/);
      } finally {
        await Deno.remove(mine, { recursive: true });
      }

      // Everything went with the commands.
      assert.deepEqual(await ferryMounts(), []);
      assert.deepEqual(stages(), []);
    } finally {
      await held?.stop();
      await up?.stop();
      await removeAlice();
      await hosts.cleanup();
      await c.cleanup();
    }
  },
});

const why2 = skipReason(["sshd", "ssh", "ssh-keygen", "sudo"]);
Deno.test({
  name: "ssh with ForceCommand lands each user in their own namespace",
  ignore: why2 !== "",
  async fn() {
    const hosts = await makeHosts(["files", "login", "client"], "fs");
    const port = freePort();
    const { c, file, users, src } = await cluster(hosts.ip.files!, port);
    const removers = [await account("ferrya"), await account("ferryb")];
    // The node acts as each verified user's host account: each tree is its user's.
    for (const u of ["ferrya", "ferryb"]) await run("chown", ["-R", `${u}:`, `${src}/${u}`]);
    const sshDir = await Deno.makeTempDir({ prefix: "ferry-sshd-" });
    const sudoers = `/etc/sudoers.d/ferry-test-${Deno.pid}`;
    const procs: Proc[] = [];
    try {
      procs.push(await ferryUp(hosts, file, c.certs("files")));
      // sshd reads authorized keys as the user, so the directory is open to all.
      await Deno.chmod(sshDir, 0o755);
      await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${sshDir}/host_key`]);
      await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${sshDir}/user_key`]);
      await Deno.mkdir(`${sshDir}/keys`);
      const pub = await Deno.readTextFile(`${sshDir}/user_key.pub`);
      for (const u of ["ferrya", "ferryb"]) await Deno.writeTextFile(`${sshDir}/keys/${u}`, pub);
      // The `ferry` sudo runs: root's, with Deno's cache where this test found it.
      const info = JSON.parse(await run(Deno.execPath(), ["info", "--json"]));
      const ferry = `${sshDir}/ferry`;
      await Deno.writeTextFile(
        ferry,
        `#!/bin/sh\nDENO_DIR='${info.denoDir}' exec '${Deno.execPath()}' run --allow-all ` +
          `--config '${REPO}deno.json' '${REPO}cmd/ferry.ts' "$@"\n`,
        { mode: 0o755 },
      );
      const logon = `${ferry} logon --ssh -q --certs ${users} ${file}`;
      await Deno.writeTextFile(
        sudoers,
        `Defaults!${ferry} env_keep += "SSH_ORIGINAL_COMMAND"\n` +
          `ferrya, ferryb ALL=(root) NOPASSWD: ${logon}\n`,
        { mode: 0o440 },
      );
      await Deno.mkdir("/run/sshd", { recursive: true });
      const sshPort = 2222;
      await Deno.writeTextFile(
        `${sshDir}/sshd_config`,
        [
          `Port ${sshPort}`,
          `ListenAddress ${hosts.ip.login}`,
          `HostKey ${sshDir}/host_key`,
          "PidFile none",
          "UsePAM no",
          "StrictModes no",
          "PasswordAuthentication no",
          "KbdInteractiveAuthentication no",
          // sftp (and scp, which speaks it) runs through ForceCommand too.
          "Subsystem sftp /usr/lib/openssh/sftp-server",
          `AuthorizedKeysFile ${sshDir}/keys/%u`,
          "Match User ferrya,ferryb",
          `    ForceCommand sudo -n ${logon}`,
          "",
        ].join("\n"),
      );
      const sshd = new Proc("sshd", "ip", [
        "netns",
        "exec",
        hosts.ns("login"),
        "/usr/sbin/sshd",
        "-D",
        "-e",
        "-f",
        `${sshDir}/sshd_config`,
      ]);
      procs.push(sshd);
      await sshd.waitFor(/Server listening/, "err");
      // Without a command: a terminal (-tt) and the login shell.
      const ssh = (user: string, cmd?: string) =>
        new Proc(user, "ip", [
          "netns",
          "exec",
          hosts.ns("client"),
          "ssh",
          "-i",
          `${sshDir}/user_key`,
          "-p",
          String(sshPort),
          "-o",
          "BatchMode=yes",
          "-o",
          "StrictHostKeyChecking=no",
          "-o",
          "UserKnownHostsFile=/dev/null",
          "-o",
          "LogLevel=ERROR",
          ...(cmd === undefined ? ["-tt", `${user}@${hosts.ip.login}`] : [
            `${user}@${hosts.ip.login}`,
            cmd,
          ]),
        ], { stdin: true });

      const ferrya = ssh(
        "ferrya",
        "whoami; cat /n/files/hello.txt; cd /n/files/proj && git status && make && cat out.txt; " +
          "echo ready; read x; echo bye",
      );
      procs.push(ferrya);
      await ferrya.waitFor(/ready/);
      assert.match(ferrya.out, /^ferrya\nhello ferrya, from the file server\n/);
      assert.match(ferrya.out, /On branch main\nnothing to commit, working tree clean/);
      assert.match(ferrya.out, /MADE BY MAKE/);
      assert.equal(await Deno.readTextFile(`${src}/ferrya/proj/out.txt`), "MADE BY MAKE\n");

      // Bob, logged in at the same time, sees his own tree and nothing of ferrya's.
      const ferryb = ssh(
        "ferryb",
        "whoami; cat /n/files/hello.txt; ls /n/files; grep -c 'ferry-logon:ferrya' /proc/self/mountinfo; " +
          "grep -c 'ferry-logon:ferryb' /proc/self/mountinfo; ls /usr/ferrya 2>&1; " +
          "cat /n/files/secret-ferrya.txt 2>&1; exit 5",
      );
      procs.push(ferryb);
      const bs = await ferryb.status;
      assert.equal(bs.code, 5, ferryb.err);
      const b = ferryb.out.split("\n");
      assert.equal(b[0], "ferryb");
      assert.equal(b[1], "hello ferryb");
      assert.equal(b[2], "hello.txt");
      assert.equal(b[3], "0");
      assert.ok(Number(b[4]) >= 1, ferryb.out);
      assert.match(b[5]!, /No such file or directory/);
      assert.match(b[6]!, /No such file or directory/);
      assert.deepEqual(await ferryMounts(), []);

      await ferrya.send("");
      await ferrya.waitFor(/bye/);
      assert.equal((await ferrya.status).code, 0);

      // scp copies out of the namespace: its sftp server runs in it.
      const copy = `${sshDir}/copied.txt`;
      await run("ip", [
        "netns",
        "exec",
        hosts.ns("client"),
        "scp",
        "-q",
        "-i",
        `${sshDir}/user_key`,
        "-P",
        String(sshPort),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        `ferrya@${hosts.ip.login}:/n/files/hello.txt`,
        copy,
      ]);
      assert.equal(await Deno.readTextFile(copy), "hello ferrya, from the file server\n");

      // An interactive login: ferrya's login shell on a terminal, in her namespace.
      const tty = ssh("ferrya");
      procs.push(tty);
      await tty.send("echo tty:$(id -un):$(cat /n/files/hello.txt); exit 3");
      await tty.waitFor(/tty:ferrya:hello ferrya, from the file server/);
      assert.equal((await tty.status).code, 3, tty.out + tty.err);
    } finally {
      for (const p of procs.reverse()) await p.stop();
      await Deno.remove(sudoers).catch(() => {});
      for (const r of removers) await r();
      await Deno.remove(sshDir, { recursive: true }).catch(() => {});
      await hosts.cleanup();
      await c.cleanup();
    }
  },
});
