/**
 * Small helpers the benchmark probes share: the median of a sample, and
 * running (and timing) a bash script.
 *
 * @module
 */

const dec = new TextDecoder();

/** The median of `xs` (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Run `script` with bash; its standard output, or an error with its standard error. */
export async function sh(script: string): Promise<string> {
  const o = await new Deno.Command("bash", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!o.success) throw new Error(`'${script}' failed (${o.code}): ${dec.decode(o.stderr)}`);
  return dec.decode(o.stdout);
}

/** Seconds `script` takes under bash. */
export async function timed(script: string): Promise<number> {
  const t0 = performance.now();
  await sh(script);
  return (performance.now() - t0) / 1000;
}

/**
 * Print probe rows `[figure, ferry, peer, ratio label]`: as JSON arrays of
 * strings, one a line, for `bench/run.ts` (`json`), else as a table under
 * `title`.
 */
export function printRows(
  rows: [string, number, number, string][],
  json: boolean,
  title: string,
): void {
  const cells = rows.map(([what, f, o, label]) =>
    [what, f.toFixed(3), o.toFixed(3), `${label} ${(f / o).toFixed(2)}x`] as const
  );
  if (json) {
    for (const c of cells) console.log(JSON.stringify(c));
    return;
  }
  console.log(title);
  console.log("| what | ferry | openssh | ratio |");
  console.log("|---|---|---|---|");
  for (const c of cells) console.log(`| ${c.join(" | ")} |`);
}

/** A loopback TCP port nobody listens on at this moment. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const p = (l.addr as Deno.NetAddr).port;
  l.close();
  return p;
}

/** Wait (10 s at most) until something accepts connections on 127.0.0.1:`port`. */
export async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nothing listening on port ${port}`);
}

/**
 * diod exporting `dir` on a free loopback port, in the foreground, with no
 * authentication and every user squashed to root, as the probes compare it;
 * returned once it accepts connections. The caller stops it.
 */
export async function spawnDiod(dir: string): Promise<{ proc: Deno.ChildProcess; port: number }> {
  const port = freePort();
  const proc = new Deno.Command("diod", {
    args: [
      "-f",
      "-n",
      "-N",
      "-S",
      "-U",
      "root",
      "-e",
      dir,
      "-l",
      `127.0.0.1:${port}`,
      "-L",
      "/dev/null",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  await waitPort(port);
  return { proc, port };
}

/**
 * Start `cmd args` (a `ferry up`), have `cleanups` stop it, and wait until
 * it prints that it is listening.
 */
export async function startNode(
  cmd: string,
  args: string[],
  cleanups: (() => Promise<unknown>)[],
): Promise<void> {
  const up = new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).spawn();
  cleanups.push(async () => {
    up.kill("SIGTERM");
    await up.status;
  });
  const r = up.stdout.getReader();
  for (let buf = ""; !/listening/.test(buf);) {
    const { value, done } = await r.read();
    if (done) throw new Error("ferry up ended");
    buf += dec.decode(value);
  }
  r.releaseLock();
  up.stdout.cancel().catch(() => {});
}
