/**
 * DOC: the IO page table (VT-d second-stage and x86-64 formats)
 *
 * A radix page table in the layout of Intel VT-d second-stage tables, the
 * generic page-table code's `vtdss` format (drivers/iommu/generic_pt/fmt/
 * vtdss.h): 512 64-bit entries per 4 KiB table, 3, 4 or 5 levels (39, 48 or
 * 57-bit IOVA; 4 levels by default), leaves of 4 KiB (level 0), 2 MiB
 * (level 1) and 1 GiB (level 2). Entry bits: R (bit 0) and W (bit 1), which
 * together also mean "present" since the format has no present bit; PS
 * (bit 7) marks a large leaf; SNP (bit 11) is `IOMMU_CACHE`; bits 12..51 are
 * the output address. Bit 10, ignored by hardware, keeps `IOMMU_MMIO` so a
 * translation can report it (a model addition). The `x86_64` format (VT-d
 * first stage, AMD v2; generic_pt fmt/x86_64.h) has the same radix and leaf
 * sizes with the CPU's bits: P (present, so readable), RW, US, A, D, PS;
 * `IOMMU_MMIO` is kept as PCD. With `dynamicTop` the table
 * starts at 3 levels and grows a level at a time as `PT_FEAT_DYNAMIC_TOP`
 * (the amdv1 format's feature) does.
 *
 * The algorithms follow drivers/iommu/generic_pt/iommu_pt.h:
 * - `map_pages`: one leaf size for the whole call (`pt_compute_best_pgsize`
 *   over the range, limited by the domain's bitmap); a present leaf in the
 *   way is `-EADDRINUSE`; an existing lower table where a large leaf goes is
 *   freed if it maps nothing (else `-EADDRINUSE`), its pages riding on the
 *   gather; bytes mapped before an error are reported so the core can unroll.
 * - `unmap_pages`: a range starting inside a large leaf is `-EINVAL` (0 bytes);
 *   a range starting at a leaf removes the whole leaf even when it is shorter;
 *   a hole stops the walk; a lower table is freed only when the range covers
 *   all of it; freed tables go on the gather's freelist.
 * - `iova_to_phys`: 0 when nothing is mapped.
 *
 * Entries are two 32-bit halves in a `Uint32Array` per table page
 * (see {@linkcode PtPagePool}); the walk uses numbers only.
 *
 * Locking: the caller holds the range lock for the IOVA range it changes
 * (the model runs each call atomically).
 *
 * @module
 */
import type { ErrnoName, Kernel } from "@dmalab/kernel";
import { IommuIotlbGather } from "./gather.ts";
import { lg2ToInt, ptComputeBestPgsize } from "./pgsize.ts";
import { IOMMU_CACHE, IOMMU_MMIO, IOMMU_READ, IOMMU_WRITE } from "./prot.ts";
import { PT_ENTRIES, type PtPagePool, ptPagePool } from "./pt_pages.ts";

/** VT-d SS entry bit: read permission. */
export const VTDSS_R = 1 << 0;
/** VT-d SS entry bit: write permission. */
export const VTDSS_W = 1 << 1;
/** VT-d SS entry bit: page size (large leaf). */
export const VTDSS_PS = 1 << 7;
/** Ignored bit the model uses to keep `IOMMU_MMIO`. */
export const VTDSS_SW_MMIO = 1 << 10;
/** VT-d SS entry bit: snoop (`IOMMU_CACHE`). */
export const VTDSS_SNP = 1 << 11;

/** x86-64 entry bit: present (and readable). */
export const X86_64_P = 1 << 0;
/** x86-64 entry bit: writable. */
export const X86_64_RW = 1 << 1;
/** x86-64 entry bit: user (set on every IOMMU entry). */
export const X86_64_US = 1 << 2;
/** x86-64 entry bit: cache disable (the model's `IOMMU_MMIO`). */
export const X86_64_PCD = 1 << 4;
/** x86-64 entry bit: accessed. */
export const X86_64_A = 1 << 5;
/** x86-64 entry bit: dirty. */
export const X86_64_D = 1 << 6;

/** Page-table formats the model implements. */
export type PtFormat = "vtdss" | "x86_64";
const SZ_4K = 4096;
/** `SZ[level]` is the VA size one entry at `level` covers. */
const SZ: number[] = [0, 1, 2, 3, 4, 5].map((l) => 2 ** (12 + 9 * l));
/** Largest IOVA the model can address exactly. */
const VA_LIMIT = Number.MAX_SAFE_INTEGER;

/** 4 KiB, 2 MiB and 1 GiB: the sizes the format can store. */
export const VTDSS_PGSIZE_BITMAP: number = SZ[0]! + SZ[1]! + SZ[2]!;

/** Options for a new {@linkcode IoPageTable}. */
export interface IoPageTableOptions {
  /**
   * Entry format: `vtdss` (VT-d second stage, default: separate R and W bits,
   * SNP for `IOMMU_CACHE`) or `x86_64` (the CPU format VT-d first stage and
   * AMD v2 use: P means present and readable, RW writable; `IOMMU_MMIO` as
   * PCD; `IOMMU_CACHE` and `IOMMU_NOEXEC` are not encoded; no sign extension).
   */
  format?: PtFormat;
  /** Table levels: 3 (39-bit), 4 (48-bit, default) or 5 (57-bit, IOVAs below 2^53). */
  levels?: 3 | 4 | 5;
  /** Start at 3 levels and grow on demand up to `levels` (`PT_FEAT_DYNAMIC_TOP`). */
  dynamicTop?: boolean;
  /** Output address width (default 52). */
  maxOaszLg2?: number;
  /** Page sizes the table may use (subset of {@linkcode VTDSS_PGSIZE_BITMAP}). */
  pgsizeBitmap?: number;
  /** Gather policy: `PT_FEAT_FLUSH_RANGE` (default) or `PT_FEAT_FLUSH_RANGE_NO_GAPS`. */
  flush?: "range" | "range-no-gaps";
}

/** Result of {@linkcode IoPageTable.mapPages}. */
export interface MapPagesResult {
  /** Bytes of IOVA mapped (also on error: what the caller must unroll). */
  mapped: number;
  /** Errno name on failure, else null. */
  error: ErrnoName | null;
}

/** A leaf found by {@linkcode IoPageTable.lookup}. */
export interface PtLeaf {
  /** Output address of the whole leaf (page aligned to its size). */
  oa: number;
  /** log2 of the leaf's size (12, 21, 30). */
  lg2: number;
  /** The leaf's R/W/SNP/MMIO bits. */
  bits: number;
}

/** Leaf counts per page size, as the KUnit `count_valids` helper reports them. */
export type ValidCounts = Record<number, number>;

const E_OK = 0;
const E_ADDRINUSE = 1;
const E_INVAL = 2;
const E_RANGE = 3;
const ERRS: (ErrnoName | null)[] = [null, "EADDRINUSE", "EINVAL", "ERANGE"];

/**
 * One IO page table.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { IoPageTable, IOMMU_READ, IOMMU_WRITE } from "@dmalab/iommu";
 * const pt = new IoPageTable(new Kernel());
 * pt.mapPages(0x200000, 0x4000_0000, 0x200000, 1, IOMMU_READ | IOMMU_WRITE).mapped; // 0x200000
 * pt.iovaToPhys(0x200123); // 0x4000_0123
 * ```
 */
export class IoPageTable {
  /** The world (for WARN reports). */
  readonly world: Kernel;
  /** The page pool tables come from. */
  readonly pool: PtPagePool;
  /** Page sizes this table offers (`pgsize_bitmap`). */
  readonly pgsizeBitmap: number;
  /** `max_vasz_lg2`. */
  readonly maxVaszLg2: number;
  /** `max_oasz_lg2`. */
  readonly maxOaszLg2: number;
  /** `PT_FEAT_DYNAMIC_TOP`. */
  readonly dynamicTop: boolean;
  /** `PT_FEAT_FLUSH_RANGE_NO_GAPS` (else `PT_FEAT_FLUSH_RANGE`). */
  readonly flushNoGaps: boolean;
  /** Entry format. */
  readonly format: PtFormat;
  readonly #P: number;
  readonly #tableBits: number;
  /**
   * The owning domain's `pgsize_bitmap`: leaf sizes are limited by it
   * (`compute_best_pgsize` lets the core reduce the sizes this way).
   */
  domainPgsizeBitmap: number;
  #topId: number;
  #topLevel: number;
  readonly #maxTopLevel: number;
  #dead = false;

  // per-call state (kept on the instance so the walk allocates nothing)
  #mPfn = 0;
  #mFlags = 0;
  #mLeafLevel = 0;
  #gather: IommuIotlbGather | null = null;
  #unmapped = 0;
  #onSync: ((g: IommuIotlbGather) => void) | null = null;

  /** A table in `world`'s page pool. */
  constructor(world: Kernel, options: IoPageTableOptions = {}) {
    this.world = world;
    this.pool = ptPagePool(world);
    const levels = options.levels ?? 4;
    this.#maxTopLevel = levels - 1;
    this.maxVaszLg2 = 12 + 9 * levels;
    this.maxOaszLg2 = options.maxOaszLg2 ?? 52;
    this.dynamicTop = options.dynamicTop ?? false;
    this.flushNoGaps = options.flush === "range-no-gaps";
    this.format = options.format ?? "vtdss";
    this.#P = this.format === "x86_64" ? X86_64_P : VTDSS_R | VTDSS_W;
    this.#tableBits = this.format === "x86_64"
      ? X86_64_P | X86_64_RW | X86_64_US | X86_64_A
      : VTDSS_R | VTDSS_W;
    const bitmap = options.pgsizeBitmap ?? VTDSS_PGSIZE_BITMAP;
    if (bitmap <= 0 || bitmap % SZ_4K !== 0 || bitmap > VTDSS_PGSIZE_BITMAP) {
      throw new Error(`vtdss: pgsize_bitmap 0x${bitmap.toString(16)} is not a subset of 4K|2M|1G`);
    }
    this.pgsizeBitmap = bitmap;
    this.domainPgsizeBitmap = bitmap;
    this.#topLevel = this.dynamicTop ? Math.min(2, this.#maxTopLevel) : this.#maxTopLevel;
    this.#topId = this.pool.alloc();
  }

  /** Level of the top table (`pt_top_range().top_level`). */
  get topLevel(): number {
    return this.#topLevel;
  }

  /** Last IOVA the current top table covers (`pt_top_range().last_va`). */
  get topLastVa(): number {
    return Math.min(SZ[this.#topLevel + 1]!, 2 ** this.maxVaszLg2, VA_LIMIT + 1) - 1;
  }

  /** Last IOVA the table can ever cover (domain aperture end). */
  get lastVa(): number {
    return Math.min(2 ** this.maxVaszLg2, VA_LIMIT + 1) - 1;
  }

  /** Sets the hook `map_pages` calls to sync its own gather when it freed tables. */
  setSyncHook(fn: (g: IommuIotlbGather) => void): void {
    this.#onSync = fn;
  }

  /** `pt_iommu_set_prot()` for this table's format: prot bits to entry bits. */
  protToBits(prot: number): number {
    if (this.format === "vtdss") return IoPageTable.protToBits(prot);
    let bits = X86_64_P | X86_64_US | X86_64_A;
    if (prot & IOMMU_WRITE) bits |= X86_64_RW | X86_64_D;
    if (prot & IOMMU_MMIO) bits |= X86_64_PCD;
    return bits;
  }

  /** Entry bits back to prot bits for this table's format. */
  protOf(bits: number): number {
    if (this.format === "vtdss") return IoPageTable.bitsToProt(bits);
    let prot = 0;
    if (bits & X86_64_P) prot |= IOMMU_READ;
    if (bits & X86_64_RW) prot |= IOMMU_WRITE;
    if (bits & X86_64_PCD) prot |= IOMMU_MMIO;
    return prot;
  }

  /** `pt_iommu_set_prot()` for vtdss: prot bits to entry bits. */
  static protToBits(prot: number): number {
    let bits = 0;
    if (prot & IOMMU_READ) bits |= VTDSS_R;
    if (prot & IOMMU_WRITE) bits |= VTDSS_W;
    if (prot & IOMMU_CACHE) bits |= VTDSS_SNP;
    if (prot & IOMMU_MMIO) bits |= VTDSS_SW_MMIO;
    return bits;
  }

  /** Entry bits back to prot bits. */
  static bitsToProt(bits: number): number {
    let prot = 0;
    if (bits & VTDSS_R) prot |= IOMMU_READ;
    if (bits & VTDSS_W) prot |= IOMMU_WRITE;
    if (bits & VTDSS_SNP) prot |= IOMMU_CACHE;
    if (bits & VTDSS_SW_MMIO) prot |= IOMMU_MMIO;
    return prot;
  }

  #checkAlive(what: string): void {
    if (this.#dead) throw new Error(`vtdss ${what}: page table already freed (pt_iommu_deinit)`);
  }

  /**
   * `map_pages()`: installs `pgcount` pages of `pgsize` from `iova` to
   * `paddr` with `prot`. Tables freed while replacing empty lower tables by
   * large leaves ride on `gather` (a local one when omitted) and are synced
   * through the sync hook before returning, as the kernel does.
   */
  mapPages(
    iova: number,
    paddr: number,
    pgsize: number,
    pgcount: number,
    prot: number,
    gather?: IommuIotlbGather,
  ): MapPagesResult {
    this.#checkAlive("map_pages");
    const len = pgsize * pgcount;
    if (
      this.world.warnOn(
        !(prot & (IOMMU_READ | IOMMU_WRITE)),
        "map_pages: prot has neither READ nor WRITE",
      )
    ) {
      return { mapped: 0, error: "EINVAL" };
    }
    if (paddr < 0 || paddr + len - 1 >= 2 ** this.maxOaszLg2) return { mapped: 0, error: "ERANGE" };
    if (len === 0) return { mapped: 0, error: "EINVAL" };
    const last = iova + len - 1;
    if (iova < 0 || last > VA_LIMIT) return { mapped: 0, error: "EOVERFLOW" };
    const leafLg2 = ptComputeBestPgsize(this.domainPgsizeBitmap, iova, last, paddr);
    if (!leafLg2) return { mapped: 0, error: "ENXIO" };
    const leafLevel = (leafLg2 - 12) / 9;
    const rc = this.#checkMapRange(last, leafLevel);
    if (rc) return { mapped: 0, error: ERRS[rc]! };

    let local: IommuIotlbGather | null = null;
    if (!gather) {
      local = new IommuIotlbGather();
      gather = local;
    }
    this.#gather = gather;
    this.#mPfn = paddr / SZ_4K;
    this.#mFlags = this.protToBits(prot);
    this.#mLeafLevel = leafLevel;
    const r = leafLevel === this.#topLevel
      ? this.#mapLeaf(this.#topId, leafLevel, iova, last)
      : this.#mapLevel(this.#topId, this.#topLevel, iova, last);
    const mapped = this.#mPfn * SZ_4K - paddr;
    this.#gather = null;
    if (gather.freelist.length && this.#onSync) this.#onSync(gather);
    else if (local) local.releaseFreelist();
    return { mapped, error: ERRS[r]! };
  }

  #checkMapRange(last: number, leafLevel: number): number {
    if (last > this.lastVa) return E_RANGE;
    if (!this.dynamicTop) return E_OK;
    // increase_top(): add levels until the range and the leaf fit.
    while (last > this.topLastVa || leafLevel > this.#topLevel) {
      const level = this.#topLevel + 1;
      if (level > this.#maxTopLevel || 12 + 9 * level >= this.maxVaszLg2) return E_RANGE;
      const id = this.pool.alloc();
      const t = this.pool.page(id);
      t[0] = ((this.#topId & 0xfffff) << 12) | this.#tableBits;
      t[1] = (this.#topId / 1048576) | 0;
      this.#topId = id;
      this.#topLevel = level;
    }
    return E_OK;
  }

  /** `__map_range`: descend (allocating tables) towards the leaf level. */
  #mapLevel(id: number, level: number, va: number, last: number): number {
    const P = this.#P;
    const t = this.pool.page(id);
    const size = SZ[level]!;
    const base = va - (va % SZ[level + 1]!);
    let i = Math.floor((va - base) / size);
    const li = Math.min(PT_ENTRIES - 1, Math.floor((last - base) / size));
    for (; i <= li; i++) {
      const j = i << 1;
      const lo = t[j]!;
      let child: number;
      let fresh = false;
      if (lo & P) {
        if (lo & VTDSS_PS) return E_ADDRINUSE;
        child = (lo >>> 12) + t[j + 1]! * 1048576;
      } else {
        fresh = true;
        child = this.pool.alloc();
        t[j] = ((child & 0xfffff) << 12) | this.#tableBits;
        t[j + 1] = (child / 1048576) | 0;
      }
      const itemStart = base + i * size;
      const sVa = va > itemStart ? va : itemStart;
      const itemLast = itemStart + size - 1;
      const sLast = last < itemLast ? last : itemLast;
      const r = level - 1 === this.#mLeafLevel
        ? this.#mapLeaf(child, level - 1, sVa, sLast, fresh)
        : this.#mapLevel(child, level - 1, sVa, sLast);
      if (r) return r;
    }
    return E_OK;
  }

  /** `__map_range_leaf`: install leaves at this level. */
  #mapLeaf(id: number, level: number, va: number, last: number, fresh = false): number {
    const P = this.#P;
    const t = this.pool.page(id);
    const size = SZ[level]!;
    const base = va - (va % SZ[level + 1]!);
    let i = Math.floor((va - base) / size);
    const li = Math.min(PT_ENTRIES - 1, Math.floor((last - base) / size));
    const flags = this.#mFlags | (level > 0 ? VTDSS_PS : 0);
    const step = size / SZ_4K;
    let pfn = this.#mPfn;
    let r = E_OK;
    if (fresh) {
      // a table allocated by this walk is empty: nothing to check
      for (; i <= li; i++) {
        t[i << 1] = ((pfn & 0xfffff) << 12) | flags;
        t[(i << 1) + 1] = (pfn / 1048576) | 0;
        pfn += step;
      }
      this.#mPfn = pfn;
      return E_OK;
    }
    for (; i <= li; i++) {
      const j = i << 1;
      if (t[j]! & P) {
        r = this.#clearContig(t, j, level, base + i * size);
        if (r) break;
      }
      t[j] = ((pfn & 0xfffff) << 12) | flags;
      t[j + 1] = (pfn / 1048576) | 0;
      pfn += step;
    }
    this.#mPfn = pfn;
    return r;
  }

  /** `clear_contig`: a lower table where a leaf goes must map nothing; then it is freed. */
  #clearContig(t: Uint32Array, j: number, level: number, itemVa: number): number {
    const lo = t[j]!;
    if (level === 0 || lo & VTDSS_PS) return E_ADDRINUSE;
    const child = (lo >>> 12) + t[j + 1]! * 1048576;
    const ids: number[] = [];
    if (!this.#collect(child, level - 1, ids, true)) return E_ADDRINUSE;
    t[j] = 0;
    t[j + 1] = 0;
    ids.push(child);
    for (const id of ids) this.pool.page(id).fill(0);
    this.#gatherRange(this.#gather!, itemVa, SZ[level]!, ids);
    return E_OK;
  }

  /** `__collect_tables`: lists every table below `id`; false if a leaf exists and `checkMapped`. */
  #collect(id: number, level: number, out: number[], checkMapped: boolean): boolean {
    const P = this.#P;
    const t = this.pool.page(id);
    for (let i = 0; i < PT_ENTRIES; i++) {
      const lo = t[i << 1]!;
      if (!(lo & P)) continue;
      if (level === 0 || lo & VTDSS_PS) {
        if (checkMapped) return false;
        continue;
      }
      const child = (lo >>> 12) + t[(i << 1) + 1]! * 1048576;
      out.push(child);
      if (!this.#collect(child, level - 1, out, checkMapped)) return false;
    }
    return true;
  }

  /**
   * `gather_range_pages()`: with `FLUSH_RANGE_NO_GAPS` a disjoint range syncs
   * what is gathered first; the range is then always added (the stable fix
   * for the path that left the gather empty and made `iotlb_sync` compute a
   * bogus length).
   */
  #gatherRange(g: IommuIotlbGather, iova: number, len: number, ids: number[]): void {
    if (this.flushNoGaps && g.isDisjoint(iova, len)) {
      if (this.#onSync) this.#onSync(g);
      else g.releaseFreelist();
      g.init();
    }
    g.addRange(iova, len);
    g.addFreed(this.pool, ids);
  }

  /**
   * `unmap_pages()`: clears `pgsize * pgcount` bytes from `iova`; returns the
   * bytes unmapped (0 for a start inside a large leaf, more than asked when
   * the range ends inside a leaf). Invalidation and table release go through
   * `gather`.
   */
  unmapPages(iova: number, pgsize: number, pgcount: number, gather: IommuIotlbGather): number {
    this.#checkAlive("unmap_pages");
    const len = pgsize * pgcount;
    if (len === 0 || iova < 0) return 0;
    const last = iova + len - 1;
    if (last > this.topLastVa) return 0;
    this.#unmapped = 0;
    this.#gather = gather;
    const freed: number[] = [];
    this.#unmapLevel(this.#topId, this.#topLevel, iova, last, freed);
    this.#gather = null;
    this.#gatherRange(gather, iova, len, freed);
    return this.#unmapped;
  }

  /** `__unmap_range`. */
  #unmapLevel(id: number, level: number, va: number, last: number, freed: number[]): number {
    const P = this.#P;
    const t = this.pool.page(id);
    const size = SZ[level]!;
    const base = va - (va % SZ[level + 1]!);
    let i = Math.floor((va - base) / size);
    const li = Math.min(PT_ENTRIES - 1, Math.floor((last - base) / size));
    const first = t[i << 1]!;
    if ((first & P) && (level === 0 || first & VTDSS_PS) && va % size !== 0) {
      return E_INVAL;
    }
    let numOas = 0;
    let r = E_OK;
    if (level === 0) {
      // leaf-only level: find the run of present entries, clear it at once
      let k = i;
      while (k <= li && t[k << 1]! & P) k++;
      if (k > i) t.fill(0, i << 1, k << 1);
      this.#unmapped += (k - i) * size;
      return k <= li ? E_INVAL : E_OK;
    }
    for (; i <= li; i++) {
      const j = i << 1;
      const lo = t[j]!;
      if (!(lo & P)) {
        r = E_INVAL;
        break;
      }
      if (level === 0 || lo & VTDSS_PS) {
        t[j] = 0;
        t[j + 1] = 0;
        numOas++;
        continue;
      }
      const itemStart = base + i * size;
      const itemLast = itemStart + size - 1;
      const sVa = va > itemStart ? va : itemStart;
      const sLast = last < itemLast ? last : itemLast;
      const child = (lo >>> 12) + t[j + 1]! * 1048576;
      r = this.#unmapLevel(child, level - 1, sVa, sLast, freed);
      if (r) break;
      if (sVa === itemStart && sLast === itemLast) {
        freed.push(child);
        t[j] = 0;
        t[j + 1] = 0;
      }
    }
    this.#unmapped += numOas * size;
    return r;
  }

  #lkOa = 0;
  #lkLevel = 0;
  #lkBits = 0;

  /** Walks to the leaf for `iova`; true when one exists (result via the `lookup*` getters). */
  walk(iova: number): boolean {
    const P = this.#P;
    if (this.#dead || iova < 0 || iova > this.topLastVa) return false;
    let id = this.#topId;
    for (let level = this.#topLevel;; level--) {
      const t = this.pool.page(id);
      const size = SZ[level]!;
      const i = Math.floor((iova % SZ[level + 1]!) / size);
      const lo = t[i << 1]!;
      if (!(lo & P)) return false;
      const hi = t[(i << 1) + 1]!;
      if (level === 0 || lo & VTDSS_PS) {
        this.#lkOa = ((lo >>> 12) + hi * 1048576) * SZ_4K;
        this.#lkLevel = level;
        this.#lkBits = lo & 0xfff;
        return true;
      }
      id = (lo >>> 12) + hi * 1048576;
    }
  }

  /** The leaf {@linkcode IoPageTable.walk} found, as an object. */
  lookup(iova: number): PtLeaf | null {
    if (!this.walk(iova)) return null;
    return { oa: this.#lkOa, lg2: 12 + 9 * this.#lkLevel, bits: this.#lkBits };
  }

  /** Output address of the last leaf {@linkcode IoPageTable.walk} found. */
  get lookupOa(): number {
    return this.#lkOa;
  }

  /** Level of the last leaf found. */
  get lookupLevel(): number {
    return this.#lkLevel;
  }

  /** Entry bits of the last leaf found. */
  get lookupBits(): number {
    return this.#lkBits;
  }

  /** `iova_to_phys()`: the physical address for `iova`, 0 when unmapped. */
  iovaToPhys(iova: number): number {
    if (!this.walk(iova)) return 0;
    return this.#lkOa + (iova % SZ[this.#lkLevel]!);
  }

  /** KUnit `count_valids`: leaves per page size (bytes to count). */
  countValids(): ValidCounts {
    const out: ValidCounts = {};
    const P = this.#P;
    const visit = (id: number, level: number) => {
      const t = this.pool.page(id);
      for (let i = 0; i < PT_ENTRIES; i++) {
        const lo = t[i << 1]!;
        if (!(lo & P)) continue;
        if (level === 0 || lo & VTDSS_PS) {
          out[SZ[level]!] = (out[SZ[level]!] ?? 0) + 1;
        } else {
          visit((lo >>> 12) + t[(i << 1) + 1]! * 1048576, level - 1);
        }
      }
    };
    if (!this.#dead) visit(this.#topId, this.#topLevel);
    return out;
  }

  /** Total leaves (`count_valids`). */
  countLeaves(): number {
    return Object.values(this.countValids()).reduce((a, b) => a + b, 0);
  }

  /** Table pages this table holds now (top included). */
  tablePages(): number {
    if (this.#dead) return 0;
    const ids: number[] = [];
    this.#collect(this.#topId, this.#topLevel, ids, false);
    return ids.length + 1;
  }

  /**
   * `pt_iommu_deinit()`: frees every table page. The caller must have
   * stopped hardware use and flushed caches first.
   */
  deinit(): void {
    if (this.#dead) return;
    const ids: number[] = [];
    this.#collect(this.#topId, this.#topLevel, ids, false);
    ids.push(this.#topId);
    this.pool.freeIds(ids);
    this.#dead = true;
  }

  /** Size in bytes of an entry at `level`. */
  static levelSize(level: number): number {
    return SZ[level]!;
  }
}

/** `lg2ToInt` re-exported for callers computing page sizes. */
export { lg2ToInt };
