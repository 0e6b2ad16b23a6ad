/**
 * The /net device (`#I`): TCP conversations after ip(3), the connection
 * server /net/cs after cs(8), and /net/dns. One {@link NetDevice} per
 * process answers for it, as one IP stack per machine does in Inferno;
 * {@link netDevice} is its entry in a namespace's device table.
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

import type { DeviceFactory } from "../../ns/devices.ts";
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

/** The `#I` device, answering with the process's shared {@link NetDevice}. */
export function netDevice(): DeviceFactory {
  return (spec) => {
    if (spec !== "") throw new Error(`Bad '#I' spec '${spec}': '#I' takes none`);
    return sharedNetDevice().tree();
  };
}
