/**
 * The C library through Deno's FFI, for the few calls Deno does not offer
 * (mount(2), openat2(2), /dev/fuse): how to open it, read errno and pass a
 * string. Each user declares the symbols it needs and keeps its own handle.
 * Needs --allow-ffi; Linux only.
 *
 * @module
 */

/** Each library handle's view of errno (see {@link errnoVia}). */
const errnoViews = new WeakMap<() => Deno.PointerValue, Deno.UnsafePointerView>();

/** Where the C library is, tried in turn. */
const LIBC_NAMES = ["libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"];

/**
 * Open the C library with `symbols`. Throws an Error naming `purpose` and
 * the loader's last complaint when no name loads.
 */
export function openLibc<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
  purpose: string,
): Deno.DynamicLibrary<S>["symbols"] {
  let last: unknown;
  for (const name of LIBC_NAMES) {
    let lib: Deno.DynamicLibrary<S>["symbols"];
    try {
      lib = Deno.dlopen(name, symbols).symbols;
    } catch (e) {
      last = e;
      continue;
    }
    const where = (lib as { __errno_location?: unknown }).__errno_location;
    if (typeof where === "function") errnoVia(where as () => Deno.PointerValue);
    return lib;
  }
  throw new Error(`Cannot load the C library for ${purpose}: ${(last as Error).message}`);
}

/**
 * The calling thread's errno, read right after a failed call through the
 * library's `__errno_location`.
 *
 * The view of errno is made once per library handle (so per thread: a
 * worker opens its own) and kept, and openLibc makes it when it opens the
 * library: making it after a failed call allocates, an allocation can
 * start a garbage collection, and the collector's own waits set errno, so
 * the value read would be the collector's, not the call's.
 */
export function errnoVia(errnoLocation: () => Deno.PointerValue): number {
  let view = errnoViews.get(errnoLocation);
  if (view === undefined) {
    const p = errnoLocation();
    if (p === null) return 0;
    view = new Deno.UnsafePointerView(p);
    errnoViews.set(errnoLocation, view);
  }
  return view.getInt32();
}

const enc = new TextEncoder();

/**
 * A NUL-terminated UTF-8 copy of `s`, as C takes a string.
 *
 * @example
 * ```ts
 * import { cstr } from "./libc.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...cstr("ab")], [0x61, 0x62, 0]);
 * ```
 */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(s.length * 3 + 1);
  const { written } = enc.encodeInto(s, out);
  return out.subarray(0, written + 1);
}

const textSymbols = { strerror: { parameters: ["i32"], result: "pointer" } } as const;
let textLib: Deno.DynamicLibrary<typeof textSymbols>["symbols"] | undefined;

/** The C library's text for errno `err` (e.g. "Device or resource busy"). */
export function strerror(err: number): string {
  textLib ??= openLibc(textSymbols, "error messages");
  const p = textLib.strerror(err);
  return p === null ? `errno ${err}` : Deno.UnsafePointerView.getCString(p);
}
