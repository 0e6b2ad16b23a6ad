/**
 * An open file that passes everything through to another, except that its
 * directory entries go through a function first: how a view filters names
 * or normalises entries without a wrapper class of its own.
 *
 * @module
 */

import type { Dir, Qid } from "../styx/types.ts";
import type { OpenFile, OpOptions } from "./tree.ts";

/**
 * `inner` with `map` applied to what `readDir` returns.
 *
 * @example
 * ```ts ignore
 * const visible = new DirMappedFile(file, (ds) => ds.filter((d) => !d.name.startsWith(".")));
 * ```
 */
export class DirMappedFile implements OpenFile {
  constructor(readonly inner: OpenFile, readonly map: (dirs: Dir[]) => Dir[]) {}
  get qid(): Qid {
    return this.inner.qid;
  }
  get iounit(): number {
    return this.inner.iounit;
  }
  read(offset: bigint, count: number, opts?: OpOptions): Promise<Uint8Array> {
    return this.inner.read(offset, count, opts);
  }
  write(offset: bigint, data: Uint8Array, opts?: OpOptions): Promise<number> {
    return this.inner.write(offset, data, opts);
  }
  async readDir(opts?: OpOptions): Promise<Dir[]> {
    return this.map(await this.inner.readDir(opts));
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
