/**
 * Test fixture: a Styx server for a host directory on a fixed loopback
 * port that can be stopped (dropping every connection, as a dying process
 * would) and started again on the same port.
 *
 * @module
 */
import { serve } from "../../lib/styx/server.ts";
import { HostTree } from "../../lib/fs/host.ts";
import { tcpListen } from "../../lib/transport/tcp.ts";
import type { Conn, Listener } from "../../lib/transport/conn.ts";
import type { Tree } from "../../lib/fs/tree.ts";

/** A Styx server on a fixed loopback port that can be stopped and started again. */
export class Server {
  #l: Listener | null = null;
  #conns = new Set<Conn>();
  #serving: Promise<unknown>[] = [];
  port = 0;
  /** Serve the host directory `dir`, or the tree `tree()` gives for each connection. */
  constructor(readonly dir: string, readonly tree: () => Tree = () => new HostTree(dir)) {}

  start(): void {
    this.#l = tcpListen("127.0.0.1", this.port);
    this.port = Number(this.#l.addr.split("!").pop());
    const l = this.#l;
    this.#serving.push(
      (async () => {
        for await (const c of l) {
          this.#conns.add(c);
          this.#serving.push(serve(c, this.tree()).finally(() => this.#conns.delete(c)));
        }
      })().catch(() => {}),
    );
  }

  /** Stop listening and drop every connection, as a dying process would. */
  async stop(): Promise<void> {
    this.#l?.close();
    this.#l = null;
    for (const c of this.#conns) c.close();
    await Promise.allSettled(this.#serving);
    this.#serving = [];
  }
}
