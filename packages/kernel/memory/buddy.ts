/**
 * DOC: buddy page allocator
 *
 * One free area per zone, as mm/page_alloc.c keeps: a free list per order
 * (0..MAX_PAGE_ORDER) of naturally aligned blocks. An allocation takes the
 * first block of the smallest order that fits and splits it, returning the
 * upper halves to the lower orders (`expand`); a free merges the block with
 * its buddy (`pfn ^ (1 << order)`) for as long as the buddy is free
 * (`__free_one_page`). Memory that was never handed out stays in an
 * uncarved tail and is cut into MAX_PAGE_ORDER blocks on demand, so a zone of
 * a terabyte costs a handful of numbers until it is used.
 *
 * Free lists are insertion-ordered sets, so allocation order is a pure
 * function of the history (lowest addresses first on a fresh zone).
 *
 * Locking: the kernel's `zone->lock` spinlock; here every operation is one
 * synchronous step, callable in atomic context.
 *
 * @module
 */

/** `MAX_PAGE_ORDER` (default CONFIG_ARCH_FORCE_MAX_ORDER on x86-64). */
export const MAX_PAGE_ORDER = 10;

/**
 * The free area of one zone.
 *
 * @example
 * ```ts
 * import { BuddyZone } from "@dmalab/kernel";
 * const z = new BuddyZone([[0, 16]]);
 * const a = z.alloc(2); // pfn 0, four pages
 * const b = z.alloc(0); // pfn 4
 * z.free(a!, 2);
 * z.free(b!, 0);
 * z.freePages; // 16, merged back
 * ```
 */
export class BuddyZone {
  readonly #free: Set<number>[] = [];
  /** Uncarved [start, end) pfn ranges, ascending. */
  readonly #tail: [number, number][];
  #freePages = 0;
  readonly #spanned: number;

  /** A zone over the given [startPfn, endPfn) ranges (sorted, disjoint). */
  constructor(ranges: readonly (readonly [number, number])[]) {
    for (let o = 0; o <= MAX_PAGE_ORDER; o++) this.#free.push(new Set());
    this.#tail = ranges.filter(([s, e]) => e > s).map(([s, e]) => [s, e]);
    this.#spanned = this.#tail.reduce((n, [s, e]) => n + e - s, 0);
    this.#freePages = this.#spanned;
  }

  /** Free pages (`zone_page_state(zone, NR_FREE_PAGES)`). */
  get freePages(): number {
    return this.#freePages;
  }

  /** Pages the zone manages. */
  get managedPages(): number {
    return this.#spanned;
  }

  /** Free blocks per order (`/proc/buddyinfo` counts, carved blocks only). */
  buddyinfo(): number[] {
    return this.#free.map((s) => s.size);
  }

  /** Carves the next aligned block (largest order that fits) from the tail; false when empty. */
  #carve(): boolean {
    const r = this.#tail[0];
    if (!r) return false;
    const [s, e] = r;
    let o = MAX_PAGE_ORDER;
    while (o > 0 && ((s % (1 << o)) !== 0 || s + (1 << o) > e)) o--;
    this.#free[o]!.add(s);
    r[0] = s + (1 << o);
    if (r[0] >= e) this.#tail.shift();
    return true;
  }

  /** `__rmqueue_smallest` + `expand`: head pfn of a 2^order block, or null. */
  alloc(order: number): number | null {
    if (order < 0 || order > MAX_PAGE_ORDER) return null;
    const need = 1 << order;
    if (this.#freePages < need) return null;
    for (;;) {
      for (let o = order; o <= MAX_PAGE_ORDER; o++) {
        const list = this.#free[o]!;
        if (list.size === 0) continue;
        const pfn = list.values().next().value as number;
        list.delete(pfn);
        for (let k = o; k > order; k--) {
          this.#free[k - 1]!.add(pfn + (1 << (k - 1)));
        }
        this.#freePages -= need;
        return pfn;
      }
      if (!this.#carve()) return null;
    }
  }

  /** True when `pfn` heads a free block of exactly `order`. */
  isFreeBlock(pfn: number, order: number): boolean {
    return this.#free[order]?.has(pfn) ?? false;
  }

  /** True when `pfn` lies in a free block (carved or not). */
  isFree(pfn: number): boolean {
    for (let o = 0; o <= MAX_PAGE_ORDER; o++) {
      const head = pfn - (pfn % (1 << o));
      if (this.#free[o]!.has(head)) return true;
    }
    return this.#tail.some(([s, e]) => pfn >= s && pfn < e);
  }

  /** `__free_one_page`: returns a block and merges it with free buddies. */
  free(pfn: number, order: number): void {
    this.#freePages += 1 << order;
    let o = order;
    let p = pfn;
    while (o < MAX_PAGE_ORDER) {
      // pfn ^ (1 << o) without 32-bit bitwise ops (pfns may exceed 2^31).
      const size = 2 ** o;
      const buddy = Math.floor(p / size) % 2 === 0 ? p + size : p - size;
      const list = this.#free[o]!;
      if (!list.has(buddy)) break;
      list.delete(buddy);
      p = Math.min(p, buddy);
      o++;
    }
    this.#free[o]!.add(p);
  }
}
