/**
 * Timers that cost a one-shot command nothing to start: Deno's global
 * setTimeout loads Node's timers on first use, about 5 ms of start-up,
 * which a command that only needs a deadline on a dial need not pay.
 * These wait with Atomics.waitAsync instead. Like an unref'd timer, a
 * pending one does not keep the process alive.
 *
 * @example
 * ```ts
 * import { after } from "./deadline.ts";
 * let fired = false;
 * const cancel = after(1, () => (fired = true));
 * // Something else keeps the process alive meanwhile: here a plain timer.
 * await new Promise((r) => setTimeout(r, 20));
 * if (!fired) throw new Error("did not fire");
 * cancel(); // after it fired: nothing happens
 * let early = false;
 * after(5, () => (early = true))();
 * await new Promise((r) => setTimeout(r, 20));
 * if (early) throw new Error("fired though cancelled");
 * ```
 *
 * @module
 */

/** Call `f` once after `ms` milliseconds; the returned function cancels it. */
export function after(ms: number, f: () => void): () => void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  let live = true;
  const w = Atomics.waitAsync(cell, 0, 0, Math.max(0, ms));
  const fire = () => {
    if (!live) return;
    live = false;
    f();
  };
  if (w.async) w.value.then((v) => v === "timed-out" && fire());
  else queueMicrotask(fire);
  return () => {
    if (!live) return;
    live = false;
    Atomics.notify(cell, 0);
  };
}

/** Call `f` every `ms` milliseconds until the returned function is called. */
export function every(ms: number, f: () => void): () => void {
  // Re-armed before `f` runs, so stopping from within `f` cancels the next.
  let cancel = () => {};
  const arm = () => {
    cancel = after(ms, () => {
      arm();
      f();
    });
  };
  arm();
  return () => cancel();
}
