/**
 * `ferry mount ADDR HOSTDIR` and `ferry unmount HOSTDIR`: a remote Styx
 * tree mounted on a host directory through FUSE, for every program on the
 * machine. `ferry mount` returns once mounted and leaves a background
 * `ferry mount -f` serving it (-f alone stays in the foreground). That
 * process unmounts on SIGINT/SIGTERM and when the remote goes away
 * (operations then fail with EIO; nothing hangs).
 *
 * @module
 */

import { fail, parse, UsageError, warnInsecure } from "../lib/cli.ts";
import { PEER_NEEDS_TLS } from "../lib/net/mismatch.ts";
import { dialStyx } from "../lib/net/connect.ts";
import {
  type FuseMount,
  type MountOptions,
  mountTree,
  parseMountOptions,
  unmountPath,
} from "../lib/fuse/mount.ts";

const mountSpec = {
  usage: "ferry mount [-A] [-f] [-o OPTIONS] [-u USER] [--aname NAME] [-a ALG] [--peer NODE] " +
    "[--certs DIR] [-D] ADDR HOSTDIR",
  about: "Mount the Styx tree served at ADDR (a dial string such as 'tcp!host!6666') on the\n" +
    "host directory HOSTDIR through the kernel's FUSE, so every program sees it, and\n" +
    "return once it is mounted; a background process serves it until 'ferry unmount\n" +
    "HOSTDIR' or the remote goes away. Needs root and /dev/fuse. Without -A the\n" +
    "connection is mutually authenticated and encrypted with TLS 1.3 using this\n" +
    "machine's credentials.",
  options: {
    A: { type: "boolean" as const },
    f: { type: "boolean" as const },
    o: { type: "string" as const, multiple: true },
    u: { type: "string" as const },
    aname: { type: "string" as const },
    a: { type: "string" as const },
    peer: { type: "string" as const },
    certs: { type: "string" as const },
    D: { type: "boolean" as const },
  },
  optionsHelp: [
    "  -A             no authentication or encryption (warns)",
    "  -f             stay in the foreground; SIGINT or SIGTERM unmounts",
    "  -o OPTIONS     comma-separated mount options:",
    "                   attr_timeout=S   seconds the kernel trusts attributes (default 1)",
    "                   entry_timeout=S  seconds names, missing names and listings read",
    "                                    ahead are trusted (default 1; 0: no caching)",
    "                   direct_io        bypass the page cache for every file",
    "                   max_io=BYTES     largest kernel read/write (default 1048576)",
    "                   readahead_kb=N   kernel readahead (default 4096; 0: kernel's)",
    "                   fsname=NAME      source shown in /proc/mounts",
    "                   debug            log every FUSE request on stderr",
    "  -u USER        user name sent at attach (default $USER)",
    "  --aname NAME   attach name (the tree to select on the server)",
    "  -a ALG         Inferno algorithm name, mapped onto a TLS 1.3 cipher choice",
    "  --peer NODE    node name the server's certificate must carry (default: the host",
    "                 dialled), e.g. when a relay's /net forwards ADDR to NODE",
    "  --certs DIR    credentials directory (default $FERRY_CERTS, else ~/.ferry/certs)",
    "  -D             trace Styx messages on stderr",
  ].join("\n"),
};

const unmountSpec = {
  usage: "ferry unmount HOSTDIR",
  about: "Unmount a Ferry FUSE mount. When files on it are still open the mount is\n" +
    "detached at once and goes away when the last one is closed.",
};

/** Run `ferry mount ADDR HOSTDIR`; resolves with the exit status once the mount is gone. */
export async function run(args: string[]): Promise<number> {
  let m: FuseMount | undefined;
  let stopSignals = () => {};
  try {
    const p = parse(mountSpec, args);
    if (p.help) return 0;
    const [addr, dir] = p.positionals;
    if (addr === undefined || dir === undefined || p.positionals.length > 2) {
      throw new UsageError(`need ADDR and HOSTDIR\nusage: ${mountSpec.usage}`);
    }
    const opts: MountOptions = {};
    for (const o of (p.values.o as string[] | undefined) ?? []) parseMountOptions(o, opts);
    const peer = p.values.peer as string | undefined;
    if (peer !== undefined && p.values.A === true) throw new UsageError(PEER_NEEDS_TLS);
    if (p.values.f !== true) return await background(args, dir);
    const insecure = p.values.A === true;
    const user = (p.values.u as string | undefined) ?? Deno.env.get("USER") ?? "none";
    const st = await Deno.stat(dir).catch(() => null);
    if (!st?.isDirectory) throw new Error(`'${dir}' is not a directory`);
    const dialed = await dialStyx(addr, {
      insecure,
      user,
      aname: p.values.aname as string | undefined,
      alg: p.values.a as string | undefined,
      peer,
      certDir: p.values.certs as string | undefined,
      trace: p.values.D === true,
    });
    if (insecure) warnInsecure("mount");
    try {
      m = await mountTree(dialed.tree, dir, {
        fsname: opts.fsname ?? addr.replace(/[,\s]/g, "_"),
        ...opts,
        caller: { user },
        aname: (p.values.aname as string | undefined) ?? "",
      });
    } catch (e) {
      dialed.close();
      throw e;
    }
    const mount = m;
    let status = 0;
    const onSignal = () => {
      unmountPath(mount.mountpoint).catch(() => mount.close());
    };
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    stopSignals = () => {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    };
    console.log(`mounted ${addr} on ${mount.mountpoint}`);
    dialed.client.closed.then(async () => {
      if (!m) return;
      console.error(`mount: ${addr} hung up: unmounting ${mount.mountpoint}`);
      status = 1;
      // Requests still arriving fail with EIO; then the mount goes away.
      await mount.close();
    });
    await mount.done;
    stopSignals();
    m = undefined;
    dialed.close();
    await dialed.client.closed;
    return status;
  } catch (e) {
    stopSignals();
    if (m) await m.close().catch(() => {});
    return fail("mount", e);
  }
}

/** The permissions a background `ferry mount -f` needs under `deno run`. */
const PERMS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
  "--allow-ffi",
];

/**
 * Start `ferry mount -f ARGS` as a background process and return once it
 * has mounted (its status and errors are this command's).
 */
async function background(args: string[], dir: string): Promise<number> {
  const exe = Deno.execPath();
  const compiled = !/^deno(\.exe)?$/.test(exe.split("/").pop() ?? "");
  const main = new URL("./ferry.ts", import.meta.url).href;
  const child = new Deno.Command(exe, {
    args: compiled ? ["mount", "-f", ...args] : ["run", ...PERMS, main, "mount", "-f", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Its errors are shown until it has mounted; after that nothing of this
  // command's may stay open (a caller waiting for our output would hang).
  const errs = child.stderr.getReader();
  const copying = (async () => {
    for (;;) {
      const { value, done } = await errs.read().catch(() => ({ value: undefined, done: true }));
      if (done || !value) return;
      await Deno.stderr.write(value);
    }
  })();
  const r = child.stdout.getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await r.read();
    if (done) break;
    buf += new TextDecoder().decode(value);
    const line = buf.split("\n").find((l) => l.startsWith("mounted "));
    if (line !== undefined) {
      console.log(`${line} (pid ${child.pid}; 'ferry unmount ${dir}' to undo)`);
      await r.cancel().catch(() => {});
      await errs.cancel().catch(() => {});
      await copying;
      child.unref();
      return 0;
    }
  }
  await copying;
  const st = await child.status;
  return st.code === 0 ? 1 : st.code;
}

/** Run `ferry unmount HOSTDIR`. */
export async function runUnmount(args: string[]): Promise<number> {
  try {
    const p = parse(unmountSpec, args);
    if (p.help) return 0;
    const [dir] = p.positionals;
    if (dir === undefined || p.positionals.length > 1) {
      throw new UsageError(`need HOSTDIR\nusage: ${unmountSpec.usage}`);
    }
    const how = await unmountPath(dir);
    if (how === "detached") {
      console.error(`unmount: '${dir}' is busy: detached; it goes away when its files are closed`);
    }
    return 0;
  } catch (e) {
    return fail("unmount", e);
  }
}
