/**
 * A `ferry` child process kept running while its output is gathered, for
 * the demo and for tests that drive several nodes at once.
 *
 * @module
 */

import { ferryArgv } from "./self.ts";

/** Where {@linkcode FerryChild.waitFor} looks. */
export interface WaitOptions {
  /** Which output to search: standard output, standard error, or both (the default). */
  stream?: "stdout" | "stderr" | "both";
  /** Search only from this offset of the stream's text (not with `both`). */
  from?: number;
  /** Give up after this many milliseconds (default 20,000). */
  ms?: number;
}

/** A `ferry` child process whose output is gathered as it comes. */
export class FerryChild {
  /** The running process. */
  readonly proc: Deno.ChildProcess;
  /** Standard output so far. */
  stdout = "";
  /** Standard error so far. */
  stderr = "";
  readonly #done: Promise<void>;
  #ended = false;

  /** Start `ferry ARGS…` with no standard input. */
  constructor(args: string[]) {
    const [exe, ...pre] = ferryArgv();
    this.proc = new Deno.Command(exe!, {
      args: [...pre, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const pump = async (s: ReadableStream<Uint8Array>, k: "stdout" | "stderr") => {
      for await (const t of s.pipeThrough(new TextDecoderStream())) this[k] += t;
    };
    this.#done = Promise.all([pump(this.proc.stdout, "stdout"), pump(this.proc.stderr, "stderr")])
      .then(() => {});
    this.proc.status.then(() => (this.#ended = true));
  }

  #text(o: WaitOptions): string {
    const s = o.stream ?? "both";
    if (s === "both") return this.stdout + this.stderr;
    return this[s].slice(o.from ?? 0);
  }

  /**
   * Wait until `re` matches the output and return the match. Fails naming
   * what the process said if it ends first or the time runs out.
   */
  async waitFor(re: RegExp, o: WaitOptions = {}): Promise<string> {
    const until = Date.now() + (o.ms ?? 20_000);
    for (;;) {
      const m = this.#text(o).match(re);
      if (m) return m[0];
      if (this.#ended) {
        await this.#done;
        const m2 = this.#text(o).match(re);
        if (m2) return m2[0];
        throw new Error(
          `ferry ended before printing ${re}:\n${this.stdout}\n${this.stderr}`.trim(),
        );
      }
      if (Date.now() > until) {
        throw new Error(`timed out waiting for ${re} from ferry; it said:\n${this.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Wait for the process to end on its own; its status and all it printed. */
  async result(): Promise<{ code: number; out: string; err: string }> {
    const st = await this.proc.status;
    await this.#done;
    return { code: st.code, out: this.stdout, err: this.stderr };
  }

  /** Send `signal` (SIGTERM by default) and wait for the process and its output to end. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.proc.kill(signal);
    } catch { /* already gone */ }
    const st = await this.proc.status;
    await this.#done;
    return st;
  }
}
