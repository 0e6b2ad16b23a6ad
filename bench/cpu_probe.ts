/**
 * `ferry cpu` speed beside OpenSSH, in the same run, between two hosts in
 * network namespaces ("term" and "cpu"), with `ferry up` and a throwaway
 * `sshd` both on the cpu host:
 *
 * - time to a first prompt: `ferry cpu -u ferrybench FILE cpu -c true` (a link,
 *   the caller's namespace composed and served back, a private mount
 *   namespace on the node with it at /n/client, `true` run as ferrybench)
 *   against `ssh ferrybench@cpu true`;
 * - throughput of a 1 GiB stream: `ferry cpu … -c 'cat big'` against
 *   `ssh ferrybench@cpu cat big`, both counted by `wc -c` on the caller.
 *
 * Medians of RUNS runs. Needs root, /dev/fuse, openssh-server; makes host
 * account ferrybench when missing and removes it after.
 *
 * Usage: deno run --allow-all bench/cpu_probe.ts [--runs N] [--mib N] [--json] [--hold]
 * (--hold: set everything up, print the commands, wait for ^C, then measure)
 *
 * @module
 */

import { FERRY_V8_FLAGS } from "../lib/self.ts";
import { parseArgs } from "node:util";
import { writeCredentials } from "../lib/auth/ca.ts";
import { freePort, makeCluster } from "../tests/manifest/cluster.ts";
import { makeHosts } from "../tests/e2e/hosts.ts";
import { median, printRows, sh, startNode, timed } from "./util.ts";
import { startProbeSshd } from "./ssh.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "7" },
    json: { type: "boolean", default: false },
    mib: { type: "string", default: "1024" },
    hold: { type: "boolean", default: false },
  },
});
const RUNS = Number(values.runs);
const MIB = Number(values.mib);
const REPO = new URL("..", import.meta.url).pathname;
const FERRY = `${REPO}cmd/ferry.ts`;

const missing = ["sshd", "ssh", "unshare", "setpriv", "setsid", "ip"].filter((c) =>
  !new Deno.Command("sh", { args: ["-c", `command -v ${c}`], stdout: "null" }).outputSync().success
);
if (Deno.uid() !== 0 || missing.length > 0) {
  const why = `${
    Deno.uid() !== 0 ? "needs root" : `missing ${missing.join(", ")}`
  } (apt-get install -y openssh-server)`;
  console.log(values.json ? JSON.stringify(["skipped", "-", "-", why]) : `skipped: ${why}`);
  Deno.exit(0);
}

const c = await makeCluster();
const work = c.dir;
const hosts = await makeHosts(["term", "cpu"], "bc");
const inTerm = `ip netns exec ${hosts.ns("term")}`;
const ip = hosts.ip.cpu!;
const cleanups: (() => Promise<unknown>)[] = [];
try {
  if (
    !(await new Deno.Command("id", { args: ["ferrybench"], stdout: "null", stderr: "null" })
      .output())
      .success
  ) {
    await sh("useradd -m -s /bin/sh -p '*' ferrybench");
    cleanups.push(() => sh("userdel -r ferrybench").catch(() => {}));
  }
  await Deno.chmod(work, 0o755);
  const big = `${work}/big`;
  await sh(`head -c ${MIB}M /dev/urandom > ${big} && chmod 644 ${big}`);

  const port = freePort();
  const node = await c.ca.issue("cpu", { kind: "node", sans: [ip] });
  await writeCredentials(c.certs("cpu"), "cpu", node.certPem, node.keyPem);
  await Deno.writeTextFile(`${c.certs("cpu")}/ca.pem`, c.ca.certPem);
  await c.issue("ferrybench", "user");
  const file = await c.write(`
[nodes.cpu]
address = "tcp!${ip}!${port}"
[nodes.cpu.exports.cpu]
kind = "cpu"
access = ["ferrybench"]
[users.ferrybench]
namespace = ""
`);
  await startNode("ip", [
    "netns",
    "exec",
    hosts.ns("cpu"),
    Deno.execPath(),
    "run",
    "--allow-all",
    FERRY_V8_FLAGS,
    FERRY,
    "up",
    file,
    "--node",
    "cpu",
    "--certs",
    c.certs("cpu"),
    "--poll",
    "0",
  ], cleanups);

  // A throwaway sshd on the same host.
  const sshPort = 2222;
  const d = await startProbeSshd({
    dir: `${work}/ssh`,
    users: ["ferrybench"],
    address: ip,
    port: sshPort,
    netns: hosts.ns("cpu"),
  });
  cleanups.push(() => d.stop());

  const sshCmd = `${inTerm} ssh ${d.sshOpts} ferrybench@${ip}`;
  const cpuCmd =
    `${inTerm} ${Deno.execPath()} run --allow-all ${FERRY_V8_FLAGS} ${FERRY} cpu -u ferrybench ` +
    `--certs ${c.certs("ferrybench")} ${file} cpu`;
  // Both work before anything is timed.
  await sh(`${sshCmd} true`);
  await sh(`${cpuCmd} -c true`);

  if (values.hold) {
    // For poking at by hand: print the two commands and wait for ^C.
    console.log(`${cpuCmd} -c true\n${sshCmd} true\nbig: ${big}`);
    await new Promise<void>((r) => Deno.addSignalListener("SIGINT", r));
  }
  const rows: [string, number, number, string][] = [];
  const f: number[] = [];
  const s: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    f.push(await timed(`${cpuCmd} -c true`));
    s.push(await timed(`${sshCmd} true`));
  }
  rows.push(["first prompt: ferry cpu -c true vs ssh true (s)", median(f), median(s), "ferry/ssh"]);

  const ft: number[] = [];
  const st: number[] = [];
  // Each stream is counted, so a transfer cut short cannot pass for a fast one.
  const stream = async (cmd: string) => {
    const t0 = performance.now();
    const n = Number((await sh(`${cmd} | wc -c`)).trim());
    const secs = (performance.now() - t0) / 1000;
    if (n !== MIB * 1024 * 1024) throw new Error(`'${cmd}' gave ${n} bytes, not ${MIB} MiB`);
    return MIB / 1024 / secs;
  };
  for (let i = 0; i < Math.min(RUNS, 3); i++) {
    ft.push(await stream(`${cpuCmd} -c 'cat ${big}'`));
    st.push(await stream(`${sshCmd} cat ${big}`));
  }
  rows.push([
    `${MIB} MiB stream: ferry cpu -c 'cat big' vs ssh cat big (GiB/s)`,
    median(ft),
    median(st),
    "ferry/ssh",
  ]);

  printRows(
    rows,
    values.json,
    `medians of ${RUNS} runs (first prompt) and ${Math.min(RUNS, 3)} runs (stream)`,
  );
} finally {
  for (const f of cleanups.reverse()) await f().catch(() => {});
  await hosts.cleanup();
  await c.cleanup();
}
