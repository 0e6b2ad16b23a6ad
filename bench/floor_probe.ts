/**
 * Floors: what this machine and the Deno runtime allow, measured without
 * Ferry, for the figures whose targets sit near or beyond them.
 *
 * - relay: bulk TCP from a writer to a sink, each a Deno process, direct
 *   and through a third process in the middle, as a mounted remote /net
 *   puts one: a Deno relay (read, then write, 256 KiB at a time) and a
 *   splice(2) relay (socket to pipe to socket in the kernel, no copy into
 *   the process at all). 2 GiB each, median of --reps.
 * - tls: 1 GiB over mutual TLS 1.3 between two Deno processes using Deno's
 *   own TLS at both ends, memory to memory, 256 KiB writes.
 * - idle: what one idle connection costs a bare Deno server that keeps a
 *   read pending on it (RSS growth over --conns, after 20 first ones), plain
 *   TCP and mutual TLS.
 *
 *   deno run -A bench/floor_probe.ts [--json] [--reps 3] [--conns 500] [--only relay,tls,idle]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { CertificateAuthority } from "../lib/auth/ca.ts";
import { median } from "./util.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "boolean", default: false },
    reps: { type: "string", default: "3" },
    conns: { type: "string", default: "500" },
    only: { type: "string", default: "relay,tls,idle" },
    role: { type: "string" },
    arg: { type: "string" },
  },
});
const REPS = Math.max(1, Number(values.reps));
const CONNS = Math.max(20, Number(values.conns));
const RELAY_BYTES = 2 * 2 ** 30;
const TLS_BYTES = 2 ** 30;
const CHUNK = 256 * 1024;
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// The child processes' parts (--role).

/** Listen on loopback, print the port, return the listener. */
function announce(): Deno.TcpListener {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(l.addr.port);
  return l;
}

/** The descriptor of the TCP socket whose peer has port `peer` (through libc). */
function socketTo(lib: Libc, peer: number): number {
  for (let fd = 3; fd < 1024; fd++) {
    const sa = new Uint8Array(128);
    const len = new Uint32Array([sa.length]);
    if (lib.symbols.getpeername(fd, sa, new Uint8Array(len.buffer)) !== 0) continue;
    if (((sa[2]! << 8) | sa[3]!) === peer) return fd;
  }
  throw new Error(`no socket to port ${peer}`);
}

type Libc = Deno.DynamicLibrary<{
  splice: { parameters: ["i32", "pointer", "i32", "pointer", "usize", "u32"]; result: "isize" };
  pipe: { parameters: ["buffer"]; result: "i32" };
  fcntl: { parameters: ["i32", "i32", "i32"]; result: "i32" };
  getpeername: { parameters: ["i32", "buffer", "buffer"]; result: "i32" };
}>;

interface ServerCreds {
  cert: string;
  key: string;
  ca: string;
}

/** A Deno TLS listener on loopback that wants a client certificate from `o.ca`. */
function listenMutual(o: ServerCreds): Deno.TlsListener {
  return Deno.listenTls(
    {
      hostname: "127.0.0.1",
      port: 0,
      cert: o.cert,
      key: o.key,
      caCerts: [o.ca],
      requireClientCert: true,
    } as Deno.ListenTlsOptions & Deno.TlsCertifiedKeyPem,
  );
}

async function child(role: string, arg: string | undefined): Promise<void> {
  if (role === "sink") {
    const c = await announce().accept();
    const b = new Uint8Array(1 << 20);
    let got = 0;
    const t0 = performance.now();
    for (let n; (n = await c.read(b)) !== null;) got += n;
    console.log(`${got} ${(performance.now() - t0) / 1000}`);
  } else if (role === "writer") {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: Number(arg) });
    const b = new Uint8Array(CHUNK);
    for (let left = RELAY_BYTES; left > 0;) {
      left -= await c.write(b.subarray(0, Math.min(b.length, left)));
    }
    c.close();
  } else if (role === "relay") {
    const l = announce();
    const from = await l.accept();
    const to = await Deno.connect({ hostname: "127.0.0.1", port: Number(arg) });
    const b = new Uint8Array(CHUNK);
    for (let n; (n = await from.read(b)) !== null;) {
      for (let o = 0; o < n;) o += await to.write(b.subarray(o, n));
    }
    to.close();
  } else if (role === "splice") {
    const l = announce();
    const from = await l.accept();
    const to = await Deno.connect({ hostname: "127.0.0.1", port: Number(arg) });
    const lib: Libc = Deno.dlopen("libc.so.6", {
      splice: { parameters: ["i32", "pointer", "i32", "pointer", "usize", "u32"], result: "isize" },
      pipe: { parameters: ["buffer"], result: "i32" },
      fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
      getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
    });
    const fi = socketTo(lib, (from.remoteAddr as Deno.NetAddr).port);
    const fo = socketTo(lib, Number(arg));
    // Blocking descriptors: this process does nothing else.
    const F_GETFL = 3, F_SETFL = 4, O_NONBLOCK = 0o4000, F_SETPIPE_SZ = 1031, SPLICE_F_MOVE = 1;
    for (const fd of [fi, fo]) {
      lib.symbols.fcntl(fd, F_SETFL, lib.symbols.fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK);
    }
    const p = new Int32Array(2);
    lib.symbols.pipe(new Uint8Array(p.buffer));
    lib.symbols.fcntl(p[1]!, F_SETPIPE_SZ, 1 << 20);
    for (;;) {
      const n = Number(lib.symbols.splice(fi, null, p[1]!, null, 1n << 20n, SPLICE_F_MOVE));
      if (n <= 0) break;
      for (let left = n; left > 0;) {
        const m = Number(lib.symbols.splice(p[0]!, null, fo, null, BigInt(left), SPLICE_F_MOVE));
        if (m <= 0) throw new Error("splice to the sink failed");
        left -= m;
      }
    }
    to.close();
  } else if (role === "tls-server") {
    const l = listenMutual(JSON.parse(arg!));
    console.log((l.addr as Deno.NetAddr).port);
    const c = await l.accept();
    const b = new Uint8Array(CHUNK);
    for (let left = TLS_BYTES; left > 0;) {
      left -= await c.write(b.subarray(0, Math.min(b.length, left)));
    }
    await c.closeWrite().catch(() => {});
    await c.read(new Uint8Array(1)).catch(() => null);
  } else if (role === "idle-server") {
    const o = JSON.parse(arg!) as ServerCreds & { tls: boolean };
    const l = o.tls ? listenMutual(o) : Deno.listen({ hostname: "127.0.0.1", port: 0 });
    console.log((l.addr as Deno.NetAddr).port);
    for await (const c of l) {
      // Echo: each connection keeps a read pending, as a server's does.
      (async () => {
        const b = new Uint8Array(64);
        for (let n; (n = await c.read(b)) !== null;) await c.write(b.subarray(0, n));
      })().catch(() => {});
    }
  }
}

if (values.role) {
  await child(values.role, values.arg);
  Deno.exit(0);
}

// ---------------------------------------------------------------------------
// The parent: start the parts, read their figures.

const rows: string[][] = [];
function print(r: string[]): void {
  rows.push(r);
  console.log(values.json ? JSON.stringify(r) : `  ${r[0]}: ${r[1]} | ${r[2]} | ${r[3]}`);
}

function part(role: string, arg?: string): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--role", role, ...(arg ? ["--arg", arg] : [])],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

/** The first line a part prints. */
async function firstLine(p: Deno.ChildProcess): Promise<string> {
  const r = p.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await r.read();
    if (done) break;
    text += dec.decode(value);
  }
  r.releaseLock();
  return text.trim();
}

async function relayRun(mode: "direct" | "relay" | "splice"): Promise<number> {
  const sink = part("sink");
  const sinkPort = await firstLine(sink);
  const middle = mode === "direct" ? undefined : part(mode, sinkPort);
  const port = middle ? await firstLine(middle) : sinkPort;
  const writer = part("writer", port);
  const [got, secs] = (await firstLine(sink)).split(" ").map(Number);
  await Promise.all([writer.status, sink.status, middle?.status]);
  if (got !== RELAY_BYTES) throw new Error(`the sink got ${got} bytes`);
  return got! / secs! / 1e6;
}

/** Resident set of `pid`, KiB, from ps (as the idle probe reads it). */
async function rss(pid: number): Promise<number> {
  const o = await new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)] }).output();
  return Number(dec.decode(o.stdout).trim());
}

const only = new Set(values.only.split(","));
const tmp = await Deno.makeTempDir({ prefix: "ferry-floor-" });
try {
  if (only.has("relay")) {
    const figs = { direct: [] as number[], relay: [] as number[], splice: [] as number[] };
    for (let i = 0; i < REPS; i++) {
      for (const m of ["direct", "relay", "splice"] as const) figs[m].push(await relayRun(m));
    }
    const direct = median(figs.direct);
    for (
      const [m, label] of [["relay", "a Deno relay"], ["splice", "a splice(2) relay"]] as const
    ) {
      const v = median(figs[m]);
      print([
        `tunnel floor: 2 GiB writer to sink through ${label} in a third process, MB/s`,
        v.toFixed(0),
        `direct ${direct.toFixed(0)}`,
        `${((100 * v) / direct).toFixed(0)}% of direct`,
      ]);
    }
  }
  if (only.has("tls") || only.has("idle")) {
    const ca = await CertificateAuthority.init(`${tmp}/ca`, "floor");
    const s = await ca.issue("srv", { kind: "node", sans: ["localhost"] });
    const u = await ca.issue("probe", { kind: "user" });
    ca.close();
    const server = { cert: s.certPem, key: s.keyPem, ca: ca.certPem };
    const dial = (port: number) =>
      Deno.connectTls({
        hostname: "localhost",
        port,
        caCerts: [ca.certPem],
        cert: u.certPem,
        key: u.keyPem,
      } as Deno.ConnectTlsOptions);
    if (only.has("tls")) {
      const rates: number[] = [];
      for (let i = 0; i < REPS; i++) {
        const srv = part("tls-server", JSON.stringify(server));
        const c = await dial(Number(await firstLine(srv)));
        const b = new Uint8Array(1 << 20);
        let got = 0;
        const t0 = performance.now();
        while (got < TLS_BYTES) {
          const n = await c.read(b);
          if (n === null) break;
          got += n;
        }
        rates.push(got / ((performance.now() - t0) / 1000) / 1e6);
        c.close();
        await srv.status;
      }
      print([
        "TLS floor: 1 GiB over mutual TLS 1.3, Deno's TLS at both ends, memory to memory, MB/s",
        median(rates).toFixed(0),
        "target of the TLS read 1,800",
        "",
      ]);
    }
    if (only.has("idle")) {
      for (const tls of [false, true]) {
        const srv = part("idle-server", JSON.stringify({ tls, ...server }));
        const port = Number(await firstLine(srv));
        const held: Deno.Conn[] = [];
        const open = async (n: number) => {
          for (let i = 0; i < n; i++) {
            const c = tls ? await dial(port) : await Deno.connect({ hostname: "127.0.0.1", port });
            await c.write(new Uint8Array(19));
            await c.read(new Uint8Array(64));
            held.push(c);
          }
        };
        // A few first, so that what any first connection costs once (code
        // paged in, the TLS configuration) is in the baseline.
        await open(20);
        await sleep(1000);
        const base = await rss(srv.pid);
        await open(CONNS);
        await sleep(1000);
        const all = await rss(srv.pid);
        for (const c of held) c.close();
        srv.kill();
        await srv.status;
        print([
          `idle floor: one idle connection to a bare Deno server, ${
            tls ? "mutual TLS" : "plain TCP"
          } (${CONNS} held), KiB`,
          ((all - base) / CONNS).toFixed(1),
          "target < 36",
          "",
        ]);
      }
    }
  }
} finally {
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}
