/**
 * `ferry phone`: serve the /phone tree (SMS, calls, status, events) over
 * Styx, with a simulated modem, ModemManager or Termux:API behind it; and
 * `ferry phone sim inject ...` to make incoming traffic for a running
 * simulator.
 *
 * @module
 */

import { fail, parse, UsageError, warnInsecure } from "../lib/cli.ts";
import { listenHost, parseDialString } from "../lib/net/dial.ts";
import { tcpListen } from "../lib/transport/tcp.ts";
import type { Listener } from "../lib/transport/conn.ts";
import { serve } from "../lib/styx/server.ts";
import { traceEnabled } from "../lib/styx/trace.ts";
import { Phone } from "../lib/dev/phone/tree.ts";
import type { PhoneBackend } from "../lib/dev/phone/backend.ts";
import { SimBackend, simInject } from "../lib/dev/phone/sim.ts";
import { ModemManagerBackend } from "../lib/dev/phone/modemmanager.ts";
import { TermuxBackend } from "../lib/dev/phone/termux.ts";

const spec = {
  usage: "ferry phone [--backend sim|modemmanager|termux] [--state DIR] [-A] [--listen ADDR]\n" +
    "       ferry phone sim inject sms NUMBER TEXT... | call NUMBER | answer | hangup | signal N",
  about: "Serve /phone over Styx on ADDR (default 'tcp!*!styx'): write 'send NUMBER text'\n" +
    "or 'resend ID' to sms, 'send text' to conv/NUMBER, 'dial NUMBER', 'answer', 'hangup',\n" +
    "'mute' or 'unmute' to ctl; read status, the sms list, one conversation in conv/NUMBER,\n" +
    "and events (each read waits for the next: ring, sms, missed, hangup, answered, sent,\n" +
    "failed, modem gone, modem ready). Outgoing messages are queued on disk in the state\n" +
    "directory until the backend confirms them. Without -A every connection is mutually\n" +
    "authenticated and encrypted with TLS 1.3 using this machine's credentials.",
  options: {
    backend: { type: "string" as const },
    state: { type: "string" as const },
    A: { type: "boolean" as const },
    listen: { type: "string" as const },
    modem: { type: "string" as const },
    allow: { type: "string" as const },
    certs: { type: "string" as const },
    name: { type: "string" as const },
    D: { type: "boolean" as const },
  },
  optionsHelp: [
    "  --backend NAME  sim (default: a simulated modem), modemmanager (D-Bus) or termux",
    "  --state DIR     message store and simulator socket (default ~/.ferry/phone)",
    "  -A              no authentication or encryption (warns)",
    "  --listen ADDR   dial string to announce on (default 'tcp!*!styx', port 6666)",
    "  --modem ID      modemmanager: which modem (default 'any')",
    "  --allow LIST    comma-separated users and group:NAME entries allowed to connect",
    "  --certs DIR     credentials directory (default $FERRY_CERTS, else ~/.ferry/certs)",
    "  --name NAME     which credentials in --certs to use",
    "  -D              trace Styx messages on stderr",
  ].join("\n"),
};

/** The default state directory: ~/.ferry/phone. */
function defaultState(): string {
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  if (!home) throw new Error("HOME is not set: give the state directory with --state DIR");
  return `${home}/.ferry/phone`;
}

function makeBackend(name: string, stateDir: string, modem?: string): PhoneBackend {
  switch (name) {
    case "sim":
      return new SimBackend({ stateDir });
    case "modemmanager":
      return new ModemManagerBackend(modem ? { modem } : {});
    case "termux":
      return new TermuxBackend();
  }
  throw new UsageError(`unknown backend '${name}': use sim, modemmanager or termux`);
}

/**
 * Announce on `addr`. With `insecure`, plain TCP; otherwise mutual TLS
 * with the credentials in `certDir` (lib/auth/link.ts, lib/transport/tls.ts).
 */
async function announce(
  addr: string,
  insecure: boolean,
  opts: { certDir?: string; name?: string; allow?: string[] },
): Promise<Listener> {
  const a = parseDialString(addr, { net: "tcp", service: "styx" });
  if (a.net !== "tcp") throw new Error(`cannot announce '${addr}': only tcp is supported`);
  const host = listenHost(a);
  if (insecure) {
    try {
      return tcpListen(host, a.port);
    } catch (e) {
      throw new Error(`cannot announce '${addr}': ${(e as Error).message}`);
    }
  }
  const link = await import("../lib/auth/link.ts");
  const { tlsListen } = await import("../lib/transport/tls.ts");
  // Watched: a renewed certificate and a new CRL reach the running listener.
  const creds = await link.watchCredentials(opts.certDir ?? link.defaultCertsDir(), opts.name, {
    onError: (e) => console.error(`phone: keeping the current credentials: ${e.message}`),
  });
  return await tlsListen(host, a.port, { creds, allow: opts.allow });
}

async function inject(args: string[], state: string): Promise<number> {
  if (args.length === 0) throw new UsageError(`inject what?\nusage: ${spec.usage}`);
  await simInject(state, args);
  return 0;
}

/** Run `ferry phone`. */
export async function run(args: string[]): Promise<number> {
  try {
    const p = parse(spec, args);
    if (p.help) return 0;
    const state = typeof p.values.state === "string" ? p.values.state : defaultState();
    const [first, second, ...rest] = p.positionals;
    if (first === "sim") {
      if (second !== "inject") {
        throw new UsageError(`unknown sim command '${second ?? ""}'\nusage: ${spec.usage}`);
      }
      return await inject(rest, state);
    }
    if (first !== undefined) {
      throw new UsageError(`unexpected argument '${first}'\nusage: ${spec.usage}`);
    }
    const insecure = p.values.A === true;
    const backendName = typeof p.values.backend === "string" ? p.values.backend : "sim";
    const backend = makeBackend(
      backendName,
      state,
      typeof p.values.modem === "string" ? p.values.modem : undefined,
    );
    const addr = typeof p.values.listen === "string" ? p.values.listen : "tcp!*!styx";
    const allow = typeof p.values.allow === "string"
      ? p.values.allow.split(",").map((s) => s.trim()).filter((s) => s)
      : undefined;
    const listener = await announce(addr, insecure, {
      certDir: p.values.certs as string | undefined,
      name: p.values.name as string | undefined,
      allow,
    });
    let phone: Phone;
    try {
      phone = await Phone.open({ backend, stateDir: state });
    } catch (e) {
      listener.close();
      throw e;
    }
    const tree = phone.tree();
    if (insecure) warnInsecure("phone");
    console.log(
      `phone: serving /phone (backend ${backend.name}, state '${state}') on ${listener.addr}`,
    );
    const trace = p.values.D === true || traceEnabled();
    const stop = () => listener.close();
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    for await (const conn of listener) {
      serve(conn, tree, { trace }).catch((e) =>
        console.error(`phone: ${conn.peer.addr}: ${(e as Error).message}`)
      );
    }
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    // Let sends under way finish and be recorded, so a restart resends nothing twice.
    await Promise.race([phone.drain(), new Promise((r) => setTimeout(r, 5000))]);
    await phone.close();
    console.error("phone: stopped");
    return 0;
  } catch (e) {
    return fail("phone", e);
  }
}
