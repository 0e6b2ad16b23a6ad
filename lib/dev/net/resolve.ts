/**
 * Name resolution for the /net device, done on the machine that serves it:
 * IP literals as they are, `localhost` and names in /etc/hosts, then DNS.
 * The connection server (/net/cs) and the DNS file (/net/dns) both use it,
 * so after `mount remote /net` names resolve at the remote, as they do in
 * Inferno.
 *
 * @module
 */

import { StyxError } from "../../styx/types.ts";

/** True for an IPv4 dotted quad. */
export function isIPv4(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  return m !== null && m.slice(1).every((p) => Number(p) <= 255);
}

/** True for something that looks like an IPv6 literal (contains ':', hex digits and dots). */
export function isIPv6(s: string): boolean {
  return s.includes(":") && /^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$/.test(s);
}

/** True for an IP literal of either family. */
export function isIP(s: string): boolean {
  return isIPv4(s) || isIPv6(s);
}

/** Options for {@link resolveHost} and {@link dnsQuery}. */
export interface ResolveOptions {
  /** The hosts file to consult (default "/etc/hosts"). */
  hostsFile?: string;
  /** Give up on DNS after this long (default 5000 ms). */
  timeoutMs?: number;
  /** Aborts the lookup. */
  signal?: AbortSignal;
}

/** The addresses /etc/hosts (or `file`) gives for `name`, in file order. */
export async function hostsLookup(name: string, file = "/etc/hosts"): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch {
    return [];
  }
  const out: string[] = [];
  const want = name.toLowerCase();
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*/, "").trim();
    if (line === "") continue;
    const [addr, ...names] = line.split(/\s+/);
    if (addr && names.some((n) => n.toLowerCase() === want) && !out.includes(addr)) {
      out.push(addr);
    }
  }
  return out;
}

function dnsSignal(opts: ResolveOptions): AbortSignal {
  const t = AbortSignal.timeout(opts.timeoutMs ?? 5000);
  return opts.signal ? AbortSignal.any([opts.signal, t]) : t;
}

/**
 * The IP addresses of `host`: IPv4 before IPv6. Throws a StyxError
 * "unknown host 'NAME'" when there are none.
 *
 * @example
 * ```ts
 * import { resolveHost } from "./resolve.ts";
 * const addrs = await resolveHost("127.0.0.1");
 * if (addrs[0] !== "127.0.0.1") throw new Error("literal changed");
 * ```
 */
export async function resolveHost(host: string, opts: ResolveOptions = {}): Promise<string[]> {
  if (isIP(host)) return [host];
  let addrs = await hostsLookup(host, opts.hostsFile);
  if (addrs.length === 0 && host.toLowerCase() === "localhost") addrs = ["127.0.0.1"];
  if (addrs.length === 0) {
    const signal = dnsSignal(opts);
    const [a, aaaa] = await Promise.allSettled([
      Deno.resolveDns(host, "A", { signal }),
      Deno.resolveDns(host, "AAAA", { signal }),
    ]);
    if (a.status === "fulfilled") addrs.push(...a.value);
    if (aaaa.status === "fulfilled") addrs.push(...aaaa.value);
  }
  if (addrs.length === 0) throw new StyxError(`unknown host '${host}'`);
  return [...addrs.filter(isIPv4), ...addrs.filter((a) => !isIPv4(a))];
}

/** Query types /net/dns answers, as ndb names them. */
export const DNS_TYPES: readonly string[] = ["ip", "ipv6", "mx", "ns", "cname", "txt", "ptr"];

/**
 * Answer one /net/dns query: `name` and an ndb type ("ip", "ipv6", "mx",
 * "ns", "cname", "txt", "ptr"). Returns lines "name type value". Throws
 * "dns: name does not exist" when nothing is found.
 *
 * @example
 * ```ts
 * import { dnsQuery } from "./resolve.ts";
 * const lines = await dnsQuery("localhost", "ip");
 * if (!lines[0]!.startsWith("localhost ip ")) throw new Error("bad answer");
 * ```
 */
export async function dnsQuery(
  name: string,
  type: string,
  opts: ResolveOptions = {},
): Promise<string[]> {
  const t = type.toLowerCase();
  if (!DNS_TYPES.includes(t)) {
    throw new StyxError(`dns: unknown query type '${type}' (want one of ${DNS_TYPES.join(", ")})`);
  }
  if (t === "ip" || t === "ipv6") {
    let addrs: string[];
    if (isIP(name)) addrs = [name];
    else {
      addrs = await hostsLookup(name, opts.hostsFile);
      if (addrs.length === 0 && name.toLowerCase() === "localhost") {
        addrs = t === "ip" ? ["127.0.0.1"] : ["::1"];
      }
      if (addrs.length === 0) {
        addrs = await Deno.resolveDns(name, t === "ip" ? "A" : "AAAA", {
          signal: dnsSignal(opts),
        }).catch(() => []);
      }
    }
    addrs = addrs.filter((a) => t === "ip" ? isIPv4(a) : isIPv6(a));
    if (addrs.length === 0) throw new StyxError("dns: name does not exist");
    return addrs.map((a) => `${name} ${t} ${a}`);
  }
  const signal = dnsSignal(opts);
  try {
    switch (t) {
      case "mx": {
        const r = await Deno.resolveDns(name, "MX", { signal });
        return r.map((m) => `${name} mx ${m.preference} ${m.exchange}`);
      }
      case "txt": {
        const r = await Deno.resolveDns(name, "TXT", { signal });
        return r.map((parts) => `${name} txt ${parts.join("")}`);
      }
      default: {
        const rr = t === "ns" ? "NS" : t === "cname" ? "CNAME" : "PTR";
        const r = await Deno.resolveDns(name, rr, { signal });
        return r.map((v) => `${name} ${t} ${v}`);
      }
    }
  } catch {
    throw new StyxError("dns: name does not exist");
  }
}
