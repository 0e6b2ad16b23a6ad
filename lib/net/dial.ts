/**
 * Dial strings, as Inferno and Plan 9 write network addresses:
 * `net!host!service`.
 *
 * Accepted forms:
 * - `tcp!host!port`, `udp!host!port`: an explicit network;
 * - `net!host!service`: any network, which Ferry takes to mean TCP;
 * - `tcp!*!port`: every local address (for announcing);
 * - `host!port`: the default network (TCP unless `defaults.net` says otherwise);
 * - `host` or `tcp!host`: only when `defaults.service` supplies the service;
 * - the service may be a port number or a name from the services table
 *   (`styx` is 6666, see {@link SERVICES});
 * - IPv6 literals bare or in brackets: `tcp!::1!6666`, `tcp![::1]!6666`.
 *
 * A string that is none of these throws an Error that quotes it and says
 * what is wrong: `bad dial string 'tcp!host': missing port`.
 *
 * @module
 */

import { servicePort, SERVICES } from "./services.ts";

export { SERVICES };

/** A parsed dial string. */
export interface DialAddr {
  /** "tcp" or "udp" ("net" is reported as "tcp"). */
  net: string;
  /** Host name or address without brackets, or "*" for every local address. */
  host: string;
  /** The service as written: a name from the services table or the port in decimal. */
  service: string;
  /** The port number the service stands for (0 asks the system to pick one when announcing). */
  port: number;
}

/** Defaults for the parts a dial string may leave out. */
export interface DialDefaults {
  /** Network used when the string names none (default "tcp"). */
  net?: string;
  /** Service used when the string names none; without it a port is required. */
  service?: string;
}

const NETS: Readonly<Record<string, string>> = { tcp: "tcp", udp: "udp", net: "tcp" };

const HOSTNAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;
const IPV6 = /^[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?$/;

/**
 * Parse a dial string into its network, host, service and port.
 *
 * @example
 * ```ts
 * import { parseDialString } from "./dial.ts";
 * const a = parseDialString("tcp!example.org!styx");
 * if (a.port !== 6666 || a.host !== "example.org") throw new Error("wrong");
 * const b = parseDialString("localhost", { service: "9fs" });
 * if (b.net !== "tcp" || b.port !== 564) throw new Error("wrong");
 * ```
 */
export function parseDialString(s: string, defaults?: DialDefaults): DialAddr {
  const bad = (why: string): Error => new Error(`bad dial string '${s}': ${why}`);
  if (s === "") throw bad("it is empty");
  const parts = s.split("!");
  let netName: string | undefined;
  let host: string;
  let service: string | undefined;
  if (parts.length > 3) {
    throw bad(`too many '!'-separated fields (${parts.length}; at most 3: net!host!service)`);
  } else if (parts.length === 3) {
    [netName, host, service] = parts as [string, string, string];
    if (netName === "") throw bad("missing network");
  } else if (parts.length === 2) {
    const [a, b] = parts as [string, string];
    if (Object.hasOwn(NETS, a)) {
      netName = a;
      host = b;
    } else {
      host = a;
      service = b;
    }
  } else {
    host = parts[0] as string;
    if (Object.hasOwn(NETS, host)) throw bad("missing host");
  }

  netName ??= defaults?.net ?? "tcp";
  if (!Object.hasOwn(NETS, netName)) {
    throw bad(`unknown network '${netName}' (expected tcp, udp or net)`);
  }
  const net = NETS[netName] as string;

  if (host === "") throw bad("missing host");
  if (host.startsWith("[") || host.endsWith("]")) {
    const inner = host.slice(1, -1);
    if (!host.startsWith("[") || !host.endsWith("]") || !inner.includes(":") || !IPV6.test(inner)) {
      throw bad(`bad host '${host}' (brackets hold an IPv6 address, e.g. [::1])`);
    }
    host = inner;
  } else if (host.includes(":")) {
    if (!IPV6.test(host)) throw bad(`bad IPv6 address '${host}'`);
  } else if (host !== "*" && !HOSTNAME.test(host)) {
    throw bad(`bad host '${host}'`);
  }

  if (service === undefined) {
    service = defaults?.service;
    if (service === undefined) throw bad("missing port");
  }
  if (service === "") throw bad("missing port");
  let port: number;
  if (/^[0-9]+$/.test(service)) {
    port = Number(service);
    if (port > 65535) throw bad(`port '${service}' is out of range (0-65535)`);
  } else {
    const p = servicePort(service);
    if (p === undefined) throw bad(`unknown service '${service}'`);
    port = p;
  }
  return { net, host, service, port };
}

/**
 * Write a {@link DialAddr} back as a dial string. The service is written by
 * name when the name is in the services table and stands for the same port,
 * otherwise as the port number. IPv6 hosts are written bare (`tcp!::1!6666`),
 * which {@link parseDialString} reads back.
 *
 * @example
 * ```ts
 * import { formatDialString } from "./dial.ts";
 * const s = formatDialString({ net: "tcp", host: "*", service: "8000", port: 8000 });
 * if (s !== "tcp!*!8000") throw new Error("wrong");
 * ```
 */
export function formatDialString(a: DialAddr): string {
  const service = servicePort(a.service) === a.port ? a.service : String(a.port);
  return `${a.net}!${a.host}!${service}`;
}

/**
 * The host to pass to a listen call: "*" becomes "0.0.0.0" (or "::" when
 * `family` is "ipv6"; on Linux that usually accepts IPv4 too), anything else is
 * returned unchanged.
 *
 * @example
 * ```ts
 * import { listenHost, parseDialString } from "./dial.ts";
 * if (listenHost(parseDialString("tcp!*!6666")) !== "0.0.0.0") throw new Error("wrong");
 * ```
 */
export function listenHost(a: DialAddr, family: "ipv4" | "ipv6" = "ipv4"): string {
  if (a.host !== "*") return a.host;
  return family === "ipv6" ? "::" : "0.0.0.0";
}
