/**
 * The shape of a Ferry manifest: one TOML file describing a cluster (the CA
 * and its signer, the nodes and what each exports to whom, users, groups,
 * and each user's namespace as namespace(6) lines).
 *
 * ```toml
 * [ca]
 * name = "ferry-demo-ca"
 * signer = "tcp!127.0.0.1!7000"
 *
 * [groups]
 * staff = ["alice"]
 *
 * [nodes.server]
 * address = "tcp!127.0.0.1!7001"
 *
 * [nodes.server.exports.home]
 * kind = "host"
 * path = "/srv/home"
 * access = ["group:staff"]
 *
 * [users.alice]
 * home = "/usr/alice"
 * namespace = """
 * mount -c server!home /usr/$user
 * """
 * ```
 *
 * @module
 */

/** Where a value came from, for error reports. */
export interface Where {
  /** The file (manifest or namespace file). */
  file: string;
  /** 1-based line; 0 when unknown. */
  line: number;
  /** The dotted TOML key, e.g. "nodes.server.address". */
  key: string;
}

/** One problem found in a manifest. */
export interface Problem extends Where {
  /** What is wrong, in sentence case, quoting the value. */
  message: string;
}

/** Format a problem as `FILE:LINE: KEY: message`. */
export function formatProblem(p: Problem): string {
  return `${p.file}:${p.line}: ${p.key}: ${p.message}`;
}

/** Thrown when a manifest has problems; `problems` lists every one. */
export class ManifestError extends Error {
  /** Every problem found, in file order. */
  readonly problems: Problem[];
  /** The manifest as far as it could be read (after shape errors), for further checks. */
  readonly partial?: Manifest;
  /** List `problems`; `partial` is what could be read despite them. */
  constructor(problems: Problem[], partial?: Manifest) {
    super(problems.map(formatProblem).join("\n"));
    this.name = "ManifestError";
    this.problems = problems;
    if (partial !== undefined) this.partial = partial;
  }
}

/**
 * Export kinds a node can serve. A `cpu` export runs commands for the users
 * on its access list (`ferry cpu NODE`), each as its host account.
 */
export const EXPORT_KINDS = ["host", "net", "prog", "phone", "namespace", "cpu"] as const;
/** One of {@link EXPORT_KINDS}. */
export type ExportKind = typeof EXPORT_KINDS[number];

/** The `[ca]` table. */
export interface CaSpec {
  /** The CA's name (its certificate's CN). */
  name?: string;
  /** Dial string of the signer that redeems enrolment tokens and renews certificates. */
  signer?: string;
  where: Where;
}

/** One export of a node: `[nodes.NODE.exports.NAME]`. */
export interface ExportSpec {
  /** The export's name; clients attach with it as the attach name. */
  name: string;
  /** The node serving it. */
  node: string;
  kind: ExportKind;
  /** host: the host directory. */
  path?: string;
  /** host: refuse every change. */
  readonly: boolean;
  /**
   * host: exportfs -P style patterns, each "+GLOB" (show) or "-GLOB" (hide);
   * the first that matches a file's path below the export (or its name) wins,
   * and a file no pattern matches is shown.
   */
  filter: string[];
  /** phone: the backend ("sim", "modemmanager", "termux"); default "sim". */
  backend?: string;
  /** phone: where the backend keeps its state. */
  state?: string;
  /** namespace: namespace(6) lines composing the exported view. */
  namespace: NsEntry[];
  /** Users and "group:NAME" entries allowed to attach; "*" allows every user. */
  access: string[];
  where: Where;
}

/** A node: `[nodes.NAME]`. */
export interface NodeSpec {
  name: string;
  /** Dial string it listens on, e.g. "tcp!127.0.0.1!7001". */
  address: string;
  /** Another node through whose `net` export this node is reached (the NAT case). */
  via?: string;
  exports: Map<string, ExportSpec>;
  where: Where;
}

/** A group: `[groups] NAME = [members]`. */
export interface GroupSpec {
  name: string;
  members: string[];
  where: Where;
}

/** A user: `[users.NAME]`. */
export interface UserSpec {
  name: string;
  /** Groups named in the user's own table (beside [groups] memberships). */
  groups: string[];
  /** $home in namespace lines; default "/usr/NAME". */
  home: string;
  /**
   * The host account `ferry logon -- COMMAND` runs COMMAND as, and a node's
   * `cpu` export runs the user's commands as; default NAME.
   */
  account: string;
  /**
   * True when the manifest names the account (`account = "…"`) rather than
   * leaving it to default to NAME: only a named root account lets a `cpu`
   * export run the user's commands as root.
   */
  accountNamed?: boolean;
  /** The user's namespace, in order. */
  namespace: NsEntry[];
  /** Mount points whose entries must succeed at logon. */
  required: string[];
  where: Where;
}

/** Operations a namespace(6) line may hold. */
export type NsOp = "bind" | "mount" | "unmount" | "cd" | "new" | "fork" | "nodev";

/** One namespace(6) line, with its `.` includes already expanded. */
export interface NsEntry {
  op: NsOp;
  /** -a */
  after: boolean;
  /** -b */
  before: boolean;
  /** -c */
  create: boolean;
  /** mount -A: no authentication (refused by `ferry check` unless the manifest allows it). */
  insecure: boolean;
  /** mount -r: recover after a loss (what every manifest mount does anyway). */
  recover?: boolean;
  /** mount -C alg */
  alg?: string;
  /** mount --peer NODE: the node whose certificate must answer (default: the dialled one). */
  peer?: string;
  /** The words after the flags, `$user` and `$home` not yet expanded. */
  args: string[];
  /** The line as written. */
  text: string;
  where: Where;
}

/** A loaded manifest. */
export interface Manifest {
  /** The manifest file's path as given. */
  file: string;
  /** The bytes it was parsed from (what a signature covers). */
  bytes: Uint8Array;
  ca: CaSpec;
  nodes: Map<string, NodeSpec>;
  users: Map<string, UserSpec>;
  groups: Map<string, GroupSpec>;
  /** The line of every key in the manifest file, by dotted key. */
  keyLines: Map<string, number>;
}

/** Where `key` is in the manifest: its own line, else its nearest table's. */
export function whereIn(m: Manifest, key: string): Where {
  let k = key;
  for (;;) {
    const l = m.keyLines.get(k);
    if (l !== undefined) return { file: m.file, line: l, key };
    const dot = k.lastIndexOf(".");
    if (dot < 0) return { file: m.file, line: 0, key };
    k = k.slice(0, dot);
  }
}

/**
 * Every group `user` belongs to: those its own table names and those whose
 * member list holds it.
 */
export function groupsOf(m: Manifest, user: string): string[] {
  const out = new Set(m.users.get(user)?.groups ?? []);
  for (const g of m.groups.values()) if (g.members.includes(user)) out.add(g.name);
  return [...out].sort();
}

/**
 * True when `user` (with `groups`) is on `access`: named, in a listed
 * "group:NAME", or the list holds "*".
 *
 * @example
 * ```ts
 * import { accessAllows } from "./schema.ts";
 * if (!accessAllows(["group:staff"], "alice", ["staff"])) throw new Error("denied");
 * if (accessAllows(["bob"], "alice", [])) throw new Error("allowed");
 * ```
 */
export function accessAllows(
  access: readonly string[],
  user: string,
  groups: readonly string[],
): boolean {
  for (const a of access) {
    if (a === "*" || a === user) return true;
    if (a.startsWith("group:") && groups.includes(a.slice(6))) return true;
  }
  return false;
}
