/**
 * `ferry signer ADDR`: serve enrolment and renewal from the CA host, and
 * the cluster's state (the published manifest, its signature, the CA
 * certificate, the CRL and a long-polled serial) to enrolled nodes and
 * users over mutual TLS on the same port.
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import { CertificateAuthority } from "../lib/auth/ca.ts";
import { startSigner } from "../lib/auth/enroll.ts";
import { defaultCertsDir } from "../lib/auth/link.ts";
import { parseDialString } from "../lib/net/dial.ts";
import { ClusterState } from "../lib/cluster/state.ts";
import { clusterTree } from "../lib/cluster/tree.ts";

const USAGE = "ferry signer [--dir DIR] [--san NAME]... [--tree ADDR2] ADDR";

/** Run `ferry signer`. */
export async function run(args: string[]): Promise<number> {
  let ca: CertificateAuthority | undefined;
  let state: ClusterState | undefined;
  try {
    const p = parse({
      usage: USAGE,
      about:
        `Serve enrolment ('ferry enroll') and renewal ('ferry renew') for the CA in DIR on ADDR (e.g. tcp!*!6670). The signer presents a one-off certificate from the CA; devices pin the CA by the fingerprint in their token.\nOn the same port, enrolled nodes and users read the cluster's state as files: manifest.toml and manifest.toml.sig (what 'ferry sign' last published in DIR), ca.pem, crl.pem (DIR/crl.pem, which 'ferry ca revoke' rewrites) and serial, whose read waits for the next change ('ferry up --join', 'ferry logon --join'). With --tree ADDR2 the same tree is also served as an ordinary Ferry TLS listener, for 'mount --peer signer ADDR2 /n/cluster' or 'ferry 9p --peer signer'. Runs until interrupted.`,
      optionsHelp: `  --dir DIR    the CA's directory (default $FERRY_CERTS, else ~/.ferry/certs)
  --san NAME   a DNS name or address devices use to reach the signer (repeatable)
  --tree ADDR2 also serve the cluster's tree on ADDR2 to any Ferry client (mutual TLS)`,
      options: {
        dir: { type: "string" },
        san: { type: "string", multiple: true },
        tree: { type: "string" },
      },
    }, args);
    if (p.help) return 0;
    if (p.positionals.length !== 1) throw new UsageError(`expected ADDR\nusage: ${USAGE}`);
    const a = parseDialString(p.positionals[0]!, { net: "tcp", service: "6670" });
    const dir = typeof p.values.dir === "string" ? p.values.dir : defaultCertsDir();
    ca = await CertificateAuthority.open(dir);
    const sans = Array.isArray(p.values.san) ? p.values.san.map(String) : [];
    state = await ClusterState.open(dir);
    const st = state;
    const t = typeof p.values.tree === "string"
      ? parseDialString(p.values.tree, { net: "tcp", service: "styx" })
      : undefined;
    const s = await startSigner(ca, a.host === "*" ? "0.0.0.0" : a.host, a.port, {
      sans,
      tree: clusterTree(st),
      changed: (signal) => st.changed(signal),
      treeListen: t && { host: t.host === "*" ? "0.0.0.0" : t.host, port: t.port },
    });
    console.log(`signer for CA '${ca.cert.subjectName.getField("CN")[0]}' on ${s.addr}`);
    if (s.treeAddr) console.log(`cluster tree also on ${s.treeAddr} (peer name 'signer')`);
    console.log(
      st.current.serial > 0
        ? `serving manifest serial ${st.current.serial}`
        : `no manifest published yet: 'ferry sign FILE --dir ${dir}' publishes one`,
    );
    console.log(`CA fingerprint sha256:${await ca.fingerprint()}`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      try {
        Deno.addSignalListener("SIGINT", stop);
        Deno.addSignalListener("SIGTERM", stop);
      } catch { /* signals unsupported here */ }
    });
    s.close();
    return 0;
  } catch (e) {
    return fail("ferry signer", e);
  } finally {
    state?.close();
    ca?.close();
  }
}
