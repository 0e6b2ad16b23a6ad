/**
 * The helper a node's cpu export starts for each command (`ferry cpu
 * --session SOCKET`): it runs in a private mount namespace and a process
 * group of its own, with the command's standard input, output and error
 * as its own. It reaches the caller's composed namespace over the Unix
 * socket SOCKET (which the node joins to the caller's link), mounts it at
 * /n/client, and runs the command there as the host account, with
 * lib/logon's machinery: the same view, FUSE mounts and account switch as
 * `ferry logon -- COMMAND`.
 *
 * @module
 */

import { MemTree } from "../fs/memory.ts";
import { Namespace } from "../ns/namespace.ts";
import { RemoteTree, StyxClient } from "../styx/client.ts";
import { TcpConn } from "../transport/tcp.ts";
import { lookupAccount } from "../logon/account.ts";
import { runInView } from "../logon/session.ts";

/** Where the caller's namespace appears on the node. */
export const CLIENT_MOUNT = "/n/client";

/** Options of {@link runSession}. */
export interface SessionOptions {
  /** The Unix socket that carries the caller's namespace. */
  socket: string;
  /** The Ferry user. */
  user: string;
  /** The host account to run as. */
  account: string;
  /** The command and its arguments. */
  command: string[];
}

/** Run the command with the caller's namespace at /n/client; its exit status. */
export async function runSession(opts: SessionOptions): Promise<number> {
  const account = await lookupAccount(opts.account);
  if (!account) throw new Error(`host account '${opts.account}' does not exist`);
  const raw = await Deno.connect({ transport: "unix", path: opts.socket });
  const conn = new TcpConn(raw, { authenticated: false });
  const client = await StyxClient.connect(conn);
  // The node gone, or the session hung up: the command is hung up too
  // (runInView passes SIGHUP on to it, then takes the mounts down).
  let done = false;
  conn.closed.then(() => {
    if (!done) Deno.kill(Deno.pid, "SIGHUP");
  });
  try {
    const root = new MemTree();
    await root.mkdirp(CLIENT_MOUNT);
    const ns = new Namespace(root, { caller: { user: opts.user } });
    await ns.mount(new RemoteTree(client, { uname: opts.user }), CLIENT_MOUNT, {
      source: "client",
    });
    return await runInView(ns, {
      user: opts.user,
      account,
      command: opts.command,
      onSkip: (t, why) => console.error(`cpu: '${t}' is not mounted: ${why}`),
    });
  } finally {
    done = true;
    client.close();
  }
}
