/**
 * `ferry mount [-A] ADDR HOSTDIR`: mount a Styx tree on a host directory
 * through FUSE (see cmd/fusemount.ts).
 *
 * @module
 */

export { run } from "./fusemount.ts";
