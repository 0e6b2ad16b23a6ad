/**
 * `ferry unmount HOSTDIR`: undo `ferry mount` (see cmd/fusemount.ts).
 *
 * @module
 */

export { runUnmount as run } from "./fusemount.ts";
