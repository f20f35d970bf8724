/**
 * DOC: VRAM manager (drivers/gpu/drm/drm_buddy.c, amdgpu_vram_mgr.c)
 *
 * A buddy allocator over the pages of VRAM, as `drm_buddy` is: free blocks
 * of 2^order pages kept per order, split on allocation and merged with
 * their buddy on free. `amdgpu_vram_mgr_new` asks for a size and accepts
 * any set of blocks (largest first, at most `maxOrder`), unless the
 * placement wants a contiguous range (`TTM_PL_FLAG_CONTIGUOUS`), in which
 * case one block of the rounded-up order is taken. A failed allocation
 * gives back what it took and returns null (TTM then evicts).
 *
 * Locking: the manager's own lock in the kernel (`mgr->lock`); here every
 * call is synchronous and atomic.
 *
 * @module
 */

/** One allocated block: `2^order` pages starting at page `start` of VRAM. */
export interface VramBlock {
  /** First page index inside VRAM. */
  readonly start: number;
  /** Block order (pages = 2^order). */
  readonly order: number;
}

/** Pages of a block. */
export function blockPages(b: VramBlock): number {
  return 2 ** b.order;
}

/**
 * A buddy allocator over `pages` pages.
 *
 * @example
 * ```ts
 * import { VramManager } from "@dmalab/gpu";
 * const mgr = new VramManager(1024); // 4 MiB of 4 KiB pages
 * const blocks = mgr.alloc(300)!; // 256 + 32 + 8 + 4 pages
 * blocks.map((b) => b.order); // [8, 5, 3, 2]
 * mgr.free(blocks);
 * mgr.freePages; // 1024
 * ```
 */
export class VramManager {
  /** Pages managed. */
  readonly pages: number;
  /** Largest block order handed out. */
  readonly maxOrder: number;
  readonly #free: Set<number>[] = [];
  #freePages = 0;

  /** Manages `pages` pages; blocks up to 2^`maxOrder` pages (default 10: 4 MiB). */
  constructor(pages: number, maxOrder = 10) {
    if (!Number.isInteger(pages) || pages <= 0) throw new RangeError("VRAM pages must be > 0");
    this.pages = pages;
    this.maxOrder = maxOrder;
    for (let o = 0; o <= maxOrder; o++) this.#free.push(new Set());
    // seed with the largest naturally aligned blocks (drm_buddy_init)
    let at = 0;
    while (at < pages) {
      let o = maxOrder;
      while (o > 0 && (at % 2 ** o !== 0 || at + 2 ** o > pages)) o--;
      this.#free[o]!.add(at);
      at += 2 ** o;
    }
    this.#freePages = pages;
  }

  /** Pages not allocated. */
  get freePages(): number {
    return this.#freePages;
  }

  /** Pages allocated. */
  get usedPages(): number {
    return this.pages - this.#freePages;
  }

  #take(order: number): number | null {
    let o = order;
    while (o <= this.maxOrder && this.#free[o]!.size === 0) o++;
    if (o > this.maxOrder) return null;
    const set = this.#free[o]!;
    // lowest address first keeps runs deterministic
    let start = Infinity;
    for (const s of set) if (s < start) start = s;
    set.delete(start);
    while (o > order) {
      o--;
      this.#free[o]!.add(start + 2 ** o); // upper buddy stays free
    }
    return start;
  }

  /**
   * `drm_buddy_alloc_blocks`: `npages` pages as blocks (null when VRAM
   * cannot hold them; nothing is kept then).
   */
  alloc(npages: number, contiguous = false): VramBlock[] | null {
    if (!Number.isInteger(npages) || npages <= 0) throw new RangeError("npages must be > 0");
    if (contiguous) {
      const order = Math.ceil(Math.log2(npages));
      if (order > this.maxOrder) return null;
      const s = this.#take(order);
      if (s === null) return null;
      this.#freePages -= 2 ** order;
      return [{ start: s, order }];
    }
    const out: VramBlock[] = [];
    let left = npages;
    while (left > 0) {
      let o = Math.min(this.maxOrder, Math.floor(Math.log2(left)));
      let s: number | null = null;
      for (; o >= 0; o--) {
        s = this.#take(o);
        if (s !== null) break;
      }
      if (s === null) {
        this.free(out);
        return null;
      }
      out.push({ start: s, order: o });
      this.#freePages -= 2 ** o;
      left -= 2 ** o;
    }
    return out;
  }

  /** `drm_buddy_free_list`: returns blocks, merging buddies. */
  free(blocks: readonly VramBlock[]): void {
    for (const b of blocks) {
      let start = b.start;
      let o = b.order;
      this.#freePages += 2 ** o;
      while (o < this.maxOrder) {
        const buddy = start ^ (2 ** o);
        if (!this.#free[o]!.has(buddy) || buddy + 2 ** o > this.pages) break;
        this.#free[o]!.delete(buddy);
        start = Math.min(start, buddy);
        o++;
      }
      this.#free[o]!.add(start);
    }
  }
}
