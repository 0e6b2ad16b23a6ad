/**
 * `ferry check FILE`: validate a manifest and report every problem with its
 * file, line and key.
 *
 * @module
 */

import { fail, parse } from "../lib/cli.ts";
import { allProblems } from "../lib/manifest/check.ts";
import { formatProblem } from "../lib/manifest/schema.ts";

const spec = {
  usage: "ferry check [-q] FILE",
  about: "Validate the manifest FILE: its TOML, every key (a typo is an error), nodes,\n" +
    "exports, addresses, access lists, 'via' chains and each user's namespace. Prints\n" +
    "one line per problem as FILE:LINE: KEY: message and exits 1 if there are any.",
  options: { q: { type: "boolean" as const, short: "q" } },
  optionsHelp: "  -q            print nothing when the manifest is good",
};

/** Run `ferry check`. */
export async function run(args: string[]): Promise<number> {
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    if (p.positionals.length !== 1) {
      throw new Error(`expected one manifest FILE\nusage: ${spec.usage}`);
    }
    const file = p.positionals[0]!;
    const problems = await allProblems(file);
    for (const pr of problems) console.error(formatProblem(pr));
    if (problems.length) {
      console.error(
        `${file}: ${problems.length} ${problems.length === 1 ? "problem" : "problems"}`,
      );
      return 1;
    }
    if (p.values.q !== true) console.log(`${file}: ok`);
    return 0;
  } catch (e) {
    return fail("ferry check", e);
  }
}
