/**
 * SMS PDUs (3GPP TS 23.040) as a modem sees them, for the simulated AT
 * modem: decode an SMS-SUBMIT the host sends with `+CMGS`, and build the
 * SMS-DELIVER parts of an incoming message for `+CMGR`/`+CMGL`. Texts use
 * the GSM 7-bit default alphabet (TS 23.038, with its extension table) when
 * they can, else UCS-2; long texts are split with an 8-bit concatenation
 * header as phones do.
 *
 * @module
 */

// The default alphabet, indexed by septet; 0x1B (escape) is a placeholder.
const GSM7 = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
  "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const EXT: Record<number, string> = {
  0x0a: "\f",
  0x14: "^",
  0x28: "{",
  0x29: "}",
  0x2f: "\\",
  0x3c: "[",
  0x3d: "~",
  0x3e: "]",
  0x40: "|",
  0x65: "€",
};
const EXT_REV = new Map(Object.entries(EXT).map(([k, v]) => [v, Number(k)]));

/** Septets for `text`, or undefined when it is not all GSM 7-bit. */
export function gsm7Septets(text: string): number[][] | undefined {
  const out: number[][] = [];
  for (const ch of text) {
    const i = ch === "\x1b" ? -1 : GSM7.indexOf(ch);
    if (i >= 0) out.push([i]);
    else if (EXT_REV.has(ch)) out.push([0x1b, EXT_REV.get(ch)!]);
    else return undefined;
  }
  return out;
}

function septetsToText(s: number[]): string {
  let t = "";
  for (let i = 0; i < s.length; i++) {
    if (s[i] === 0x1b && i + 1 < s.length) t += EXT[s[++i]!] ?? " ";
    else t += GSM7[s[i]!] ?? "?";
  }
  return t;
}

/** Pack septets into octets after `fill` padding bits. */
function pack(septets: number[], fill: number): number[] {
  const out: number[] = [];
  let bit = fill;
  for (const s of septets) {
    for (let b = 0; b < 7; b++, bit++) {
      const o = bit >> 3;
      out[o] ??= 0;
      if (s & (1 << b)) out[o]! |= 1 << (bit & 7);
    }
  }
  return out.map((o) => o ?? 0);
}

function unpack(octets: Uint8Array, fill: number, count: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    let s = 0;
    for (let b = 0; b < 7; b++) {
      const bit = fill + i * 7 + b;
      if ((octets[bit >> 3] ?? 0) & (1 << (bit & 7))) s |= 1 << b;
    }
    out.push(s);
  }
  return out;
}

/** Hex (upper case) of `bytes`. */
export function toHex(bytes: ArrayLike<number>): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
}

/** Bytes of hex text; throws on odd length or a non-hex character. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error(`Bad PDU hex '${hex}'`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function encodeAddress(number: string): number[] {
  const intl = number.startsWith("+");
  const digits = intl ? number.slice(1) : number;
  const out = [digits.length, intl ? 0x91 : 0x81];
  for (let i = 0; i < digits.length; i += 2) {
    const lo = Number(digits[i]);
    const hi = i + 1 < digits.length ? Number(digits[i + 1]) : 0xf;
    out.push((hi << 4) | lo);
  }
  return out;
}

function decodeAddress(b: Uint8Array, at: number): { number: string; next: number } {
  const len = b[at]!;
  const toa = b[at + 1]!;
  const octets = Math.ceil(len / 2);
  let digits = "";
  for (let i = 0; i < octets; i++) {
    const o = b[at + 2 + i]!;
    digits += (o & 0xf).toString(16);
    if ((o >> 4) !== 0xf) digits += (o >> 4).toString(16);
  }
  digits = digits.slice(0, len);
  return { number: ((toa & 0x70) === 0x10 ? "+" : "") + digits, next: at + 2 + octets };
}

/** One part of a message as decoded from a PDU. */
export interface SmsPart {
  /** Destination (submit) or originator (deliver). */
  number: string;
  /** "gsm7", "ucs2" or "8bit". */
  encoding: "gsm7" | "ucs2" | "8bit";
  /** This part's text. */
  text: string;
  /** Concatenation reference, total parts and this part's number (1-based); absent when single. */
  concat?: { ref: number; total: number; seq: number };
}

function readUd(
  b: Uint8Array,
  at: number,
  dcs: number,
  udhi: boolean,
): Omit<SmsPart, "number"> {
  const udl = b[at]!;
  const ud = b.subarray(at + 1);
  const alphabet = (dcs & 0x0c) >> 2;
  let headerLen = 0;
  let concat: SmsPart["concat"];
  if (udhi) {
    headerLen = ud[0]! + 1;
    for (let i = 1; i < headerLen;) {
      const iei = ud[i]!;
      const len = ud[i + 1]!;
      if (iei === 0x00 && len === 3) {
        concat = { ref: ud[i + 2]!, total: ud[i + 3]!, seq: ud[i + 4]! };
      }
      if (iei === 0x08 && len === 4) {
        concat = { ref: (ud[i + 2]! << 8) | ud[i + 3]!, total: ud[i + 4]!, seq: ud[i + 5]! };
      }
      i += 2 + len;
    }
  }
  let text: string;
  let encoding: SmsPart["encoding"];
  if (alphabet === 0) {
    encoding = "gsm7";
    const headerSeptets = Math.ceil((headerLen * 8) / 7);
    const fill = headerSeptets * 7 - headerLen * 8;
    const septets = unpack(ud.subarray(headerLen), fill, udl - headerSeptets);
    text = septetsToText(septets);
  } else if (alphabet === 2) {
    encoding = "ucs2";
    const body = ud.subarray(headerLen, udl);
    text = "";
    for (let i = 0; i + 1 < body.length; i += 2) {
      text += String.fromCharCode((body[i]! << 8) | body[i + 1]!);
    }
  } else {
    encoding = "8bit";
    text = new TextDecoder().decode(ud.subarray(headerLen, udl));
  }
  return { encoding, text, ...(concat ? { concat } : {}) };
}

/** Decode an SMS-SUBMIT PDU (with its leading SMSC field) as `+CMGS` carries it. */
export function decodeSubmit(hex: string): SmsPart {
  const b = fromHex(hex);
  let at = 1 + b[0]!; // skip the SMSC address
  const first = b[at++]!;
  if ((first & 0x03) !== 0x01) throw new Error(`Not an SMS-SUBMIT PDU: '${hex}'`);
  const vpf = (first >> 3) & 0x03;
  const udhi = (first & 0x40) !== 0;
  at++; // message reference
  const da = decodeAddress(b, at);
  at = da.next;
  at++; // protocol identifier
  const dcs = b[at++]!;
  if (vpf === 2) at += 1;
  else if (vpf === 1 || vpf === 3) at += 7;
  return { number: da.number, ...readUd(b, at, dcs, udhi) };
}

/** Decode an SMS-DELIVER PDU (with its leading SMSC field). */
export function decodeDeliver(hex: string): SmsPart {
  const b = fromHex(hex);
  let at = 1 + b[0]!;
  const first = b[at++]!;
  const udhi = (first & 0x40) !== 0;
  const oa = decodeAddress(b, at);
  at = oa.next;
  at++; // protocol identifier
  const dcs = b[at++]!;
  at += 7; // service centre time stamp
  return { number: oa.number, ...readUd(b, at, dcs, udhi) };
}

function bcd(n: number): number {
  return ((n % 10) << 4) | Math.floor(n / 10);
}

function timestamp(t: Date): number[] {
  return [
    bcd(t.getUTCFullYear() % 100),
    bcd(t.getUTCMonth() + 1),
    bcd(t.getUTCDate()),
    bcd(t.getUTCHours()),
    bcd(t.getUTCMinutes()),
    bcd(t.getUTCSeconds()),
    0, // UTC
  ];
}

/**
 * The SMS-DELIVER PDUs (hex, with an SMSC field) of `text` from `number`,
 * one per part; a long text gets concatenation reference `ref`.
 */
export function deliverPdus(number: string, text: string, ref: number, time: Date): string[] {
  const smsc = [0x07, 0x91, 0x64, 0x07, 0x05, 0x10, 0x99, 0xf9]; // +46705001999
  const septets = gsm7Septets(text);
  const chunks: { ud: number[]; udl: number }[] = [];
  if (septets) {
    const total = septets.reduce((a, s) => a + s.length, 0);
    const per = total <= 160 ? 160 : 153;
    const groups: number[][] = [];
    let cur: number[] = [];
    for (const s of septets) {
      if (cur.length + s.length > per) {
        groups.push(cur);
        cur = [];
      }
      cur.push(...s);
    }
    groups.push(cur);
    for (const [i, g] of groups.entries()) {
      if (groups.length === 1) chunks.push({ ud: pack(g, 0), udl: g.length });
      else {
        const udh = [5, 0x00, 3, ref & 0xff, groups.length, i + 1];
        // 6 header octets take 7 septets: one fill bit.
        chunks.push({ ud: [...udh, ...pack(g, 1)], udl: 7 + g.length });
      }
    }
  } else {
    const units = Array.from(text, (c) => c); // never split a surrogate pair
    const total = text.length;
    const per = total <= 70 ? 70 : 67;
    const groups: string[] = [];
    let cur = "";
    for (const u of units) {
      if (cur.length + u.length > per) {
        groups.push(cur);
        cur = "";
      }
      cur += u;
    }
    groups.push(cur);
    for (const [i, g] of groups.entries()) {
      const body: number[] = [];
      for (let k = 0; k < g.length; k++) body.push(g.charCodeAt(k) >> 8, g.charCodeAt(k) & 0xff);
      const udh = groups.length === 1 ? [] : [5, 0x00, 3, ref & 0xff, groups.length, i + 1];
      chunks.push({ ud: [...udh, ...body], udl: udh.length + body.length });
    }
  }
  const multi = chunks.length > 1;
  return chunks.map((c) =>
    toHex([
      ...smsc,
      0x04 | (multi ? 0x40 : 0), // SMS-DELIVER, no more messages waiting
      ...encodeAddress(number),
      0x00,
      septets ? 0x00 : 0x08,
      ...timestamp(time),
      c.udl,
      ...c.ud,
    ])
  );
}
