/**
 * `ferry`: the command-line entry point. Only the subcommand table lives here;
 * each subcommand is a module under cmd/ exporting `run(args)`.
 *
 * @module
 */

/** What a subcommand module provides. */
export interface CommandModule {
  /** Runs the subcommand with its arguments; resolves to the exit status. */
  run(args: string[]): Promise<number>;
}

interface Entry {
  summary: string;
  load: () => Promise<CommandModule>;
  /** The command dials a TLS link as it starts (see {@link warmTls}). */
  dials?: true;
}

// Modules load lazily so a one-shot command pays only for what it uses.
const commands: Record<string, Entry> = {
  listen: {
    summary: "export a host directory over Styx until interrupted",
    load: () => import("./listen.ts"),
  },
  "9p": {
    summary: "one-shot Styx client: ls, read, write, stat, create, rm",
    load: () => import("./9p.ts"),
    dials: true,
  },
  demo: {
    summary: "run the local multi-node demo with real TLS",
    load: () => import("./demo.ts"),
  },
  ca: {
    summary: "certificate authority: init, issue, list, revoke, crl, token",
    load: () => import("./ca.ts"),
  },
  signer: {
    summary: "serve enrolment and renewal from the CA host",
    load: () => import("./signer.ts"),
  },
  enroll: {
    summary: "enrol this device with a signer using a token",
    load: () => import("./enroll.ts"),
  },
  renew: {
    summary: "renew this end's certificate (--daemon: keep renewing)",
    load: () => import("./renew.ts"),
  },
  sh: {
    summary: "Inferno-like shell: bind, mount, listen, export, ls, cat, ...",
    load: () => import("./sh.ts"),
  },
  up: { summary: "run a node of a cluster manifest", load: () => import("./up.ts") },
  down: { summary: "stop a node started with 'ferry up'", load: () => import("./down.ts") },
  logon: {
    summary: "compose a user's namespace from a manifest",
    load: () => import("./logon.ts"),
    dials: true,
  },
  cpu: { summary: "run a command on another node", load: () => import("./cpu.ts"), dials: true },
  sign: { summary: "sign a manifest with the CA's key", load: () => import("./ca_sign.ts") },
  check: { summary: "validate a cluster manifest", load: () => import("./check.ts") },
  mount: {
    summary: "FUSE-mount a Styx tree on a host dir",
    load: () => import("./mount.ts"),
    dials: true,
  },
  unmount: { summary: "unmount a 'ferry mount'", load: () => import("./unmount.ts") },
  phone: {
    summary: "serve /phone: SMS, calls, status, events (sim, modemmanager, termux)",
    load: () => import("./phone.ts"),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((n) => n.length), 4);
  const lines = Object.entries(commands).map(([n, e]) => `  ${n.padEnd(width)}  ${e.summary}`);
  return [
    "usage: ferry COMMAND [ARGS...]",
    "",
    "Share files, networks, processes and phones as Styx (9P2000) trees.",
    "",
    "commands:",
    ...lines,
    "",
    "Run 'ferry COMMAND --help' for a command's options.",
  ].join("\n");
}

/**
 * Seed the TLS library's random generator now, on a worker thread, while
 * the command's modules load. Deno's TLS seeds it at the first client
 * handshake, on the main thread, which then stands still for about 20 ms;
 * WebCrypto's ECDSA key generation seeds the same generator off that
 * thread. The key is thrown away.
 */
function warmTls(): void {
  crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"])
    .catch(() => {});
}

/** Run `ferry` with `args`; returns the exit status. */
export async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    console.log(usage());
    return name === undefined ? 1 : 0;
  }
  const entry = commands[name];
  if (!entry) {
    console.error(`ferry: unknown command '${name}'\n\n${usage()}`);
    return 1;
  }
  if (entry.dials) warmTls();
  const mod = await entry.load();
  return await mod.run(rest);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
