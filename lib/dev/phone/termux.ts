/**
 * The Termux backend: Android phones through the Termux:API programs.
 *
 * ```
 * send     termux-sms-send -n NUMBER        (the text on standard input)
 * receive  termux-sms-list -t inbox -l LIMIT     (polled; JSON array)
 * dial     termux-telephony-call NUMBER
 * status   termux-telephony-deviceinfo           (JSON object)
 * ```
 *
 * Checked against the sources of termux-api-package (scripts/*.in) and
 * termux-api (app/src/main/java/com/termux/api/apis/*.java):
 *
 * - termux-sms-send.in passes text given as arguments through `echo "$@"`
 *   in /bin/sh, whose echo may expand backslashes ("\c" ends the text), and
 *   reads standard input when given none; SmsSendAPI.java reads that input
 *   as UTF-8 and trims it. So the text goes on standard input. `-n` takes
 *   comma-separated numbers (a number never has a comma here).
 * - SmsSendAPI.java hands the message to Android's SmsManager with no
 *   delivery callback, so "sent" means "given to Android"; a failure shows
 *   only as a nonzero exit (no permission, no such program).
 * - SmsInboxAPI.java writes each message as threadid, type, read, sender
 *   (contacts only), address, number (deprecated, same as address),
 *   received ("yyyy-MM-dd HH:mm:ss" in the phone's local time), body, _id;
 *   the list comes newest last. `-t inbox` selects type 1.
 * - TelephonyAPI.java's device info has phone_type, network_type,
 *   sim_state and network_operator_name as strings, and no signal level.
 *
 * Termux:API can place a call but cannot answer, end or mute one, nor see
 * incoming calls, so `answer`, `hangup` and `mute` are refused with an error
 * saying so, and a dialled call is handed to Android's dialer (the call state
 * in /phone/status stays idle).
 *
 * @module
 */

import {
  type BackendSink,
  type BackendStatus,
  type PhoneBackend,
  Poller,
  runChecked,
  runProgram,
  type SendResult,
} from "./backend.ts";

/** Options for {@link TermuxBackend}. */
export interface TermuxOptions {
  /** Environment for the Termux:API programs (PATH chooses which run). */
  env?: Record<string, string>;
  /** Milliseconds between polls of the inbox; 0 disables the timer (default 5000). */
  pollMs?: number;
  /** How many recent inbox messages each poll reads (default 50). */
  limit?: number;
}

/** One message as termux-sms-list prints it (SmsInboxAPI.java, writeElement). */
interface TermuxSms {
  _id?: number;
  threadid?: number;
  type?: string;
  read?: boolean;
  /** A contact's name, when the number is in the contacts. */
  sender?: string;
  /** The other party's number (or a name, for some service senders). */
  address?: string;
  /** Deprecated copy of address, kept by older and newer versions alike. */
  number?: string;
  /** "yyyy-MM-dd HH:mm:ss", the phone's local time. */
  received?: string;
  body?: string;
}

/**
 * A phone backend over Termux:API.
 *
 * @example
 * ```ts ignore
 * import { TermuxBackend } from "./termux.ts";
 * const t = new TermuxBackend();
 * await t.sendSms("6412345678", "hello");
 * ```
 */
export class TermuxBackend implements PhoneBackend {
  readonly name = "termux";
  /** Termux cannot follow a call once Android's dialer has it. */
  readonly tracksCalls = false;
  #sink: BackendSink | undefined;
  readonly #poller = new Poller(() => this.poll());
  #lastError = "";

  /** A backend running the Termux:API programs found on PATH. */
  constructor(readonly opts: TermuxOptions = {}) {}

  /** Start polling the inbox. */
  start(sink: BackendSink): Promise<void> {
    this.#sink = sink;
    this.#poller.start(this.opts.pollMs ?? 5000);
    return Promise.resolve();
  }

  /**
   * Read the inbox once and report every message to the sink (the phone's
   * store drops the ones it already has). Failures go to the sink's error.
   */
  async poll(): Promise<void> {
    const sink = this.#sink;
    if (!sink) return;
    try {
      const out = await runChecked(
        "termux-sms-list",
        ["-t", "inbox", "-l", String(this.opts.limit ?? 50)],
        { env: this.opts.env },
      );
      let list: unknown;
      try {
        list = JSON.parse(out);
      } catch {
        throw new Error(`termux-sms-list printed something that is not JSON: '${out.trim()}'`);
      }
      if (!Array.isArray(list)) throw new Error("termux-sms-list did not print a JSON array");
      // Oldest first, so ids in the store follow arrival order.
      const from = (m: TermuxSms) =>
        typeof m.address === "string" ? m.address : typeof m.number === "string" ? m.number : "";
      const msgs = (list as TermuxSms[]).filter((m) => from(m) !== "")
        .sort((a, b) => (a.received ?? "").localeCompare(b.received ?? ""));
      for (const m of msgs) {
        // Local time without a zone: Ferry runs on the phone, in its zone.
        const time = m.received ? new Date(m.received.replace(" ", "T")) : undefined;
        const key = m._id !== undefined
          ? `termux|${m._id}`
          : `termux|${from(m)}|${m.received}|${m.body}`;
        await sink.event({
          type: "sms",
          number: from(m),
          text: m.body ?? "",
          ...(time && !Number.isNaN(time.getTime()) ? { time } : {}),
          key,
        });
      }
      this.#lastError = "";
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.#lastError) sink.error(msg);
      this.#lastError = msg;
    }
  }

  /** Send with termux-sms-send, the text on standard input (see the module doc). */
  async sendSms(number: string, text: string): Promise<SendResult> {
    try {
      const r = await runProgram("termux-sms-send", ["-n", number], {
        env: this.opts.env,
        stdin: text,
      });
      if (r.code !== 0) {
        const said = (r.stderr.trim() || r.stdout.trim()).split("\n")[0] ?? "";
        return {
          ok: false,
          reason: `'termux-sms-send' failed (exit ${r.code})${said ? `: ${said}` : ""}`,
        };
      }
    } catch (e) {
      return { ok: false, reason: (e as Error).message };
    }
    return { ok: true };
  }

  /** Place a call with termux-telephony-call. */
  async dial(number: string): Promise<void> {
    await runChecked("termux-telephony-call", [number], { env: this.opts.env });
  }

  /** Refused: Termux:API cannot answer calls. */
  answer(): Promise<void> {
    return Promise.reject(new Error("Termux cannot answer calls; answer on the phone"));
  }

  /** Refused: Termux:API cannot end calls. */
  hangup(): Promise<void> {
    return Promise.reject(new Error("Termux cannot end calls; hang up on the phone"));
  }

  /** Refused: Termux:API cannot mute calls. */
  mute(_on: boolean): Promise<void> {
    return Promise.reject(new Error("Termux cannot mute calls"));
  }

  /** Phone and network type, operator name; signal is not reported. */
  async status(): Promise<BackendStatus> {
    const out = await runChecked("termux-telephony-deviceinfo", [], { env: this.opts.env });
    let info: Record<string, unknown>;
    try {
      info = JSON.parse(out);
    } catch {
      throw new Error(`termux-telephony-deviceinfo printed something that is not JSON`);
    }
    const s = (k: string) => (typeof info[k] === "string" ? info[k] as string : "");
    return {
      modem: [s("phone_type"), s("network_type"), s("sim_state")].filter((x) => x).join(" ") ||
        "unknown",
      operator: s("network_operator_name"),
      signal: "",
    };
  }

  /** Stop polling. */
  async close(): Promise<void> {
    await this.#poller.stop();
  }
}
