/**
 * The devices a Ferry program's namespaces are built with, listed in one
 * place as Inferno's emu configuration lists the devices it is built with.
 * Nothing registers itself: a command passes this table to
 * `Namespace.standard` (or to `logon` and `FerryNode.start`, which pass it
 * on), and `#U`, the host file system, is added by the namespace itself.
 *
 * @example
 * ```ts
 * import { standardDevices } from "./devices.ts";
 * const devices = standardDevices();
 * if (!devices.has("#I") || !devices.has("#p")) throw new Error("missing devices");
 * ```
 *
 * @module
 */

import type { DeviceFactory } from "../lib/ns/devices.ts";
import { netDevice } from "../lib/dev/net/mod.ts";
import { progDevice } from "../lib/dev/prog/mod.ts";

/**
 * A new table of the standard devices: `#I` (the process's /net) and `#p`
 * (its /prog). The phone, `#P`, is added by `ferry sh --phone`, which
 * chooses its backend.
 */
export function standardDevices(): Map<string, DeviceFactory> {
  return new Map<string, DeviceFactory>([
    ["#I", netDevice()],
    ["#p", progDevice()],
  ]);
}
