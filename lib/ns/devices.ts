/**
 * Devices by name, as Inferno's `#` paths: `#U` is the host file system.
 * `#U` alone is the namespace's root directory on the host (like `emu -r`),
 * `#U*` is the host's `/`, and `#U*` followed by a path is that host
 * directory or file. Other devices (`#I` net, `#p` prog, `#P` phone) come
 * in the device table a program gives its namespace (see cmd/devices.ts),
 * as Inferno's emu configuration lists the devices it is built with.
 *
 * @module
 */

import * as path from "../hostpath.ts";
import type { Caller, Node, Tree } from "../fs/tree.ts";
import { errorString, StyxError } from "../styx/types.ts";
import { splitNames } from "./path.ts";

/**
 * Makes the tree a device name stands for. `spec` is the text after the
 * device letter: for '#U*' + "/home" it is "*" + "/home", for '#U' it is "".
 */
export type DeviceFactory = (spec: string, caller: Caller) => Tree | Promise<Tree>;

/** Directories every standard root holds. */
export const STANDARD_DIRS: readonly string[] = ["n", "tmp", "usr", "dev", "net", "prog"];

/** Throw unless `name` is '#' followed by exactly one character. */
export function checkDeviceName(name: string): void {
  if (!/^#.$/u.test(name)) {
    throw new Error(`Bad device name '${name}': want '#' and one character, e.g. '#U'`);
  }
}

/**
 * Split a device path such as '#U*' + "/home" into the device name ("#U") and
 * its spec ("*" + "/home").
 *
 * @example
 * ```ts
 * import { splitDevicePath } from "./devices.ts";
 * const star = "#U*";
 * const { name, spec } = splitDevicePath(`${star}/home`);
 * if (name !== "#U" || spec !== "*\u002fhome") throw new Error("bad split");
 * ```
 */
export function splitDevicePath(p: string): { name: string; spec: string } {
  const chars = [...p];
  if (chars[0] !== "#" || chars.length < 2) {
    throw new Error(`Bad device path '${p}': want '#' and a device letter, e.g. '#U*/home'`);
  }
  const name = chars.slice(0, 2).join("");
  return { name, spec: p.slice(name.length) };
}

/** The default root directory: $FERRY_ROOT, else ~/.ferry/root. */
export function defaultRootDir(): string {
  const env = Deno.env.get("FERRY_ROOT");
  if (env) return env;
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  if (!home) {
    throw new Error("Cannot choose a root directory: HOME is not set; give one with -r DIR");
  }
  return path.join(home, ".ferry", "root");
}

/**
 * Make `dir` (and parents) and the standard directories in it, keeping what
 * is already there. Throws an Error naming the directory when it cannot.
 */
export async function prepareRootDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
    for (const d of STANDARD_DIRS) await Deno.mkdir(path.join(dir, d), { recursive: true });
  } catch (e) {
    throw new Error(`Cannot prepare root directory '${dir}': ${errorString(e)}`);
  }
}

/**
 * The `#U` device: `#U` is `rootDir`, `#U*` is the host's `/`, and a path after
 * either names a directory or file below it.
 *
 * @example
 * ```ts
 * import { hostDevice } from "./devices.ts";
 * const dev = hostDevice("/tmp");
 * const tree = await dev("*", { user: "glenda" });
 * const root = await tree.attach({ user: "glenda" }, "");
 * await root.close();
 * ```
 */
export function hostDevice(rootDir: string): DeviceFactory {
  return async (spec: string) => {
    const star = spec.startsWith("*");
    const base = star ? "/" : rootDir;
    const rest = star ? spec.slice(1) : spec;
    if (rest !== "" && !rest.startsWith("/")) {
      throw new Error(`Bad '#U' spec '${spec}': want '#U', '#U*' or either followed by '/PATH'`);
    }
    const names = splitNames(rest);
    const host = path.join(base, ...names);
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(host);
    } catch (e) {
      throw new Error(`Host path '${host}': ${errorString(e)}`);
    }
    // Loaded when first used: it brings node:fs, slow to load.
    const { HostTree } = await import("../fs/host.ts");
    if (info.isDirectory) {
      const t = new HostTree(host);
      await t.ready();
      return t;
    }
    const parent = new HostTree(path.dirname(host));
    await parent.ready();
    return new FileTree(parent, path.basename(host));
  };
}

/** A tree whose root is one file of another tree. */
class FileTree implements Tree {
  constructor(readonly dir: Tree, readonly name: string) {}

  async attach(caller: Caller, aname: string): Promise<Node> {
    const root = await this.dir.attach(caller, aname);
    try {
      const r = await root.walk([this.name]);
      if (!r.node) throw new StyxError("file does not exist");
      return r.node;
    } finally {
      await root.close();
    }
  }
}
