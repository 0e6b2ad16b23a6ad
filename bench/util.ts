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
