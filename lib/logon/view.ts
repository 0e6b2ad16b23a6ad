/**
 * The host side of a private logon: the directory tree a logon's command
 * sees, in which every mount point of the user's namespace is a real
 * directory, even where the host has none (`/n/files`, `/usr/alice`).
 *
 * Nothing is created on the host's own file systems. A directory that
 * lacks a needed child (the host's `/` lacks `/n`, its `/usr` lacks
 * `/usr/alice`) is "mirrored" in the logon's private mount namespace: a
 * tmpfs goes over it, every entry of the original is bound back into the
 * tmpfs (directories and files with every mount below them, symbolic links
 * copied), and the missing children are made in the tmpfs. Writes to the
 * original entries still reach the original file systems. Mirroring `/`
 * itself means the command runs chrooted to a mirror of `/` built in the
 * stage directory; every other directory is mirrored where it is.
 *
 * @module
 */

import { detach, makeUnbindable, mountTmpfs, rbind } from "./sys.ts";

/** What {@link planView} decided. */
export interface ViewPlan {
  /** Each mount point (as in the namespace) and where it is on the host (symbolic links resolved). */
  points: { target: string; at: string }[];
  /** Host directories to mirror, with the names each lacks, shallowest first. */
  mirrors: { dir: string; add: string[] }[];
  /** True when `/` is mirrored: the command runs chrooted to the mirror. */
  chroot: boolean;
}

/**
 * Mount points with none of the others above them, without "/": a mount
 * over an outer point already shows everything below it, since it serves
 * that part of the namespace.
 *
 * @example
 * ```ts
 * import { outermost } from "./view.ts";
 * const p = outermost(["/", "/n/gw", "/n/gw/net", "/usr/alice", "/n/gwx"]);
 * if (p.join(" ") !== "/n/gw /n/gwx /usr/alice") throw new Error(p.join(" "));
 * ```
 */
export function outermost(targets: readonly string[]): string[] {
  const sorted = [...new Set(targets)].filter((t) => t !== "/" && t.startsWith("/")).sort();
  const out: string[] = [];
  for (const t of sorted) {
    if (!out.some((o) => t.startsWith(o + "/"))) out.push(t);
  }
  return out;
}

function kind(p: string): "dir" | "other" | "none" {
  try {
    return Deno.statSync(p).isDirectory ? "dir" : "other";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return "none";
    throw e;
  }
}

/**
 * Decide where each of `targets` goes on the host and which host
 * directories must be mirrored to make room for the missing ones. Throws
 * when the host has a file (not a directory) at a mount point. Synchronous,
 * as everything here is: it looks with the calling thread's mounts (see
 * sys.ts's enterPrivateMountNamespace).
 */
export function planView(targets: readonly string[]): ViewPlan {
  const mirrors = new Map<string, Set<string>>();
  const points: ViewPlan["points"] = [];
  for (const target of outermost(targets)) {
    const names = target.split("/").filter((n) => n !== "");
    let cur = "/";
    let i = 0;
    for (; i < names.length; i++) {
      const next = cur === "/" ? `/${names[i]}` : `${cur}/${names[i]}`;
      const k = kind(next);
      if (k === "other") {
        throw new Error(
          `cannot mount '${target}': the host has a file, not a directory, at '${next}'`,
        );
      }
      if (k === "none") {
        let add = mirrors.get(cur);
        if (!add) mirrors.set(cur, add = new Set());
        add.add(names[i]!);
        break;
      }
      cur = Deno.realPathSync(next);
    }
    const rest = names.slice(i);
    points.push({ target, at: rest.length === 0 ? cur : join(cur, rest.join("/")) });
  }
  const dirs = [...mirrors.keys()].sort((a, b) => depth(a) - depth(b) || a.localeCompare(b));
  return {
    points,
    mirrors: dirs.map((dir) => ({ dir, add: [...mirrors.get(dir)!].sort() })),
    chroot: mirrors.has("/"),
  };
}

function depth(p: string): number {
  return p === "/" ? 0 : p.split("/").length - 1;
}

function join(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

/** A view built by {@link buildView}. */
export interface View {
  /** The command's root directory: "/" or the mirror of `/` under the stage. */
  root: string;
  /** Where each mount point is, as this (unchrooted) process reaches it. */
  paths: Map<string, string>;
  /** Detach everything the view mounted and remove the stage directory. */
  close(): void;
}

/**
 * Build `plan` in the calling thread's mount namespace, which must be
 * private (see sys.ts's enterPrivateMountNamespace): the
 * stage directory `stage` (an empty directory) holds a tmpfs with the
 * mirror of `/` when one is needed and the copies mirrors are made from.
 */
export function buildView(plan: ViewPlan, stage: string): View {
  mountTmpfs(stage, 0o700);
  // Recursive binds of the directories above the stage must not bring the
  // stage (with the mirror of `/` in it) along.
  makeUnbindable(stage);
  const close = () => {
    try {
      detach(stage);
    } catch { /* already gone */ }
    try {
      Deno.removeSync(stage);
    } catch { /* already gone */ }
  };
  try {
    const root = plan.chroot ? `${stage}/root` : "";
    let n = 0;
    for (const m of plan.mirrors) {
      const view = root + m.dir;
      const st = Deno.statSync(m.dir);
      if (m.dir === "/") {
        Deno.mkdirSync(view);
        mountTmpfs(view, st.mode! & 0o7777);
        populate(view, "/");
      } else {
        // The original's entries are bound from a copy taken before the
        // tmpfs covers it.
        const copy = `${stage}/orig${n++}`;
        Deno.mkdirSync(copy);
        rbind(m.dir, copy);
        mountTmpfs(view, st.mode! & 0o7777);
        populate(view, copy);
        detach(copy);
        Deno.removeSync(copy);
      }
      Deno.chownSync(view, st.uid, st.gid);
      for (const name of m.add) Deno.mkdirSync(join(view, name), { mode: 0o755 });
    }
    const paths = new Map<string, string>();
    for (const p of plan.points) {
      const at = root + p.at;
      Deno.mkdirSync(at, { recursive: true, mode: 0o755 });
      paths.set(p.target, at);
    }
    return { root: root === "" ? "/" : root, paths, close };
  } catch (e) {
    close();
    throw e;
  }
}

/** Fill the tmpfs at `view` with `from`'s entries. */
function populate(view: string, from: string): void {
  for (const e of Deno.readDirSync(from)) {
    const src = join(from, e.name);
    const dst = join(view, e.name);
    if (e.isSymlink) {
      Deno.symlinkSync(Deno.readLinkSync(src), dst);
    } else if (e.isDirectory) {
      Deno.mkdirSync(dst);
      rbind(src, dst);
    } else {
      Deno.writeFileSync(dst, new Uint8Array());
      rbind(src, dst);
    }
  }
}
