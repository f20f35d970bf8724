/**
 * DOC: dma-heap core (drivers/dma-buf/dma-heap.c, include/uapi/linux/dma-heap.h)
 *
 * Each heap is a character device `/dev/dma_heap/<name>`. Its one ioctl,
 * `DMA_HEAP_IOCTL_ALLOC` (0xC0184800), allocates a dma-buf and returns it
 * as an fd. Only `_IOC_NR(cmd)` selects the command (number 1 and above is
 * -EINVAL, not -ENOTTY) and the struct size may differ from the kernel's:
 * a shorter (older) struct is zero-extended, a longer (newer) one is read
 * only as far as the kernel knows it (`dma_heap_ioctl` size handling). The
 * struct is copied back even when ALLOC failed, and a failing copy-back
 * makes the result -EFAULT.
 *
 * ALLOC rules, in the kernel's order: the `fd` field must be 0, `fd_flags`
 * only O_CLOEXEC | O_ACCMODE, `heap_flags` none (all -EINVAL); the length
 * is page aligned and 0 is -EINVAL; the heap's `allocate` errors propagate;
 * `dma_buf_fd` failing puts the buffer.
 *
 * `dma_heap_add`: -EINVAL for an empty name or missing `allocate`; then
 * -EBUSY when the 128 minors are used up (`xa_alloc`), and only then
 * -EINVAL for a name already taken.
 *
 * Locking: `heap_list_lock` (a mutex in the kernel) protects the heap
 * list; heap list updates are atomic here. The ioctl runs without locks.
 *
 * @module
 */
import {
  type FdTable,
  File,
  filesOf,
  Inode,
  type Kernel,
  KernelError,
  O_ACCMODE,
  O_CLOEXEC,
  O_RDWR,
} from "@dmalab/kernel";
import type { DmaBuf } from "../buf/dma_buf.ts";
import { ioc } from "../buf/uapi.ts";

/** `DMA_HEAP_IOC_MAGIC` ('H'). */
export const DMA_HEAP_IOC_MAGIC = 0x48;
/** `sizeof(struct dma_heap_allocation_data)`. */
export const DMA_HEAP_ALLOCATION_DATA_SIZE = 24;
/** `DMA_HEAP_IOCTL_ALLOC` = `_IOWR('H', 0, struct dma_heap_allocation_data)`. */
export const DMA_HEAP_IOCTL_ALLOC: number = ioc(
  3,
  DMA_HEAP_IOC_MAGIC,
  0,
  DMA_HEAP_ALLOCATION_DATA_SIZE,
);
/** `DMA_HEAP_VALID_FD_FLAGS`. */
export const DMA_HEAP_VALID_FD_FLAGS: number = O_CLOEXEC | O_ACCMODE;
/** `DMA_HEAP_VALID_HEAP_FLAGS`. */
export const DMA_HEAP_VALID_HEAP_FLAGS = 0;
/** `NUM_HEAP_MINORS`. */
export const NUM_HEAP_MINORS = 128;
const PAGE_SIZE = 4096;

/** `struct dma_heap_ops`. */
export interface DmaHeapOps {
  /** `allocate(heap, len, fd_flags, heap_flags)`: a new dma-buf (one reference) or throws. */
  allocate(
    heap: DmaHeap,
    len: number,
    fdFlags: number,
    heapFlags: bigint,
  ): DmaBuf | Promise<DmaBuf>;
}

/** `struct dma_heap_export_info`. */
export interface DmaHeapExportInfo {
  /** `name`. */
  readonly name: string;
  /** `ops`. */
  readonly ops: DmaHeapOps | null;
  /** `priv`. */
  readonly priv?: unknown;
}

/** `struct dma_heap`. */
export class DmaHeap {
  /** `name`. */
  readonly name: string;
  /** `ops`. */
  readonly ops: DmaHeapOps;
  /** `priv`. */
  readonly priv: unknown;
  /** The char device minor. */
  readonly minor: number;
  /** The world. */
  readonly world: Kernel;

  /** Use {@linkcode dmaHeapAdd}. */
  constructor(world: Kernel, info: DmaHeapExportInfo, ops: DmaHeapOps, minor: number) {
    this.world = world;
    this.name = info.name;
    this.ops = ops;
    this.priv = info.priv ?? null;
    this.minor = minor;
  }

  /** `/dev/dma_heap/<name>`. */
  get devPath(): string {
    return `/dev/dma_heap/${this.name}`;
  }

  /** `dma_heap_get_name`. */
  getName(): string {
    return this.name;
  }

  /** `dma_heap_get_drvdata`. */
  getDrvdata(): unknown {
    return this.priv;
  }
}

class HeapState {
  readonly heaps: DmaHeap[] = [];
}

/** The heaps registered in `world`, in registration order. */
export function dmaHeaps(world: Kernel): readonly DmaHeap[] {
  return world.ext("dma-buf.heaps", () => new HeapState()).heaps;
}

/** `dma_heap_add(exp_info)`. */
export function dmaHeapAdd(world: Kernel, info: DmaHeapExportInfo): DmaHeap {
  if (!info.name || info.name.length === 0) {
    throw new KernelError("EINVAL", "dma_heap_add: missing heap name");
  }
  if (!info.ops?.allocate) throw new KernelError("EINVAL", "dma_heap_add: missing allocate op");
  const st = world.ext("dma-buf.heaps", () => new HeapState());
  // the minor is allocated (xa_alloc: -EBUSY when all are taken) before the
  // name is checked for uniqueness under heap_list_lock
  if (st.heaps.length >= NUM_HEAP_MINORS) {
    throw new KernelError("EBUSY", "dma_heap_add: no free minor (xa_alloc)");
  }
  if (st.heaps.some((h) => h.name === info.name)) {
    throw new KernelError("EINVAL", `dma_heap_add: heap ${info.name} already exists`);
  }
  const heap = new DmaHeap(world, info, info.ops, st.heaps.length);
  st.heaps.push(heap);
  return heap;
}

/** Finds a heap by name, or null. */
export function dmaHeapFind(world: Kernel, name: string): DmaHeap | null {
  return dmaHeaps(world).find((h) => h.name === name) ?? null;
}

/**
 * `dma_heap_buffer_alloc` + `dma_buf_fd`: the in-kernel path behind ALLOC
 * once the struct was validated. Returns the new fd.
 */
export async function dmaHeapBufferAlloc(
  heap: DmaHeap,
  len: number,
  fdFlags: number,
  heapFlags: bigint,
  files: FdTable = filesOf(heap.world),
): Promise<number> {
  len = Math.ceil(len / PAGE_SIZE) * PAGE_SIZE;
  if (len === 0) throw new KernelError("EINVAL", `${heap.devPath}: zero length allocation`);
  const dmabuf = await heap.ops.allocate(heap, len, fdFlags, heapFlags);
  try {
    return dmabuf.fd(fdFlags, files);
  } catch (e) {
    dmabuf.put();
    throw e;
  }
}

/** `dma_heap_ioctl_allocate` on the kernel's zero-extended copy. */
async function ioctlAllocate(heap: DmaHeap, k: DataView, files: FdTable): Promise<number> {
  const rawLen = k.getBigUint64(0, true);
  const fd = k.getUint32(8, true);
  const fdFlags = k.getUint32(12, true);
  const heapFlags = k.getBigUint64(16, true);
  if (fd !== 0) {
    throw new KernelError("EINVAL", `${heap.devPath}: DMA_HEAP_IOCTL_ALLOC fd field must be 0`);
  }
  if (fdFlags & ~DMA_HEAP_VALID_FD_FLAGS) {
    throw new KernelError("EINVAL", `${heap.devPath}: invalid fd_flags 0x${fdFlags.toString(16)}`);
  }
  if (heapFlags & ~BigInt(DMA_HEAP_VALID_HEAP_FLAGS)) {
    throw new KernelError(
      "EINVAL",
      `${heap.devPath}: invalid heap_flags 0x${heapFlags.toString(16)}`,
    );
  }
  // PAGE_ALIGN on a 64-bit size_t wraps to 0 for the last page of the range (-EINVAL below)
  const len = rawLen > (1n << 64n) - BigInt(PAGE_SIZE) ? 0 : Number(rawLen);
  const nfd = await dmaHeapBufferAlloc(heap, len, fdFlags, heapFlags, files);
  k.setUint32(8, nfd, true);
  return 0;
}

const IOC_IN = 1 << 30;
const IOC_OUT = 2 << 30;

/**
 * `dma_heap_ioctl(file, ucmd, arg)`: `arg` is the user struct (a
 * `DataView`; null for a bad pointer).
 */
export async function dmaHeapIoctl(
  heap: DmaHeap,
  ucmd: number,
  arg: DataView | null,
  files: FdTable,
): Promise<number> {
  ucmd >>>= 0;
  const nr = ucmd & 0xff;
  if (nr >= 1) throw new KernelError("EINVAL", `${heap.devPath}: unknown ioctl nr ${nr}`);
  const kcmd = DMA_HEAP_IOCTL_ALLOC;
  const kcmdSize = (kcmd >>> 16) & 0x3fff;
  let outSize = (ucmd >>> 16) & 0x3fff;
  let inSize = outSize;
  if (((ucmd & kcmd) & IOC_IN) === 0) inSize = 0;
  if (((ucmd & kcmd) & IOC_OUT) >>> 0 === 0) outSize = 0;
  const ksize = Math.max(inSize, outSize, kcmdSize);
  const kdata = new DataView(new ArrayBuffer(ksize));
  if (inSize) {
    if (!arg || arg.byteLength < inSize) {
      throw new KernelError("EFAULT", `${heap.devPath}: copy_from_user`);
    }
    new Uint8Array(kdata.buffer).set(new Uint8Array(arg.buffer, arg.byteOffset, inSize));
  }
  // the kernel copies the struct back whether or not the command failed; a
  // failing copy_to_user turns any result into -EFAULT
  let failure: unknown = null;
  let ret = 0;
  try {
    ret = await ioctlAllocate(heap, kdata, files);
  } catch (e) {
    failure = e;
  }
  if (outSize) {
    if (!arg || arg.byteLength < outSize) {
      throw new KernelError("EFAULT", `${heap.devPath}: copy_to_user`);
    }
    new Uint8Array(arg.buffer, arg.byteOffset, outSize).set(
      new Uint8Array(kdata.buffer, 0, outSize),
    );
  }
  if (failure !== null) throw failure;
  return ret;
}

/**
 * `open("/dev/dma_heap/<name>", O_RDONLY | O_CLOEXEC)`: an fd whose ioctl is
 * {@linkcode dmaHeapIoctl}; -ENODEV for an unknown heap.
 *
 * @example
 * ```ts
 * import { filesOf, Kernel, O_CLOEXEC, O_RDWR } from "@dmalab/kernel";
 * import { dmaHeapAllocArg, DMA_HEAP_IOCTL_ALLOC, dmaHeapOpen, dmaHeapSystemInit } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * dmaHeapSystemInit(world);
 * const files = filesOf(world);
 * await world.runTask("app", async () => {
 *   const heapFd = dmaHeapOpen(world, "system", O_RDWR);
 *   const arg = dmaHeapAllocArg(1 << 20, O_RDWR | O_CLOEXEC);
 *   await files.lookup(heapFd).ioctl(DMA_HEAP_IOCTL_ALLOC, arg);
 *   arg.getUint32(8, true); // the new dma-buf fd
 * });
 * ```
 */
export function dmaHeapOpen(
  world: Kernel,
  name: string,
  flags: number,
  files: FdTable = filesOf(world),
): number {
  const heap = dmaHeapFind(world, name);
  if (!heap) throw new KernelError("ENODEV", `open /dev/dma_heap/${name}: no such heap`);
  const file = new File(world, new Inode(world.nextId(), "chr"), {
    owner: "dma-heap",
    ioctl: (_f, cmd, arg) => dmaHeapIoctl(heap, cmd, arg as DataView | null, files),
  }, { flags: flags & ~O_CLOEXEC, path: heap.devPath, privateData: heap });
  try {
    return files.installNew(file, flags);
  } catch (e) {
    file.put();
    throw e;
  }
}

/** A `struct dma_heap_allocation_data` in user memory (24 bytes, or `size` for compat tests). */
export function dmaHeapAllocArg(
  len: number,
  fdFlags: number = O_RDWR | O_CLOEXEC,
  heapFlags = 0n,
  size = 24,
): DataView {
  const v = new DataView(new ArrayBuffer(size));
  v.setBigUint64(0, BigInt(len), true);
  v.setUint32(12, fdFlags >>> 0, true);
  if (size >= 24) v.setBigUint64(16, heapFlags, true);
  return v;
}
