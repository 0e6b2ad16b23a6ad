/**
 * The /prog device (`#p`): host processes as prog(3) shows Inferno's.
 * Loading this module registers `#p` with every standard namespace (see
 * {@link registerProgDevice}).
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

import { registerStandardDevice } from "../../ns/devices.ts";
import { ProgDevice, type ProgOptions } from "./device.ts";

export { ProgDevice, type ProgOptions, statusLine } from "./device.ts";
export { listPids, parseStat, type ProcInfo, readProc, STATE_WORDS } from "./procfs.ts";

/**
 * Register `#p` for every namespace `Namespace.standard` makes from now on.
 * Called with no options when this module loads; call again with options
 * (admin groups, an `ns` hook) to replace it.
 */
export function registerProgDevice(opts: ProgOptions = {}): void {
  const dev = new ProgDevice(opts);
  registerStandardDevice("#p", (spec) => {
    if (spec !== "") throw new Error(`Bad '#p' spec '${spec}': '#p' takes none`);
    return dev.tree();
  });
}

registerProgDevice();
