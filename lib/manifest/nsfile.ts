/**
 * namespace(6) lines: `bind [-abc] new old`,
 * `mount [-abcA] [-C alg] [--peer NODE] NODE!EXPORT|ADDR old [spec]`,
 * `unmount [new] old`, `cd dir`, `new`, `fork`, `nodev` and `. file` to
 * include another namespace file. Words are separated by blanks and may be
 * quoted with '…' ('' inside quotes is one quote); a line whose first word
 * begins with '#' is a comment.
 *
 * @module
 */

import * as path from "../hostpath.ts";
import type { NsEntry, NsOp, Problem, Where } from "./schema.ts";

const OPS: ReadonlySet<string> = new Set([
  "bind",
  "mount",
  "unmount",
  "cd",
  "new",
  "fork",
  "nodev",
]);

/** Flags each operation accepts. */
const FLAGS: Readonly<Record<string, string>> = {
  bind: "abc",
  mount: "abcrAC",
  unmount: "",
  cd: "",
  new: "",
  fork: "",
  nodev: "",
};

/** How many words after the flags each operation takes: [min, max]. */
const ARITY: Readonly<Record<string, [number, number]>> = {
  bind: [2, 2],
  mount: [2, 3],
  unmount: [1, 2],
  cd: [1, 1],
  new: [0, 0],
  fork: [0, 0],
  nodev: [0, 0],
};

/**
 * Split one line into words; null for a blank or comment line. Throws an
 * Error for an unterminated quote.
 *
 * @example
 * ```ts
 * import { splitWords } from "./nsfile.ts";
 * const w = splitWords("bind -a '#U' '/n/my files'");
 * if (w?.[3] !== "/n/my files") throw new Error("bad split");
 * ```
 */
export function splitWords(line: string): string[] | null {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i]!)) i++;
    if (i >= line.length) break;
    if (words.length === 0 && line[i] === "#") break;
    let w = "";
    while (i < line.length && !/\s/.test(line[i]!)) {
      if (line[i] === "'") {
        i++;
        for (;;) {
          if (i >= line.length) throw new Error(`unterminated quote in '${line.trim()}'`);
          if (line[i] === "'") {
            if (line[i + 1] === "'") {
              w += "'";
              i += 2;
              continue;
            }
            i++;
            break;
          }
          w += line[i];
          i++;
        }
      } else {
        w += line[i];
        i++;
      }
    }
    words.push(w);
  }
  return words.length === 0 ? null : words;
}

/** Options for {@link parseNamespace}. */
export interface ParseNsOptions {
  /** Reads an included file (default: Deno.readTextFileSync). */
  readFile?: (file: string) => string;
  /** Files being included, to refuse include cycles. */
  including?: string[];
  /** Line number of the text's first line (default 1). */
  firstLine?: number;
}

/**
 * Parse namespace(6) text into entries, following `. file` includes
 * (relative to the including file's directory). Problems (bad flags, wrong
 * word counts, unknown commands, unreadable or cyclic includes) are pushed
 * onto `problems`; the good lines are still returned.
 *
 * @example
 * ```ts
 * import { parseNamespace } from "./nsfile.ts";
 * import type { Problem } from "./schema.ts";
 * const problems: Problem[] = [];
 * const where = { file: "x", line: 1, key: "users.a.namespace" };
 * const es = parseNamespace("mount -c srv!home /usr/$user\n", where, problems);
 * if (es[0]?.op !== "mount" || !es[0].create || problems.length) throw new Error("bad parse");
 * ```
 */
export function parseNamespace(
  text: string,
  where: Where,
  problems: Problem[],
  opts: ParseNsOptions = {},
): NsEntry[] {
  const out: NsEntry[] = [];
  const lines = text.split("\n");
  const first = opts.firstLine ?? where.line;
  const including = opts.including ?? [where.file];
  const readFile = opts.readFile ?? ((f: string) => Deno.readTextFileSync(f));
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.replace(/\r$/, "");
    const w: Where = { file: where.file, line: first + n, key: where.key };
    const bad = (message: string) => problems.push({ ...w, message });
    let words: string[] | null;
    try {
      words = splitWords(line);
    } catch (e) {
      bad(capital((e as Error).message));
      continue;
    }
    if (!words) continue;
    const [cmd, ...rest] = words as [string, ...string[]];
    if (cmd === ".") {
      if (rest.length !== 1) {
        bad(`Include line '${line.trim()}' needs exactly one file name`);
        continue;
      }
      const inc = path.resolve(path.dirname(where.file), rest[0]!);
      if (including.includes(inc)) {
        bad(`Include cycle: '${rest[0]}' is already being read (${including.join(" -> ")})`);
        continue;
      }
      let incText: string;
      try {
        incText = readFile(inc);
      } catch (e) {
        bad(`Cannot read included file '${rest[0]}': ${(e as Error).message}`);
        continue;
      }
      out.push(
        ...parseNamespace(incText, { file: inc, line: 1, key: where.key }, problems, {
          readFile,
          including: [...including, inc],
          firstLine: 1,
        }),
      );
      continue;
    }
    if (!OPS.has(cmd)) {
      bad(
        `Unknown namespace command '${cmd}' (want bind, mount, unmount, cd, new, fork, nodev or .)`,
      );
      continue;
    }
    const e: NsEntry = {
      op: cmd as NsOp,
      after: false,
      before: false,
      create: false,
      insecure: false,
      args: [],
      text: line.trim(),
      where: w,
    };
    let i = 0;
    let ok = true;
    for (; i < rest.length; i++) {
      const a = rest[i]!;
      if (!a.startsWith("-") || a === "-") break;
      if (a === "--") {
        i++;
        break;
      }
      if (a === "--peer" || a.startsWith("--peer=")) {
        // As in the shell: the node whose certificate must answer the dial.
        const peer = a === "--peer" ? rest[++i] : a.slice("--peer=".length);
        if (cmd !== "mount") {
          bad(`Option '--peer' is only for 'mount', in '${e.text}'`);
          ok = false;
        } else if (peer === undefined || peer === "") {
          bad(`Option '--peer' needs a node name in '${e.text}'`);
          ok = false;
        } else e.peer = peer;
        continue;
      }
      if (a.startsWith("--")) {
        bad(`Unknown option '${a}' for '${cmd}' in '${e.text}'`);
        ok = false;
        continue;
      }
      for (const f of a.slice(1)) {
        if (!FLAGS[cmd]!.includes(f)) {
          bad(`Unknown flag '-${f}' for '${cmd}' in '${e.text}'`);
          ok = false;
          continue;
        }
        if (f === "a") e.after = true;
        else if (f === "b") e.before = true;
        else if (f === "c") e.create = true;
        else if (f === "A") e.insecure = true;
        else if (f === "r") e.recover = true;
        else if (f === "C") {
          const alg = rest[i + 1];
          if (alg === undefined) {
            bad(`Flag '-C' needs an algorithm in '${e.text}'`);
            ok = false;
          } else {
            e.alg = alg;
            i++;
          }
        }
      }
    }
    if (e.after && e.before) {
      bad(`Give only one of -a and -b in '${e.text}'`);
      ok = false;
    }
    e.args = rest.slice(i);
    const [min, max] = ARITY[cmd]!;
    if (e.args.length < min || e.args.length > max) {
      bad(
        `'${cmd}' takes ${min === max ? min : `${min} to ${max}`} ${
          max === 1 ? "argument" : "arguments"
        } after its flags, got ${e.args.length} in '${e.text}'`,
      );
      ok = false;
    }
    if (ok) out.push(e);
  }
  return out;
}

function capital(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/**
 * Replace `$user` and `$home` (also `${user}`, `${home}`) in `word`. Throws
 * an Error naming any other variable.
 *
 * @example
 * ```ts
 * import { expand } from "./nsfile.ts";
 * if (expand("/usr/$user", { user: "alice", home: "/usr/alice" }) !== "/usr/alice") throw new Error();
 * ```
 */
export function expand(word: string, vars: { user: string; home: string }): string {
  return word.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (m, name: string) => {
    if (name === "user") return vars.user;
    if (name === "home") return vars.home;
    throw new Error(`Unknown variable '${m}' (only $user and $home are expanded)`);
  });
}
