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
 * The account `name` (or, for a number, the uid), as NSS gives it
 * (getent), or undefined when there is none. Where NSS asks the files
 * first (`passwd: files …` in /etc/nsswitch.conf), an account that
 * /etc/passwd holds is what NSS would answer, so it is read from there,
 * without starting getent.
 */
export async function lookupAccount(name: string): Promise<Account | undefined> {
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(name)) return undefined;
  const local = fromFiles(name);
  if (local) return local;
  const out = await new Deno.Command("getent", {
    args: ["passwd", name],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) return undefined;
  return parsePasswdLine(new TextDecoder().decode(out.stdout).split("\n")[0] ?? "");
}

/**
 * The entry NSS would answer for `key` (a name, or a uid as getent takes
 * a number) when the files come first for passwd and /etc/passwd has it;
 * else undefined, and NSS is to be asked.
 */
export function fromFiles(
  key: string,
  files = { nsswitch: "/etc/nsswitch.conf", passwd: "/etc/passwd" },
): Account | undefined {
  let passwd: string;
  try {
    const conf = Deno.readTextFileSync(files.nsswitch);
    const line = conf.split("\n").find((l) => /^\s*passwd\s*:/.test(l));
    const first = line?.slice(line.indexOf(":") + 1).trim().split(/\s+/)[0];
    if (first !== "files") return undefined;
    passwd = Deno.readTextFileSync(files.passwd);
  } catch {
    return undefined;
  }
  // compat-style entries mean more than the line says: NSS decides.
  if (/^[+-]/m.test(passwd)) return undefined;
  const byUid = /^\d+$/.test(key);
  for (const line of passwd.split("\n")) {
    const a = parsePasswdLine(line);
    if (a && (byUid ? a.uid === Number(key) : a.name === key)) return a;
  }
  return undefined;
}

/** The account whose uid is `uid` (getent takes a number as a uid), or undefined. */
export async function lookupUid(uid: number): Promise<Account | undefined> {
  return await lookupAccount(String(uid));
}
