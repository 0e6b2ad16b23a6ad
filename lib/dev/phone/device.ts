/**
 * The phone as a namespace device, `#P`: `bind '#P' /phone` puts the /phone
 * tree (sms, ctl, status, events) of this process's one {@link Phone} into
 * a namespace, so that `echo send 6412345678 'hello' >/phone/sms` works in
 * the shell and `export /phone` serves it. `ferry sh --phone sim:STATEDIR`
 * adds the device to its namespace and binds it at startup.
 *
 * The phone behind the device is opened on the first bind (starting the
 * backend and resending messages left queued) and shared by every bind
 * after that, as one modem serves one machine.
 *
 * @module
 */

import * as path from "../../hostpath.ts";
import type { DeviceFactory } from "../../ns/devices.ts";
import type { Tree } from "../../fs/tree.ts";
import { PHONE_BACKENDS, type PhoneBackend } from "./backend.ts";
import { Phone } from "./tree.ts";
import { SimBackend } from "./sim.ts";
import { ModemManagerBackend } from "./modemmanager.ts";
import { TermuxBackend } from "./termux.ts";

/** The phone's device name: `bind '#P' /phone`. */
export const PHONE_DEVICE = "#P";

/** Which phone to serve, as parsed by {@link parsePhoneSpec}. */
export interface PhoneSpec {
  /** The backend: "sim", "modemmanager" or "termux". */
  backend: "sim" | "modemmanager" | "termux";
  /** The state directory (message store; the simulator's socket and outbox). */
  stateDir?: string;
  /** modemmanager only: which modem (index, D-Bus path or "any"). */
  modem?: string;
}

/**
 * Parse a phone spec as `ferry sh --phone` takes it: `BACKEND[:ARG]`, where
 * ARG is the state directory for `sim` and `termux`, and the modem for
 * `modemmanager` (its state directory is then the default). Throws an Error
 * quoting the spec when it names no known backend.
 *
 * @example
 * ```ts
 * import { parsePhoneSpec } from "./device.ts";
 * const s = parsePhoneSpec("sim:/tmp/phone-state");
 * if (s.backend !== "sim" || s.stateDir !== "/tmp/phone-state") throw new Error("bad parse");
 * ```
 */
export function parsePhoneSpec(text: string): PhoneSpec {
  const colon = text.indexOf(":");
  const name = colon < 0 ? text : text.slice(0, colon);
  const arg = colon < 0 ? undefined : text.slice(colon + 1);
  if (name !== "sim" && name !== "modemmanager" && name !== "termux") {
    throw new Error(
      `Bad phone '${text}': want BACKEND or BACKEND:ARG with BACKEND one of ${
        PHONE_BACKENDS.join(", ")
      } (e.g. 'sim:/var/lib/ferry/phone')`,
    );
  }
  if (arg === "") {
    throw new Error(`Bad phone '${text}': nothing after ':' (leave the ':' out for the default)`);
  }
  if (arg === undefined) return { backend: name };
  return name === "modemmanager" ? { backend: name, modem: arg } : { backend: name, stateDir: arg };
}

/** The default phone state directory: ~/.ferry/phone (as `ferry phone` uses). */
export function defaultPhoneStateDir(): string {
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  if (!home) {
    throw new Error("Cannot choose a phone state directory: HOME is not set; name one");
  }
  return path.join(home, ".ferry", "phone");
}

/** Make the backend a {@link PhoneSpec} names, keeping its state in `stateDir`. */
export function phoneBackend(spec: PhoneSpec, stateDir: string): PhoneBackend {
  switch (spec.backend) {
    case "sim":
      return new SimBackend({ stateDir });
    case "modemmanager":
      return new ModemManagerBackend(spec.modem ? { modem: spec.modem } : {});
    case "termux":
      return new TermuxBackend();
  }
}

/** Options for {@link PhoneDevice}. */
export interface PhoneDeviceOptions extends PhoneSpec {
  /** Owner of the files in the tree (default "ferry"). */
  uid?: string;
  /** Where background problems are reported (default: console.error). */
  log?: (message: string) => void;
}

/**
 * One phone served as a device: {@link PhoneDevice.tree} opens the
 * {@link Phone} on first use and hands out the same tree afterwards.
 *
 * @example
 * ```ts
 * import { PhoneDevice } from "./device.ts";
 * const stateDir = await Deno.makeTempDir();
 * const dev = new PhoneDevice({ backend: "sim", stateDir });
 * const root = await (await dev.tree()).attach({ user: "glenda" }, "");
 * await root.close();
 * await dev.close();
 * await Deno.remove(stateDir, { recursive: true });
 * ```
 */
export class PhoneDevice {
  /** The device name this phone is known by: {@link PHONE_DEVICE}. */
  readonly device: string = PHONE_DEVICE;
  #opening: Promise<{ phone: Phone; tree: Tree }> | undefined;
  #closed = false;

  /** A device for the phone `opts` describes; nothing starts until first use. */
  constructor(readonly opts: PhoneDeviceOptions) {}

  /** The state directory in use (the spec's, else the default). */
  get stateDir(): string {
    return this.opts.stateDir ?? defaultPhoneStateDir();
  }

  /** The running phone, opened on first call. */
  async phone(): Promise<Phone> {
    return (await this.#open()).phone;
  }

  /** The /phone tree, opening the phone on first call. */
  async tree(): Promise<Tree> {
    return (await this.#open()).tree;
  }

  #open(): Promise<{ phone: Phone; tree: Tree }> {
    if (this.#closed) return Promise.reject(new Error("The phone device is closed"));
    this.#opening ??= (async () => {
      const stateDir = this.stateDir;
      const backend = phoneBackend(this.opts, stateDir);
      let phone: Phone;
      try {
        phone = await Phone.open({
          backend,
          stateDir,
          ...(this.opts.log ? { log: this.opts.log } : {}),
          ...(this.opts.uid ? { uid: this.opts.uid } : {}),
        });
      } catch (e) {
        throw new Error(
          `Cannot start the ${this.opts.backend} phone (state '${stateDir}'): ${
            (e as Error).message
          }`,
        );
      }
      return { phone, tree: phone.tree() };
    })();
    this.#opening.catch(() => (this.#opening = undefined));
    return this.#opening;
  }

  /**
   * Stop the phone if it was started. Sends under way are given up to
   * `graceMs` (default 5000) to finish and be recorded, so a message the
   * modem took is not sent again on the next start; anything still queued
   * after that stays queued on disk.
   */
  async close(graceMs = 5000): Promise<void> {
    this.#closed = true;
    const o = this.#opening;
    this.#opening = undefined;
    if (!o) return;
    const opened = await o.catch(() => undefined);
    if (!opened) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      opened.phone.drain(),
      new Promise<void>((r) => (timer = setTimeout(r, graceMs))),
    ]);
    clearTimeout(timer);
    await opened.phone.close();
  }
}

/**
 * The `#P` device answering with `dev`'s tree, for a namespace's device
 * table (`ferry sh --phone` adds it to its own).
 *
 * @example
 * ```ts
 * import { PHONE_DEVICE, PhoneDevice, phoneDevice } from "./device.ts";
 * import { Namespace } from "../../ns/namespace.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/root/phone`, { recursive: true });
 * const dev = new PhoneDevice({ backend: "sim", stateDir: `${dir}/state` });
 * const devices = new Map([[PHONE_DEVICE, phoneDevice(dev)]]);
 * const ns = await Namespace.standard({ user: "glenda", rootDir: `${dir}/root`, devices });
 * await ns.bind("#P", "/phone");
 * await dev.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export function phoneDevice(dev: PhoneDevice): DeviceFactory {
  return (spec) => {
    if (spec !== "") {
      throw new Error(`Bad '${PHONE_DEVICE}' spec '${spec}': '${PHONE_DEVICE}' takes none`);
    }
    return dev.tree();
  };
}
