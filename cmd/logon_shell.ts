/**
 * The shell part of `ferry logon`: Ferry's shell in the composed namespace,
 * running COMMANDS (-c) or reading lines from the terminal or standard
 * input. Loaded only when a logon runs the shell.
 *
 * @module
 */

import type { Namespace } from "../lib/ns/namespace.ts";
import { Shell } from "../lib/sh/interp.ts";
import { builtins } from "../lib/sh/builtins/mod.ts";
import { denoReader, denoWriter, emptyReader } from "../lib/sh/io.ts";
import { incomplete } from "../lib/sh/parser.ts";
import { denoTerminal, LineEditor } from "../lib/sh/lineedit.ts";

/** Run `command` (or, if undefined, an interactive shell) as `user` in `ns`; the exit status. */
export async function runShell(
  ns: Namespace,
  user: string,
  cwd: string,
  command: string | undefined,
): Promise<number> {
  const sh = new Shell({
    ns,
    user,
    cwd,
    builtins: builtins(),
    io: {
      stdin: command !== undefined ? denoReader(Deno.stdin) : emptyReader,
      stdout: denoWriter(Deno.stdout),
      stderr: denoWriter(Deno.stderr),
    },
  });
  if (command !== undefined) {
    await sh.run(command);
  } else {
    await interactive(sh);
  }
  if (!sh.exited) await sh.jobs.waitAll();
  return sh.status === "" ? 0 : 1;
}

async function interactive(sh: Shell): Promise<void> {
  const tty = Deno.stdin.isTerminal();
  const editor = tty ? new LineEditor(denoTerminal(), {}) : undefined;
  const reader = tty ? undefined : Deno.stdin.readable.pipeThrough(new TextDecoderStream())
    .getReader();
  let buf = "";
  const next = async (prompt: string): Promise<string | null> => {
    if (editor) return await editor.readLine(prompt);
    for (;;) {
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        const l = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        return l;
      }
      const { value, done } = await reader!.read();
      if (done) {
        if (buf === "") return null;
        const l = buf;
        buf = "";
        return l;
      }
      buf += value;
    }
  };
  const io = {
    stdin: emptyReader,
    stdout: denoWriter(Deno.stdout),
    stderr: denoWriter(Deno.stderr),
  };
  for (;;) {
    let src = "";
    let prompt = "; ";
    for (;;) {
      const line = await next(prompt);
      if (line === null) {
        if (src === "") return;
        break;
      }
      src += line + "\n";
      if (!incomplete(src)) break;
      prompt = "\t";
    }
    if (src.trim() === "") continue;
    await editor?.addHistory(src.trimEnd());
    await sh.run(src, io);
    if (sh.exited) return;
  }
}
