/**
 * DOC: CPU page tables
 *
 * One page table per {@linkcode MmStruct}: a sparse two-level radix keyed by
 * virtual page number. The top level is a Map from PMD index (`vpn >> 9`) to
 * either a PTE table (a `Float64Array` of 512 entries, created on first use
 * and dropped when it empties) or a huge PMD entry mapping 2 MiB at once.
 * Memory therefore grows with the mappings, never with the address space.
 *
 * An entry packs the pfn and the bits into one number:
 * `pfn * 256 + bits`, where the bits are the {@linkcode Pgprot} (read,
 * write, exec, cache mode), {@linkcode PTE_SPECIAL} (`pte_special`: a pfn
 * without `struct page` refcounting, as VM_PFNMAP inserts make) and
 * {@linkcode PTE_PRESENT}; 0 is `pte_none`. Pfns up to 2^44 fit exactly.
 *
 * Locking: callers hold the mm's page-table lock while changing entries
 * (the mm code does); the table itself is plain synchronous data.
 *
 * @module
 */
import type { Pgprot } from "./vma.ts";

/** `_PAGE_SPECIAL`. */
export const PTE_SPECIAL = 0x20;
/** `_PAGE_DIRTY`. */
export const PTE_DIRTY = 0x40;
/** `_PAGE_PRESENT`. */
export const PTE_PRESENT = 0x80;
const PROT_MASK = 0x1f;
const ENTRY_SHIFT = 256;
const PTRS_PER_PTE = 512;

/** A decoded entry. */
export interface PteValue {
  /** Mapped pfn (for a huge entry: the pfn of this 4 KiB piece). */
  readonly pfn: number;
  /** The protection bits. */
  readonly prot: Pgprot;
  /** `pte_special`. */
  readonly special: boolean;
  /** `pte_write`. */
  readonly writable: boolean;
  /** `pte_dirty`. */
  readonly dirty: boolean;
  /** True when it came from a huge PMD entry. */
  readonly huge: boolean;
}

/** Packs an entry. */
export function mkPte(pfn: number, prot: Pgprot, special: boolean, dirty = false): number {
  return pfn * ENTRY_SHIFT + (prot & PROT_MASK) + (special ? PTE_SPECIAL : 0) +
    (dirty ? PTE_DIRTY : 0) + PTE_PRESENT;
}

/** Unpacks an entry (`pte_pfn`, `pte_pgprot`, ...). */
export function decodePte(e: number, huge = false, offset = 0): PteValue {
  const bits = e % ENTRY_SHIFT;
  return {
    pfn: Math.floor(e / ENTRY_SHIFT) + offset,
    prot: bits & PROT_MASK,
    special: (bits & PTE_SPECIAL) !== 0,
    writable: (bits & 2) !== 0,
    dirty: (bits & PTE_DIRTY) !== 0,
    huge,
  };
}

/** Replaces the protection bits of an entry (`pte_modify` / `pte_mkwrite`). */
export function ptePatch(e: number, prot: Pgprot, dirty?: boolean): number {
  const bits = e % ENTRY_SHIFT;
  const base = e - bits;
  const d = dirty === undefined ? bits & PTE_DIRTY : dirty ? PTE_DIRTY : 0;
  return base + (prot & PROT_MASK) + (bits & PTE_SPECIAL) + d + PTE_PRESENT;
}

/** Entries a PTE table keeps in a Map before it turns into a dense 512-slot array. */
const SPARSE_MAX = 32;

/**
 * One PTE table: a single inline entry, then a small Map, then (past 32
 * entries) a dense 512-slot array, so memory follows the populated slots.
 */
class PteTable {
  dense: Float64Array | null = null;
  sparse: Map<number, number> | null = null;
  /** The only entry while there is one (slot, or -1 for none). */
  k0 = -1;
  v0 = 0;
  count = 0;

  get(i: number): number {
    if (this.dense) return this.dense[i]!;
    if (this.sparse) return this.sparse.get(i) ?? 0;
    return i === this.k0 ? this.v0 : 0;
  }

  /** Sets slot `i` to a non-zero entry; true when the slot was empty. */
  set(i: number, e: number): boolean {
    if (this.dense) {
      const was = this.dense[i]!;
      this.dense[i] = e;
      if (was === 0) this.count++;
      return was === 0;
    }
    if (!this.sparse) {
      if (this.k0 === -1 || this.k0 === i) {
        const fresh = this.k0 === -1;
        this.k0 = i;
        this.v0 = e;
        if (fresh) this.count++;
        return fresh;
      }
      this.sparse = new Map([[this.k0, this.v0]]);
      this.k0 = -1;
    }
    const sp = this.sparse;
    const fresh = !sp.has(i);
    sp.set(i, e);
    if (fresh) this.count++;
    if (this.count > SPARSE_MAX) {
      const d = new Float64Array(PTRS_PER_PTE);
      for (const [k, v] of sp) d[k] = v;
      this.dense = d;
      this.sparse = null;
    }
    return fresh;
  }

  /** Clears slot `i`; the old entry (0 when none). */
  clear(i: number): number {
    const old = this.get(i);
    if (old === 0) return 0;
    if (this.dense) this.dense[i] = 0;
    else if (this.sparse) this.sparse.delete(i);
    else this.k0 = -1;
    this.count--;
    return old;
  }

  /** Present slots in [lo, hi), ascending. */
  slots(lo: number, hi: number): number[] {
    const out: number[] = [];
    if (this.dense) {
      for (let i = lo; i < hi; i++) if (this.dense[i] !== 0) out.push(i);
    } else if (this.sparse) {
      for (const k of this.sparse.keys()) if (k >= lo && k < hi) out.push(k);
      out.sort((x, y) => x - y);
    } else if (this.k0 >= lo && this.k0 < hi) {
      out.push(this.k0);
    }
    return out;
  }
}

/**
 * A page table.
 *
 * @example
 * ```ts
 * import { mkPte, PageTable } from "@dmalab/kernel";
 * const pt = new PageTable();
 * pt.set(0x7f000, mkPte(0x1234, 3, true));
 * pt.lookup(0x7f000)!.pfn; // 0x1234
 * pt.lookup(0x7f001); // null
 * ```
 */
export class PageTable {
  readonly #top = new Map<number, PteTable | number>();
  #entries = 0;

  /** Present 4 KiB entries plus huge entries. */
  get entries(): number {
    return this.#entries;
  }

  /** PTE tables allocated (for memory accounting). */
  get tables(): number {
    let n = 0;
    for (const v of this.#top.values()) if (typeof v !== "number") n++;
    return n;
  }

  /** The raw entry for `vpn` (0 when none) and whether it is huge. */
  raw(vpn: number): { entry: number; huge: boolean } {
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    const t = this.#top.get(pmd);
    if (t === undefined) return { entry: 0, huge: false };
    if (typeof t === "number") return { entry: t, huge: true };
    return { entry: t.get(vpn - pmd * PTRS_PER_PTE), huge: false };
  }

  /**
   * The entry mapping `vpn` as one number, without allocating (0 for none;
   * inside a huge entry, the entry of that 4 KiB piece). Decode with
   * {@linkcode decodePte}, or test bits directly (`entry % 256`).
   */
  entryAt(vpn: number): number {
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    const t = this.#top.get(pmd);
    if (t === undefined) return 0;
    if (typeof t === "number") return t + (vpn - pmd * PTRS_PER_PTE) * ENTRY_SHIFT;
    return t.get(vpn - pmd * PTRS_PER_PTE);
  }

  /** Walks to `vpn`: the decoded entry, or null for `pte_none`. */
  lookup(vpn: number): PteValue | null {
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    const t = this.#top.get(pmd);
    if (t === undefined) return null;
    if (typeof t === "number") return decodePte(t, true, vpn - pmd * PTRS_PER_PTE);
    const e = t.get(vpn - pmd * PTRS_PER_PTE);
    return e === 0 ? null : decodePte(e);
  }

  /** True when `vpn`'s PMD slot holds a huge entry. */
  isHuge(vpn: number): boolean {
    return typeof this.#top.get(Math.floor(vpn / PTRS_PER_PTE)) === "number";
  }

  /** True when the PMD slot of `vpn` is empty (`pmd_none`). */
  pmdNone(vpn: number): boolean {
    return !this.#top.has(Math.floor(vpn / PTRS_PER_PTE));
  }

  /** `set_pte_at`. A huge entry in the slot must be cleared first. */
  set(vpn: number, entry: number): void {
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    let t = this.#top.get(pmd);
    if (typeof t === "number") throw new Error("PageTable.set: PMD slot holds a huge entry");
    if (t === undefined) {
      t = new PteTable();
      this.#top.set(pmd, t);
    }
    if (entry === 0) {
      this.clear(vpn);
      return;
    }
    if (t.set(vpn - pmd * PTRS_PER_PTE, entry)) this.#entries++;
  }

  /** `ptep_get_and_clear`: the old entry (0 when none). */
  clear(vpn: number): number {
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    const t = this.#top.get(pmd);
    if (t === undefined || typeof t === "number") return 0;
    const old = t.clear(vpn - pmd * PTRS_PER_PTE);
    if (old !== 0) {
      this.#entries--;
      if (t.count === 0) this.#top.delete(pmd);
    }
    return old;
  }

  /** `set_pmd_at` with a huge entry; the slot must be empty. */
  setHuge(vpn: number, entry: number): void {
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    if (this.#top.has(pmd)) throw new Error("PageTable.setHuge: PMD slot not empty");
    this.#top.set(pmd, entry);
    this.#entries++;
  }

  /** `pmdp_huge_get_and_clear`: the old huge entry (0 when none). */
  clearHuge(vpn: number): number {
    const pmd = Math.floor(vpn / PTRS_PER_PTE);
    const t = this.#top.get(pmd);
    if (typeof t !== "number") return 0;
    this.#top.delete(pmd);
    this.#entries--;
    return t;
  }

  /**
   * Clears the present entries of [startVpn, endVpn) in place, asking
   * `keep(vpn, entry, huge)` first (return true to leave one); a huge entry
   * partly in range is offered (and cleared) whole. Returns the number
   * cleared. Walks populated tables only and allocates nothing per entry.
   */
  clearRange(
    startVpn: number,
    endVpn: number,
    keep?: (vpn: number, entry: number, huge: boolean) => boolean,
  ): number {
    let n = 0;
    for (const pmd of this.#pmdKeys(startVpn, endVpn)) {
      const t = this.#top.get(pmd);
      if (t === undefined) continue;
      const base = pmd * PTRS_PER_PTE;
      if (typeof t === "number") {
        if (keep?.(base, t, true)) continue;
        this.#top.delete(pmd);
        this.#entries--;
        n++;
        continue;
      }
      const lo = Math.max(startVpn, base) - base;
      const hi = Math.min(endVpn, base + PTRS_PER_PTE) - base;
      for (const i of t.slots(lo, hi)) {
        const e = t.get(i);
        if (keep?.(base + i, e, false)) continue;
        t.clear(i);
        this.#entries--;
        n++;
      }
      if (t.count === 0) this.#top.delete(pmd);
    }
    return n;
  }

  #pmdKeys(startVpn: number, endVpn: number): number[] {
    const first = Math.floor(startVpn / PTRS_PER_PTE);
    const last = Math.floor((endVpn - 1) / PTRS_PER_PTE);
    if (last < first) return [];
    if (last - first + 1 <= this.#top.size) {
      const out: number[] = [];
      for (let k = first; k <= last; k++) if (this.#top.has(k)) out.push(k);
      return out;
    }
    return [...this.#top.keys()].filter((k) => k >= first && k <= last).sort((a, b) => a - b);
  }

  /**
   * Present entries in [startVpn, endVpn): `(vpn, entry, huge)` where a huge
   * entry is reported once with the first vpn of its 2 MiB block. Cost is
   * proportional to the populated tables, not the range.
   */
  *range(startVpn: number, endVpn: number): Generator<[number, number, boolean]> {
    for (const pmd of this.#pmdKeys(startVpn, endVpn)) {
      const t = this.#top.get(pmd);
      if (t === undefined) continue;
      const base = pmd * PTRS_PER_PTE;
      if (typeof t === "number") {
        yield [base, t, true];
        continue;
      }
      const lo = Math.max(startVpn, base) - base;
      const hi = Math.min(endVpn, base + PTRS_PER_PTE) - base;
      for (const i of t.slots(lo, hi)) {
        const e = t.get(i);
        if (e !== 0) yield [base + i, e, false];
      }
    }
  }
}
