/**
 * The simulated modem: the default phone backend, for demos and tests.
 *
 * Messages it "transmits" are appended to `sim-outbox.jsonl` in the state
 * directory. Incoming traffic is made with {@link simInject} (the command
 * `ferry phone sim inject ...`), which reaches the running simulator
 * through the unix socket `sim.sock` in the same state directory:
 *
 * ```
 * sms NUMBER TEXT...   a message arrives
 * call NUMBER          a call rings
 * answer               the other end answers the call we dialled
 * hangup               the other end hangs up (a ringing call becomes missed)
 * signal N             set signal quality 0-100; at 0 sends and dials fail
 * ```
 *
 * @module
 */

import type { BackendSink, BackendStatus, PhoneBackend, SendResult } from "./backend.ts";

/** Name of the injection socket inside the state directory. */
export const SIM_SOCKET = "sim.sock";
/** Name of the file recording what the simulator transmitted. */
export const SIM_OUTBOX = "sim-outbox.jsonl";

/** Options for {@link SimBackend}. */
export interface SimOptions {
  /** State directory: holds the injection socket and the outbox. */
  stateDir: string;
  /** Listen for injections on the unix socket (default true). */
  listen?: boolean;
  /** Initial signal quality, 0-100 (default 80). */
  signal?: number;
}

const USAGE = "sms NUMBER TEXT... | call NUMBER | answer | hangup | signal N";

/**
 * A simulated modem.
 *
 * @example
 * ```ts
 * import { SimBackend } from "./sim.ts";
 * const dir = await Deno.makeTempDir();
 * const sim = new SimBackend({ stateDir: dir, listen: false });
 * const r = await sim.sendSms("6412345678", "hello");
 * if (!r.ok) throw new Error();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class SimBackend implements PhoneBackend {
  readonly name = "sim";
  #sink: BackendSink | undefined;
  #signal: number;
  #listener: Deno.Listener | undefined;
  #serving: Promise<void> | undefined;
  #conns = new Set<Deno.Conn>();
  #call: "idle" | "ringing" | "dialing" | "active" = "idle";

  /** A simulator keeping its socket and outbox in `opts.stateDir`. */
  constructor(readonly opts: SimOptions) {
    this.#signal = opts.signal ?? 80;
  }

  /** Path of the injection socket. */
  get socketPath(): string {
    return `${this.opts.stateDir}/${SIM_SOCKET}`;
  }

  /** Start listening for injections (unless disabled). */
  async start(sink: BackendSink): Promise<void> {
    this.#sink = sink;
    await Deno.mkdir(this.opts.stateDir, { recursive: true });
    if (this.opts.listen === false) return;
    const path = this.socketPath;
    try {
      const c = await Deno.connect({ transport: "unix", path });
      c.close();
      throw new Error(`A simulated phone is already running with socket '${path}'`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.ConnectionRefused)) {
        throw e;
      }
    }
    await Deno.remove(path).catch(() => {});
    this.#listener = Deno.listen({ transport: "unix", path });
    this.#serving = this.#serve(this.#listener);
  }

  async #serve(l: Deno.Listener): Promise<void> {
    try {
      for await (const conn of l) {
        this.#conns.add(conn);
        this.#handle(conn).finally(() => {
          this.#conns.delete(conn);
          try {
            conn.close();
          } catch { /* already closed */ }
        });
      }
    } catch { /* listener closed */ }
  }

  async #handle(conn: Deno.Conn): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    const chunk = new Uint8Array(4096);
    while (!buf.includes("\n")) {
      const n = await conn.read(chunk).catch(() => null);
      if (n === null) return;
      buf += dec.decode(chunk.subarray(0, n), { stream: true });
      if (buf.length > 1 << 20) return;
    }
    let reply = "ok\n";
    try {
      const req = JSON.parse(buf.slice(0, buf.indexOf("\n"))) as { args?: unknown };
      if (!Array.isArray(req.args) || !req.args.every((a) => typeof a === "string")) {
        throw new Error("Malformed injection request");
      }
      await this.inject(req.args as string[]);
    } catch (e) {
      reply = `error: ${(e as Error).message}\n`;
    }
    await conn.write(new TextEncoder().encode(reply)).catch(() => {});
  }

  /**
   * Make incoming traffic, as `ferry phone sim inject ARGS...` does.
   * Throws for an unknown or malformed injection.
   */
  async inject(args: string[]): Promise<void> {
    const [what, ...rest] = args;
    const sink = this.#sink;
    if (!sink) throw new Error("The simulated phone is not started");
    const number = (): string => {
      const n = rest[0];
      if (n === undefined || !/^\+?[0-9]{1,20}$/.test(n)) {
        throw new Error(`inject ${what}: bad number '${n ?? ""}'`);
      }
      return n;
    };
    switch (what) {
      case "sms": {
        const n = number();
        const text = rest.slice(1).join(" ");
        if (text === "") throw new Error("inject sms: empty text");
        await sink.event({ type: "sms", number: n, text });
        return;
      }
      case "call": {
        const n = number();
        if (rest.length !== 1) throw new Error(`inject call: usage: call NUMBER`);
        if (this.#call !== "idle") {
          throw new Error(`inject call: the phone is busy (${this.#call})`);
        }
        this.#call = "ringing";
        await sink.event({ type: "ring", number: n });
        return;
      }
      case "answer":
        if (this.#call !== "dialing") throw new Error("inject answer: no outgoing call to answer");
        this.#call = "active";
        await sink.event({ type: "answered" });
        return;
      case "hangup":
        if (this.#call === "idle") throw new Error("inject hangup: no call in progress");
        this.#call = "idle";
        await sink.event({ type: "hangup" });
        return;
      case "signal": {
        const v = Number(rest[0]);
        if (rest.length !== 1 || !Number.isInteger(v) || v < 0 || v > 100) {
          throw new Error(`inject signal: bad level '${rest[0] ?? ""}' (want 0-100)`);
        }
        this.#signal = v;
        return;
      }
      default:
        throw new Error(`unknown injection '${what ?? ""}'; use ${USAGE}`);
    }
  }

  /** "Transmit" a message: appended to the outbox file; fails with no signal. */
  async sendSms(number: string, text: string): Promise<SendResult> {
    if (this.#signal === 0) return { ok: false, reason: "no signal" };
    const line = JSON.stringify({ time: new Date().toISOString(), number, text }) + "\n";
    await Deno.writeTextFile(`${this.opts.stateDir}/${SIM_OUTBOX}`, line, { append: true });
    return { ok: true };
  }

  /** Start an outgoing call; the other end answers with `inject answer`. */
  dial(_number: string): Promise<void> {
    if (this.#signal === 0) return Promise.reject(new Error("no signal"));
    this.#call = "dialing";
    return Promise.resolve();
  }

  /** Answer the ringing call. */
  answer(): Promise<void> {
    if (this.#call !== "ringing") return Promise.reject(new Error("nothing is ringing"));
    this.#call = "active";
    return Promise.resolve();
  }

  /** End the call. */
  hangup(): Promise<void> {
    this.#call = "idle";
    return Promise.resolve();
  }

  /** Mute or unmute (the simulator has no audio; it just agrees). */
  mute(_on: boolean): Promise<void> {
    return Promise.resolve();
  }

  /** Modem "sim", operator "Ferry Sim", the simulated signal. */
  status(): Promise<BackendStatus> {
    return Promise.resolve({
      modem: "sim",
      operator: "Ferry Sim",
      signal: String(this.#signal),
    });
  }

  /** Stop listening and remove the socket. */
  async close(): Promise<void> {
    const l = this.#listener;
    if (!l) return;
    this.#listener = undefined;
    try {
      l.close();
    } catch { /* already closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    await this.#serving;
    await Deno.remove(this.socketPath).catch(() => {});
  }
}

/**
 * Send one injection to the simulator running with state directory
 * `stateDir`. Throws when none is running or it refuses the injection.
 *
 * @example
 * ```ts ignore
 * import { simInject } from "./sim.ts";
 * await simInject("/home/me/.ferry/phone", ["sms", "6412345678", "hi there"]);
 * ```
 */
export async function simInject(stateDir: string, args: string[]): Promise<void> {
  const path = `${stateDir}/${SIM_SOCKET}`;
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.ConnectionRefused) {
      throw new Error(
        `No simulated phone is running with state directory '${stateDir}' ` +
          `(start one with 'ferry phone --backend sim --state ${stateDir}')`,
      );
    }
    throw e;
  }
  try {
    await conn.write(new TextEncoder().encode(JSON.stringify({ args }) + "\n"));
    const dec = new TextDecoder();
    let reply = "";
    const chunk = new Uint8Array(4096);
    while (!reply.includes("\n")) {
      const n = await conn.read(chunk);
      if (n === null) break;
      reply += dec.decode(chunk.subarray(0, n), { stream: true });
    }
    reply = reply.trim();
    if (reply === "ok") return;
    if (reply.startsWith("error: ")) throw new Error(reply.slice(7));
    throw new Error(`Unexpected reply from the simulated phone: '${reply}'`);
  } finally {
    conn.close();
  }
}
