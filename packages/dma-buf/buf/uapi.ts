/**
 * DOC: the dma-buf file's ioctls (include/uapi/linux/dma-buf.h)
 *
 * `dma_buf_ioctl`, with the real command numbers:
 * - `DMA_BUF_IOCTL_SYNC` (0x40086200): `struct dma_buf_sync { u64 flags }`;
 *   bits outside READ|WRITE|END are -EINVAL, no READ/WRITE is -EINVAL;
 *   END calls `dma_buf_end_cpu_access`, START (0) `dma_buf_begin_cpu_access`.
 * - `DMA_BUF_SET_NAME_A` (0x40046201) and `_B` (0x40086201): the name as a
 *   user string of at most 32 bytes including the NUL (`strndup_user`):
 *   longer is -EINVAL, a bad pointer -EFAULT.
 * - `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` (0xC0086202): `{u32 flags; s32 fd}`;
 *   flags must be a non-empty subset of READ|WRITE; the fences a new
 *   access would wait for (`dma_resv_usage_rw(write)`) as one sync_file
 *   (a stub when none), on a fresh O_CLOEXEC fd written back to `fd`.
 * - `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` (0x40086203): same flag rules; the
 *   sync_file's fence (not a sync_file: -EINVAL) is unwrapped and every
 *   leaf is added under the lock with WRITE usage for WRITE, else READ.
 * - anything else: -ENOTTY (also EXPORT/IMPORT when the world variant
 *   `CONFIG_SYNC_FILE` is "n").
 *
 * User memory is modelled by the argument: a `DataView` over the ioctl
 * struct (null is an unmapped pointer: -EFAULT), and for SET_NAME the
 * bytes of the string (a `Uint8Array` or a JS string; null: -EFAULT).
 *
 * Locking: no lock held on entry (the file ops run in process context);
 * IMPORT takes the reservation lock itself.
 *
 * @module
 */
import { type FdTable, filesOf, KernelError } from "@dmalab/kernel";
import { dmaFenceGetStub } from "../fence/dma_fence.ts";
import { dmaFenceUnwrapForEach } from "../fence/dma_fence_unwrap.ts";
import { DmaResvUsage, dmaResvUsageRw } from "../resv/dma_resv.ts";
import type { DmaDataDirection } from "../sg/scatterlist.ts";
import { dmaBufBeginCpuAccess, dmaBufEndCpuAccess } from "./cpu_access.ts";
import { DMA_BUF_NAME_LEN, type DmaBuf, dmaBufIoctlHook } from "./dma_buf.ts";
import { syncFileCreate, syncFileGetFence } from "./sync_file.ts";

/** `DMA_BUF_SYNC_READ`. */
export const DMA_BUF_SYNC_READ = 1;
/** `DMA_BUF_SYNC_WRITE`. */
export const DMA_BUF_SYNC_WRITE = 2;
/** `DMA_BUF_SYNC_RW`. */
export const DMA_BUF_SYNC_RW = 3;
/** `DMA_BUF_SYNC_START`. */
export const DMA_BUF_SYNC_START = 0;
/** `DMA_BUF_SYNC_END`. */
export const DMA_BUF_SYNC_END = 4;
/** `DMA_BUF_SYNC_VALID_FLAGS_MASK`. */
export const DMA_BUF_SYNC_VALID_FLAGS_MASK = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END;
/** `DMA_BUF_BASE` ('b'). */
export const DMA_BUF_BASE = 0x62;

/** `_IOC(dir, type, nr, size)`: dir 1 = write, 2 = read, 3 = both. */
export function ioc(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

/** `DMA_BUF_IOCTL_SYNC` = `_IOW('b', 0, struct dma_buf_sync)`. */
export const DMA_BUF_IOCTL_SYNC: number = ioc(1, DMA_BUF_BASE, 0, 8);
/** `DMA_BUF_SET_NAME_A` = `_IOW('b', 1, __u32)`. */
export const DMA_BUF_SET_NAME_A: number = ioc(1, DMA_BUF_BASE, 1, 4);
/** `DMA_BUF_SET_NAME_B` = `_IOW('b', 1, __u64)`. */
export const DMA_BUF_SET_NAME_B: number = ioc(1, DMA_BUF_BASE, 1, 8);
/** `DMA_BUF_SET_NAME` on 64-bit (= `_B`). */
export const DMA_BUF_SET_NAME: number = DMA_BUF_SET_NAME_B;
/** `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` = `_IOWR('b', 2, struct dma_buf_export_sync_file)`. */
export const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: number = ioc(3, DMA_BUF_BASE, 2, 8);
/** `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` = `_IOW('b', 3, struct dma_buf_import_sync_file)`. */
export const DMA_BUF_IOCTL_IMPORT_SYNC_FILE: number = ioc(1, DMA_BUF_BASE, 3, 8);

function needView(arg: unknown, size: number, what: string): DataView {
  if (!(arg instanceof DataView) || arg.byteLength < size) {
    throw new KernelError("EFAULT", `${what}: copy_from_user failed`);
  }
  return arg;
}

function syncDirection(flags: number): DmaDataDirection {
  switch (flags & DMA_BUF_SYNC_RW) {
    case DMA_BUF_SYNC_READ:
      return "DMA_FROM_DEVICE";
    case DMA_BUF_SYNC_WRITE:
      return "DMA_TO_DEVICE";
    case DMA_BUF_SYNC_RW:
      return "DMA_BIDIRECTIONAL";
    default:
      throw new KernelError("EINVAL", "DMA_BUF_IOCTL_SYNC: neither READ nor WRITE");
  }
}

/** `strndup_user(arg, DMA_BUF_NAME_LEN)` + `dma_buf_set_name`. */
function setName(dmabuf: DmaBuf, arg: unknown): number {
  let bytes: Uint8Array;
  if (typeof arg === "string") bytes = new TextEncoder().encode(arg + "\0");
  else if (arg instanceof Uint8Array) bytes = arg;
  else throw new KernelError("EFAULT", "DMA_BUF_SET_NAME: bad user pointer (strndup_user)");
  const nul = bytes.subarray(0, DMA_BUF_NAME_LEN).indexOf(0);
  if (nul < 0) {
    if (bytes.length < DMA_BUF_NAME_LEN) {
      throw new KernelError("EFAULT", "DMA_BUF_SET_NAME: string runs off the user mapping");
    }
    throw new KernelError(
      "EINVAL",
      `DMA_BUF_SET_NAME: name longer than ${DMA_BUF_NAME_LEN - 1} bytes`,
    );
  }
  dmabuf.setNameRaw(new TextDecoder().decode(bytes.subarray(0, nul)));
  return 0;
}

function syncFileFlags(flags: number, what: string): void {
  if (flags & ~DMA_BUF_SYNC_RW) {
    throw new KernelError("EINVAL", `${what}: unknown flags 0x${flags.toString(16)}`);
  }
  if ((flags & DMA_BUF_SYNC_RW) === 0) {
    throw new KernelError("EINVAL", `${what}: neither READ nor WRITE`);
  }
}

/** `dma_buf_export_sync_file`. */
function exportSyncFile(dmabuf: DmaBuf, arg: unknown, files: FdTable): number {
  const view = needView(arg, 8, "DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
  const flags = view.getUint32(0, true);
  syncFileFlags(flags, "DMA_BUF_IOCTL_EXPORT_SYNC_FILE");
  const fd = files.getUnusedFd(0o2000000);
  try {
    const usage = dmaResvUsageRw((flags & DMA_BUF_SYNC_WRITE) !== 0);
    const fence = dmabuf.resv.getSingleton(usage) ?? dmaFenceGetStub(dmabuf.world);
    const sf = syncFileCreate(dmabuf.world, fence);
    fence.put();
    view.setInt32(4, fd, true);
    files.install(fd, sf.file);
    return 0;
  } catch (e) {
    files.putUnusedFd(fd);
    throw e;
  }
}

/** `dma_buf_import_sync_file`. */
async function importSyncFile(dmabuf: DmaBuf, arg: unknown, files: FdTable): Promise<number> {
  const view = needView(arg, 8, "DMA_BUF_IOCTL_IMPORT_SYNC_FILE");
  const flags = view.getUint32(0, true);
  syncFileFlags(flags, "DMA_BUF_IOCTL_IMPORT_SYNC_FILE");
  const fence = syncFileGetFence(dmabuf.world, view.getInt32(4, true), files);
  if (!fence) {
    throw new KernelError("EINVAL", "DMA_BUF_IOCTL_IMPORT_SYNC_FILE: fd is not a sync_file");
  }
  try {
    const usage = flags & DMA_BUF_SYNC_WRITE ? DmaResvUsage.WRITE : DmaResvUsage.READ;
    const leaves = [...dmaFenceUnwrapForEach(fence)];
    if (leaves.length > 0) {
      await dmabuf.resv.lock(null);
      try {
        const r = dmabuf.resv.reserveFences(leaves.length);
        if (r < 0) {
          throw new KernelError(
            "ENOMEM",
            "DMA_BUF_IOCTL_IMPORT_SYNC_FILE: dma_resv_reserve_fences",
          );
        }
        for (const f of leaves) dmabuf.resv.addFence(f, usage);
      } finally {
        dmabuf.resv.unlock();
      }
    }
    return 0;
  } finally {
    fence.put();
  }
}

/**
 * `dma_buf_ioctl(file, cmd, arg)` for `dmabuf`, with fds allocated in
 * `files` (default `current->files`).
 */
export async function dmaBufIoctl(
  dmabuf: DmaBuf,
  cmd: number,
  arg: unknown,
  files: FdTable = filesOf(dmabuf.world),
): Promise<number> {
  switch (cmd >>> 0) {
    case DMA_BUF_IOCTL_SYNC: {
      const view = needView(arg, 8, "DMA_BUF_IOCTL_SYNC");
      const raw = view.getBigUint64(0, true);
      if (raw & ~BigInt(DMA_BUF_SYNC_VALID_FLAGS_MASK)) {
        throw new KernelError("EINVAL", `DMA_BUF_IOCTL_SYNC: invalid flags 0x${raw.toString(16)}`);
      }
      const flags = Number(raw);
      const dir = syncDirection(flags);
      return flags & DMA_BUF_SYNC_END
        ? await dmaBufEndCpuAccess(dmabuf, dir)
        : await dmaBufBeginCpuAccess(dmabuf, dir);
    }
    case DMA_BUF_SET_NAME_A:
    case DMA_BUF_SET_NAME_B:
      return setName(dmabuf, arg);
    case DMA_BUF_IOCTL_EXPORT_SYNC_FILE:
      if (!syncFileBuilt(dmabuf)) break;
      return exportSyncFile(dmabuf, arg, files);
    case DMA_BUF_IOCTL_IMPORT_SYNC_FILE:
      if (!syncFileBuilt(dmabuf)) break;
      return await importSyncFile(dmabuf, arg, files);
  }
  throw new KernelError("ENOTTY", `dma_buf_ioctl: unknown command 0x${(cmd >>> 0).toString(16)}`);
}

/** `IS_ENABLED(CONFIG_SYNC_FILE)`: world variant `CONFIG_SYNC_FILE` ("y" by default). */
function syncFileBuilt(dmabuf: DmaBuf): boolean {
  return dmabuf.world.variant("CONFIG_SYNC_FILE", "y") === "y";
}

dmaBufIoctlHook.fn = (dmabuf, cmd, arg) => dmaBufIoctl(dmabuf, cmd, arg);

/** A `DataView` holding `struct dma_buf_sync { flags }`. */
export function dmaBufSyncArg(flags: number | bigint): DataView {
  const v = new DataView(new ArrayBuffer(8));
  v.setBigUint64(0, BigInt(flags), true);
  return v;
}

/** A `DataView` holding `struct dma_buf_{export,import}_sync_file { flags, fd }`. */
export function dmaBufSyncFileArg(flags: number, fd = -1): DataView {
  const v = new DataView(new ArrayBuffer(8));
  v.setUint32(0, flags >>> 0, true);
  v.setInt32(4, fd, true);
  return v;
}
