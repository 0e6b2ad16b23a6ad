/**
 * The C library through Deno's FFI, for the few calls Deno does not offer
 * (mount(2), openat2(2), /dev/fuse): how to open it, read errno and pass a
 * string. Each user declares the symbols it needs and keeps its own handle.
 * Needs --allow-ffi; Linux only.
 *
 * @module
 */

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
    try {
      return Deno.dlopen(name, symbols).symbols;
    } catch (e) {
      last = e;
    }
  }
  throw new Error(`Cannot load the C library for ${purpose}: ${(last as Error).message}`);
}

/**
 * The calling thread's errno, read right after a failed call through the
 * library's `__errno_location`.
 */
export function errnoVia(errnoLocation: () => Deno.PointerValue): number {
  const p = errnoLocation();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
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
