/**
 * `ferry down --node NAME`: stop a node started with `ferry up`, cleanly
 * (SIGTERM, then wait for it to end its sessions and exit).
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import { defaultCertsDir } from "../lib/auth/link.ts";

const spec = {
  usage: "ferry down [FILE] --node NAME [--certs DIR | --run DIR]",
  about: "Stop node NAME started by 'ferry up' on this machine: send it SIGTERM and wait\n" +
    "(up to --wait seconds, default 10) for it to close its sessions and exit; it\n" +
    "returns once the process has gone. A node still running then is killed with\n" +
    "SIGKILL, and down says so and exits 1.",
  options: {
    node: { type: "string" as const },
    certs: { type: "string" as const },
    run: { type: "string" as const },
    wait: { type: "string" as const },
  },
  optionsHelp: "  --node NAME   the node to stop\n" +
    "  --certs DIR   the node's credentials (default $FERRY_CERTS, else ~/.ferry/certs)\n" +
    "  --run DIR     where 'ferry up' wrote NAME.pid (default: the credentials directory)\n" +
    "  --wait SECS   how long to wait for it to exit (default 10)",
};

function alive(pid: number): boolean {
  try {
    // SIGCONT does nothing to a running process; it fails for a missing one.
    Deno.kill(pid, "SIGCONT");
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return true; // no /proc, or not allowed to read it: trust the signal
  }
}

/** Wait until `pid` has exited, at most `ms`; true if it did. */
async function exited(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/** Run `ferry down`. */
export async function run(args: string[]): Promise<number> {
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    const v = p.values;
    if (typeof v.node !== "string") {
      throw new UsageError(`--node NAME is required\nusage: ${spec.usage}`);
    }
    if (p.positionals.length > 1) throw new UsageError(`too many arguments\nusage: ${spec.usage}`);
    const runDir = typeof v.run === "string"
      ? v.run
      : typeof v.certs === "string"
      ? v.certs
      : defaultCertsDir();
    const pidFile = `${runDir}/${v.node}.pid`;
    let text: string;
    try {
      text = await Deno.readTextFile(pidFile);
    } catch {
      throw new Error(`node '${v.node}' is not running here (no '${pidFile}')`);
    }
    const pid = Number(text.trim());
    if (!Number.isInteger(pid) || pid <= 1) throw new Error(`'${pidFile}' holds no process id`);
    if (!alive(pid)) {
      await Deno.remove(pidFile).catch(() => {});
      console.log(`node '${v.node}' was not running (removed stale '${pidFile}')`);
      return 0;
    }
    const secs = typeof v.wait === "string" ? Number(v.wait) : 10;
    if (!Number.isFinite(secs) || secs < 0) {
      throw new UsageError(`bad --wait '${v.wait}': want seconds, e.g. 10`);
    }
    Deno.kill(pid, "SIGTERM");
    if (await exited(pid, secs * 1000)) {
      console.log(`node '${v.node}' stopped`);
      return 0;
    }
    // It would not stop: make sure it is gone, and say it was not clean.
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* it exited just now */ }
    await exited(pid, 5000);
    await Deno.remove(pidFile).catch(() => {});
    console.error(
      `ferry down: node '${v.node}' (pid ${pid}) did not exit within ${secs} s of SIGTERM: killed it with SIGKILL (its sessions were not closed cleanly)`,
    );
    return 1;
  } catch (e) {
    return fail("ferry down", e);
  }
}
