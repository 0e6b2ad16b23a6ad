import assert from "node:assert/strict";
import { type CliSpec, parse, UsageError } from "../../lib/cli.ts";

const spec: CliSpec = {
  usage: "ferry thing [-Aq] [-u USER] [--peer NAME] [--san NAME]... ARGS",
  about: "A command with every kind of option.",
  options: {
    A: { type: "boolean" },
    q: { type: "boolean" },
    u: { type: "string", short: "u" },
    peer: { type: "string" },
    san: { type: "string", multiple: true },
  },
};

Deno.test("command lines: the forms a user types are read as POSIX and GNU tools read them", () => {
  const r = parse(spec, ["-Aq", "-u", "glenda", "x", "--peer=files", "--san", "a", "--san=b", "y"]);
  assert.deepEqual(r.values, { A: true, q: true, u: "glenda", peer: "files", san: ["a", "b"] });
  assert.deepEqual(r.positionals, ["x", "y"]);
  assert.equal(r.help, false);
  // A value joined to a short option, grouped after a boolean.
  assert.deepEqual(parse(spec, ["-qualice"]).values, { q: true, u: "alice" });
  // '--' ends the options; a lone '-' is an argument.
  assert.deepEqual(parse(spec, ["-", "--", "-A", "--peer"]).positionals, ["-", "-A", "--peer"]);
  // A value starting with a dash is given with '='.
  assert.equal(parse(spec, ["--peer=-odd"]).values.peer, "-odd");
});

Deno.test("command lines: a bad one is refused naming the option, with the usage", () => {
  const bad = (args: string[], want: RegExp) =>
    assert.throws(() => parse(spec, args), (e: unknown) => {
      assert.ok(e instanceof UsageError);
      assert.match(e.message, want);
      assert.match(e.message, /\nusage: ferry thing /);
      return true;
    });
  bad(["--frob"], /^Unknown option '--frob'/);
  bad(["-Ax"], /^Unknown option '-x' in '-Ax'/);
  bad(["-u"], /^Option '-u <value>' argument missing/);
  bad(["--peer", "--san", "a"], /^Option '--peer <value>' argument is ambiguous/);
  bad(["--A=yes"], /^Option '-A' does not take an argument/);
  bad(["--toString"], /^Unknown option '--toString'/);
});

Deno.test("command lines: --help prints the help and says so", () => {
  const log = console.log;
  const out: string[] = [];
  console.log = (s: string) => out.push(s);
  try {
    const r = parse(spec, ["-h"]);
    assert.equal(r.help, true);
  } finally {
    console.log = log;
  }
  assert.match(out.join("\n"), /^usage: ferry thing .*\n\nA command with every kind of option\./);
});
