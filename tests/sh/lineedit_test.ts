import assert from "node:assert/strict";
import { LineEditor, type Terminal } from "../../lib/sh/lineedit.ts";

/** A terminal whose keystrokes come from a list of chunks. */
function scripted(chunks: (string | number[])[]): Terminal & { screen: string; raw: boolean[] } {
  const enc = new TextEncoder();
  const queue = chunks.map((c) => typeof c === "string" ? enc.encode(c) : new Uint8Array(c));
  const t = {
    screen: "",
    raw: [] as boolean[],
    read(buf: Uint8Array): Promise<number | null> {
      const c = queue.shift();
      if (!c) return Promise.resolve(null);
      buf.set(c);
      return Promise.resolve(c.length);
    },
    write(data: Uint8Array): Promise<void> {
      t.screen += new TextDecoder().decode(data);
      return Promise.resolve();
    },
    setRaw(raw: boolean): void {
      t.raw.push(raw);
    },
  };
  return t;
}

const LEFT = "\x1b[D";
const RIGHT = "\x1b[C";
const UP = "\x1b[A";
const DOWN = "\x1b[B";

Deno.test("line editor", async (t) => {
  await t.step("plain typing, raw mode on while reading and off after", async () => {
    const term = scripted(["echo hi\r"]);
    const ed = new LineEditor(term);
    assert.equal(await ed.readLine("; "), "echo hi");
    assert.deepEqual(term.raw, [true, false]);
    assert.ok(term.screen.startsWith("; "));
  });

  await t.step("lines typed ahead in one chunk are each read in turn", async () => {
    const term = scripted(["echo one\recho two\rec", "ho three\r"]);
    const ed = new LineEditor(term);
    assert.equal(await ed.readLine("; "), "echo one");
    assert.equal(await ed.readLine("; "), "echo two");
    assert.equal(await ed.readLine("; "), "echo three");
    assert.equal(await ed.readLine("; "), null);
    // Each line shows on the screen as it is read.
    assert.match(term.screen, /echo one[^]*echo two[^]*echo three/);
  });

  await t.step("cursor movement, backspace, delete and insertion", async () => {
    const ed = new LineEditor(
      scripted(["echo abc", LEFT + LEFT, "\x7f", "X", "\x01", "\x1b[3~", "E\r"]),
    );
    assert.equal(await ed.readLine("; "), "Echo Xbc");
  });

  await t.step("ctrl-u, ctrl-w, ctrl-k, ctrl-e", async () => {
    const ed = new LineEditor(
      scripted([
        "junk",
        "\x15",
        "echo one two",
        "\x17",
        "three",
        "\x01",
        RIGHT,
        "\x0b",
        "\x05",
        "\r",
      ]),
    );
    assert.equal(await ed.readLine("; "), "e");
  });

  await t.step("escape sequences and UTF-8 split across reads", async () => {
    const ed = new LineEditor(scripted(["é", "\x1b", "[D", [0xe2, 0x82], [0xac], "\r"]));
    assert.equal(await ed.readLine("; "), "€é");
  });

  await t.step("ctrl-c drops the line; ctrl-d on an empty line is end of input", async () => {
    const ed = new LineEditor(scripted(["abc\x03", "\x04"]));
    assert.equal(await ed.readLine("; "), "");
    assert.equal(await ed.readLine("; "), null);
  });

  await t.step("history: up and down, the line being typed is kept", async () => {
    const dir = await Deno.makeTempDir();
    try {
      const file = `${dir}/history`;
      const ed = new LineEditor(scripted([]), { historyFile: file });
      await ed.addHistory("echo first");
      await ed.addHistory("echo second");
      await ed.addHistory("echo second");
      await ed.addHistory("{echo a\necho b}");
      assert.deepEqual(ed.history, ["echo first", "echo second", "{echo a; echo b}"]);
      const again = new LineEditor(
        scripted(["draft", UP, UP, UP, DOWN, "\r", UP, DOWN, DOWN, DOWN, "\r"]),
        {
          historyFile: file,
        },
      );
      await again.loadHistory();
      assert.deepEqual(again.history, ed.history);
      assert.equal(await again.readLine("; "), "echo second");
      assert.equal(await again.readLine("; "), "");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});
