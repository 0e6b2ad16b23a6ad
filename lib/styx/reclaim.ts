/**
 * Giving memory back to the system once clients have left.
 *
 * V8 keeps its heap at its high-water mark until a full collection runs,
 * and an idle server may not run one for a long time: after 1,000 clients
 * came and went four times, a server's RSS had doubled although its live
 * heap was back where it started. So once a number of sessions have ended,
 * or the last one has, and after a short pause for the rest of a departing
 * crowd, the server runs one full collection and empties its buffer pools;
 * V8 then returns the freed pages, and glibc is asked to return what the
 * collection freed outside V8's heap.
 *
 * @module
 */

import { openLibc } from "../libc.ts";

/** Sessions that must have ended since the last collection before another runs. */
const MIN_ENDED = 16;
/** How long after that the collection runs, so that one runs per departing crowd. */
const PAUSE_MS = 2000;

let ended = 0;
let live = 0;
let timer: ReturnType<typeof setTimeout> | undefined;
/** The full collection; null once found unavailable. */
let collect: (() => void) | null | undefined;
const trimmers = new Set<() => void>();

/**
 * Call `trim` whenever memory is reclaimed, to let go of what it keeps for
 * reuse (buffer pools).
 * @internal
 */
export function onReclaim(trim: () => void): void {
  trimmers.add(trim);
}

/**
 * Note that a session has started.
 * @internal
 */
export function sessionStarted(): void {
  live++;
}

/**
 * Note that a session (one {@link sessionStarted} counted) has ended; after
 * enough have, or the last one has, memory is reclaimed a moment later. The
 * pending reclaim never keeps the process alive.
 * @internal
 */
export function sessionEnded(): void {
  ended++;
  live = Math.max(0, live - 1);
  if ((ended < MIN_ENDED && live > 0) || timer !== undefined) return;
  const t = setTimeout(() => void reclaim(), PAUSE_MS);
  Deno.unrefTimer(t as unknown as number);
  timer = t;
}

/** Empty the pools and run a full collection now (when the runtime allows one). */
export async function reclaim(): Promise<void> {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  ended = 0;
  for (const trim of trimmers) trim();
  if (collect === undefined) collect = await findCollector();
  collect?.();
  if (mallocTrim === undefined) mallocTrim = findMallocTrim();
  mallocTrim?.();
}

/** glibc's malloc_trim; null once found unavailable. */
let mallocTrim: (() => void) | null | undefined;

/**
 * What the collection freed outside V8's heap (TLS sessions, socket
 * state) sits in the C allocator's free lists, which glibc returns to the
 * system only when asked. Where FFI is allowed and the C library is glibc,
 * ask it.
 */
function findMallocTrim(): (() => void) | null {
  try {
    if (Deno.build.os !== "linux") return null;
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    const libc = openLibc(
      { malloc_trim: { parameters: ["usize"], result: "i32" } },
      "giving memory back",
    );
    return () => void libc.malloc_trim(0n);
  } catch {
    return null;
  }
}

/**
 * V8's `gc`, exposed to a new context: the only way to ask for a full
 * collection without starting the runtime with a flag.
 */
async function findCollector(): Promise<(() => void) | null> {
  try {
    const { default: v8 } = await import("node:v8");
    const { default: vm } = await import("node:vm");
    v8.setFlagsFromString("--expose-gc");
    const gc: unknown = vm.runInNewContext("gc");
    return typeof gc === "function" ? () => gc() : null;
  } catch {
    return null;
  }
}
