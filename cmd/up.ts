/**
 * `ferry up FILE --node NAME`: bring up one node of a manifest: enrol with
 * a token if it has no credentials, serve its exports with their access
 * lists, follow renewed credentials, and apply a changed manifest live (on
 * a file change or SIGHUP). `ferry down` stops it.
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
import { standardDevices } from "./devices.ts";

const spec = {
  usage: "ferry up FILE --node NAME [--certs DIR] [--token TOKEN] [--insecure-manifest]",
  about: "Run node NAME of the manifest FILE until stopped (ferry down, SIGTERM or ^C).\n" +
    "Without credentials in DIR it first enrols with TOKEN at the manifest's CA signer,\n" +
    "and while it runs 'ferry renew --daemon' renews its certificate there as it ages.\n" +
    "It refuses a manifest that is unsigned or altered (FILE.sig, see 'ferry sign')\n" +
    "unless --insecure-manifest is given. Editing FILE (and FILE.sig) or sending SIGHUP\n" +
    "applies the new manifest without dropping sessions the change does not touch.",
  options: {
    node: { type: "string" as const },
    certs: { type: "string" as const },
    token: { type: "string" as const },
    "insecure-manifest": { type: "boolean" as const },
    run: { type: "string" as const },
    poll: { type: "string" as const },
    "no-renew": { type: "boolean" as const },
  },
  optionsHelp: "  --node NAME          the node to run\n" +
    "  --certs DIR          its credentials (default $FERRY_CERTS, else ~/.ferry/certs)\n" +
    "  --token TOKEN        enrolment token (also $FERRY_TOKEN), used when DIR has none\n" +
    "  --insecure-manifest  accept an unsigned or altered manifest\n" +
    "  --run DIR            where NAME.pid goes for 'ferry down' (default: the certs DIR)\n" +
    "  --poll MS            how often to look for a changed manifest (default 1000; 0: never)\n" +
    "  --no-renew           do not run 'ferry renew --daemon' with the manifest's signer",
};

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
  let pidFile = "";
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    const v = p.values;
    if (p.positionals.length !== 1) {
      throw new UsageError(`expected one manifest FILE\nusage: ${spec.usage}`);
    }
    if (typeof v.node !== "string") {
      throw new UsageError(`--node NAME is required\nusage: ${spec.usage}`);
    }
    const file = p.positionals[0]!;
    const name = v.node;
    const certDir = typeof v.certs === "string" ? v.certs : defaultCertsDir();
    const pollMs = typeof v.poll === "string" ? Number(v.poll) : 1000;
    if (!Number.isInteger(pollMs) || pollMs < 0) {
      throw new UsageError(`bad --poll '${v.poll}': want milliseconds, e.g. 1000`);
    }
    await mustName(file, name);
    if (!(await credentialNames(certDir)).includes(name)) {
      const token = typeof v.token === "string" ? v.token : Deno.env.get("FERRY_TOKEN");
      if (!token) {
        throw new Error(
          `no credentials for '${name}' in '${certDir}': give --token TOKEN (from 'ferry ca token ${name}') to enrol`,
        );
      }
      await enrol(file, certDir, name, token);
    }
    const insecure = v["insecure-manifest"] === true;
    if (insecure) {
      console.error("up: warning: --insecure-manifest: the manifest's signature is not checked");
    }
    node = await FerryNode.start({
      file,
      node: name,
      certDir,
      insecureManifest: insecure,
      pollMs,
      devices: standardDevices(),
    });
    const signer = node.manifest.ca.signer;
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
