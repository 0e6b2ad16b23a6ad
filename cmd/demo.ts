/**
 * `ferry demo`: Ferry's main job on an embedded default. A CA signs the
 * default manifest (manifests/demo.toml), three nodes bootstrap from it on
 * loopback with one-time enrolment tokens and mutual TLS, a user logs on,
 * and the article's walkthrough runs for real, printing what each step
 * shows. Everything lives in a temporary directory removed at the end.
 *
 * @module
 */

import { fail, parse } from "../lib/cli.ts";
import { runDemo } from "../lib/manifest/demo.ts";

const spec = {
  usage: "ferry demo [--keep]",
  about: "Run Ferry's local multi-node demo with real TLS: a CA, three nodes\n" +
    "bootstrapped from the embedded manifest, a user logging on, and the\n" +
    "article's walkthrough. Prints each step and what it shows.",
  options: { keep: { type: "boolean" as const } },
  optionsHelp: "  --keep        keep the demo's temporary directory",
};

/** Run `ferry demo`. */
export async function run(args: string[]): Promise<number> {
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    return await runDemo({ keep: p.values.keep === true });
  } catch (e) {
    return fail("demo", e);
  }
}
