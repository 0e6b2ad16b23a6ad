import assert from "node:assert/strict";
import {
  decodeBatchForgetIn,
  decodeCreateIn,
  decodeMkdirIn,
  decodeReadIn,
  decodeRenameIn,
  decodeSetattrIn,
  decodeWriteIn,
  Fattr,
} from "../../lib/fuse/proto.ts";

const enc = new TextEncoder();

/** A request body laid out field by field, as include/uapi/linux/fuse.h has it. */
function body(size: number, fill: (v: DataView) => void, tail = ""): Uint8Array {
  const name = enc.encode(tail);
  const b = new Uint8Array(size + name.length);
  fill(new DataView(b.buffer));
  b.set(name, size);
  return b;
}

Deno.test("FUSE request bodies decode as the kernel lays them out", async (t) => {
  await t.step("fuse_setattr_in", () => {
    const b = body(88, (v) => {
      v.setUint32(0, Fattr.SIZE | Fattr.MODE | Fattr.MTIME, true); // valid
      v.setBigUint64(8, 9n, true); // fh
      v.setBigUint64(16, 4096n, true); // size
      v.setBigUint64(32, 111n, true); // atime
      v.setBigUint64(40, 222n, true); // mtime
      v.setUint32(68, 0o100640, true); // mode
      v.setUint32(76, 1000, true); // uid
      v.setUint32(80, 1001, true); // gid
    });
    assert.deepEqual(decodeSetattrIn(b), {
      valid: Fattr.SIZE | Fattr.MODE | Fattr.MTIME,
      size: 4096n,
      atime: 111n,
      mtime: 222n,
      mode: 0o100640,
      uid: 1000,
      gid: 1001,
    });
  });

  await t.step("fuse_read_in and fuse_write_in with its data", () => {
    const r = body(40, (v) => {
      v.setBigUint64(0, 5n, true);
      v.setBigUint64(8, 1n << 40n, true);
      v.setUint32(16, 131072, true);
    });
    assert.deepEqual(decodeReadIn(r), { fh: 5n, offset: 1n << 40n, size: 131072 });
    const w = body(40, (v) => {
      v.setBigUint64(0, 6n, true);
      v.setBigUint64(8, 10n, true);
      v.setUint32(16, 5, true);
    }, "hello and more");
    const d = decodeWriteIn(w);
    assert.equal(d.fh, 6n);
    assert.equal(d.offset, 10n);
    assert.equal(new TextDecoder().decode(d.data), "hello");
  });

  await t.step("fuse_create_in and fuse_mkdir_in with their names", () => {
    const c = body(16, (v) => {
      v.setUint32(0, 0o1 | 0o100, true); // O_WRONLY|O_CREAT
      v.setUint32(4, 0o100644, true);
      v.setUint32(8, 0o022, true); // umask
    }, "new file\0");
    assert.deepEqual(decodeCreateIn(c), { flags: 0o101, perm: 0o644, name: "new file" });
    const m = body(8, (v) => v.setUint32(0, 0o40755, true), "dir\0");
    assert.deepEqual(decodeMkdirIn(m), { perm: 0o755, name: "dir" });
  });

  await t.step("fuse_rename_in and fuse_rename2_in with both names", () => {
    const r1 = body(8, (v) => v.setBigUint64(0, 42n, true), "old\0new\0");
    assert.deepEqual(decodeRenameIn(r1, false), {
      newdir: 42n,
      flags: 0,
      oldname: "old",
      newname: "new",
    });
    const r2 = body(16, (v) => {
      v.setBigUint64(0, 43n, true);
      v.setUint32(8, 1, true); // RENAME_NOREPLACE
    }, "a\0b\0");
    assert.deepEqual(decodeRenameIn(r2, true), {
      newdir: 43n,
      flags: 1,
      oldname: "a",
      newname: "b",
    });
  });

  await t.step("fuse_batch_forget_in stops at the body's end", () => {
    const b = body(8 + 16 * 2, (v) => {
      v.setUint32(0, 3, true); // claims three, carries two
      v.setBigUint64(8, 10n, true);
      v.setBigUint64(16, 1n, true);
      v.setBigUint64(24, 11n, true);
      v.setBigUint64(32, 2n, true);
    });
    assert.deepEqual(decodeBatchForgetIn(b), [[10n, 1n], [11n, 2n]]);
  });
});
