/**
 * The /phone device: a file tree for sending and reading SMS and for seeing,
 * placing and answering calls, over any {@link PhoneBackend}.
 *
 * ```
 * /phone/sms      write "send NUMBER 'text'" (or "send NUMBER words..."), or "resend ID"
 *                 for a message that failed; read the
 *                 message list, one per line, newest last:
 *                 ID TIME in|out NUMBER STATUS SEGMENTS 'TEXT'
 *                 (STATUS: queued, sent, 'failed: REASON', received; fields quoted
 *                 as the shell quotes; a newline in a text is shown as \n)
 * /phone/conv/    one file per number that has messages: reading NUMBER gives
 *                 the /phone/sms lines of that conversation only; writing
 *                 "send 'text'" to it sends to NUMBER. (/phone/sms stays a
 *                 file, so "echo send ... >/phone/sms" keeps working: a 9P
 *                 file cannot also be a directory.)
 * /phone/ctl      dial NUMBER | answer | hangup | mute | unmute
 * /phone/status   modem, operator, signal, call (idle | ringing N | dialing N |
 *                 active N), muted, pending: one "key value" per line
 * /phone/events   each read blocks for the next event and returns one line:
 *                 ring N, sms N ID, missed N, hangup, answered N, sent ID, failed ID REASON,
 *                 modem gone, modem ready (while gone, messages stay queued)
 * ```
 *
 * Take a call with `cat /phone/events` in one shell and `echo answer >/phone/ctl`
 * in another.
 *
 * @module
 */

import {
  Broadcast,
  type Command,
  ctlFile,
  dir,
  eventFile,
  quote,
  SynthTree,
  textFile,
} from "../../fs/synthetic.ts";
import { StyxError } from "../../styx/types.ts";
import type { BackendEvent, PhoneBackend, SendResult } from "./backend.ts";
import { type SmsRecord, SmsStore } from "./queue.ts";

/** The call state shown in /phone/status. */
export type CallState =
  | { state: "idle" }
  | { state: "ringing" | "dialing" | "active"; number: string };

/** Options for {@link Phone.open}. */
export interface PhoneOptions {
  /** Does the talking to the modem. */
  backend: PhoneBackend;
  /** Directory holding the message store (created if missing). */
  stateDir: string;
  /** The clock (tests pass their own). */
  now?: () => Date;
  /** Where background problems are reported (default: console.error). */
  log?: (message: string) => void;
  /** Owner of the files (default "ferry"). */
  uid?: string;
  /** File permission bits for sms and ctl (default 0o666) and status/events (0o444 | 0o444). */
  perm?: number;
}

const SMS_NUMBER = /^\+?[0-9]{1,20}$/;
const DIAL_NUMBER = /^\+?[0-9*#]{1,32}$/;

/** Check an SMS destination; throws "sms: bad number 'x'". */
export function checkSmsNumber(n: string): void {
  if (!SMS_NUMBER.test(n)) throw new StyxError(`sms: bad number '${n}'`);
}

/** One line of the /phone/sms listing for `m`. */
export function formatSms(m: SmsRecord): string {
  const status = m.status === "failed" ? `failed: ${m.reason ?? "unknown reason"}` : m.status;
  const text = m.text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
  return [
    String(m.id),
    m.time,
    m.dir,
    quote(m.number),
    quote(status),
    String(m.segments),
    `'${text.replaceAll("'", "''")}'`,
  ].join(" ");
}

function describe(c: CallState): string {
  return c.state === "idle" ? "idle" : `${c.state} ${c.number}`;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A running phone: the message store, the call state, the send queue and
 * the event stream, with {@link Phone.tree} serving them as files.
 *
 * @example
 * ```ts
 * import { Phone } from "./tree.ts";
 * import { SimBackend } from "./sim.ts";
 * const dir = await Deno.makeTempDir();
 * const phone = await Phone.open({ backend: new SimBackend({ stateDir: dir }), stateDir: dir });
 * await phone.send("6412345678", "hello");
 * await phone.drain();
 * await phone.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Phone {
  /** Every event line, for /phone/events. */
  readonly events: Broadcast<string> = new Broadcast<string>();
  #call: CallState = { state: "idle" };
  #muted = false;
  #queue: number[] = [];
  #queued = new Set<number>();
  #worker: Promise<void> | undefined;
  #closed = false;
  /** False while the backend reports no modem: sends wait, queued. */
  #modemReady = true;
  #now: () => Date;
  #log: (m: string) => void;

  private constructor(
    readonly backend: PhoneBackend,
    readonly store: SmsStore,
    private opts: PhoneOptions,
  ) {
    this.#now = opts.now ?? (() => new Date());
    this.#log = opts.log ?? ((m) => console.error(`phone: ${m}`));
  }

  /**
   * Open the store, start the backend and queue every message left pending
   * by an earlier run (each is sent once).
   */
  static async open(opts: PhoneOptions): Promise<Phone> {
    const store = await SmsStore.open(opts.stateDir);
    const phone = new Phone(opts.backend, store, opts);
    await opts.backend.start({
      event: (e) => phone.#onBackend(e),
      error: (m) => phone.#log(`${opts.backend.name}: ${m}`),
    });
    for (const m of store.pending()) phone.#enqueue(m.id);
    return phone;
  }

  /** The current call state. */
  get call(): CallState {
    return this.#call;
  }

  /** True while the microphone is muted. */
  get muted(): boolean {
    return this.#muted;
  }

  #emit(line: string): void {
    this.events.publish(line);
  }

  async #onBackend(e: BackendEvent): Promise<void> {
    if (this.#closed) return;
    switch (e.type) {
      case "sms": {
        const rec = await this.store.addIncoming(e.number, e.text, e.time ?? this.#now(), e.key);
        if (rec) this.#emit(`sms ${quote(rec.number)} ${rec.id}`);
        return;
      }
      case "ring":
        if (this.#call.state !== "idle") return; // a second call while busy: ignore
        this.#call = { state: "ringing", number: e.number };
        this.#emit(`ring ${quote(e.number)}`);
        return;
      case "answered":
        if (this.#call.state === "dialing") {
          this.#call = { state: "active", number: this.#call.number };
          this.#emit(`answered ${quote(this.#call.number)}`);
        }
        return;
      case "modem":
        this.#modemReady = e.state === "ready";
        this.#emit(`modem ${e.state}`);
        // Messages that waited for the modem go now.
        if (this.#modemReady) { for (const m of this.store.pending()) this.#enqueue(m.id); }
        return;
      case "hangup": {
        const was = this.#call;
        if (was.state === "idle") return;
        this.#call = { state: "idle" };
        this.#muted = false;
        this.#emit(was.state === "ringing" ? `missed ${quote(was.number)}` : "hangup");
        return;
      }
    }
  }

  /**
   * Queue an SMS to `number`; resolves once it is stored on disk (it is
   * sent in the background). Throws for a bad number or an empty text.
   */
  async send(number: string, text: string): Promise<SmsRecord> {
    checkSmsNumber(number);
    if (text.trim() === "") throw new StyxError("sms: empty text");
    if (this.#closed) throw new StyxError("sms: phone is shutting down");
    const rec = await this.store.addOutgoing(number, text, this.#now());
    this.#enqueue(rec.id);
    return rec;
  }

  /**
   * Send a failed message again (the modem or network refused it); resolves
   * once it is queued on disk.
   */
  async resend(id: number): Promise<SmsRecord> {
    const rec = this.store.get(id);
    if (!rec || rec.dir !== "out") throw new StyxError(`resend: no outgoing message ${id}`);
    if (rec.status !== "failed") throw new StyxError(`resend: message ${id} is ${rec.status}`);
    await this.store.requeue(id);
    this.#queued.delete(id);
    this.#enqueue(id);
    return rec;
  }

  #enqueue(id: number): void {
    if (!this.#modemReady) return; // queued on disk; sent when the modem is back
    if (this.#queued.has(id)) return;
    this.#queued.add(id);
    this.#queue.push(id);
    this.#worker ??= this.#work().finally(() => (this.#worker = undefined));
  }

  async #work(): Promise<void> {
    while (this.#queue.length > 0 && !this.#closed) {
      const id = this.#queue.shift()!;
      const rec = this.store.get(id);
      if (!rec || rec.status !== "queued") continue;
      let result: SendResult;
      try {
        result = await this.backend.sendSms(rec.number, rec.text);
      } catch (e) {
        result = { ok: false, reason: message(e) };
      }
      if (this.#closed) return; // left queued on disk: sent on the next start
      if (!result.ok && result.retry) {
        // No modem just now: the message stays queued, and so does the rest.
        this.#modemReady = false;
        this.#queue = [];
        this.#queued.clear();
        return;
      }
      try {
        await this.store.settle(id, result);
      } catch (e) {
        this.#log(`cannot record the outcome of message ${id}: ${message(e)}`);
        continue;
      }
      this.#emit(result.ok ? `sent ${id}` : `failed ${id} ${quote(result.reason)}`);
    }
  }

  /** Resolves once the send queue is empty (for tests and orderly shutdown). */
  async drain(): Promise<void> {
    while (this.#worker) await this.#worker;
  }

  /** Place a call. */
  async dial(number: string): Promise<void> {
    if (!DIAL_NUMBER.test(number)) throw new StyxError(`dial: bad number '${number}'`);
    if (this.#call.state !== "idle") {
      throw new StyxError(`dial: a call is already ${describe(this.#call)}`);
    }
    await this.#backendOp("dial", () => this.backend.dial(number));
    if (this.backend.tracksCalls !== false) this.#call = { state: "dialing", number };
  }

  /** Answer the ringing call. */
  async answer(): Promise<void> {
    const c = this.#call;
    if (this.backend.tracksCalls === false) {
      return await this.#backendOp("answer", () => this.backend.answer());
    }
    if (c.state !== "ringing") throw new StyxError("answer: nothing is ringing");
    await this.#backendOp("answer", () => this.backend.answer());
    this.#call = { state: "active", number: c.number };
    this.#emit(`answered ${quote(c.number)}`);
  }

  /** End the current call. */
  async hangup(): Promise<void> {
    if (this.backend.tracksCalls === false) {
      return await this.#backendOp("hangup", () => this.backend.hangup());
    }
    if (this.#call.state === "idle") throw new StyxError("hangup: no call in progress");
    await this.#backendOp("hangup", () => this.backend.hangup());
    this.#call = { state: "idle" };
    this.#muted = false;
    this.#emit("hangup");
  }

  /** Mute or unmute the current call. */
  async mute(on: boolean): Promise<void> {
    const name = on ? "mute" : "unmute";
    if (this.#call.state === "idle" && this.backend.tracksCalls !== false) {
      throw new StyxError(`${name}: no call in progress`);
    }
    await this.#backendOp(name, () => this.backend.mute(on));
    this.#muted = on;
  }

  async #backendOp(name: string, op: () => Promise<void>): Promise<void> {
    try {
      await op();
    } catch (e) {
      throw new StyxError(`${name}: ${message(e)}`);
    }
  }

  /** The text of /phone/status. */
  async statusText(): Promise<string> {
    let modem: string, operator: string, signal: string;
    try {
      ({ modem, operator, signal } = await this.backend.status());
    } catch (e) {
      modem = `unavailable: ${message(e)}`;
      operator = "";
      signal = "";
    }
    return [
      `backend ${this.backend.name}`,
      `modem ${modem}`,
      `operator ${operator}`,
      `signal ${signal}`,
      `call ${describe(this.#call)}`,
      `muted ${this.#muted ? "yes" : "no"}`,
      `pending ${this.store.pending().length}`,
    ].join("\n") + "\n";
  }

  /** The text of /phone/sms. */
  smsText(): string {
    return this.store.list().map((m) => formatSms(m) + "\n").join("");
  }

  /** The numbers that have messages, in order of their latest message. */
  conversations(): string[] {
    const last = new Map<string, number>();
    for (const m of this.store.list()) last.set(m.number, m.id);
    return [...last.entries()].sort((a, b) => a[1] - b[1]).map(([n]) => n);
  }

  /** The /phone/conv/NUMBER text: the flat log's lines for `number` only. */
  conversationText(number: string): string {
    return this.store.list().filter((m) => m.number === number).map((m) => formatSms(m) + "\n")
      .join("");
  }

  /** The /phone tree over this phone. */
  tree(): SynthTree {
    const perm = this.opts.perm ?? 0o666;
    const rperm = perm & 0o444;
    const smsCmds: Command[] = [{
      name: "send",
      min: 2,
      max: Infinity,
      usage: "NUMBER 'text'",
      run: async ([number, ...words]) => {
        await this.send(number!, words.join(" "));
      },
    }, {
      name: "resend",
      min: 1,
      max: 1,
      usage: "ID",
      run: async ([id]) => {
        if (!/^\d+$/.test(id!)) throw new StyxError(`resend: bad message id '${id}'`);
        await this.resend(Number(id));
      },
    }];
    const ctlCmds: Command[] = [
      { name: "dial", min: 1, usage: "NUMBER", run: ([n]) => this.dial(n!) },
      { name: "answer", run: () => this.answer() },
      { name: "hangup", run: () => this.hangup() },
      { name: "mute", run: () => this.mute(true) },
      { name: "unmute", run: () => this.mute(false) },
    ];
    return new SynthTree(
      dir("phone", [
        ctlFile("sms", smsCmds, { read: () => this.smsText(), perm }),
        ctlFile("ctl", ctlCmds, { read: () => `call ${describe(this.#call)}\n`, perm }),
        textFile("status", () => this.statusText(), { perm: rperm }),
        eventFile("events", this.events, { perm: rperm }),
        dir("conv", () =>
          this.conversations().map((number) =>
            ctlFile(number, [{
              name: "send",
              min: 1,
              max: Infinity,
              usage: "'text'",
              run: async (words) => {
                await this.send(number, words.join(" "));
              },
            }], { read: () => this.conversationText(number), perm })
          ), { perm: 0o555 }),
      ], { perm: 0o555 }),
      { uid: this.opts.uid ?? "ferry" },
    );
  }

  /**
   * Stop: close event readers and the backend. A send in flight stays
   * queued on disk and is sent on the next start.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.events.close();
    await this.backend.close();
  }
}
