/**
 * The ModemManager backend: Linux phones and USB modems, through
 * ModemManager's D-Bus API on the system bus (with `npm:dbus-next`).
 *
 * Nothing is polled. ModemManager's signals drive it:
 *
 * ```
 * modem appears / goes   ObjectManager InterfacesAdded / InterfacesRemoved,
 *                        and the bus's NameOwnerChanged when the daemon stops;
 *                        it is ready once registered (Modem StateChanged)
 * SMS received           Modem.Messaging Added(path, received); a long
 *                        message still "receiving" is reported once its
 *                        State property becomes "received" (PropertiesChanged)
 * calls                  Modem.Voice CallAdded(path); Call StateChanged
 * send                   Messaging.Create({number, text}); Sms.Send(); Delete
 * dial                   Voice.CreateCall({number}); Call.Start()
 * answer / hangup        Call.Accept() / Call.Hangup()
 * status                 Modem State, Model, SignalQuality; Modem3gpp OperatorName
 * ```
 *
 * A modem found disabled is enabled (Modem.Enable(true)), as a phone's
 * session would. While no modem is there, sends report "modem unavailable"
 * with `retry`, so the phone keeps them queued until the modem is back.
 * ModemManager has no microphone mute (audio is routed elsewhere), so
 * `mute` is refused with an error saying so.
 *
 * The D-Bus client is loaded when the backend starts (it costs tens of
 * milliseconds), so commands that never use ModemManager do not pay for it.
 *
 * @module
 */

import type * as DBus from "dbus-next";
import type { BackendSink, BackendStatus, PhoneBackend, SendResult } from "./backend.ts";

const MM = "org.freedesktop.ModemManager1";
const MM_PATH = "/org/freedesktop/ModemManager1";
const I_MODEM = `${MM}.Modem`;
const I_MESSAGING = `${MM}.Modem.Messaging`;
const I_VOICE = `${MM}.Modem.Voice`;
const I_3GPP = `${MM}.Modem.Modem3gpp`;
const I_SMS = `${MM}.Sms`;
const I_CALL = `${MM}.Call`;
const I_PROPS = "org.freedesktop.DBus.Properties";
const I_OM = "org.freedesktop.DBus.ObjectManager";

/** MMSmsState values. */
const SMS_RECEIVING = 2;
const SMS_RECEIVED = 3;
/** MMSmsPduType: deliver (an incoming message). */
const PDU_DELIVER = 1;
/** MMCallState values. */
const CALL_RINGING_IN = 3;
const CALL_ACTIVE = 4;
const CALL_TERMINATED = 7;
/** How long an incoming call waits for the caller's number before ringing without it. */
const CLIP_WAIT_MS = 1000;
/** MMCallDirection: incoming. */
const DIR_INCOMING = 1;
/** MMModemState values (see ModemManager-enums.h). */
const MODEM_STATES: Record<number, string> = {
  [-1]: "failed",
  0: "unknown",
  1: "initializing",
  2: "locked",
  3: "disabled",
  4: "disabling",
  5: "enabling",
  6: "enabled",
  7: "searching",
  8: "registered",
  9: "disconnecting",
  10: "connecting",
  11: "connected",
};
const MODEM_DISABLED = 3;
/** From "registered" on (connecting, connected...), the modem can send and call. */
const MODEM_REGISTERED = 8;

/** Options for {@link ModemManagerBackend}. */
export interface ModemManagerOptions {
  /** Which modem: an index ("0"), a D-Bus object path, or "any" (default: the first). */
  modem?: string;
  /**
   * The system bus address (default $DBUS_SYSTEM_BUS_ADDRESS, else
   * "unix:path=/run/dbus/system_bus_socket").
   */
  busAddress?: string;
}

type Props = Record<string, unknown>;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A ModemManager error as a reason: its text and its short error name
 * ("Unknown (Message.Unknown)" for a network refusal ModemManager cannot
 * classify).
 */
function mmReason(e: unknown): string {
  if (e instanceof Error && typeof (e as DBus.DBusError).type === "string") {
    const { type, text } = e as DBus.DBusError;
    const name = type.replace(/^org\.freedesktop\.ModemManager1\.Error\./, "");
    return `${text} (${name})`;
  }
  return message(e);
}

/** A variant's value (dbus-next hands properties over as Variants). */
function val(v: unknown): unknown {
  return typeof v === "object" && v !== null && "signature" in v && "value" in v
    ? (v as DBus.Variant).value
    : v;
}

/** The call ModemManager is reporting, as the backend follows it. */
interface TrackedCall {
  path: string;
  incoming: boolean;
  state: number;
  number: string;
  /** Incoming: the ring was reported. */
  rang?: boolean;
  /** Incoming: reports the ring if the caller's number does not come. */
  ringTimer?: ReturnType<typeof setTimeout>;
}

/**
 * A phone backend that follows ModemManager over D-Bus.
 *
 * @example
 * ```ts ignore
 * import { ModemManagerBackend } from "./modemmanager.ts";
 * const mm = new ModemManagerBackend({ modem: "0" });
 * await mm.start({ event: (e) => console.log(e), error: console.error });
 * console.log(await mm.status());
 * await mm.close();
 * ```
 */
export class ModemManagerBackend implements PhoneBackend {
  readonly name = "modemmanager";
  #bus: DBus.MessageBus | undefined;
  /** The D-Bus client module, loaded by start(). */
  #dbus: typeof DBus | undefined;
  #sink: BackendSink | undefined;
  /** The modem in use, undefined while there is none. */
  #modem: string | undefined;
  /** True while the modem is registered and so can send and call. */
  #usable = false;
  #call: TrackedCall | undefined;
  /** SMS objects already handled (reported, or sent by us). */
  #seen = new Set<string>();
  /** SMS objects still receiving parts: reported once complete. */
  #receiving = new Set<string>();
  #closed = false;
  /** Signal handling under way; each waits for the one before. */
  #signals: Promise<void> = Promise.resolve();

  /** A backend for the modem `opts.modem` (default "any"). */
  constructor(readonly opts: ModemManagerOptions = {}) {}

  get #address(): string {
    return this.opts.busAddress ?? Deno.env.get("DBUS_SYSTEM_BUS_ADDRESS") ??
      "unix:path=/run/dbus/system_bus_socket";
  }

  async #call_(
    dest: string,
    path: string,
    iface: string,
    member: string,
    signature = "",
    body: unknown[] = [],
  ): Promise<unknown[]> {
    const bus = this.#bus;
    const dbus = this.#dbus;
    if (!bus || !dbus) throw new Error("not connected to the system bus");
    const reply = await bus.call(
      new dbus.Message({ destination: dest, path, interface: iface, member, signature, body }),
    );
    return reply?.body ?? [];
  }

  #variant(s: string): DBus.Variant {
    return new this.#dbus!.Variant("s", s);
  }

  #mm(path: string, iface: string, member: string, signature = "", body: unknown[] = []) {
    return this.#call_(MM, path, iface, member, signature, body);
  }

  async #props(path: string, iface: string): Promise<Props> {
    const [all] = await this.#mm(path, I_PROPS, "GetAll", "s", [iface]);
    const out: Props = {};
    for (const [k, v] of Object.entries((all ?? {}) as Props)) out[k] = val(v);
    return out;
  }

  /**
   * Connect to the system bus and follow ModemManager. A daemon or modem
   * that is not there yet is waited for, not an error.
   */
  async start(sink: BackendSink): Promise<void> {
    this.#sink = sink;
    const dbus = (await import("dbus-next")).default as unknown as typeof DBus;
    this.#dbus = dbus;
    const bus = dbus.sessionBus({ busAddress: this.#address });
    this.#bus = bus;
    await new Promise<void>((resolve, reject) => {
      bus.once("connect", () => resolve());
      bus.once(
        "error",
        (e: unknown) =>
          reject(new Error(`Cannot reach the system bus at '${this.#address}': ${message(e)}`)),
      );
    });
    bus.on("error", (e: unknown) => {
      if (!this.#closed) sink.error(`system bus: ${message(e)}`);
    });
    bus.on("message", (m: DBus.Message) => {
      if (m.type === dbus.MessageType.SIGNAL) this.#signal(m);
    });
    for (
      const rule of [
        `type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='${MM}'`,
        `type='signal',sender='${MM}',interface='${I_OM}'`,
        `type='signal',sender='${MM}',interface='${I_MODEM}',member='StateChanged'`,
        `type='signal',sender='${MM}',interface='${I_MESSAGING}'`,
        `type='signal',sender='${MM}',interface='${I_VOICE}'`,
        `type='signal',sender='${MM}',interface='${I_CALL}'`,
        `type='signal',sender='${MM}',interface='${I_PROPS}',member='PropertiesChanged'`,
      ]
    ) {
      await this.#call_(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "AddMatch",
        "s",
        [rule],
      );
    }
    await this.#scan();
  }

  /** Find a modem among ModemManager's objects (none: wait for one). */
  async #scan(): Promise<void> {
    let objects: Record<string, Props>;
    try {
      const [o] = await this.#mm(MM_PATH, I_OM, "GetManagedObjects");
      objects = (o ?? {}) as Record<string, Props>;
    } catch {
      return; // ModemManager is not running: NameOwnerChanged tells when it is
    }
    for (const [path, ifaces] of Object.entries(objects)) {
      if (I_MODEM in ifaces && this.#wanted(path)) {
        await this.#attach(path);
        return;
      }
    }
  }

  #wanted(path: string): boolean {
    const want = this.opts.modem ?? "any";
    if (want === "any") return true;
    if (want.startsWith("/")) return path === want;
    return path === `${MM_PATH}/Modem/${want}`;
  }

  /**
   * Take `path` as the modem: enable it if needed, and report it ready once
   * it is registered on a network (Modem StateChanged says when).
   */
  async #attach(path: string): Promise<void> {
    if (this.#modem === path || this.#closed) return;
    this.#modem = path;
    let state = 0;
    try {
      state = Number((await this.#props(path, I_MODEM)).State);
      if (state === MODEM_DISABLED) await this.#mm(path, I_MODEM, "Enable", "b", [true]);
    } catch (e) {
      this.#sink?.error(`cannot enable modem '${path}': ${message(e)}`);
    }
    await this.#modemState(state);
  }

  /** Follow the modem's state: ready from "registered" on, gone below it. */
  async #modemState(state: number): Promise<void> {
    const usable = state >= MODEM_REGISTERED;
    if (usable === this.#usable) return;
    this.#usable = usable;
    await this.#sink?.event({ type: "modem", state: usable ? "ready" : "gone" });
    if (!usable || !this.#modem) return;
    // Messages that came while nobody was listening (the store drops duplicates).
    try {
      const [list] = await this.#mm(this.#modem, I_MESSAGING, "List");
      for (const sms of (list ?? []) as string[]) await this.#sms(sms);
    } catch (e) {
      this.#sink?.error(`cannot list messages: ${message(e)}`);
    }
  }

  async #detach(): Promise<void> {
    if (this.#modem === undefined) return;
    this.#modem = undefined;
    this.#receiving.clear();
    this.#seen.clear();
    if (this.#call) {
      clearTimeout(this.#call.ringTimer);
      const rang = !this.#call.incoming || this.#call.rang;
      this.#call = undefined;
      if (rang) await this.#sink?.event({ type: "hangup" });
    }
    await this.#modemState(0);
  }

  #signal(m: DBus.Message): void {
    const run = async () => {
      const body = m.body ?? [];
      switch (`${m.interface}.${m.member}`) {
        case "org.freedesktop.DBus.NameOwnerChanged":
          if (body[0] === MM && body[2] === "") await this.#detach();
          if (body[0] === MM && body[2] !== "") await this.#scan();
          return;
        case `${I_OM}.InterfacesAdded`:
          if (!this.#modem && I_MODEM in (body[1] as Props) && this.#wanted(body[0] as string)) {
            await this.#attach(body[0] as string);
          }
          return;
        case `${I_OM}.InterfacesRemoved`:
          if (body[0] === this.#modem && (body[1] as string[]).includes(I_MODEM)) {
            await this.#detach();
          }
          return;
        case `${I_MODEM}.StateChanged`:
          if (m.path === this.#modem) await this.#modemState(body[1] as number);
          return;
        case `${I_MESSAGING}.Added`:
          // Also those loaded from the modem's storage (received=false): they
          // may have come while ModemManager was down. The store drops duplicates.
          if (m.path === this.#modem) await this.#sms(body[0] as string);
          return;
        case `${I_VOICE}.CallAdded`:
          if (m.path === this.#modem) await this.#callAdded(body[0] as string);
          return;
        case `${I_CALL}.StateChanged`:
          if (m.path === this.#call?.path) await this.#callState(body[1] as number);
          return;
        case `${I_PROPS}.PropertiesChanged`:
          if (body[0] === I_CALL && m.path === this.#call?.path) {
            const number = val((body[1] as Props).Number);
            if (typeof number === "string" && number !== "") {
              this.#call.number = number;
              if (this.#call.incoming) await this.#ring(this.#call);
            }
          }
          if (body[0] === I_SMS && this.#receiving.has(m.path)) {
            const state = val((body[1] as Props).State);
            if (state === SMS_RECEIVED) await this.#sms(m.path);
          }
          return;
      }
    };
    // Signals are handled one at a time, in the order they came.
    this.#signals = this.#signals.then(run).catch((e) => {
      if (!this.#closed) this.#sink?.error(message(e));
    });
  }

  /** Report a received SMS once all its parts are in. */
  async #sms(path: string): Promise<void> {
    if (this.#seen.has(path)) return;
    const p = await this.#props(path, I_SMS);
    if (p.State === SMS_RECEIVING) {
      this.#receiving.add(path); // PropertiesChanged says when the last part is in
      return;
    }
    this.#receiving.delete(path);
    if (p.State !== SMS_RECEIVED || (p.PduType !== PDU_DELIVER && p.PduType !== 0)) {
      this.#seen.add(path);
      return;
    }
    const number = String(p.Number ?? "");
    const text = String(p.Text ?? "");
    const stamp = String(p.Timestamp ?? "");
    const time = parseMmTime(stamp);
    await this.#sink?.event({
      type: "sms",
      number,
      text,
      ...(time ? { time } : {}),
      key: `mm|${number}|${stamp}|${text}`,
    });
    this.#seen.add(path); // only once it is safely stored
  }

  async #callAdded(path: string): Promise<void> {
    const p = await this.#props(path, I_CALL);
    const incoming = p.Direction === DIR_INCOMING;
    const state = Number(p.State);
    if (this.#call || state === CALL_TERMINATED) return;
    if (incoming && state !== CALL_RINGING_IN) return; // a waiting call while busy
    const call: TrackedCall = { path, incoming, state, number: String(p.Number ?? "") };
    this.#call = call;
    if (!incoming) return;
    if (call.number !== "") return await this.#ring(call);
    // ModemManager makes the call on RING and learns the number from +CLIP
    // just after (a Number PropertiesChanged); a withheld number never comes.
    call.ringTimer = setTimeout(() => {
      this.#signals = this.#signals.then(() => this.#ring(call)).catch(() => {});
    }, CLIP_WAIT_MS);
  }

  /** Report a ring not yet reported (the call ended before its number came). */
  async #ringNow(call: TrackedCall): Promise<void> {
    clearTimeout(call.ringTimer);
    call.rang = true;
    await this.#sink?.event({ type: "ring", number: call.number });
  }

  async #ring(call: TrackedCall): Promise<void> {
    clearTimeout(call.ringTimer);
    if (call.rang || this.#call !== call) return;
    call.rang = true;
    await this.#sink?.event({ type: "ring", number: call.number });
  }

  async #callState(state: number): Promise<void> {
    const c = this.#call;
    if (!c) return;
    const was = c.state;
    c.state = state;
    if (state === CALL_TERMINATED) {
      this.#call = undefined;
      if (c.incoming && !c.rang) await this.#ringNow(c);
      await this.#sink?.event({ type: "hangup" });
    } else if (!c.incoming && state === CALL_ACTIVE && was !== CALL_ACTIVE) {
      await this.#sink?.event({ type: "answered" });
    }
  }

  #needModem(): string {
    if (!this.#modem) throw new Error("ModemManager reports no modem");
    return this.#modem;
  }

  #needUsable(): string {
    const modem = this.#needModem();
    if (!this.#usable) throw new Error("the modem is not registered on a network");
    return modem;
  }

  /** Create the message on the modem and send it. */
  async sendSms(number: string, text: string): Promise<SendResult> {
    const modem = this.#modem;
    if (!modem || !this.#usable) return { ok: false, reason: "modem unavailable", retry: true };
    let path: string;
    try {
      const [p] = await this.#mm(modem, I_MESSAGING, "Create", "a{sv}", [{
        number: this.#variant(number),
        text: this.#variant(text),
      }]);
      path = p as string;
    } catch (e) {
      return this.#modem === modem && this.#usable
        ? { ok: false, reason: mmReason(e) }
        : { ok: false, reason: "modem unavailable", retry: true };
    }
    this.#seen.add(path);
    let result: SendResult = { ok: true };
    try {
      await this.#mm(path, I_SMS, "Send");
    } catch (e) {
      // The daemon or the modem went away mid-send: the modem may not have
      // it, so keep it queued; a refusal from a present modem is final.
      result = this.#modem === modem && this.#usable
        ? { ok: false, reason: mmReason(e) }
        : { ok: false, reason: "modem unavailable", retry: true };
    }
    // Ferry's store keeps the message; the modem's copy is not needed.
    await this.#mm(modem, I_MESSAGING, "Delete", "o", [path]).catch(() => {});
    return result;
  }

  /** Create an outgoing call and start it. */
  async dial(number: string): Promise<void> {
    const modem = this.#needUsable();
    const [path] = await this.#mm(modem, I_VOICE, "CreateCall", "a{sv}", [{
      number: this.#variant(number),
    }]);
    const call = { path: path as string, incoming: false, state: 0, number };
    this.#call = call;
    try {
      await this.#mm(call.path, I_CALL, "Start");
    } catch (e) {
      this.#call = undefined;
      await this.#mm(modem, I_VOICE, "DeleteCall", "o", [call.path]).catch(() => {});
      throw e;
    }
  }

  /** Accept the ringing call. */
  async answer(): Promise<void> {
    const c = this.#call;
    if (!c || !c.incoming) throw new Error("no incoming call known to ModemManager");
    await this.#mm(c.path, I_CALL, "Accept");
    c.state = CALL_ACTIVE;
  }

  /** Hang up the tracked call. */
  async hangup(): Promise<void> {
    const c = this.#call;
    if (!c) throw new Error("no call known to ModemManager");
    this.#call = undefined;
    await this.#mm(c.path, I_CALL, "Hangup");
  }

  /** Refused: ModemManager does not handle call audio. */
  mute(_on: boolean): Promise<void> {
    return Promise.reject(
      new Error("ModemManager cannot mute calls; mute the microphone in the audio mixer"),
    );
  }

  /** Modem state and model, operator name and signal quality. */
  async status(): Promise<BackendStatus> {
    const modem = this.#needModem();
    const m = await this.#props(modem, I_MODEM);
    const g = await this.#props(modem, I_3GPP).catch(() => ({} as Props));
    const state = MODEM_STATES[Number(m.State)] ?? "unknown";
    const model = typeof m.Model === "string" ? m.Model : "";
    const q = Array.isArray(m.SignalQuality) ? m.SignalQuality[0] : undefined;
    return {
      modem: [state, model ? `(${model})` : ""].filter((s) => s).join(" "),
      operator: typeof g.OperatorName === "string" ? g.OperatorName : "",
      signal: q === undefined ? "" : String(q),
    };
  }

  /** Stop following ModemManager and leave the bus. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#call?.ringTimer);
    await this.#signals.catch(() => {});
    this.#bus?.disconnect();
    this.#bus = undefined;
  }
}

/**
 * Parse a ModemManager timestamp such as "2025-08-21T17:20:16-05" (an
 * hours-only offset, which Date.parse refuses) or a full ISO time.
 */
export function parseMmTime(s: string): Date | undefined {
  if (!s) return undefined;
  const fixed = s.replace(/([+-]\d\d)$/, "$1:00");
  const t = Date.parse(fixed);
  return Number.isNaN(t) ? undefined : new Date(t);
}
