/**
 * Load a manifest: parse the TOML (npm:smol-toml), remember the line of
 * every key so each problem names its file, line and key, and check the
 * shape: unknown keys and wrong types are errors, never ignored. Semantic
 * checks (unknown nodes, access, `via` cycles…) are in check.ts.
 *
 * @module
 */

import { parse as parseToml, TomlError } from "smol-toml";
import * as path from "../hostpath.ts";
import {
  type CaSpec,
  EXPORT_KINDS,
  type ExportKind,
  type ExportSpec,
  type GroupSpec,
  type Manifest,
  ManifestError,
  type NodeSpec,
  type NsEntry,
  type Problem,
  type UserSpec,
  type Where,
} from "./schema.ts";
import { parseNamespace } from "./nsfile.ts";

/** Split a TOML dotted key ("a.\"b.c\".d") into its parts. */
function splitKey(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  const t = s.trim();
  while (i < t.length) {
    while (t[i] === " " || t[i] === "\t") i++;
    let part = "";
    if (t[i] === '"' || t[i] === "'") {
      const q = t[i]!;
      i++;
      while (i < t.length && t[i] !== q) {
        if (q === '"' && t[i] === "\\") i++;
        part += t[i] ?? "";
        i++;
      }
      i++;
    } else {
      while (i < t.length && t[i] !== "." && t[i] !== " " && t[i] !== "\t") part += t[i++];
    }
    out.push(part);
    while (t[i] === " " || t[i] === "\t") i++;
    if (t[i] === ".") i++;
  }
  return out;
}

/**
 * The line (1-based) of every table header and `key =` in TOML `text`,
 * keyed by the full dotted path ("nodes.server.address").
 */
export function keyLines(text: string): Map<string, number> {
  const lines = text.split("\n");
  const out = new Map<string, number>();
  let table: string[] = [];
  let inMulti: string | null = null;
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!;
    if (inMulti) {
      if (line.includes(inMulti)) inMulti = null;
      continue;
    }
    const header = line.match(/^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$/);
    if (header) {
      table = splitKey(header[1]!);
      if (!out.has(table.join("."))) out.set(table.join("."), n + 1);
      continue;
    }
    const kv = line.match(
      /^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=(.*)$/,
    );
    if (!kv) continue;
    const full = [...table, ...splitKey(kv[1]!)].join(".");
    if (!out.has(full)) out.set(full, n + 1);
    const rest = kv[2]!;
    for (const q of ['"""', "'''"]) {
      const at = rest.indexOf(q);
      if (at >= 0 && rest.indexOf(q, at + 3) < 0) inMulti = q;
    }
  }
  return out;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** What {@link load} and {@link loadText} accept. */
export interface LoadOptions {
  /** Reads included namespace files (default: Deno.readTextFileSync). */
  readFile?: (file: string) => string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

class Builder {
  readonly problems: Problem[] = [];
  #lines: string[] | undefined;
  /** The source split into lines (once, on first use). */
  get srcLines(): string[] {
    this.#lines ??= this.text.split("\n");
    return this.#lines;
  }
  constructor(
    readonly file: string,
    readonly text: string,
    readonly lines: Map<string, number>,
    readonly opts: LoadOptions,
  ) {}

  where(key: string): Where {
    let k = key;
    for (;;) {
      const l = this.lines.get(k);
      if (l !== undefined) return { file: this.file, line: l, key };
      const dot = k.lastIndexOf(".");
      if (dot < 0) return { file: this.file, line: 0, key };
      k = k.slice(0, dot);
    }
  }

  bad(key: string, message: string): void {
    this.problems.push({ ...this.where(key), message });
  }

  /** Report keys of `o` not in `allowed`. */
  known(o: Obj, key: string, allowed: readonly string[]): void {
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k)) {
        const full = key === "" ? k : `${key}.${k}`;
        this.bad(full, `Unknown key '${k}' (expected one of: ${allowed.join(", ")})`);
      }
    }
  }

  table(o: Obj, k: string, key: string): Obj {
    const v = o[k];
    if (v === undefined) return {};
    if (!isObj(v)) {
      this.bad(key, `Expected a table, got ${describe(v)}`);
      return {};
    }
    return v;
  }

  str(o: Obj, k: string, key: string, required = false): string | undefined {
    const v = o[k];
    if (v === undefined) {
      if (required) this.bad(key, `Missing key '${k}'`);
      return undefined;
    }
    if (typeof v !== "string") {
      this.bad(key, `Expected a string, got ${describe(v)}`);
      return undefined;
    }
    return v;
  }

  bool(o: Obj, k: string, key: string): boolean {
    const v = o[k];
    if (v === undefined) return false;
    if (typeof v !== "boolean") {
      this.bad(key, `Expected true or false, got ${describe(v)}`);
      return false;
    }
    return v;
  }

  strings(o: Obj, k: string, key: string): string[] {
    const v = o[k];
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
      this.bad(key, `Expected a list of strings, got ${describe(v)}`);
      return [];
    }
    return v as string[];
  }

  name(n: string, key: string, what: string): boolean {
    if (!NAME.test(n)) {
      this.bad(key, `Bad ${what} name '${n}': use letters, digits, '.', '_' and '-'`);
      return false;
    }
    return true;
  }

  /** A namespace: a multi-line string, a list of lines, or `namespace_file`. */
  namespace(o: Obj, key: string): NsEntry[] {
    const v = o.namespace;
    const f = o.namespace_file;
    const out: NsEntry[] = [];
    if (v !== undefined && f !== undefined) {
      this.bad(`${key}.namespace_file`, "Give 'namespace' or 'namespace_file', not both");
    }
    if (typeof v === "string") {
      const w = this.where(`${key}.namespace`);
      // A """ string starting with a newline begins on the next line.
      const src = this.srcLines[w.line - 1] ?? "";
      const eq = src.slice(src.indexOf("=") + 1).trim();
      const first = /^("""|''')\s*$/.test(eq) ? w.line + 1 : w.line;
      out.push(
        ...parseNamespace(v, w, this.problems, { readFile: this.opts.readFile, firstLine: first }),
      );
    } else if (Array.isArray(v)) {
      const w = this.where(`${key}.namespace`);
      const srcLines = this.srcLines;
      let at = w.line;
      for (const item of v) {
        if (typeof item !== "string") {
          this.bad(
            `${key}.namespace`,
            `Expected namespace lines as strings, got ${describe(item)}`,
          );
          continue;
        }
        // Find the element's own line, searching forward from the key.
        for (let n = at; n <= srcLines.length; n++) {
          if ((srcLines[n - 1] ?? "").includes(item.split(" ")[0] ?? "")) {
            at = n;
            break;
          }
        }
        out.push(
          ...parseNamespace(item, { ...w, line: at }, this.problems, {
            readFile: this.opts.readFile,
            firstLine: at,
          }),
        );
      }
    } else if (v !== undefined) {
      this.bad(
        `${key}.namespace`,
        `Expected namespace lines (a string or list), got ${describe(v)}`,
      );
    }
    if (typeof f === "string") {
      const file = path.resolve(path.dirname(this.file), f);
      const read = this.opts.readFile ?? ((p: string) => Deno.readTextFileSync(p));
      try {
        const text = read(file);
        out.push(
          ...parseNamespace(text, { file, line: 1, key: `${key}.namespace_file` }, this.problems, {
            readFile: this.opts.readFile,
            including: [file],
            firstLine: 1,
          }),
        );
      } catch (e) {
        this.bad(
          `${key}.namespace_file`,
          `Cannot read namespace file '${f}': ${(e as Error).message}`,
        );
      }
    } else if (f !== undefined) {
      this.bad(`${key}.namespace_file`, `Expected a file name, got ${describe(f)}`);
    }
    return out;
  }

  build(doc: Obj, bytes: Uint8Array): Manifest {
    this.known(doc, "", ["ca", "nodes", "users", "groups"]);
    const caT = this.table(doc, "ca", "ca");
    this.known(caT, "ca", ["name", "signer"]);
    const ca: CaSpec = {
      name: this.str(caT, "name", "ca.name"),
      signer: this.str(caT, "signer", "ca.signer"),
      where: this.where("ca"),
    };
    const groups = new Map<string, GroupSpec>();
    for (const [g, v] of Object.entries(this.table(doc, "groups", "groups"))) {
      const key = `groups.${g}`;
      if (!this.name(g, key, "group")) continue;
      if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
        this.bad(key, `Expected a list of member names, got ${describe(v)}`);
        continue;
      }
      groups.set(g, { name: g, members: v as string[], where: this.where(key) });
    }
    const nodes = new Map<string, NodeSpec>();
    for (const [n, v] of Object.entries(this.table(doc, "nodes", "nodes"))) {
      const key = `nodes.${n}`;
      if (!this.name(n, key, "node")) continue;
      if (!isObj(v)) {
        this.bad(key, `Expected a table, got ${describe(v)}`);
        continue;
      }
      this.known(v, key, ["address", "via", "exports"]);
      const node: NodeSpec = {
        name: n,
        address: this.str(v, "address", `${key}.address`, true) ?? "",
        via: this.str(v, "via", `${key}.via`),
        exports: new Map(),
        where: this.where(key),
      };
      for (const [x, ev] of Object.entries(this.table(v, "exports", `${key}.exports`))) {
        const ek = `${key}.exports.${x}`;
        if (!this.name(x, ek, "export")) continue;
        if (!isObj(ev)) {
          this.bad(ek, `Expected a table, got ${describe(ev)}`);
          continue;
        }
        const e = this.export(n, x, ev, ek);
        if (e) node.exports.set(x, e);
      }
      nodes.set(n, node);
    }
    const users = new Map<string, UserSpec>();
    for (const [u, v] of Object.entries(this.table(doc, "users", "users"))) {
      const key = `users.${u}`;
      if (!this.name(u, key, "user")) continue;
      if (!isObj(v)) {
        this.bad(key, `Expected a table, got ${describe(v)}`);
        continue;
      }
      this.known(v, key, [
        "account",
        "groups",
        "home",
        "namespace",
        "namespace_file",
        "required",
      ]);
      const account = this.str(v, "account", `${key}.account`);
      users.set(u, {
        name: u,
        groups: this.strings(v, "groups", `${key}.groups`),
        home: this.str(v, "home", `${key}.home`) ?? `/usr/${u}`,
        account: account ?? u,
        accountNamed: account !== undefined,
        namespace: this.namespace(v, key),
        required: this.strings(v, "required", `${key}.required`),
        where: this.where(key),
      });
    }
    return { file: this.file, bytes, ca, nodes, users, groups, keyLines: this.lines };
  }

  export(node: string, name: string, v: Obj, key: string): ExportSpec | undefined {
    const kind = this.str(v, "kind", `${key}.kind`, true);
    if (kind === undefined) return undefined;
    if (!(EXPORT_KINDS as readonly string[]).includes(kind)) {
      this.bad(`${key}.kind`, `Unknown export kind '${kind}' (want ${EXPORT_KINDS.join(", ")})`);
      return undefined;
    }
    const common = ["kind", "access"];
    const extra: Record<ExportKind, string[]> = {
      host: ["path", "readonly", "filter"],
      net: [],
      prog: [],
      phone: ["backend", "state"],
      namespace: ["namespace", "namespace_file"],
      cpu: [],
    };
    this.known(v, key, [...common, ...extra[kind as ExportKind]]);
    const e: ExportSpec = {
      name,
      node,
      kind: kind as ExportKind,
      path: this.str(v, "path", `${key}.path`, kind === "host"),
      readonly: this.bool(v, "readonly", `${key}.readonly`),
      filter: this.strings(v, "filter", `${key}.filter`),
      backend: this.str(v, "backend", `${key}.backend`),
      state: this.str(v, "state", `${key}.state`),
      namespace: kind === "namespace" ? this.namespace(v, key) : [],
      access: this.strings(v, "access", `${key}.access`),
      where: this.where(key),
    };
    if (v.access === undefined) {
      this.bad(
        `${key}.access`,
        'Missing key \'access\': say who may attach (e.g. ["alice", "group:staff"])',
      );
    }
    return e;
  }
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return "a list";
  if (isObj(v)) return "a table";
  if (v instanceof Date) return `the date ${v.toISOString()}`;
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Parse and shape-check manifest `text` as if read from `file`; throws {@link ManifestError}. */
export function loadText(text: string, file: string, opts: LoadOptions = {}): Manifest {
  const bytes = new TextEncoder().encode(text);
  return loadBytesInner(text, bytes, file, opts);
}

function loadBytesInner(
  text: string,
  bytes: Uint8Array,
  file: string,
  opts: LoadOptions,
): Manifest {
  let doc: Obj;
  try {
    doc = parseToml(text) as Obj;
  } catch (e) {
    if (e instanceof TomlError) {
      let first = e.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
      const line = e.line;
      const src = text.split("\n")[line - 1] ?? "";
      first = unterminated(first, src, e.column) ?? first;
      const k = src.match(/^\s*\[\[?\s*([^\]]+?)\s*\]/)?.[1] ??
        src.match(/^\s*([^=\s]+)\s*=/)?.[1] ??
        "";
      throw new ManifestError([{
        file,
        line,
        key: k,
        message: `Invalid TOML: ${first.charAt(0).toUpperCase()}${first.slice(1)}`,
      }]);
    }
    throw e;
  }
  const b = new Builder(file, text, keyLines(text), opts);
  const m = b.build(doc, bytes);
  // The partial manifest goes along, so a checker can still report the rest.
  if (b.problems.length) throw new ManifestError(sortProblems(b.problems), m);
  return m;
}

/**
 * smol-toml reports a string left open as a control character (the newline)
 * in a string, or as an unfinished string at the end of the text: say what
 * the user did instead.
 */
function unterminated(msg: string, src: string, column: number): string | undefined {
  if (/^unfinished string/i.test(msg)) {
    return /"""|'''/.test(src)
      ? `unterminated multi-line string: no closing """ or ''' before the end of the file`
      : "unterminated string: no closing quote before the end of the file";
  }
  if (/^control characters are not allowed in strings/i.test(msg) && column > src.length) {
    return "unterminated string: the line ends before its closing quote";
  }
  return undefined;
}

/**
 * Shape-check manifest `bytes` (already read, e.g. after its signature was
 * checked) as if read from `file`; throws {@link ManifestError}.
 */
export function loadBytes(bytes: Uint8Array, file: string, opts: LoadOptions = {}): Manifest {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ManifestError([{
      file,
      line: 0,
      key: "",
      message: "The manifest is not UTF-8 text",
    }]);
  }
  return loadBytesInner(text, bytes, file, opts);
}

/** Problems in file order. */
export function sortProblems(ps: Problem[]): Problem[] {
  return [...ps].sort((a, b) => a.file === b.file ? a.line - b.line : a.file < b.file ? -1 : 1);
}

/**
 * Read and shape-check the manifest at `file`; throws {@link ManifestError}
 * listing every problem, or an Error when the file cannot be read.
 *
 * @example
 * ```ts ignore
 * const m = await load("cluster.toml");
 * console.log([...m.nodes.keys()]);
 * ```
 */
export async function load(file: string, opts: LoadOptions = {}): Promise<Manifest> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch (e) {
    throw new Error(`Cannot read manifest '${file}': ${(e as Error).message}`);
  }
  return loadBytes(bytes, file, opts);
}
