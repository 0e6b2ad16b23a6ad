/**
 * UDP conversations of the /net device, as far as ip(3) maps onto host
 * datagram sockets:
 *
 * - `connect addr!port [localport]`: each data write sends one datagram to
 *   addr!port, each read returns one received datagram (cut to the count);
 * - `announce [addr!]port`: bind; reads return datagrams from anyone, and
 *   writes go to whoever sent the last one;
 * - `headers`: from then on every read starts with, and every write must
 *   start with, Plan 9's 52-byte header: remote address (16 bytes, IPv4 as
 *   v4-mapped IPv6), local address (16), interface address (16), remote
 *   port (2, big-endian), local port (2);
 * - `hangup`.
 *
 * @module
 */

import type dgram from "node:dgram";
import { Ename, StyxError } from "../../styx/types.ts";
import { withSignal } from "../../fs/tree.ts";
import { netError, parseHostPort } from "./conv.ts";
import { isIPv4, isIPv6 } from "./resolve.ts";

/** Size of the header `headers` mode adds. */
export const UDP_HEADER = 52;

/** Most datagrams queued unread; later ones are dropped, as a full socket buffer would. */
const QUEUE_MAX = 512;

let udp: Promise<typeof dgram> | undefined;

interface Datagram {
  data: Uint8Array;
  address: string;
  port: number;
}

/** Encode an address as 16 bytes (IPv4 as v4-mapped IPv6). */
export function ip16(addr: string): Uint8Array {
  const out = new Uint8Array(16);
  if (isIPv4(addr)) {
    out[10] = 0xff;
    out[11] = 0xff;
    addr.split(".").forEach((p, i) => (out[12 + i] = Number(p)));
    return out;
  }
  if (!isIPv6(addr)) return out;
  const [head, tail] = addr.replace(/%.*$/, "").split("::") as [string, string | undefined];
  const words = (s: string | undefined) => (s ? s.split(":").filter((w) => w !== "") : []);
  const h = words(head);
  const t = words(tail);
  const all = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  all.slice(0, 8).forEach((w, i) => {
    const v = parseInt(w, 16) || 0;
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  });
  return out;
}

/** Decode 16 address bytes (v4-mapped becomes dotted IPv4). */
export function ipString(b: Uint8Array): string {
  const mapped = b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (mapped) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const w: string[] = [];
  for (let i = 0; i < 16; i += 2) w.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return w.join(":");
}

/** One UDP conversation: /net/udp/N. */
export class UdpConv {
  /** The state as status shows it. */
  state: "Closed" | "Connected" | "Announced" | "Hungup" = "Closed";
  /** Open ctl and data files. */
  refs = 0;
  /** "addr!port" of this end. */
  local = "::!0";
  /** "addr!port" of the other end (the last sender when announced). */
  remote = "::!0";
  #sock: dgram.Socket | null = null;
  #headers = false;
  #queue: Datagram[] = [];
  #waiters: { resolve: (d: Datagram | null) => void }[] = [];
  #last: { address: string; port: number } | null = null;
  #gone = false;

  /** A closed conversation; `onGone` is called once when it is torn down. */
  constructor(
    /** The conversation number N. */
    readonly id: number,
    /** Who may use it. */
    readonly owner: string,
    /** Different for each conversation ever made. */
    readonly gen: number,
    private onGone: (c: UdpConv) => void,
  ) {}

  /** True once torn down. */
  get gone(): boolean {
    return this.#gone;
  }

  /** The status line. */
  status(): string {
    return `${this.state} qin ${this.#queue.length}\n`;
  }

  /** Take a reference. */
  ref(): void {
    this.refs++;
  }

  /** Drop a reference; the last tears the conversation down. */
  unref(): void {
    if (--this.refs <= 0) this.teardown();
  }

  async #open(family: "udp4" | "udp6"): Promise<dgram.Socket> {
    // Loaded at the first datagram conversation: node:dgram brings Node's
    // compatibility layer, milliseconds of start-up every /net would pay.
    udp ??= import("node:dgram").then((m) => m.default);
    const s = (await udp).createSocket(family);
    s.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
      const d = { data: new Uint8Array(msg), address: rinfo.address, port: rinfo.port };
      this.#last = { address: d.address, port: d.port };
      if (this.state === "Announced") this.remote = `${d.address}!${d.port}`;
      const w = this.#waiters.shift();
      if (w) w.resolve(d);
      else if (this.#queue.length < QUEUE_MAX) this.#queue.push(d);
    });
    s.on("error", () => {});
    return s;
  }

  #bound(s: dgram.Socket): void {
    const a = s.address();
    this.local = `${a.address}!${a.port}`;
  }

  /** ctl "connect addr!port [localport]". */
  async connect(target: string, localPort: string | undefined, signal?: AbortSignal) {
    if (this.state !== "Closed") {
      throw new StyxError(`bad ctl message 'connect': conversation is ${this.state}`);
    }
    const { host, port } = parseHostPort(target, "connect");
    if (host === "*" || port === 0) {
      throw new StyxError(`bad ctl message 'connect': no address or port in '${target}'`);
    }
    if (localPort !== undefined && !/^[0-9]{1,5}$/.test(localPort)) {
      throw new StyxError(`bad ctl message 'connect': bad local port '${localPort}'`);
    }
    const s = await this.#open(isIPv6(host) ? "udp6" : "udp4");
    try {
      await withSignal(
        new Promise<void>((resolve, reject) => {
          s.once("error", reject);
          s.bind(Number(localPort ?? 0), () => {
            s.connect(port, host, (e?: Error) => (e ? reject(e) : resolve()));
          });
        }),
        signal,
      );
    } catch (e) {
      s.close();
      throw netError(e);
    }
    this.#sock = s;
    this.state = "Connected";
    this.#bound(s);
    this.remote = `${host}!${port}`;
  }

  /** ctl "announce [addr!]port". */
  async announce(target: string) {
    if (this.state !== "Closed") {
      throw new StyxError(`bad ctl message 'announce': conversation is ${this.state}`);
    }
    const { host, port } = parseHostPort(target, "announce");
    const s = await this.#open(isIPv6(host) ? "udp6" : "udp4");
    try {
      await new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        s.bind(port, host === "*" ? undefined : host, () => resolve());
      });
    } catch (e) {
      s.close();
      throw netError(e);
    }
    this.#sock = s;
    this.state = "Announced";
    this.#bound(s);
  }

  /** ctl "headers". */
  headers(): void {
    this.#headers = true;
  }

  /** ctl "hangup". */
  hangup(): void {
    try {
      this.#sock?.close();
    } catch { /* already closed */ }
    this.#sock = null;
    this.state = "Hungup";
    for (const w of this.#waiters.splice(0)) w.resolve(null);
  }

  /** One datagram (with the header in headers mode), cut to `count`. */
  async read(count: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (this.state === "Hungup" || this.#gone) throw new StyxError(Ename.hungup);
    if (!this.#sock) throw new StyxError("not connected");
    let d = this.#queue.shift();
    if (!d) {
      const w = { resolve: (_: Datagram | null) => {} };
      const p = new Promise<Datagram | null>((r) => (w.resolve = r));
      this.#waiters.push(w);
      try {
        d = (await withSignal(p, signal)) ?? undefined;
      } catch (e) {
        const i = this.#waiters.indexOf(w);
        if (i >= 0) this.#waiters.splice(i, 1);
        p.then((late) => late && this.#queue.unshift(late));
        throw e;
      }
      if (!d) throw new StyxError(Ename.hungup);
    }
    let out = d.data;
    if (this.#headers) {
      const h = new Uint8Array(UDP_HEADER + d.data.length);
      const [laddr, lport] = this.local.split("!") as [string, string];
      h.set(ip16(d.address), 0);
      h.set(ip16(laddr), 16);
      h.set(ip16(laddr), 32);
      new DataView(h.buffer).setUint16(48, d.port);
      new DataView(h.buffer).setUint16(50, Number(lport));
      h.set(d.data, UDP_HEADER);
      out = h;
    }
    return out.subarray(0, count);
  }

  /** Send one datagram. */
  async write(data: Uint8Array): Promise<number> {
    if (this.state === "Hungup" || this.#gone) throw new StyxError(Ename.hungup);
    const s = this.#sock;
    if (!s) throw new StyxError("not connected");
    let payload = data;
    let to: { address: string; port: number } | null = null;
    if (this.#headers) {
      if (data.length < UDP_HEADER) {
        throw new StyxError(`udp write of ${data.length} bytes is shorter than its header`);
      }
      to = {
        address: ipString(data.subarray(0, 16)),
        port: new DataView(data.buffer, data.byteOffset).getUint16(48),
      };
      payload = data.subarray(UDP_HEADER);
    } else if (this.state === "Announced") {
      to = this.#last;
      if (!to) throw new StyxError("no one to answer: nothing received yet");
    }
    await new Promise<void>((resolve, reject) => {
      const done = (e: Error | null) => (e ? reject(netError(e)) : resolve());
      if (this.state === "Connected") s.send(payload, done);
      else s.send(payload, to!.port, to!.address, done);
    });
    return data.length;
  }

  /** Close everything and leave the table. */
  teardown(): void {
    if (this.#gone) return;
    this.hangup();
    this.#gone = true;
    this.onGone(this);
  }
}
