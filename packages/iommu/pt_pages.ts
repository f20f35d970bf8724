/**
 * DOC: page-table pages
 *
 * IO page tables live in whole pages (drivers/iommu/iommu-pages.c:
 * `iommu_alloc_pages_node_sz()`, `iommu_free_pages()`, accounted in the
 * `NR_SECONDARY_PAGETABLE` node counter that the generic page-table KUnit
 * suite checks for leaks). A {@linkcode PtPagePool} is one world's supply:
 * each table page is a `Uint32Array(1024)` (512 64-bit entries as low/high
 * 32-bit halves), addressed by a page index. A table pointer stores that
 * index in its address field: the index stands in for the page's physical
 * address (table pages are not part of the simulated RAM).
 *
 * Locking: callers hold the owning page table's lock (the model's single
 * scheduler thread makes every call atomic).
 *
 * @module
 */
import type { Kernel } from "@dmalab/kernel";

/** Entries per table page (4 KiB of 64-bit entries). */
export const PT_ENTRIES = 512;

/**
 * One world's page-table page allocator and its `NR_SECONDARY_PAGETABLE`
 * counter.
 */
export class PtPagePool {
  /** The world the pages belong to. */
  readonly world: Kernel;
  readonly #pages: (Uint32Array | null)[] = [null];
  readonly #freeIdx: number[] = [];
  readonly #spare: Uint32Array[] = [];
  #inUse = 0;
  #peak = 0;
  #allocs = 0;

  /** A pool for `world` (use {@linkcode ptPagePool} to get the world's one). */
  constructor(world: Kernel) {
    this.world = world;
  }

  /** Pages currently allocated (`NR_SECONDARY_PAGETABLE`). */
  get inUse(): number {
    return this.#inUse;
  }

  /** Highest {@linkcode PtPagePool.inUse} seen. */
  get peak(): number {
    return this.#peak;
  }

  /** Pages allocated over the pool's life. */
  get allocs(): number {
    return this.#allocs;
  }

  /** `iommu_alloc_pages_node_sz()`: a zeroed table page; returns its index. */
  alloc(): number {
    const mem = this.#spare.pop() ?? new Uint32Array(PT_ENTRIES * 2);
    const id = this.#freeIdx.pop() ?? this.#pages.length;
    this.#pages[id] = mem;
    this.#allocs++;
    if (++this.#inUse > this.#peak) this.#peak = this.#inUse;
    return id;
  }

  /** The memory of page `id`. */
  page(id: number): Uint32Array {
    const p = this.#pages[id];
    if (!p) throw new Error(`iommu-pages: page ${id} is not allocated (use after free)`);
    return p;
  }

  /**
   * `iommu_free_pages()` for one page. `clean` says every entry is already
   * zero (tables emptied by unmap), which saves rezeroing it.
   */
  free(id: number, clean = false): void {
    const p = this.#pages[id];
    if (!p) {
      this.world.bug("BUG", `iommu-pages: double free of table page ${id}`);
      return;
    }
    if (this.#spare.length < 4096) {
      if (!clean) p.fill(0);
      this.#spare.push(p);
    }
    this.#pages[id] = null;
    this.#freeIdx.push(id);
    this.#inUse--;
  }

  /** `iommu_put_pages_list()`; `clean` as for {@linkcode PtPagePool.free}. */
  freeIds(ids: readonly number[], clean = false): void {
    for (const id of ids) this.free(id, clean);
  }
}

/** The world's page-table page pool (created on first use). */
export function ptPagePool(world: Kernel): PtPagePool {
  return world.ext("iommu.pt_pages", () => new PtPagePool(world));
}
