/**
 * The helper a node's cpu export starts for each command (`ferry cpu
 * --session SOCKET`): it runs in a private mount namespace and a process
 * group of its own, with the command's standard input, output and error
 * as its own. The node may start it before there is a command: it waits
 * for its job (the user, the account and the command) on the Unix socket
 * SOCKET. Then it reaches the caller's composed namespace over that socket
 * (which the node joins to the caller's link), mounts it at
 * /n/client, and runs the command there as the host account, with
 * lib/logon's machinery: the same view, FUSE mounts and account switch as
 * `ferry logon -- COMMAND`. A second connection to SOCKET carries one
 * line back as the helper exits: the command's exit status, so the node
 * need not wait for the process to be torn down to answer N/wait.
 *
 * @module
 */

import { MemTree } from "../fs/memory.ts";
import { Namespace } from "../ns/namespace.ts";
import { RemoteTree, StyxClient } from "../styx/client.ts";
import { TcpConn } from "../transport/tcp.ts";
import type { Job } from "./server.ts";
import { cstr, openLibc } from "../libc.ts";
import { prepareView, runInView } from "../logon/session.ts";

/** Where the caller's namespace appears on the node. */
export const CLIENT_MOUNT = "/n/client";

/** Options of {@link runSession}. */
export interface SessionOptions {
  /** The Unix socket that brings the job, then carries the caller's namespace. */
  socket: string;
}

/**
 * Run the command the node sends, with the caller's namespace at
 * /n/client; its exit status. A node that hangs up before sending one
 * ends the helper with status 0.
 */
export async function runSession(opts: SessionOptions): Promise<number> {
  let raw: Deno.UnixConn;
  try {
    raw = await Deno.connect({ transport: "unix", path: opts.socket });
  } catch (e) {
    // The node went before this helper was needed.
    await removeSocketDir(opts.socket);
    throw e;
  }
  // Done while the job is awaited: the view's first steps, ahead of need.
  const reading = readJob(raw);
  const libc = loadLibc();
  reportStatusAtExit(libc, opts.socket);
  // The version exchange with the caller's namespace starts now: Tversion
  // waits on the socket until the node, having sent the job, joins it to
  // the caller, who answers it as soon as the session's files are open.
  const conn = new AfterJob(raw, reading);
  const connecting = StyxClient.connect(conn);
  connecting.catch(() => {});
  prepareView();
  // The command writes to this helper's standard output, a pipe the node
  // reads: a larger pipe lets each of the node's reads take more.
  growPipe(libc, 1, PIPE_BYTES);
  warmSpawn();
  const job = await reading;
  if (!job) {
    // The node went without a job for this helper (killed, say): a node
    // that closes its spare kills it instead, and removes the directory.
    conn.close();
    await removeSocketDir(opts.socket);
    return 0;
  }
  // The node gone, or the session hung up: the command is hung up too
  // (runInView passes SIGHUP on to it, then takes the mounts down).
  let done = false;
  conn.closed.then(() => {
    if (!done) Deno.kill(Deno.pid, "SIGHUP");
  });
  try {
    // The caller's namespace is mounted at /n/client as attached: a walk
    // through a namespace of this helper's to reach it would cost a round
    // trip to the caller, through the node, for nothing.
    const caller = { user: job.user };
    const hungUp = conn.closed.then(() => {
      throw new Error("the node hung up before the caller's namespace was reached");
    });
    hungUp.catch(() => {});
    // Given up on when the node hangs up (the caller gone), so that the
    // view built meanwhile is taken down, not left waiting to be killed.
    const top = Promise.race([
      connecting.then((client) => new RemoteTree(client, { uname: job.user }).attach(caller, "")),
      hungUp,
    ]);
    const ns = new Namespace(new MemTree(), { caller });
    return await runInView(ns, {
      user: job.user,
      account: job.account,
      command: job.command,
      rootByManifest: job.root === true,
      onSkip: (t, why) => console.error(`cpu: '${t}' is not mounted: ${why}`),
      roots: new Map([[CLIENT_MOUNT, top]]),
      // The helper has nothing left to do: the node learns the status as
      // the helper's own, and the link to the caller drops with the helper.
      exitWhenDone: true,
    });
  } finally {
    done = true;
    await connecting.then((client) => client.close(), () => conn.close());
  }
}

/** Remove the node-made directory that holds `socket`: the node is gone. */
async function removeSocketDir(socket: string): Promise<void> {
  const dir = socket.slice(0, socket.lastIndexOf("/"));
  if (/\/ferry-cpu-[^/]+$/.test(dir)) await Deno.remove(dir, { recursive: true }).catch(() => {});
}

/**
 * The helper's socket as a Styx transport whose reads wait until the job
 * ahead of the Styx stream has been read (by {@link readJob}); writes go
 * out at once.
 */
class AfterJob extends TcpConn {
  #gate: Promise<unknown> | undefined;

  constructor(raw: Deno.UnixConn, job: Promise<unknown>) {
    super(raw, { authenticated: false });
    this.#gate = job.then(() => (this.#gate = undefined), () => this.close());
  }

  override read(): Promise<Uint8Array | null> {
    return this.#gate ? this.#gate.then(() => super.read()) : super.read();
  }

  override readInto(buf: Uint8Array): Promise<number | null> {
    return this.#gate ? this.#gate.then(() => super.readInto(buf)) : super.readInto(buf);
  }
}

/** Read exactly `buf.length` bytes; false at end of input before any. */
async function readFull(conn: Deno.Conn, buf: Uint8Array): Promise<boolean> {
  for (let at = 0; at < buf.length;) {
    // Never past `buf`: what follows the job is the Styx stream. A read
    // that fails (the node gone, the socket closed under it) is an end too.
    const n = await conn.read(buf.subarray(at)).catch(() => null);
    if (n === null) {
      if (at === 0) return false;
      throw new Error("the node hung up in the middle of the job");
    }
    at += n;
  }
  return true;
}

/** The job the node sends: a 4-byte big-endian length, then JSON. */
async function readJob(conn: Deno.Conn): Promise<Job | undefined> {
  const head = new Uint8Array(4);
  if (!await readFull(conn, head)) return undefined;
  const n = new DataView(head.buffer).getUint32(0);
  if (n > 1 << 20) throw new Error(`the node sent a job of ${n} bytes`);
  const body = new Uint8Array(n);
  if (!await readFull(conn, body)) throw new Error("the node hung up in the middle of the job");
  const job = JSON.parse(new TextDecoder().decode(body)) as Job;
  if (
    typeof job?.user !== "string" || !Array.isArray(job.command) || job.command.length === 0 ||
    typeof job.account?.uid !== "number"
  ) {
    throw new Error("the node sent a malformed job");
  }
  return job;
}

/**
 * Load what Deno loads at its first `Deno.Command` (a few milliseconds of
 * module code), so that the command's spawn does not wait for it.
 */
function warmSpawn(): void {
  new Deno.Command("true", { stdin: "null", stdout: "null", stderr: "null" });
}

/** Pipe capacity asked for the command's standard output. */
const PIPE_BYTES = 1 << 20;
const F_SETPIPE_SZ = 1031;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const O_WRONLY = 1;
const O_CLOEXEC = 0o2000000;

const LIBC = {
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

type Libc = Deno.DynamicLibrary<typeof LIBC>["symbols"];

/** The C library calls below, loaded once; undefined without FFI. */
function loadLibc(): Libc | undefined {
  try {
    return openLibc(LIBC, "the cpu helper");
  } catch {
    return undefined;
  }
}

/**
 * Standard output and error, and every descriptor open on the same file
 * (compared by device and inode, as fstat(2) gives them: the first two
 * fields of struct stat on Linux).
 */
function outputDescriptors(libc: Libc): number[] {
  const st = new Uint8Array(256);
  const view = new DataView(st.buffer);
  const fileOf = (fd: number) =>
    libc.fstat(fd, st) === 0
      ? `${view.getBigUint64(0, true)}:${view.getBigUint64(8, true)}`
      : undefined;
  const outs = new Set([fileOf(1), fileOf(2)].filter((f) => f !== undefined));
  const fds = [1, 2];
  for (let fd = 3; fd < 1024; fd++) {
    const f = fileOf(fd);
    if (f !== undefined && outs.has(f)) fds.push(fd);
  }
  return fds;
}

/** Ask for a pipe of `bytes` on `fd`; only a tuning, so nothing is said when it is refused. */
function growPipe(libc: Libc | undefined, fd: number, bytes: number): void {
  libc?.fcntl(fd, F_SETPIPE_SZ, bytes);
}

/**
 * Open the helper's second connection to the node (the node takes the
 * first one for the job), and write the exit status on it as the process
 * exits, once the command's output is closed: the node then has both
 * without waiting for the process to be torn down. Made with the C
 * library, since nothing else can write while the process exits. Without
 * it the node takes the status of the helper's exit, as it does when the
 * helper is killed.
 */
function reportStatusAtExit(libc: Libc | undefined, path: string): void {
  const name = new TextEncoder().encode(path);
  // sockaddr_un: the family, then the path with its NUL (at most 108 bytes).
  const addr = new Uint8Array(2 + 108);
  let fd = -1;
  if (libc && name.length < 108) {
    new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
    addr.set(name, 2);
    fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && libc.connect(fd, addr, 2 + name.length + 1) !== 0) {
      libc.close(fd);
      fd = -1;
    }
  }
  if (!libc || fd < 0) {
    // The node waits for a second connection: one that says nothing.
    Deno.connect({ transport: "unix", path }).catch(() => {});
    return;
  }
  const sock = fd;
  const outputs = outputDescriptors(libc);
  globalThis.addEventListener("unload", () => {
    try {
      const line = new TextEncoder().encode(`${Deno.exitCode}\n`);
      libc.write(sock, line, BigInt(line.length));
      // The command's output ends here (the node reads it to its end):
      // Deno keeps copies of the standard descriptors, so every one goes.
      const nul = libc.open(cstr("/dev/null"), O_WRONLY | O_CLOEXEC);
      if (nul >= 0) {
        for (const d of outputs) libc.dup2(nul, d);
        libc.close(nul);
      }
    } catch { /* the node takes the status of the exit */ }
  });
}
