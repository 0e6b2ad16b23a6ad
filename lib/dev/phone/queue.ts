/**
 * The phone's message store: every received and sent SMS, kept on disk in
 * one JSON file that is replaced atomically (written to a temporary file,
 * synced, then renamed) before any change is reported. An outgoing message
 * is on disk as "queued" before the write that sent it returns, so nothing
 * is lost when Ferry stops; on the next start the queued ones are sent.
 *
 * @module
 */

import { countSegments } from "./segments.ts";

/** Where a message stands. */
export type SmsStatus = "queued" | "sent" | "failed" | "received";

/** One stored message. */
export interface SmsRecord {
  /** Small integer, unique within the store, increasing. */
  id: number;
  /** When it was queued or received, ISO 8601. */
  time: string;
  /** "in" for received, "out" for sent. */
  dir: "in" | "out";
  /** The other party. */
  number: string;
  /** The text. */
  text: string;
  /** Where the message stands. */
  status: SmsStatus;
  /** Why it failed (status "failed"). */
  reason?: string;
  /** SMS parts the text takes. */
  segments: number;
  /** For received messages: the backend's identity for deduplication. */
  key?: string;
}

interface StateFile {
  version: 1;
  nextId: number;
  messages: SmsRecord[];
}

/** File name of the store inside the state directory. */
export const STORE_FILE = "sms.json";

/**
 * The message store of one state directory.
 *
 * @example
 * ```ts
 * import { SmsStore } from "./queue.ts";
 * const dir = await Deno.makeTempDir();
 * const store = await SmsStore.open(dir);
 * const m = await store.addOutgoing("6412345678", "hello", new Date());
 * if (m.status !== "queued" || m.segments !== 1) throw new Error();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class SmsStore {
  #state: StateFile;
  #saving: Promise<void> = Promise.resolve();

  private constructor(readonly path: string, state: StateFile) {
    this.#state = state;
  }

  /**
   * Open (or start) the store in `dir`. A damaged store file is refused with
   * an error naming it, and left untouched.
   */
  static async open(dir: string): Promise<SmsStore> {
    await Deno.mkdir(dir, { recursive: true });
    const path = `${dir}/${STORE_FILE}`;
    let text: string | undefined;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new Error(`Cannot read message store '${path}': ${(e as Error).message}`);
      }
    }
    if (text === undefined) return new SmsStore(path, { version: 1, nextId: 1, messages: [] });
    let state: StateFile;
    try {
      state = JSON.parse(text) as StateFile;
      if (state.version !== 1 || !Array.isArray(state.messages)) throw new Error("unknown layout");
    } catch (e) {
      throw new Error(
        `Message store '${path}' is damaged (${
          (e as Error).message
        }); move it aside to start afresh`,
      );
    }
    return new SmsStore(path, state);
  }

  /** Every message, oldest first. */
  list(): readonly SmsRecord[] {
    return this.#state.messages;
  }

  /** Outgoing messages not yet confirmed or failed, oldest first. */
  pending(): SmsRecord[] {
    return this.#state.messages.filter((m) => m.status === "queued");
  }

  /** The message with `id`, if any. */
  get(id: number): SmsRecord | undefined {
    return this.#state.messages.find((m) => m.id === id);
  }

  /** Queue an outgoing message; resolves once it is on disk. */
  async addOutgoing(number: string, text: string, now: Date): Promise<SmsRecord> {
    const rec: SmsRecord = {
      id: this.#state.nextId++,
      time: now.toISOString(),
      dir: "out",
      number,
      text,
      status: "queued",
      segments: countSegments(text).count,
    };
    await this.#append(rec);
    return rec;
  }

  /**
   * Record a received message; resolves once it is on disk. Returns
   * undefined when a message with the same `key` is already stored.
   */
  async addIncoming(
    number: string,
    text: string,
    time: Date,
    key?: string,
  ): Promise<SmsRecord | undefined> {
    if (key !== undefined && this.#state.messages.some((m) => m.key === key)) return undefined;
    const rec: SmsRecord = {
      id: this.#state.nextId++,
      time: time.toISOString(),
      dir: "in",
      number,
      text,
      status: "received",
      segments: countSegments(text).count,
      ...(key !== undefined ? { key } : {}),
    };
    await this.#append(rec);
    return rec;
  }

  /** Mark an outgoing message sent or failed; resolves once on disk. */
  async settle(id: number, result: { ok: true } | { ok: false; reason: string }): Promise<void> {
    const rec = this.get(id);
    if (!rec) throw new Error(`No message with id ${id}`);
    if (result.ok) {
      rec.status = "sent";
      delete rec.reason;
    } else {
      rec.status = "failed";
      rec.reason = result.reason;
    }
    await this.#save();
  }

  /** Put a failed outgoing message back in the queue; resolves once on disk. */
  async requeue(id: number): Promise<SmsRecord> {
    const rec = this.get(id);
    if (!rec || rec.dir !== "out") throw new Error(`No outgoing message with id ${id}`);
    if (rec.status !== "failed") throw new Error(`Message ${id} is ${rec.status}, not failed`);
    const reason = rec.reason;
    rec.status = "queued";
    delete rec.reason;
    try {
      await this.#save();
    } catch (e) {
      rec.status = "failed";
      if (reason !== undefined) rec.reason = reason;
      throw new Error(`Cannot save message store '${this.path}': ${(e as Error).message}`);
    }
    return rec;
  }

  /** Add `rec` and save; if saving fails the store is as it was before. */
  async #append(rec: SmsRecord): Promise<void> {
    this.#state.messages.push(rec);
    try {
      await this.#save();
    } catch (e) {
      this.#state.messages = this.#state.messages.filter((m) => m !== rec);
      if (rec.id === this.#state.nextId - 1) this.#state.nextId--;
      throw new Error(`Cannot save message store '${this.path}': ${(e as Error).message}`);
    }
  }

  #save(): Promise<void> {
    const snapshot = JSON.stringify(this.#state, null, 1) + "\n";
    const run = this.#saving.then(() => writeAtomic(this.path, snapshot));
    this.#saving = run.catch(() => {});
    return run;
  }
}

/** Write `text` to `path` through a synced temporary file and a rename. */
export async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    const data = new TextEncoder().encode(text);
    let off = 0;
    while (off < data.length) off += await f.write(data.subarray(off));
    await f.sync();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, path);
}
