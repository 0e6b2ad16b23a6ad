/**
 * Host user and group names for the host-directory tree: uid and gid numbers
 * from the host file system become the owner and group names in a Dir.
 *
 * /etc/passwd and /etc/group are read once; a number with no entry (or a host
 * without those files) is shown as the number in decimal.
 *
 * @module
 */

/** Numbers ↔ names for host users and groups. */
export class HostUsers {
  readonly #users = new Map<number, string>();
  readonly #groups = new Map<number, string>();
  readonly #uidByName = new Map<string, number>();
  readonly #gidByName = new Map<string, number>();

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
    for (const [name, id] of parseIdFile(passwd)) {
      if (!this.#users.has(id)) this.#users.set(id, name);
      if (!this.#uidByName.has(name)) this.#uidByName.set(name, id);
    }
    for (const [name, id] of parseIdFile(group)) {
      if (!this.#groups.has(id)) this.#groups.set(id, name);
      if (!this.#gidByName.has(name)) this.#gidByName.set(name, id);
    }
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

/** name:x:id:... lines → [name, id] pairs. */
function* parseIdFile(text: string): Generator<[string, number]> {
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const f = line.split(":");
    const name = f[0];
    const id = f[2] === undefined ? undefined : decimal(f[2]);
    if (!name || id === undefined) continue;
    yield [name, id];
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
