/**
 * `ferry sh`: the Inferno-like shell. Interactive with a `; ` prompt, line
 * editing and history on a terminal; runs `-c` commands or a script file
 * otherwise. Each shell starts from the default namespace rooted at a host
 * directory (`-r DIR`, like `emu -r`).
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import { Namespace } from "../lib/ns/namespace.ts";
import { defaultRootDir, type DeviceFactory } from "../lib/ns/devices.ts";
import { Shell } from "../lib/sh/interp.ts";
import { builtins } from "../lib/sh/builtins/mod.ts";
import { denoReader, denoWriter, emptyReader, type ShIO } from "../lib/sh/io.ts";
import { incomplete } from "../lib/sh/parser.ts";
import { StyxError } from "../lib/styx/types.ts";
import { denoTerminal, LineEditor } from "../lib/sh/lineedit.ts";
import { standardDevices } from "./devices.ts";
import type { PhoneDevice } from "../lib/dev/phone/device.ts";

/** Devices bound into every new shell's namespace, as Inferno's /lib/namespace does. */
const STARTUP_BINDS: [device: string, path: string][] = [
  ["#I", "/net"],
  ["#p", "/prog"],
];

const spec = {
  usage: "ferry sh [-r ROOTDIR] [--phone BACKEND[:ARG]] [-c COMMANDS] [FILE [ARG...]]",
  about: "Run Ferry's Inferno-like shell. With -c, run COMMANDS; with FILE, run the script " +
    "in the host file FILE with $* set to the ARGs; otherwise read commands from standard " +
    "input, with a '; ' prompt, line editing and history when it is a terminal. Unless " +
    "reading from a terminal, the shell ends only when its commands and its background jobs " +
    "(such as listen) have finished. mount and listen without -A use the credentials in " +
    "$FERRY_CERTS, else ~/.ferry/certs (the pair named by $FERRY_NAME, or the only one).",
  options: {
    r: { type: "string" as const, short: "r" },
    c: { type: "string" as const, short: "c" },
    phone: { type: "string" as const },
  },
  optionsHelp:
    "  -r DIR       root directory of the namespace (default $FERRY_ROOT or ~/.ferry/root)\n" +
    "  -c COMMANDS  run COMMANDS and exit\n" +
    "  --phone SPEC bind this machine's phone at /phone: sim[:STATEDIR] (simulated modem),\n" +
    "               modemmanager[:MODEM] or termux[:STATEDIR] (default state ~/.ferry/phone)",
};

/**
 * $user: $USER, else $LOGNAME, else the account name of this process's uid
 * in /etc/passwd (its number when it has none), as a login would set it.
 */
async function hostUser(): Promise<string> {
  const env = Deno.env.get("USER") || Deno.env.get("LOGNAME");
  if (env) return env;
  const uid = Deno.uid();
  if (uid === null) return "none";
  const { hostUsers } = await import("../lib/fs/users.ts");
  return (await hostUsers()).userName(uid);
}

/** Reads lines from a stream that is not a terminal. */
class LineReader {
  #buf = "";
  #dec = new TextDecoder();
  #eof = false;
  constructor(readonly r: { read(p: Uint8Array): Promise<number | null> }) {}
  async readLine(): Promise<string | null> {
    for (;;) {
      const nl = this.#buf.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        return line;
      }
      if (this.#eof) {
        if (this.#buf === "") return null;
        const line = this.#buf;
        this.#buf = "";
        return line;
      }
      const b = new Uint8Array(16384);
      const n = await this.r.read(b);
      if (n === null) this.#eof = true;
      else this.#buf += this.#dec.decode(b.subarray(0, n), { stream: true });
    }
  }
}

/**
 * The terminal while `ferry sh` runs on it: kept in raw mode the whole
 * session, with one reader taking every keystroke into a queue. While a
 * command runs, ctrl-c interrupts it at once (a blocked read is flushed)
 * and everything else typed stays queued for the prompt. Left to the
 * terminal driver, ctrl-c would discard the lines typed ahead, and a read
 * that never returns could not be interrupted.
 */
class TtyInput {
  #queue: Uint8Array[] = [];
  #eof = false;
  #wake: (() => void) | null = null;
  /** Called on ctrl-c while a command runs; null while the line editor reads. */
  interrupt: (() => void) | null = null;

  /** Start reading the terminal; it runs until end of input. */
  start(): void {
    (async () => {
      const buf = new Uint8Array(4096);
      for (;;) {
        let n: number | null;
        try {
          n = await Deno.stdin.read(buf);
        } catch {
          n = null;
        }
        if (n === null) break;
        let chunk = buf.slice(0, n);
        if (this.interrupt && chunk.includes(0x03)) {
          chunk = chunk.filter((b) => b !== 0x03);
          this.interrupt();
        }
        if (chunk.length > 0) this.#queue.push(chunk);
        this.#wake?.();
      }
      this.#eof = true;
      this.#wake?.();
    })();
  }

  /** Remove every ctrl-c from the keystrokes queued; true if there was one. */
  takeInterrupts(): boolean {
    let found = false;
    this.#queue = this.#queue.map((c) => {
      if (!c.includes(0x03)) return c;
      found = true;
      return c.filter((b) => b !== 0x03);
    }).filter((c) => c.length > 0);
    return found;
  }

  /** The line editor's read: queued keystrokes first. */
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#queue.length === 0) {
      if (this.#eof) return null;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = null;
    }
    const c = this.#queue[0]!;
    const n = Math.min(c.length, p.length);
    p.set(c.subarray(0, n));
    if (n === c.length) this.#queue.shift();
    else this.#queue[0] = c.subarray(n);
    return n;
  }
}

function setRaw(raw: boolean): void {
  try {
    Deno.stdin.setRaw(raw);
  } catch { /* not a terminal any more */ }
}

async function interactive(sh: Shell, rootDir: string, io: ShIO): Promise<number> {
  const tty = Deno.stdin.isTerminal();
  let editor: LineEditor | undefined;
  let plain: LineReader | undefined;
  let input: TtyInput | undefined;
  if (tty) {
    const dir = `${rootDir}/usr/${sh.user}/lib`;
    await Deno.mkdir(dir, { recursive: true }).catch(() => {});
    input = new TtyInput();
    const term = denoTerminal();
    editor = new LineEditor(
      { read: (p) => input!.read(p), write: term.write, setRaw: () => {} },
      { historyFile: `${dir}/sh_history` },
    );
    await editor.loadHistory();
    // A SIGINT sent from elsewhere interrupts the command as ctrl-c does. One
    // listener for the whole session: adding and removing one per command
    // was seen to put the terminal back into cooked mode.
    Deno.addSignalListener("SIGINT", () => input?.interrupt?.());
    setRaw(true);
    // However the process ends, the terminal is left as it was found.
    globalThis.addEventListener("unload", () => setRaw(false));
    // A failure nothing waited for is a fault in some command's device, not
    // a reason to throw the user out of their session: say it, go on.
    globalThis.addEventListener("unhandledrejection", (e) => {
      e.preventDefault();
      const why = e.reason instanceof Error ? e.reason.message : String(e.reason);
      io.stderr.write(new TextEncoder().encode(`sh: unexpected failure: ${why}\n`)).catch(
        () => {},
      );
    });
    input.start();
  } else {
    plain = new LineReader(Deno.stdin);
  }
  try {
    for (;;) {
      let src = "";
      let prompt = "; ";
      for (;;) {
        const line = editor ? await editor.readLine(prompt) : await plain!.readLine();
        if (line === null) {
          if (src !== "") break;
          // Commands piped in end like a script: background jobs (a listen) keep
          // the process alive. On a terminal, end of input ends everything.
          if (!tty) await sh.jobs.waitAll();
          return sh.status === "" ? 0 : 1;
        }
        src += line + "\n";
        if (!incomplete(src)) break;
        prompt = "\t";
      }
      if (src.trim() === "") continue;
      // ctrl-c while a command runs interrupts it, not the shell. From here
      // on a ctrl-c typed is this command's, even before it starts.
      const ctrl = new AbortController();
      let said: Promise<unknown> = Promise.resolve();
      const interrupt = () => {
        if (ctrl.signal.aborted) return;
        ctrl.abort(new StyxError("interrupted"));
        // The terminal echoes nothing in raw mode: say what happened.
        said = io.stderr.write(new TextEncoder().encode("^C\n")).catch(() => {});
      };
      if (input) {
        input.interrupt = interrupt;
        // Keys typed after this line's Enter may have been read before the
        // command began: a ctrl-c among them is still this command's.
        const early = editor!.takeInterrupts();
        if (input.takeInterrupts() || early) interrupt();
      }
      sh.signal = ctrl.signal;
      try {
        await editor?.addHistory(src.trimEnd());
        await sh.run(src, io);
      } finally {
        if (input) input.interrupt = null;
        sh.signal = new AbortController().signal;
        // The next prompt goes to the terminal by another stream: "^C" first.
        await said;
      }
      if (sh.exited) return sh.status === "" ? 0 : 1;
    }
  } finally {
    if (tty) setRaw(false);
  }
}

/** Run `ferry sh` with `args`; resolves to the exit status. */
export async function run(args: string[]): Promise<number> {
  // Options end at the first file name: what follows belongs to the script.
  const firstFile = args.findIndex((a, i) =>
    !a.startsWith("-") && !["-r", "-c", "--phone"].includes(args[i - 1] ?? "")
  );
  const own = firstFile < 0 ? args : args.slice(0, firstFile);
  const scriptArgs = firstFile < 0 ? [] : args.slice(firstFile);
  let p;
  try {
    p = parse(spec, own);
  } catch (e) {
    if (e instanceof UsageError) return fail("sh", e);
    throw e;
  }
  if (p.help) return 0;
  const command = p.values.c as string | undefined;
  if (command !== undefined && scriptArgs.length > 0) {
    return fail("sh", new Error(`give -c or a FILE, not both (got FILE '${scriptArgs[0]}')`));
  }
  let rootDir: string;
  let ns: Namespace;
  let phone: PhoneDevice | undefined;
  const devices = standardDevices();
  try {
    rootDir = (p.values.r as string | undefined) ?? defaultRootDir();
    if (typeof p.values.phone === "string") {
      phone = await startPhone(p.values.phone, rootDir, devices);
    }
    ns = await Namespace.standard({ user: await hostUser(), rootDir, devices });
  } catch (e) {
    return fail("sh", e);
  }
  try {
    const binds = phone ? [...STARTUP_BINDS, [phone.device, "/phone"] as const] : STARTUP_BINDS;
    for (const [dev, path] of binds) {
      if (!devices.has(dev)) continue;
      try {
        await ns.bind(dev, path);
      } catch (e) {
        console.error(`sh: cannot bind '${dev}' on ${path}: ${(e as Error).message}`);
        if (dev === phone?.device) return 1;
      }
    }
    return await runShell(ns, rootDir, command, scriptArgs);
  } finally {
    await phone?.close();
  }
}

/**
 * Add '#P' for the phone `spec` names (`ferry sh --phone`) to `devices` and
 * make the /phone mount point in the root directory. SIGTERM (and SIGINT
 * unless a terminal is attached) stops the phone in order before the shell
 * exits, so a message the modem took is recorded as sent and not sent again.
 */
async function startPhone(
  spec: string,
  rootDir: string,
  devices: Map<string, DeviceFactory>,
): Promise<PhoneDevice> {
  const { parsePhoneSpec, PhoneDevice, phoneDevice } = await import(
    "../lib/dev/phone/device.ts"
  );
  const dev = new PhoneDevice({ ...parsePhoneSpec(spec), uid: await hostUser() });
  devices.set(dev.device, phoneDevice(dev));
  await Deno.mkdir(`${rootDir}/phone`, { recursive: true });
  const signals: [Deno.Signal, number][] = [["SIGTERM", 143]];
  if (!Deno.stdin.isTerminal()) signals.push(["SIGINT", 130]);
  for (const [sig, status] of signals) {
    Deno.addSignalListener(sig, () => {
      dev.close().finally(() => Deno.exit(status));
    });
  }
  return dev;
}

async function runShell(
  ns: Namespace,
  rootDir: string,
  command: string | undefined,
  scriptArgs: string[],
): Promise<number> {
  const io: ShIO = {
    stdin: command !== undefined || scriptArgs.length > 0 ? denoReader(Deno.stdin) : emptyReader,
    stdout: denoWriter(Deno.stdout),
    stderr: denoWriter(Deno.stderr),
  };
  const sh = new Shell({ ns, builtins: builtins(), io });
  if (command !== undefined) {
    await sh.run(command);
  } else if (scriptArgs.length > 0) {
    const file = scriptArgs[0]!;
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      return fail("sh", new Error(`cannot read script '${file}': ${(e as Error).message}`));
    }
    sh.set("*", scriptArgs.slice(1));
    sh.set("0", [file]);
    await sh.run(text);
  } else {
    return await interactive(sh, rootDir, io);
  }
  if (!sh.exited) await sh.jobs.waitAll();
  return sh.status === "" ? 0 : 1;
}
