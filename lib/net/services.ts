/**
 * The services table: well-known service names and their TCP/UDP ports, as
 * Inferno keeps them in /lib/ndb/services. Dial strings may name a service
 * instead of a port ("tcp!host!styx").
 *
 * Styx is 6666 as in Inferno. Ferry's certificate signer listens on 6670
 * ("signer"); Inferno's own signer and login services keep their usual
 * numbers so that dial strings written for Inferno still work.
 *
 * @module
 */

/** Service name → port. Names are matched exactly (lower case). */
export const SERVICES: Readonly<Record<string, number>> = Object.freeze({
  ftp: 21,
  ssh: 22,
  telnet: 23,
  smtp: 25,
  domain: 53,
  http: 80,
  pop3: 110,
  imap: 143,
  https: 443,
  "9fs": 564,
  styx: 6666,
  rstyx: 6668,
  signer: 6670,
  infsigner: 6671,
  infcsigner: 6672,
  inflogin: 6673,
});

/**
 * The port of service `name`, or undefined when it is not in the table.
 *
 * @example
 * ```ts
 * import { servicePort } from "./services.ts";
 * if (servicePort("styx") !== 6666) throw new Error("wrong");
 * ```
 */
export function servicePort(name: string): number | undefined {
  return Object.hasOwn(SERVICES, name) ? SERVICES[name] : undefined;
}

/**
 * The first service name registered for `port`, or undefined.
 *
 * @example
 * ```ts
 * import { serviceName } from "./services.ts";
 * if (serviceName(564) !== "9fs") throw new Error("wrong");
 * ```
 */
export function serviceName(port: number): string | undefined {
  for (const [name, p] of Object.entries(SERVICES)) if (p === port) return name;
  return undefined;
}
