/**
 * DOC: scatterlists and sg_table
 *
 * `struct scatterlist` / `struct sg_table` (include/linux/scatterlist.h,
 * lib/scatterlist.c). Each entry has a CPU side (`page`, `offset`, `length`:
 * the first `orig_nents` entries) and a DMA side (`dma_address`,
 * `dma_length`: the first `nents` entries, filled by the DMA API, possibly
 * merged by an IOMMU). Tables built by a P2P/MMIO helper have no CPU side
 * (`orig_nents == 0`, `page == null`).
 *
 * {@linkcode sgAllocTableFromPages} is `sg_alloc_table_from_pages_segment`:
 * runs of physically contiguous pages are merged into one entry, but never
 * beyond `max_segment` (rounded down to a page multiple; less than a page is
 * a WARN and -EINVAL). Addresses are bigint at this edge (`dma_addr_t` may
 * exceed 2^53); page frame numbers stay numbers.
 *
 * Locking: an sg_table belongs to whoever allocated or was handed it; no
 * locking of its own.
 *
 * @module
 */
import { KernelError, type Page } from "@dmalab/kernel";
import type { Kernel } from "@dmalab/kernel";

/** `PAGE_SIZE`. */
export const PAGE_SIZE = 4096;
/** `PAGE_SHIFT`. */
export const PAGE_SHIFT = 12;
/** `UINT_MAX`: the default maximum segment of sg_alloc_table_from_pages. */
export const UINT_MAX = 0xffff_ffff;

/** `enum dma_data_direction` (same spelling as @dmalab/dma-api). */
export type DmaDataDirection =
  | "DMA_BIDIRECTIONAL"
  | "DMA_TO_DEVICE"
  | "DMA_FROM_DEVICE"
  | "DMA_NONE";

/** One `struct scatterlist` entry. */
export class Scatterlist {
  #page: Page | null;
  /** `offset` into the page. */
  offset: number;
  /** `length` in bytes (CPU side). */
  length: number;
  /** `sg_dma_address(sg)`. */
  dmaAddress = 0n;
  /** `sg_dma_len(sg)`. */
  dmaLength = 0;

  /** `sg_set_page(sg, page, len, offset)`. */
  constructor(page: Page | null, length: number, offset = 0) {
    this.#page = page;
    this.length = length;
    this.offset = offset;
  }

  /** `sg_page(sg)`. */
  get page(): Page | null {
    return this.#page;
  }

  /** `sg_assign_page`. */
  set page(p: Page | null) {
    this.#page = p;
  }

  /** `sg_phys(sg)`: physical address of the data (`page_to_phys + offset`); null without a page. */
  phys(world: Kernel): bigint | null {
    const p = this.page;
    return p ? world.mem.pageToPhys(p) + BigInt(this.offset) : null;
  }
}

/** `struct sg_table`. */
export class SgTable {
  /** `sgl`: the entries (CPU side in the first `origNents`). */
  readonly sgl: Scatterlist[];
  /** `nents`: DMA-mapped entries (set by dma_map_sgtable). */
  nents: number;
  /** `orig_nents`: CPU entries. */
  origNents: number;

  /** `sg_alloc_table` with the given entries (nents = orig_nents = entries.length). */
  constructor(entries: Scatterlist[] = []) {
    this.sgl = entries;
    this.nents = entries.length;
    this.origNents = entries.length;
  }

  /** `for_each_sgtable_sg`: the CPU entries. */
  *cpuEntries(): Generator<Scatterlist, void, void> {
    for (let i = 0; i < this.origNents; i++) yield this.sgl[i]!;
  }

  /** `for_each_sgtable_dma_sg`: the DMA entries. */
  *dmaEntries(): Generator<Scatterlist, void, void> {
    for (let i = 0; i < this.nents; i++) yield this.sgl[i]!;
  }

  /** Sum of `sg_dma_len` over the DMA entries. */
  dmaSize(): number {
    let n = 0;
    for (let i = 0; i < this.nents; i++) n += this.sgl[i]!.dmaLength;
    return n;
  }

  /** Sum of `length` over the CPU entries. */
  cpuSize(): number {
    let n = 0;
    for (let i = 0; i < this.origNents; i++) n += this.sgl[i]!.length;
    return n;
  }

  /** `sg_free_table`: empties the table. */
  free(): void {
    this.sgl.length = 0;
    this.nents = 0;
    this.origNents = 0;
  }
}

/**
 * `sg_alloc_table_from_pages_segment(sgt, pages, n_pages, offset, size,
 * max_segment)`: one entry per run of physically contiguous pages, each at
 * most `maxSegment` bytes (default UINT_MAX rounded down to a page).
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { sgAllocTableFromPages } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const head = world.mem.allocPages(2)!; // 4 contiguous pages
 * const pages = [0, 1, 2, 3].map((i) => world.mem.pfnToPage(head.pfn + i)!);
 * sgAllocTableFromPages(world, pages, 0, 4 * 4096).origNents; // 1
 * sgAllocTableFromPages(world, pages, 0, 4 * 4096, 8192).origNents; // 2
 * ```
 */
export function sgAllocTableFromPages(
  world: Kernel,
  pages: readonly Page[],
  offset: number,
  size: number,
  maxSegment: number = UINT_MAX,
): SgTable {
  const seg = Math.floor(maxSegment / PAGE_SIZE) * PAGE_SIZE;
  if (seg < PAGE_SIZE) {
    world.bug("WARN", "WARNING: sg_alloc_table_from_pages_segment: max_segment < PAGE_SIZE");
    throw new KernelError(
      "EINVAL",
      "sg_alloc_table_from_pages_segment: max_segment below PAGE_SIZE",
    );
  }
  if (pages.length === 0 || size === 0) return new SgTable([]);
  const entries: Scatterlist[] = [];
  let remaining = size;
  let off = offset;
  let i = 0;
  while (i < pages.length && remaining > 0) {
    // extend the run while pages are contiguous and the segment stays within seg
    let len = Math.min(PAGE_SIZE - off, remaining);
    let j = i + 1;
    while (
      j < pages.length && len < remaining && pages[j]!.pfn === pages[j - 1]!.pfn + 1 &&
      len + PAGE_SIZE <= seg
    ) {
      len += Math.min(PAGE_SIZE, remaining - len);
      j++;
    }
    entries.push(new Scatterlist(pages[i]!, len, off));
    remaining -= len;
    off = 0;
    i = j;
  }
  return new SgTable(entries);
}
