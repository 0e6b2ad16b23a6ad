import assert from "node:assert/strict";
import { incomplete, parse, ShSyntaxError } from "../../lib/sh/parser.ts";
import type { Cmd, SimpleCmd, Word } from "../../lib/sh/ast.ts";
import { lex } from "../../lib/sh/lexer.ts";

/** A readable form of a word, for comparisons. */
function show(w: Word): string {
  switch (w.kind) {
    case "lit":
      return w.quoted ? `'${w.value}'` : w.value;
    case "var":
      return `$${w.mode === "count" ? "#" : w.mode === "join" ? '"' : ""}${show(w.name)}`;
    case "block":
      return w.text;
    case "list":
      return `(${w.items.map(show).join(" ")})`;
    case "concat":
      return `${show(w.left)}^${show(w.right)}`;
    case "subst":
      return w.split ? "`{…}" : '"{…}';
  }
}

function simple(c: Cmd | undefined): SimpleCmd {
  assert.ok(c && c.kind === "simple", `want a simple command, got ${c?.kind}`);
  return c;
}

function words(src: string): string[] {
  const seq = parse(src);
  assert.equal(seq.items.length, 1);
  return simple(seq.items[0]!.cmd).words.map(show);
}

function syntaxError(src: string): ShSyntaxError {
  try {
    parse(src);
  } catch (e) {
    assert.ok(e instanceof ShSyntaxError, `want ShSyntaxError, got ${e}`);
    return e;
  }
  assert.fail(`no syntax error for ${JSON.stringify(src)}`);
}

Deno.test("parser: good input", async (t) => {
  await t.step("words and quotes", () => {
    assert.deepEqual(words("ls -l /tmp"), ["ls", "-l", "/tmp"]);
    assert.deepEqual(words("echo 'it''s' ''"), ["echo", "'it's'", "''"]);
    assert.deepEqual(words("bind '#U*/home' /usr"), ["bind", "'#U*/home'", "/usr"]);
  });

  await t.step("the article's listen line", () => {
    const seq = parse("listen -A 'tcp!*!8000' { export '#U*/home/myuser' & }");
    const c = simple(seq.items[0]!.cmd);
    assert.equal(c.words.length, 4);
    const block = c.words[3]!;
    assert.equal(block.kind, "block");
    if (block.kind !== "block") return;
    assert.equal(block.text, "{ export '#U*/home/myuser' & }");
    assert.equal(block.body.items.length, 1);
    assert.equal(block.body.items[0]!.background, true);
    assert.deepEqual(simple(block.body.items[0]!.cmd).words.map(show), [
      "export",
      "'#U*/home/myuser'",
    ]);
  });

  await t.step("sequences, background, newlines and comments", () => {
    const seq = parse("mkdir /tmp/a; bind /a /tmp/a &\n# a comment\necho x # trailing\n\n");
    assert.deepEqual(seq.items.map((i) => [i.text, i.background]), [
      ["mkdir /tmp/a", false],
      ["bind /a /tmp/a", true],
      ["echo x", false],
    ]);
  });

  await t.step("redirections", () => {
    const c = simple(parse("echo send 6412345678 'hello' >/tmp/phone/sms").items[0]!.cmd);
    assert.deepEqual(c.words.map(show), ["echo", "send", "6412345678", "'hello'"]);
    assert.equal(c.redirs.length, 1);
    assert.equal(c.redirs[0]!.op, ">");
    assert.equal(c.redirs[0]!.fd, 1);
    assert.equal(show(c.redirs[0]!.target!), "/tmp/phone/sms");
    const d = simple(parse("cat < in >> out >[2=1]").items[0]!.cmd);
    assert.deepEqual(d.redirs.map((r) => [r.op, r.fd, r.dupFrom]), [
      ["<", 0, undefined],
      [">>", 1, undefined],
      [">", 2, 1],
    ]);
  });

  await t.step("pipes, && and ||", () => {
    const p = parse("cat f | cat | echo x").items[0]!.cmd;
    assert.equal(p.kind, "pipe");
    if (p.kind === "pipe") assert.equal(p.cmds.length, 3);
    const a = parse("ls /x && echo yes || echo no").items[0]!.cmd;
    assert.equal(a.kind, "or");
    if (a.kind === "or") assert.equal(a.left.kind, "and");
  });

  await t.step("variables and free carets", () => {
    assert.deepEqual(words('echo $user $#x $"x $x.b a$x'), [
      "echo",
      "$user",
      "$#x",
      '$"x',
      "$x^.b",
      "a^$x",
    ]);
    assert.deepEqual(words("echo a^b (x y)^z a=b"), ["echo", "a^b", "(x y)^z", "a^=^b"]);
  });

  await t.step("assignments", () => {
    const a = parse("x=value").items[0]!.cmd;
    assert.equal(a.kind, "assign");
    if (a.kind !== "assign") return;
    assert.deepEqual(a.names.map(show), ["x"]);
    assert.deepEqual(a.value.map(show), ["value"]);
    assert.equal(a.local, false);
    const b = parse("(a b) := 1 2 3").items[0]!.cmd;
    assert.equal(b.kind, "assign");
    if (b.kind === "assign") {
      assert.deepEqual(b.names.map(show), ["a", "b"]);
      assert.equal(b.local, true);
    }
  });

  await t.step("blocks nest and span lines; parentheses ignore newlines", () => {
    const c = simple(parse("{\n  echo a\n  {echo b}\n} x").items[0]!.cmd);
    assert.equal(c.words[0]!.kind, "block");
    assert.equal(show(c.words[1]!), "x");
    assert.deepEqual(words("echo (a\nb\n)"), ["echo", "(a b)"]);
  });

  await t.step("lexer marks spacing and positions", () => {
    const toks = lex("a\n  'b'c");
    assert.deepEqual(
      toks.map((t) => [t.kind, t.pos.line, t.pos.column, t.spaced]),
      [["word", 1, 1, true], ["nl", 1, 2, true], ["qword", 2, 3, true], ["word", 2, 6, false], [
        "eof",
        2,
        7,
        false,
      ]],
    );
  });
});

Deno.test("parser: bad input names line and column", async (t) => {
  const cases: [string, number, number, string][] = [
    ["echo }", 1, 6, "unexpected '}'"],
    ["ls\nls\necho a }", 3, 8, "unexpected '}'"],
    ["echo {ls", 1, 6, "unclosed '{'"],
    ["echo 'abc", 1, 6, "unterminated quoted string"],
    ["echo (a b", 1, 6, "unclosed '('"],
    ["echo a >", 1, 9, "missing file name after '>'"],
    ["; & ls", 1, 3, "unexpected '&'"],
    ["ls | | ls", 1, 6, "unexpected '|'"],
    ["echo `ls`", 1, 6, "unexpected '`'"],
    ["echo $ x", 1, 6, "missing variable name after '$'"],
    ["x=1 >f", 1, 5, "redirection of an assignment"],
    ["ls )", 1, 4, "unexpected ')'"],
  ];
  for (const [src, line, column, detail] of cases) {
    await t.step(JSON.stringify(src), () => {
      const e = syntaxError(src);
      assert.deepEqual([e.line, e.column, e.detail], [line, column, detail]);
      assert.equal(e.message, `line ${line}, column ${column}: ${detail}`);
    });
  }

  await t.step("incomplete input asks for more lines", () => {
    assert.equal(incomplete("listen -A 'tcp!*!1' {"), true);
    assert.equal(incomplete("echo 'abc"), true);
    assert.equal(incomplete("echo a &&"), true);
    assert.equal(incomplete("echo }"), false);
    assert.equal(incomplete("echo a"), false);
  });
});
