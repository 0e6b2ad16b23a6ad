/**
 * The signer's read-only Styx tree of the cluster's state:
 *
 * ```
 * manifest.toml       the published manifest (absent until one is)
 * manifest.toml.sig   its signature
 * ca.pem              the CA certificate
 * crl.pem             the CA's current CRL
 * serial              "manifest N crl HASH", see state.ts
 * ```
 *
 * Each open of a file reads one snapshot. `serial` is a long poll, as
 * /phone/events is a stream: a read at offset 0 returns the current line at
 * once; a read at the offset where the previous line ended waits until the
 * state differs from what that open last returned, then returns the new
 * line. So `cat serial` prints a line per change, and a watcher never
 * misses one that happened between two reads. A flushed read returns
 * "interrupted".
 *
 * @module
 */

import { Ename, StyxError } from "../styx/types.ts";
import { dir, type Entry, file, sliceAt, SynthTree } from "../fs/synthetic.ts";
import type { Tree } from "../fs/tree.ts";
import { type ClusterSnapshot, type ClusterState, MANIFEST_NAME } from "./state.ts";

const enc = new TextEncoder();

function snapshotFile(name: string, get: (s: ClusterSnapshot) => Uint8Array, st: ClusterState) {
  return file(name, () => {
    const data = get(st.current);
    return { read: (off: bigint, count: number) => sliceAt(data, off, count) };
  }, { length: () => BigInt(get(st.current).length) });
}

function serialFile(st: ClusterState): Entry {
  return file("serial", () => {
    let given = "";
    let base = 0n;
    return {
      async read(off: bigint, count: number, ctx) {
        if (off === 0n || given === "") {
          given = st.current.line;
          base = 0n;
        } else if (off < base || off >= base + BigInt(enc.encode(given).length)) {
          // At the end of the line given: wait for a state it has not seen.
          while (st.current.line === given) {
            try {
              await st.changed(ctx.signal);
            } catch {
              throw new StyxError(Ename.interrupted);
            }
          }
          given = st.current.line;
          base = off;
        }
        return sliceAt(enc.encode(given), off - base, count);
      },
    };
  });
}

/**
 * The tree the signer serves to authenticated nodes and users.
 *
 * @example
 * ```ts ignore
 * const state = await ClusterState.open("/var/lib/ferry/ca");
 * serve(conn, clusterTree(state));
 * ```
 */
export function clusterTree(st: ClusterState): Tree {
  return new SynthTree(
    dir("", () => {
      const s = st.current;
      const entries: Entry[] = [
        snapshotFile("ca.pem", (x) => enc.encode(x.ca), st),
        snapshotFile("crl.pem", (x) => enc.encode(x.crl), st),
        serialFile(st),
      ];
      if (s.manifest !== undefined) {
        entries.push(
          snapshotFile(MANIFEST_NAME, (x) => x.manifest ?? new Uint8Array(0), st),
          snapshotFile(`${MANIFEST_NAME}.sig`, (x) => enc.encode(x.sig ?? ""), st),
        );
      }
      return entries;
    }),
    { uid: "signer" },
  );
}
