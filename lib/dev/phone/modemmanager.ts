/**
 * The ModemManager backend: Linux phones and USB modems through `mmcli`.
 *
 * Commands run (the modem is chosen with `-m`, "any" by default; output is
 * read in mmcli's JSON form, `-J`):
 *
 * ```
 * send     mmcli -m any --messaging-create-sms=text='…',number='…'
 *          mmcli -s N --send
 * receive  mmcli -m any --messaging-list-sms -J ; mmcli -s N -J   (polled)
 * calls    mmcli -m any --voice-list-calls -J ; mmcli -o N -J     (polled)
 * dial     mmcli -m any --voice-create-call=number=… ; mmcli -o N --start
 * answer   mmcli -o N --accept          hangup  mmcli -o N --hangup
 * status   mmcli -m any -J
 * ```
 *
 * ModemManager has no microphone mute (audio is routed elsewhere), so
 * `mute` is refused with an error saying so.
 *
 * @module
 */

import {
  type BackendSink,
  type BackendStatus,
  type PhoneBackend,
  Poller,
  runChecked,
  type SendResult,
} from "./backend.ts";

/** Options for {@link ModemManagerBackend}. */
export interface ModemManagerOptions {
  /** Which modem: an index, a D-Bus path or "any" (default). */
  modem?: string;
  /** The mmcli program (default "mmcli", found on PATH). */
  program?: string;
  /** Environment for mmcli (PATH chooses which mmcli runs). */
  env?: Record<string, string>;
  /** Milliseconds between polls for new messages and calls; 0 disables the timer (default 3000). */
  pollMs?: number;
}

type Json = Record<string, unknown>;

function get(obj: unknown, ...keys: string[]): unknown {
  let o = obj;
  for (const k of keys) {
    if (typeof o !== "object" || o === null) return undefined;
    o = (o as Json)[k];
  }
  return o;
}

function str(v: unknown): string {
  return typeof v === "string" && v !== "--" ? v : "";
}

/** The last path element of a ModemManager object path: "/…/SMS/3" → "3". */
function index(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/**
 * A phone backend that drives ModemManager through mmcli.
 *
 * @example
 * ```ts ignore
 * import { ModemManagerBackend } from "./modemmanager.ts";
 * const mm = new ModemManagerBackend({ modem: "0" });
 * console.log(await mm.status());
 * ```
 */
export class ModemManagerBackend implements PhoneBackend {
  readonly name = "modemmanager";
  #sink: BackendSink | undefined;
  readonly #poller = new Poller(() => this.poll());
  #seenSms = new Set<string>();
  /** The call being tracked: its mmcli index, direction and last state. */
  #call: { id: string; incoming: boolean; state: string } | undefined;
  #lastError = "";

  /** A backend for the modem `opts.modem` (default "any"). */
  constructor(readonly opts: ModemManagerOptions = {}) {}

  #mmcli(args: string[]): Promise<string> {
    return runChecked(this.opts.program ?? "mmcli", args, { env: this.opts.env });
  }

  async #json(args: string[]): Promise<unknown> {
    const out = await this.#mmcli([...args, "-J"]);
    try {
      return JSON.parse(out);
    } catch {
      throw new Error(`mmcli ${args.join(" ")} printed something that is not JSON: '${out}'`);
    }
  }

  get #modem(): string[] {
    return ["-m", this.opts.modem ?? "any"];
  }

  /** Start polling for new messages and calls. */
  start(sink: BackendSink): Promise<void> {
    this.#sink = sink;
    this.#poller.start(this.opts.pollMs ?? 3000);
    return Promise.resolve();
  }

  /**
   * Look once for new messages and for changes in calls, reporting them
   * to the sink. Failures go to the sink's error (each distinct one once).
   */
  async poll(): Promise<void> {
    const sink = this.#sink;
    if (!sink) return;
    try {
      await this.#pollSms(sink);
      await this.#pollCalls(sink);
      this.#lastError = "";
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.#lastError) sink.error(msg);
      this.#lastError = msg;
    }
  }

  async #pollSms(sink: BackendSink): Promise<void> {
    const list = get(
      await this.#json([...this.#modem, "--messaging-list-sms"]),
      "modem.messaging.sms",
    );
    const paths = Array.isArray(list) ? list.filter((p): p is string => typeof p === "string") : [];
    for (const path of paths) {
      if (this.#seenSms.has(path)) continue;
      const sms = get(await this.#json(["-s", index(path)]), "sms");
      const state = str(get(sms, "properties", "state"));
      const pdu = str(get(sms, "properties", "pdu-type"));
      if (state === "receiving") continue; // parts still arriving: look again next time
      if (state !== "received" || (pdu !== "" && pdu !== "deliver")) {
        this.#seenSms.add(path);
        continue;
      }
      const number = str(get(sms, "content", "number"));
      const text = str(get(sms, "content", "text"));
      const stamp = str(get(sms, "properties", "timestamp"));
      const time = parseMmTime(stamp);
      await sink.event({
        type: "sms",
        number,
        text,
        ...(time ? { time } : {}),
        key: `mm|${number}|${stamp}|${text}`,
      });
      this.#seenSms.add(path); // only once it is safely stored
    }
  }

  async #pollCalls(sink: BackendSink): Promise<void> {
    const list = get(await this.#json([...this.#modem, "--voice-list-calls"]), "modem.voice.call");
    const paths = Array.isArray(list) ? list.filter((p): p is string => typeof p === "string") : [];
    const calls = [];
    for (const path of paths) {
      const call = get(await this.#json(["-o", index(path)]), "call");
      calls.push({
        id: index(path),
        number: str(get(call, "properties", "number")),
        incoming: str(get(call, "properties", "direction")) === "incoming",
        state: str(get(call, "properties", "state")),
      });
    }
    const cur = this.#call;
    if (cur) {
      const now = calls.find((c) => c.id === cur.id);
      if (!now || now.state === "terminated") {
        this.#call = undefined;
        await sink.event({ type: "hangup" });
        return;
      }
      if (!cur.incoming && cur.state !== "active" && now.state === "active") {
        await sink.event({ type: "answered" });
      }
      cur.state = now.state;
      return;
    }
    const ringing = calls.find((c) => c.incoming && c.state === "ringing-in");
    if (ringing) {
      this.#call = { id: ringing.id, incoming: true, state: ringing.state };
      await sink.event({ type: "ring", number: ringing.number });
    }
  }

  /** Create the message on the modem and send it. */
  async sendSms(number: string, text: string): Promise<SendResult> {
    const q = !text.includes("'") ? "'" : !text.includes('"') ? '"' : undefined;
    if (!q) return { ok: false, reason: "mmcli cannot send a text with both ' and \" in it" };
    let path: string;
    try {
      const out = await this.#mmcli([
        ...this.#modem,
        `--messaging-create-sms=text=${q}${text}${q},number='${number}'`,
      ]);
      const m = out.match(/\/org\/freedesktop\/ModemManager1\/SMS\/\d+/);
      if (!m) return { ok: false, reason: `mmcli did not report the new SMS: '${out.trim()}'` };
      path = m[0];
      this.#seenSms.add(path);
      await this.#mmcli(["-s", index(path), "--send"]);
    } catch (e) {
      return { ok: false, reason: (e as Error).message };
    }
    return { ok: true };
  }

  /** Create an outgoing call and start it. */
  async dial(number: string): Promise<void> {
    const out = await this.#mmcli([...this.#modem, `--voice-create-call=number=${number}`]);
    const m = out.match(/\/org\/freedesktop\/ModemManager1\/Call\/\d+/);
    if (!m) throw new Error(`mmcli did not report the new call: '${out.trim()}'`);
    const id = index(m[0]);
    await this.#mmcli(["-o", id, "--start"]);
    this.#call = { id, incoming: false, state: "dialing" };
  }

  /** Accept the ringing call. */
  async answer(): Promise<void> {
    const c = this.#call;
    if (!c || !c.incoming) throw new Error("no incoming call known to ModemManager");
    await this.#mmcli(["-o", c.id, "--accept"]);
    c.state = "active";
  }

  /** Hang up the tracked call. */
  async hangup(): Promise<void> {
    const c = this.#call;
    if (!c) throw new Error("no call known to ModemManager");
    await this.#mmcli(["-o", c.id, "--hangup"]);
    this.#call = undefined;
  }

  /** Refused: ModemManager does not handle call audio. */
  mute(_on: boolean): Promise<void> {
    return Promise.reject(
      new Error("ModemManager cannot mute calls; mute the microphone in the audio mixer"),
    );
  }

  /** Modem state and model, operator name and signal quality. */
  async status(): Promise<BackendStatus> {
    const m = get(await this.#json([...this.#modem]), "modem");
    const state = str(get(m, "generic", "state"));
    const model = str(get(m, "generic", "model"));
    return {
      modem: [state || "unknown", model ? `(${model})` : ""].filter((s) => s).join(" "),
      operator: str(get(m, "3gpp", "operator-name")),
      signal: str(get(m, "generic", "signal-quality", "value")),
    };
  }

  /** Stop polling. */
  async close(): Promise<void> {
    await this.#poller.stop();
  }
}

/**
 * Parse an mmcli timestamp such as "2025-08-21T17:20:16-05" (an hours-only
 * offset, which Date.parse refuses) or a full ISO time.
 */
export function parseMmTime(s: string): Date | undefined {
  if (!s) return undefined;
  const fixed = s.replace(/([+-]\d\d)$/, "$1:00");
  const t = Date.parse(fixed);
  return Number.isNaN(t) ? undefined : new Date(t);
}
