/**
 * Small helpers shared by the subcommands: argument parsing with clear
 * errors and a uniform --help.
 *
 * @module
 */

/** One option of a command line. */
export interface OptionSpec {
  /** A string option takes a value (`--peer NAME`, `--peer=NAME`, `-pNAME`); a boolean none. */
  type: "string" | "boolean";
  /** A one-letter alias (`-u` for `--user`). */
  short?: string;
  /** Given more than once, every value is kept, in order. */
  multiple?: boolean;
}

/** Options for {@link parse}. */
export interface CliSpec {
  /** e.g. "ferry listen [-A] ADDR DIR" */
  usage: string;
  /** One paragraph on what the command does. */
  about: string;
  /** The option table, by long name; "help" (`-h`) is added automatically. */
  options?: Record<string, OptionSpec>;
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
    res = parseOptions(args, { help: { type: "boolean", short: "h" }, ...(spec.options ?? {}) });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\nusage: ${spec.usage}`);
  }
  if (res.values.help) {
    console.log(helpText(spec));
    return { ...res, help: true };
  }
  return { ...res, help: false };
}

/**
 * Split `args` into option values and positionals, the way POSIX and GNU
 * tools do: `--name value`, `--name=value`, `-n value`, `-nvalue`, grouped
 * booleans (`-Aq`), and `--` ending the options. Written here rather than
 * taken from node:util, whose loading costs a one-shot command milliseconds.
 */
function parseOptions(
  args: readonly string[],
  options: Record<string, OptionSpec>,
): Omit<Parsed, "help"> {
  const values: Parsed["values"] = {};
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  // A one-letter name is its own short form ('-A' for option 'A').
  for (const name of Object.keys(options)) if (name.length === 1) byShort.set(name, name);
  for (const [name, o] of Object.entries(options)) if (o.short) byShort.set(o.short, name);
  const shown = (name: string) => {
    const s = options[name]?.short ?? (name.length === 1 ? name : undefined);
    return s === name ? `-${s}` : s ? `-${s}, --${name}` : `--${name}`;
  };
  const set = (name: string, v: string | boolean) => {
    if (!options[name]!.multiple) values[name] = v;
    else ((values[name] ??= []) as (string | boolean)[]).push(v);
  };
  // A string option's value: inline, else the next argument (which must
  // not look like an option: '--peer --help' is more likely a slip).
  const valueOf = (name: string, inline: string | undefined, i: number): [string, number] => {
    if (inline !== undefined) return [inline, i];
    const next = args[i + 1];
    if (next === undefined) throw new Error(`Option '${shown(name)} <value>' argument missing`);
    if (next.startsWith("-") && next !== "-") {
      throw new Error(
        `Option '${shown(name)} <value>' argument is ambiguous: '${next}' looks like an option; ` +
          `to give a value starting with a dash, use '--${name}=${next}'`,
      );
    }
    return [next, i + 1];
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const o = Object.hasOwn(options, name) ? options[name]! : undefined;
      if (!o) throw new Error(`Unknown option '--${name}'`);
      if (o.type === "boolean") {
        if (eq >= 0) throw new Error(`Option '${shown(name)}' does not take an argument`);
        set(name, true);
      } else {
        const [v, at] = valueOf(name, eq < 0 ? undefined : a.slice(eq + 1), i);
        set(name, v);
        i = at;
      }
      continue;
    }
    if (a.startsWith("-") && a !== "-") {
      for (let k = 1; k < a.length; k++) {
        const name = byShort.get(a[k]!);
        if (name === undefined) {
          throw new Error(
            `Unknown option '-${a[k]}'` + (k > 1 ? ` in '${a}'` : "") +
              `: to give an argument starting with a dash, put it after '--'`,
          );
        }
        if (options[name]!.type === "boolean") {
          set(name, true);
          continue;
        }
        const [v, at] = valueOf(name, k + 1 < a.length ? a.slice(k + 1) : undefined, i);
        set(name, v);
        i = at;
        break;
      }
      continue;
    }
    positionals.push(a);
  }
  return { values, positionals };
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
