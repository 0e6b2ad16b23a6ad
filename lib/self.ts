/**
 * How to start another Ferry process: the same executable and entry point
 * this one runs from, compiled or not.
 *
 * @module
 */

/** Permissions Ferry's own child processes get (the same as `deno task ferry`). */
export const FERRY_PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-sys",
  "--allow-ffi",
];

/**
 * The V8 flags every Ferry process runs with (as `deno task ferry` and an
 * installed or compiled `ferry` do). `--no-lazy` compiles each function when
 * its module loads, so Deno's code cache holds them all and a later start
 * reads them from it instead of compiling them as they are first called:
 * a one-shot command such as `ferry logon` starts about 12 ms sooner. The
 * cache is kept per set of flags, so every Ferry process uses the same.
 */
export const FERRY_V8_FLAGS = "--v8-flags=--no-lazy";

/**
 * The command line that runs `ferry`: `[deno, "run", perms…, flags, cmd/ferry.ts]`
 * from a source checkout, or just the executable when compiled.
 */
export function ferryArgv(): string[] {
  const exe = Deno.execPath();
  // A compiled `ferry` is its own entry point; under `deno` name the script.
  if (!/(^|\/)deno(\.exe)?$/.test(exe)) return [exe];
  const entry = new URL("../cmd/ferry.ts", import.meta.url);
  return [exe, "run", ...FERRY_PERMISSIONS, FERRY_V8_FLAGS, entry.pathname];
}
