/**
 * DOC: sparse byte storage
 *
 * Real bytes for RAM and for memory-backed MMIO (a BAR with VRAM behind it),
 * stored a 4 KiB page at a time and only for pages that were written. Untouched
 * pages read as zeros and cost nothing. Backing comes from slabs of 64 pages
 * (one 256 KiB ArrayBuffer each) so a touched page costs its 4096 bytes plus
 * one Map entry (page index -> slot), not one ArrayBuffer object per page.
 * Discarded pages return their slot to a free list.
 *
 * Page indexes are plain numbers (a pfn, or a page offset within a region).
 *
 * Locking: none; synchronous, callable in atomic context.
 *
 * @module
 */

/** `PAGE_SHIFT`. */
export const PAGE_SHIFT = 12;
/** `PAGE_SIZE`. */
export const PAGE_SIZE = 4096;
const SLAB_SHIFT = 6;
const SLAB_PAGES = 1 << SLAB_SHIFT;
const SMALL_COPY = 64;

/**
 * Pages of bytes allocated on first write.
 *
 * @example
 * ```ts
 * import { SparseStore } from "@dmalab/kernel";
 * const s = new SparseStore();
 * s.write(1 << 28, 8, new Uint8Array([1, 2, 3]), 0, 3);
 * const out = new Uint8Array(4);
 * s.read(1 << 28, 7, out, 0, 4); // out = [0, 1, 2, 3]
 * s.touchedPages; // 1
 * ```
 */
export class SparseStore {
  readonly #slot = new Map<number, number>();
  readonly #slabs: Uint8Array[] = [];
  readonly #free: number[] = [];
  #nextSlot = 0;

  /** Pages that have backing. */
  get touchedPages(): number {
    return this.#slot.size;
  }

  /** True when page `index` has backing. */
  has(index: number): boolean {
    return this.#slot.has(index);
  }

  #alloc(index: number): number {
    let slot = this.#free.pop();
    if (slot === undefined) {
      slot = this.#nextSlot++;
      if ((slot >>> SLAB_SHIFT) >= this.#slabs.length) {
        this.#slabs.push(new Uint8Array(SLAB_PAGES * PAGE_SIZE));
      }
    }
    this.#slot.set(index, slot);
    return slot;
  }

  /** The 4 KiB view of page `index`, or null when untouched. */
  page(index: number): Uint8Array | null {
    const slot = this.#slot.get(index);
    if (slot === undefined) return null;
    const off = (slot & (SLAB_PAGES - 1)) << PAGE_SHIFT;
    return this.#slabs[slot >>> SLAB_SHIFT]!.subarray(off, off + PAGE_SIZE);
  }

  /** Copies `len` bytes at `off` in page `index` to `dst[dstOff..]` (zeros when untouched). */
  read(index: number, off: number, dst: Uint8Array, dstOff: number, len: number): void {
    const slot = this.#slot.get(index);
    if (slot === undefined) {
      dst.fill(0, dstOff, dstOff + len);
      return;
    }
    const base = ((slot & (SLAB_PAGES - 1)) << PAGE_SHIFT) + off;
    const slab = this.#slabs[slot >>> SLAB_SHIFT]!;
    if (len <= SMALL_COPY) {
      // Short copies: a loop beats creating a subarray view.
      for (let i = 0; i < len; i++) dst[dstOff + i] = slab[base + i]!;
    } else {
      dst.set(slab.subarray(base, base + len), dstOff);
    }
  }

  /** Copies `len` bytes from `src[srcOff..]` to `off` in page `index`, backing it first. */
  write(index: number, off: number, src: Uint8Array, srcOff: number, len: number): void {
    const slot = this.#slot.get(index) ?? this.#alloc(index);
    const base = ((slot & (SLAB_PAGES - 1)) << PAGE_SHIFT) + off;
    const slab = this.#slabs[slot >>> SLAB_SHIFT]!;
    if (len <= SMALL_COPY) {
      for (let i = 0; i < len; i++) slab[base + i] = src[srcOff + i]!;
    } else if (srcOff === 0 && len === src.length) {
      slab.set(src, base);
    } else {
      slab.set(src.subarray(srcOff, srcOff + len), base);
    }
  }

  /** Fills `len` bytes at `off` with `value`; filling an untouched page with 0 allocates nothing. */
  fill(index: number, off: number, len: number, value: number): void {
    let slot = this.#slot.get(index);
    if (slot === undefined) {
      if ((value & 0xff) === 0) return;
      slot = this.#alloc(index);
    }
    const base = ((slot & (SLAB_PAGES - 1)) << PAGE_SHIFT) + off;
    this.#slabs[slot >>> SLAB_SHIFT]!.fill(value, base, base + len);
  }

  /** Drops the backing of page `index` (it reads as zeros again). */
  discard(index: number): void {
    const slot = this.#slot.get(index);
    if (slot === undefined) return;
    const off = (slot & (SLAB_PAGES - 1)) << PAGE_SHIFT;
    this.#slabs[slot >>> SLAB_SHIFT]!.fill(0, off, off + PAGE_SIZE);
    this.#slot.delete(index);
    this.#free.push(slot);
  }

  /** Page indexes with backing, ascending. */
  indexes(): number[] {
    return [...this.#slot.keys()].sort((a, b) => a - b);
  }
}
