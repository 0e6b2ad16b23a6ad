/**
 * `ferry check`: everything about a loaded manifest that its shape alone
 * does not say. Unknown nodes and exports, a namespace mounting an export
 * whose access list denies its user, `via` cycles, duplicate names and
 * addresses, bad addresses, paths that escape a host export, unknown users
 * and groups in lists. Each problem names its file, line and key.
 *
 * @module
 */

import { parseDialString } from "../net/dial.ts";
import { splitNames } from "../ns/path.ts";
import { expand } from "./nsfile.ts";
import {
  accessAllows,
  type ExportSpec,
  groupsOf,
  type Manifest,
  ManifestError,
  type NodeSpec,
  type NsEntry,
  type Problem,
  type Where,
  whereIn,
} from "./schema.ts";
import { load, type LoadOptions, sortProblems } from "./load.ts";
import { PHONE_BACKENDS } from "../dev/phone/backend.ts";

/** What a `mount` source names once resolved against the manifest. */
export type MountSource =
  | { kind: "export"; node: NodeSpec; export: ExportSpec }
  | { kind: "address"; address: string };

/**
 * Resolve a mount source: "NODE!EXPORT" when NODE is a node of `m`, else a
 * dial string ("tcp!host!port"). Throws an Error saying what is unknown.
 */
export function resolveSource(m: Manifest, src: string): MountSource {
  const parts = src.split("!");
  const node = m.nodes.get(parts[0] ?? "");
  if (node) {
    if (parts.length !== 2) {
      throw new Error(`Bad mount source '${src}': want NODE!EXPORT`);
    }
    const ex = node.exports.get(parts[1]!);
    if (!ex) {
      throw new Error(
        `Unknown export '${parts[1]}' of node '${node.name}' in '${src}' (it exports: ${
          [...node.exports.keys()].join(", ") || "nothing"
        })`,
      );
    }
    return { kind: "export", node, export: ex };
  }
  if (parts.length === 2 && !["tcp", "udp", "net"].includes(parts[0]!)) {
    throw new Error(`Unknown node '${parts[0]}' in mount source '${src}'`);
  }
  if (parts.length === 3) {
    parseDialString(src, { net: "tcp", service: "styx" });
    return { kind: "address", address: src };
  }
  throw new Error(`Unknown node '${src}': want NODE!EXPORT or a dial string net!host!port`);
}

/**
 * The chain of nodes a connection to `node` passes through, nearest first
 * (empty when it is dialed directly). Throws on a cycle or an unknown node.
 */
export function viaChain(m: Manifest, node: NodeSpec): NodeSpec[] {
  const chain: NodeSpec[] = [];
  const seen = [node.name];
  let cur = node;
  while (cur.via !== undefined) {
    const next = m.nodes.get(cur.via);
    if (!next) throw new Error(`Unknown node '${cur.via}' in 'via' of node '${cur.name}'`);
    if (seen.includes(next.name)) {
      throw new Error(`'via' cycle: ${[...seen, next.name].join(" -> ")}`);
    }
    seen.push(next.name);
    chain.unshift(next);
    cur = next;
  }
  return chain;
}

/** The `net` export a node offers for reaching nodes behind it, if any. */
export function netExportOf(node: NodeSpec): ExportSpec | undefined {
  return [...node.exports.values()].find((e) => e.kind === "net");
}

/** True when `spec` (a path below an export) climbs above the export's root. */
export function escapes(spec: string): boolean {
  let depth = 0;
  for (const n of spec.split("/")) {
    if (n === "" || n === ".") continue;
    if (n === "..") {
      if (--depth < 0) return true;
    } else depth++;
  }
  return false;
}

/**
 * Check a loaded manifest; returns every problem (empty when it is good).
 *
 * @example
 * ```ts
 * import { loadText } from "./load.ts";
 * import { checkManifest } from "./check.ts";
 * const m = loadText('[nodes.a]\naddress = "tcp!127.0.0.1!7001"\n', "m.toml");
 * if (checkManifest(m).length !== 0) throw new Error("problems");
 * ```
 */
export function checkManifest(m: Manifest): Problem[] {
  const ps: Problem[] = [];
  const bad = (w: Where, message: string, key = w.key) =>
    ps.push({ ...(key === w.key ? w : whereIn(m, key)), message });

  if (m.ca.signer !== undefined) {
    try {
      parseDialString(m.ca.signer, { net: "tcp", service: "styx" });
    } catch (e) {
      bad(m.ca.where, capital((e as Error).message), "ca.signer");
    }
  }

  // Names: users, groups and nodes share the certificate name space.
  const owner = new Map<string, string>();
  const claim = (name: string, what: string, w: Where) => {
    const prev = owner.get(name);
    if (prev) bad(w, `Duplicate name '${name}': already used by ${prev}`);
    else owner.set(name, `${what} '${name}'`);
  };
  const named: [string, string, Where][] = [
    ...[...m.nodes.values()].map((n): [string, string, Where] => [n.name, "node", n.where]),
    ...[...m.users.values()].map((u): [string, string, Where] => [u.name, "user", u.where]),
    ...[...m.groups.values()].filter((g) => m.users.has(g.name) || m.nodes.has(g.name))
      .map((g): [string, string, Where] => [g.name, "group", g.where]),
  ];
  named.sort((a, b) => a[2].line - b[2].line);
  for (const [n, what, w] of named) claim(n, what, w);

  for (const g of m.groups.values()) {
    for (const u of g.members) {
      if (!m.users.has(u) && !m.nodes.has(u)) {
        bad(g.where, `Unknown member '${u}' of group '${g.name}'`);
      }
    }
  }
  for (const u of m.users.values()) {
    for (const g of u.groups) {
      if (!m.groups.has(g)) bad(u.where, `Unknown group '${g}'`, `users.${u.name}.groups`);
    }
  }

  // Addresses.
  const byAddr = new Map<string, string>();
  for (const n of m.nodes.values()) {
    const key = `nodes.${n.name}.address`;
    try {
      const a = parseDialString(n.address, { net: "tcp", service: "styx" });
      if (a.host === "*") {
        bad(n.where, `Bad address '${n.address}': a node's address must be dialable, not '*'`, key);
      }
      const canon = `${a.net}!${a.host}!${a.port}`;
      const prev = byAddr.get(canon);
      if (prev) bad(n.where, `Duplicate address '${n.address}': node '${prev}' has it too`, key);
      else byAddr.set(canon, n.name);
    } catch (e) {
      bad(n.where, capital((e as Error).message), key);
    }
    if (n.via !== undefined) {
      try {
        const chain = viaChain(m, n);
        const hop = chain[chain.length - 1];
        const net = hop && netExportOf(hop);
        if (hop && !net) {
          bad(
            n.where,
            `Node '${n.name}' is reached via '${hop.name}', which has no export of kind 'net'`,
            `nodes.${n.name}.via`,
          );
        } else if (hop && net && !accessAllows(net.access, n.name, groupsOf(m, n.name))) {
          bad(
            n.where,
            `Node '${n.name}' announces through '${hop.name}!${net.name}', whose access list (${
              net.access.join(", ") || "empty"
            }) denies '${n.name}'`,
            `nodes.${n.name}.via`,
          );
        }
      } catch (e) {
        bad(n.where, capital((e as Error).message), `nodes.${n.name}.via`);
      }
    }
    for (const e of n.exports.values()) checkExport(m, n, e, bad);
  }

  for (const u of m.users.values()) {
    if (!ACCOUNT.test(u.account)) {
      bad(
        u.where,
        `Bad host account name '${u.account}': want a login name such as "alice" ` +
          `(letters, digits, '.', '_', '-'; at most 32)`,
        `users.${u.name}.account`,
      );
    }
    const groups = groupsOf(m, u.name);
    const targets = new Set<string>();
    checkEntries(m, u.namespace, u.name, u.home, groups, bad, targets);
    for (const r of u.required) {
      if (!targets.has(r)) {
        bad(
          u.where,
          `Required mount point '${r}' is not the target of any namespace entry`,
          `users.${u.name}.required`,
        );
      }
    }
  }
  return sortProblems(ps);
}

/** A host login name, as useradd accepts them. */
const ACCOUNT = /^[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?$/;

type Bad = (w: Where, message: string, key?: string) => void;

function checkExport(m: Manifest, n: NodeSpec, e: ExportSpec, bad: Bad): void {
  const key = `nodes.${n.name}.exports.${e.name}`;
  for (const a of e.access) {
    if (a === "*") continue;
    if (a.startsWith("group:")) {
      if (!m.groups.has(a.slice(6))) {
        bad(e.where, `Unknown group '${a.slice(6)}' in access list`, `${key}.access`);
      }
    } else if (!m.users.has(a) && !m.nodes.has(a)) {
      bad(e.where, `Unknown user '${a}' in access list`, `${key}.access`);
    }
  }
  if (e.kind === "host" && e.path !== undefined && !e.path.startsWith("/")) {
    bad(e.where, `Host export path '${e.path}' must be absolute`, `${key}.path`);
  }
  for (const f of e.filter) {
    if (!/^[+-]./.test(f)) {
      bad(
        e.where,
        `Bad filter pattern '${f}': start it with '+' (show) or '-' (hide)`,
        `${key}.filter`,
      );
    } else if (escapes(f.slice(1))) {
      bad(e.where, `Filter pattern '${f}' escapes the export`, `${key}.filter`);
    }
  }
  if (e.kind === "phone" && e.backend !== undefined && !PHONE_BACKENDS.includes(e.backend)) {
    bad(
      e.where,
      `Unknown phone backend '${e.backend}' (want ${PHONE_BACKENDS.join(", ")})`,
      `${key}.backend`,
    );
  }
  if (e.kind === "namespace") {
    // The node composes this view with its own credentials.
    checkEntries(m, e.namespace, n.name, "/", groupsOf(m, n.name), bad, new Set());
  }
}

function checkEntries(
  m: Manifest,
  entries: NsEntry[],
  user: string,
  home: string,
  groups: string[],
  bad: Bad,
  targets: Set<string>,
): void {
  for (const e of entries) {
    let args: string[];
    try {
      args = e.args.map((a) => expand(a, { user, home }));
    } catch (err) {
      bad(e.where, `${(err as Error).message} in '${e.text}'`);
      continue;
    }
    if (e.op === "bind" || e.op === "mount") targets.add(args[1]!);
    if (e.op === "unmount") targets.add(args[args.length - 1]!);
    for (const a of e.op === "mount" ? [args[1]!] : e.op === "bind" ? args : []) {
      if (!a.startsWith("/") && !a.startsWith("#")) {
        bad(e.where, `Path '${a}' in '${e.text}' must be absolute (or a '#' device)`);
      }
    }
    if (e.op !== "mount") continue;
    if (e.insecure) {
      bad(
        e.where,
        `'mount -A' in '${e.text}' is refused when the namespace is built: manifest mounts always use mutual TLS; drop -A`,
      );
    }
    let src: MountSource;
    try {
      src = resolveSource(m, args[0]!);
    } catch (err) {
      bad(e.where, `${(err as Error).message}, in '${e.text}'`);
      continue;
    }
    if (src.kind !== "export") continue;
    const ex = src.export;
    if (ex.kind === "cpu") {
      bad(
        e.where,
        `'${args[0]}' in '${e.text}' is a cpu export, which runs commands and cannot be mounted: ` +
          `use 'ferry cpu ${src.node.name}'`,
      );
      continue;
    }
    if (!accessAllows(ex.access, user, groups)) {
      bad(
        e.where,
        `'${user}' mounts '${args[0]}' but its access list (${
          ex.access.join(", ") || "empty"
        }) denies '${user}'`,
      );
    }
    const spec = args[2];
    if (spec !== undefined && escapes(spec)) {
      bad(e.where, `Spec '${spec}' in '${e.text}' escapes export '${src.node.name}!${ex.name}'`);
    }
    if (spec !== undefined && ex.kind === "host") {
      const hidden = hiddenBy(ex.filter, splitNames("/" + spec).join("/"));
      if (hidden) {
        bad(e.where, `Spec '${spec}' in '${e.text}' is hidden by filter '${hidden}'`);
      }
    }
    try {
      for (const hop of viaChain(m, src.node)) {
        const net = netExportOf(hop);
        if (net && !accessAllows(net.access, user, groups)) {
          bad(
            e.where,
            `'${user}' reaches node '${src.node.name}' via '${hop.name}', whose net export '${net.name}' denies '${user}'`,
          );
        }
      }
    } catch {
      // The node's own 'via' problem is reported once, at the node.
    }
  }
}

/**
 * The filter pattern that hides relative path `rel` ("a/b"), or undefined
 * when it is shown. Patterns are "+GLOB" or "-GLOB"; the first that matches
 * the path or its last element wins.
 *
 * @example
 * ```ts
 * import { hiddenBy } from "./check.ts";
 * if (hiddenBy(["-*.key"], "secrets/id.key") !== "-*.key") throw new Error("shown");
 * if (hiddenBy(["+*.txt", "-*"], "a.txt") !== undefined) throw new Error("hidden");
 * ```
 */
export function hiddenBy(filter: readonly string[], rel: string): string | undefined {
  const base = rel.slice(rel.lastIndexOf("/") + 1);
  for (const f of filter) {
    const re = globRe(f.slice(1));
    if (re.test(rel) || re.test(base)) return f.startsWith("-") ? f : undefined;
  }
  return undefined;
}

const reCache = new Map<string, RegExp>();
function globRe(g: string): RegExp {
  let re = reCache.get(g);
  if (!re) {
    const body = g.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]")
      .replace(/\[\^\/\]\*\[\^\/\]\*/g, ".*");
    re = new RegExp(`^${body}$`);
    reCache.set(g, re);
  }
  return re;
}

function capital(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/**
 * Every problem of the manifest at `file` in one list: shape errors do not
 * hide the rest, since the manifest as far as it could be read is checked
 * too (a problem at the same key and line as a shape error is left out). Only
 * invalid TOML stops the checks. Throws an Error when the file cannot be
 * read.
 *
 * @example
 * ```ts ignore
 * for (const p of await allProblems("cluster.toml")) console.error(formatProblem(p));
 * ```
 */
export async function allProblems(file: string, opts: LoadOptions = {}): Promise<Problem[]> {
  let m: Manifest;
  try {
    m = await load(file, opts);
  } catch (e) {
    if (!(e instanceof ManifestError)) throw e;
    if (e.partial === undefined) return e.problems;
    const shape = e.problems;
    const covered = (q: Problem) =>
      shape.some((p) => p.key === q.key && p.line === q.line && p.file === q.file);
    const more = checkManifest(e.partial).filter((q) => !covered(q));
    return sortProblems([...shape, ...more]);
  }
  return checkManifest(m);
}

/**
 * Load and check `file`; throws {@link ManifestError} listing every problem.
 *
 * @example
 * ```ts ignore
 * const m = await loadChecked("cluster.toml");
 * ```
 */
export async function loadChecked(file: string, opts: LoadOptions = {}): Promise<Manifest> {
  const m = await load(file, opts);
  const ps = checkManifest(m);
  if (ps.length) throw new ManifestError(ps);
  return m;
}
