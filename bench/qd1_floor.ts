/**
 * A floor for the one-request-at-a-time figures: the least a Deno program
 * can do to answer the QD1 probe's requests. It answers each frame with a
 * canned reply of the right type and tag (nothing is looked up, no file is
 * touched), reading with the runtime's own conn.read and replying with
 * send(2) through FFI, as Ferry's server does when it can. Prints its
 * address first, as `qd1_probe.ts --also` wants.
 *
 *   deno run -A bench/qd1_floor.ts
 *
 * @module
 */

const libc = Deno.dlopen("libc.so.6", {
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
});
const MSG_DONTWAIT = 0x40, MSG_NOSIGNAL = 0x4000;

/** The descriptor Deno keeps under an internal symbol, or -1. */
function fdOf(c: Deno.Conn): number {
  const sym = Object.getOwnPropertySymbols(c).find((s) => s.description === "Deno.internal.fd");
  const fd = sym ? (c as unknown as Record<symbol, unknown>)[sym] : undefined;
  return typeof fd === "number" ? fd : -1;
}

const enc = new TextEncoder();
/** A stat entry named "f", every string "bench". */
const STAT = (() => {
  const names = ["f", "bench", "bench", "bench"];
  const size = 2 + 2 + 4 + 13 + 4 + 4 + 4 + 8 + names.reduce((n, s) => n + 2 + s.length, 0);
  const b = new Uint8Array(2 + size);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, size, true);
  let p = 2 + 2 + 4 + 13 + 4 + 4 + 4 + 8 + 2;
  for (const s of names) {
    dv.setUint16(p, s.length, true);
    b.set(enc.encode(s), p + 2);
    p += 2 + s.length;
  }
  return b;
})();

/** The reply body for a request of `type` in `f` (a whole frame). */
function body(type: number, f: Uint8Array, dv: DataView): Uint8Array {
  switch (type) {
    case 100: // Tversion: the same msize and version back
      return f.slice(7);
    case 104: // Tattach: a qid
      return new Uint8Array(13);
    case 110: { // Twalk: a qid per name
      const nw = dv.getUint16(15, true);
      const b = new Uint8Array(2 + 13 * nw);
      b[0] = nw;
      return b;
    }
    case 112: // Topen: qid and iounit
      return new Uint8Array(17);
    case 118: { // Twrite: the count written
      const b = new Uint8Array(4);
      new DataView(b.buffer).setUint32(0, dv.getUint32(19, true), true);
      return b;
    }
    case 124: { // Tstat: the entry with its own size in front
      const b = new Uint8Array(2 + STAT.length);
      new DataView(b.buffer).setUint16(0, STAT.length, true);
      b.set(STAT, 2);
      return b;
    }
    default: // Tclunk and the rest: nothing
      return new Uint8Array(0);
  }
}

async function answer(c: Deno.Conn): Promise<void> {
  c.setNoDelay(true);
  const fd = fdOf(c);
  const buf = new Uint8Array(65536);
  let have = 0;
  for (;;) {
    const n = await c.read(buf.subarray(have));
    if (n === null) break;
    have += n;
    let off = 0;
    while (have - off >= 7) {
      const dv = new DataView(buf.buffer, off);
      const size = dv.getUint32(0, true);
      if (have - off < size) break;
      const f = buf.subarray(off, off + size);
      const b = body(f[4]!, f, dv);
      const r = new Uint8Array(7 + b.length);
      const rv = new DataView(r.buffer);
      rv.setUint32(0, r.length, true);
      r[4] = f[4]! + 1;
      rv.setUint16(5, dv.getUint16(5, true), true);
      r.set(b, 7);
      const sent = fd >= 0
        ? Number(libc.symbols.send(fd, r, BigInt(r.length), MSG_DONTWAIT | MSG_NOSIGNAL))
        : 0;
      if (sent < r.length) {
        let o = Math.max(0, sent);
        while (o < r.length) o += await c.write(r.subarray(o));
      }
      off += size;
    }
    buf.copyWithin(0, off, have);
    have -= off;
  }
}

const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(`tcp!127.0.0.1!${(l.addr as Deno.NetAddr).port}`);
for await (const c of l) answer(c).catch(() => c.close());
