/**
 * The shipped systemd units (dist/systemd/) pass `systemd-analyze verify`
 * with `ferry` installed exactly as README.md says (`deno install
 * --global`, into a temporary root here), and the installed command runs.
 */
import assert from "node:assert/strict";
import { have, REPO } from "../e2e/hosts.ts";

const dec = new TextDecoder();
const skip = have("systemd-analyze")
  ? ""
  : "systemd-analyze is not installed (Debian: apt-get install -y systemd)";

/** The README's `deno install --global …` command, its continuation lines joined. */
async function readmeInstall(): Promise<string[]> {
  const text = await Deno.readTextFile(`${REPO}README.md`);
  const m = /^(?:sudo )?(deno install --global(?:[^\n]*\\\n)*[^\n]*)$/m.exec(text);
  assert.ok(m, "README.md shows no 'deno install --global' command");
  return m[1]!.replace(/\\\n/g, " ").trim().split(/\s+/);
}

Deno.test({
  name: "systemd units pass systemd-analyze verify with ferry installed as the README says",
  ignore: skip !== "",
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "ferry-systemd-" });
    try {
      const [, ...args] = await readmeInstall();
      assert.ok(args.includes("--root"), "the README's install command names its --root");
      const root = args.indexOf("--root");
      args[root + 1] = `${tmp}/root`;
      const inst = await new Deno.Command(Deno.execPath(), { args, cwd: REPO, stdin: "null" })
        .output();
      assert.equal(inst.code, 0, dec.decode(inst.stderr));
      const ferry = `${tmp}/root/bin/ferry`;
      const help = await new Deno.Command(ferry, { args: ["up", "--help"], cwd: "/" }).output();
      assert.equal(help.code, 0, dec.decode(help.stderr));
      assert.match(dec.decode(help.stdout), /--join ADDR/);

      const units = `${tmp}/units`;
      await Deno.mkdir(units);
      for (const name of ["ferry-up@.service", "ferry-signer.service"]) {
        const text = await Deno.readTextFile(`${REPO}dist/systemd/${name}`);
        assert.match(text, /^ExecStart=\/usr\/local\/bin\/ferry /m);
        assert.match(text, /^NoNewPrivileges=yes$/m);
        assert.match(text, /^ProtectSystem=(full|strict)$/m);
        await Deno.writeTextFile(
          `${units}/${name}`,
          text.replaceAll("/usr/local/bin/ferry", ferry),
        );
      }
      const v = await new Deno.Command("systemd-analyze", {
        args: [
          "verify",
          "--man=no",
          `${units}/ferry-signer.service`,
          `${units}/ferry-up@node1.service`,
        ],
      }).output();
      const said = dec.decode(v.stdout) + dec.decode(v.stderr);
      assert.equal(v.code, 0, said);
      // A value systemd cannot parse is only a warning: take any output as a failure.
      assert.equal(said.trim(), "");
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

if (skip !== "") console.log(`systemd_test skipped: ${skip}`);
