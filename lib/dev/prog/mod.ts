/**
 * The /prog device (`#p`): host processes as prog(3) shows Inferno's.
 * {@link progDevice} is its entry in a namespace's device table.
 *
 * @example
 * ```ts
 * import { ProgDevice } from "./mod.ts";
 * const root = await new ProgDevice().tree().attach({ user: "glenda" }, "");
 * await root.close();
 * ```
 *
 * @module
 */

import type { DeviceFactory } from "../../ns/devices.ts";
import { ProgDevice, type ProgOptions } from "./device.ts";

export { ProgDevice, type ProgOptions, statusLine } from "./device.ts";
export { listPids, parseStat, type ProcInfo, readProc, STATE_WORDS } from "./procfs.ts";

/** The `#p` device: one {@link ProgDevice} made with `opts` answers every attach. */
export function progDevice(opts: ProgOptions = {}): DeviceFactory {
  const dev = new ProgDevice(opts);
  return (spec) => {
    if (spec !== "") throw new Error(`Bad '#p' spec '${spec}': '#p' takes none`);
    return dev.tree();
  };
}
