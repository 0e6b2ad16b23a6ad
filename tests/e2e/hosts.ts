/**
 * Test hosts in Linux network namespaces, for end-to-end tests that need
 * real separate machines: a bridge in its own namespace, one namespace per
 * host joined to it by a veth pair, addresses on a private /24 that exists
 * only between those namespaces (nothing is routed to the real network),
 * and an nftables rule set that makes a host refuse inbound connections
 * (a phone behind a carrier's NAT). Also a child-process wrapper that
 * collects output as it comes and can be fed commands line by line.
 *
 * Needs root, `ip`, `nft` and `bash`; {@link hostsSkipReason} says why a
 * test cannot run here.
 *
 * @module
 */

const dec = new TextDecoder();
const enc = new TextEncoder();

/** The repository's root directory (with a trailing slash). */
export const REPO: string = new URL("../../", import.meta.url).pathname;
/** The `ferry` entry point. */
export const FERRY: string = `${REPO}cmd/ferry.ts`;

/** True when `cmd` is on PATH. */
export function have(cmd: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/**
 * Why hosts cannot be made here ("" when they can): not root, or a needed
 * program missing (with the package to install).
 */
export function hostsSkipReason(): string {
  if (Deno.uid() !== 0) return "not root: network namespaces need root";
  const missing = ["ip", "nft", "bash", "timeout"].filter((c) => !have(c));
  if (missing.length > 0) {
    return `missing ${missing.join(", ")} (apt-get install -y iproute2 nftables)`;
  }
  return "";
}

/** Run `cmd args` to completion (stdin `input` if given); throws with its stderr on failure. */
export async function run(cmd: string, args: string[], input?: string): Promise<string> {
  const c = new Deno.Command(cmd, {
    args,
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const w = c.stdin.getWriter();
    await w.write(enc.encode(input));
    await w.close();
  }
  const out = await c.output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** Options for {@link Proc}. */
export interface ProcOptions {
  /** Extra environment (added to this process's). */
  env?: Record<string, string>;
  /** Keep stdin open for {@link Proc.send} (default: stdin is /dev/null). */
  stdin?: boolean;
}

/** A long-running child whose output is collected as it comes. */
export class Proc {
  /** Everything it printed on stdout so far. */
  out = "";
  /** Everything it printed on stderr so far. */
  err = "";
  /** Resolves with its exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #changed: (() => void)[] = [];
  #done = false;

  /** Start `cmd args`; `name` labels it in errors. */
  constructor(readonly name: string, cmd: string, args: string[], opts: ProcOptions = {}) {
    this.#child = new Deno.Command(cmd, {
      args,
      env: opts.env ?? {},
      stdin: opts.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    if (opts.stdin) this.#stdin = this.#child.stdin.getWriter();
    const pump = async (s: ReadableStream<Uint8Array>, key: "out" | "err") => {
      const d = new TextDecoder();
      for await (const b of s) {
        this[key] += d.decode(b, { stream: true });
        for (const f of this.#changed.splice(0)) f();
      }
    };
    const a = pump(this.#child.stdout, "out");
    const b = pump(this.#child.stderr, "err");
    this.status = this.#child.status;
    Promise.all([a, b, this.status]).finally(() => {
      this.#done = true;
      for (const f of this.#changed.splice(0)) f();
    });
  }

  /** True once the process has ended and its output is read. */
  get done(): boolean {
    return this.#done;
  }

  /**
   * Wait until stdout (or stderr, with `which` "err") matches `re`; fails
   * if the process ends first. Resolves to the match.
   */
  async waitFor(re: RegExp, which: "out" | "err" = "out"): Promise<RegExpMatchArray> {
    for (;;) {
      const m = this[which].match(re);
      if (m) return m;
      if (this.#done) {
        throw new Error(`${this.name} ended before ${re}:\nout: ${this.out}\nerr: ${this.err}`);
      }
      await new Promise<void>((r) => this.#changed.push(r));
    }
  }

  /** Wait until stdout matches `re` or `ms` milliseconds pass; true if it matched. */
  async waitForWithin(re: RegExp, ms: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
    try {
      return await Promise.race([this.waitFor(re).then(() => true), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Write `line` and a newline to its stdin (made with `stdin: true`). */
  async send(line: string): Promise<void> {
    if (!this.#stdin) throw new Error(`${this.name} was started without stdin`);
    await this.#stdin.write(enc.encode(line + "\n"));
  }

  /**
   * Kill it (SIGKILL) and wait for it to end. With "SIGTERM", ask it to
   * stop as a user would, so it can put away what it started; SIGKILL
   * only if it is still there after 10 seconds.
   */
  async stop(signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    await this.#stdin?.close().catch(() => {});
    try {
      this.#child.kill(signal);
    } catch { /* already gone */ }
    if (signal === "SIGTERM") {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((r) => (timer = setTimeout(r, 10_000)));
      await Promise.race([this.status, late]).finally(() => clearTimeout(timer));
      try {
        this.#child.kill("SIGKILL");
      } catch { /* ended */ }
    }
    await this.status;
  }
}

/** Hosts made by {@link makeHosts}. */
export interface Hosts {
  /** The /24's first three octets, e.g. "10.78.5". */
  prefix: string;
  /** The namespace name of host `h`. */
  ns(h: string): string;
  /** Each host's address. */
  ip: Record<string, string>;
  /** Remove every namespace made (and so every veth and the bridge). */
  cleanup(): Promise<void>;
}

/**
 * Make one namespace per name in `names` on a private /24 (host i gets
 * `.i+2`), joined by a bridge in a namespace of its own. Removes what it
 * made if any step fails.
 *
 * @example
 * ```ts ignore
 * const hosts = await makeHosts(["server", "phone"], "fp");
 * try { … } finally { await hosts.cleanup(); }
 * ```
 */
export async function makeHosts(names: readonly string[], tagPrefix = "fh"): Promise<Hosts> {
  const tag = `${tagPrefix}${Deno.pid % 100000}`;
  const prefix = `10.78.${Deno.pid % 200 + 1}`;
  const ns = (h: string) => `${tag}-${h}`;
  const ip: Record<string, string> = {};
  const made: string[] = [];
  const cleanup = async () => {
    for (const n of made.splice(0).reverse()) {
      await run("ip", ["netns", "del", n]).catch(() => {});
    }
  };
  try {
    const br = ns("br");
    await run("ip", ["netns", "add", br]);
    made.push(br);
    await run("ip", ["-n", br, "link", "add", "br0", "type", "bridge"]);
    await run("ip", ["-n", br, "link", "set", "br0", "up"]);
    for (const [i, h] of names.entries()) {
      const n = ns(h);
      await run("ip", ["netns", "add", n]);
      made.push(n);
      ip[h] = `${prefix}.${i + 2}`;
      const veth = ["link", "add", `v${i}`, "type", "veth", "peer", "name", "eth0", "netns", n];
      await run("ip", ["-n", br, ...veth]);
      await run("ip", ["-n", br, "link", "set", `v${i}`, "master", "br0", "up"]);
      await run("ip", ["-n", n, "addr", "add", `${ip[h]}/24`, "dev", "eth0"]);
      await run("ip", ["-n", n, "link", "set", "eth0", "up"]);
      await run("ip", ["-n", n, "link", "set", "lo", "up"]);
    }
  } catch (e) {
    await cleanup();
    throw e;
  }
  return { prefix, ns, ip, cleanup };
}

/**
 * Make `host` refuse inbound TCP connections (its SYNs are dropped) while
 * its own outbound connections work, as a carrier's NAT does to a phone.
 */
export async function blockInbound(hosts: Hosts, host: string): Promise<void> {
  await run(
    "ip",
    ["netns", "exec", hosts.ns(host), "nft", "-f", "-"],
    `
table inet ferrytest {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
    iif "lo" accept
    tcp flags & (syn | ack) == syn drop
  }
}
`,
  );
}

/** True when something in `from` can open a TCP connection to ip:port within `seconds`. */
export async function connects(
  hosts: Hosts,
  from: string,
  ip: string,
  port: number,
  seconds = 2,
): Promise<boolean> {
  const r = await new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      hosts.ns(from),
      "timeout",
      String(seconds),
      "bash",
      "-c",
      `exec 3<>/dev/tcp/${ip}/${port}`,
    ],
    stdout: "null",
    stderr: "null",
  }).output();
  return r.success;
}

/**
 * Wait until `from` can connect to ip:port, trying every 100 ms up to
 * `tries` times, or until `alive()` says the server side has gone.
 */
export async function reachable(
  hosts: Hosts,
  from: string,
  ip: string,
  port: number,
  opts: { tries?: number; alive?: () => boolean } = {},
): Promise<boolean> {
  for (let i = 0; i < (opts.tries ?? 150); i++) {
    if (await connects(hosts, from, ip, port)) return true;
    if (opts.alive && !opts.alive()) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/** Start `ferry ARGS` inside `host`'s namespace. */
export function ferryIn(
  hosts: Hosts,
  host: string,
  args: string[],
  opts: ProcOptions = {},
): Proc {
  return new Proc(host, "ip", [
    "netns",
    "exec",
    hosts.ns(host),
    Deno.execPath(),
    "run",
    "--allow-all",
    FERRY,
    ...args,
  ], opts);
}

/** Run `ferry ARGS` inside `host`'s namespace to completion. */
export async function ferryOnce(
  hosts: Hosts,
  host: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command("ip", {
    args: ["netns", "exec", hosts.ns(host), Deno.execPath(), "run", "--allow-all", FERRY, ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}
