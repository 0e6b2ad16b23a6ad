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
 * The command line that runs `ferry`: `[deno, "run", perms…, cmd/ferry.ts]`
 * from a source checkout, or just the executable when compiled.
 */
export function ferryArgv(): string[] {
  const exe = Deno.execPath();
  // A compiled `ferry` is its own entry point; under `deno` name the script.
  if (!/(^|\/)deno(\.exe)?$/.test(exe)) return [exe];
  const entry = new URL("../cmd/ferry.ts", import.meta.url);
  return [exe, "run", ...FERRY_PERMISSIONS, entry.pathname];
}
