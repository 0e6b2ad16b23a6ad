/**
 * Small helpers shared by the subcommands: argument parsing with clear
 * errors and a uniform --help.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** Options for {@link parse}. */
export interface CliSpec {
  /** e.g. "ferry listen [-A] ADDR DIR" */
  usage: string;
  /** One paragraph on what the command does. */
  about: string;
  /** node:util parseArgs option table; "help" is added automatically. */
  options?: NonNullable<ParseArgsConfig["options"]>;
  /** Text listing the options, printed under --help. */
  optionsHelp?: string;
}

/** Thrown for a bad command line; the message is printed with the usage. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Parsed command line: option values and positional arguments. */
export interface Parsed {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
  /** True when --help was given (help text already printed). */
  help: boolean;
}

/** The full help text of a command. */
export function helpText(spec: CliSpec): string {
  return `usage: ${spec.usage}\n\n${spec.about}${
    spec.optionsHelp ? `\n\noptions:\n${spec.optionsHelp}` : ""
  }`;
}

/**
 * Parse `args` against `spec`. Prints help and returns `help: true` for
 * --help; throws {@link UsageError} naming the bad option otherwise.
 */
export function parse(spec: CliSpec, args: string[]): Parsed {
  let res;
  try {
    res = parseArgs({
      args,
      options: { help: { type: "boolean", short: "h" }, ...(spec.options ?? {}) },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\nusage: ${spec.usage}`);
  }
  if (res.values.help) {
    console.log(helpText(spec));
    return { values: res.values, positionals: res.positionals, help: true };
  }
  return { values: res.values, positionals: res.positionals, help: false };
}

/** Print an error for command `cmd` the way Ferry does and return exit status 1. */
export function fail(cmd: string, e: unknown): number {
  const msg = e instanceof Error ? e.message : String(e);
  console.error(`${cmd}: ${msg}`);
  return 1;
}

/** The one warning printed whenever -A is used. */
export function warnInsecure(cmd: string): void {
  console.error(
    `${cmd}: warning: -A given: this session is neither authenticated nor encrypted`,
  );
}
