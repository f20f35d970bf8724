/**
 * DOC: IOVA allocator
 *
 * drivers/iommu/iova.c: an allocator of IOVA page ranges for one DMA domain.
 * Allocated ranges are kept ordered (the kernel's rbtree; here sorted arrays
 * searched by bisection). `alloc_iova()` finds the highest free range below
 * the limit, aligned to the size rounded up to a power of two when
 * `size_aligned`; it fails when no hole fits. In front sit the range caches
 * (`iova_rcache`): for sizes up to 32 pages (`IOVA_RANGE_CACHE_MAX_SIZE` 6
 * classes), freed ranges go into a CPU's loaded magazine (127 entries,
 * `IOVA_MAG_SIZE`), then its previous one, then full magazines move to the
 * depot; `alloc_iova_fast()` rounds small sizes up to a power of two and
 * takes a cached range at or below the limit before searching; when the
 * search fails it flushes the caches and retries once. Cached ranges stay
 * allocated in the tree. The model runs one CPU.
 *
 * Locking: `iova_rbtree_lock` (spinlock) and per-CPU rcache locks; atomic
 * context allowed; atomic in the model.
 *
 * @module
 */

/** `IOVA_RANGE_CACHE_MAX_SIZE`: log2 size classes cached. */
export const IOVA_RANGE_CACHE_MAX_SIZE = 6;
/** `IOVA_MAG_SIZE`. */
export const IOVA_MAG_SIZE = 127;

/** Counters. */
export interface IovaStats {
  /** Tree allocations (`alloc_iova`). */
  treeAllocs: number;
  /** Tree frees (`free_iova`). */
  treeFrees: number;
  /** Allocations served by the range caches. */
  rcacheHits: number;
  /** Frees absorbed by the range caches. */
  rcacheInserts: number;
  /** Cache flushes after a failed search. */
  rcacheFlushes: number;
  /** Failed allocations. */
  failures: number;
}

class Rcache {
  loaded: number[] = [];
  prev: number[] = [];
  depot: number[][] = [];
}

/** `struct iova_domain`. */
export class IovaDomain {
  /** `granule` in bytes. */
  readonly granule: number;
  /** `start_pfn`: lowest allocatable pfn. */
  readonly startPfn: number;
  /** Counters. */
  readonly stats: IovaStats = {
    treeAllocs: 0,
    treeFrees: 0,
    rcacheHits: 0,
    rcacheInserts: 0,
    rcacheFlushes: 0,
    failures: 0,
  };
  #lo: number[] = [];
  #hi: number[] = [];
  /** `cached_node` / `cached32_node` as pfns: where the next top-down search starts. */
  #cached = Number.MAX_SAFE_INTEGER;
  #cached32 = Number.MAX_SAFE_INTEGER;
  /** `dma_32bit_pfn`. */
  readonly #dma32Pfn: number;
  readonly #rcaches: Rcache[] = [];

  /** `init_iova_domain(iovad, granule, start_pfn)`. */
  constructor(granule: number, startPfn: number) {
    this.granule = granule;
    this.startPfn = Math.max(1, startPfn);
    this.#dma32Pfn = Math.floor(2 ** 32 / granule);
    for (let i = 0; i < IOVA_RANGE_CACHE_MAX_SIZE; i++) this.#rcaches.push(new Rcache());
  }

  /** Ranges allocated in the tree (cached ones included). */
  get allocatedRanges(): number {
    return this.#lo.length;
  }

  /** Ranges sitting in the caches. */
  get cachedRanges(): number {
    let n = 0;
    for (const r of this.#rcaches) {
      n += r.loaded.length + r.prev.length;
      for (const m of r.depot) n += m.length;
    }
    return n;
  }

  /** Index of the first range with lo > pfn. */
  #upper(pfn: number): number {
    let a = 0;
    let b = this.#lo.length;
    while (a < b) {
      const m = (a + b) >> 1;
      if (this.#lo[m]! > pfn) b = m;
      else a = m + 1;
    }
    return a;
  }

  /** `find_iova()`: the allocated range containing `pfn`, as `[lo, hi]`. */
  find(pfn: number): [number, number] | null {
    const i = this.#upper(pfn) - 1;
    if (i >= 0 && this.#hi[i]! >= pfn) return [this.#lo[i]!, this.#hi[i]!];
    return null;
  }

  /**
   * `alloc_iova()`: the highest free `size`-page range ending at or below
   * `limitPfn`; returns its first pfn or 0 on failure. The search starts
   * below the cached node (the last allocation, or just above the last free
   * that was above it) and retries from the limit when that fails, as
   * `__alloc_and_insert_iova_range` does.
   */
  allocIova(size: number, limitPfn: number, sizeAligned: boolean): number {
    const align = sizeAligned ? 2 ** Math.ceil(Math.log2(size)) : 1;
    const use32 = limitPfn < this.#dma32Pfn;
    const cached = use32 ? this.#cached32 : this.#cached;
    let pfn = this.#search(size, align, Math.min(limitPfn + 1, cached));
    if (!pfn && cached <= limitPfn) pfn = this.#search(size, align, limitPfn + 1);
    if (!pfn) return 0;
    if (use32) this.#cached32 = pfn;
    else this.#cached = pfn;
    this.stats.treeAllocs++;
    return pfn;
  }

  #search(size: number, align: number, top: number): number {
    let high = top; // exclusive
    let i = this.#upper(top - 1) - 1;
    for (;;) {
      if (i >= 0 && this.#hi[i]! >= high) {
        high = Math.min(high, this.#lo[i]!);
        i--;
        continue;
      }
      const low = i >= 0 ? this.#hi[i]! + 1 : this.startPfn;
      if (high >= size) {
        const pfn = Math.floor((high - size) / align) * align;
        if (pfn >= low && pfn >= this.startPfn) {
          this.#lo.splice(i + 1, 0, pfn);
          this.#hi.splice(i + 1, 0, pfn + size - 1);
          return pfn;
        }
      }
      if (i < 0) return 0;
      high = this.#lo[i]!;
      i--;
    }
  }

  /**
   * `reserve_iova()`: takes `[loPfn, hiPfn]` out of the allocatable space,
   * merging with ranges it overlaps.
   */
  reserveIova(loPfn: number, hiPfn: number): void {
    let lo = Math.max(loPfn, this.startPfn);
    let hi = hiPfn;
    if (hi < lo) return;
    let i = this.#upper(hi) - 1;
    while (i >= 0 && this.#hi[i]! >= lo) {
      lo = Math.min(lo, this.#lo[i]!);
      hi = Math.max(hi, this.#hi[i]!);
      this.#lo.splice(i, 1);
      this.#hi.splice(i, 1);
      i--;
    }
    this.#lo.splice(i + 1, 0, lo);
    this.#hi.splice(i + 1, 0, hi);
  }

  /** `free_iova()`: frees the range containing `pfn`; false when none. */
  freeIova(pfn: number): boolean {
    const i = this.#upper(pfn) - 1;
    if (i < 0 || this.#hi[i]! < pfn) return false;
    // __cached_rbnode_delete_update: a free at or above the cached node moves it up
    const lo = this.#lo[i]!;
    const next = i + 1 < this.#lo.length ? this.#lo[i + 1]! : Number.MAX_SAFE_INTEGER;
    if (lo >= this.#cached) this.#cached = next;
    if (this.#hi[i]! < this.#dma32Pfn && lo >= this.#cached32) this.#cached32 = next;
    this.#lo.splice(i, 1);
    this.#hi.splice(i, 1);
    this.stats.treeFrees++;
    return true;
  }

  static #logSize(size: number): number {
    return Math.ceil(Math.log2(size));
  }

  /** `iova_rcache_insert()`. */
  #rcacheInsert(pfn: number, size: number): boolean {
    const log = IovaDomain.#logSize(size);
    if (log >= IOVA_RANGE_CACHE_MAX_SIZE) return false;
    const rc = this.#rcaches[log]!;
    if (rc.loaded.length < IOVA_MAG_SIZE) {
      rc.loaded.push(pfn);
    } else if (rc.prev.length < IOVA_MAG_SIZE) {
      [rc.loaded, rc.prev] = [rc.prev, rc.loaded];
      rc.loaded.push(pfn);
    } else {
      rc.depot.push(rc.loaded);
      rc.loaded = [pfn];
    }
    this.stats.rcacheInserts++;
    return true;
  }

  /** `iova_magazine_pop()`: a cached pfn at or below `limitPfn`. */
  static #pop(mag: number[], limitPfn: number): number {
    for (let i = mag.length - 1; i >= 0; i--) {
      if (mag[i]! <= limitPfn) {
        const pfn = mag[i]!;
        mag[i] = mag[mag.length - 1]!;
        mag.pop();
        return pfn;
      }
    }
    return 0;
  }

  /** `iova_rcache_get()`. */
  #rcacheGet(size: number, limitPfn: number): number {
    const log = IovaDomain.#logSize(size);
    if (log >= IOVA_RANGE_CACHE_MAX_SIZE) return 0;
    const rc = this.#rcaches[log]!;
    let pfn = IovaDomain.#pop(rc.loaded, limitPfn);
    if (pfn) return pfn;
    if (rc.prev.length) {
      [rc.loaded, rc.prev] = [rc.prev, rc.loaded];
      pfn = IovaDomain.#pop(rc.loaded, limitPfn);
      if (pfn) return pfn;
    }
    if (rc.depot.length) {
      rc.depot.push(rc.loaded);
      rc.loaded = rc.depot.shift()!;
      pfn = IovaDomain.#pop(rc.loaded, limitPfn);
    }
    return pfn;
  }

  /** `free_cpu_cached_iovas()` + `free_global_cached_iovas()`: returns cached ranges to the tree. */
  flushRcaches(): void {
    for (const rc of this.#rcaches) {
      for (const mag of [rc.loaded, rc.prev, ...rc.depot]) {
        for (const pfn of mag) this.freeIova(pfn);
      }
      rc.loaded = [];
      rc.prev = [];
      rc.depot = [];
    }
  }

  /** The size `alloc_iova_fast` really allocates for `size` pages. */
  static fastSize(size: number): number {
    return size < 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1) ? 2 ** Math.ceil(Math.log2(size)) : size;
  }

  /** `alloc_iova_fast()`: returns the first pfn, or 0. */
  allocIovaFast(size: number, limitPfn: number, flushRcache: boolean): number {
    const sz = IovaDomain.fastSize(size);
    let pfn = this.#rcacheGet(sz, limitPfn);
    if (pfn) {
      this.stats.rcacheHits++;
      return pfn;
    }
    pfn = this.allocIova(sz, limitPfn, true);
    if (!pfn && flushRcache) {
      this.stats.rcacheFlushes++;
      this.flushRcaches();
      pfn = this.allocIova(sz, limitPfn, true);
    }
    if (!pfn) this.stats.failures++;
    return pfn;
  }

  /** `free_iova_fast()`. */
  freeIovaFast(pfn: number, size: number): void {
    if (this.#rcacheInsert(pfn, IovaDomain.fastSize(size))) return;
    this.freeIova(pfn);
  }
}
