// Walking a tree through a FUSE mount of a Ferry server (ls -R, find, du):
// subdirectory listings read ahead, listings kept for lookups and names
// known to be missing must give exactly what the server holds, also right
// after changes made through the mount, and must not outlive the entry
// timeout. Needs root, /dev/fuse and --allow-ffi; skipped with a message
// otherwise.

import assert from "node:assert/strict";
import { type FuseMount, fuseUnavailable, mountTree } from "../../lib/fuse/mount.ts";
import { ok, served } from "./served.ts";

const why = fuseUnavailable();
if (why) console.error(`tests/fuse: skipped: ${why}`);

/** Exit status of `script` (under bash, time limited). */
async function status(script: string): Promise<number> {
  const o = await new Deno.Command("timeout", {
    args: ["-s", "KILL", "30", "bash", "-c", script],
    stdout: "null",
    stderr: "null",
  }).output();
  return o.code;
}

/** Every name under `dir` with its type and (for files) size, sorted. */
function listing(dir: string): Promise<string> {
  return ok(
    `cd '${dir}' && LC_ALL=C find . -printf '%y %p %s\\n' | sed 's/^d \\(.*\\) [0-9]*$/d \\1/' | LC_ALL=C sort`,
  );
}

/** `ls -R` of `dir` (names only, in ls's order), from inside it. */
function lsR(dir: string): Promise<string> {
  return ok(`cd '${dir}' && LC_ALL=C ls -R .`);
}

/** Names that take more bytes than characters, and a few plain ones. */
const NAMES = [
  "plain",
  "caf\u00e9",
  "\u65e5\u672c\u8a9e",
  "emoji-\u{1F600}",
  "a b",
  "x".repeat(200),
];

Deno.test({
  name: "a tree walked through a FUSE mount (directories read ahead, missing names remembered)",
  ignore: why !== null,
  async fn(t) {
    const h = await served("ferry-fuse-dirs-");
    const { src, mp, d } = h;
    let m: FuseMount | undefined;
    try {
      for (let i = 0; i < 14; i++) {
        const dir = `${src}/d${i}`;
        await Deno.mkdir(`${dir}/sub/deeper`, { recursive: true });
        // One big directory: its entries take several READDIR replies.
        const files = i === 3 ? 400 : 6;
        for (let f = 0; f < files; f++) {
          const name = `${NAMES[f % NAMES.length]}-${f}`;
          await Deno.writeFile(`${dir}/${name}`, new Uint8Array((f * 37 + i) % 3000));
        }
        await Deno.writeTextFile(`${dir}/sub/deeper/leaf`, `leaf ${i}\n`);
      }
      // Long timeouts: whatever is seen after a change must come from the
      // change, not from a cache running out.
      m = await mountTree(d.tree, mp, { attrTimeout: 60, entryTimeout: 60 });

      await t.step("find and ls -R through the mount equal the source", async () => {
        assert.equal(await listing(mp), await listing(src));
        assert.equal(await lsR(mp), await lsR(src));
      });

      await t.step("a second walk, from what was read ahead and cached, is the same", async () => {
        assert.equal(await lsR(mp), await lsR(src));
        assert.equal(await listing(mp), await listing(src));
        await ok(`cd ${mp} && du -a . > /dev/null`);
      });

      await t.step("changes made through the mount show at once in every listing", async () => {
        await ok(
          [
            `touch ${mp}/d5/new-file`,
            `mkdir ${mp}/d6/new-dir`,
            `rm ${mp}/d7/plain-0`,
            `mv ${mp}/d8/plain-0 ${mp}/d8/renamed`,
            `echo longer than before > ${mp}/d9/plain-0`,
            `rm -r ${mp}/d10/sub`,
            `mv ${mp}/d11/sub ${mp}/d11/moved-sub`,
            `echo appended >> ${mp}/d11/moved-sub/deeper/leaf`,
          ].join(" && "),
        );
        assert.equal(await listing(mp), await listing(src));
        assert.equal(await lsR(mp), await lsR(src));
        for (const gone of ["d7/plain-0", "d8/plain-0", "d10/sub", "d11/sub"]) {
          assert.notEqual(await status(`stat ${mp}/${gone}`), 0, `${gone} is still there`);
        }
        assert.equal(await ok(`cat ${mp}/d11/moved-sub/deeper/leaf`), "leaf 11\nappended\n");
        assert.equal(await ok(`cat ${mp}/d9/plain-0`), "longer than before\n");
      });

      await t.step("a name looked up and missing can be created through the mount", async () => {
        for (const p of ["d2/later", "d2/later-dir", "d2/later-mv", "d12/sub/later"]) {
          assert.notEqual(await status(`stat ${mp}/${p}`), 0, `${p} exists too early`);
          assert.notEqual(await status(`stat ${mp}/${p}`), 0, `${p} exists too early`);
        }
        await ok(
          [
            `echo hi > ${mp}/d2/later`,
            `mkdir ${mp}/d2/later-dir`,
            `mv ${mp}/d2/plain-0 ${mp}/d2/later-mv`,
            `touch ${mp}/d12/sub/later`,
          ].join(" && "),
        );
        assert.equal(await ok(`cat ${mp}/d2/later`), "hi\n");
        await ok(`test -d ${mp}/d2/later-dir && test -f ${mp}/d2/later-mv`);
        await ok(`test -f ${mp}/d12/sub/later`);
        assert.equal(await listing(mp), await listing(src));
      });

      await t.step(
        "a directory read ahead and then removed through the mount is gone",
        async () => {
          await ok(`rm -r ${mp}/d13`);
          assert.notEqual(await status(`ls ${mp}/d13`), 0);
          assert.equal(await listing(mp), await listing(src));
        },
      );

      await t.step("unmount", async () => {
        assert.equal(await m!.unmount(), "unmounted");
        m = undefined;
      });

      await t.step("changes made right after directories were read ahead show", async () => {
        m = await mountTree(d.tree, mp, { attrTimeout: 60, entryTimeout: 60 });
        // Opening two subdirectories reads their siblings ahead.
        await ok(`ls ${mp} > /dev/null && ls ${mp}/d0 > /dev/null && ls ${mp}/d1 > /dev/null`);
        const dirs = (await ok(`ls ${mp}`)).split("\n").filter((n) => /^d\d+$/.test(n));
        for (const dir of dirs) {
          if (dir === "d0" || dir === "d1") continue;
          await ok(`touch ${mp}/${dir}/made-after && rm '${mp}/${dir}/a b-4'`);
        }
        assert.equal(await listing(mp), await listing(src));
        for (const dir of dirs) {
          if (dir === "d0" || dir === "d1") continue;
          await ok(`test -f ${mp}/${dir}/made-after && test ! -e '${mp}/${dir}/a b-4'`);
        }
        assert.equal(await m.unmount(), "unmounted");
        m = undefined;
      });

      await t.step(
        "names looked up one by one (a scan, as git does) stat as on the server",
        async () => {
          m = await mountTree(d.tree, mp, { attrTimeout: 60, entryTimeout: 60 });
          const paths: string[] = [];
          for (let i = 0; i < 13; i++) {
            for (
              const n of ["plain-0", "caf\u00e9-1", "missing", "sub", "sub/deeper/leaf", "sub/nope"]
            ) {
              paths.push(`d${i}/${n}`);
            }
          }
          const statAll = (root: string) =>
            ok(
              `cd '${root}' && for p in ${
                paths.map((p) => `'${p}'`).join(" ")
              }; do stat -c '%n %F %s' "$p" 2>/dev/null || echo "$p none"; done | sed 's/ directory [0-9]*$/ directory/'`,
            );
          assert.equal(await statAll(mp), await statAll(src));
          // Changes through the mount, in directories just read for lookups.
          await ok(
            [
              `echo new > ${mp}/d0/missing`,
              `rm ${mp}/d1/plain-0`,
              `mkdir ${mp}/d2/sub/nope`,
              `mv ${mp}/d4/sub/deeper/leaf ${mp}/d4/missing`,
              `echo grown >> '${mp}/d5/caf\u00e9-1'`,
            ].join(" && "),
          );
          assert.equal(await statAll(mp), await statAll(src));
          assert.equal(await m.unmount(), "unmounted");
          m = undefined;
        },
      );

      await t.step("git status in a mounted checkout matches the checkout itself", async () => {
        const repo = `${src}/repo`;
        const git = (dir: string, args: string) =>
          ok(`cd '${dir}' && git -c safe.directory='*' -c user.name=t -c user.email=t@t ${args}`);
        await Deno.mkdir(`${repo}/a/b`, { recursive: true });
        await Deno.mkdir(`${repo}/c`, { recursive: true });
        for (const f of ["top", "a/one", "a/b/two", "a/b/three", "c/four"]) {
          await Deno.writeTextFile(`${repo}/${f}`, `${f}\n`);
        }
        await git(repo, "init -q && git add -A && git commit -q -m first");
        await Deno.writeTextFile(`${repo}/a/b/two`, "changed on the server\n");
        await Deno.writeTextFile(`${repo}/c/untracked`, "new\n");
        m = await mountTree(d.tree, mp, { attrTimeout: 60, entryTimeout: 60 });
        const want = await git(repo, "status --porcelain");
        assert.equal(await git(`${mp}/repo`, "status --porcelain"), want);
        await ok(
          `echo more >> ${mp}/repo/a/one && rm ${mp}/repo/c/four && touch ${mp}/repo/a/b/new`,
        );
        const after = await git(`${mp}/repo`, "status --porcelain");
        assert.equal(after, await git(repo, "status --porcelain"));
        assert.match(after, / M a\/one/);
        assert.match(after, / D c\/four/);
        assert.match(after, /\?\? a\/b\/new/);
        assert.equal(await m.unmount(), "unmounted");
        m = undefined;
        await Deno.remove(repo, { recursive: true });
      });

      await t.step("listings read ahead do not outlive the entry timeout", async () => {
        m = await mountTree(d.tree, mp, { attrTimeout: 0.2, entryTimeout: 0.2 });
        assert.equal(await listing(mp), await listing(src));
        // Changes behind the mount's back (straight into the server's directory).
        await Deno.writeTextFile(`${src}/d4/behind`, "x");
        await Deno.remove(`${src}/d5/new-file`);
        await Deno.writeTextFile(`${src}/d6/new-dir/behind`, "y");
        await new Promise((r) => setTimeout(r, 600));
        assert.equal(await listing(mp), await listing(src));
        assert.equal(await lsR(mp), await lsR(src));
        assert.equal(await m.unmount(), "unmounted");
        m = undefined;
      });
    } finally {
      if (m) await m.close();
      await h.close();
    }
  },
});
