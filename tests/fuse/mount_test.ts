// FUSE mounts of a Ferry server, exercised with coreutils. Needs root,
// /dev/fuse and --allow-ffi; skipped with a message otherwise.
//
// The process that serves a FUSE mount must never touch the mount itself
// synchronously (the kernel would wait for this very process to answer), so
// every command runs as `bash -c "cd MOUNT && ..."`, never with cwd: MOUNT.

import assert from "node:assert/strict";
import { type FuseMount, fuseUnavailable, mountTree } from "../../lib/fuse/mount.ts";
import { errnoOf } from "../../lib/fuse/session.ts";
import { parseMountOptions } from "../../lib/fuse/mount.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { MemTree } from "../../lib/fs/memory.ts";
import { serve } from "../../lib/styx/server.ts";
import { tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn, Listener } from "../../lib/transport/conn.ts";
import { dialStyx } from "../../lib/net/connect.ts";

const why = fuseUnavailable();
if (why) console.error(`tests/fuse: skipped: ${why}`);

const FERRY = new URL("../../cmd/ferry.ts", import.meta.url).pathname;
const dec = new TextDecoder();

interface Out {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run `script` under bash with a hard time limit (a hang fails, never blocks). */
async function sh(script: string, limit = 30): Promise<Out> {
  const o = await new Deno.Command("timeout", {
    args: ["-s", "KILL", String(limit), "bash", "-c", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
}

async function ok(script: string): Promise<string> {
  const o = await sh(script);
  assert.equal(o.code, 0, `'${script}' failed (${o.code}): ${o.stderr}`);
  return o.stdout;
}

/** A Styx server exporting a temp directory over TCP on 127.0.0.1. */
function server(dir: string): { addr: string; conns: Conn[]; stop(): void } {
  const l: Listener = tcpListen("127.0.0.1", 0);
  const conns: Conn[] = [];
  const tree = new HostTree(dir);
  (async () => {
    for await (const c of l) {
      conns.push(c);
      serve(c, tree).catch(() => {});
    }
  })();
  return {
    addr: l.addr,
    conns,
    stop() {
      l.close();
      for (const c of conns) c.close();
    },
  };
}

/** Whether something is mounted on `mp` (asked of util-linux: Deno wants --allow-all for /proc). */
async function mounted(mp: string): Promise<boolean> {
  const o = await new Deno.Command("findmnt", { args: ["-n", "--mountpoint", mp] }).output();
  return o.code === 0;
}

/** Read lines from a child's stream until one matches. */
async function waitLine(
  r: ReadableStreamDefaultReader<Uint8Array>,
  re: RegExp,
  seen: string[],
): Promise<string> {
  let buf = "";
  for (;;) {
    const { value, done } = await r.read();
    if (done) throw new Error(`stream ended before ${re}; got: ${seen.join("") + buf}`);
    buf += dec.decode(value);
    const lines = buf.split("\n");
    buf = lines.pop() ?? "";
    for (const line of lines) {
      seen.push(line + "\n");
      if (re.test(line)) return line;
    }
  }
}

Deno.test("errno mapping and -o options", () => {
  assert.equal(errnoOf(new Error("file does not exist")), 2);
  assert.equal(errnoOf(new Error("permission denied")), 13);
  assert.equal(errnoOf(new Error("file exists")), 17);
  assert.equal(errnoOf(new Error("directory not empty")), 39);
  assert.equal(errnoOf(new Error("is a directory")), 21);
  assert.equal(errnoOf(new Error("not a directory")), 20);
  assert.equal(errnoOf(new Error("i/o on hungup channel")), 5);
  assert.equal(errnoOf(new Error("something odd")), 5);
  const o = parseMountOptions("attr_timeout=2,entry_timeout=0.5,direct_io");
  assert.equal(o.attrTimeout, 2);
  assert.equal(o.entryTimeout, 0.5);
  assert.equal(o.directIo, true);
  assert.throws(() => parseMountOptions("attr_timeout=x"), /bad value 'x'.*attr_timeout/);
  assert.throws(() => parseMountOptions("nosuch"), /unknown mount option 'nosuch'/);
});

Deno.test({
  name: "coreutils on a FUSE mount of a Ferry server",
  ignore: why !== null,
  async fn(t) {
    const src = await Deno.makeTempDir({ prefix: "ferry-fuse-src-" });
    const mp = await Deno.makeTempDir({ prefix: "ferry-fuse-mnt-" });
    const srv = server(src);
    const d = await dialStyx(srv.addr, { insecure: true, user: "glenda" });
    let m: FuseMount | undefined;
    try {
      await Deno.writeTextFile(`${src}/hello`, "hello, world\n");
      await Deno.mkdir(`${src}/sub`);
      await Deno.writeTextFile(`${src}/sub/inner`, "inner\n");
      m = await mountTree(d.tree, mp, { attrTimeout: 1, entryTimeout: 1 });
      assert.ok(await mounted(mp));
      const M = mp;

      await t.step("ls -l and cat", async () => {
        const ls = await ok(`cd ${M} && ls -l`);
        assert.match(ls, /-rw.* 13 .* hello\n/);
        assert.match(ls, /^d.* sub$/m);
        assert.equal(await ok(`cat ${M}/hello ${M}/sub/inner`), "hello, world\ninner\n");
      });

      await t.step("errors map to errno values", async () => {
        let o = await sh(`cat ${M}/missing`);
        assert.notEqual(o.code, 0);
        assert.match(o.stderr, /No such file or directory/);
        o = await sh(`mkdir ${M}/sub`);
        assert.match(o.stderr, /File exists/);
        o = await sh(`rmdir ${M}/sub`);
        assert.match(o.stderr, /Directory not empty/);
        o = await sh(`rm ${M}/sub`);
        assert.match(o.stderr, /Is a directory/);
        o = await sh(`cat ${M}/hello/x`);
        assert.match(o.stderr, /Not a directory/);
      });

      await t.step("cp in, out and within; echo >>", async () => {
        const big = new Uint8Array(3 * 1024 * 1024 + 17);
        for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 11)) & 0xff;
        const local = await Deno.makeTempFile();
        const back = await Deno.makeTempFile();
        try {
          await Deno.writeFile(local, big);
          await ok(`cp ${local} ${M}/big && cp ${M}/big ${back} && cp ${M}/big ${M}/sub/big2`);
          assert.deepEqual(await Deno.readFile(`${src}/big`), big);
          assert.deepEqual(await Deno.readFile(back), big);
          assert.deepEqual(await Deno.readFile(`${src}/sub/big2`), big);
          await ok(`echo more >> ${M}/hello && echo again >> ${M}/hello`);
          assert.equal(await Deno.readTextFile(`${src}/hello`), "hello, world\nmore\nagain\n");
          assert.equal(await ok(`cat ${M}/hello`), "hello, world\nmore\nagain\n");
        } finally {
          await Deno.remove(local);
          await Deno.remove(back);
        }
      });

      await t.step("mkdir, mv (same dir, over a file, across dirs), rm, rmdir", async () => {
        await ok(`mkdir ${M}/d && echo one > ${M}/d/a && echo two > ${M}/d/b`);
        await ok(`mv ${M}/d/a ${M}/d/c`);
        assert.deepEqual((await ok(`ls ${M}/d`)).split("\n"), ["b", "c", ""]);
        await ok(`mv ${M}/d/c ${M}/d/b`); // replaces b, as rename(2) does
        assert.equal(await Deno.readTextFile(`${src}/d/b`), "one\n");
        await ok(`mv ${M}/d/b ${M}/sub/moved`); // across directories: copy and remove
        assert.equal(await Deno.readTextFile(`${src}/sub/moved`), "one\n");
        assert.equal(await ok(`ls ${M}/d`), "");
        await ok(`mv ${M}/d ${M}/e && ls ${M}/e`);
        await ok(`rmdir ${M}/e && rm ${M}/sub/moved ${M}/sub/big2`);
        await assert.rejects(Deno.stat(`${src}/e`), Deno.errors.NotFound);
        await assert.rejects(Deno.stat(`${src}/sub/moved`), Deno.errors.NotFound);
      });

      await t.step("truncate, chmod, touch", async () => {
        await ok(`truncate -s 5 ${M}/hello`);
        assert.equal(await Deno.readTextFile(`${src}/hello`), "hello");
        assert.equal(await ok(`cat ${M}/hello`), "hello");
        await ok(`truncate -s 8 ${M}/hello`);
        assert.equal(await Deno.readTextFile(`${src}/hello`), "hello\0\0\0");
        await ok(`chmod 640 ${M}/hello`);
        assert.equal((await Deno.stat(`${src}/hello`)).mode! & 0o777, 0o640);
        assert.match(await ok(`stat -c %a ${M}/hello`), /^640$/m);
        await ok(`touch -m -d '2001-02-03 04:05:06 UTC' ${M}/hello`);
        assert.equal(
          (await Deno.stat(`${src}/hello`)).mtime?.toISOString(),
          "2001-02-03T04:05:06.000Z",
        );
        assert.match(await ok(`TZ=UTC ls -l --time-style=+%Y-%m-%d ${M}/hello`), /2001-02-03/);
      });

      await t.step("dd with offsets (seek, skip, conv=notrunc)", async () => {
        await ok(`printf 0123456789 > ${M}/dd`);
        await ok(`printf XY | dd of=${M}/dd bs=1 seek=3 conv=notrunc status=none`);
        assert.equal(await Deno.readTextFile(`${src}/dd`), "012XY56789");
        assert.equal(await ok(`dd if=${M}/dd bs=1 skip=4 count=3 status=none`), "Y56");
        await ok(`dd if=/dev/zero of=${M}/sparse bs=4096 seek=3 count=1 status=none`);
        assert.equal((await Deno.stat(`${src}/sparse`)).size, 4 * 4096);
        // A large read at an odd offset spans several Treads in flight.
        const got = await ok(
          `dd if=${M}/big bs=1000000 skip=1 count=2 status=none | od -An -tx1 -N4`,
        );
        const big = await Deno.readFile(`${src}/big`);
        const want = [...big.subarray(1000000, 1000004)].map((b) =>
          b.toString(16).padStart(2, "0")
        );
        assert.deepEqual(got.trim().split(/\s+/), want);
      });

      await t.step("a big directory lists in one pass", async () => {
        await Deno.mkdir(`${src}/many`);
        for (let i = 0; i < 300; i++) await Deno.writeTextFile(`${src}/many/f${i}`, `${i}\n`);
        // Made behind the mount's back: it shows once listings read before
        // it have expired (entry_timeout, 1 s here).
        await new Promise((r) => setTimeout(r, 1100));
        const ls = (await ok(`ls -l ${M}/many`)).trim().split("\n");
        assert.equal(ls.length, 301); // "total" and 300 entries
        assert.equal(await ok(`cat ${M}/many/f299`), "299\n");
        const found = await ok(`find ${M}/many -type f | wc -l`);
        assert.equal(found.trim(), "300");
      });

      await t.step("unmount", async () => {
        assert.equal(await m!.unmount(), "unmounted");
        m = undefined;
        assert.ok(!(await mounted(mp)));
      });
    } finally {
      if (m) await m.close();
      d.close();
      srv.stop();
      await Deno.remove(src, { recursive: true });
      await Deno.remove(mp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "a remote killed mid-read gives EIO, not a hang",
  ignore: why !== null,
  async fn() {
    const src = await Deno.makeTempDir({ prefix: "ferry-fuse-src-" });
    const mp = await Deno.makeTempDir({ prefix: "ferry-fuse-mnt-" });
    const f = await Deno.open(`${src}/big`, { write: true, create: true });
    await f.truncate(64 * 1024 * 1024);
    f.close();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", FERRY, "listen", "-A", "tcp!127.0.0.1!0", src],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const out = child.stdout.getReader();
    let m: FuseMount | undefined;
    let reader: Deno.ChildProcess | undefined;
    try {
      const line = await waitLine(out, /listening on/, []);
      const addr = line.replace(/^listening on /, "").trim();
      const d = await dialStyx(addr, { insecure: true });
      m = await mountTree(d.tree, mp, {});
      // Read a little, wait for a go-ahead on stdin, then read the rest.
      reader = new Deno.Command("timeout", {
        args: [
          "-s",
          "KILL",
          "30",
          "bash",
          "-c",
          `exec 3<${mp}/big; head -c 1000000 <&3 >/dev/null; echo started; read x; cat <&3 >/dev/null`,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const rout = reader.stdout.getReader();
      await waitLine(rout, /started/, []);
      child.kill("SIGKILL");
      await child.status;
      await d.client.closed;
      const w = reader.stdin.getWriter();
      await w.write(new TextEncoder().encode("go\n"));
      await w.close();
      rout.releaseLock();
      const o = await reader.output();
      reader = undefined;
      assert.notEqual(o.code, 0);
      assert.notEqual(o.code, 137, "the reader hung and was killed");
      assert.match(dec.decode(o.stderr), /Input\/output error/);
      const ls = await sh(`ls ${mp}/`);
      assert.match(ls.stderr, /Input\/output error/);
      await m.close();
      m = undefined;
      assert.ok(!(await mounted(mp)));
    } finally {
      try {
        reader?.kill("SIGKILL");
        await reader?.status;
      } catch { /* already gone */ }
      if (m) await m.close();
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await Deno.remove(src, { recursive: true });
      await Deno.remove(mp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "ferry mount and ferry unmount (busy file, SIGTERM, remote gone)",
  ignore: why !== null,
  async fn(t) {
    const src = await Deno.makeTempDir({ prefix: "ferry-fuse-src-" });
    const mp = await Deno.makeTempDir({ prefix: "ferry-fuse-mnt-" });
    await Deno.writeTextFile(`${src}/hello`, "hi\n");
    const srv = server(src);
    const children: Deno.ChildProcess[] = [];
    const start = async () => {
      const c = new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", FERRY, "mount", "-f", "-A", srv.addr, mp],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      children.push(c);
      const r = c.stdout.getReader();
      await waitLine(r, /^mounted /, []);
      r.releaseLock();
      return c;
    };
    try {
      await t.step("unmount with a busy file detaches; the mount ends when it closes", async () => {
        const c = await start();
        assert.equal(await ok(`cat ${mp}/hello`), "hi\n");
        const busy = new Deno.Command("bash", {
          args: ["-c", `exec 3<${mp}/hello; echo open; read x; cat <&3`],
          stdin: "piped",
          stdout: "piped",
        }).spawn();
        children.push(busy);
        const br = busy.stdout.getReader();
        await waitLine(br, /open/, []);
        br.releaseLock();
        const u = await sh(`${Deno.execPath()} run --allow-all ${FERRY} unmount ${mp}`);
        assert.equal(u.code, 0, u.stderr);
        assert.match(u.stderr, /busy: detached/);
        assert.ok(!(await mounted(mp)));
        const w = busy.stdin.getWriter();
        await w.write(new TextEncoder().encode("\n"));
        await w.close();
        const bo = await busy.output();
        assert.equal(dec.decode(bo.stdout), "hi\n"); // the open file still worked
        const st = await c.output();
        assert.equal(st.code, 0, dec.decode(st.stderr));
      });

      await t.step("SIGTERM unmounts", async () => {
        const c = await start();
        assert.ok(await mounted(mp));
        c.kill("SIGTERM");
        const st = await c.output();
        assert.equal(st.code, 0, dec.decode(st.stderr));
        assert.ok(!(await mounted(mp)));
      });

      await t.step("the remote going away unmounts", async () => {
        const c = await start();
        for (const conn of srv.conns) conn.close();
        const st = await c.output();
        assert.equal(st.code, 1);
        assert.match(dec.decode(st.stderr), /hung up: unmounting/);
        assert.ok(!(await mounted(mp)));
      });

      await t.step("without -f it returns once mounted and serves in the background", async () => {
        const o = await sh(
          `${Deno.execPath()} run --allow-all ${FERRY} mount -A ${srv.addr} ${mp}`,
        );
        assert.equal(o.code, 0, o.stderr);
        assert.match(o.stdout, /^mounted .* \(pid \d+; 'ferry unmount .*' to undo\)$/m);
        assert.ok(await mounted(mp));
        assert.equal(await ok(`cat ${mp}/hello`), "hi\n");
        const pid = Number(/pid (\d+)/.exec(o.stdout)![1]);
        const u = await sh(`${Deno.execPath()} run --allow-all ${FERRY} unmount ${mp}`);
        assert.equal(u.code, 0, u.stderr);
        assert.ok(!(await mounted(mp)));
        // The background process ends once the kernel drops the connection.
        await ok(
          `for i in $(seq 200); do kill -0 ${pid} 2>/dev/null || exit 0; sleep 0.05; done; exit 1`,
        );
      });

      await t.step("unmount of a directory that is not mounted fails clearly", async () => {
        const u = await sh(`${Deno.execPath()} run --allow-all ${FERRY} unmount ${mp}`);
        assert.equal(u.code, 1);
        assert.match(u.stderr, /cannot unmount '.*': not a mount point/);
      });
    } finally {
      for (const c of children) {
        try {
          c.kill("SIGKILL");
        } catch { /* gone */ }
        await c.status;
      }
      if (await mounted(mp)) await sh(`umount -l ${mp}`);
      srv.stop();
      await Deno.remove(src, { recursive: true });
      await Deno.remove(mp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "any Tree mounts: a MemTree without Styx in between",
  ignore: why !== null,
  async fn() {
    const mp = await Deno.makeTempDir({ prefix: "ferry-fuse-mnt-" });
    const m = await mountTree(new MemTree(), mp, { caller: { user: "glenda" } });
    try {
      await ok(`mkdir ${mp}/dir && echo hello > ${mp}/dir/a && echo more >> ${mp}/dir/a`);
      assert.equal(await ok(`cat ${mp}/dir/a`), "hello\nmore\n");
      await ok(`mv ${mp}/dir/a ${mp}/dir/b && truncate -s 2 ${mp}/dir/b`);
      assert.equal(await ok(`cat ${mp}/dir/b`), "he");
      assert.match(await ok(`ls -l ${mp}/dir`), /^-.* 2 .* b$/m);
      const o = await sh(`rmdir ${mp}/dir`);
      assert.match(o.stderr, /Directory not empty/);
      await ok(`rm ${mp}/dir/b && rmdir ${mp}/dir`);
      assert.equal(await ok(`ls -A ${mp}`), "");
    } finally {
      await m.close();
      await Deno.remove(mp, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "fusermount -u unmounts a Ferry mount too",
  ignore: why !== null,
  async fn() {
    const tool = (await sh("command -v fusermount3 || command -v fusermount")).stdout.trim();
    if (tool === "") {
      console.error("tests/fuse: fusermount not installed (Debian's fuse3): step skipped");
      return;
    }
    const mp = await Deno.makeTempDir({ prefix: "ferry-fuse-mnt-" });
    const m = await mountTree(new MemTree(), mp, {});
    try {
      await ok(`${tool} -u ${mp}`);
      await m.done;
      assert.ok(!(await mounted(mp)));
    } finally {
      if (await mounted(mp)) await m.close();
      await Deno.remove(mp, { recursive: true }).catch(() => {});
    }
  },
});
