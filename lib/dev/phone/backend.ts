/**
 * What a phone backend (simulator, ModemManager, Termux) provides to the
 * /phone tree, and a helper to run the external programs backends use.
 *
 * @module
 */

/** The phone backends a `--phone` spec or a manifest's phone export can name. */
export const PHONE_BACKENDS: readonly string[] = ["sim", "modemmanager", "termux"];

/**
 * The outcome of sending one SMS. `retry` means the message was not taken
 * (no modem at the moment): it stays queued and is tried again when the
 * backend reports the modem ready.
 */
export type SendResult = { ok: true } | { ok: false; reason: string; retry?: boolean };

/** What a backend reports about the modem. */
export interface BackendStatus {
  /** Modem name or state, e.g. "sim" or "registered". */
  modem: string;
  /** Network operator name, "" when unknown. */
  operator: string;
  /** Signal quality, e.g. "75" (percent), "" when unknown. */
  signal: string;
}

/** Something that happened on the phone, reported by the backend. */
export type BackendEvent =
  | { type: "sms"; number: string; text: string; time?: Date; key?: string }
  | { type: "ring"; number: string }
  | { type: "answered" }
  | { type: "hangup" }
  /** The modem went away (daemon stopped, device unplugged) or is usable again. */
  | { type: "modem"; state: "gone" | "ready" };

/** Where a backend sends what happens and what goes wrong in the background. */
export interface BackendSink {
  /** A call or message arrived, or the other end answered or hung up. */
  event(e: BackendEvent): void | Promise<void>;
  /** A background failure (polling a program that fails); Ferry keeps serving. */
  error(message: string): void;
}

/** A phone backend. Methods throw an Error whose message says what failed. */
export interface PhoneBackend {
  /** "sim", "modemmanager" or "termux". */
  readonly name: string;
  /**
   * False when the backend cannot follow calls (it hands a dialled call to
   * another program and never sees one ring); answer, hangup and mute then
   * go straight to the backend, which says what it cannot do.
   */
  readonly tracksCalls?: boolean;
  /** Start reporting events to `sink` (listening, polling). */
  start(sink: BackendSink): Promise<void>;
  /** Send one SMS; a refusal is a result, not an exception. */
  sendSms(number: string, text: string): Promise<SendResult>;
  /** Place a call. */
  dial(number: string): Promise<void>;
  /** Answer the ringing call. */
  answer(): Promise<void>;
  /** End the current call (ringing, dialing or active). */
  hangup(): Promise<void>;
  /** Mute (true) or unmute (false) the microphone. */
  mute(on: boolean): Promise<void>;
  /** Modem, operator and signal. */
  status(): Promise<BackendStatus>;
  /** Stop listening and polling. */
  close(): Promise<void>;
}

/** Options for {@link runProgram}. */
export interface RunOptions {
  /** Environment for the program (merged over Ferry's own); PATH decides which program runs. */
  env?: Record<string, string>;
  /** Text for standard input. */
  stdin?: string;
}

/** The result of {@link runProgram}. */
export interface RunResult {
  /** Exit status. */
  code: number;
  /** Standard output, decoded. */
  stdout: string;
  /** Standard error, decoded. */
  stderr: string;
}

/**
 * Run `program` with `args` and collect its output. A missing program is an
 * Error naming it; a nonzero exit is returned, not thrown (see
 * {@link runChecked}).
 *
 * @example
 * ```ts
 * import { runProgram } from "./backend.ts";
 * const r = await runProgram("true", []);
 * if (r.code !== 0) throw new Error();
 * ```
 */
export async function runProgram(
  program: string,
  args: string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  let child;
  try {
    child = new Deno.Command(program, {
      args,
      env: opts.env,
      stdin: opts.stdin !== undefined ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`cannot run '${program}': program not found`);
    }
    throw new Error(`cannot run '${program}': ${(e as Error).message}`);
  }
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin)).catch(() => {});
    await w.close().catch(() => {});
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/**
 * Like {@link runProgram} but a nonzero exit is an Error naming the program
 * and quoting the first line of what it printed.
 */
export async function runChecked(
  program: string,
  args: string[],
  opts: RunOptions = {},
): Promise<string> {
  const r = await runProgram(program, args, opts);
  if (r.code !== 0) {
    const said = (r.stderr.trim() || r.stdout.trim()).split("\n")[0] ?? "";
    throw new Error(`'${program}' failed (exit ${r.code})${said ? `: ${said}` : ""}`);
  }
  return r.stdout;
}

/**
 * Calls `poll` every `ms` milliseconds, never two at once; backends that
 * learn of new messages and calls by asking (mmcli, Termux:API) share it.
 */
export class Poller {
  #timer: ReturnType<typeof setInterval> | undefined;
  #running: Promise<void> | undefined;

  constructor(readonly poll: () => Promise<void>) {}

  /** Start polling (0 or less: never). */
  start(ms: number): void {
    if (ms <= 0 || this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      this.#running ??= this.poll().finally(() => (this.#running = undefined));
    }, ms);
  }

  /** Stop polling, after the poll under way (if any) ends. */
  async stop(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }
}
