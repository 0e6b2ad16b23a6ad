/**
 * The caller's side of `ferry cpu NODE`: over the one Styx link to NODE's
 * cpu export, make a session, serve the caller's composed namespace back
 * through the session's `ns` file, run the command, and carry standard
 * input, output and error, ^C and the window size until it exits. See
 * server.ts for the files.
 *
 * @module
 */

import type { Caller, Node, OpenFile, Tree } from "../fs/tree.ts";
import { walkOpen } from "../fs/tree.ts";
import { quote } from "../fs/synthetic.ts";
import { ORDWR, OREAD, OWRITE } from "../styx/types.ts";
import { serve } from "../styx/server.ts";
import { memPipe } from "../transport/pipe.ts";
import { newestOnly } from "./streams.ts";

/** The first read of the session's ns file, sent with its open. */
const NS_READ_AHEAD = 64 * 1024;

/**
 * Reads of standard output (and error) kept in flight: up to this many
 * replies of an iounit each (512 KiB from a Ferry node) may be on their
 * way. 16 moved a 1 GiB stream 6-12% faster than 4 here.
 */
const READS_IN_FLIGHT = 16;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Where a {@link runCpu} session's bytes come from and go. */
export interface CpuIo {
  /** Standard input (null: none, the command reads end of file). */
  stdin: ReadableStream<Uint8Array> | null;
  /** Write standard output bytes; resolves when taken. */
  stdout(b: Uint8Array): Promise<void>;
  /** Write standard error bytes. */
  stderr(b: Uint8Array): Promise<void>;
}

/** Options of {@link runCpu}. */
export interface CpuOptions {
  /** The node's link (a tree whose attach names the export). */
  link: Tree;
  /** The name of the node's cpu export. */
  export: string;
  /** The caller (the Ferry user) the session is made as. */
  caller: Caller;
  /**
   * What to serve back at /n/client: the caller's composed namespace, or a
   * function making it, called once the command has been asked for (so
   * the node starts it while the namespace is made). The command cannot
   * start before the namespace is served, since its /n/client is mounted
   * first; if making it fails, the session is hung up and runCpu rejects
   * with that error.
   */
  namespace: Tree | (() => Promise<Tree>);
  /** The command and its arguments; a string runs through the account's shell, null a login shell. */
  command: string[] | string | null;
  /** Where standard input, output and error come from and go. */
  io: CpuIo;
  /** Run on a pseudo-terminal of this size (and terminal type). */
  pty?: { rows: number; cols: number; term?: string };
  /** Told once the command runs, with the means to interrupt and resize it. */
  onStart?: (ctl: CpuControl) => void;
}

/** What a running session can be told. */
export interface CpuControl {
  /** ^C: interrupt the command's process group. */
  interrupt(): Promise<void>;
  /** The terminal's new size. */
  winch(rows: number, cols: number): Promise<void>;
}

/**
 * Run `opts.command` on the node; resolves with its exit status once it
 * has exited and its output is all written.
 */
export async function runCpu(opts: CpuOptions): Promise<number> {
  let root: Node;
  try {
    root = await opts.link.attach(opts.caller, opts.export);
  } catch (e) {
    const why = (e as Error).message;
    const hint = /permission denied/.test(why) ? ": it is not on the export's access list" : "";
    throw new Error(
      `the node refused '${opts.caller.user}' its cpu export '${opts.export}': ${why}${hint}`,
    );
  }
  const opened: OpenFile[] = [];
  const nodes: Node[] = [root];
  const hangups: (() => void)[] = [];
  try {
    // The session's number comes back with the open.
    const clone = await walkOpen(root, ["clone"], ORDWR, { readAhead: 64 });
    opened.push(clone);
    const ctl = async (line: string) => void await clone.write(0n, enc.encode(line));
    // The command is asked for at once, before the session's number is
    // read (the clone file speaks for its session), so the node starts it
    // while the session's files are opened here. A refusal (an account the
    // node lacks, say) comes back from this, with no reads yet waiting on
    // the session.
    const asked = (async () => {
      if (opts.pty) {
        const term = opts.pty.term ? ` ${quote(opts.pty.term)}` : "";
        await ctl(`pty ${opts.pty.rows} ${opts.pty.cols}${term}`);
      }
      const cmd = opts.command;
      await ctl(
        cmd === null
          ? "shell"
          : typeof cmd === "string"
          ? `shell ${quote(cmd)}`
          : `exec ${cmd.map(quote).join(" ")}`,
      );
    })();
    asked.catch(() => {}); // awaited below
    const id = dec.decode(await clone.read(0n, 64)).trim();
    if (!/^\d+$/.test(id)) throw new Error(`the node answered '${id}' for a session number`);
    // Each file is reached from the root, its walk and open in one round
    // trip; the ns file's first read goes with them, and brings back the
    // node's first request of the namespace (which the node has waiting).
    // The node's iounit for it is the whole message, so the first read
    // asks for no less than this read brought.
    const open = async (name: string, mode: number, readAhead?: number) => {
      let f: OpenFile;
      try {
        f = await walkOpen(root, [id, name], mode, { readAhead });
      } catch (e) {
        if (/does not exist/.test((e as Error).message)) {
          throw new Error(`session '${id}' vanished on the node`);
        }
        throw e;
      }
      opened.push(f);
      return f;
    };
    const [stdin, stdout, stderr, wait, nsFile] = await Promise.all([
      open("stdin", OWRITE),
      open("stdout", OREAD),
      open("stderr", OREAD),
      open("wait", OREAD),
      open("ns", ORDWR, NS_READ_AHEAD),
    ]);
    await asked;
    // Reads still waiting when the session ends are flushed. Once the
    // status and the output are in none is, and aborting would only cost
    // this end time.
    const stop = new AbortController();
    let finished = false;
    hangups.push(() => {
      if (!finished) stop.abort();
    });
    const signal = stop.signal;

    // The caller's namespace, served over the session's ns file.
    const [near, far] = memPipe();
    hangups.push(() => far.close());
    let failed: { error: unknown } | undefined;
    const making = typeof opts.namespace === "function"
      ? opts.namespace()
      : Promise.resolve(opts.namespace);
    const served = making.then(
      (tree) => serve(near, tree, { callerFor: () => opts.caller }),
      (error) => {
        failed = { error };
        stop.abort();
      },
    );
    const nsUnit = nsFile.iounit || 64 * 1024;
    const toNode = (async () => {
      let off = 0n;
      for (;;) {
        const b = await far.read();
        if (b === null) break;
        for (let i = 0; i < b.length; i += nsUnit) {
          const part = b.subarray(i, i + nsUnit);
          await nsFile.write(off, part);
          off += BigInt(part.length);
        }
      }
    })().catch(() => {});
    const fromNode = (async () => {
      let off = 0n;
      for (;;) {
        // Not flushed when the session ends (flushing costs more than
        // leaving it): the read still out is answered, or not, once the
        // link is gone.
        const b = await nsFile.read(off, nsUnit);
        if (b.length === 0) break;
        off += BigInt(b.length);
        await far.write(b.slice());
      }
    })().catch(() => {}).finally(() => far.close());

    // Sizes sent one after another, so the node ends at the newest.
    const resize = newestOnly((size: string) => ctl(`winch ${size}`));
    opts.onStart?.({
      interrupt: () => ctl("intr"),
      winch: (r, c) => resize(`${r} ${c}`),
    });

    // Several reads in flight once output flows, so the node always has
    // one to answer while earlier replies are on their way and being
    // written out here; the node answers reads in the order they came.
    // One at first: a command with little or no output costs the node and
    // this end no more messages than it needs.
    const drain = async (f: OpenFile, out: (b: Uint8Array) => Promise<void>) => {
      const unit = f.iounit || 512 * 1024;
      let n = 0n;
      const next = () => f.read(n++, unit, { signal });
      const q = [next()];
      try {
        for (;;) {
          const b = await q.shift()!;
          if (b.length === 0) break;
          while (q.length < READS_IN_FLIGHT) q.push(next());
          await out(b);
          // The reply's buffer can carry a later reply.
          f.release?.(b);
        }
      } finally {
        await Promise.allSettled(q);
      }
    };
    const outs = Promise.all([drain(stdout, opts.io.stdout), drain(stderr, opts.io.stderr)]);
    outs.catch(() => {}); // awaited below, unless the session fails first
    const feed = opts.io.stdin;
    let stopFeed = () => {};
    if (feed) {
      const r = feed.getReader();
      stopFeed = () => void r.cancel().catch(() => {});
      hangups.push(stopFeed);
      (async () => {
        let off = 0n;
        const unit = stdin.iounit || 64 * 1024;
        for (;;) {
          const { value, done } = await r.read();
          if (done) break;
          for (let i = 0; i < value.length; i += unit) {
            const part = value.subarray(i, i + unit);
            await stdin.write(off, part);
            off += BigInt(part.length);
          }
        }
        await stdin.write(off, new Uint8Array(0));
      })().catch(() => {});
    } else {
      await stdin.write(0n, new Uint8Array(0)).catch(() => {});
    }
    let status: number;
    try {
      status = Number(dec.decode(await wait.read(0n, 64, { signal })).trim());
    } catch (e) {
      await served;
      throw failed ? failed.error : e;
    }
    await outs;
    stopFeed();
    // The command has exited: nothing the node asks of the namespace now
    // is needed (the helper may still be exiting). Its serving winds down
    // (in-flight requests, fids) without being waited for.
    far.close();
    near.close();
    void Promise.allSettled([toNode, fromNode, served]);
    finished = true;
    return Number.isInteger(status) ? status : 1;
  } finally {
    for (const h of hangups) h();
    // Clunked without waiting for the answers: the status and the output
    // are in, and a caller that hangs up the link next loses nothing.
    const files = Promise.allSettled(opened.reverse().map((f) => f.close()));
    void files.then(() => Promise.allSettled(nodes.reverse().map((n) => n.close())));
  }
}
