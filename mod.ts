/**
 * Ferry: Inferno-style resource sharing for today's machines and phones.
 *
 * Every resource is a file tree served over Styx (9P2000): host directories,
 * the network stack (`/net`), processes (`/prog`) and phones (`/phone`).
 * A {@link Namespace} composes trees per process with `bind` and `mount`;
 * {@link serve} exports any tree; {@link StyxClient} mounts a remote one;
 * connections are mutually authenticated TLS 1.3 unless asked otherwise.
 *
 * @example
 * ```ts
 * import { MemTree, memPipe, serve, StyxClient } from "./mod.ts";
 *
 * const [a, b] = memPipe();
 * serve(b, new MemTree());
 * const client = await StyxClient.connect(a);
 * const root = await client.attach("glenda");
 * await client.writeFile(root, "/greeting", new TextEncoder().encode("hello"));
 * const text = new TextDecoder().decode(await client.readFile(root, "/greeting"));
 * if (text !== "hello") throw new Error("lost the greeting");
 * await client.close();
 * ```
 *
 * @module
 */

export * from "./lib/styx/types.ts";
export * from "./lib/bytes.ts";
export * from "./lib/styx/codec.ts";
export * from "./lib/styx/frame.ts";
export * from "./lib/styx/server.ts";
export * from "./lib/styx/client.ts";
export * from "./lib/fs/tree.ts";
export * from "./lib/fs/memory.ts";
export * from "./lib/fs/host.ts";
export * from "./lib/fs/synthetic.ts";
export * from "./lib/transport/conn.ts";
export * from "./lib/transport/pipe.ts";
export * from "./lib/transport/tcp.ts";
export * from "./lib/net/dial.ts";
export * from "./lib/net/connect.ts";
export * from "./lib/ns/namespace.ts";
export * from "./lib/dev/phone/tree.ts";
