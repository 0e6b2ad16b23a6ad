/**
 * The parser of Ferry's shell: the part of Inferno's sh(1) grammar that the
 * article and everyday use need. Errors name the line and column:
 * `line 3, column 7: unexpected '}'`.
 *
 * @module
 */

import type { Cmd, Pos, Redir, Seq, SeqItem, SimpleCmd, Word } from "./ast.ts";
import { lex, ShSyntaxError, type Token, type TokKind } from "./lexer.ts";

export { ShSyntaxError } from "./lexer.ts";

/** Tokens that can begin an argument. */
const WORD_START = new Set<TokKind>(["word", "qword", "$", "$#", '$"', "`{", '"{', "{", "(", "="]);
/** Tokens that can be glued to the previous argument without a caret. */
const ADJACENT = new Set<TokKind>(["word", "qword", "$", "$#", '$"', "`{", '"{', "="]);

function describe(t: Token): string {
  switch (t.kind) {
    case "eof":
      return "end of input";
    case "nl":
      return "newline";
    case "word":
    case "qword":
      return `word '${t.value}'`;
    default:
      return `'${t.value}'`;
  }
}

class Parser {
  #toks: Token[];
  #i = 0;
  /** Nesting of parentheses, where newlines are blanks. */
  #parens = 0;

  constructor(readonly src: string) {
    this.#toks = lex(src);
  }

  peek(): Token {
    let t = this.#toks[this.#i]!;
    while (this.#parens > 0 && t.kind === "nl") {
      this.#i++;
      t = this.#toks[this.#i]!;
    }
    return t;
  }

  next(): Token {
    const t = this.peek();
    if (t.kind !== "eof") this.#i++;
    return t;
  }

  fail(t: Token, detail?: string): never {
    throw new ShSyntaxError(t.pos.line, t.pos.column, detail ?? `unexpected ${describe(t)}`);
  }

  program(): Seq {
    const seq = this.seq();
    const t = this.peek();
    if (t.kind !== "eof") this.fail(t);
    return seq;
  }

  /** A sequence, ending at `}`, `)` or end of input. */
  seq(): Seq {
    const items: SeqItem[] = [];
    for (;;) {
      const t = this.peek();
      if (t.kind === "nl" || t.kind === ";") {
        this.next();
        continue;
      }
      if (t.kind === "eof" || t.kind === "}") return { items };
      if (t.kind === "&") this.fail(t);
      const startTok = t;
      const cmd = this.andOr();
      const last = this.#toks[this.#i - 1]!;
      const text = this.src.slice(startTok.start, last.end).trim();
      const sep = this.peek();
      let background = false;
      if (sep.kind === "&") {
        background = true;
        this.next();
      } else if (sep.kind === ";" || sep.kind === "nl") {
        this.next();
      } else if (sep.kind !== "eof" && sep.kind !== "}") {
        this.fail(sep);
      }
      items.push({ cmd, background, text });
    }
  }

  andOr(): Cmd {
    let left = this.pipeline();
    for (;;) {
      const t = this.peek();
      if (t.kind !== "&&" && t.kind !== "||") return left;
      this.next();
      this.skipNewlines();
      const right = this.pipeline();
      left = { kind: t.kind === "&&" ? "and" : "or", left, right, pos: t.pos };
    }
  }

  skipNewlines(): void {
    while (this.peek().kind === "nl") this.next();
  }

  pipeline(): Cmd {
    const first = this.command();
    if (this.peek().kind !== "|") return first;
    const cmds = [first];
    while (this.peek().kind === "|") {
      const bar = this.next();
      if (bar.fds) this.fail(bar, "pipes with file descriptors are not supported");
      this.skipNewlines();
      cmds.push(this.command());
    }
    return { kind: "pipe", cmds, pos: first.pos };
  }

  command(): Cmd {
    const t = this.peek();
    // Assignment: NAME = value..., NAME := value..., (a b) = value...
    if (t.kind === "word" || t.kind === "qword" || t.kind === "(") {
      const save = this.#i;
      const parens = this.#parens;
      let names: Word[] | undefined;
      if (t.kind === "(") {
        this.next();
        this.#parens++;
        names = [];
        while (this.peek().kind === "word" || this.peek().kind === "qword") {
          const n = this.next();
          names.push({ kind: "lit", value: n.value, quoted: n.kind === "qword", pos: n.pos });
        }
        if (this.peek().kind === ")") {
          this.#parens--;
          this.next();
        } else names = undefined;
      } else {
        this.next();
        names = [{ kind: "lit", value: t.value, quoted: t.kind === "qword", pos: t.pos }];
      }
      const op = this.peek();
      if (names && (op.kind === "=" || op.kind === ":=")) {
        this.next();
        const value: Word[] = [];
        while (WORD_START.has(this.peek().kind)) value.push(this.word());
        const after = this.peek();
        if (isRedir(after.kind)) this.fail(after, "redirection of an assignment");
        return { kind: "assign", names, value, local: op.kind === ":=", pos: t.pos };
      }
      this.#i = save;
      this.#parens = parens;
    }
    return this.simple();
  }

  simple(): SimpleCmd {
    const first = this.peek();
    const words: Word[] = [];
    const redirs: Redir[] = [];
    for (;;) {
      const t = this.peek();
      if (WORD_START.has(t.kind)) {
        words.push(this.word());
      } else if (isRedir(t.kind)) {
        redirs.push(this.redir());
      } else break;
    }
    if (words.length === 0 && redirs.length === 0) this.fail(first);
    return { kind: "simple", words, redirs, pos: first.pos };
  }

  redir(): Redir {
    const t = this.next();
    const op = t.kind as Redir["op"];
    const fd = t.fds?.fd ?? (op === "<" || op === "<>" ? 0 : 1);
    if (t.fds?.dupFrom !== undefined) {
      return { op, fd, dupFrom: t.fds.dupFrom, pos: t.pos };
    }
    const n = this.peek();
    if (!WORD_START.has(n.kind)) this.fail(n, `missing file name after '${t.value}'`);
    return { op, fd, target: this.word(), pos: t.pos };
  }

  /** An argument: primaries joined by explicit or free carets. */
  word(): Word {
    let left = this.primary();
    for (;;) {
      const t = this.peek();
      if (t.kind === "^") {
        this.next();
        const n = this.peek();
        if (!WORD_START.has(n.kind)) this.fail(n);
        left = { kind: "concat", left, right: this.primary(), pos: left.pos };
      } else if (!t.spaced && ADJACENT.has(t.kind)) {
        left = { kind: "concat", left, right: this.primary(), pos: left.pos };
      } else {
        return left;
      }
    }
  }

  primary(): Word {
    const t = this.next();
    const pos: Pos = t.pos;
    switch (t.kind) {
      case "word":
        return { kind: "lit", value: t.value, quoted: false, pos };
      case "qword":
        return { kind: "lit", value: t.value, quoted: true, pos };
      case "=":
        return { kind: "lit", value: "=", quoted: false, pos };
      case "$":
      case "$#":
      case '$"': {
        const n = this.peek();
        if (n.spaced || !["word", "qword", "$", "(", "{"].includes(n.kind)) {
          this.fail(t, `missing variable name after '${t.value}'`);
        }
        const name = this.primary();
        const mode = t.kind === "$" ? "value" : t.kind === "$#" ? "count" : "join";
        return { kind: "var", name, mode, pos };
      }
      case "{": {
        const body = this.block(t);
        const close = this.#toks[this.#i - 1]!;
        return { kind: "block", body, text: this.src.slice(t.start, close.end), pos };
      }
      case "`{":
      case '"{':
        return { kind: "subst", body: this.block(t), split: t.kind === "`{", pos };
      case "(": {
        this.#parens++;
        const items: Word[] = [];
        while (WORD_START.has(this.peek().kind)) items.push(this.word());
        const close = this.peek();
        if (close.kind !== ")") {
          if (close.kind === "eof") this.fail(t, "unclosed '('");
          this.fail(close);
        }
        this.#parens--;
        this.next();
        return { kind: "list", items, pos };
      }
      default:
        this.fail(t);
    }
  }

  /** The rest of a braced block after its opening token; consumes the `}`. */
  block(open: Token): Seq {
    const parens = this.#parens;
    this.#parens = 0;
    const body = this.seq();
    const close = this.peek();
    if (close.kind !== "}") {
      if (close.kind === "eof") this.fail(open, "unclosed '{'");
      this.fail(close);
    }
    this.next();
    this.#parens = parens;
    return body;
  }
}

function isRedir(k: TokKind): boolean {
  return k === "<" || k === ">" || k === ">>" || k === "<>";
}

/**
 * Parse a whole program. Throws {@link ShSyntaxError} naming the line and
 * column of the first error.
 *
 * @example
 * ```ts
 * import { parse } from "./parser.ts";
 * const seq = parse("mkdir /tmp/x; bind -a /a /tmp/x &");
 * if (seq.items.length !== 2 || !seq.items[1]!.background) throw new Error("parse");
 * ```
 */
export function parse(src: string): Seq {
  return new Parser(src).program();
}

/**
 * True when `src` is incomplete (an unclosed brace, parenthesis or quote
 * runs to the end of input), so an interactive shell should read another
 * line before running it.
 */
export function incomplete(src: string): boolean {
  try {
    parse(src);
    return false;
  } catch (e) {
    if (!(e instanceof ShSyntaxError)) return false;
    return /^(unclosed|unterminated)/.test(e.detail) || e.detail === "unexpected end of input";
  }
}
