/**
 * The /net device (`#I`): TCP conversations after ip(3), the connection
 * server /net/cs after cs(8), and /net/dns. Loading this module registers
 * `#I` with every standard namespace (see {@link registerNetDevice}); one
 * {@link NetDevice} per process answers for it, as one IP stack per machine
 * does in Inferno.
 *
 * @example
 * ```ts
 * import { sharedNetDevice } from "./mod.ts";
 * const root = await sharedNetDevice().tree().attach({ user: "glenda" }, "");
 * await root.close();
 * ```
 *
 * @module
 */

import { registerStandardDevice } from "../../ns/devices.ts";
import { NetDevice } from "./device.ts";

export { csTranslate, NetDevice, type NetOptions } from "./device.ts";
export { type ConvState, netError, TcpConv } from "./conv.ts";
export { dnsQuery, hostsLookup, isIP, isIPv4, isIPv6, resolveHost } from "./resolve.ts";

let shared: NetDevice | undefined;

/** The process's one /net device, made on first use. */
export function sharedNetDevice(): NetDevice {
  shared ??= new NetDevice();
  return shared;
}

/**
 * Register `#I` (the process's shared {@link NetDevice}) for every namespace
 * `Namespace.standard` makes from now on. Called when this module loads;
 * calling it again is harmless.
 */
export function registerNetDevice(): void {
  registerStandardDevice("#I", (spec) => {
    if (spec !== "") throw new Error(`Bad '#I' spec '${spec}': '#I' takes none`);
    return sharedNetDevice().tree();
  });
}

registerNetDevice();
