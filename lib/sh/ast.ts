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
  /** Line, from 1. */
  line: number;
  /** Column, from 1. */
  column: number;
}

/** A literal piece of text, quoted ('...') or not. */
export interface LitWord {
  /** Discriminant. */
  kind: "lit";
  /** The text, quotes removed. */
  value: string;
  /** True for '...' text: never a pattern, never special. */
  quoted: boolean;
  /** Where it starts. */
  pos: Pos;
}

/** `$name`, `$#name` (count) or `$"name` (joined with spaces). */
export interface VarWord {
  /** Discriminant. */
  kind: "var";
  /** The word naming the variable (itself possibly a variable: `$$x`). */
  name: Word;
  /** `$x`, `$#x` or `$"x`. */
  mode: "value" | "count" | "join";
  /** Where the `$` is. */
  pos: Pos;
}

/** A braced block `{ ... }`; as an argument its value is its text. */
export interface BlockWord {
  /** Discriminant. */
  kind: "block";
  /** The commands inside. */
  body: Seq;
  /** The block's source text, braces included. */
  text: string;
  /** Where the `{` is. */
  pos: Pos;
}

/** `( a b c )`: a list made of the members of each element. */
export interface ListWord {
  /** Discriminant. */
  kind: "list";
  /** The elements. */
  items: Word[];
  /** Where the `(` is. */
  pos: Pos;
}

/** `a^b`, written or implied by adjacency (free carets). */
export interface ConcatWord {
  /** Discriminant. */
  kind: "concat";
  /** The left operand. */
  left: Word;
  /** The right operand. */
  right: Word;
  /** Where the left operand starts. */
  pos: Pos;
}

/** `` `{cmd} `` (split on $ifs) or `"{cmd}` (one string). */
export interface SubstWord {
  /** Discriminant. */
  kind: "subst";
  /** The command whose output is taken. */
  body: Seq;
  /** True for `` `{} ``: split on $ifs. */
  split: boolean;
  /** Where it starts. */
  pos: Pos;
}

/** Anything that stands where an argument is expected. */
export type Word = LitWord | VarWord | BlockWord | ListWord | ConcatWord | SubstWord;

/** An I/O redirection: `<`, `>`, `>>`, `<>`, optionally with `[fd]` or `[fd=fd]`. */
export interface Redir {
  /** The operator. */
  op: "<" | ">" | ">>" | "<>";
  /** The file descriptor redirected (0 for input, 1 for output by default). */
  fd: number;
  /** For `>[fd0=fd1]`: the descriptor copied; no target then. */
  dupFrom?: number;
  /** The file name, for redirections to a file. */
  target?: Word;
  /** Where the operator is. */
  pos: Pos;
}

/** A command with its arguments and redirections. */
export interface SimpleCmd {
  /** Discriminant. */
  kind: "simple";
  /** The command name and arguments. */
  words: Word[];
  /** Redirections, applied left to right. */
  redirs: Redir[];
  /** Where the command starts. */
  pos: Pos;
}

/** `name=value...`, `name:=value...` or `(a b)=value...`. */
export interface AssignCmd {
  /** Discriminant. */
  kind: "assign";
  /** The variables assigned. */
  names: Word[];
  /** The value. */
  value: Word[];
  /** True for `:=` (innermost scope). */
  local: boolean;
  /** Where the assignment starts. */
  pos: Pos;
}

/** `a | b | c`. */
export interface PipeCmd {
  /** Discriminant. */
  kind: "pipe";
  /** The commands, left to right. */
  cmds: Cmd[];
  /** Where the first command starts. */
  pos: Pos;
}

/** `a && b` or `a || b`. */
export interface LogicCmd {
  /** Discriminant. */
  kind: "and" | "or";
  /** Runs first. */
  left: Cmd;
  /** Runs when the left one succeeded (`&&`) or failed (`||`). */
  right: Cmd;
  /** Where the operator is. */
  pos: Pos;
}

/** Any command. */
export type Cmd = SimpleCmd | AssignCmd | PipeCmd | LogicCmd;

/** One command in a sequence; `background` when followed by `&`. */
export interface SeqItem {
  /** The command. */
  cmd: Cmd;
  /** True when followed by `&`. */
  background: boolean;
  /** Source text of the command, for `ps`. */
  text: string;
}

/** Commands run one after another. */
export interface Seq {
  /** The commands in order. */
  items: SeqItem[];
}
