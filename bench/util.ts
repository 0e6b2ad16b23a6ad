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
