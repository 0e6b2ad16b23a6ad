/**
 * Line editing for the interactive shell on a terminal in raw mode:
 * left/right, home/end (ctrl-a, ctrl-e), backspace and delete, ctrl-u
 * (erase to start), ctrl-w (erase word), ctrl-k (erase to end), ctrl-l
 * (redraw), ctrl-c (drop the line), ctrl-d (end of input on an empty line)
 * and up/down through a history kept in a file.
 *
 * @module
 */

/** A terminal to edit lines on. */
export interface Terminal {
  /** Raw bytes typed; null at end of input. */
  read(buf: Uint8Array): Promise<number | null>;
  /** Write all of `data` to the screen. */
  write(data: Uint8Array): Promise<void>;
  /** Switch raw mode on or off. */
  setRaw(raw: boolean): void;
}

/** Options of {@link LineEditor}. */
export interface LineEditorOptions {
  /** Where history is loaded from and appended to (none: history lasts the session). */
  historyFile?: string;
  /** Most lines kept (default 1000). */
  historySize?: number;
}

const enc = new TextEncoder();

/** What a key did to the line being edited. */
type KeyResult = "continue" | "enter" | "eof" | "cancel";

/**
 * Reads lines from a terminal with editing and history.
 *
 * @example
 * ```ts ignore
 * const ed = new LineEditor(denoTerminal(), { historyFile: "/tmp/h" });
 * await ed.loadHistory();
 * const line = await ed.readLine("; ");
 * ```
 */
export class LineEditor {
  /** Lines entered, oldest first. */
  readonly history: string[] = [];
  #chars: string[] = [];
  #cursor = 0;
  #prompt = "";
  #hpos = 0;
  #saved = "";
  #pending = new Uint8Array(0);
  #decoder = new TextDecoder();

  /**
   * An editor on `term`.
   * @param term the terminal
   * @param opts history settings
   */
  constructor(readonly term: Terminal, readonly opts: LineEditorOptions = {}) {}

  /** Load earlier history from the history file, if there is one. */
  async loadHistory(): Promise<void> {
    if (!this.opts.historyFile) return;
    try {
      const text = await Deno.readTextFile(this.opts.historyFile);
      const lines = text.split("\n").filter((l) => l.trim() !== "");
      this.history.push(...lines.slice(-(this.opts.historySize ?? 1000)));
    } catch { /* no history yet */ }
  }

  /** Remember `line` (and append it to the history file). */
  async addHistory(line: string): Promise<void> {
    // A line typed in several pieces is kept as one: newlines become "; ",
    // or a blank after an opening brace, parenthesis, pipe or && / ||.
    const l = line.trim().split("\n").reduce(
      (acc, piece) =>
        acc === "" ? piece : /(\{|\(|\||&&)\s*$/.test(acc) ? `${acc} ${piece}` : `${acc}; ${piece}`,
      "",
    );
    if (l === "" || this.history[this.history.length - 1] === l) return;
    this.history.push(l);
    const max = this.opts.historySize ?? 1000;
    if (this.history.length > max) this.history.splice(0, this.history.length - max);
    if (this.opts.historyFile) {
      try {
        await Deno.writeTextFile(this.opts.historyFile, l + "\n", { append: true });
      } catch { /* history is a convenience */ }
    }
  }

  /**
   * Show `prompt` and read one edited line. Resolves to null at end of
   * input (ctrl-d on an empty line, or the terminal closing), and to ""
   * when the line is dropped with ctrl-c.
   */
  async readLine(prompt: string): Promise<string | null> {
    this.#prompt = prompt;
    this.#chars = [];
    this.#cursor = 0;
    this.#hpos = this.history.length;
    this.#saved = "";
    this.term.setRaw(true);
    try {
      await this.#out(prompt);
      // Bytes typed ahead (after an earlier line's Enter) are this line's start.
      let r: KeyResult = this.#pending.length > 0
        ? await this.#feed(new Uint8Array(0))
        : "continue";
      const buf = new Uint8Array(1024);
      while (r === "continue") {
        const n = await this.term.read(buf);
        if (n === null) {
          await this.#out("\r\n");
          return this.#chars.length > 0 ? this.#chars.join("") : null;
        }
        r = await this.#feed(buf.subarray(0, n));
      }
      if (r === "enter") {
        await this.#out("\r\n");
        return this.#chars.join("");
      }
      if (r === "eof") {
        await this.#out("\r\n");
        return null;
      }
      await this.#out("^C\r\n");
      return "";
    } finally {
      this.term.setRaw(false);
    }
  }

  /**
   * Remove every ctrl-c from the keys typed ahead of the next line.
   * @returns whether there was one: it was typed after the last line
   * ended, so it is meant for what that line runs
   */
  takeInterrupts(): boolean {
    if (!this.#pending.includes(0x03)) return false;
    this.#pending = this.#pending.filter((b) => b !== 0x03);
    return true;
  }

  async #out(s: string): Promise<void> {
    await this.term.write(enc.encode(s));
  }

  /** Redraw the line and put the cursor in place. */
  async #redraw(): Promise<void> {
    const after = this.#chars.length - this.#cursor;
    await this.#out(
      `\r${this.#prompt}${this.#chars.join("")}\x1b[K${after > 0 ? `\x1b[${after}D` : ""}`,
    );
  }

  async #feed(bytes: Uint8Array): Promise<KeyResult> {
    const all = new Uint8Array(this.#pending.length + bytes.length);
    all.set(this.#pending);
    all.set(bytes, this.#pending.length);
    this.#pending = new Uint8Array(0);
    let i = 0;
    while (i < all.length) {
      const b = all[i]!;
      if (b === 0x1b) {
        // An escape sequence: ESC [ X, ESC [ n ~, ESC O X.
        if (i + 1 >= all.length) {
          this.#pending = all.slice(i);
          break;
        }
        const b1 = all[i + 1]!;
        if (b1 !== 0x5b && b1 !== 0x4f) {
          i += 2;
          continue;
        }
        let j = i + 2;
        while (j < all.length && (all[j]! < 0x40 || all[j]! > 0x7e)) j++;
        if (j >= all.length) {
          this.#pending = all.slice(i);
          break;
        }
        const seq = String.fromCharCode(...all.subarray(i + 2, j + 1));
        i = j + 1;
        await this.#escape(seq);
        continue;
      }
      if (b < 0x20 || b === 0x7f) {
        i++;
        const r = await this.#control(b);
        if (r !== "continue") {
          // What follows was typed ahead: it belongs to the next line.
          this.#pending = all.slice(i);
          return r;
        }
        continue;
      }
      // Printable text up to the next control byte, decoded as UTF-8.
      let j = i;
      while (j < all.length && all[j]! >= 0x20 && all[j]! !== 0x7f && all[j]! !== 0x1b) j++;
      const text = this.#decoder.decode(all.subarray(i, j), { stream: true });
      i = j;
      const chars = [...text];
      this.#chars.splice(this.#cursor, 0, ...chars);
      this.#cursor += chars.length;
      await this.#redraw();
    }
    return "continue";
  }

  async #escape(seq: string): Promise<void> {
    switch (seq) {
      case "A":
        return await this.#historyMove(-1);
      case "B":
        return await this.#historyMove(1);
      case "C":
        if (this.#cursor < this.#chars.length) this.#cursor++;
        break;
      case "D":
        if (this.#cursor > 0) this.#cursor--;
        break;
      case "H":
      case "1~":
        this.#cursor = 0;
        break;
      case "F":
      case "4~":
        this.#cursor = this.#chars.length;
        break;
      case "3~":
        this.#chars.splice(this.#cursor, 1);
        break;
      default:
        return;
    }
    await this.#redraw();
  }

  async #historyMove(d: number): Promise<void> {
    const to = this.#hpos + d;
    if (to < 0 || to > this.history.length) return;
    if (this.#hpos === this.history.length) this.#saved = this.#chars.join("");
    this.#hpos = to;
    const line = to === this.history.length ? this.#saved : this.history[to]!;
    this.#chars = [...line];
    this.#cursor = this.#chars.length;
    await this.#redraw();
  }

  async #control(b: number): Promise<KeyResult> {
    switch (b) {
      case 0x0d: // enter
      case 0x0a:
        return "enter";
      case 0x03: // ctrl-c
        return "cancel";
      case 0x04: // ctrl-d
        if (this.#chars.length === 0) return "eof";
        this.#chars.splice(this.#cursor, 1);
        break;
      case 0x7f: // backspace
      case 0x08:
        if (this.#cursor === 0) return "continue";
        this.#chars.splice(--this.#cursor, 1);
        break;
      case 0x01: // ctrl-a
        this.#cursor = 0;
        break;
      case 0x05: // ctrl-e
        this.#cursor = this.#chars.length;
        break;
      case 0x02: // ctrl-b
        if (this.#cursor > 0) this.#cursor--;
        break;
      case 0x06: // ctrl-f
        if (this.#cursor < this.#chars.length) this.#cursor++;
        break;
      case 0x15: // ctrl-u
        this.#chars.splice(0, this.#cursor);
        this.#cursor = 0;
        break;
      case 0x0b: // ctrl-k
        this.#chars.splice(this.#cursor);
        break;
      case 0x17: { // ctrl-w
        let k = this.#cursor;
        while (k > 0 && this.#chars[k - 1] === " ") k--;
        while (k > 0 && this.#chars[k - 1] !== " ") k--;
        this.#chars.splice(k, this.#cursor - k);
        this.#cursor = k;
        break;
      }
      case 0x10: // ctrl-p
        await this.#historyMove(-1);
        return "continue";
      case 0x0e: // ctrl-n
        await this.#historyMove(1);
        return "continue";
      case 0x0c: // ctrl-l
        await this.#out("\x1b[H\x1b[2J");
        break;
      default:
        return "continue";
    }
    await this.#redraw();
    return "continue";
  }
}

/** The process's own terminal (standard input and output). */
export function denoTerminal(): Terminal {
  return {
    read: (buf) => Deno.stdin.read(buf),
    async write(data) {
      let off = 0;
      while (off < data.length) off += await Deno.stdout.write(data.subarray(off));
    },
    setRaw(raw) {
      try {
        Deno.stdin.setRaw(raw);
      } catch { /* not a terminal */ }
    },
  };
}
