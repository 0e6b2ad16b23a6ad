/**
 * Test fixture: a CA and per-node, per-user credentials directories in a
 * temp dir, free loopback ports, and a manifest written from a template.
 *
 * @module
 */

import { CertificateAuthority, writeCredentials } from "../../lib/auth/ca.ts";
import { signFile } from "../../lib/manifest/sign.ts";

/** A throwaway cluster directory. */
export interface Cluster {
  dir: string;
  caDir: string;
  ca: CertificateAuthority;
  /** Credentials directory of `name` (node or user). */
  certs(name: string): string;
  /** Issue credentials for `name` into its own directory. */
  issue(name: string, kind: "node" | "user", groups?: string[]): Promise<string>;
  /** Write the manifest (and sign it unless `unsigned`); returns its path. */
  write(text: string, opts?: { unsigned?: boolean }): Promise<string>;
  cleanup(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (closed again, so a race is possible but unlikely). */
export function freePort(): number {
  // The kernel may hand the same free port out twice in a row; a test that
  // asks for two ports must get two.
  for (;;) {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/** Ports {@link freePort} has given this process. */
const handedOut = new Set<number>();

/** Make a cluster directory with a CA. */
export async function makeCluster(): Promise<Cluster> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-cluster-" });
  const caDir = `${dir}/ca`;
  const ca = await CertificateAuthority.init(caDir, "cluster-ca");
  const file = `${dir}/cluster.toml`;
  return {
    dir,
    caDir,
    ca,
    certs: (name) => `${dir}/certs-${name}`,
    async issue(name, kind, groups = []) {
      const r = await ca.issue(name, { kind, groups, sans: kind === "node" ? ["127.0.0.1"] : [] });
      const d = `${dir}/certs-${name}`;
      await writeCredentials(d, name, r.certPem, r.keyPem, { force: true });
      await Deno.writeTextFile(`${d}/ca.pem`, ca.certPem);
      return d;
    },
    async write(text, opts = {}) {
      await Deno.writeTextFile(file, text);
      if (!opts.unsigned) await signFile(file, caDir);
      return file;
    },
    async cleanup() {
      ca.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
