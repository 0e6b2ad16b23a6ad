/**
 * A shell for tests: Ferry's builtins on a namespace, with standard output
 * and error collected.
 *
 * @module
 */

import { Shell, type ShellOptions } from "../../lib/sh/interp.ts";
import { builtins } from "../../lib/sh/builtins/mod.ts";
import { Collector } from "../../lib/sh/io.ts";

/** A shell and what it printed. */
export interface Harness {
  sh: Shell;
  out: Collector;
  err: Collector;
  /** Run `src`; returns [stdout, stderr, status] and clears the buffers. */
  run(src: string): Promise<[string, string, string]>;
}

/** A shell on `opts.ns` with all of Ferry's builtins unless `opts` names others. */
export function harness(opts: Omit<ShellOptions, "io">): Harness {
  const out = new Collector();
  const err = new Collector();
  const sh = new Shell({ builtins: builtins(), ...opts, io: { stdout: out, stderr: err } });
  return {
    sh,
    out,
    err,
    async run(src: string) {
      const status = await sh.run(src);
      const r: [string, string, string] = [out.text(), err.text(), status];
      out.clear();
      err.clear();
      return r;
    },
  };
}
