/**
 * The shell's `webgrab [-v] [-o file] url`: HTTP GET through the shell's
 * /net, saved in the current directory under the URL's last path element.
 *
 * @module
 */

import { type Builtin, ShUsageError } from "../interp.ts";
import { writeText } from "../io.ts";
import { getopts } from "./util.ts";

/**
 * webgrab [-v] [-o file] url: fetch `url` through whatever answers at the
 * namespace's /net (a mounted remote /net included) and save it; -o names
 * the file, -v reports the status and where the body went.
 */
export const webgrab: Builtin = async (ctx, args) => {
  const usage = "webgrab [-v] [-o file] url";
  const o = getopts(args, "vo:", usage);
  if (o.rest.length !== 1) throw new ShUsageError(usage);
  const url = o.rest[0]!;
  const out = o.values.get("o");
  const { webgrab: grab } = await import("../../net/webgrab.ts");
  const r = await grab(ctx.sh.ns, url, {
    dir: ctx.sh.path("."),
    output: out === undefined ? undefined : ctx.sh.path(out),
    signal: ctx.signal,
  });
  if (o.flags.has("v")) {
    const res = r.response;
    await writeText(
      ctx.io.stdout,
      `${res.status} ${res.reason}: ${res.body.length} bytes to ${r.path}\n`,
    );
  }
};
