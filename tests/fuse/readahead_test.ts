// Reading a FUSE mount of a Ferry server directory by directory (tar):
// files opened ahead of the reader must give exactly what the server holds,
// also right after a change made through the mount. Needs root, /dev/fuse
// and --allow-ffi; skipped with a message otherwise.

import assert from "node:assert/strict";
import { type FuseMount, fuseUnavailable, mountTree } from "../../lib/fuse/mount.ts";
import { ok, served } from "./served.ts";

const why = fuseUnavailable();
if (why) console.error(`tests/fuse: skipped: ${why}`);

Deno.test({
  name: "tar through a FUSE mount reads every file exactly (files opened ahead)",
  ignore: why !== null,
  async fn(t) {
    const h = await served("ferry-fuse-ahead-");
    const { work, src, mp, d } = h;
    const out = `${work}/out`;
    let m: FuseMount | undefined;
    try {
      // Sizes around the edges: empty, one byte, a page, just over, past the read-with-open limit.
      const sizes = [0, 1, 4095, 4096, 4097, 65536, 128 * 1024, 128 * 1024 + 1, 300 * 1024];
      for (const dir of ["a", "b", "c/deep"]) {
        await Deno.mkdir(`${src}/${dir}`, { recursive: true });
        for (let i = 0; i < 40; i++) {
          const n = sizes[i % sizes.length]! + (i > sizes.length ? i : 0);
          const b = new Uint8Array(n).map((_, j) => (j * 7 + i * 13 + dir.length) & 0xff);
          await Deno.writeFile(`${src}/${dir}/f${i}`, b);
        }
      }
      m = await mountTree(d.tree, mp, { attrTimeout: 1, entryTimeout: 1 });

      const extractAndCompare = async () => {
        await Deno.remove(out, { recursive: true }).catch(() => {});
        await Deno.mkdir(out);
        await ok(`tar cf - -C ${mp} . | tar xf - -C ${out}`);
        await ok(`diff -r ${src} ${out}`);
      };

      await t.step("tar of the mount equals the source", extractAndCompare);

      await t.step(
        "a second tar, from the kernel's cache and fresh opens, is the same",
        async () => {
          await extractAndCompare();
        },
      );

      await t.step("files changed through the mount read back changed at once", async () => {
        await ok(`echo changed > ${mp}/a/f5 && printf x >> ${mp}/b/f20`);
        await ok(`truncate -s 10 ${mp}/a/f6`);
        await extractAndCompare();
        assert.equal(await Deno.readTextFile(`${out}/a/f5`), "changed\n");
      });

      await t.step("a file removed through the mount is gone from the next tar", async () => {
        await ok(`rm ${mp}/a/f7`);
        await extractAndCompare();
      });

      await t.step("files the kernel releases are clunked on the server", async () => {
        await ok(`cat ${mp}/a/f1 > /dev/null`);
        const before = d.client.fidsInUse;
        await ok(`for i in $(seq 50); do cat ${mp}/a/f1 ${mp}/b/f2 > /dev/null; done`);
        // Released files are clunked soon (with the next open, or a moment
        // later). Each inode the loop touches (a, b, f1, f2) may also keep
        // one walked node while the kernel remembers it: a GETATTR after
        // its attributes expire (on a busy machine) walks one. The 100 opens
        // must leave nothing more.
        const most = before + 4;
        for (let i = 0; i < 100 && d.client.fidsInUse > most; i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.ok(
          d.client.fidsInUse <= most,
          `${d.client.fidsInUse} fids in use after 100 opens, ${before} before`,
        );
      });

      await t.step("unmount", async () => {
        assert.equal(await m!.unmount(), "unmounted");
        m = undefined;
      });
    } finally {
      if (m) await m.close();
      await h.close();
    }
  },
});
