/**
 * The pieces of a private logon that need no root: the manifest's
 * `account`, passwd lines, and where mount points go on the host.
 */
import assert from "node:assert/strict";
import { loadText } from "../../lib/manifest/load.ts";
import { checkManifest } from "../../lib/manifest/check.ts";
import { fromFiles, lookupAccount, parsePasswdLine } from "../../lib/logon/account.ts";
import { outermost, planView } from "../../lib/logon/view.ts";

Deno.test("users.NAME.account defaults to NAME and a bad one is reported", () => {
  const m = loadText(
    `[users.alice]\n[users.bob]\naccount = "ferry-bob"\n[users.eve]\naccount = "eve; rm -rf /"\n`,
    "m.toml",
  );
  assert.equal(m.users.get("alice")!.account, "alice");
  assert.equal(m.users.get("bob")!.account, "ferry-bob");
  const ps = checkManifest(m);
  assert.equal(ps.length, 1, JSON.stringify(ps));
  assert.equal(ps[0]!.key, "users.eve.account");
  assert.match(ps[0]!.message, /Bad host account name 'eve; rm -rf \/'/);
});

Deno.test("passwd lines", () => {
  assert.deepEqual(parsePasswdLine("alice:x:1001:1002:Alice:/home/alice:/bin/bash"), {
    name: "alice",
    uid: 1001,
    gid: 1002,
    home: "/home/alice",
    shell: "/bin/bash",
  });
  assert.equal(parsePasswdLine("alice:x:1001:1002::/home/alice:")!.shell, "/bin/sh");
  assert.equal(parsePasswdLine("broken:x::1:"), undefined);
});

Deno.test("mount points: outermost only, missing ones make room in their parent", async () => {
  assert.deepEqual(outermost(["/", "/n/a/net", "/n/a", "/n/ab", "/usr/x", "/usr/x"]), [
    "/n/a",
    "/n/ab",
    "/usr/x",
  ]);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/usr/alice`, { recursive: true });
    await Deno.mkdir(`${dir}/real`);
    await Deno.symlink(`${dir}/real`, `${dir}/link`);
    await Deno.writeTextFile(`${dir}/file`, "");
    const p = planView([
      `${dir}/usr/alice`,
      `${dir}/usr/bob/x`,
      `${dir}/link/y`,
      `${dir}/link/z`,
    ]);
    assert.equal(p.chroot, false);
    assert.deepEqual(p.points, [
      { target: `${dir}/link/y`, at: `${dir}/real/y` },
      { target: `${dir}/link/z`, at: `${dir}/real/z` },
      { target: `${dir}/usr/alice`, at: `${dir}/usr/alice` },
      { target: `${dir}/usr/bob/x`, at: `${dir}/usr/bob/x` },
    ]);
    assert.deepEqual(p.mirrors, [
      { dir: `${dir}/real`, add: ["y", "z"] },
      { dir: `${dir}/usr`, add: ["bob"] },
    ]);
    const top = planView(["/ferry-no-such-dir/x"]);
    assert.equal(top.chroot, true);
    assert.deepEqual(top.mirrors, [{ dir: "/", add: ["ferry-no-such-dir"] }]);
    assert.throws(() => planView([`${dir}/file/x`]), /the host has a file, not a directory/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an account is read from /etc/passwd only where NSS asks the files first", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-account-" });
  try {
    const files = { nsswitch: `${dir}/nsswitch.conf`, passwd: `${dir}/passwd` };
    await Deno.writeTextFile(
      files.passwd,
      "root:x:0:0:root:/root:/bin/bash\nferryq:x:1234:1235::/home/ferryq:/bin/sh\n" +
        "ferryq:x:4321:4321::/elsewhere:/bin/sh\n",
    );
    await Deno.writeTextFile(
      files.nsswitch,
      "# a comment\npasswd:   files systemd\ngroup: files\n",
    );
    // The first entry, as NSS's files source answers.
    assert.deepEqual(fromFiles("ferryq", files), {
      name: "ferryq",
      uid: 1234,
      gid: 1235,
      home: "/home/ferryq",
      shell: "/bin/sh",
    });
    assert.equal(fromFiles("1234", files)?.name, "ferryq");
    assert.equal(fromFiles("ferryz", files), undefined);
    // Another source first, or compat entries: NSS is asked instead.
    await Deno.writeTextFile(files.nsswitch, "passwd: systemd files\n");
    assert.equal(fromFiles("ferryq", files), undefined);
    await Deno.writeTextFile(files.nsswitch, "passwd: files\n");
    await Deno.writeTextFile(files.passwd, "+@netgroup\n", { append: true });
    assert.equal(fromFiles("ferryq", files), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // The host's own answer agrees with getent's.
  const out = await new Deno.Command("getent", { args: ["passwd", "root"], stdout: "piped" })
    .output();
  assert.deepEqual(
    await lookupAccount("root"),
    parsePasswdLine(new TextDecoder().decode(out.stdout)),
  );
});
