/**
 * `ferry logon -u USER FILE`: compose USER's namespace from the manifest on
 * this machine, with USER's credentials (Inferno's wm/logon applying
 * namespace(6), 9front's newns), then run the shell in it, a command with
 * -c, or serve the composed view with --export ADDR. With `-- COMMAND` (or
 * --ssh) run a host command as USER's host account in a private mount
 * namespace that shows the namespace's mounts at their own paths (see
 * lib/logon/session.ts).
 *
 * @module
 */

import { fail, parse, UsageError, warnInsecure } from "../lib/cli.ts";
import {
  type Credentials,
  defaultCertsDir,
  loadCredentials,
  watchCredentials,
} from "../lib/auth/link.ts";
import { loadBytes } from "../lib/manifest/load.ts";
import { checkManifest } from "../lib/manifest/check.ts";
import {
  checkSerial,
  readSigned,
  recordSerial,
  refuseUnsigned,
  type SignedManifest,
} from "../lib/manifest/sign.ts";
import { dialAhead, logon, NodeDialer } from "../lib/manifest/apply.ts";
import { standardDevices } from "./devices.ts";
import { ManifestError } from "../lib/manifest/schema.ts";
import { announceStyx } from "../lib/net/connect.ts";
import { listenHost, parseDialString } from "../lib/net/dial.ts";
import type { Listener } from "../lib/transport/conn.ts";
import type { Manifest } from "../lib/manifest/schema.ts";
import { type Account, lookupAccount, lookupUid } from "../lib/logon/account.ts";
import { commandFor, prepareView, runInView } from "../lib/logon/session.ts";

const spec = {
  usage:
    "ferry logon -u USER [--certs DIR] [-r ROOT] [-c CMD | --export ADDR | --fuse HOSTDIR] FILE|--join ADDR\n" +
    "       ferry logon [-u USER] [--certs DIR] FILE|--join ADDR [--ssh] [-- COMMAND [ARG...]]",
  about: "Build USER's namespace from the manifest FILE: every entry of the user's\n" +
    "namespace is applied in order, mounts are dialed at once with USER's credentials\n" +
    "(mutual TLS), and an entry that fails is reported without giving up on the rest\n" +
    "unless its mount point is in the user's 'required' list. Then run the shell in\n" +
    "the namespace, or COMMANDS with -c, or serve the whole view with --export ADDR\n" +
    "(mutual TLS with the node credentials in --export-certs, allowing only USER; or\n" +
    "plain with -A), or mount it on a host directory through FUSE with --fuse. The manifest must carry the CA's signature (FILE.sig) unless\n" +
    "--insecure-manifest is given. With --join ADDR the manifest comes from the signer at ADDR.\n\n" +
    "With '-- COMMAND' (default: the login shell), run COMMAND as USER's host account\n" +
    "('account' in the manifest, default USER) in a private mount namespace where every\n" +
    "mount point of the namespace is mounted at its own path (FUSE); nobody else sees\n" +
    "them, and they go when COMMAND exits. Needs root. --ssh takes COMMAND from\n" +
    "$SSH_ORIGINAL_COMMAND (for sshd's ForceCommand). Run through sudo, USER defaults to\n" +
    "the Ferry user whose account is the invoking one, and no other may be named.",
  options: {
    join: { type: "string" as const },
    u: { type: "string" as const, short: "u" },
    certs: { type: "string" as const },
    r: { type: "string" as const, short: "r" },
    c: { type: "string" as const, short: "c" },
    export: { type: "string" as const },
    "export-certs": { type: "string" as const },
    fuse: { type: "string" as const },
    A: { type: "boolean" as const, short: "A" },
    "insecure-manifest": { type: "boolean" as const },
    q: { type: "boolean" as const, short: "q" },
    ssh: { type: "boolean" as const },
  },
  optionsHelp: "  -u USER              the user to log on as\n" +
    "  --join ADDR          take the signed manifest from the signer at ADDR\n" +
    "  --certs DIR          USER's credentials (default $FERRY_CERTS, else ~/.ferry/certs)\n" +
    "  -r ROOT              root directory of the namespace on this host\n" +
    "  -c COMMANDS          run COMMANDS in the namespace and exit\n" +
    "  --export ADDR        serve the composed namespace on ADDR until interrupted\n" +
    "  --export-certs DIR   node credentials for --export (default: --certs DIR)\n" +
    "  --fuse HOSTDIR       mount the composed namespace on HOSTDIR until interrupted\n" +
    "  -A                   with --export: no authentication, no encryption\n" +
    "  --insecure-manifest  accept an unsigned or altered manifest\n" +
    "  -q                   report only the entries that fail\n" +
    "  --ssh                run $SSH_ORIGINAL_COMMAND (else a login shell) as with --\n" +
    "  -- COMMAND [ARG...]  run COMMAND in a private mount namespace showing the mounts",
};

/** Run `ferry logon`. */
export async function run(args: string[]): Promise<number> {
  let composed: Awaited<ReturnType<typeof logon>> | undefined;
  let listener: Listener | undefined;
  let dialer: NodeDialer | undefined;
  try {
    const dashes = args.indexOf("--");
    const hostCommand = dashes < 0 ? undefined : args.slice(dashes + 1);
    const p = parse(spec, dashes < 0 ? args : args.slice(0, dashes));
    if (p.help) return 0;
    const v = p.values;
    const join = typeof v.join === "string" ? v.join : undefined;
    if (p.positionals.length !== (join === undefined ? 1 : 0)) {
      throw new UsageError(`expected one manifest FILE or --join ADDR\nusage: ${spec.usage}`);
    }
    const privateNs = hostCommand !== undefined || v.ssh === true;
    if ([v.c, v.export, v.fuse].filter((x) => typeof x === "string").length > 1) {
      throw new UsageError("give only one of -c, --export and --fuse");
    }
    if (privateNs && [v.c, v.export, v.fuse].some((x) => typeof x === "string")) {
      throw new UsageError("-- COMMAND and --ssh run a command: drop -c, --export and --fuse");
    }
    const invoker = privateNs ? await sudoInvoker() : undefined;
    if (invoker && (v["insecure-manifest"] === true || typeof v.r === "string")) {
      throw new UsageError(
        `run through sudo by '${invoker.name}': --insecure-manifest and -r are refused`,
      );
    }
    if (typeof v.u !== "string" && !invoker) {
      throw new UsageError(`-u USER is required\nusage: ${spec.usage}`);
    }
    if (privateNs && Deno.uid() !== 0) {
      throw new Error(
        "a private mount namespace needs root: run 'ferry logon … -- COMMAND' as root " +
          "(through sudo at an SSH logon, see the README); the command itself runs as the user's account",
      );
    }
    if (join !== undefined && typeof v.u !== "string") {
      throw new UsageError("--join needs -u USER: the signer is asked as that user");
    }
    const certDir = typeof v.certs === "string" ? v.certs : defaultCertsDir();
    if (invoker) await rootOwned(certDir, invoker);
    let creds = typeof v.u === "string" ? await loadCredentials(certDir, v.u) : undefined;
    const file = join === undefined
      ? p.positionals[0]!
      // Loaded only for --join: it brings the X.509 library, ~100 ms of start-up.
      : await (await import("../lib/cluster/join.ts")).joinedManifest(
        join,
        certDir,
        v.u as string,
        {
          log: (l) => console.error(`logon: ${l}`),
        },
      );
    let bytes: Uint8Array;
    let signed: SignedManifest | undefined;
    const insecure = v["insecure-manifest"] === true;
    // The user's nodes are dialled while the signature is checked, from the
    // manifest as read: TLS checks that each node holds its certificate
    // whatever address the file gives, and nothing is composed before the
    // manifest is verified (and found to be the one dialled from).
    const first = insecure ? undefined : await Deno.readFile(file);
    let early: Manifest | undefined;
    if (first) {
      const e = await dialEarly(first, file, certDir, typeof v.u === "string" ? v.u : undefined, {
        invoker,
        creds,
      });
      dialer = e?.dialer;
      early = e?.m;
    }
    if (insecure) {
      console.error("logon: warning: --insecure-manifest: the manifest's signature is not checked");
      bytes = await Deno.readFile(file);
    } else {
      // An older signed copy put back is refused, as 'ferry up' refuses it.
      signed = await readSigned(file, creds?.ca ?? await Deno.readTextFile(`${certDir}/ca.pem`));
      await checkSerial(signed, file, certDir);
      bytes = signed.bytes;
      if (!sameBytes(bytes, first!)) {
        // Changed since it was dialled from: those links are not this manifest's.
        await dialer?.close();
        dialer = undefined;
        early = undefined;
      }
    }
    // While the links are made (not before they start): what a private
    // view needs loaded first.
    if (privateNs) prepareView();
    // The bytes verified are those read first: their reading stands.
    const m = early ?? loadBytes(bytes, file, insecure ? {} : { readFile: refuseUnsigned });
    const problems = early ? [] : checkManifest(m);
    if (problems.length) throw new ManifestError(problems);
    const user = typeof v.u === "string" ? v.u : userOfAccount(m, invoker!);
    // The host account is looked up (a getent) while the namespace is
    // composed; through sudo first, so that an invoker who may not log on
    // as this user learns nothing of the user's namespace.
    const accounting = privateNs ? accountOf(m, user, invoker) : undefined;
    accounting?.catch(() => {});
    if (invoker) await accounting;
    creds ??= await loadCredentials(certDir, user);
    const quiet = v.q === true;
    const t0 = performance.now();
    composed = await logon(m, user, {
      creds,
      dialer: dialer?.user === user ? dialer : undefined,
      rootDir: typeof v.r === "string" ? v.r : undefined,
      devices: standardDevices(),
      onEntry: (r) => {
        const at = `${r.entry.where.file}:${r.entry.where.line}`;
        if (!r.ok) console.error(`logon: ${at}: ${r.line}: ${r.error}`);
        else if (!quiet) console.error(`logon: ${r.line}`);
      },
    });
    if (signed) {
      await recordSerial(signed, certDir).catch((e) =>
        console.error(`logon: cannot record manifest serial: ${(e as Error).message}`)
      );
    }
    const failed = composed.report.filter((r) => !r.ok).length;
    if (!quiet) {
      console.error(
        `logon: ${user}'s namespace: ${
          composed.report.length - failed
        } of ${composed.report.length} entries applied in ${Math.round(performance.now() - t0)} ms`,
      );
    }
    const ns = composed.ns;
    const account = await accounting;
    if (account) {
      const run = commandFor(account, hostCommand ?? [], Deno.env.get("SSH_ORIGINAL_COMMAND"));
      return await runInView(ns, {
        user,
        account,
        command: run,
        onMount: quiet ? undefined : (t) => console.error(`logon: mounted ${t}`),
        onSkip: (t, why) => console.error(`logon: '${t}' is not mounted on the host: ${why}`),
        // Nothing is left to do once the command has exited: the links
        // drop with the process, as the mounts do.
        exitWhenDone: true,
      });
    }
    if (typeof v.export === "string") {
      const addr = v.export;
      if (v.A === true) {
        warnInsecure("logon");
        listener = await announceStyx(addr, { insecure: true });
      } else {
        const dir = typeof v["export-certs"] === "string" ? v["export-certs"] : certDir;
        // Watched: a renewed certificate and a new CRL reach the running listener.
        const nodeCreds = await watchCredentials(dir, undefined, {
          onError: (e) => console.error(`logon: keeping the current credentials: ${e.message}`),
        });
        const a = parseDialString(addr, { net: "tcp", service: "styx" });
        // Loaded only here: node:tls is slow to load, and no other logon needs it.
        const { tlsListen } = await import("../lib/transport/tls.ts");
        listener = await tlsListen(listenHost(a), a.port, { creds: nodeCreds, allow: [user] });
      }
      console.log(`serving ${user}'s namespace on ${listener.addr}`);
      const l = listener;
      const stop = () => l.close();
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
      const { serve } = await import("../lib/styx/server.ts");
      const sessions: Promise<void>[] = [];
      for await (const conn of l) sessions.push(serve(conn, ns));
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      return 0;
    }
    if (typeof v.fuse === "string") {
      // The whole composed view, unions and remote mounts included, for every
      // program on this machine.
      const { mountTree } = await import("../lib/fuse/mount.ts");
      const m = await mountTree(ns, v.fuse, { caller: { user }, fsname: `ferry:${user}` });
      console.log(`mounted ${user}'s namespace on ${m.mountpoint}`);
      const stop = () => void m.unmount().catch(() => {});
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
      await m.done;
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
      return 0;
    }
    // The shell is loaded only when it runs: a logon running a host
    // command (or serving the view) does without it.
    const { runShell } = await import("./logon_shell.ts");
    return await runShell(ns, user, composed.cwd, typeof v.c === "string" ? v.c : undefined);
  } catch (e) {
    return fail("ferry logon", e);
  } finally {
    listener?.close();
    await composed?.close();
    await dialer?.close();
  }
}

/** Who ran this logon through sudo (not root), or undefined. */
async function sudoInvoker(): Promise<Account | undefined> {
  const uid = Deno.env.get("SUDO_UID");
  if (Deno.uid() !== 0 || uid === undefined || uid === "0" || !/^\d+$/.test(uid)) return undefined;
  const a = await lookupUid(Number(uid));
  if (!a) throw new Error(`sudo was run by uid ${uid}, which has no passwd entry`);
  return a;
}

/** Through sudo the credentials (and so the CA that vouches for the manifest) must be root's. */
async function rootOwned(dir: string, invoker: Account): Promise<void> {
  for (const p of [dir, `${dir}/ca.pem`]) {
    const st = await Deno.stat(p);
    if (st.uid !== 0 || (st.mode! & 0o022) !== 0) {
      throw new Error(
        `run through sudo by '${invoker.name}': '${p}' must be owned by root and writable only by root`,
      );
    }
  }
}

/** The Ferry user whose host account is `invoker`'s. */
function userOfAccount(m: Manifest, invoker: Account): string {
  const users = [...m.users.values()].filter((u) => u.account === invoker.name);
  if (users.length !== 1) {
    throw new Error(
      users.length === 0
        ? `no user in '${m.file}' has host account '${invoker.name}'`
        : `several users in '${m.file}' have host account '${invoker.name}' (${
          users.map((u) => u.name).join(", ")
        }): name one with -u`,
    );
  }
  return users[0]!.name;
}

/** The host account `user`'s command runs as; refuses a missing one and, through sudo, another's. */
async function accountOf(m: Manifest, user: string, invoker?: Account): Promise<Account> {
  const spec = m.users.get(user);
  if (!spec) {
    throw new Error(
      `Unknown user '${user}' in '${m.file}' (users: ${[...m.users.keys()].join(", ") || "none"})`,
    );
  }
  const refuse = () =>
    new Error(`'${invoker!.name}' may not log on as '${user}' (host account '${spec.account}')`);
  if (invoker && spec.account !== invoker.name) throw refuse();
  const account = await lookupAccount(spec.account);
  if (!account) {
    throw new Error(
      `user '${user}' runs as host account '${spec.account}', which does not exist on this host: ` +
        `create it (useradd ${spec.account}) or set users.${user}.account in the manifest`,
    );
  }
  if (invoker && account.uid !== invoker.uid) throw refuse();
  if (account.uid === 0) {
    throw new Error(
      `user '${user}' runs as host account '${account.name}', which is root: logon never runs ` +
        `a command as root; set users.${user}.account in the manifest to an unprivileged account`,
    );
  }
  return account;
}

/**
 * A dialer already dialling the nodes the user's namespace mounts from, in
 * the manifest `bytes` as read (not yet verified), with the manifest as
 * parsed (and found sound); undefined when it does not parse or name the
 * user: then logon dials as it composes.
 */
async function dialEarly(
  bytes: Uint8Array,
  file: string,
  certDir: string,
  named: string | undefined,
  o: { invoker?: Account; creds?: Credentials },
): Promise<{ dialer: NodeDialer; m: Manifest } | undefined> {
  try {
    const m = loadBytes(bytes, file, { readFile: refuseUnsigned });
    if (checkManifest(m).length) return undefined;
    const user = named ?? userOfAccount(m, o.invoker!);
    const creds = o.creds ?? await loadCredentials(certDir, user);
    const dialer = new NodeDialer(m, creds, user);
    dialAhead(m, user, dialer);
    return { dialer, m };
  } catch {
    return undefined;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
