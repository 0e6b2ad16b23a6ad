/**
 * `ferry up FILE --node NAME`: bring up one node of a manifest: enrol with
 * a token if it has no credentials, serve its exports with their access
 * lists, follow renewed credentials, and apply a changed manifest live (on
 * a file change or SIGHUP). `ferry down` stops it.
 *
 * `ferry up --join ADDR --node NAME --token T` needs no local manifest: it
 * enrols at the signer ADDR, fetches and checks the signed manifest and the
 * CRL from the signer's tree, starts serving, and follows the signer's
 * serial to apply each published change (see lib/cluster/join.ts). It
 * starts from its cached manifest when the signer cannot be reached.
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import { credentialNames, defaultCertsDir } from "../lib/auth/link.ts";
import { FerryNode } from "../lib/manifest/node.ts";
import { load } from "../lib/manifest/load.ts";
import { ManifestError } from "../lib/manifest/schema.ts";
import { ferryArgv } from "../lib/self.ts";
import { parseDialString } from "../lib/net/dial.ts";
import { ClusterWatcher, joinedManifest, type WatcherOptions } from "../lib/cluster/join.ts";
import { watchCredentials } from "../lib/auth/link.ts";
import { appliedSerial } from "../lib/manifest/sign.ts";
import { fingerprint, parseCert } from "../lib/auth/certs.ts";
import { standardDevices } from "./devices.ts";

const spec = {
  usage: "ferry up FILE --node NAME [--certs DIR] [--token TOKEN] [--insecure-manifest]\n" +
    "       ferry up --join ADDR --node NAME [--certs DIR] [--token TOKEN]",
  about: "Run node NAME of the manifest FILE until stopped (ferry down, SIGTERM or ^C).\n" +
    "Without credentials in DIR it first enrols with TOKEN at the manifest's CA signer,\n" +
    "and while it runs 'ferry renew --daemon' renews its certificate there as it ages.\n" +
    "It refuses a manifest that is unsigned or altered (FILE.sig, see 'ferry sign')\n" +
    "unless --insecure-manifest is given. Editing FILE (and FILE.sig) or sending SIGHUP\n" +
    "applies the new manifest without dropping sessions the change does not touch.\n" +
    "With --join ADDR instead of FILE, the node enrols at the signer ADDR with TOKEN,\n" +
    "takes the signed manifest and the CRL from it, and applies every change the CA\n" +
    "publishes ('ferry sign', 'ferry ca revoke') as it happens. It keeps the last good\n" +
    "manifest in DIR/cluster, so it restarts while the signer is down and catches up\n" +
    "when the signer is back.",
  options: {
    join: { type: "string" as const },
    node: { type: "string" as const },
    certs: { type: "string" as const },
    token: { type: "string" as const },
    "insecure-manifest": { type: "boolean" as const },
    run: { type: "string" as const },
    poll: { type: "string" as const },
    "no-renew": { type: "boolean" as const },
  },
  optionsHelp:
    "  --join ADDR          join the cluster of the signer at ADDR (e.g. tcp!ca!6670)\n" +
    "  --node NAME          the node to run\n" +
    "  --certs DIR          its credentials (default $FERRY_CERTS, else ~/.ferry/certs)\n" +
    "  --token TOKEN        enrolment token (also $FERRY_TOKEN), used when DIR has none\n" +
    "  --insecure-manifest  accept an unsigned or altered manifest\n" +
    "  --run DIR            where NAME.pid goes for 'ferry down' (default: the certs DIR)\n" +
    "  --poll MS            how often to look for a changed manifest (default 1000; 0: never)\n" +
    "  --no-renew           do not run 'ferry renew --daemon' with the manifest's signer",
};

/** Enrol `node` at the signer `addr` (for --join: no manifest to take names from). */
async function enrolAt(addr: string, certDir: string, node: string, token: string): Promise<void> {
  console.error(`up: no credentials for '${node}' in '${certDir}': enrolling at ${addr}`);
  const [exe, ...pre] = ferryArgv();
  const o = await new Deno.Command(exe!, {
    args: [...pre, "enroll", addr, token, "--dir", certDir],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (o.code !== 0) throw new Error(`enrolment of '${node}' at ${addr} failed`);
}

async function enrol(file: string, certDir: string, node: string, token: string): Promise<void> {
  // Only the signer's address is taken from the unverified manifest: the
  // token pins the CA, so a wrong address cannot hand us another CA.
  const m = await load(file);
  if (!m.ca.signer) throw new Error(`'${file}' names no [ca] signer to enrol with`);
  console.error(`up: no credentials for '${node}' in '${certDir}': enrolling at ${m.ca.signer}`);
  // Ask for the host of the node's address, so it can be dialled by it;
  // the token decides whether it is granted ('ferry ca token --manifest').
  const address = m.nodes.get(node)?.address;
  const host = address === undefined
    ? undefined
    : parseDialString(address, { net: "tcp", service: "styx" }).host.replace(/^\[(.*)\]$/, "$1");
  const san = host === undefined || ["*", "0.0.0.0", "::", ""].includes(host)
    ? []
    : ["--san", host];
  const [exe, ...pre] = ferryArgv();
  const o = await new Deno.Command(exe!, {
    args: [...pre, "enroll", m.ca.signer, token, "--dir", certDir, ...san],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (o.code !== 0) throw new Error(`enrolment of '${node}' at ${m.ca.signer} failed`);
}

/**
 * Refuse a node the manifest does not have, listing those it has. Only the
 * names are taken from the manifest here (its signature is checked when the
 * node starts); a manifest that cannot be read is reported then too.
 */
async function mustName(file: string, node: string): Promise<void> {
  let names: string[];
  try {
    names = [...(await load(file)).nodes.keys()];
  } catch (e) {
    const partial = e instanceof ManifestError ? e.partial : undefined;
    if (partial === undefined) return;
    names = [...partial.nodes.keys()];
  }
  if (!names.includes(node)) {
    throw new Error(
      `node '${node}' is not in the manifest '${file}' (its nodes: ${
        names.length ? names.join(", ") : "none"
      }); give one of them to --node`,
    );
  }
}

/** Keep the node's certificate fresh: `ferry renew --daemon` as a child process. */
function startRenewer(signer: string, certDir: string, node: string): Deno.ChildProcess {
  const [exe, ...pre] = ferryArgv();
  return new Deno.Command(exe!, {
    args: [...pre, "renew", "--daemon", "--dir", certDir, "--name", node, signer],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
}

/** Run `ferry up`. */
export async function run(args: string[]): Promise<number> {
  let node: FerryNode | undefined;
  let renewer: Deno.ChildProcess | undefined;
  let watcher: ClusterWatcher | undefined;
  let credsHandle: Awaited<ReturnType<typeof watchCredentials>> | undefined;
  let pidFile = "";
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    const v = p.values;
    const join = typeof v.join === "string" ? v.join : undefined;
    if (join !== undefined && p.positionals.length !== 0) {
      throw new UsageError(
        `--join takes the manifest from the signer: drop FILE '${
          p.positionals[0]
        }'\nusage: ${spec.usage}`,
      );
    }
    if (join === undefined && p.positionals.length !== 1) {
      throw new UsageError(`expected one manifest FILE or --join ADDR\nusage: ${spec.usage}`);
    }
    if (join !== undefined && v["insecure-manifest"] === true) {
      throw new UsageError("--join takes only signed manifests: drop --insecure-manifest");
    }
    if (typeof v.node !== "string") {
      throw new UsageError(`--node NAME is required\nusage: ${spec.usage}`);
    }
    const name = v.node;
    const certDir = typeof v.certs === "string" ? v.certs : defaultCertsDir();
    const pollMs = typeof v.poll === "string" ? Number(v.poll) : 1000;
    if (!Number.isInteger(pollMs) || pollMs < 0) {
      throw new UsageError(`bad --poll '${v.poll}': want milliseconds, e.g. 1000`);
    }
    if (join === undefined) await mustName(p.positionals[0]!, name);
    if (!(await credentialNames(certDir)).includes(name)) {
      const token = typeof v.token === "string" ? v.token : Deno.env.get("FERRY_TOKEN");
      if (!token) {
        throw new Error(
          `no credentials for '${name}' in '${certDir}': give --token TOKEN (from 'ferry ca token ${name}') to enrol`,
        );
      }
      if (join !== undefined) await enrolAt(join, certDir, name, token);
      else await enrol(p.positionals[0]!, certDir, name, token);
    }
    const file = join === undefined
      ? p.positionals[0]!
      : await joinedManifest(join, certDir, name, {
        node: name,
        log: (l) => console.error(`up: ${l}`),
      });
    const insecure = v["insecure-manifest"] === true;
    if (insecure) {
      console.error("up: warning: --insecure-manifest: the manifest's signature is not checked");
    }
    node = await FerryNode.start({
      file,
      node: name,
      certDir,
      insecureManifest: insecure,
      pollMs: join === undefined ? pollMs : 0,
      devices: standardDevices(),
    });
    if (join !== undefined) {
      const n = node;
      const handle = credsHandle = await watchCredentials(certDir, name);
      const ca = `sha256:${await fingerprint(parseCert(handle.current().ca))}`;
      const opts: WatcherOptions = {
        addr: join,
        certDir,
        name,
        node: name,
        applied: await appliedSerial(certDir, ca),
        onManifest: (_f, serial) => n.reload(`manifest serial ${serial} from the signer`),
        // Loaded at once: listeners end revoked sessions as soon as they see it.
        onCrl: () => handle.reload(),
        log: (l) => console.error(`up: ${l}`),
      };
      watcher = new ClusterWatcher(opts);
    }
    const signer = join ?? node.manifest.ca.signer;
    if (signer && v["no-renew"] !== true) renewer = startRenewer(signer, certDir, name);
    const runDir = typeof v.run === "string" ? v.run : certDir;
    pidFile = `${runDir}/${name}.pid`;
    await Deno.mkdir(runDir, { recursive: true });
    await Deno.writeTextFile(pidFile, `${Deno.pid}\n`);
    console.log(`node ${name} listening on ${node.address}`);
    const done = Promise.withResolvers<void>();
    const stop = () => done.resolve();
    const hup = () => void node?.reload("SIGHUP");
    Deno.addSignalListener("SIGTERM", stop);
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGHUP", hup);
    await done.promise;
    Deno.removeSignalListener("SIGTERM", stop);
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGHUP", hup);
    console.error(`up: node '${name}' stopping`);
    return 0;
  } catch (e) {
    return fail("ferry up", e);
  } finally {
    await watcher?.close();
    credsHandle?.close();
    if (renewer) {
      try {
        renewer.kill("SIGTERM");
      } catch { /* already gone */ }
      await renewer.status;
    }
    await node?.close();
    if (pidFile) await Deno.remove(pidFile).catch(() => {});
  }
}
