/**
 * Host accounts: the passwd entry a Ferry user's commands run as.
 *
 * @module
 */

/** A host account from the passwd database. */
export interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
  /** The login shell (default /bin/sh when passwd leaves it empty). */
  shell: string;
}

/**
 * Parse one passwd line (`name:x:uid:gid:gecos:home:shell`).
 *
 * @example
 * ```ts
 * import { parsePasswdLine } from "./account.ts";
 * const a = parsePasswdLine("alice:x:1001:1001::/home/alice:/bin/bash");
 * if (a?.uid !== 1001 || a.shell !== "/bin/bash") throw new Error("wrong");
 * ```
 */
export function parsePasswdLine(line: string): Account | undefined {
  const f = line.trim().split(":");
  if (f.length < 7) return undefined;
  const uid = Number(f[2]);
  const gid = Number(f[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid) || f[2] === "" || f[3] === "") {
    return undefined;
  }
  return { name: f[0]!, uid, gid, home: f[5] || "/", shell: f[6] || "/bin/sh" };
}

/**
 * The account `name` (through getent, so NSS sources count), or undefined
 * when there is none.
 */
export async function lookupAccount(name: string): Promise<Account | undefined> {
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(name)) return undefined;
  const out = await new Deno.Command("getent", {
    args: ["passwd", name],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) return undefined;
  return parsePasswdLine(new TextDecoder().decode(out.stdout).split("\n")[0] ?? "");
}

/** The account whose uid is `uid` (getent takes a number as a uid), or undefined. */
export async function lookupUid(uid: number): Promise<Account | undefined> {
  return await lookupAccount(String(uid));
}
