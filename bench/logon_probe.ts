/**
 * Logon speed beside OpenSSH, in the same run, on 127.0.0.1:
 *
 * - time to a first prompt: `ferry logon -u ferrybench FILE -- true` (a private
 *   mount namespace with ferrybench's namespace mounted, the command run as
 *   ferrybench) against `ssh ferrybench@127.0.0.1 true` to a throwaway sshd, and
 *   `ssh` through that sshd's ForceCommand into `ferry logon --ssh`;
 * - `git status` in a 10,000-file checkout: under `logon --` over the
 *   mounts (the checkout lives on a `ferry up` node) against the same
 *   checkout over sshfs. Each run is a fresh logon or a fresh sshfs mount;
 *   a first `git status` through each kind of mount refreshes its index.
 *
 * Medians of RUNS runs. Needs root, /dev/fuse, openssh-server, sudo,
 * sshfs; makes host account ferrybench when missing and removes it after.
 *
 * Usage: deno run --allow-all bench/logon_probe.ts [--runs N] [--files N] [--json] [--hold]
 * (--hold: set everything up, print the commands, wait for ^C, then measure)
 *
 * @module
 */

import { FERRY_V8_FLAGS } from "../lib/self.ts";
import { parseArgs } from "node:util";
import { writeCredentials } from "../lib/auth/ca.ts";
import { freePort, makeCluster } from "../tests/manifest/cluster.ts";
import { median, printRows, sh, startNode, timed } from "./util.ts";
import { startProbeSshd } from "./ssh.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "7" },
    json: { type: "boolean", default: false },
    hold: { type: "boolean", default: false },
    files: { type: "string", default: "10000" },
  },
});
const RUNS = Number(values.runs);
const FILES = Number(values.files);
const REPO = new URL("..", import.meta.url).pathname;
const FERRY = `${REPO}cmd/ferry.ts`;

const missing = ["sshd", "ssh", "sshfs", "sudo", "git", "unshare", "setpriv"].filter((c) =>
  !new Deno.Command("sh", { args: ["-c", `command -v ${c}`], stdout: "null" }).outputSync().success
);
if (Deno.uid() !== 0 || missing.length > 0) {
  const why = `${
    Deno.uid() !== 0 ? "needs root" : `missing ${missing.join(", ")}`
  } (apt-get install -y openssh-server sudo sshfs git)`;
  console.log(values.json ? JSON.stringify(["skipped", "-", "-", why]) : `skipped: ${why}`);
  Deno.exit(0);
}

const c = await makeCluster();
const work = c.dir;
const cleanups: (() => Promise<unknown>)[] = [];
try {
  // Host account ferrybench ('*' keeps it unlocked for key logins).
  if (
    !(await new Deno.Command("id", { args: ["ferrybench"], stdout: "null", stderr: "null" })
      .output())
      .success
  ) {
    await sh("useradd -m -s /bin/sh -p '*' ferrybench");
    cleanups.push(() => sh("userdel -r ferrybench").catch(() => {}));
  }

  // A node serving a directory with a 10,000-file checkout.
  const src = `${work}/src`;
  console.error(`preparing a ${FILES}-file checkout in ${src}`);
  await sh(`mkdir -p ${src}/origin`);
  for (let d = 0; d * 100 < FILES; d++) {
    await Deno.mkdir(`${src}/origin/d${d}`);
    for (let f = 0; f < 100 && d * 100 + f < FILES; f++) {
      Deno.writeTextFileSync(`${src}/origin/d${d}/f${f}.txt`, `file ${d}/${f}\n`.repeat(8));
    }
  }
  await sh(
    `cd ${src}/origin && git init -q -b main && git add . && ` +
      `git -c user.name=b -c user.email=b@example.com -c gc.auto=0 commit -q -m files && ` +
      `git clone -q --no-hardlinks ${src}/origin ${src}/repo-ferry && ` +
      `git clone -q --no-hardlinks ${src}/origin ${src}/repo-sshfs && chmod -R a+rwX ${src}`,
  );
  const port = freePort();
  const node = await c.ca.issue("files", { kind: "node", sans: ["127.0.0.1"] });
  await writeCredentials(c.certs("files"), "files", node.certPem, node.keyPem);
  await Deno.writeTextFile(`${c.certs("files")}/ca.pem`, c.ca.certPem);
  const users = `${work}/users`;
  const ferrybench = await c.ca.issue("ferrybench", { kind: "user" });
  await writeCredentials(users, "ferrybench", ferrybench.certPem, ferrybench.keyPem);
  await Deno.writeTextFile(`${users}/ca.pem`, c.ca.certPem);
  const file = await c.write(`
[nodes.files]
address = "tcp!127.0.0.1!${port}"
[nodes.files.exports.src]
kind = "host"
path = "${src}"
access = ["ferrybench"]
[users.ferrybench]
namespace = "mount files!src /n/files"
`);
  await startNode(Deno.execPath(), [
    "run",
    "--allow-all",
    FERRY_V8_FLAGS,
    FERRY,
    "up",
    file,
    "--node",
    "files",
    "--certs",
    c.certs("files"),
    "--poll",
    "0",
  ], cleanups);

  // A throwaway sshd for plain logins and sshfs, and a second one whose
  // ForceCommand is ferry logon.
  const sshPort = freePort();
  const sshPort2 = freePort();
  const ssh = `${work}/ssh`;
  await Deno.chmod(work, 0o755);
  const info = JSON.parse(await sh(`${Deno.execPath()} info --json`));
  const ferry = `${ssh}/ferry`;
  await Deno.mkdir(ssh, { recursive: true, mode: 0o755 });
  await Deno.writeTextFile(
    ferry,
    `#!/bin/sh\nDENO_DIR='${info.denoDir}' exec '${Deno.execPath()}' run --allow-all ${FERRY_V8_FLAGS} ` +
      `--config '${REPO}deno.json' '${FERRY}' "$@"\n`,
    { mode: 0o755 },
  );
  const logonCmd = `${ferry} logon --ssh -q --certs ${users} ${file}`;
  const sudoers = `/etc/sudoers.d/ferry-bench-${Deno.pid}`;
  await Deno.writeTextFile(
    sudoers,
    `Defaults!${ferry} env_keep += "SSH_ORIGINAL_COMMAND"\nferrybench ALL=(root) NOPASSWD: ${logonCmd}\n`,
    { mode: 0o440 },
  );
  cleanups.push(() => Deno.remove(sudoers));
  const common = { dir: ssh, users: ["ferrybench", "root"], address: "127.0.0.1" };
  const d1 = await startProbeSshd({ ...common, port: sshPort });
  cleanups.push(() => d1.stop());
  const d2 = await startProbeSshd({
    ...common,
    port: sshPort2,
    config: "sshd_config2",
    extra: `Match User ferrybench\n    ForceCommand sudo -n ${logonCmd}\n`,
  });
  cleanups.push(() => d2.stop());
  const logon =
    `${Deno.execPath()} run --allow-all ${FERRY_V8_FLAGS} ${FERRY} logon -q -u ferrybench --certs ${users} ${file} --`;

  if (values.hold) {
    // For poking at by hand: print the commands and wait for ^C.
    console.log(`${logon} true\nssh ${d1.sshOpts} ferrybench@127.0.0.1 true`);
    await new Promise<void>((r) => Deno.addSignalListener("SIGINT", r));
  }
  const rows: [string, number, number, string][] = [];
  // Each works before anything is timed (as in the cpu probe), and the
  // checkout just written is on disk, not being written out meanwhile.
  await sh(`${logon} true`);
  await sh(`ssh ${d1.sshOpts} ferrybench@127.0.0.1 true`);
  await sh(`ssh ${d2.sshOpts} ferrybench@127.0.0.1 true`);
  await sh("sync");
  const firstPrompt = async () => {
    const f: number[] = [];
    const s: number[] = [];
    const l: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      f.push(await timed(`${logon} true`));
      s.push(await timed(`ssh ${d1.sshOpts} ferrybench@127.0.0.1 true`));
      l.push(await timed(`ssh ${d2.sshOpts} ferrybench@127.0.0.1 true`));
    }
    rows.push(["first prompt: logon -- true vs ssh true", median(f), median(s), "ferry/ssh"]);
    rows.push([
      "first prompt: ssh into ForceCommand logon vs ssh true",
      median(l),
      median(s),
      "ferry/ssh",
    ]);
  };
  await firstPrompt();

  // git status: a first run through each kind of mount refreshes its index.
  const mnt = `${work}/sshfs`;
  await Deno.mkdir(mnt);
  const sshfsMount = () =>
    sh(
      `sshfs -p ${sshPort} -o IdentityFile=${d1.identity},StrictHostKeyChecking=no,` +
        `UserKnownHostsFile=/dev/null,allow_other root@127.0.0.1:${src} ${mnt}`,
    );
  // Prints how long `git status` took in DIR, in microseconds.
  const gitSh = `${work}/git-status.sh`;
  await Deno.writeTextFile(
    gitSh,
    `cd "$1" && s=$(date +%s%N) && git -c safe.directory='*' status --short >/dev/null && ` +
      `e=$(date +%s%N) && echo $(( (e - s) / 1000 ))\n`,
    { mode: 0o755 },
  );
  const gitIn = (dir: string) => `sh ${gitSh} ${dir}`;
  const drop = () => sh("sync; echo 3 > /proc/sys/vm/drop_caches").catch(() => {});
  await sh(`${logon} ${gitIn("/n/files/repo-ferry")}`);
  await sshfsMount();
  await sh(gitIn(`${mnt}/repo-sshfs`));
  await sh(`fusermount -u ${mnt}`);
  const g: number[] = [];
  const gs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    await drop();
    g.push(Number(await sh(`${logon} ${gitIn("/n/files/repo-ferry")}`)) / 1e6);
    await drop();
    await sshfsMount();
    gs.push(Number(await sh(gitIn(`${mnt}/repo-sshfs`))) / 1e6);
    await sh(`fusermount -u ${mnt}`);
  }
  rows.push([
    `git status, ${FILES} files: logon mounts vs sshfs`,
    median(g),
    median(gs),
    "ferry/sshfs",
  ]);

  printRows(rows, values.json, `median of ${RUNS} runs, seconds (lower is better)`);
} finally {
  for (const f of cleanups.reverse()) await f().catch(() => {});
  await c.cleanup();
}
