/**
 * DOC: anonymous and pseudo-filesystem inodes
 *
 * fs/anon_inodes.c gives every `anon_inode_getfile` file the one shared
 * anon inode; subsystems with their own pseudo filesystem (dma-buf's
 * "dmabuf", sync_file's anon files) allocate an inode per object with a
 * per-filesystem number (`get_next_ino` / dma-buf's 64-bit counter).
 *
 * Locking: none; allocation is atomic.
 *
 * @module
 */
import type { Kernel } from "../world.ts";
import { File, type FileOperations, Inode, O_ACCMODE, O_NONBLOCK } from "./file.ts";

class AnonState {
  readonly anon: Inode;
  readonly counters = new Map<string, number>();
  constructor(world: Kernel) {
    this.anon = new Inode(world.nextId(), "anon");
  }
}

/**
 * `anon_inode_getfile(name, fops, priv, flags)`: a file on the shared anon
 * inode; `f_flags` keeps `O_ACCMODE | O_NONBLOCK` of `flags`.
 *
 * @example
 * ```ts
 * import { anonInodeGetfile, Kernel, O_RDWR } from "@dmalab/kernel";
 * const world = new Kernel();
 * const f = anonInodeGetfile(world, "sync_file", {}, null, O_RDWR);
 * f.path; // "anon_inode:sync_file"
 * ```
 */
export function anonInodeGetfile(
  world: Kernel,
  name: string,
  fops: FileOperations,
  priv: unknown,
  flags: number,
): File {
  const st = world.ext("kernel.fs.anon", () => new AnonState(world));
  return new File(world, st.anon, fops, {
    flags: flags & (O_ACCMODE | O_NONBLOCK),
    privateData: priv,
    path: `anon_inode:${name}`,
  });
}

/** A fresh inode of pseudo filesystem `fs` with the next number of that filesystem (first is 1). */
export function pseudoFsInode(world: Kernel, fs: string, size = 0): Inode {
  const st = world.ext("kernel.fs.anon", () => new AnonState(world));
  const ino = (st.counters.get(fs) ?? 0) + 1;
  st.counters.set(fs, ino);
  return new Inode(ino, "anon", size);
}
