/**
 * The Styx (9P2000) client, in three layers:
 *
 * - {@link StyxClient}: one connection; allocates tags and fids, keeps many
 *   requests in flight, checks every reply against its request, and turns an
 *   aborted {@link AbortSignal} into a Tflush.
 * - {@link RemoteTree}, {@link RemoteNode}, {@link RemoteFile}: a remote
 *   file tree seen through the client, implementing the one tree interface
 *   (lib/fs/tree.ts), so a namespace can mount it and a server can export it.
 * - {@link RecoveringTree}: a remote tree that owns its dial function and,
 *   when the connection is lost, redials with backoff, attaches again and
 *   walks and opens again what was in use (as recover(4) and aan(8) do).
 * - Path helpers on the client (`walkPath`, `readFile`, `writeFile`, `ls`,
 *   `stat`, `create`, `remove`) and the streaming helpers {@link readStream}
 *   and {@link writeFrom}, which keep several Tread/Twrite in flight with
 *   backpressure.
 *
 * @example
 * ```ts
 * import { StyxClient } from "./client.ts";
 * import { serve } from "./server.ts";
 * import { MemTree } from "../fs/memory.ts";
 * import { memPipe } from "../transport/pipe.ts";
 *
 * const [a, b] = memPipe();
 * serve(b, new MemTree());
 * const client = await StyxClient.connect(a);
 * const root = await client.attach("glenda");
 * await client.writeFile(root, "/hello", new TextEncoder().encode("hi"));
 * const back = await client.readFile(root, "/hello");
 * if (new TextDecoder().decode(back) !== "hi") throw new Error("lost bytes");
 * await client.close();
 * ```
 *
 * @module
 */

export {
  lostReason,
  RemoteFile,
  RemoteNode,
  RemoteTree,
  type RemoteWalkResult,
} from "./client_tree.ts";
export {
  readStream,
  type ReadStreamOptions,
  writeFrom,
  type WriteFromOptions,
} from "./client_io.ts";
export {
  ConnectionLostError,
  HangupError,
  InterruptedError,
  type ReplyTo,
  type RpcOptions,
  StyxClient,
  type StyxClientOptions,
  type Untagged,
} from "./client_conn.ts";
export {
  type RecoverEvent,
  RecoverFile,
  RecoveringTree,
  RecoverNode,
  type RecoverOptions,
} from "./client_recover.ts";
