/**
 * The syntax tree of Ferry's shell language, a subset of Inferno's sh(1).
 *
 * A program is a {@link Seq} of commands; arguments are {@link Word}s whose
 * values are lists of strings, as in sh(1).
 *
 * @module
 */

/** A place in the source text, 1-based. */
export interface Pos {
  line: number;
  column: number;
}

/** A literal piece of text, quoted ('...') or not. */
export interface LitWord {
  kind: "lit";
  value: string;
  /** True for '...' text: never a pattern, never special. */
  quoted: boolean;
  pos: Pos;
}

/** `$name`, `$#name` (count) or `$"name` (joined with spaces). */
export interface VarWord {
  kind: "var";
  /** The word naming the variable (itself possibly a variable: `$$x`). */
  name: Word;
  mode: "value" | "count" | "join";
  pos: Pos;
}

/** A braced block `{ ... }`; as an argument its value is its text. */
export interface BlockWord {
  kind: "block";
  body: Seq;
  /** The block's source text, braces included. */
  text: string;
  pos: Pos;
}

/** `( a b c )`: a list made of the members of each element. */
export interface ListWord {
  kind: "list";
  items: Word[];
  pos: Pos;
}

/** `a^b`, written or implied by adjacency (free carets). */
export interface ConcatWord {
  kind: "concat";
  left: Word;
  right: Word;
  pos: Pos;
}

/** `` `{cmd} `` (split on $ifs) or `"{cmd}` (one string). */
export interface SubstWord {
  kind: "subst";
  body: Seq;
  split: boolean;
  pos: Pos;
}

/** Anything that stands where an argument is expected. */
export type Word = LitWord | VarWord | BlockWord | ListWord | ConcatWord | SubstWord;

/** An I/O redirection: `<`, `>`, `>>`, `<>`, optionally with `[fd]` or `[fd=fd]`. */
export interface Redir {
  op: "<" | ">" | ">>" | "<>";
  /** The file descriptor redirected (0 for input, 1 for output by default). */
  fd: number;
  /** For `>[fd0=fd1]`: the descriptor copied; no target then. */
  dupFrom?: number;
  target?: Word;
  pos: Pos;
}

/** A command with its arguments and redirections. */
export interface SimpleCmd {
  kind: "simple";
  words: Word[];
  redirs: Redir[];
  pos: Pos;
}

/** `name=value...`, `name:=value...` or `(a b)=value...`. */
export interface AssignCmd {
  kind: "assign";
  names: Word[];
  value: Word[];
  /** True for `:=` (innermost scope). */
  local: boolean;
  pos: Pos;
}

/** `a | b | c`. */
export interface PipeCmd {
  kind: "pipe";
  cmds: Cmd[];
  pos: Pos;
}

/** `a && b` or `a || b`. */
export interface LogicCmd {
  kind: "and" | "or";
  left: Cmd;
  right: Cmd;
  pos: Pos;
}

/** Any command. */
export type Cmd = SimpleCmd | AssignCmd | PipeCmd | LogicCmd;

/** One command in a sequence; `background` when followed by `&`. */
export interface SeqItem {
  cmd: Cmd;
  background: boolean;
  /** Source text of the command, for `ps`. */
  text: string;
}

/** Commands run one after another. */
export interface Seq {
  items: SeqItem[];
}
