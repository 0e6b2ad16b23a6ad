import assert from "node:assert/strict";
import { loadText } from "../../lib/manifest/load.ts";
import { checkManifest, hiddenBy } from "../../lib/manifest/check.ts";
import { formatProblem, ManifestError, type Problem } from "../../lib/manifest/schema.ts";
import { parseNamespace, splitWords } from "../../lib/manifest/nsfile.ts";

const BASE = `[groups]
staff = ["alice"]

[nodes.srv]
address = "tcp!127.0.0.1!7001"

[nodes.srv.exports.home]
kind = "host"
path = "/srv/home"
filter = ["-*.key"]
access = ["group:staff"]

[nodes.srv.exports.net]
kind = "net"
access = ["alice"]

[users.alice]
namespace = """
mount -c srv!home /usr/$user
"""

[users.bob]
`;

/** Every problem of `text` (shape and semantic). */
function problems(text: string, files: Record<string, string> = {}): Problem[] {
  try {
    const m = loadText(text, "m.toml", {
      readFile: (f) => {
        const t = files[f];
        if (t === undefined) throw new Error("No such file");
        return t;
      },
    });
    return checkManifest(m);
  } catch (e) {
    if (e instanceof ManifestError) return e.problems;
    throw e;
  }
}

function one(text: string, line: number, key: string, re: RegExp, files?: Record<string, string>) {
  const ps = problems(text, files);
  assert.equal(ps.length, 1, ps.map(formatProblem).join("\n"));
  const p = ps[0]!;
  assert.equal(p.file.endsWith(".toml") || p.file.endsWith(".ns") ? true : p.file, true);
  assert.equal(p.line, line, formatProblem(p));
  assert.equal(p.key, key, formatProblem(p));
  assert.match(p.message, re);
}

Deno.test("manifest check", async (t) => {
  await t.step("the base manifest and the embedded demo are good", async () => {
    assert.deepEqual(problems(BASE), []);
    const demo = await Deno.readTextFile(new URL("../../manifests/demo.toml", import.meta.url));
    assert.deepEqual(problems(demo).map(formatProblem), []);
  });

  await t.step("mount -r is accepted (manifest mounts recover anyway)", () => {
    const text = BASE.replace("mount -c srv!home", "mount -cr srv!home");
    assert.deepEqual(problems(text).map(formatProblem), []);
    const m = loadText(text, "m.toml");
    assert.equal(m.users.get("alice")!.namespace[0]!.recover, true);
  });

  await t.step("invalid TOML names its line", () => {
    one(BASE + "oops = \n", 23, "oops", /Invalid TOML/);
  });

  await t.step("duplicate keys in TOML are refused by line", () => {
    one(BASE.replace('kind = "net"', 'kind = "net"\nkind = "net"'), 15, "kind", /Invalid TOML/);
  });

  await t.step("unknown keys are errors", () => {
    one(
      BASE.replace('path = "/srv/home"', 'path = "/srv/home"\nreadonyl = true'),
      10,
      "nodes.srv.exports.home.readonyl",
      /Unknown key 'readonyl'/,
    );
    one("colour = 1\n" + BASE, 1, "colour", /Unknown key 'colour'/);
  });

  await t.step("wrong types are errors", () => {
    one(
      BASE.replace('address = "tcp!127.0.0.1!7001"', "address = 7001"),
      5,
      "nodes.srv.address",
      /Expected a string, got number 7001/,
    );
  });

  await t.step("unknown node in a mount", () => {
    one(
      BASE.replace("[users.bob]", '[users.bob]\nnamespace = "mount nosuch!home /n/x"'),
      23,
      "users.bob.namespace",
      /Unknown node 'nosuch'/,
    );
  });

  await t.step("unknown export in a mount", () => {
    one(
      BASE.replace("mount -c srv!home", "mount -c srv!hoem"),
      19,
      "users.alice.namespace",
      /Unknown export 'hoem' of node 'srv'/,
    );
  });

  await t.step("a mount the access list denies", () => {
    one(
      BASE.replace("[users.bob]", '[users.bob]\nnamespace = "mount srv!home /n/home"'),
      23,
      "users.bob.namespace",
      /denies 'bob'/,
    );
  });

  await t.step("a via cycle", () => {
    const t = BASE + `
[nodes.a]
address = "tcp!127.0.0.1!7002"
via = "b"
[nodes.b]
address = "tcp!127.0.0.1!7003"
via = "a"
`;
    const ps = problems(t);
    assert.equal(ps.length, 2, ps.map(formatProblem).join("\n"));
    assert.equal(ps[0]!.key, "nodes.a.via");
    assert.equal(ps[0]!.line, 26);
    assert.match(ps[0]!.message, /'via' cycle: a -> b -> a/);
  });

  await t.step("via a node without a net export", () => {
    const t = BASE + `
[nodes.a]
address = "tcp!127.0.0.1!7002"
[nodes.b]
address = "tcp!127.0.0.1!7003"
via = "a"
`;
    one(t, 28, "nodes.b.via", /no export of kind 'net'/);
  });

  await t.step("a node announcing through a net export that denies it", () => {
    const t = BASE + `
[nodes.a]
address = "tcp!127.0.0.1!7002"
via = "srv"
`;
    one(
      t,
      26,
      "nodes.a.via",
      /announces through 'srv!net', whose access list \(alice\) denies 'a'/,
    );
  });

  await t.step("namespace files are refused when only signed bytes count", async () => {
    const { refuseUnsigned } = await import("../../lib/manifest/sign.ts");
    const t = BASE.replace("[users.bob]", '[users.bob]\nnamespace_file = "/work/bob.ns"');
    let ps: Problem[] = [];
    try {
      loadText(t, "m.toml", { readFile: refuseUnsigned });
    } catch (e) {
      ps = (e as ManifestError).problems;
    }
    assert.equal(ps.length, 1);
    assert.match(ps[0]!.message, /not covered by the manifest's signature/);
  });

  await t.step("duplicate names", () => {
    one(
      BASE + '\n[nodes.alice]\naddress = "tcp!127.0.0.1!7009"\n',
      24,
      "nodes.alice",
      /Duplicate name 'alice': already used by user 'alice'/,
    );
  });

  await t.step("duplicate addresses", () => {
    one(
      BASE + '\n[nodes.two]\naddress = "tcp!127.0.0.1!7001"\n',
      25,
      "nodes.two.address",
      /Duplicate address/,
    );
  });

  await t.step("a bad address", () => {
    one(
      BASE.replace("tcp!127.0.0.1!7001", "tcp!127.0.0.1!seventy"),
      5,
      "nodes.srv.address",
      /Bad dial string 'tcp!127\.0\.0\.1!seventy'/,
    );
    one(
      BASE.replace("tcp!127.0.0.1!7001", "tcp!*!7001"),
      5,
      "nodes.srv.address",
      /must be dialable/,
    );
  });

  await t.step("a path that escapes a host export", () => {
    one(
      BASE.replace("mount -c srv!home /usr/$user", "mount -c srv!home /usr/$user ../../etc"),
      19,
      "users.alice.namespace",
      /Spec '\.\.\/\.\.\/etc' .* escapes export 'srv!home'/,
    );
    one(
      BASE.replace("mount -c srv!home /usr/$user", "mount srv!home /n/k id.key"),
      19,
      "users.alice.namespace",
      /hidden by filter '-\*\.key'/,
    );
  });

  await t.step("bad namespace lines", () => {
    one(
      BASE.replace("mount -c srv!home", "mount -x srv!home"),
      19,
      "users.alice.namespace",
      /Unknown flag '-x' for 'mount'/,
    );
    one(
      BASE.replace("mount -c srv!home /usr/$user", "mount srv!home"),
      19,
      "users.alice.namespace",
      /'mount' takes 2 to 3 arguments/,
    );
    one(
      BASE.replace("mount -c srv!home", "mnt srv!home"),
      19,
      "users.alice.namespace",
      /Unknown namespace command 'mnt'/,
    );
    one(
      BASE.replace("/usr/$user", "/usr/$nobody"),
      19,
      "users.alice.namespace",
      /Unknown variable '\$nobody'/,
    );
  });

  await t.step("unknown users and groups in lists", () => {
    one(
      BASE.replace('access = ["alice"]', 'access = ["alcie"]'),
      15,
      "nodes.srv.exports.net.access",
      /Unknown user 'alcie'/,
    );
    one(
      BASE.replace('access = ["alice"]', 'access = ["group:stuff"]'),
      15,
      "nodes.srv.exports.net.access",
      /Unknown group 'stuff'/,
    );
    one(
      BASE.replace('staff = ["alice"]', 'staff = ["alice", "eve"]'),
      2,
      "groups.staff",
      /Unknown member 'eve'/,
    );
  });

  await t.step("unknown export kind and missing access", () => {
    one(
      BASE.replace('kind = "net"', 'kind = "nett"'),
      14,
      "nodes.srv.exports.net.kind",
      /Unknown export kind 'nett'/,
    );
    one(
      BASE.replace('kind = "net"\naccess = ["alice"]', 'kind = "net"'),
      13,
      "nodes.srv.exports.net.access",
      /Missing key 'access'/,
    );
  });

  await t.step("namespace files with '.' includes keep their own lines", () => {
    const t = BASE.replace("[users.bob]", '[users.bob]\nnamespace_file = "bob.ns"');
    const files = {
      "/work/bob.ns": "# bob\n. common.ns\nbind /n/a /n/b\n",
      "/work/common.ns": "\n\nmount srv!nosuch /n/x\n",
    };
    const ps = problems(t.replace('"bob.ns"', '"/work/bob.ns"'), files);
    assert.equal(ps.length, 1, ps.map(formatProblem).join("\n"));
    assert.equal(ps[0]!.file, "/work/common.ns");
    assert.equal(ps[0]!.line, 3);
    assert.match(ps[0]!.message, /Unknown export 'nosuch'/);
    const cyc = problems(t.replace('"bob.ns"', '"/work/bob.ns"'), {
      "/work/bob.ns": ". /work/bob.ns\n",
    });
    assert.match(cyc[0]!.message, /Include cycle/);
    const missing = problems(t.replace('"bob.ns"', '"/work/none.ns"'));
    assert.match(missing[0]!.message, /Cannot read namespace file/);
  });

  await t.step("a required mount point must be some entry's target", () => {
    one(
      BASE.replace("[users.bob]", '[users.bob]\nrequired = ["/n/x"]'),
      23,
      "users.bob.required",
      /Required mount point '\/n\/x'/,
    );
  });

  await t.step("word splitting, quoting and filters", () => {
    assert.deepEqual(splitWords("bind -a '#U*' 'it''s'"), ["bind", "-a", "#U*", "it's"]);
    assert.equal(splitWords("  # comment"), null);
    assert.throws(() => splitWords("bind 'x"), /unterminated quote/);
    const ps: Problem[] = [];
    const es = parseNamespace(
      "bind -b /a /b\nunmount /b\nnew\n",
      { file: "f", line: 1, key: "k" },
      ps,
    );
    assert.deepEqual(es.map((e) => [e.op, e.before, e.where.line]), [
      ["bind", true, 1],
      ["unmount", false, 2],
      ["new", false, 3],
    ]);
    assert.equal(hiddenBy(["+keep.key", "-*.key"], "keep.key"), undefined);
    assert.equal(hiddenBy(["-secret"], "secret/x"), undefined);
    assert.equal(hiddenBy(["-secret/**"], "secret/x/y"), "-secret/**");
  });
});

Deno.test("ferry check prints FILE:LINE: KEY: message", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/m.toml`,
      BASE.replace("mount -c srv!home", "mount -c srv!hoem"),
    );
    const o = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../../cmd/ferry.ts", import.meta.url).pathname,
        "check",
        `${dir}/m.toml`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(o.stderr);
    assert.equal(o.code, 1);
    assert.match(
      err,
      new RegExp(`^${dir}/m\\.toml:19: users\\.alice\\.namespace: Unknown export 'hoem'`, "m"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Run `ferry check FILE` on `text`; its exit code and stderr. */
async function ferryCheck(text: string): Promise<{ code: number; err: string; file: string }> {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/m.toml`;
    await Deno.writeTextFile(file, text);
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../../cmd/ferry.ts", import.meta.url).pathname, "check", file],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: o.code, err: new TextDecoder().decode(o.stderr), file };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("ferry check reports every problem in one run, mount -A included", async () => {
  const text = BASE
    .replace('address = "tcp!127.0.0.1!7001"', "address = 7001")
    .replace(
      "mount -c srv!home /usr/$user",
      "mount -c srv!hoem /usr/$user\nmount -A srv!net /n/net",
    )
    .replace("[users.bob]", '[users.bob]\ngroups = "staff"');
  const { code, err, file } = await ferryCheck(text);
  assert.equal(code, 1, err);
  const f = file.replaceAll(".", "\\.");
  // The type errors (a number address, a string for a list)...
  assert.match(
    err,
    new RegExp(`^${f}:5: nodes\\.srv\\.address: Expected a string, got number`, "m"),
  );
  assert.match(err, new RegExp(`^${f}:\\d+: users\\.bob\\.groups: Expected a list`, "m"));
  // ...do not hide the namespace's problems, found by the checks after the shape.
  assert.match(err, new RegExp(`^${f}:19: users\\.alice\\.namespace: Unknown export 'hoem'`, "m"));
  assert.match(
    err,
    new RegExp(
      `^${f}:20: users\\.alice\\.namespace: 'mount -A' in 'mount -A srv!net /n/net' is refused`,
      "m",
    ),
  );
  assert.match(err, /: 4 problems$/m);
});

Deno.test("ferry check names an unterminated string and its line", async () => {
  const one = await ferryCheck(BASE.replace('path = "/srv/home"', 'path = "/srv/home'));
  assert.equal(one.code, 1);
  assert.match(
    one.err,
    /m\.toml:9: path: Invalid TOML: Unterminated string: the line ends before its closing quote/,
  );
  const multi = await ferryCheck(BASE.replace('"""\n\n[users.bob]', "\n[users.bob]\n"));
  assert.equal(multi.code, 1);
  assert.match(multi.err, /m\.toml:18: namespace: Invalid TOML: Unterminated multi-line string/);
});
