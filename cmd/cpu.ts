/**
 * `ferry cpu -u USER FILE NODE [-c COMMAND]`: run COMMAND (default: a login
 * shell on a pseudo-terminal) on NODE, as Plan 9's cpu(1) does, with the
 * caller's composed namespace visible there at /n/client. One mutually
 * authenticated link to NODE, dialled by name through the manifest (and
 * its `via`), carries everything; see lib/cpu/.
 *
 * @module
 */

import { fail, parse, UsageError } from "../lib/cli.ts";
import type { CpuControl } from "../lib/cpu/client.ts";

const spec = {
  usage: "ferry cpu -u USER [--certs DIR] [-r ROOT] FILE NODE [-c COMMAND | -- COMMAND [ARG...]]",
  about: "Run COMMAND on NODE, as the host account NODE's manifest gives USER, in a\n" +
    "private mount namespace where USER's namespace, composed here from the manifest\n" +
    "FILE, is mounted at /n/client. NODE must have an export of kind 'cpu' whose access\n" +
    "list admits USER. -c runs COMMAND through the account's shell; after -- the words\n" +
    "are run as they are; with neither, a login shell on a pseudo-terminal. Standard\n" +
    "input, output and error, ^C, the window size and the exit status travel over the\n" +
    "one TLS link to NODE. The manifest must carry the CA's signature (FILE.sig) unless\n" +
    "--insecure-manifest is given.",
  options: {
    u: { type: "string" as const, short: "u" },
    certs: { type: "string" as const },
    r: { type: "string" as const, short: "r" },
    c: { type: "string" as const, short: "c" },
    t: { type: "boolean" as const, short: "t" },
    T: { type: "boolean" as const, short: "T" },
    "insecure-manifest": { type: "boolean" as const },
    // The node's helper for one command (started by the node, not by people).
    session: { type: "string" as const },
  },
  optionsHelp: "  -u USER              the user to run as\n" +
    "  --certs DIR          USER's credentials (default $FERRY_CERTS, else ~/.ferry/certs)\n" +
    "  -r ROOT              root directory of USER's namespace on this host\n" +
    "  -c COMMAND           run COMMAND through the account's shell\n" +
    "  -t                   use a pseudo-terminal even with -c or --\n" +
    "  -T                   no pseudo-terminal, even for a login shell\n" +
    "  --insecure-manifest  accept an unsigned or altered manifest\n" +
    "  -- COMMAND [ARG...]  run COMMAND with its arguments as they are",
};

/** Run `ferry cpu`. */
export async function run(args: string[]): Promise<number> {
  let close: (() => Promise<void>)[] = [];
  try {
    const dashes = args.indexOf("--");
    const words = dashes < 0 ? undefined : args.slice(dashes + 1);
    const p = parse(spec, dashes < 0 ? args : args.slice(0, dashes));
    if (p.help) return 0;
    const v = p.values;
    if (typeof v.session === "string") {
      // The node tells its helper what to run over SOCKET.
      const { runSession } = await import("../lib/cpu/session.ts");
      return await runSession({ socket: v.session });
    }
    if (p.positionals.length !== 2) {
      throw new UsageError(`expected a manifest FILE and a NODE\nusage: ${spec.usage}`);
    }
    if (typeof v.u !== "string") throw new UsageError(`-u USER is required\nusage: ${spec.usage}`);
    if (typeof v.c === "string" && words !== undefined) {
      throw new UsageError("give -c COMMAND or -- COMMAND, not both");
    }
    const [file, nodeName] = p.positionals as [string, string];
    const user = v.u;
    // Loaded here, so that the node's helper (--session) loads none of it;
    // the signature code (the slowest to load) only once the command is
    // asked for.
    const [{ defaultCertsDir, loadCredentials }, { loadBytes }, { checkManifest }, apply, {
      groupsOf,
      ManifestError,
    }] = await Promise.all([
      import("../lib/auth/link.ts"),
      import("../lib/manifest/load.ts"),
      import("../lib/manifest/check.ts"),
      import("../lib/manifest/apply.ts"),
      import("../lib/manifest/schema.ts"),
    ]);
    const certDir = typeof v.certs === "string" ? v.certs : defaultCertsDir();
    const creds = await loadCredentials(certDir, user);
    const insecure = v["insecure-manifest"] === true;
    // As sign.ts's refuseUnsigned, without loading the signature code.
    const refuseUnsigned = (f: string): string => {
      throw new Error(
        `'${f}' is not covered by the manifest's signature: write the namespace into the manifest, or use --insecure-manifest`,
      );
    };
    const load = (bytes: Uint8Array, signed: boolean) => {
      const m = loadBytes(bytes, file, signed ? { readFile: refuseUnsigned } : {});
      const problems = checkManifest(m);
      if (problems.length) throw new ManifestError(problems);
      const node = m.nodes.get(nodeName);
      if (!node) {
        throw new Error(
          `No node '${nodeName}' in '${file}' (nodes: ${[...m.nodes.keys()].join(", ") || "none"})`,
        );
      }
      const cpu = [...node.exports.values()].find((e) => e.kind === "cpu");
      if (!cpu) {
        throw new Error(
          `Node '${nodeName}' has no export of kind 'cpu': add one to its exports in '${file}'`,
        );
      }
      return { m, node, cpu };
    };
    // The node is dialled, and the command asked for, before the manifest's
    // signature is checked: TLS checks that the node's certificate names
    // it whatever address the file gives, the node's own manifest decides
    // who runs what, and the command cannot start before the caller's
    // namespace is served, which happens only once the manifest is verified.
    const first = await Deno.readFile(file);
    const early = load(first, !insecure);
    const dialer = new apply.NodeDialer(early.m, creds, user);
    close.push(() => dialer.close());
    const linking = dialer.link(early.node);
    linking.catch(() => {});
    // The signature is checked, and the namespace composed, while the link
    // and the session are set up; it is served only once both are done.
    const checking = (async () => {
      if (insecure) {
        console.error(
          "cpu: warning: --insecure-manifest: the manifest's signature is not checked",
        );
        return early.m;
      }
      const sign = await import("../lib/manifest/sign.ts");
      const signed = await sign.readSigned(file, creds.ca);
      await sign.checkSerial(signed, file, certDir);
      if (!sameBytes(signed.bytes, first)) {
        throw new Error(`The manifest '${file}' changed while it was read: run again`);
      }
      // The bytes verified are those parsed and checked above.
      return early.m;
    })();
    checking.catch(() => {});
    const composeVerified = async () => {
      const m = await checking;
      const composed = await apply.logon(m, user, {
        creds,
        rootDir: typeof v.r === "string" ? v.r : undefined,
        onEntry: (r) => {
          if (!r.ok) {
            console.error(
              `cpu: ${r.entry.where.file}:${r.entry.where.line}: ${r.line}: ${r.error}`,
            );
          }
        },
      });
      close = [() => composed.close(), ...close];
      return composed.ns;
    };
    const verified = composeVerified();
    verified.catch(() => {});
    const m = early.m;
    const cpu = early.cpu;
    const command = typeof v.c === "string" ? v.c : words ?? null;
    const tty = Deno.stdin.isTerminal();
    const pty = v.T !== true && tty && (v.t === true || command === null);
    const { runCpu } = await import("../lib/cpu/client.ts");
    const link = await linking;
    let control: CpuControl | undefined;
    const onInt = () => void control?.interrupt().catch(() => {});
    const onWinch = () => {
      const s = Deno.consoleSize();
      void control?.winch(s.rows, s.columns).catch(() => {});
    };
    Deno.addSignalListener("SIGINT", onInt);
    if (pty) {
      Deno.addSignalListener("SIGWINCH", onWinch);
      Deno.stdin.setRaw(true);
    }
    // Straight to the file descriptors: no stream machinery per chunk.
    const writeAll = (f: typeof Deno.stdout) => async (b: Uint8Array) => {
      for (let at = 0; at < b.length;) at += await f.write(b.subarray(at));
    };
    try {
      const size = pty ? Deno.consoleSize() : undefined;
      const code = await runCpu({
        link: link.tree,
        export: cpu.name,
        caller: { user, groups: groupsOf(m, user), authenticated: true },
        namespace: () => verified,
        command,
        pty: size ? { rows: size.rows, cols: size.columns, term: Deno.env.get("TERM") } : undefined,
        io: {
          stdin: Deno.stdin.readable,
          stdout: writeAll(Deno.stdout),
          stderr: writeAll(Deno.stderr),
        },
        onStart: (c) => (control = c),
      });
      // The command's status and output are in: the process ends next, and
      // the link and the namespace's sessions with it, so closing them one
      // by one would only delay the exit (and load timer code to do it).
      close = [];
      return code;
    } finally {
      Deno.removeSignalListener("SIGINT", onInt);
      if (pty) {
        Deno.removeSignalListener("SIGWINCH", onWinch);
        Deno.stdin.setRaw(false);
      }
    }
  } catch (e) {
    return fail("ferry cpu", e);
  } finally {
    await Promise.allSettled(close.map((c) => c()));
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
