/**
 * DOC: IOTLB and device TLB (ATC)
 *
 * Translation caches. An {@linkcode Iotlb} sits in each IOMMU unit: it keeps
 * up to `reach` leaf translations (one entry per leaf, so one 2 MiB or 1 GiB
 * leaf covers what 512 or 262144 4 KiB entries would), tagged with the
 * domain id the unit gave the domain, evicting the least recently used.
 * A hit costs nothing extra; a miss costs `missPenaltyNs` (a page walk; the
 * default 250 ns is the ~230-280 ns per-miss figure measured with
 * pcie-bench on Broadwell/Haswell Xeons, where ~64 entries covered 256 KiB).
 *
 * A {@linkcode DevTlb} is the same cache inside an ATS-enabled PCIe device
 * (Address Translation Cache): a hit lets the device send a pre-translated
 * request; a miss costs an ATS Translation Request round trip
 * (`translationRequestNs`, default 850 ns: an IOTLB miss plus one PCIe
 * request/completion, an assumption the reference notes label as such).
 * Entries only leave a cache on invalidation or eviction: until the IOMMU
 * invalidates, a cached translation keeps working after its PTE is cleared,
 * which is what makes lazy (deferred) invalidation observable.
 *
 * Locking: caches are touched from DMA (any context) and from invalidation
 * paths holding the domain's lock; the model runs each access atomically.
 *
 * @module
 */

const TAG_SPAN = 2 ** 41;

/** One cached translation. */
export interface TlbEntry {
  /** Output address of the leaf. */
  oa: number;
  /** Leaf level (0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB). */
  level: number;
  /** Entry bits (R/W/SNP/MMIO). */
  bits: number;
}

/** Counters of a translation cache. */
export interface TlbStats {
  /** Lookups that hit. */
  hits: number;
  /** Lookups that missed. */
  misses: number;
  /** Entries dropped to make room. */
  evictions: number;
  /** Invalidation commands received. */
  invalidations: number;
  /** Entries dropped by invalidations. */
  invalidatedEntries: number;
  /** Total extra latency charged, ns. */
  costNs: number;
}

function newStats(): TlbStats {
  return { hits: 0, misses: 0, evictions: 0, invalidations: 0, invalidatedEntries: 0, costNs: 0 };
}

const SIZES = [2 ** 12, 2 ** 21, 2 ** 30];

/** Options for a translation cache. */
export interface TlbOptions {
  /** Number of entries (default 64). */
  reach?: number;
  /** Extra ns charged on a miss. */
  missPenaltyNs?: number;
}

/**
 * A translation cache keyed by (tag, leaf). The tag is a domain id for an
 * IOTLB and a PASID-less constant for a device TLB.
 */
export class TranslationCache {
  /** Entries it can hold. */
  readonly reach: number;
  /** ns charged per miss. */
  readonly missPenaltyNs: number;
  /** Counters. */
  readonly stats: TlbStats = newStats();
  readonly #map = new Map<number, TlbEntry>();

  /** A cache of `reach` entries. */
  constructor(options: TlbOptions, defaultPenalty: number) {
    this.reach = options.reach ?? 64;
    this.missPenaltyNs = options.missPenaltyNs ?? defaultPenalty;
    if (this.reach < 1) throw new Error("translation cache reach must be at least 1");
  }

  /** Entries held now. */
  get size(): number {
    return this.#map.size;
  }

  static #key(tag: number, level: number, iova: number): number {
    return (tag * 4 + level) * TAG_SPAN + Math.floor(iova / SIZES[level]!);
  }

  /** Looks `iova` up under `tag`; counts a hit or a miss (and charges the miss). */
  lookup(tag: number, iova: number): TlbEntry | null {
    for (let level = 0; level < 3; level++) {
      const k = TranslationCache.#key(tag, level, iova);
      const e = this.#map.get(k);
      if (e) {
        this.#map.delete(k);
        this.#map.set(k, e);
        this.stats.hits++;
        return e;
      }
    }
    this.stats.misses++;
    this.stats.costNs += this.missPenaltyNs;
    return null;
  }

  /** Caches a leaf for `iova` under `tag`, evicting the least recently used entry when full. */
  fill(tag: number, iova: number, entry: TlbEntry): void {
    const k = TranslationCache.#key(tag, entry.level, iova);
    if (!this.#map.has(k) && this.#map.size >= this.reach) {
      const oldest = this.#map.keys().next().value as number;
      this.#map.delete(oldest);
      this.stats.evictions++;
    }
    this.#map.delete(k);
    this.#map.set(k, entry);
  }

  /** Drops entries of `tag` overlapping `[start, end]`; counts one invalidation. */
  invalidateRange(tag: number, start: number, end: number): number {
    this.stats.invalidations++;
    let n = 0;
    for (const k of [...this.#map.keys()]) {
      const kt = Math.floor(k / TAG_SPAN);
      if (Math.floor(kt / 4) !== tag) continue;
      const level = kt % 4;
      const page = k - kt * TAG_SPAN;
      const s = page * SIZES[level]!;
      const e = s + SIZES[level]! - 1;
      if (e >= start && s <= end) {
        this.#map.delete(k);
        n++;
      }
    }
    this.stats.invalidatedEntries += n;
    return n;
  }

  /** Drops every entry of `tag` (a domain-selective flush). */
  invalidateTag(tag: number): number {
    return this.invalidateRange(tag, 0, Number.MAX_SAFE_INTEGER);
  }

  /** Drops everything (a global flush). */
  invalidateAll(): number {
    this.stats.invalidations++;
    const n = this.#map.size;
    this.#map.clear();
    this.stats.invalidatedEntries += n;
    return n;
  }
}

/** The IOTLB of an IOMMU unit (see the module doc). */
export class Iotlb extends TranslationCache {
  /** An IOTLB; default reach 64 entries, miss penalty 250 ns. */
  constructor(options: TlbOptions = {}) {
    super(options, 250);
  }
}

/** Options for a device TLB. */
export interface DevTlbOptions extends TlbOptions {
  /** Cost of an ATS Translation Request round trip on a miss (alias of missPenaltyNs). */
  translationRequestNs?: number;
}

/** The ATS Address Translation Cache of one device (see the module doc). */
export class DevTlb extends TranslationCache {
  /** A device TLB; default reach 64 entries, miss 850 ns. */
  constructor(options: DevTlbOptions = {}) {
    super(
      options.translationRequestNs === undefined
        ? options
        : { ...options, missPenaltyNs: options.translationRequestNs },
      850,
    );
  }
}
