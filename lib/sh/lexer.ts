/**
 * The lexer of Ferry's shell: turns source text into tokens carrying their
 * line, column and whether white space came before them (for free carets).
 *
 * @module
 */

import type { Pos } from "./ast.ts";

/** Token kinds. Operators are their own text. */
export type TokKind =
  | "word"
  | "qword"
  | "$"
  | "$#"
  | '$"'
  | "`{"
  | '"{'
  | "{"
  | "}"
  | "("
  | ")"
  | ";"
  | "&"
  | "&&"
  | "|"
  | "||"
  | "^"
  | "="
  | ":="
  | "<"
  | ">"
  | ">>"
  | "<>"
  | "nl"
  | "eof";

/** One token. */
export interface Token {
  /** What it is. */
  kind: TokKind;
  /** Text of a word, or the operator itself. */
  value: string;
  /** Where it starts. */
  pos: Pos;
  /** Offset of the first character in the source. */
  start: number;
  /** Offset just past the last character. */
  end: number;
  /** True when blanks (or nothing at all: start of input) separate it from the previous token. */
  spaced: boolean;
  /** For redirections and pipes: `[fd]` or `[fd=fd]`. */
  fds?: { fd: number; dupFrom?: number };
}

/** A syntax error with its place in the source. */
export class ShSyntaxError extends Error {
  /**
   * A syntax error at `line`, `column`.
   * @param line 1-based line
   * @param column 1-based column
   * @param detail what was wrong, e.g. "unexpected '}'"
   */
  constructor(readonly line: number, readonly column: number, readonly detail: string) {
    super(`line ${line}, column ${column}: ${detail}`);
    this.name = "ShSyntaxError";
  }
}

const SPECIAL = new Set([..."#;&|^$`'{}()<>\"="]);

/** True when `c` can appear in an unquoted word. */
export function isWordChar(c: string): boolean {
  return !(SPECIAL.has(c) || c === " " || c === "\t" || c === "\n" || c === "\r");
}

function isNameChar(c: string): boolean {
  return /^[A-Za-z0-9_*]$/.test(c);
}

/**
 * Split `src` into tokens.
 *
 * @example
 * ```ts
 * import { lex } from "./lexer.ts";
 * const kinds = lex("echo 'a b' > x").map((t) => t.kind);
 * if (kinds.join(" ") !== "word qword > word eof") throw new Error("lexer");
 * ```
 */
export function lex(src: string): Token[] {
  const toks: Token[] = [];
  let i = 0;
  let line = 1;
  let col = 1;
  let spaced = true;
  let afterDollar = false;

  const here = (): Pos => ({ line, column: col });
  const advance = (n: number): void => {
    for (let k = 0; k < n; k++) {
      if (src[i] === "\n") {
        line++;
        col = 1;
      } else {
        col++;
      }
      i++;
    }
  };
  const push = (kind: TokKind, value: string, pos: Pos, start: number): Token => {
    const t: Token = { kind, value, pos, start, end: i, spaced };
    toks.push(t);
    spaced = false;
    return t;
  };

  while (i < src.length) {
    const c = src[i]!;
    const pos = here();
    const start = i;
    const wasAfterDollar = afterDollar;
    afterDollar = false;
    if (c === " " || c === "\t" || c === "\r") {
      advance(1);
      spaced = true;
      continue;
    }
    if (c === "#") {
      while (i < src.length && src[i] !== "\n") advance(1);
      continue;
    }
    if (c === "\n") {
      advance(1);
      spaced = true;
      push("nl", "\n", pos, start);
      spaced = true;
      continue;
    }
    if (c === "'") {
      advance(1);
      let value = "";
      for (;;) {
        if (i >= src.length) {
          throw new ShSyntaxError(pos.line, pos.column, "unterminated quoted string");
        }
        if (src[i] === "'") {
          if (src[i + 1] === "'") {
            value += "'";
            advance(2);
            continue;
          }
          advance(1);
          break;
        }
        value += src[i];
        advance(1);
      }
      push("qword", value, pos, start);
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === "$#" || two === '$"') {
      advance(2);
      push(two, two, pos, start);
      afterDollar = true;
      continue;
    }
    if (c === "$") {
      advance(1);
      push("$", "$", pos, start);
      afterDollar = true;
      continue;
    }
    if (two === "`{" || two === '"{') {
      advance(2);
      push(two, two, pos, start);
      continue;
    }
    if (two === "&&" || two === "||" || two === ":=") {
      advance(2);
      push(two, two, pos, start);
      continue;
    }
    if (c === ">" || c === "<" || c === "|") {
      let op: string = c;
      if (c === ">" && src[i + 1] === ">") op = ">>";
      else if (c === "<" && src[i + 1] === ">") op = "<>";
      advance(op.length);
      let fds: Token["fds"];
      if (src[i] === "[") {
        const m = /^\[(\d+)(?:=(\d+))?\]/.exec(src.slice(i));
        if (!m) {
          throw new ShSyntaxError(line, col, `bad file descriptor in '${op}['`);
        }
        fds = { fd: Number(m[1]) };
        if (m[2] !== undefined) fds.dupFrom = Number(m[2]);
        advance(m[0].length);
      }
      const t = push(op as TokKind, op, pos, start);
      if (fds) t.fds = fds;
      continue;
    }
    if (c === "`" || c === '"') {
      throw new ShSyntaxError(pos.line, pos.column, `unexpected '${c}'`);
    }
    if ("{}();&^=".includes(c)) {
      advance(1);
      push(c as TokKind, c, pos, start);
      continue;
    }
    // An unquoted word. Right after `$` it is only a name; the rest follows with a free caret.
    let value = "";
    while (i < src.length) {
      const d = src[i]!;
      if (!isWordChar(d)) break;
      if (d === ":" && src[i + 1] === "=") break;
      if (wasAfterDollar && !isNameChar(d)) break;
      value += d;
      advance(1);
    }
    if (value === "") {
      // Only ':' before '=' at the start, or a non-name char after '$': take one char.
      value = c;
      advance(1);
    }
    push("word", value, pos, start);
  }
  push("eof", "", here(), i);
  return toks;
}
