/**
 * DOC: IOTLB gather
 *
 * `struct iommu_iotlb_gather` (include/linux/iommu.h): what one or more unmaps
 * must invalidate before the memory behind them may be reused. It carries an
 * IOVA range (`start`/`end`, widened by `iommu_iotlb_gather_add_range()`), the
 * page-table pages the unmaps freed (`freelist`: released only by the
 * driver's `iotlb_sync`, after the invalidation, so the walker never reads a
 * recycled table), and `queued` (set by dma-iommu in lazy mode, when the flush
 * queue does the invalidation later). A gather is owned by the one thread
 * doing the unmap; it is not shared.
 *
 * @module
 */
import type { PtPagePool } from "./pt_pages.ts";

/** `ULONG_MAX` as the gather uses it for "no range yet". */
export const GATHER_EMPTY_START: number = Number.MAX_SAFE_INTEGER;

/**
 * `struct iommu_iotlb_gather`.
 *
 * @example
 * ```ts
 * import { IommuIotlbGather } from "@dmalab/iommu";
 * const g = new IommuIotlbGather();
 * g.addRange(0x1000, 0x1000);
 * g.addRange(0x8000, 0x1000); // widened over the gap: 0x1000..0x8fff
 * [g.start, g.end]; // [0x1000, 0x8fff]
 * ```
 */
export class IommuIotlbGather {
  /** First IOVA to invalidate (`GATHER_EMPTY_START` when none). */
  start: number = GATHER_EMPTY_START;
  /** Last IOVA to invalidate (0 when none). */
  end = 0;
  /** Page size hint (`pgsize`), 0 when unknown. */
  pgsize = 0;
  /** Freed page-table pages (ids in {@linkcode IommuIotlbGather.pool}), released after sync. */
  freelist: number[] = [];
  /** The page pool the freelist ids belong to. */
  pool: PtPagePool | null = null;
  /** Lazy mode: the flush queue will invalidate (`queued`). */
  queued = false;

  /** `iommu_iotlb_gather_init()`: empties the range and the freelist reference. */
  init(): void {
    this.start = GATHER_EMPTY_START;
    this.end = 0;
    this.pgsize = 0;
    this.freelist = [];
    this.pool = null;
  }

  /** True when no range has been added. */
  get empty(): boolean {
    return this.end === 0 && this.start === GATHER_EMPTY_START;
  }

  /** `iommu_iotlb_gather_add_range()`: widens the range to cover `[iova, iova+size)`. */
  addRange(iova: number, size: number): void {
    const end = iova + size - 1;
    if (this.start > iova) this.start = iova;
    if (this.end < end) this.end = end;
  }

  /**
   * `iommu_iotlb_gather_is_disjoint()`: true when `[iova, iova+size)` neither
   * overlaps nor touches the gathered range (and the range is not empty).
   */
  isDisjoint(iova: number, size: number): boolean {
    const end = iova + size - 1;
    return this.end !== 0 && (end + 1 < this.start || iova > this.end + 1);
  }

  /** `iommu_pages_list_splice()`: moves freed table pages onto this gather. */
  addFreed(pool: PtPagePool, ids: number[]): void {
    if (ids.length === 0) return;
    if (this.pool !== null && this.pool !== pool) {
      throw new Error("iommu_iotlb_gather: freelist mixes page pools");
    }
    this.pool = pool;
    for (const id of ids) this.freelist.push(id);
  }

  /**
   * `iommu_put_pages_list()`: releases the freed table pages (after the
   * flush). Pages on a gather are always empty (unmap cleared them, or the
   * table-to-leaf conversion zeroed them).
   */
  releaseFreelist(): number {
    const n = this.freelist.length;
    if (n && this.pool) this.pool.freeIds(this.freelist, true);
    this.freelist = [];
    this.pool = null;
    return n;
  }
}
