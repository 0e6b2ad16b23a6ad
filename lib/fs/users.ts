/**
 * Host user and group names for the host-directory tree: uid and gid numbers
 * from the host file system become the owner and group names in a Dir.
 *
 * /etc/passwd and /etc/group are read once; a number with no entry (or a host
 * without those files) is shown as the number in decimal.
 *
 * @module
 */

/** A host account: what a host tree checks a caller's permissions as. */
export interface HostAccount {
  /** The account's uid. */
  uid: number;
  /** Its primary gid (what files it creates get), or -1 when passwd names none. */
  gid: number;
  /** Its primary gid and every group that lists it as a member. */
  gids: Set<number>;
}

/** Numbers ↔ names for host users and groups. */
export class HostUsers {
  readonly #users = new Map<number, string>();
  readonly #groups = new Map<number, string>();
  readonly #uidByName = new Map<string, number>();
  readonly #gidByName = new Map<string, number>();
  readonly #primaryGid = new Map<string, number>();
  readonly #memberOf = new Map<string, number[]>();

  /**
   * Build from the text of a passwd file and a group file (either may be
   * empty). Malformed lines are skipped; the first entry for a number wins.
   *
   * @example
   * ```ts
   * import { HostUsers } from "./users.ts";
   * const u = new HostUsers("root:x:0:0:root:/root:/bin/sh\n", "wheel:x:10:root\n");
   * if (u.userName(0) !== "root" || u.groupName(10) !== "wheel") throw new Error("wrong");
   * if (u.userName(1234) !== "1234") throw new Error("wrong");
   * ```
   */
  constructor(passwd: string, group: string) {
    for (const [name, id, f] of parseIdFile(passwd)) {
      if (!this.#users.has(id)) this.#users.set(id, name);
      if (!this.#uidByName.has(name)) this.#uidByName.set(name, id);
      const gid = f[3] === undefined ? undefined : decimal(f[3]);
      if (gid !== undefined && !this.#primaryGid.has(name)) this.#primaryGid.set(name, gid);
    }
    for (const [name, id, f] of parseIdFile(group)) {
      if (!this.#groups.has(id)) this.#groups.set(id, name);
      if (!this.#gidByName.has(name)) this.#gidByName.set(name, id);
      for (const m of (f[3] ?? "").split(",")) {
        if (m !== "") this.#memberOf.set(m, [...(this.#memberOf.get(m) ?? []), id]);
      }
    }
  }

  /**
   * The host account named `name` (a name only, never a number), or
   * undefined when the host has none.
   *
   * @example
   * ```ts
   * import { HostUsers } from "./users.ts";
   * const u = new HostUsers("glenda:x:1000:100::/home/glenda:/bin/sh\n", "sys:x:3:glenda\n");
   * const a = u.account("glenda");
   * if (a?.uid !== 1000 || !a.gids.has(100) || !a.gids.has(3)) throw new Error("wrong");
   * if (u.account("1000") !== undefined) throw new Error("a number is not a name");
   * ```
   */
  account(name: string): HostAccount | undefined {
    const uid = this.#uidByName.get(name);
    if (uid === undefined) return undefined;
    const gids = new Set(this.#memberOf.get(name) ?? []);
    const primary = this.#primaryGid.get(name);
    if (primary !== undefined) gids.add(primary);
    return { uid, gid: primary ?? -1, gids };
  }

  /** The name of user `uid`, or the number when it has none. */
  userName(uid: number): string {
    return this.#users.get(uid) ?? String(uid);
  }

  /** The name of group `gid`, or the number when it has none. */
  groupName(gid: number): string {
    return this.#groups.get(gid) ?? String(gid);
  }

  /** The uid for a user name or a decimal number, or undefined when unknown. */
  uid(name: string): number | undefined {
    return this.#uidByName.get(name) ?? decimal(name);
  }

  /** The gid for a group name or a decimal number, or undefined when unknown. */
  gid(name: string): number | undefined {
    return this.#gidByName.get(name) ?? decimal(name);
  }
}

function decimal(s: string): number | undefined {
  if (!/^[0-9]{1,10}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= 0xffffffff ? n : undefined;
}

/** name:x:id:... lines → [name, id, fields]. */
function* parseIdFile(text: string): Generator<[string, number, string[]]> {
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const f = line.split(":");
    const name = f[0];
    const id = f[2] === undefined ? undefined : decimal(f[2]);
    if (!name || id === undefined) continue;
    yield [name, id, f];
  }
}

let cached: Promise<HostUsers> | undefined;

async function readOrEmpty(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

/**
 * This host's users and groups, read from /etc/passwd and /etc/group on
 * first use and kept for the life of the process.
 *
 * @example
 * ```ts
 * import { hostUsers } from "./users.ts";
 * const u = await hostUsers();
 * console.log(u.userName(0)); // "root" on most hosts
 * ```
 */
export function hostUsers(): Promise<HostUsers> {
  cached ??=
    (async () =>
      new HostUsers(await readOrEmpty("/etc/passwd"), await readOrEmpty("/etc/group")))();
  return cached;
}
