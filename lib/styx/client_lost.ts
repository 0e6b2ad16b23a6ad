/**
 * The errors of a lost connection: {@link HangupError} at the client, and
 * {@link ConnectionLostError} once a node knows the mount point it serves. Kept
 * apart from the client so that a namespace can tell them without loading
 * it.
 *
 * @module
 */

import { Ename, StyxError } from "./types.ts";

/**
 * The error every request fails with once the connection is gone. Its
 * message keeps Plan 9's wording ("i/o on hungup channel"); `address` and
 * `reason` say which server and why, for a caller that names the mount
 * (see {@link ConnectionLostError}).
 */
export class HangupError extends StyxError {
  /** Make the error for the server at `address`, gone because of `reason`. */
  constructor(readonly address: string, readonly reason: string) {
    super(Ename.hungup);
    this.name = "HangupError";
  }
}

/**
 * What an operation on a mount whose server went away fails with:
 * "'/n/files' is no longer connected (tcp!host!port: reason)".
 */
export class ConnectionLostError extends StyxError {
  /**
   * Make the error for the mount `mount` (a path, or the address when the
   * tree is not mounted) whose server at `address` went away for `reason`.
   */
  constructor(readonly mount: string, readonly address: string, readonly reason: string) {
    super(`'${mount}' is no longer connected (${address}: ${reason})`);
    this.name = "ConnectionLostError";
  }
}

/**
 * Where the nodes of one attach are mounted, so that their errors can name
 * the mount point; shared by the attach's root and every node walked from
 * it.
 * @internal
 */
export interface Origin {
  /** The mount point, once the root has been mounted in a namespace. */
  label?: string;
}

/**
 * `e`, or the {@link ConnectionLostError} it means when it is a {@link HangupError}
 * and `origin` knows its mount point.
 * @internal
 */
export function lostAs(e: unknown, origin: Origin | undefined): unknown {
  if (e instanceof HangupError && origin?.label !== undefined) {
    return new ConnectionLostError(origin.label, e.address, e.reason);
  }
  return e;
}
