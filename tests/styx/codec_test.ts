import assert from "node:assert/strict";
import {
  CodecError,
  decode,
  decodeDir,
  decodeDirs,
  encode,
  encodeDir,
  encodeHeader,
  encodeWith,
  isRMsg,
  isTMsg,
  msgName,
  sizeofDir,
  sizeofMsg,
} from "../../lib/styx/codec.ts";
import { utf8Length } from "../../lib/bytes.ts";
import { formatMsg, traceEnabled } from "../../lib/styx/trace.ts";
import {
  type Dir,
  type Msg,
  MsgType,
  NOFID,
  NOTAG,
  nullDir,
  type Qid,
} from "../../lib/styx/types.ts";

/** Bytes from hex, ignoring spaces; golden frames are written field by field. */
function hex(s: string): Uint8Array {
  const h = s.replace(/\s+/g, "");
  assert.equal(h.length % 2, 0, `odd hex string ${s}`);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function ascii(s: string): string {
  return Array.from(new TextEncoder().encode(s), (b) => b.toString(16).padStart(2, "0")).join("");
}

const glendaDir: Dir = {
  type: 0,
  dev: 0,
  qid: { type: 0x80, version: 0, path: 1n },
  mode: 0x800001ed,
  atime: 1000000000,
  mtime: 1000000000,
  length: 0n,
  name: "/",
  uid: "glenda",
  gid: "glenda",
  muid: "glenda",
};

/**
 * One golden frame per message type, laid out by hand from intro(5) and the
 * message pages: size[4] type[1] tag[2] then the fields in order.
 */
const golden: [string, Msg, string][] = [
  [
    "Tversion (as Inferno's mount -A sends it: 19 bytes)",
    { type: MsgType.Tversion, tag: NOTAG, msize: 8216, version: "9P2000" },
    `13000000 64 ffff 18200000 0600 ${ascii("9P2000")}`,
  ],
  [
    "Rversion",
    { type: MsgType.Rversion, tag: NOTAG, msize: 8192, version: "9P2000" },
    `13000000 65 ffff 00200000 0600 ${ascii("9P2000")}`,
  ],
  [
    "Tauth",
    { type: MsgType.Tauth, tag: 1, afid: 5, uname: "ab", aname: "" },
    `11000000 66 0100 05000000 0200 6162 0000`,
  ],
  [
    "Rauth",
    { type: MsgType.Rauth, tag: 1, aqid: { type: 0x08, version: 0, path: 1n } },
    `14000000 67 0100 08 00000000 0100000000000000`,
  ],
  [
    "Tattach with afid NOFID",
    { type: MsgType.Tattach, tag: 1, fid: 0, afid: NOFID, uname: "glenda", aname: "" },
    `19000000 68 0100 00000000 ffffffff 0600 ${ascii("glenda")} 0000`,
  ],
  [
    "Rattach (qid.path little-endian u64)",
    { type: MsgType.Rattach, tag: 1, qid: { type: 0x80, version: 0, path: 0x0102030405060708n } },
    `14000000 69 0100 80 00000000 0807060504030201`,
  ],
  [
    "Rerror",
    { type: MsgType.Rerror, tag: 1, ename: "file does not exist" },
    `1c000000 6b 0100 1300 ${ascii("file does not exist")}`,
  ],
  ["Tflush", { type: MsgType.Tflush, tag: 2, oldtag: 1 }, `09000000 6c 0200 0100`],
  ["Rflush", { type: MsgType.Rflush, tag: 2 }, `07000000 6d 0200`],
  [
    "Twalk",
    { type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: ["usr", "glenda"] },
    `1e000000 6e 0100 00000000 01000000 0200 0300 ${ascii("usr")} 0600 ${ascii("glenda")}`,
  ],
  [
    "Rwalk",
    {
      type: MsgType.Rwalk,
      tag: 1,
      wqids: [{ type: 0x80, version: 0, path: 5n }, { type: 0, version: 3, path: 6n }],
    },
    `23000000 6f 0100 0200 80 00000000 0500000000000000 00 03000000 0600000000000000`,
  ],
  [
    "Topen with OTRUNC|OWRITE",
    { type: MsgType.Topen, tag: 1, fid: 1, mode: 0x11 },
    `0c000000 70 0100 01000000 11`,
  ],
  [
    "Ropen",
    { type: MsgType.Ropen, tag: 1, qid: { type: 0, version: 1, path: 6n }, iounit: 8192 },
    `18000000 71 0100 00 01000000 0600000000000000 00200000`,
  ],
  [
    "Tcreate (perm 0666, OWRITE, as Inferno sends it)",
    { type: MsgType.Tcreate, tag: 1, fid: 1, name: "new", perm: 0o666, mode: 1 },
    `15000000 72 0100 01000000 0300 ${ascii("new")} b6010000 01`,
  ],
  [
    "Rcreate",
    { type: MsgType.Rcreate, tag: 1, qid: { type: 0, version: 0, path: 7n }, iounit: 0 },
    `18000000 73 0100 00 00000000 0700000000000000 00000000`,
  ],
  [
    "Tread at 4 GiB",
    { type: MsgType.Tread, tag: 1, fid: 1, offset: 0x100000000n, count: 8192 },
    `17000000 74 0100 01000000 0000000001000000 00200000`,
  ],
  [
    "Rread",
    { type: MsgType.Rread, tag: 1, data: new TextEncoder().encode("hello") },
    `10000000 75 0100 05000000 ${ascii("hello")}`,
  ],
  [
    "Twrite",
    { type: MsgType.Twrite, tag: 1, fid: 1, offset: 10n, data: new TextEncoder().encode("hi") },
    `19000000 76 0100 01000000 0a00000000000000 02000000 ${ascii("hi")}`,
  ],
  ["Rwrite", { type: MsgType.Rwrite, tag: 1, count: 2 }, `0b000000 77 0100 02000000`],
  ["Tclunk", { type: MsgType.Tclunk, tag: 1, fid: 1 }, `0b000000 78 0100 01000000`],
  ["Rclunk", { type: MsgType.Rclunk, tag: 1 }, `07000000 79 0100`],
  ["Tremove", { type: MsgType.Tremove, tag: 1, fid: 1 }, `0b000000 7a 0100 01000000`],
  ["Rremove", { type: MsgType.Rremove, tag: 1 }, `07000000 7b 0100`],
  ["Tstat", { type: MsgType.Tstat, tag: 1, fid: 1 }, `0b000000 7c 0100 01000000`],
  [
    // stat(5) BUGS: "(4+1+2+2+n)[4] Rstat tag[2] n[2] (n-2)[2] type[2] dev[4]..."
    "Rstat with its double size",
    { type: MsgType.Rstat, tag: 1, stat: glendaDir },
    `4d000000 7d 0100 4400 4200 0000 00000000 80 00000000 0100000000000000 ed010080
     00ca9a3b 00ca9a3b 0000000000000000 0100 2f 0600 ${ascii("glenda")} 0600 ${ascii("glenda")}
     0600 ${ascii("glenda")}`,
  ],
  [
    "Twstat with don't-touch fields (a rename)",
    { type: MsgType.Twstat, tag: 1, fid: 1, stat: { ...nullDir(), name: "x" } },
    `3f000000 7e 0100 01000000 3200 3000 ffff ffffffff ff ffffffff ffffffffffffffff
     ffffffff ffffffff ffffffff ffffffffffffffff 0100 78 0000 0000 0000`,
  ],
  ["Rwstat", { type: MsgType.Rwstat, tag: 1 }, `07000000 7f 0100`],
];

// A small seeded PRNG (mulberry32), so failures reproduce.
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  constructor(readonly rnd: () => number) {}
  int(max: number): number {
    return Math.floor(this.rnd() * (max + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length - 1)]!;
  }
  u8(): number {
    return this.pick([0, 1, 0xff, this.int(0xff)]);
  }
  u16(): number {
    return this.pick([0, 1, 0xffff, this.int(0xffff)]);
  }
  u32(): number {
    return this.pick([0, 1, 0xffffffff, this.int(0xffffffff)]);
  }
  u64(): bigint {
    const hi = BigInt(this.u32());
    const lo = BigInt(this.int(0xffffffff));
    return this.pick([0n, 1n, 0xffffffffffffffffn, (hi << 32n) | lo]);
  }
  str(): string {
    const pieces = ["a", "Z", "0", " ", ".", "/", "é", "ß", "€", "世", "😀", "\u{10ffff}", "\x7f"];
    const n = this.pick([0, 1, 3, this.int(40)]);
    let s = "";
    for (let i = 0; i < n; i++) s += this.pick(pieces);
    return s;
  }
  qid(): Qid {
    return { type: this.u8(), version: this.u32(), path: this.u64() };
  }
  dir(): Dir {
    return {
      type: this.u16(),
      dev: this.u32(),
      qid: this.qid(),
      mode: this.u32(),
      atime: this.u32(),
      mtime: this.u32(),
      length: this.u64(),
      name: this.str(),
      uid: this.str(),
      gid: this.str(),
      muid: this.str(),
    };
  }
  data(): Uint8Array {
    const b = new Uint8Array(this.pick([0, 1, this.int(300), this.int(9000)]));
    for (let i = 0; i < b.length; i++) b[i] = this.int(255);
    return b;
  }
  msg(type: number): Msg {
    const tag = this.u16();
    switch (type) {
      case MsgType.Tversion:
      case MsgType.Rversion:
        return { type, tag, msize: this.u32(), version: this.str() };
      case MsgType.Tauth:
        return { type, tag, afid: this.u32(), uname: this.str(), aname: this.str() };
      case MsgType.Rauth:
        return { type, tag, aqid: this.qid() };
      case MsgType.Tattach:
        return {
          type,
          tag,
          fid: this.u32(),
          afid: this.u32(),
          uname: this.str(),
          aname: this.str(),
        };
      case MsgType.Rattach:
        return { type, tag, qid: this.qid() };
      case MsgType.Rerror:
        return { type, tag, ename: this.str() };
      case MsgType.Tflush:
        return { type, tag, oldtag: this.u16() };
      case MsgType.Twalk: {
        const wnames = Array.from({ length: this.int(16) }, () => this.str());
        return { type, tag, fid: this.u32(), newfid: this.u32(), wnames };
      }
      case MsgType.Rwalk:
        return { type, tag, wqids: Array.from({ length: this.int(16) }, () => this.qid()) };
      case MsgType.Topen:
        return { type, tag, fid: this.u32(), mode: this.u8() };
      case MsgType.Ropen:
      case MsgType.Rcreate:
        return { type, tag, qid: this.qid(), iounit: this.u32() };
      case MsgType.Tcreate:
        return { type, tag, fid: this.u32(), name: this.str(), perm: this.u32(), mode: this.u8() };
      case MsgType.Tread:
        return { type, tag, fid: this.u32(), offset: this.u64(), count: this.u32() };
      case MsgType.Rread:
        return { type, tag, data: this.data() };
      case MsgType.Twrite:
        return { type, tag, fid: this.u32(), offset: this.u64(), data: this.data() };
      case MsgType.Rwrite:
        return { type, tag, count: this.u32() };
      case MsgType.Tclunk:
      case MsgType.Tremove:
      case MsgType.Tstat:
        return { type, tag, fid: this.u32() };
      case MsgType.Rstat:
        return { type, tag, stat: this.dir() };
      case MsgType.Twstat:
        return { type, tag, fid: this.u32(), stat: this.dir() };
      case MsgType.Rflush:
      case MsgType.Rclunk:
      case MsgType.Rremove:
      case MsgType.Rwstat:
        return { type, tag };
    }
    throw new Error(`no generator for type ${type}`);
  }
}

const allTypes = Object.values(MsgType);

/** Decode, asserting that nothing but a CodecError escapes. */
function decodeOrCodecError(frame: Uint8Array, msize?: number): Msg | CodecError {
  try {
    return decode(frame, msize);
  } catch (e) {
    if (e instanceof CodecError) return e;
    throw new Error(`decode threw a non-CodecError: ${e}`, { cause: e });
  }
}

function expectCodecError(f: () => unknown, re: RegExp, tag?: number): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof CodecError, `expected CodecError, got ${e}`);
    assert.match(e.message, re);
    if (tag !== undefined) assert.equal(e.tag, tag);
    return true;
  });
}

Deno.test("codec: golden bytes from the manual", async (t) => {
  for (const [name, msg, bytes] of golden) {
    await t.step(name, () => {
      const want = hex(bytes);
      const got = encode(msg);
      assert.deepEqual(got, want);
      assert.equal(sizeofMsg(msg), want.length);
      assert.deepEqual(decode(want), msg);
      assert.deepEqual(decode(want, want.length), msg);
    });
  }
  await t.step("every message type has a golden frame", () => {
    const covered = new Set(golden.map(([, m]) => m.type));
    for (const type of allTypes) assert.ok(covered.has(type), `no golden frame for ${type}`);
  });
  await t.step("Rread/Twrite data is a view of the frame, not a copy", () => {
    const frame = hex(golden.find(([n]) => n === "Rread")![2]);
    const m = decode(frame);
    assert.equal(m.type, MsgType.Rread);
    if (m.type !== MsgType.Rread) return;
    assert.equal(m.data.buffer, frame.buffer);
    assert.equal(m.data.byteOffset, 11);
    // A frame that is itself a view into a larger buffer decodes in place too.
    const big = new Uint8Array(100);
    big.set(frame, 40);
    const m2 = decode(big.subarray(40, 40 + frame.length));
    if (m2.type !== MsgType.Rread) throw new Error("wrong type");
    assert.equal(m2.data.buffer, big.buffer);
    assert.equal(new TextDecoder().decode(m2.data), "hello");
  });
  await t.step("directory entries", () => {
    const e = encodeDir(glendaDir);
    assert.equal(e.length, 68);
    assert.equal(sizeofDir(glendaDir), 68);
    // The entry is the Rstat frame after size[4] type[1] tag[2] n[2].
    const rstat = hex(golden.find(([n]) => n.startsWith("Rstat"))![2]);
    assert.deepEqual(e, rstat.subarray(9));
    const two = new Uint8Array([...e, ...encodeDir({ ...glendaDir, name: "lib" })]);
    assert.deepEqual(decodeDirs(two).map((d) => d.name), ["/", "lib"]);
    const { dir, next } = decodeDir(two, 68);
    assert.equal(dir.name, "lib");
    assert.equal(next, two.length);
    assert.deepEqual(decodeDirs(new Uint8Array(0)), []);
  });
});

Deno.test("codec: names, kinds and UTF-8 lengths", async (t) => {
  await t.step("msgName and isTMsg/isRMsg", () => {
    for (const [name, type] of Object.entries(MsgType)) {
      assert.equal(msgName(type), name);
      const m = new Gen(prng(type)).msg(type);
      assert.equal(isTMsg(m), name.startsWith("T"));
      assert.equal(isRMsg(m), name.startsWith("R"));
    }
    assert.equal(msgName(106), "unknown type 106");
  });
  await t.step("string lengths are UTF-8 bytes", () => {
    const m: Msg = { type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: ["héllo", "😀"] };
    const f = encode(m);
    // 7 + 4 + 4 + 2 + (2 + 6) + (2 + 4)
    assert.equal(f.length, 31);
    assert.deepEqual(decode(f), m);
  });
  await t.step("utf8Length agrees with TextEncoder, lone surrogates included", () => {
    const g = new Gen(prng(7));
    const units = [
      0x41,
      0x7f,
      0x80,
      0x7ff,
      0x800,
      0xd7ff,
      0xd800,
      0xdbff,
      0xdc00,
      0xdfff,
      0xe000,
      0xffff,
    ];
    for (let i = 0; i < 2000; i++) {
      const n = g.int(8);
      let s = "";
      for (let j = 0; j < n; j++) s += String.fromCharCode(g.pick(units));
      assert.equal(utf8Length(s), new TextEncoder().encode(s).length, JSON.stringify(s));
    }
  });
});

Deno.test("codec: round trip of random messages of every type", () => {
  const g = new Gen(prng(0x9f2000));
  let n = 0;
  for (let i = 0; i < 200; i++) {
    for (const type of allTypes) {
      const m = g.msg(type);
      const f = encode(m);
      assert.equal(f.length, sizeofMsg(m));
      assert.equal(new DataView(f.buffer).getUint32(0, true), f.length);
      const back = decode(f, f.length);
      assert.deepEqual(back, m, `round trip of ${formatMsg(m)}`);
      assert.deepEqual(encode(back), f);
      n++;
    }
  }
  assert.ok(n >= 5000);
});

Deno.test("codec: hostile frames give a clear CodecError", async (t) => {
  const tclunk = hex("0b000000 78 0500 01000000");
  const withSize = (b: Uint8Array) => {
    new DataView(b.buffer, b.byteOffset).setUint32(0, b.length, true);
    return b;
  };
  await t.step("frame shorter than the header", () => {
    expectCodecError(() => decode(new Uint8Array(0)), /shorter than the 7-byte header/);
    expectCodecError(() => decode(hex("06000000 78 01")), /shorter than the 7-byte header/);
  });
  await t.step("size field below 7", () => {
    expectCodecError(() => decode(hex("05000000 79 0100")), /size 5 is below the minimum/);
  });
  await t.step("size above msize", () => {
    expectCodecError(() => decode(tclunk, 10), /size 11 exceeds msize 10/);
  });
  await t.step("size field disagrees with the frame", () => {
    expectCodecError(() => decode(tclunk.subarray(0, 10)), /says 11 bytes but the frame has 10/);
    const longer = new Uint8Array(12);
    longer.set(tclunk);
    expectCodecError(() => decode(longer), /says 11 bytes but the frame has 12/);
  });
  await t.step("unknown types keep the tag", () => {
    for (const type of [0, 99, 106, 128, 255]) {
      const f = hex("07000000 00 3412");
      f[4] = type;
      expectCodecError(() => decode(f), new RegExp(`unknown message type ${type}`), 0x1234);
    }
  });
  await t.step("trailing garbage", () => {
    const f = withSize(hex("00000000 78 0500 01000000 00"));
    expectCodecError(() => decode(f), /Tclunk: 1 bytes of trailing garbage/, 5);
    expectCodecError(() => decode(withSize(hex("00000000 79 0500 00"))), /Rclunk.*trailing/, 5);
  });
  await t.step("truncated fields", () => {
    expectCodecError(
      () => decode(withSize(hex("00000000 78 0500 0100"))),
      /Tclunk: truncated at fid/,
      5,
    );
    expectCodecError(
      () => decode(withSize(hex("00000000 74 0900 01000000 00000000"))),
      /Tread: truncated at offset/,
      9,
    );
  });
  await t.step("truncated string", () => {
    const f = withSize(hex(`00000000 64 ffff 18200000 0a00 ${ascii("9P2000")}`));
    expectCodecError(
      () => decode(f),
      /Tversion: string version claims 10 bytes but only 6 remain/,
      NOTAG,
    );
    expectCodecError(
      () => decode(withSize(hex("00000000 6b 0100 05"))),
      /Rerror: truncated at ename/,
    );
  });
  await t.step("counts that overrun the frame", () => {
    const rread = withSize(hex(`00000000 75 0100 ffffffff ${ascii("hello")}`));
    expectCodecError(
      () => decode(rread),
      /Rread: data claims 4294967295 bytes but only 5 remain/,
      1,
    );
    const twrite = withSize(
      hex(`00000000 76 0100 01000000 0000000000000000 06000000 ${ascii("hello")}`),
    );
    expectCodecError(() => decode(twrite), /Twrite: data claims 6 bytes/, 1);
    // Twalk claiming 16 names with only one present.
    const twalk = withSize(hex(`00000000 6e 0200 00000000 01000000 1000 0300 ${ascii("usr")}`));
    expectCodecError(() => decode(twalk), /Twalk: truncated at wname\[1\]/, 2);
    const rwalk = withSize(hex("00000000 6f 0200 0300 80 00000000 0500000000000000"));
    expectCodecError(() => decode(rwalk), /Rwalk: truncated at wqid\[1\]/, 2);
  });
  await t.step("more than 16 walk names or qids", () => {
    const twalk = withSize(hex("00000000 6e 0300 00000000 01000000 1100" + "0000".repeat(17)));
    expectCodecError(() => decode(twalk), /Twalk: nwname 17 exceeds the maximum of 16/, 3);
    const huge = withSize(hex("00000000 6e 0300 00000000 01000000 ffff"));
    expectCodecError(() => decode(huge), /nwname 65535 exceeds/, 3);
    const rwalk = withSize(hex("00000000 6f 0300 1100" + "00".repeat(13 * 17)));
    expectCodecError(() => decode(rwalk), /Rwalk: nwqid 17 exceeds the maximum of 16/, 3);
  });
  await t.step("names that are not valid UTF-8 or hold NUL", () => {
    const bad = withSize(hex("00000000 6e 0400 00000000 01000000 0100 0200 c328"));
    expectCodecError(() => decode(bad), /Twalk: wname\[0\] is not valid UTF-8/, 4);
    const overlong = withSize(hex("00000000 6e 0400 00000000 01000000 0100 0200 c0af"));
    expectCodecError(() => decode(overlong), /not valid UTF-8/, 4);
    const longBad = withSize(hex(`00000000 6b 0400 2800 ${"61".repeat(39)}ff`));
    expectCodecError(() => decode(longBad), /Rerror: ename is not valid UTF-8/, 4);
    const nul = withSize(hex("00000000 6e 0400 00000000 01000000 0100 0300 610062"));
    expectCodecError(() => decode(nul), /wname\[0\] contains NUL/, 4);
    const longNul = withSize(hex(`00000000 6b 0400 2800 ${"c3a9".repeat(19)}0061`));
    expectCodecError(() => decode(longNul), /ename contains NUL/, 4);
  });
  await t.step("stat sizes that disagree", () => {
    const good = hex(golden.find(([n]) => n.startsWith("Rstat"))![2]);
    // Outer n too large for the frame.
    const a = good.slice();
    a[7] = 0x45;
    expectCodecError(() => decode(a), /Rstat: nstat 69 overruns the message/, 1);
    // Outer n smaller than the entry.
    const b = withSize(new Uint8Array([...good, 0]));
    b[7] = 0x45;
    b[9] = 0x43;
    expectCodecError(() => decode(b), /stat entry has 1 bytes of trailing garbage/, 1);
    const c = good.slice();
    c[7] = 0x43;
    expectCodecError(() => decode(c), /nstat 67 disagrees/, 1);
    // Inner size too small to hold the fields it claims.
    const d = good.slice();
    d[9] = 0x10;
    expectCodecError(() => decode(d), /Rstat: /, 1);
    // A directory read that ends inside an entry.
    const e = encodeDir(glendaDir);
    expectCodecError(() => decodeDirs(e.subarray(0, 40)), /directory read: stat entry claims 66/);
    expectCodecError(() => decodeDirs(new Uint8Array([1])), /truncated at stat size/);
    expectCodecError(() => decodeDir(e, 69), /outside a 68-byte buffer/);
    expectCodecError(() => decodeDir(e, -1), /outside/);
  });
});

Deno.test("codec: fuzzed bytes give only CodecError", () => {
  const g = new Gen(prng(0xf022));
  const seeds = golden.map(([, , b]) => hex(b));
  for (let i = 0; i < 300; i++) seeds.push(encode(g.msg(g.pick(allTypes))));
  let ok = 0;
  let rejected = 0;
  for (let i = 0; i < 20000; i++) {
    let b: Uint8Array;
    if (i % 10 === 0) {
      // Wholly random bytes.
      b = new Uint8Array(g.int(64));
      for (let j = 0; j < b.length; j++) b[j] = g.int(255);
      if (b.length >= 7 && g.rnd() < 0.5) b[4] = 100 + g.int(27);
    } else {
      const arr = Array.from(g.pick(seeds));
      const edits = 1 + g.int(3);
      for (let k = 0; k < edits; k++) {
        const at = g.int(Math.max(arr.length - 1, 0));
        switch (g.int(4)) {
          case 0:
            arr[at] = g.int(255);
            break;
          case 1:
            arr[at] = (arr[at] ?? 0) ^ (1 << g.int(7));
            break;
          case 2:
            arr.splice(at, 0, g.int(255));
            break;
          case 3:
            arr.splice(at, 1 + g.int(3));
            break;
          case 4:
            arr.length = at;
            break;
        }
      }
      b = new Uint8Array(arr);
    }
    // Usually keep the size field honest so the body parser is reached.
    if (b.length >= 4 && g.rnd() < 0.8) new DataView(b.buffer).setUint32(0, b.length, true);
    const r = decodeOrCodecError(b, g.pick([undefined, 8216, 65536]));
    if (r instanceof CodecError) {
      rejected++;
      assert.ok(r.message.length > 0);
    } else {
      ok++;
      // Whatever decodes must encode back to the same bytes.
      assert.deepEqual(encode(r), b);
    }
    try {
      decodeDirs(b);
    } catch (e) {
      if (!(e instanceof CodecError)) throw e;
    }
  }
  assert.ok(ok > 100, `only ${ok} mutated frames decoded`);
  assert.ok(rejected > 1000, `only ${rejected} mutated frames rejected`);
});

Deno.test("codec: messages that cannot be encoded", async (t) => {
  await t.step("numbers out of range", () => {
    expectCodecError(
      () => encode({ type: MsgType.Tclunk, tag: 1, fid: -1 }),
      /Tclunk fid '-1' is out of range/,
    );
    expectCodecError(() => encode({ type: MsgType.Tclunk, tag: 1, fid: 2 ** 32 }), /out of range/);
    expectCodecError(() => encode({ type: MsgType.Tclunk, tag: 1, fid: 1.5 }), /out of range/);
    expectCodecError(() => encode({ type: MsgType.Tclunk, tag: 0x10000, fid: 1 }), /Tclunk tag/);
    expectCodecError(
      () => encode({ type: MsgType.Topen, tag: 1, fid: 1, mode: 256 }),
      /Topen mode/,
    );
    expectCodecError(
      () => encode({ type: MsgType.Tread, tag: 1, fid: 1, offset: -1n, count: 1 }),
      /Tread offset '-1' is not a u64/,
    );
    expectCodecError(
      () => encode({ type: MsgType.Tread, tag: 1, fid: 1, offset: 2n ** 64n, count: 1 }),
      /not a u64/,
    );
    expectCodecError(
      () => encode({ type: MsgType.Rattach, tag: 1, qid: { type: 0, version: 0, path: -2n } }),
      /Rattach qid.path/,
    );
    expectCodecError(
      () => encode({ type: MsgType.Rstat, tag: 1, stat: { ...glendaDir, mode: -1 } }),
      /Rstat stat.mode/,
    );
  });
  await t.step("too many walk names", () => {
    const wnames = Array.from({ length: 17 }, (_, i) => `d${i}`);
    expectCodecError(
      () => encode({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames }),
      /Twalk has 17 names; at most 16 fit/,
    );
  });
  await t.step("strings too long or holding NUL", () => {
    expectCodecError(
      () => encode({ type: MsgType.Rerror, tag: 1, ename: "x".repeat(65536) }),
      /Rerror ename is 65536 bytes long/,
    );
    assert.equal(encode({ type: MsgType.Rerror, tag: 1, ename: "x".repeat(65535) }).length, 65544);
    expectCodecError(
      () => encode({ type: MsgType.Twalk, tag: 1, fid: 0, newfid: 1, wnames: ["a\0b"] }),
      /Twalk wname 'a\\0b' contains NUL/,
    );
  });
  await t.step("unknown type", () => {
    expectCodecError(() => encode({ type: 106, tag: 1 } as unknown as Msg), /unknown type '106'/);
  });
});

function goldenMsg(prefix: string): Msg {
  const g = golden.find(([n]) => n.startsWith(prefix));
  if (!g) throw new Error(`no golden message ${prefix}`);
  return g[1];
}

Deno.test("trace: messages print as Plan 9's fcall does", async (t) => {
  await t.step("golden messages", () => {
    const lines = golden.map(([, m]) => formatMsg(m));
    assert.equal(lines[0], "Tversion tag 65535 msize 8216 version '9P2000'");
    assert.equal(
      formatMsg(goldenMsg("Tattach")),
      "Tattach tag 1 fid 0 afid -1 uname 'glenda' aname ''",
    );
    assert.equal(
      formatMsg(goldenMsg("Twalk")),
      "Twalk tag 1 fid 0 newfid 1 nwname 2 0:'usr' 1:'glenda'",
    );
    assert.equal(
      formatMsg(goldenMsg("Rwalk")),
      "Rwalk tag 1 nwqid 2 0:(0000000000000005 0 d) 1:(0000000000000006 3 )",
    );
    assert.equal(formatMsg(goldenMsg("Rread")), "Rread tag 1 count 5 'hello'");
    assert.equal(
      formatMsg(goldenMsg("Tcreate")),
      "Tcreate tag 1 fid 1 name 'new' perm ----rw-rw-rw- mode 1",
    );
    assert.match(
      formatMsg(goldenMsg("Rstat")),
      /^Rstat tag 1 stat '\/' 'glenda' 'glenda' 'glenda' q \(0000000000000001 0 d\) m 020000000755/,
    );
    for (const l of lines) assert.doesNotMatch(l, /undefined|\[object/);
  });
  await t.step("long or binary data is shortened", () => {
    const data = new Uint8Array(8192).fill(0x61);
    assert.equal(
      formatMsg({ type: MsgType.Rread, tag: 1, data }),
      `Rread tag 1 count 8192 '${"a".repeat(64)}...'`,
    );
    assert.equal(
      formatMsg({
        type: MsgType.Twrite,
        tag: 2,
        fid: 3,
        offset: 4n,
        data: new Uint8Array([0, 255]),
      }),
      "Twrite tag 2 fid 3 offset 4 count 2 00ff",
    );
  });
  await t.step("traceEnabled follows FERRY_TRACE", () => {
    const old = Deno.env.get("FERRY_TRACE");
    try {
      Deno.env.set("FERRY_TRACE", "1");
      assert.equal(traceEnabled(), true);
      Deno.env.set("FERRY_TRACE", "0");
      assert.equal(traceEnabled(), false);
      Deno.env.delete("FERRY_TRACE");
      assert.equal(traceEnabled(), false);
    } finally {
      if (old === undefined) Deno.env.delete("FERRY_TRACE");
      else Deno.env.set("FERRY_TRACE", old);
    }
  });
});

Deno.test("encodeHeader writes the bytes encode puts before the data", () => {
  const data = new Uint8Array([9, 8, 7, 6]);
  const msgs = [
    { type: MsgType.Rread, tag: 0x1234, data } as const,
    { type: MsgType.Twrite, tag: 3, fid: 0x01020304, offset: 0x0102030405060708n, data } as const,
  ];
  for (const m of msgs) {
    const whole = encode(m);
    const head = new Uint8Array(whole.length - data.length);
    assert.equal(encodeHeader(m, head), head.length);
    assert.deepEqual([...head, ...data], [...whole], `${m.type}`);
  }
  assert.throws(
    () => encodeHeader({ type: MsgType.Rread, tag: 1, data }, new Uint8Array(10)),
    /Rread header needs 11 bytes; the buffer has 10/,
  );
});

Deno.test("codec: Rclunk, Rwrite and Rwalk, written by hand, lay down the bytes walk(5) and write(5) give", () => {
  const arena = new Uint8Array(256);
  const at = (n: number) => arena.subarray(8, 8 + n);
  assert.deepEqual([...encodeWith({ type: MsgType.Rclunk, tag: 0x1234 }, at)], [
    7,
    0,
    0,
    0,
    121,
    0x34,
    0x12,
  ]);
  assert.deepEqual([...encode({ type: MsgType.Rwrite, tag: 1, count: 0xfffffffe })], [
    11,
    0,
    0,
    0,
    119,
    1,
    0,
    0xfe,
    0xff,
    0xff,
    0xff,
  ]);
  const wqids = [
    { type: 0x80, version: 0xffffffff, path: 0xfedcba9876543210n },
    { type: 0, version: 2, path: 2n ** 53n - 1n },
  ];
  const f = encode({ type: MsgType.Rwalk, tag: 9, wqids });
  assert.deepEqual([...f], [
    35,
    0,
    0,
    0,
    111,
    9,
    0,
    2,
    0,
    0x80,
    0xff,
    0xff,
    0xff,
    0xff,
    0x10,
    0x32,
    0x54,
    0x76,
    0x98,
    0xba,
    0xdc,
    0xfe,
    0,
    2,
    0,
    0,
    0,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0xff,
    0x1f,
    0,
  ]);
  assert.deepEqual(decode(f), { type: MsgType.Rwalk, tag: 9, wqids });
  expectCodecError(() => encode({ type: MsgType.Rclunk, tag: 70000 }), /Rclunk tag '70000'/);
  expectCodecError(
    () => encode({ type: MsgType.Rwrite, tag: 1, count: -1 }),
    /Rwrite count '-1' is out of range/,
  );
  expectCodecError(
    () => encode({ type: MsgType.Rwalk, tag: 1, wqids: [{ type: 0, version: 0, path: -1n }] }),
    /Rwalk wqid.path '-1' is not a u64 bigint/,
  );
  expectCodecError(
    () => encode({ type: MsgType.Rwalk, tag: 1, wqids: [{ type: 256, version: 0, path: 0n }] }),
    /Rwalk wqid.type '256' is out of range/,
  );
});
