/**
 * A throwaway OpenSSH server for benchmarks: installs openssh-server and
 * openssh-client through apt-get when missing, then runs sshd on 127.0.0.1
 * on a free port with its own host key, one authorised client key and its
 * own configuration (no PAM, root login by key only, StrictModes off,
 * internal-sftp), all in a temporary directory that {@link Sshd.stop}
 * removes.
 *
 * @example
 * ```ts
 * const sshd = await startSshd();
 * try {
 *   await new Deno.Command("ssh", { args: [...sshd.sshArgs, sshd.target, "true"] }).output();
 * } finally {
 *   await sshd.stop();
 * }
 * ```
 *
 * @module
 */

import { freePort } from "./util.ts";

const dec = new TextDecoder();

/** A running throwaway sshd and how to reach it. */
export interface Sshd {
  /** Port sshd listens on (127.0.0.1). */
  port: number;
  /** Process id of the listening sshd. */
  pid: number;
  /** Temporary directory holding keys, configuration and pid file. */
  dir: string;
  /** The client's private key file. */
  identity: string;
  /** `user@127.0.0.1` to log in as (the current user). */
  target: string;
  /**
   * Options for `ssh`, `sftp` and `scp` (identity, port, no host key
   * checks, batch mode); the port is given as `-o Port=N` so that it suits
   * all three.
   */
  sshArgs: string[];
  /** Stop sshd and remove its directory. */
  stop(): Promise<void>;
}

async function run(cmd: string, args: string[], what: string): Promise<string> {
  let o: Deno.CommandOutput;
  try {
    o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", stdin: "null" })
      .output();
  } catch (e) {
    throw new Error(`${what}: cannot run '${cmd}': ${(e as Error).message}`);
  }
  if (!o.success) {
    throw new Error(`${what}: '${cmd} ${args.join(" ")}' failed: ${dec.decode(o.stderr).trim()}`);
  }
  return dec.decode(o.stdout);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Where sshd lives, or null when it is not installed. */
async function sshdPath(): Promise<string | null> {
  for (const p of ["/usr/sbin/sshd", "/usr/bin/sshd"]) if (await exists(p)) return p;
  return null;
}

async function onPath(cmd: string): Promise<boolean> {
  const o = await new Deno.Command("sh", {
    args: ["-c", `command -v ${cmd}`],
    stdout: "null",
    stderr: "null",
  }).output();
  return o.success;
}

/**
 * Install openssh-server and openssh-client with apt-get unless sshd, ssh
 * and sftp are all present. Needs root when anything is missing.
 */
export async function ensureOpenSsh(): Promise<void> {
  const missing: string[] = [];
  if (!(await sshdPath())) missing.push("openssh-server");
  if (!(await onPath("ssh")) || !(await onPath("sftp"))) missing.push("openssh-client");
  if (missing.length === 0) return;
  await run("apt-get", ["update", "-qq"], "installing OpenSSH");
  await run(
    "apt-get",
    ["install", "-y", "-qq", "--no-install-recommends", ...missing],
    "installing OpenSSH",
  );
  if (!(await sshdPath())) throw new Error("installing OpenSSH: sshd is still missing");
}

async function waitFor(what: string, ok: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what}: not ready after ${ms} ms`);
}

async function accepts(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Start a throwaway sshd on 127.0.0.1 (installing OpenSSH first if needed).
 * The caller must call {@link Sshd.stop}.
 */
export async function startSshd(): Promise<Sshd> {
  await ensureOpenSsh();
  const sshd = (await sshdPath())!;
  const dir = await Deno.makeTempDir({ prefix: "ferry-sshd-" });
  let pid = 0;
  let child: Deno.ChildProcess | null = null;
  const stop = async () => {
    const c = child;
    child = null;
    if (c) {
      try {
        c.kill("SIGTERM");
      } catch { /* already gone */ }
      await c.status;
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    const hostKey = `${dir}/host_ed25519`;
    const identity = `${dir}/id_ed25519`;
    await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKey], "sshd host key");
    await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", identity], "ssh client key");
    await Deno.copyFile(`${identity}.pub`, `${dir}/authorized_keys`);
    await Deno.chmod(`${dir}/authorized_keys`, 0o600);
    // sshd insists on its privilege separation directory.
    await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 }).catch(() => {});
    const port = freePort();
    await Deno.writeTextFile(
      `${dir}/sshd_config`,
      [
        `Port ${port}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        `PidFile ${dir}/sshd.pid`,
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "MaxStartups 1000",
        "MaxSessions 1000",
        "Subsystem sftp internal-sftp",
      ].join("\n") + "\n",
    );
    // -D keeps sshd in the foreground as this process's child, so stopping
    // it reaps it (a detached daemon would linger as a zombie).
    child = new Deno.Command(sshd, {
      args: ["-D", "-f", `${dir}/sshd_config`, "-E", `${dir}/sshd.log`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    pid = child.pid;
    await waitFor(`sshd on port ${port}`, () => accepts(port));
    const user = (await run("id", ["-un"], "user name")).trim();
    return {
      port,
      pid,
      dir,
      identity,
      target: `${user}@127.0.0.1`,
      sshArgs: [
        "-i",
        identity,
        "-o",
        `Port=${port}`,
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
      ],
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Options of {@link startProbeSshd}. */
export interface ProbeSshdOptions {
  /** Directory for keys and configuration (made; keys already there are reused). */
  dir: string;
  /** Host accounts that may log in with the probe's client key. */
  users: string[];
  /** Address sshd listens on. */
  address: string;
  /** Port sshd listens on. */
  port: number;
  /** Run sshd in this network namespace (`ip netns exec`). */
  netns?: string;
  /** Lines appended to sshd_config (a `Match` block, say). */
  extra?: string;
  /** Configuration file name inside `dir` (default sshd_config), for a second sshd. */
  config?: string;
}

/** An sshd started by {@link startProbeSshd}. */
export interface ProbeSshd {
  /** The client's private key. */
  identity: string;
  /** `ssh` options (key, port, no host key checks, batch mode) as one shell string. */
  sshOpts: string;
  /** Stop sshd. */
  stop(): Promise<void>;
}

/**
 * An sshd for the logon and cpu probes: key logins only, no PAM, for the
 * host accounts `users`, on `address`:`port`, in a network namespace if
 * asked; internal-sftp for sshfs. Resolves once sshd says it listens.
 */
export async function startProbeSshd(o: ProbeSshdOptions): Promise<ProbeSshd> {
  await Deno.mkdir(`${o.dir}/keys`, { recursive: true, mode: 0o755 });
  const identity = `${o.dir}/user_key`;
  for (const key of [`${o.dir}/host_key`, identity]) {
    if (!(await exists(key))) {
      await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key], "sshd keys");
    }
  }
  for (const u of o.users) {
    await Deno.copyFile(`${identity}.pub`, `${o.dir}/keys/${u}`);
    await Deno.chmod(`${o.dir}/keys/${u}`, 0o644);
  }
  await Deno.mkdir("/run/sshd", { recursive: true, mode: 0o755 }).catch(() => {});
  const config = `${o.dir}/${o.config ?? "sshd_config"}`;
  await Deno.writeTextFile(
    config,
    [
      `Port ${o.port}`,
      `ListenAddress ${o.address}`,
      `HostKey ${o.dir}/host_key`,
      "PidFile none",
      "UsePAM no",
      "StrictModes no",
      "PasswordAuthentication no",
      `AuthorizedKeysFile ${o.dir}/keys/%u`,
      "Subsystem sftp internal-sftp",
      "",
    ].join("\n") + (o.extra ?? ""),
  );
  const sshd = (await sshdPath()) ?? "/usr/sbin/sshd";
  const argv = [sshd, "-D", "-e", "-f", config];
  const full = o.netns ? ["ip", "netns", "exec", o.netns, ...argv] : argv;
  const d = new Deno.Command(full[0]!, { args: full.slice(1), stdout: "null", stderr: "piped" })
    .spawn();
  const stop = async () => {
    try {
      d.kill("SIGTERM");
    } catch { /* already gone */ }
    await d.status;
  };
  const er = d.stderr.getReader();
  try {
    for (let buf = ""; !/Server listening/.test(buf);) {
      const { value, done } = await er.read();
      if (done) throw new Error(`sshd ended: ${buf}`);
      buf += dec.decode(value);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  er.releaseLock();
  d.stderr.cancel().catch(() => {});
  const sshOpts = `-i ${identity} -p ${o.port} -o BatchMode=yes -o StrictHostKeyChecking=no ` +
    `-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR`;
  return { identity, sshOpts, stop };
}
