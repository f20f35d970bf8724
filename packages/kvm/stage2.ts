/**
 * DOC: the stage-2 (TDP / EPT) page table
 *
 * A guest-physical to host-physical table with three leaf levels (4 KiB,
 * 2 MiB, 1 GiB), as arch/x86/kvm/mmu/tdp_mmu.c builds it. Leaves are kept in
 * one map per level keyed by the gfn index at that level, so memory grows
 * with the number of leaves, never with the bytes they cover. A leaf holds
 * the first pfn it maps and whether it is writable.
 *
 * Rules the kernel follows and the model keeps:
 * - a huge leaf is only installed over an empty range; when smaller leaves
 *   already sit under it the fault maps at the level below
 *   (`kvm_tdp_mmu_map` descends instead of replacing a child table);
 * - gfn and pfn of a huge leaf are both aligned to the leaf size
 *   (`kvm_mmu_hugepage_adjust`);
 * - a zap of any part of a huge leaf removes the whole leaf
 *   (`kvm_tdp_mmu_unmap_gfn_range` / `tdp_mmu_zap_leafs`).
 *
 * Locking: every method is synchronous. Callers hold `kvm->mmu_lock`
 * (asserted by the VM, not here).
 *
 * @module
 */
import { pagesPerHpage, PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K } from "./constants.ts";

/** One translation found by {@linkcode Stage2.lookup}. */
export interface Stage2Leaf {
  /** Host pfn of the looked-up gfn (not of the leaf start). */
  readonly pfn: number;
  /** Leaf level (`PG_LEVEL_4K` .. `PG_LEVEL_1G`). */
  readonly level: number;
  /** Writable. */
  readonly writable: boolean;
}

/** Counters of one stage-2 table. */
export interface Stage2Stats {
  /** Leaves installed, per level index 1..3. */
  readonly installed: number[];
  /** Leaves zapped. */
  zapped: number;
  /** Remote TLB flushes requested (`kvm_flush_remote_tlbs`). */
  tlbFlushes: number;
}

/**
 * A stage-2 table.
 *
 * @example
 * ```ts
 * import { Stage2, PG_LEVEL_2M } from "@dmalab/kvm";
 * const s2 = new Stage2();
 * s2.map(512, 0x80000, PG_LEVEL_2M, true);
 * s2.lookup(513)?.pfn; // 0x80001
 * s2.zapGfnRange(600, 601); // 1: the whole 2 MiB leaf goes
 * ```
 */
export class Stage2 {
  readonly #levels: Map<number, number>[] = [new Map(), new Map(), new Map(), new Map()];
  /** Number of 4K leaves under each 2M index, and of 4K+2M leaves under each 1G index. */
  readonly #under2m = new Map<number, number>();
  readonly #under1g = new Map<number, number>();
  /** Counters. */
  readonly stats: Stage2Stats = { installed: [0, 0, 0, 0], zapped: 0, tlbFlushes: 0 };

  /** Number of leaves at `level`, or at every level when omitted. */
  leaves(level?: number): number {
    if (level !== undefined) return this.#levels[level]!.size;
    return this.#levels[1]!.size + this.#levels[2]!.size + this.#levels[3]!.size;
  }

  /** Bytes mapped by all leaves. */
  get mappedBytes(): number {
    let b = 0;
    for (let l = PG_LEVEL_4K; l <= PG_LEVEL_1G; l++) {
      b += this.#levels[l]!.size * pagesPerHpage(l) * 4096;
    }
    return b;
  }

  /** The translation of `gfn`, or null when no leaf covers it. */
  lookup(gfn: number): Stage2Leaf | null {
    for (let l = PG_LEVEL_1G; l >= PG_LEVEL_4K; l--) {
      const span = pagesPerHpage(l);
      const e = this.#levels[l]!.get(Math.floor(gfn / span));
      if (e !== undefined) {
        return { pfn: Math.floor(e / 2) + (gfn % span), level: l, writable: (e & 1) === 1 };
      }
    }
    return null;
  }

  /**
   * The largest level at or below `level` where a leaf covering `gfn` can
   * go without replacing smaller leaves.
   */
  fitLevel(gfn: number, level: number): number {
    if (level >= PG_LEVEL_1G && (this.#under1g.get(Math.floor(gfn / pagesPerHpage(3))) ?? 0) > 0) {
      level = PG_LEVEL_2M;
    }
    if (level >= PG_LEVEL_2M && (this.#under2m.get(Math.floor(gfn / pagesPerHpage(2))) ?? 0) > 0) {
      level = PG_LEVEL_4K;
    }
    return level;
  }

  /**
   * Installs a leaf at `level` for the aligned block containing `gfn`,
   * pointing at the aligned block containing `pfn`. Throws when the gfn and
   * pfn offsets inside the block differ or when smaller leaves sit under it
   * (use {@linkcode Stage2.fitLevel} first).
   */
  map(gfn: number, pfn: number, level: number, writable: boolean): void {
    const span = pagesPerHpage(level);
    if (gfn % span !== pfn % span) {
      throw new Error(
        `stage2: gfn 0x${gfn.toString(16)} and pfn 0x${
          pfn.toString(16)
        } differ inside a level-${level} leaf`,
      );
    }
    if (this.fitLevel(gfn, level) !== level) {
      throw new Error(
        `stage2: smaller leaves under the level-${level} block of gfn 0x${gfn.toString(16)}`,
      );
    }
    const idx = Math.floor(gfn / span);
    const map = this.#levels[level]!;
    const prev = this.lookup(gfn);
    if (prev && prev.level > level) {
      throw new Error(
        `stage2: gfn 0x${gfn.toString(16)} is already under a level-${prev.level} leaf`,
      );
    }
    const base = pfn - (pfn % span);
    if (!map.has(idx)) {
      this.stats.installed[level]!++;
      if (level === PG_LEVEL_4K) {
        const i2 = Math.floor(gfn / pagesPerHpage(2));
        this.#under2m.set(i2, (this.#under2m.get(i2) ?? 0) + 1);
      }
      if (level <= PG_LEVEL_2M) {
        const i3 = Math.floor(gfn / pagesPerHpage(3));
        this.#under1g.set(i3, (this.#under1g.get(i3) ?? 0) + 1);
      }
    }
    map.set(idx, base * 2 + (writable ? 1 : 0));
  }

  #drop(level: number, idx: number): void {
    this.#levels[level]!.delete(idx);
    this.stats.zapped++;
    const gfn = idx * pagesPerHpage(level);
    if (level === PG_LEVEL_4K) {
      const i2 = Math.floor(gfn / pagesPerHpage(2));
      const n = (this.#under2m.get(i2) ?? 1) - 1;
      if (n) this.#under2m.set(i2, n);
      else this.#under2m.delete(i2);
    }
    if (level <= PG_LEVEL_2M) {
      const i3 = Math.floor(gfn / pagesPerHpage(3));
      const n = (this.#under1g.get(i3) ?? 1) - 1;
      if (n) this.#under1g.set(i3, n);
      else this.#under1g.delete(i3);
    }
  }

  /**
   * Zaps every leaf overlapping gfns `[start, end)`; returns how many leaves
   * went (`kvm_unmap_gfn_range`). A non-zero result needs a TLB flush.
   */
  zapGfnRange(start: number, end: number): number {
    if (end <= start) return 0;
    let n = 0;
    for (let l = PG_LEVEL_1G; l >= PG_LEVEL_4K; l--) {
      const span = pagesPerHpage(l);
      const map = this.#levels[l]!;
      const first = Math.floor(start / span);
      const last = Math.floor((end - 1) / span);
      if (last - first + 1 > map.size) {
        for (const idx of [...map.keys()]) {
          if (idx >= first && idx <= last) {
            this.#drop(l, idx);
            n++;
          }
        }
      } else {
        for (let idx = first; idx <= last; idx++) {
          if (map.has(idx)) {
            this.#drop(l, idx);
            n++;
          }
        }
      }
    }
    if (n) this.stats.tlbFlushes++;
    return n;
  }

  /** Zaps everything (`kvm_mmu_zap_all`). */
  zapAll(): number {
    return this.zapGfnRange(0, Number.MAX_SAFE_INTEGER);
  }

  /**
   * Every leaf whose host range overlaps pfns `[start, end)`, as
   * `{gfn, pfn, level}` of the leaf start (for invariant checks).
   */
  leavesPointingInto(start: number, end: number): { gfn: number; pfn: number; level: number }[] {
    const out: { gfn: number; pfn: number; level: number }[] = [];
    for (let l = PG_LEVEL_4K; l <= PG_LEVEL_1G; l++) {
      const span = pagesPerHpage(l);
      for (const [idx, e] of this.#levels[l]!) {
        const pfn = Math.floor(e / 2);
        if (pfn < end && start < pfn + span) out.push({ gfn: idx * span, pfn, level: l });
      }
    }
    return out;
  }
}
