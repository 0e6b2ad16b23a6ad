/**
 * `ferry up`: run one node of a manifest. The node listens on its address
 * with mutual TLS (or announces through its `via` node's /net when it is
 * behind NAT), serves each export under its name as the attach name
 * ("home", or "home/sub/dir" for a directory inside it), and checks every
 * attach against the export's access list as the manifest says now.
 *
 * A changed manifest (file change or {@link FerryNode.reload}, e.g. on
 * SIGHUP, or a change published by the signer that `ferry up --join`
 * follows, see lib/cluster/join.ts) is verified, checked and applied live: new exports appear,
 * removed or redefined exports drop the sessions using them, a user who
 * lost access loses the sessions attached to that export, and every other
 * session carries on. A manifest that fails to verify or check is
 * reported and the running one kept, and so is a signed manifest whose
 * serial is lower than the highest this node has applied (kept in its
 * credentials directory, see sign.ts), so an older copy put back is refused.
 *
 * @module
 */

import type { Caller, Node, Tree } from "../fs/tree.ts";
import type { Conn, Listener } from "../transport/conn.ts";
import { Ename, StyxError } from "../styx/types.ts";
import { serve } from "../styx/server.ts";
import { HostTree } from "../fs/host.ts";
import { type CredentialWatch, watchCredentials } from "../auth/link.ts";
import { tlsListen } from "../transport/tls.ts";
import { listenHost, parseDialString } from "../net/dial.ts";
import { announceStyxVia } from "../net/nsdial.ts";
import { sharedNetDevice } from "../dev/net/mod.ts";
import { ProgDevice } from "../dev/prog/mod.ts";
import { Phone } from "../dev/phone/tree.ts";
import { SimBackend } from "../dev/phone/sim.ts";
import { ModemManagerBackend } from "../dev/phone/modemmanager.ts";
import { TermuxBackend } from "../dev/phone/termux.ts";
import type { PhoneBackend } from "../dev/phone/backend.ts";
import { FilterTree } from "./filter.ts";
import { CpuService } from "../cpu/server.ts";
import { checkManifest } from "./check.ts";
import { loadBytes } from "./load.ts";
import {
  checkSerial,
  readSigned,
  recordSerial,
  refuseUnsigned,
  type SignedManifest,
} from "./sign.ts";
import { applyNamespace, NodeDialer } from "./apply.ts";
import type { DeviceFactory } from "../ns/devices.ts";
import {
  accessAllows,
  type ExportSpec,
  groupsOf,
  type Manifest,
  ManifestError,
  type NodeSpec,
} from "./schema.ts";

/** Options for {@link FerryNode.start}. */
export interface NodeOptions {
  /** The manifest file. */
  file: string;
  /** Which node of it this is. */
  node: string;
  /** The node's credentials directory (ca.pem, NODE.pem, NODE.key). */
  certDir: string;
  /** Accept an unsigned or altered manifest (says so in the log). */
  insecureManifest?: boolean;
  /** How often to look for a changed manifest (default 1000 ms; 0: never). */
  pollMs?: number;
  /** Where status lines go (default: standard error). */
  log?: (line: string) => void;
  /** Devices of the namespaces its `namespace` exports compose (see cmd/devices.ts). */
  devices?: ReadonlyMap<string, DeviceFactory>;
}

interface LiveExport {
  spec: ExportSpec;
  key: string;
  tree: Tree;
  dispose(): Promise<void>;
}

interface Session {
  conn: Conn;
  user: string;
  /** Groups its certificate carries. */
  certGroups: string[];
  /** Names of the exports it attached. */
  exports: Set<string>;
}

/** What about an export, besides its access list, makes it a different export. */
function exportKey(e: ExportSpec): string {
  return JSON.stringify([
    e.kind,
    e.path,
    e.readonly,
    e.filter,
    e.backend,
    e.state,
    e.namespace.map((x) => x.text),
  ]);
}

async function fileStamp(file: string): Promise<string> {
  const parts: string[] = [];
  for (const f of [file, `${file}.sig`]) {
    try {
      const st = await Deno.stat(f);
      parts.push(`${st.mtime?.getTime()}:${st.size}:${st.ino ?? 0}`);
    } catch {
      parts.push("-");
    }
  }
  return parts.join("|");
}

/** A running node. */
export class FerryNode {
  #opts: NodeOptions;
  #log: (line: string) => void;
  #m!: Manifest;
  #spec!: NodeSpec;
  #exports = new Map<string, LiveExport>();
  #sessions = new Set<Session>();
  #listener: Listener | undefined;
  #serving: Promise<void> | undefined;
  #creds!: CredentialWatch;
  #viaDialer: NodeDialer | undefined;
  #stamp = "";
  #timer: ReturnType<typeof setInterval> | undefined;
  #reloading: Promise<boolean> | undefined;
  #closed = false;

  private constructor(opts: NodeOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? ((l) => console.error(l));
  }

  /** The manifest in force. */
  get manifest(): Manifest {
    return this.#m;
  }

  /** The address the node listens on (as a dial string). */
  get address(): string {
    return this.#listener?.addr ?? this.#spec.address;
  }

  /** Sessions currently open. */
  get sessions(): number {
    return this.#sessions.size;
  }

  /** Load, verify and check the manifest, then start serving. */
  static async start(opts: NodeOptions): Promise<FerryNode> {
    const n = new FerryNode(opts);
    try {
      n.#creds = await watchCredentials(opts.certDir, opts.node, {
        onError: (e) => n.#log(`up: cannot reload credentials: ${e.message}`),
      });
      n.#stamp = await fileStamp(opts.file);
      const { m, signed } = await n.#read();
      n.#m = m;
      n.#spec = m.nodes.get(opts.node)!;
      for (const e of n.#spec.exports.values()) await n.#addExport(e);
      await n.#listen();
      if (signed) await recordSerial(signed, opts.certDir);
    } catch (e) {
      await n.close();
      throw e;
    }
    const ms = opts.pollMs ?? 1000;
    if (ms > 0) {
      n.#timer = setInterval(async () => {
        const s = await fileStamp(opts.file);
        if (s !== n.#stamp) {
          n.#stamp = s;
          await n.reload("the manifest changed");
        }
      }, ms);
    }
    return n;
  }

  async #read(): Promise<{ m: Manifest; signed?: SignedManifest }> {
    const { file, node } = this.#opts;
    let bytes: Uint8Array;
    let signed: SignedManifest | undefined;
    if (this.#opts.insecureManifest) {
      try {
        bytes = await Deno.readFile(file);
      } catch (e) {
        throw new Error(`Cannot read manifest '${file}': ${(e as Error).message}`);
      }
    } else {
      signed = await readSigned(file, this.#creds.current().ca);
      await checkSerial(signed, file, this.#opts.certDir);
      bytes = signed.bytes;
    }
    const m = loadBytes(
      bytes,
      file,
      this.#opts.insecureManifest ? {} : { readFile: refuseUnsigned },
    );
    const problems = checkManifest(m);
    if (problems.length) throw new ManifestError(problems);
    if (!m.nodes.has(node)) {
      throw new Error(
        `No node '${node}' in '${file}' (nodes: ${[...m.nodes.keys()].join(", ") || "none"})`,
      );
    }
    return { m, signed };
  }

  async #makeTree(e: ExportSpec): Promise<LiveExport> {
    const key = exportKey(e);
    const plain = (tree: Tree): LiveExport => ({ spec: e, key, tree, dispose: async () => {} });
    switch (e.kind) {
      case "host": {
        const h = new HostTree(e.path!, { readOnly: e.readonly });
        await h.ready();
        return plain(e.filter.length ? new FilterTree(h, e.filter) : h);
      }
      case "net":
        return plain(sharedNetDevice().tree());
      case "prog":
        return plain(new ProgDevice().tree());
      case "phone": {
        const state = e.state ?? `${this.#opts.certDir}/phone-${e.name}`;
        await Deno.mkdir(state, { recursive: true });
        const backend = phoneBackend(e.backend ?? "sim", state);
        const phone = await Phone.open({
          backend,
          stateDir: state,
          log: (m) => this.#log(`up: phone '${e.name}': ${m}`),
        });
        return { spec: e, key, tree: phone.tree(), dispose: () => phone.close() };
      }
      case "namespace": {
        const c = await applyNamespace(this.#m, e.namespace, {
          user: this.#opts.node,
          creds: this.#creds.current(),
          rootDir: `${this.#opts.certDir}/root-${e.name}`,
          devices: this.#opts.devices,
          home: "/",
          required: [],
          onEntry: (r) => {
            if (!r.ok) this.#log(`up: export '${e.name}': ${r.line}: ${r.error}`);
          },
        });
        return { spec: e, key, tree: c.ns.subtree("/"), dispose: () => c.close() };
      }
      case "cpu": {
        const cpu = new CpuService({
          node: this.#opts.node,
          manifest: () => this.#m,
          log: this.#log,
        });
        return { spec: e, key, tree: cpu.tree(), dispose: () => cpu.close() };
      }
    }
  }

  async #addExport(e: ExportSpec): Promise<void> {
    try {
      this.#exports.set(e.name, await this.#makeTree(e));
    } catch (err) {
      this.#log(`up: cannot export '${e.name}' (${e.kind}): ${(err as Error).message}`);
    }
  }

  #router(): Tree {
    return {
      attach: async (caller: Caller, aname: string): Promise<Node> => {
        const [name, ...sub] = aname.split("/").filter((s) => s !== "");
        const ex = this.#exports.get(name ?? "");
        if (!ex) throw new StyxError(Ename.notFound);
        const root = await ex.tree.attach(caller, "");
        if (sub.length === 0) return root;
        if (sub.includes("..")) {
          await root.close();
          throw new StyxError(Ename.perm);
        }
        try {
          const r = await root.walk(sub);
          if (!r.node) throw new StyxError(Ename.notFound);
          return r.node;
        } finally {
          await root.close();
        }
      },
    };
  }

  #serveConn(conn: Conn): void {
    const s: Session = {
      conn,
      user: conn.peer.identity ?? "",
      certGroups: conn.peer.groups ?? [],
      exports: new Set(),
    };
    this.#sessions.add(s);
    serve(conn, this.#router(), {
      callerFor: (_uname, aname, peer) => {
        if (!peer.authenticated || !peer.identity) throw new StyxError(Ename.perm);
        const name = aname.split("/").find((x) => x !== "") ?? "";
        const ex = this.#exports.get(name);
        if (!ex) throw new StyxError(Ename.notFound);
        const groups = [...new Set([...(peer.groups ?? []), ...groupsOf(this.#m, peer.identity)])];
        if (!accessAllows(ex.spec.access, peer.identity, groups)) {
          this.#log(`up: refused '${peer.identity}' attaching '${name}': not on its access list`);
          throw new StyxError(Ename.perm);
        }
        s.exports.add(name);
        return { user: peer.identity, groups, authenticated: true };
      },
    }).finally(() => {
      this.#sessions.delete(s);
      conn.close();
    });
  }

  async #listen(): Promise<void> {
    const spec = this.#spec;
    const onRefused = (addr: string, reason: string) => this.#log(`up: refused ${addr}: ${reason}`);
    if (spec.via !== undefined) {
      this.#viaDialer = new NodeDialer(this.#m, this.#creds.current(), this.#opts.node);
      const ns = await this.#viaDialer.netSpace(this.#m.nodes.get(spec.via)!);
      this.#listener = await announceStyxVia(ns, spec.address, {
        insecure: false,
        creds: this.#creds,
        onRefused,
      });
    } else {
      const a = parseDialString(spec.address, { net: "tcp", service: "styx" });
      this.#listener = await tlsListen(listenHost(a), a.port, {
        creds: this.#creds,
        onRefused,
      });
    }
    const l = this.#listener;
    this.#serving = (async () => {
      for await (const conn of l) this.#serveConn(conn);
    })().catch((e) => this.#log(`up: listener stopped: ${(e as Error).message}`));
    const exports = [...this.#exports.values()].map((x) => `${x.spec.name}(${x.spec.kind})`);
    this.#log(
      `up: node '${spec.name}' serving ${exports.join(" ") || "nothing"} on ${l.addr}${
        spec.via ? ` via '${spec.via}'` : ""
      }`,
    );
  }

  async #stopListening(): Promise<void> {
    this.#listener?.close();
    this.#listener = undefined;
    await this.#serving;
    await this.#viaDialer?.close();
    this.#viaDialer = undefined;
  }

  /**
   * Re-read the manifest and apply what changed; resolves true when a new
   * manifest took effect, false when it was refused (the old one stays).
   */
  reload(reason = "asked to"): Promise<boolean> {
    const run = async (): Promise<boolean> => {
      let next: { m: Manifest; signed?: SignedManifest };
      try {
        next = await this.#read();
      } catch (e) {
        this.#log(
          `up: reload (${reason}) refused, keeping the running manifest:\n${(e as Error).message}`,
        );
        return false;
      }
      await this.#apply(next.m);
      const signed = next.signed;
      if (signed) {
        await recordSerial(signed, this.#opts.certDir).catch((e) =>
          this.#log(`up: cannot record manifest serial ${signed.serial}: ${(e as Error).message}`)
        );
      }
      this.#log(`up: reloaded (${reason})${signed ? `: manifest serial ${signed.serial}` : ""}`);
      return true;
    };
    const p = (this.#reloading ?? Promise.resolve(true)).then(run, run);
    this.#reloading = p;
    return p;
  }

  async #apply(m: Manifest): Promise<void> {
    const old = this.#spec;
    const next = m.nodes.get(this.#opts.node)!;
    this.#m = m;
    this.#spec = next;
    const moved = old.address !== next.address || old.via !== next.via;
    // Exports that went away or changed: drop their sessions and trees.
    const gone = new Set<string>();
    for (const [name, live] of this.#exports) {
      const now = next.exports.get(name);
      if (!now || exportKey(now) !== live.key) gone.add(name);
    }
    for (const s of this.#sessions) {
      let drop = moved;
      for (const name of s.exports) {
        if (gone.has(name)) drop = true;
        const now = next.exports.get(name);
        const groups = [...s.certGroups, ...groupsOf(m, s.user)];
        if (now && !accessAllows(now.access, s.user, groups)) drop = true;
      }
      if (drop) {
        this.#log(`up: ending ${s.user}'s session (${[...s.exports].join(", ")}): access changed`);
        s.conn.close();
      }
    }
    for (const name of gone) {
      const live = this.#exports.get(name)!;
      this.#exports.delete(name);
      await live.dispose().catch(() => {});
    }
    for (const [name, e] of next.exports) {
      const live = this.#exports.get(name);
      if (live) live.spec = e; // same export, maybe a new access list
      else await this.#addExport(e);
    }
    if (moved) {
      await this.#stopListening();
      await this.#listen();
    }
  }

  /** Stop listening, end every session and release every export. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#reloading?.catch(() => {});
    for (const s of this.#sessions) s.conn.close();
    await this.#stopListening();
    for (const live of this.#exports.values()) await live.dispose().catch(() => {});
    this.#exports.clear();
    this.#creds?.close();
  }
}

function phoneBackend(name: string, stateDir: string): PhoneBackend {
  switch (name) {
    case "modemmanager":
      return new ModemManagerBackend({});
    case "termux":
      return new TermuxBackend();
    default:
      return new SimBackend({ stateDir });
  }
}
