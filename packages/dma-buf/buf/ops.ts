/**
 * DOC: dma-buf ops tables
 *
 * `struct dma_buf_ops` (exporter), `struct dma_buf_attach_ops` (importer)
 * and `struct dma_buf_export_info` (include/linux/dma-buf.h). Members are
 * optional as in the kernel; where the kernel returns -errno an op throws a
 * `KernelError`, and an op that may sleep may return a promise.
 *
 * Locking convention (the DOC comment of drivers/dma-buf/dma-buf.c, checked
 * by the core, see locking.ts):
 * - called WITHOUT the reservation lock (the exporter may take it):
 *   `attach`, `detach`, `release`, `beginCpuAccess`, `endCpuAccess`, `mmap`;
 * - called WITH the reservation lock held (the exporter must not take it):
 *   `pin`, `unpin`, `mapDmaBuf`, `unmapDmaBuf`, `vmap`, `vunmap`, and the
 *   pfn-mechanism ops `getPfn`, `pfnMap`, `pfnUnmap`, `mapPhys`,
 *   `unmapPhys`;
 * - the importer's `invalidateMappings` / `moveNotify` runs with the lock
 *   held.
 *
 * @module
 */
import type { Device, File, Vma } from "@dmalab/kernel";
import type { DmaResv } from "../resv/dma_resv.ts";
import type { DmaDataDirection, SgTable } from "../sg/scatterlist.ts";
import type { IosysMap } from "./iosys_map.ts";
import type { DmaBuf } from "./dma_buf.ts";
import type { DmaBufAttachment } from "./attachment.ts";
import type { DmaBufPfnAttachment, DmaBufPfnRange, PfnMemoryModel } from "../pfn/types.ts";
import type { DmaBufPhysList } from "../pfn/types.ts";

/** The VMA `mmap` gets (`struct vm_area_struct` of the kernel package). */
export type DmaBufVma = Vma;

/** `struct dma_buf_ops`. */
export interface DmaBufOps {
  /** `attach(dmabuf, attach)`: unlocked; throw -EBUSY etc. to refuse. */
  attach?(dmabuf: DmaBuf, attach: DmaBufAttachment): void | Promise<void>;
  /** `detach(dmabuf, attach)`: unlocked. */
  detach?(dmabuf: DmaBuf, attach: DmaBufAttachment): void | Promise<void>;
  /** `pin(attach)`: locked; presence makes the exporter dynamic (`dma_buf_is_dynamic`). */
  pin?(attach: DmaBufAttachment): void | Promise<void>;
  /** `unpin(attach)`: locked; required iff `pin`. */
  unpin?(attach: DmaBufAttachment): void;
  /**
   * `map_dma_buf(attach, dir)`: locked; a fresh table each call (null is
   * turned into -ENOMEM by the core). Mandatory except under the get_pfn RFC.
   */
  mapDmaBuf?(
    attach: DmaBufAttachment,
    dir: DmaDataDirection,
  ): SgTable | null | Promise<SgTable | null>;
  /** `unmap_dma_buf(attach, sgt, dir)`: locked; synchronous (importers unmap from their invalidate callback). */
  unmapDmaBuf?(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void;
  /** `release(dmabuf)`: unlocked, at the last reference. Mandatory. */
  release?(dmabuf: DmaBuf): void;
  /** `begin_cpu_access(dmabuf, dir)`: unlocked. */
  beginCpuAccess?(dmabuf: DmaBuf, dir: DmaDataDirection): void | Promise<void>;
  /** `end_cpu_access(dmabuf, dir)`: unlocked. */
  endCpuAccess?(dmabuf: DmaBuf, dir: DmaDataDirection): void | Promise<void>;
  /** `mmap(dmabuf, vma)`: unlocked; the core checked the bounds. */
  mmap?(dmabuf: DmaBuf, vma: DmaBufVma): void | Promise<void>;
  /** `vmap(dmabuf, map)`: locked; returns the mapping. */
  vmap?(dmabuf: DmaBuf): IosysMap | Promise<IosysMap>;
  /** `vunmap(dmabuf, map)`: locked. */
  vunmap?(dmabuf: DmaBuf, map: IosysMap): void;

  /**
   * Xu Yilun's RFC (world variant `dma-buf.pfn=rfc-get-pfn`):
   * `get_pfn(attach, pgoff, &pfn, &max_order)`, locked.
   */
  getPfn?(attach: DmaBufAttachment, pgoff: number): { pfn: number; maxOrder: number };

  /**
   * The separate pfn attachment (variant `dma-buf.pfn=pfn-attachment`): the
   * memory model the exporter promises for pfn importers.
   */
  readonly pfnMemoryModel?: PfnMemoryModel;
  /** pfn attachment: accept or refuse an importer (unlocked). */
  pfnAttach?(dmabuf: DmaBuf, pa: DmaBufPfnAttachment): void | Promise<void>;
  /** pfn attachment: importer goes away (unlocked). */
  pfnDetach?(dmabuf: DmaBuf, pa: DmaBufPfnAttachment): void | Promise<void>;
  /** pfn attachment: the ranges backing [pgoff, pgoff + npages), locked. */
  pfnMap?(pa: DmaBufPfnAttachment, pgoff: number, npages: number): DmaBufPfnRange[];
  /** pfn attachment: the importer stopped using `ranges`, locked. */
  pfnUnmap?(pa: DmaBufPfnAttachment, ranges: DmaBufPfnRange[]): void;

  /** Mapping types RFC (variant `dma-buf.pfn=pal`): `map_phys(attach)`, locked. */
  mapPhys?(attach: DmaBufAttachment): DmaBufPhysList;
  /** Mapping types RFC: `unmap_phys(attach, list)`, locked. */
  unmapPhys?(attach: DmaBufAttachment, list: DmaBufPhysList): void;
  /** Mapping types RFC: the mapping types this exporter offers, in preference order. */
  readonly mappingTypes?: readonly ("SGT" | "SGT_P2P" | "PAL")[];
}

/** `struct dma_buf_attach_ops` (importer side). */
export interface DmaBufAttachOps {
  /** `allow_peer2peer`: the importer copes with entries without struct page (P2P). */
  readonly allowPeer2peer?: boolean;
  /**
   * `invalidate_mappings(attach)` (v7.1 name): called with the reservation
   * lock held when the exporter moves or revokes the buffer.
   */
  invalidateMappings?(attach: DmaBufAttachment): void;
  /** `move_notify(attach)`: the pre-7.1 name of the same callback. */
  moveNotify?(attach: DmaBufAttachment): void;
}

/** `struct dma_buf_export_info`. */
export interface DmaBufExportInfo {
  /** `exp_name` (must not be empty). */
  readonly expName: string;
  /** `owner` module name (default "kernel"); an unloading module makes export fail with -ENOENT. */
  readonly owner?: string;
  /** `ops`. */
  readonly ops: DmaBufOps;
  /** `size` in bytes. */
  readonly size: number;
  /** `flags`: file flags (O_RDWR, O_CLOEXEC ...); only O_ACCMODE | O_NONBLOCK reach the file. */
  readonly flags?: number;
  /** `resv`: the exporter's reservation object, or an embedded one is made. */
  readonly resv?: DmaResv;
  /** `priv`: exporter data (must not be null). */
  readonly priv: unknown;
}

/** Convenience: the device an attachment maps for, or null (pfn RFC). */
export type AttachDevice = Device | null;

/** Re-exported for ops implementers: the dma-buf file. */
export type DmaBufFile = File;
