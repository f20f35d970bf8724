/**
 * DOC: page-size selection
 *
 * Two functions decide which page sizes a mapping uses. The core's
 * `iommu_pgsize()` (drivers/iommu/iommu.c) splits an `iommu_map()` request into
 * runs of one page size, each as large as the alignment of IOVA and physical
 * address allows, stopping a small-page run at the next larger page boundary
 * when the rest is long enough to use the larger page. The page-table code's
 * `pt_compute_best_pgsize()` (drivers/iommu/generic_pt/pt_iter.h) picks the
 * largest single leaf size for a range. Addresses are numbers (exact below
 * 2^53); bitmaps are sums of powers of two. Pure functions, no locking.
 *
 * @module
 */

const POW2: number[] = [];
for (let i = 0; i < 64; i++) POW2.push(2 ** i);

/** `2 ** lg2` from a table. */
export function lg2ToInt(lg2: number): number {
  return POW2[lg2]!;
}

/** Count of trailing zero bits of a non-negative integer below 2^53 (64 for 0). */
export function ctz(x: number): number {
  if (x === 0) return 64;
  const low = x % 4294967296;
  if (low !== 0) return 31 - Math.clz32(low & -low);
  const high = Math.floor(x / 4294967296);
  return 32 + (31 - Math.clz32(high & -high));
}

/** The log2 sizes set in `bitmap`, ascending. */
export function bitmapToLg2s(bitmap: number): number[] {
  const out: number[] = [];
  let rest = bitmap;
  for (let i = 63; i >= 0 && rest > 0; i--) {
    if (rest >= POW2[i]!) {
      out.unshift(i);
      rest -= POW2[i]!;
    }
  }
  return out;
}

/** Result of {@linkcode iommuPgsize}. */
export interface PgsizeChoice {
  /** The page size chosen, bytes. */
  pgsize: number;
  /** How many pages of that size to map in one `map_pages` call. */
  count: number;
}

/**
 * `iommu_pgsize()`: the largest page size in `pgsizeBitmap` no larger than
 * `size` and aligned for both `iova` and `paddr`, and how many such pages to
 * map before the next larger size becomes usable.
 * Throws when no page size fits (the kernel BUG()s; callers check alignment to
 * the smallest page size first).
 */
export function iommuPgsize(
  pgsizeBitmap: number,
  iova: number,
  paddr: number,
  size: number,
): PgsizeChoice {
  const lg2s = bitmapToLg2s(pgsizeBitmap);
  const align = Math.min(ctz(iova), ctz(paddr));
  let idx = -1;
  for (let i = lg2s.length - 1; i >= 0; i--) {
    const l = lg2s[i]!;
    if (POW2[l]! <= size && l <= align) {
      idx = i;
      break;
    }
  }
  if (idx < 0) {
    throw new Error(
      `iommu_pgsize: no page size in 0x${pgsizeBitmap.toString(16)} fits iova 0x${
        iova.toString(16)
      } pa 0x${paddr.toString(16)} size 0x${size.toString(16)} (BUG)`,
    );
  }
  const pgsize = POW2[lg2s[idx]!]!;
  let len = size;
  const nextLg2 = lg2s[idx + 1];
  if (nextLg2 !== undefined) {
    const next = POW2[nextLg2]!;
    if (iova % next === paddr % next) {
      const offset = next - (iova % next);
      if (offset + next <= len) len = offset;
    }
  }
  return { pgsize, count: Math.floor(len / pgsize) };
}

/**
 * `pt_compute_best_pgsize()`: log2 of the largest page size in `pgsizeBitmap`
 * with `va` and `oa` both aligned to it and the page ending at or before
 * `lastVa`; 0 when none fits.
 */
export function ptComputeBestPgsize(
  pgsizeBitmap: number,
  va: number,
  lastVa: number,
  oa: number,
): number {
  const lg2s = bitmapToLg2s(pgsizeBitmap);
  for (let i = lg2s.length - 1; i >= 0; i--) {
    const l = lg2s[i]!;
    const sz = POW2[l]!;
    if (va % sz === 0 && oa % sz === 0 && va + sz - 1 <= lastVa) return l;
  }
  return 0;
}
