/**
 * A simulated GSM modem that speaks AT commands on a pseudo-terminal, so the
 * real ModemManager can drive it in tests. It opens the pty itself (through
 * libc by FFI) and keeps a handle on the terminal side too, so a host that
 * closes and reopens the port finds it still there.
 *
 * It answers what ModemManager 1.20 asks of a plain 3GPP modem: identity and
 * SIM (`+CGMI`, `+CGMM`, `+CGSN`, `+CIMI`, `+CPIN?`, ICCID via `+CRSM`),
 * network (`+CREG?`, `+COPS?`, `+CSQ`), SMS in PDU mode (`+CMGF`, `+CPMS`,
 * `+CNMI`, `+CMGS`, `+CMGL`, `+CMGR`, `+CMGD`, with `+CMTI` notices) and
 * voice (`ATD`, `ATA`, `ATH`, `+CHUP`, `+CHLD`, `+CLCC`, unsolicited `RING`
 * and `+CLIP`). Commands it only probes get ERROR.
 *
 * It is driven through a unix control socket, one command a line, one
 * answer line each ("ok", "error: WHY", or JSON for `state`):
 *
 * ```
 * ring [NUMBER]      an incoming call rings (RING and +CLIP every 2 s; no
 *                    NUMBER: the caller withholds it)
 * sms NUMBER TEXT    a message arrives (its parts 1.2 s apart)
 * answer             the far end answers the call the host dialled
 * hangup             the far end hangs up (or stops ringing)
 * refuse on|off      answer +CMGS with "+CMS ERROR: 500" (a network refusal)
 * state              JSON: what the modem really sent and where calls stand
 * ```
 *
 * Run it alone with `deno run -A tests/dev/phone/atmodem.ts SOCKET`: it
 * prints "pty /dev/pts/N" once ready.
 *
 * @module
 */

import { decodeSubmit, deliverPdus, fromHex, type SmsPart } from "./pdu.ts";

const O_RDWR = 0o2;
const O_NOCTTY = 0o400;
const O_NONBLOCK = 0o4000;
const POLLIN = 1;

const SYMBOLS = {
  posix_openpt: { parameters: ["i32"], result: "i32" },
  grantpt: { parameters: ["i32"], result: "i32" },
  unlockpt: { parameters: ["i32"], result: "i32" },
  ptsname: { parameters: ["i32"], result: "pointer" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  tcgetattr: { parameters: ["i32", "buffer"], result: "i32" },
  tcsetattr: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  cfmakeraw: { parameters: ["buffer"], result: "void" },
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
/** libc, opened on first use (importing this module for its client needs no FFI). */
function libc(): Deno.DynamicLibrary<typeof SYMBOLS> {
  return lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
}

/** A pseudo-terminal: the modem's (master) side and the port path a host opens. */
class Pty {
  readonly path: string;
  readonly #master: number;
  readonly #slave: number;
  #closed = false;

  constructor() {
    const s = libc().symbols;
    const m = s.posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (m < 0 || s.grantpt(m) !== 0 || s.unlockpt(m) !== 0) {
      throw new Error("Cannot open a pseudo-terminal through /dev/ptmx");
    }
    const p = s.ptsname(m);
    if (p === null) throw new Error("ptsname failed");
    this.path = new Deno.UnsafePointerView(p).getCString();
    this.#master = m;
    // Our own handle on the port: a host closing it then never leaves the
    // master without a peer (reads would fail with EIO), and raw mode set
    // here stays set between the host's opens.
    const slave = s.open(new TextEncoder().encode(this.path + "\0"), O_RDWR | O_NOCTTY);
    if (slave < 0) throw new Error(`Cannot open '${this.path}'`);
    this.#slave = slave;
    const t = new Uint8Array(64);
    s.tcgetattr(slave, t);
    s.cfmakeraw(t);
    s.tcsetattr(slave, 0, t);
  }

  /** Wait for bytes from the host; null once closed. */
  async read(): Promise<Uint8Array | null> {
    const fds = new Uint8Array(8);
    new DataView(fds.buffer).setInt32(0, this.#master, true);
    new DataView(fds.buffer).setInt16(4, POLLIN, true);
    const buf = new Uint8Array(4096);
    while (!this.#closed) {
      const r = await libc().symbols.poll(fds, 1n, 200);
      if (this.#closed) return null;
      if (r <= 0) continue;
      const n = Number(libc().symbols.read(this.#master, buf, BigInt(buf.length)));
      if (n > 0) return buf.slice(0, n);
      // EAGAIN (a spurious wake) or EIO (no host has the port open): wait a little.
      await new Promise((res) => setTimeout(res, 20));
    }
    return null;
  }

  /** Send bytes to the host. */
  write(text: string): void {
    if (this.#closed) return;
    const data = new TextEncoder().encode(text);
    let off = 0;
    while (off < data.length) {
      const n = Number(
        libc().symbols.write(this.#master, data.subarray(off), BigInt(data.length - off)),
      );
      if (n <= 0) return; // the host is gone or its queue is full: as a real line would, drop it
      off += n;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Let a poll under way see the flag before its descriptor goes.
    setTimeout(() => {
      libc().symbols.close(this.#slave);
      libc().symbols.close(this.#master);
    }, 300);
  }
}

/** A call as the modem sees it. */
interface Call {
  id: number;
  /** 0 outgoing (mobile originated), 1 incoming. */
  dir: 0 | 1;
  /** +CLCC stat: 0 active, 2 dialing, 3 alerting, 4 incoming. */
  stat: 0 | 2 | 3 | 4;
  number: string;
}

/** A stored incoming part. */
interface Stored {
  pdu: string;
  /** 0 received unread, 1 received read. */
  stat: 0 | 1;
}

/** What the modem did, as `state` reports it. */
export interface ModemState {
  /** Every SMS part the host sent with +CMGS, decoded, in order, with when it came (ms since the epoch). */
  sent: (SmsPart & { at: number })[];
  /** Sent parts reassembled into messages (a message appears once all its parts are sent). */
  messages: { number: string; text: string; encoding: string; parts: number; at: number }[];
  /** The current call, if any, as +CLCC would list it. */
  call: { dir: "out" | "in"; state: string; number: string } | null;
  /** Every call event in order: "dial N", "answer", "hangup" (host side), "remote-*". */
  calls: string[];
  /** +CMGS commands refused. */
  refused: number;
  /** Parts of incoming messages still stored on the modem. */
  stored: number;
}

const STAT_NAME = { 0: "active", 2: "dialing", 3: "alerting", 4: "incoming" } as const;

/**
 * The simulated modem.
 *
 * @example
 * ```ts ignore
 * const modem = await AtModem.start(`${dir}/modem.sock`);
 * console.log(modem.path); // /dev/pts/N
 * ```
 */
export class AtModem {
  readonly #pty: Pty;
  #listener: Deno.Listener | undefined;
  #buf = "";
  /** Set while the host is typing a PDU after "> ". */
  #pduLen: number | undefined;
  #store = new Map<number, Stored>();
  #nextIndex = 0;
  #ref = 1;
  #call: Call | undefined;
  #ringTimer: ReturnType<typeof setInterval> | undefined;
  #sent: (SmsPart & { at: number })[] = [];
  #calls: string[] = [];
  #refuse = false;
  #refused = 0;
  #mr = 1;
  #incoming: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor() {
    this.#pty = new Pty();
  }

  /** The port a host opens, e.g. "/dev/pts/3". */
  get path(): string {
    return this.#pty.path;
  }

  /** Open the pty, start answering, and listen for control commands on `socket` (if given). */
  static start(socket?: string): AtModem {
    const m = new AtModem();
    m.#readLoop();
    if (socket) {
      try {
        Deno.removeSync(socket);
      } catch { /* not there */ }
      m.#listener = Deno.listen({ transport: "unix", path: socket });
      m.#serve(m.#listener);
    }
    return m;
  }

  async #serve(l: Deno.Listener): Promise<void> {
    try {
      for await (const c of l) this.#client(c);
    } catch { /* closed */ }
  }

  async #client(c: Deno.Conn): Promise<void> {
    const dec = new TextDecoder();
    let pending = "";
    const buf = new Uint8Array(65536);
    try {
      while (true) {
        const n = await c.read(buf);
        if (n === null) break;
        pending += dec.decode(buf.subarray(0, n), { stream: true });
        let nl;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          let answer: string;
          try {
            answer = await this.control(line);
          } catch (e) {
            answer = `error: ${(e as Error).message}`;
          }
          await c.write(new TextEncoder().encode(answer + "\n"));
        }
      }
    } catch {
      /* client went away */
    } finally {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  }

  /** Run one control command (see the module doc); returns the answer line. */
  async control(line: string): Promise<string> {
    const [cmd = "", ...rest] = line.trim().split(" ");
    switch (cmd) {
      case "ring":
        return this.ring(rest[0] ?? "");
      case "sms": {
        const number = rest[0] ?? "";
        const text = rest.slice(1).join(" ").replaceAll("\\n", "\n");
        await this.sms(number, text);
        return "ok";
      }
      case "answer":
        return this.remoteAnswer();
      case "hangup":
        return this.remoteHangup();
      case "refuse":
        this.#refuse = rest[0] === "on";
        return "ok";
      case "state":
        return JSON.stringify(this.state());
      default:
        throw new Error(`unknown command '${cmd}'`);
    }
  }

  /** What the modem sent and where calls stand. */
  state(): ModemState {
    const messages: ModemState["messages"] = [];
    const groups = new Map<string, (SmsPart & { at: number })[]>();
    for (const p of this.#sent) {
      if (!p.concat) {
        messages.push({
          number: p.number,
          text: p.text,
          encoding: p.encoding,
          parts: 1,
          at: p.at,
        });
        continue;
      }
      const key = `${p.number}|${p.concat.ref}|${p.concat.total}`;
      const g = groups.get(key) ?? [];
      g.push(p);
      groups.set(key, g);
      if (g.length === p.concat.total) {
        g.sort((a, b) => a.concat!.seq - b.concat!.seq);
        messages.push({
          number: p.number,
          text: g.map((x) => x.text).join(""),
          encoding: p.encoding,
          parts: g.length,
          at: p.at,
        });
        groups.delete(key);
      }
    }
    const c = this.#call;
    return {
      sent: this.#sent,
      messages,
      call: c ? { dir: c.dir ? "in" : "out", state: STAT_NAME[c.stat], number: c.number } : null,
      calls: this.#calls,
      refused: this.#refused,
      stored: this.#store.size,
    };
  }

  #unsolicited(text: string): void {
    this.#pty.write(`\r\n${text}\r\n`);
  }

  /** An incoming call from `number` starts ringing. */
  ring(number: string): string {
    if (number !== "" && !/^\+?[0-9]{1,20}$/.test(number)) {
      throw new Error(`bad number '${number}'`);
    }
    if (this.#call) throw new Error("a call is already in progress");
    this.#call = { id: 1, dir: 1, stat: 4, number };
    this.#calls.push(`remote-ring ${number || "withheld"}`);
    // CLI validity 1: the caller withheld the number.
    const clip = number === ""
      ? '+CLIP: "",128,,,,1'
      : `+CLIP: "${number}",${number.startsWith("+") ? 145 : 129},,,,0`;
    const ring = () => {
      this.#unsolicited("RING");
      this.#unsolicited(clip);
    };
    ring();
    this.#ringTimer = setInterval(ring, 2000);
    return "ok";
  }

  #stopRinging(): void {
    clearInterval(this.#ringTimer);
    this.#ringTimer = undefined;
  }

  /** The far end answers the outgoing call. */
  remoteAnswer(): string {
    const c = this.#call;
    if (!c || c.dir !== 0) throw new Error("no outgoing call to answer");
    c.stat = 0;
    this.#calls.push("remote-answer");
    return "ok";
  }

  /** The far end hangs up (or the caller gives up ringing). */
  remoteHangup(): string {
    if (!this.#call) throw new Error("no call in progress");
    this.#stopRinging();
    this.#call = undefined;
    this.#calls.push("remote-hangup");
    this.#unsolicited("NO CARRIER");
    return "ok";
  }

  /**
   * A message arrives: its parts are stored and announced with +CMTI. Each
   * notice waits until the host has read the part before (or 10 s pass),
   * then 1.2 s more: ModemManager drops a notice that comes while it is
   * still handling the previous part.
   */
  sms(number: string, text: string): Promise<void> {
    if (!/^\+?[0-9]{1,20}$/.test(number)) throw new Error(`bad number '${number}'`);
    if (text === "") throw new Error("empty text");
    const pdus = deliverPdus(number, text, this.#ref++, new Date());
    const run = this.#incoming.then(async () => {
      for (const [i, pdu] of pdus.entries()) {
        if (i > 0) await this.#settle(this.#nextIndex - 1);
        const index = this.#nextIndex++;
        this.#store.set(index, { pdu, stat: 0 });
        this.#unsolicited(`+CMTI: "SM",${index}`);
      }
    });
    const last = () => this.#nextIndex - 1;
    this.#incoming = run.then(() => this.#settle(last()));
    return Promise.resolve();
  }

  /** Wait until part `index` was read (or deleted), at most 10 s, then 1.2 s. */
  async #settle(index: number): Promise<void> {
    for (let waited = 0; waited < 10_000 && this.#store.get(index)?.stat === 0; waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 1200));
  }

  async #readLoop(): Promise<void> {
    const dec = new TextDecoder();
    while (true) {
      const b = await this.#pty.read();
      if (b === null) return;
      this.#buf += dec.decode(b, { stream: true });
      this.#consume();
    }
  }

  #consume(): void {
    while (true) {
      if (this.#pduLen !== undefined) {
        // Ctrl-Z ends the PDU, Escape cancels it.
        const z = this.#buf.indexOf("\x1a");
        const esc = this.#buf.indexOf("\x1b");
        const end = z < 0 ? esc : esc < 0 ? z : Math.min(z, esc);
        if (end < 0) return;
        const pdu = this.#buf.slice(0, end).trim();
        const cancel = this.#buf[end] === "\x1b";
        this.#buf = this.#buf.slice(end + 1);
        this.#pduLen = undefined;
        if (!cancel) this.#pty.write(this.#submit(pdu));
        continue;
      }
      const cr = this.#buf.search(/[\r\n]/);
      if (cr < 0) return;
      const line = this.#buf.slice(0, cr).trim();
      this.#buf = this.#buf.slice(cr + 1);
      if (line === "") continue;
      this.#pty.write(this.#command(line));
    }
  }

  #submit(pdu: string): string {
    if (this.#refuse) {
      this.#refused++;
      return "\r\n+CMS ERROR: 500\r\n";
    }
    let part: SmsPart;
    try {
      fromHex(pdu);
      part = decodeSubmit(pdu);
    } catch {
      return "\r\n+CMS ERROR: 304\r\n";
    }
    this.#sent.push({ ...part, at: performance.timeOrigin + performance.now() });
    return `\r\n+CMGS: ${this.#mr++ % 256}\r\n\r\nOK\r\n`;
  }

  /** Answer one command line (which may chain several with ";"). */
  #command(line: string): string {
    if (!/^AT/i.test(line)) return "\r\nERROR\r\n";
    const body = line.slice(2);
    // Basic commands before any extended one (ATE0V1, ATZ, ATD...).
    if (/^D/i.test(body)) return this.#dial(body.slice(1));
    const parts = body === "" ? [] : splitCommands(body);
    let out = "";
    for (const p of parts) {
      const r = this.#one(p);
      if (r === undefined) return "\r\nERROR\r\n";
      if (r === "PROMPT") {
        this.#pduLen = 0;
        return "\r\n> ";
      }
      if (typeof r === "string" && r.startsWith("+CMS ERROR")) return `\r\n${r}\r\n`;
      out += r;
    }
    return out + "\r\nOK\r\n";
  }

  /** One command: its info lines ("" for none), "PROMPT", or undefined for ERROR. */
  #one(c: string): string | undefined {
    const u = c.toUpperCase();
    // Information text: lines separated by CR LF, framed by CR LF (V.250).
    const info = (...lines: string[]) => lines.length ? `\r\n${lines.join("\r\n")}\r\n` : "";
    if (
      /^(E[01]?|V1?|Q0?|Z|&F|&C1?|&D[0-2]|X[0-4]|S\d+=\d+|L\d|M\d|\+CMEE=[0-2]|\+IFC=.*)$/.test(u)
    ) {
      return "";
    }
    switch (u) {
      case "I":
      case "+CGMI":
      case "+GMI":
        return info("Ferry");
      case "+CGMM":
      case "+GMM":
        return info("Simulated AT modem");
      case "+CGMR":
      case "+GMR":
        return info("1.0");
      case "+CGSN":
      case "+GSN":
        return info("490154203237518");
      case "+GCAP":
        return info("+GCAP: +CGSM");
      case "+CIMI":
        return info("001010123456789");
      case "+CPIN?":
        return info("+CPIN: READY");
      case "+CFUN?":
        return info("+CFUN: 1");
      case "+CREG?":
        return info("+CREG: 2,1");
      case "+CGREG?":
        return info("+CGREG: 2,1");
      case "+COPS?":
        return info('+COPS: 0,0,"Ferry Mobile",0');
      case "+CSQ":
        return info("+CSQ: 20,99");
      case "+CNUM":
        return info('+CNUM: "","+15551230000",145');
      case "+CMGF=?":
        return info("+CMGF: (0-1)");
      case "+CMGF?":
        return info("+CMGF: 0");
      case "+CSMS?":
        return info("+CSMS: 0,1,1,1");
      case "+CPMS=?":
        return info('+CPMS: ("SM"),("SM"),("SM")');
      case "+CPMS?":
        return info(`+CPMS: "SM",${this.#store.size},30,"SM",${this.#store.size},30,"SM",0,30`);
      case "+CNMI=?":
        return info("+CNMI: (0-2),(0-3),(0-3),(0-2),(0-1)");
      case "+CLCC": {
        const c = this.#call;
        if (!c) return "";
        const toa = c.number === "" ? 128 : c.number.startsWith("+") ? 145 : 129;
        return info(`+CLCC: ${c.id},${c.dir},${c.stat},0,0,"${c.number}",${toa}`);
      }
      case "+CLCC=?":
      case "+CLIP=?":
      case "+CRC=?":
      case "+CVHU=?":
      case "+CHUP=?":
        return "";
      case "A":
        return this.#answer();
      case "H":
      case "+CHUP":
        return this.#hangup();
      case "+CCID":
        return info("+CCID: 8901000000000000000F");
    }
    if (/^\+CRSM=176,12258,/.test(u)) return info('+CRSM: 144,0,"98101000000000000000"');
    if (/^\+CRSM=/.test(u)) return info("+CRSM: 106,130");
    if (/^\+CMGF=[01]$/.test(u)) return "";
    if (/^\+(CREG|CGREG|CLIP|CRC|CCWA|CLCC|CVHU|COPS|CSCS|CNMI|CSMS)=/.test(u)) {
      return u.startsWith("+COPS=0") || /^\+COPS=3,[0-2]$/.test(u) || !u.startsWith("+COPS")
        ? ""
        : undefined;
    }
    if (/^\+CPMS=/.test(u)) {
      const n = this.#store.size;
      return info(`+CPMS: ${n},30,${n},30,0,30`);
    }
    if (/^\+CMGL=/.test(u)) {
      const want = Number(u.slice(6));
      const lines: string[] = [];
      for (const [i, s] of this.#store) {
        if (want !== 4 && want !== s.stat) continue;
        lines.push(`+CMGL: ${i},${s.stat},,${pduLength(s.pdu)}`, s.pdu);
        s.stat = 1; // listing marks unread messages read, as +CMGR does
      }
      return info(...lines);
    }
    if (/^\+CMGR=\d+$/.test(u)) {
      const s = this.#store.get(Number(u.slice(6)));
      if (!s) return "+CMS ERROR: 321";
      const r = info(`+CMGR: ${s.stat},,${pduLength(s.pdu)}`, s.pdu);
      s.stat = 1;
      return r;
    }
    if (/^\+CMGD=\d+/.test(u)) {
      this.#store.delete(Number(u.slice(6).split(",")[0]));
      return "";
    }
    if (/^\+CMGS=\d+$/.test(u)) return "PROMPT";
    if (/^\+CHLD=/.test(u)) {
      const n = u.slice(6);
      return n === "1" || n === "0" || n === "11" ? this.#hangup() : undefined;
    }
    return undefined;
  }

  #dial(rest: string): string {
    const number = rest.replace(/;$/, "").trim();
    if (!/^\+?[0-9*#]+$/.test(number) || this.#call) return "\r\nNO CARRIER\r\n";
    this.#call = { id: 1, dir: 0, stat: 2, number };
    this.#calls.push(`dial ${number}`);
    // Alerting a moment later, as a network would report it.
    setTimeout(() => {
      if (this.#call?.dir === 0 && this.#call.stat === 2) this.#call.stat = 3;
    }, 100);
    return "\r\nOK\r\n";
  }

  #answer(): string | undefined {
    const c = this.#call;
    if (!c || c.dir !== 1 || c.stat !== 4) return undefined;
    this.#stopRinging();
    c.stat = 0;
    this.#calls.push("answer");
    return "";
  }

  #hangup(): string {
    if (this.#call) this.#calls.push("hangup");
    this.#stopRinging();
    this.#call = undefined;
    return "";
  }

  /** Stop answering and close the pty and the control socket. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopRinging();
    try {
      this.#listener?.close();
    } catch { /* already closed */ }
    this.#pty.close();
  }
}

/** Split "E0;+CMEE=1;+CREG?" style chains; basic commands like "E0V1" stay one each. */
function splitCommands(body: string): string[] {
  const out: string[] = [];
  for (let seg of body.split(";")) {
    seg = seg.trim();
    if (seg === "") continue;
    if (seg.startsWith("+") || seg.startsWith("^") || seg.startsWith("*")) {
      out.push(seg);
      continue;
    }
    // Basic commands, each a letter (or &letter) and an optional number, then maybe an extended one.
    const plus = seg.indexOf("+");
    const basic = plus < 0 ? seg : seg.slice(0, plus);
    for (const m of basic.matchAll(/&?[A-Za-z](\d*|=\d+)/g)) out.push(m[0]);
    if (plus >= 0) out.push(seg.slice(plus));
  }
  return out;
}

function pduLength(pdu: string): number {
  return pdu.length / 2 - 1 - parseInt(pdu.slice(0, 2), 16);
}

/**
 * Send one control command to a modem listening on `socket`; returns the
 * answer line, or throws with the modem's error.
 */
export async function modemControl(socket: string, line: string): Promise<string> {
  const c = await Deno.connect({ transport: "unix", path: socket });
  try {
    await c.write(new TextEncoder().encode(line + "\n"));
    let got = "";
    const buf = new Uint8Array(65536);
    while (!got.includes("\n")) {
      const n = await c.read(buf);
      if (n === null) break;
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    const answer = got.trim();
    if (answer.startsWith("error: ")) {
      throw new Error(`Modem refused '${line}': ${answer.slice(7)}`);
    }
    return answer;
  } finally {
    c.close();
  }
}

if (import.meta.main) {
  const socket = Deno.args[0];
  if (!socket) {
    console.error("usage: atmodem.ts SOCKET");
    Deno.exit(2);
  }
  const m = AtModem.start(socket);
  console.log(`pty ${m.path}`);
  const stop = () => {
    m.close();
    setTimeout(() => Deno.exit(0), 400);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
}
