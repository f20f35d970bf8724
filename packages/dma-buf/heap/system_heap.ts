/**
 * DOC: the system heap (drivers/dma-buf/heaps/system_heap.c)
 *
 * Heap "system": zeroed pages from the page allocator, as large as
 * possible first (orders 8, 4, 0: 1 MiB, 64 KiB, 4 KiB; the high orders
 * without reclaim, so they simply fail over), never going back up to a
 * larger order once one failed. A pending fatal signal aborts with -EINTR;
 * running out is -ENOMEM (everything allocated so far is freed). The
 * buffer is exported with `exp_name` "system", the fd flags as file
 * flags, and its own reservation object.
 *
 * It is a static exporter (no pin): per attachment it keeps a private copy
 * of the page table (attach, -ENOMEM) that `map_dma_buf` maps with
 * `dma_map_sgtable` for the attached device and `unmap_dma_buf` unmaps.
 * CPU access syncs every mapped attachment (begin: for the CPU, end: for
 * the device); `mmap` remaps the pages from `vm_pgoff` on; `vmap` maps the
 * pages into the kernel (counted under the buffer mutex); `release` frees
 * the pages. pfn mechanisms: none (it gives out DMA addresses only).
 *
 * Locking: `buffer->lock` (a mutex) protects the attachment list and the
 * vmap count; `map`/`unmap`/`vmap`/`vunmap` run with the reservation lock
 * held (taken by the core), the other ops without.
 *
 * @module
 */
import {
  type Device,
  type Kernel,
  KernelError,
  Mutex,
  O_ACCMODE,
  type Page,
  remapPfnRange,
  type Vma,
} from "@dmalab/kernel";
import { type DmaBuf, dmaBufExport } from "../buf/dma_buf.ts";
import { IosysMap } from "../buf/iosys_map.ts";
import type { DmaBufOps } from "../buf/ops.ts";
import type { DmaBufAttachment } from "../buf/attachment.ts";
import {
  dmaMapSgtable,
  dmaSyncSgtableForCpu,
  dmaSyncSgtableForDevice,
  dmaUnmapSgtable,
} from "../sg/dma_map.ts";
import { type DmaDataDirection, Scatterlist, SgTable } from "../sg/scatterlist.ts";
import { type DmaHeap, dmaHeapAdd, dmaHeapFind } from "./dma_heap.ts";

const PAGE_SIZE = 4096;
/** Allocation orders tried, largest first (`orders[]`). */
export const SYSTEM_HEAP_ORDERS: readonly number[] = [8, 4, 0];

/** `struct dma_heap_attachment`: the per-attachment copy of the page table. */
export interface SystemHeapAttachment {
  /** `dev`. */
  readonly dev: Device;
  /** `table`. */
  readonly table: SgTable;
  /** `mapped`. */
  mapped: boolean;
}

/** `struct system_heap_buffer`. */
export class SystemHeapBuffer {
  /** `heap`. */
  readonly heap: DmaHeap;
  /** `len`. */
  readonly len: number;
  /** The blocks (head pages), in buffer order. */
  readonly blocks: Page[];
  /** Order of each block. */
  readonly orders: number[];
  /** Byte offset of each block inside the buffer. */
  readonly starts: number[];
  /** `attachments` (under `lock`). */
  readonly attachments: Set<SystemHeapAttachment> = new Set();
  /** `lock`. */
  readonly lock: Mutex;
  /** `vmap_cnt`. */
  vmapCnt = 0;
  /** `vaddr`. */
  vaddr: IosysMap | null = null;

  /** Built by the allocator. */
  constructor(world: Kernel, heap: DmaHeap, len: number, blocks: Page[], orders: number[]) {
    this.heap = heap;
    this.len = len;
    this.blocks = blocks;
    this.orders = orders;
    this.starts = [];
    let off = 0;
    for (const o of orders) {
      this.starts.push(off);
      off += PAGE_SIZE << o;
    }
    this.lock = new Mutex(world, "system_heap_buffer->lock");
  }

  /** `sg_table` of the buffer: one entry per block (`sg_set_page(sg, page, page_size(page), 0)`). */
  newTable(): SgTable {
    return new SgTable(
      this.blocks.map((p, i) => new Scatterlist(p, PAGE_SIZE << this.orders[i]!, 0)),
    );
  }

  /** The block holding byte `offset`: index and offset inside it. */
  locate(offset: number): { block: number; inner: number } {
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { block: lo, inner: offset - this.starts[lo]! };
  }
}

function bufOf(dmabuf: DmaBuf): SystemHeapBuffer {
  return dmabuf.priv as SystemHeapBuffer;
}

/** `system_heap_buf_ops`. */
export const systemHeapBufOps: DmaBufOps = {
  async attach(dmabuf: DmaBuf, attach: DmaBufAttachment): Promise<void> {
    const buffer = bufOf(dmabuf);
    const a: SystemHeapAttachment = { dev: attach.dev!, table: buffer.newTable(), mapped: false };
    attach.priv = a;
    await buffer.lock.lock();
    buffer.attachments.add(a);
    buffer.lock.unlock();
  },
  async detach(dmabuf: DmaBuf, attach: DmaBufAttachment): Promise<void> {
    const buffer = bufOf(dmabuf);
    await buffer.lock.lock();
    buffer.attachments.delete(attach.priv as SystemHeapAttachment);
    buffer.lock.unlock();
  },
  mapDmaBuf(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable {
    const a = attach.priv as SystemHeapAttachment;
    dmaMapSgtable(attach.dmabuf.world, a.dev, a.table, dir, 0);
    a.mapped = true;
    return a.table;
  },
  unmapDmaBuf(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void {
    const a = attach.priv as SystemHeapAttachment;
    a.mapped = false;
    dmaUnmapSgtable(attach.dmabuf.world, a.dev, sgt, dir, 0);
  },
  async beginCpuAccess(dmabuf: DmaBuf, dir: DmaDataDirection): Promise<void> {
    const buffer = bufOf(dmabuf);
    await buffer.lock.lock();
    for (const a of buffer.attachments) if (a.mapped) dmaSyncSgtableForCpu(a.dev, a.table, dir);
    buffer.lock.unlock();
  },
  async endCpuAccess(dmabuf: DmaBuf, dir: DmaDataDirection): Promise<void> {
    const buffer = bufOf(dmabuf);
    await buffer.lock.lock();
    for (const a of buffer.attachments) if (a.mapped) dmaSyncSgtableForDevice(a.dev, a.table, dir);
    buffer.lock.unlock();
  },
  mmap(dmabuf: DmaBuf, vma: Vma): void {
    const buffer = bufOf(dmabuf);
    const world = dmabuf.world;
    let addr = vma.vmStart;
    let off = vma.vmPgoff * PAGE_SIZE;
    while (addr < vma.vmEnd && off < buffer.len) {
      const { block, inner } = buffer.locate(off);
      const blockLen = PAGE_SIZE << buffer.orders[block]!;
      const n = Math.min(blockLen - inner, vma.vmEnd - addr);
      const pfn = buffer.blocks[block]!.pfn + inner / PAGE_SIZE;
      remapPfnRange(vma, addr, pfn, n, vma.vmPageProt);
      addr += n;
      off += n;
    }
    void world;
  },
  async vmap(dmabuf: DmaBuf): Promise<IosysMap> {
    const buffer = bufOf(dmabuf);
    await buffer.lock.lock();
    try {
      if (buffer.vmapCnt) {
        buffer.vmapCnt++;
        return buffer.vaddr!;
      }
      const world = dmabuf.world;
      const map = IosysMap.fromResolver(world, buffer.len, false, (offset) => {
        const { block, inner } = buffer.locate(offset);
        return {
          phys: world.mem.pageToPhys(buffer.blocks[block]!) + BigInt(inner),
          contiguous: (PAGE_SIZE << buffer.orders[block]!) - inner,
        };
      });
      buffer.vaddr = map;
      buffer.vmapCnt = 1;
      return map;
    } finally {
      buffer.lock.unlock();
    }
  },
  vunmap(dmabuf: DmaBuf, _map: IosysMap): void {
    const buffer = bufOf(dmabuf);
    // the kernel takes buffer->lock here; vunmap is synchronous in this model and
    // the count is only touched by vmap/vunmap, which the core serialises under resv
    if (!--buffer.vmapCnt) buffer.vaddr = null;
  },
  release(dmabuf: DmaBuf): void {
    const buffer = bufOf(dmabuf);
    buffer.blocks.forEach((p, i) => dmabuf.world.mem.freePages(p, buffer.orders[i]!));
  },
};

/**
 * `system_heap_allocate(heap, len, fd_flags, heap_flags)`: the buffer with
 * one reference. -EINTR on a pending fatal signal, -ENOMEM when memory
 * runs out.
 */
export function systemHeapAllocate(
  heap: DmaHeap,
  len: number,
  fdFlags: number,
  _heapFlags: bigint,
): DmaBuf {
  const world = heap.world;
  const blocks: Page[] = [];
  const orders: number[] = [];
  let remaining = len;
  let maxOrder = SYSTEM_HEAP_ORDERS[0]!;
  const freeAll = () => blocks.forEach((p, i) => world.mem.freePages(p, orders[i]!));
  while (remaining > 0) {
    if (world.sched.current?.signalPending) {
      freeAll();
      throw new KernelError("EINTR", "system heap: fatal signal pending during allocation");
    }
    let page: Page | null = null;
    let order = 0;
    for (const o of SYSTEM_HEAP_ORDERS) {
      if (remaining < PAGE_SIZE << o) continue;
      if (maxOrder < o) continue;
      page = world.mem.allocPages(o, { zero: true, comp: o > 0, noWarn: true });
      if (page) {
        order = o;
        break;
      }
    }
    if (!page) {
      freeAll();
      throw new KernelError("ENOMEM", `system heap: out of memory allocating ${len} bytes`);
    }
    blocks.push(page);
    orders.push(order);
    remaining -= PAGE_SIZE << order;
    maxOrder = order;
  }
  const buffer = new SystemHeapBuffer(world, heap, len, blocks, orders);
  try {
    return dmaBufExport(world, {
      expName: heap.getName(),
      owner: "system_heap",
      ops: systemHeapBufOps,
      size: len,
      flags: fdFlags,
      priv: buffer,
    });
  } catch (e) {
    freeAll();
    throw e;
  }
}

/** `system_heap_create`: registers heap "system" in `world` (idempotent); returns it. */
export function dmaHeapSystemInit(world: Kernel): DmaHeap {
  return dmaHeapFind(world, "system") ??
    dmaHeapAdd(world, { name: "system", ops: { allocate: systemHeapAllocate }, priv: null });
}

/**
 * In-kernel allocation from the system heap (what `DMA_HEAP_IOCTL_ALLOC`
 * does before making an fd): a dma-buf of `len` bytes (page aligned up)
 * with one reference, file flags O_RDWR.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { dmaHeapSystemAlloc } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const buf = dmaHeapSystemAlloc(world, 3 << 20);
 * buf.size; // 3145728
 * buf.put();
 * ```
 */
export function dmaHeapSystemAlloc(world: Kernel, len: number, fdFlags: number = 2): DmaBuf {
  const heap = dmaHeapSystemInit(world);
  const aligned = Math.ceil(len / PAGE_SIZE) * PAGE_SIZE;
  if (aligned === 0) throw new KernelError("EINVAL", "system heap: zero length");
  return systemHeapAllocate(heap, aligned, fdFlags & (O_ACCMODE | 0o2000000), 0n);
}
