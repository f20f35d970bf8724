/**
 * DOC: gen_pool (lib/genalloc.c, reduced)
 *
 * A special-purpose allocator over chunks of address space, as P2PDMA uses
 * it: each chunk has a "virtual" start (here the CPU physical address of the
 * ZONE_DEVICE mapping), a "physical" start (P2PDMA stores the PCI bus
 * address there) and a size; allocations are first-fit in units of
 * `1 << minAllocOrder` bytes (`gen_pool_first_fit`). Free extents are kept
 * per chunk as sorted [start, end) unit ranges, so memory grows with the
 * number of allocations, not bytes.
 *
 * Locking: the kernel's gen_pool is lockless for alloc/free (cmpxchg on the
 * bitmap) and callable in atomic context; every method here is synchronous.
 *
 * @module
 */

interface Chunk {
  virt: bigint;
  phys: bigint;
  units: number;
  /** Free ranges [start, end) in units, sorted, disjoint. */
  free: [number, number][];
}

/** A gen_pool. */
export class GenPool {
  /** `min_alloc_order`. */
  readonly minAllocOrder: number;
  /** NUMA node. */
  readonly nid: number;
  readonly #chunks: Chunk[] = [];

  /** `gen_pool_create(min_alloc_order, nid)`. */
  constructor(minAllocOrder: number, nid: number) {
    this.minAllocOrder = minAllocOrder;
    this.nid = nid;
  }

  /** `gen_pool_add_owner(pool, virt, phys, size, nid, owner)`. */
  add(virt: bigint, phys: bigint, size: bigint): void {
    const units = Number(size >> BigInt(this.minAllocOrder));
    this.#chunks.push({ virt, phys, units, free: units > 0 ? [[0, units]] : [] });
  }

  /** `gen_pool_size`: total bytes. */
  size(): bigint {
    let n = 0n;
    for (const c of this.#chunks) n += BigInt(c.units) << BigInt(this.minAllocOrder);
    return n;
  }

  /** `gen_pool_avail`: free bytes. */
  avail(): bigint {
    let n = 0;
    for (const c of this.#chunks) for (const [s, e] of c.free) n += e - s;
    return BigInt(n) << BigInt(this.minAllocOrder);
  }

  /** `gen_pool_alloc`: first fit; returns the virtual address or null. */
  alloc(size: bigint): bigint | null {
    if (size <= 0n) return null;
    const shift = BigInt(this.minAllocOrder);
    const nunits = Number((size + (1n << shift) - 1n) >> shift);
    for (const c of this.#chunks) {
      for (let i = 0; i < c.free.length; i++) {
        const r = c.free[i]!;
        if (r[1] - r[0] >= nunits) {
          const start = r[0];
          r[0] += nunits;
          if (r[0] === r[1]) c.free.splice(i, 1);
          return c.virt + (BigInt(start) << shift);
        }
      }
    }
    return null;
  }

  /**
   * `gen_pool_free`: returns false when `addr` lies in no chunk or the range
   * was not allocated (the kernel BUGs; callers report it).
   */
  free(addr: bigint, size: bigint): boolean {
    const shift = BigInt(this.minAllocOrder);
    const nunits = Number((size + (1n << shift) - 1n) >> shift);
    for (const c of this.#chunks) {
      const end = c.virt + (BigInt(c.units) << shift);
      if (addr < c.virt || addr >= end) continue;
      const s = Number((addr - c.virt) >> shift);
      const e = s + nunits;
      if (e > c.units) return false;
      for (const [fs, fe] of c.free) if (s < fe && fs < e) return false;
      c.free.push([s, e]);
      c.free.sort((a, b) => a[0] - b[0]);
      const merged: [number, number][] = [];
      for (const r of c.free) {
        const last = merged[merged.length - 1];
        if (last && last[1] === r[0]) last[1] = r[1];
        else merged.push([r[0], r[1]]);
      }
      c.free = merged;
      return true;
    }
    return false;
  }

  /** `gen_pool_virt_to_phys`: the stored "physical" address, or null. */
  virtToPhys(addr: bigint): bigint | null {
    const shift = BigInt(this.minAllocOrder);
    for (const c of this.#chunks) {
      const end = c.virt + (BigInt(c.units) << shift);
      if (addr >= c.virt && addr < end) return c.phys + (addr - c.virt);
    }
    return null;
  }

  /** True when `addr` lies in a chunk (`gen_pool_has_addr`). */
  hasAddr(addr: bigint, size: bigint): boolean {
    const shift = BigInt(this.minAllocOrder);
    return this.#chunks.some((c) =>
      addr >= c.virt && addr + size <= c.virt + (BigInt(c.units) << shift)
    );
  }
}
