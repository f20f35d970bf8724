/**
 * DOC: sync_file
 *
 * drivers/dma-buf/sync_file.c: a file (anon inode "sync_file") that carries
 * one fence to user space. `sync_file_create` takes a fence reference;
 * `sync_file_get_fence(fd)` returns a new reference, or null when `fd` is
 * not a sync_file; the last close drops the fence. poll(2) reports EPOLLIN
 * once the fence signalled.
 *
 * Locking: none beyond the fence's own.
 *
 * @module
 */
import {
  anonInodeGetfile,
  EPOLLIN,
  type FdTable,
  type File,
  filesOf,
  type Kernel,
  O_RDONLY,
} from "@dmalab/kernel";
import type { DmaFence } from "../fence/dma_fence.ts";

/** `struct sync_file`. */
export class SyncFile {
  /** `file`. */
  readonly file: File;
  /** `fence`. */
  readonly fence: DmaFence;

  /** Use {@linkcode syncFileCreate}. */
  constructor(file: File, fence: DmaFence) {
    this.file = file;
    this.fence = fence;
  }
}

const SYNC_FILE_FOPS = {
  owner: "sync_file",
  release: (file: File) => (file.privateData as SyncFile).fence.put(),
  poll: (file: File) => ((file.privateData as SyncFile).fence.isSignaled() ? EPOLLIN : 0),
};

/**
 * `sync_file_create(fence)`: a new sync_file holding its own reference on
 * `fence` (the caller keeps its own).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaFenceGetStub, syncFileCreate, syncFileGetFence } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const stub = dmaFenceGetStub(world);
 * const sf = syncFileCreate(world, stub);
 * stub.put();
 * const fd = sf.file.world === world ? 3 : -1;
 * fd; // 3
 * ```
 */
export function syncFileCreate(world: Kernel, fence: DmaFence): SyncFile {
  const file = anonInodeGetfile(world, "sync_file", SYNC_FILE_FOPS, null, O_RDONLY);
  const sf = new SyncFile(file, fence.get());
  file.privateData = sf;
  return sf;
}

/** `sync_file_fdget` + fence: the sync_file behind `fd`, or null (not open or not a sync_file). */
export function syncFileFromFd(
  world: Kernel,
  fd: number,
  files: FdTable = filesOf(world),
): SyncFile | null {
  if (!files.isOpen(fd)) return null;
  const file = files.lookup(fd);
  return file.fOp === SYNC_FILE_FOPS ? (file.privateData as SyncFile) : null;
}

/** `sync_file_get_fence(fd)`: a new reference on the fence, or null. */
export function syncFileGetFence(
  world: Kernel,
  fd: number,
  files: FdTable = filesOf(world),
): DmaFence | null {
  return syncFileFromFd(world, fd, files)?.fence.get() ?? null;
}
