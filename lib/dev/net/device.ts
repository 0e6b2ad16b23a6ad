/**
 * The /net device (`#I`), following Inferno's ip(3) and cs(8), backed by the
 * host's sockets:
 *
 * - `/net/tcp/clone`: opening it makes a new conversation N; the open file
 *   is N's ctl (reading it gives "N").
 * - `/net/tcp/N/ctl`: `connect addr!port`, `announce [addr!]port` ('*' is
 *   every address; port 0 picks a free one, read `local` to learn it),
 *   `hangup`, `keepalive [ms]`.
 * - `/net/tcp/N/data`: the byte stream; a read returns what is available up
 *   to its count, and nothing at end of stream.
 * - `/net/tcp/N/listen`: opening it waits for a call to the announced N and
 *   yields the new conversation's ctl.
 * - `/net/tcp/N/{local,remote,status}`: "addr!port" lines and the state.
 * - `/net/udp/clone`, `/net/udp/N/{ctl,data,local,remote,status}`: UDP as
 *   far as it maps onto host sockets: `connect`, `announce`, `headers`
 *   (Plan 9's 52-byte header on every datagram), `hangup`; one datagram
 *   per read or write.
 * - `/net/cs`: write `tcp!host!port`, then each read gives one line
 *   `/net/tcp/clone addr!port`, as cs(8) does.
 * - `/net/dns`: write `name ip` (or ipv6, mx, ns, cname, txt, ptr), then
 *   each read gives one answer line.
 *
 * Conversation files belong to the user who made the conversation (mode
 * 0660), so users sharing an exported /net cannot read each other's data.
 *
 * @example
 * ```ts
 * import { NetDevice } from "./device.ts";
 * import { ORDWR } from "../../styx/types.ts";
 * const dev = new NetDevice();
 * const root = await dev.tree().attach({ user: "glenda" }, "");
 * const { node } = await root.walk(["tcp", "clone"]);
 * const ctl = await node!.open(ORDWR);
 * const n = new TextDecoder().decode(await ctl.read(0n, 32));
 * if (n !== "0") throw new Error(`first conversation is ${n}`);
 * await ctl.close();
 * ```
 *
 * @module
 */

import {
  type Command,
  type Ctx,
  dir,
  type DirEntry,
  type Entry,
  file,
  type Handle,
  runCtl,
  sliceAt,
  SynthTree,
} from "../../fs/synthetic.ts";
import type { Tree } from "../../fs/tree.ts";
import { StyxError } from "../../styx/types.ts";
import { parseDialString } from "../../net/dial.ts";
import { TcpConv } from "./conv.ts";
import { UdpConv } from "./udp.ts";

type AnyConv = TcpConv | UdpConv;
import { dnsQuery, resolveHost, type ResolveOptions } from "./resolve.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** Options for {@link NetDevice}. */
export interface NetOptions extends ResolveOptions {
  /** Where the device is mounted, used in cs answers (default "/net"). */
  netRoot?: string;
}

/**
 * Translate a cs(8) query (`tcp!host!port`, `net!host!service`, `tcp!*!port`,
 * `udp!host!port`) into lines `ROOT/NET/clone addr!port`, one per address of
 * the host.
 * Throws a StyxError starting "cs: can't translate address" when it cannot.
 *
 * @example
 * ```ts
 * import { csTranslate } from "./device.ts";
 * const lines = await csTranslate("tcp!127.0.0.1!styx");
 * if (lines[0] !== "/net/tcp/clone 127.0.0.1!6666") throw new Error(lines[0]);
 * ```
 */
export async function csTranslate(query: string, opts: NetOptions = {}): Promise<string[]> {
  const root = opts.netRoot ?? "/net";
  let a;
  try {
    a = parseDialString(query.trim(), { net: "tcp" });
  } catch (e) {
    throw new StyxError(`cs: can't translate address: ${(e as Error).message}`);
  }
  const clone = `${root}/${a.net}/clone`;
  if (a.host === "*") return [`${clone} *!${a.port}`];
  let addrs: string[];
  try {
    addrs = await resolveHost(a.host, opts);
  } catch (e) {
    throw new StyxError(`cs: can't translate address: ${(e as Error).message}`);
  }
  return addrs.map((ip) => `${clone} ${ip}!${a.port}`);
}

/**
 * A read-only text file whose text is made afresh by every read from
 * offset 0, as ip(3) makes a conversation's local, remote and status when
 * they are read: one opened before a connect shows the addresses after it.
 * Reads at later offsets continue the text of the last read from 0.
 */
function liveText(name: string, produce: () => string, opts: { uid: string; perm: number }): Entry {
  return file(name, () => {
    let text = EMPTY;
    const h: Handle = {
      read: (off, count) => {
        if (off === 0n) text = enc.encode(produce());
        return sliceAt(text, off, count);
      },
    };
    return h;
  }, opts);
}

/** A file answering one query per write, one answer line per read. */
function queryFile(
  name: string,
  answer: (q: string, ctx: Ctx) => Promise<string[]>,
): Entry {
  return file(name, () => {
    let lines: string[] = [];
    let next = 0;
    const h: Handle = {
      read: () => {
        const line = lines[next];
        if (line === undefined) return EMPTY;
        next++;
        return enc.encode(line);
      },
      write: async (_off, data, ctx) => {
        lines = [];
        next = 0;
        const q = dec.decode(data).trim();
        if (q === "") throw new StyxError(`${name}: empty query`);
        lines = await answer(q, ctx);
        return data.length;
      },
    };
    return h;
  }, { perm: 0o666 });
}

/**
 * The device's tree. No file of it keeps a reference to the bytes of a
 * write once the write has finished (a data write resolves after the
 * socket took them; ctl, cs and dns decode their text at once), so the
 * Styx server may reuse the buffers of large Twrites.
 */
class NetTree extends SynthTree {
  /** Written data is not kept once a write has finished (see the Styx server). */
  readonly copiesWrites = true;
}

/** The /net device: one conversation table shared by everyone who attaches. */
export class NetDevice {
  readonly #convs = new Map<number, TcpConv>();
  readonly #udp = new Map<number, UdpConv>();
  #gen = 0;
  readonly #tree: SynthTree;
  readonly #opts: NetOptions;

  /** A device with no conversations yet. */
  constructor(opts: NetOptions = {}) {
    this.#opts = opts;
    this.#tree = new NetTree(this.#root(), { uid: "network" });
  }

  /** The device as a tree (the same tree every time). */
  tree(): Tree {
    return this.#tree;
  }

  /** Numbers of the live TCP conversations, ascending. */
  conversations(): number[] {
    return [...this.#convs.keys()].sort((a, b) => a - b);
  }

  /** Numbers of the live UDP conversations, ascending. */
  udpConversations(): number[] {
    return [...this.#udp.keys()].sort((a, b) => a - b);
  }

  /** Close every conversation (for shutting down). */
  closeAll(): void {
    for (const c of [...this.#convs.values(), ...this.#udp.values()]) c.teardown();
  }

  #newUdp(owner: string): UdpConv {
    let id = 0;
    while (this.#udp.has(id)) id++;
    const c = new UdpConv(id, owner, ++this.#gen, (gone) => {
      if (this.#udp.get(gone.id) === gone) this.#udp.delete(gone.id);
    });
    this.#udp.set(id, c);
    return c;
  }

  #udpTable(c: UdpConv): Command[] {
    return [
      {
        name: "connect",
        min: 1,
        max: 2,
        usage: "addr!port [localport]",
        run: (args, ctx) => c.connect(args[0]!, args[1], ctx.signal),
      },
      { name: "announce", min: 1, usage: "[addr!]port", run: (args) => c.announce(args[0]!) },
      { name: "headers", run: () => c.headers() },
      { name: "hangup", run: () => c.hangup() },
    ];
  }

  #newConv(owner: string): TcpConv {
    let id = 0;
    while (this.#convs.has(id)) id++;
    const c = new TcpConv(id, owner, ++this.#gen, (gone) => {
      if (this.#convs.get(gone.id) === gone) this.#convs.delete(gone.id);
    });
    this.#convs.set(id, c);
    return c;
  }

  #ctlTable(c: TcpConv): Command[] {
    return [
      {
        name: "connect",
        min: 1,
        max: 2,
        usage: "addr!port [localport]",
        run: (args, ctx) => c.connect(args[0]!, ctx.signal),
      },
      { name: "announce", min: 1, usage: "[addr!]port", run: (args) => c.announce(args[0]!) },
      { name: "hangup", run: () => c.hangup() },
      {
        name: "keepalive",
        min: 0,
        max: 1,
        usage: "[ms]",
        run: (args) => {
          if (args[0] !== undefined && !/^[0-9]+$/.test(args[0])) {
            throw new StyxError(`bad ctl message 'keepalive': bad interval '${args[0]}'`);
          }
          c.keepalive(true);
        },
      },
    ];
  }

  /** A handle acting as c's ctl; it holds a reference until closed. */
  #ctlHandle(c: AnyConv): Handle {
    c.ref();
    let closed = false;
    const table = c instanceof TcpConv ? this.#ctlTable(c) : this.#udpTable(c);
    return {
      read: (off, count) => sliceAt(enc.encode(String(c.id)), off, count),
      write: async (_off, data, ctx) => {
        if (c.gone) throw new StyxError("i/o on hungup channel");
        await runCtl(dec.decode(data), table, ctx);
        return data.length;
      },
      close: () => {
        if (closed) return;
        closed = true;
        c.unref();
      },
    };
  }

  #convDir(c: AnyConv): DirEntry {
    const own = { uid: c.owner, perm: 0o660 };
    const ro = { uid: c.owner, perm: 0o444 };
    const gone = () => {
      if (c.gone) throw new StyxError("i/o on hungup channel");
    };
    return dir(String(c.id), [
      file("ctl", () => {
        gone();
        return this.#ctlHandle(c);
      }, own),
      file("data", () => {
        gone();
        c.ref();
        let closed = false;
        return {
          read: (_off, count, ctx) => c.read(count, ctx.signal, ctx.allocAhead),
          write: (_off, data) => c.write(data),
          close: () => {
            if (closed) return;
            closed = true;
            c.unref();
          },
        };
      }, own),
      ...(c instanceof TcpConv
        ? [file("listen", async (ctx) => {
          gone();
          const sock = await c.accept(ctx.signal);
          const nc = this.#newConv(ctx.caller.user);
          nc.adopt(sock);
          return this.#ctlHandle(nc);
        }, own)]
        : []),
      liveText("local", () => c.local + "\n", ro),
      liveText("remote", () => c.remote + "\n", ro),
      liveText("status", () => c.status(), ro),
    ], { uid: c.owner, perm: 0o555, id: String(c.gen) });
  }

  #root(): DirEntry {
    const clone = file("clone", (ctx) => this.#ctlHandle(this.#newConv(ctx.caller.user)), {
      perm: 0o666,
    });
    const tcp = dir("tcp", () => [
      clone,
      ...this.conversations().map((n) => this.#convDir(this.#convs.get(n)!)),
    ]);
    const udpClone = file("clone", (ctx) => this.#ctlHandle(this.#newUdp(ctx.caller.user)), {
      perm: 0o666,
    });
    const udp = dir("udp", () => [
      udpClone,
      ...this.udpConversations().map((n) => this.#convDir(this.#udp.get(n)!)),
    ]);
    return dir("", [
      tcp,
      udp,
      queryFile("cs", (q) => csTranslate(q, this.#opts)),
      queryFile("dns", (q, ctx) => {
        const words = q.split(/\s+/);
        if (words.length > 2) {
          throw new StyxError(`dns: bad query '${q}': want 'name [type]'`);
        }
        return dnsQuery(words[0]!, words[1] ?? "ip", { ...this.#opts, signal: ctx.signal });
      }),
    ]);
  }
}
