/**
 * DOC: mm locks
 *
 * Every lock the mm code takes, in one place, built on the kernel package's
 * locking primitives (so lockdep sees them):
 *
 * - `mm->mmap_lock`: a {@linkcode RwSemaphore}. Faults, GUP and
 *   `follow_pfnmap_start` need it for read (`mmap_assert_locked`); changing
 *   VMAs (`mmap`, `munmap`, `mremap`, `vm_flags_set`,
 *   `mmu_notifier_register`) needs it for write (`mmap_assert_write_locked`).
 * - `mm->page_table_lock` (the PTE lock): a {@linkcode SpinLock}; held while
 *   page-table entries change and between `follow_pfnmap_start` and
 *   `follow_pfnmap_end`, so the caller is in atomic context meanwhile.
 * - `mapping->i_mmap_rwsem`: an {@linkcode RwSemaphore}, read while
 *   `unmap_mapping_range` walks the VMAs of a file, write while VMAs are
 *   linked or unlinked.
 *
 * Lock order, as mm/rmap.c documents it: mmap_lock, then i_mmap_rwsem, then
 * the page-table lock.
 *
 * The assertions check ownership directly (not only through lockdep), so
 * they hold with lockdep off too; a failure is a `VM_BUG_ON_MM`-style BUG.
 *
 * @module
 */
import { RwSemaphore } from "../locking/rwsem.ts";
import { SpinLock } from "../locking/spinlock.ts";
import type { Kernel } from "../world.ts";

/** `mm->mmap_lock` with the mmap_* helpers of include/linux/mmap_lock.h. */
export class MmapLock {
  /** The semaphore. */
  readonly sem: RwSemaphore;
  readonly #world: Kernel;

  /** `mmap_init_lock`. */
  constructor(world: Kernel, name: string) {
    this.#world = world;
    this.sem = new RwSemaphore(world, name);
  }

  /** `mmap_read_lock`. */
  readLock(): Promise<void> {
    return this.sem.downRead();
  }

  /** `mmap_read_unlock`. */
  readUnlock(): void {
    this.sem.upRead();
  }

  /** `mmap_write_lock`. */
  writeLock(): Promise<void> {
    return this.sem.downWrite();
  }

  /** `mmap_write_unlock`. */
  writeUnlock(): void {
    this.sem.upWrite();
  }

  /** True when the current task holds it (read or write). */
  heldByCurrent(): boolean {
    const t = this.#world.sched.current;
    if (!t) return false;
    return this.sem.writer === t || this.sem.readers.includes(t);
  }

  /** True when the current task holds it for write. */
  writeHeldByCurrent(): boolean {
    const t = this.#world.sched.current;
    return t !== null && this.sem.writer === t;
  }

  /** `mmap_assert_locked`. */
  assertLocked(where: string): void {
    if (!this.heldByCurrent()) {
      this.#world.bug(
        "BUG",
        `BUG: ${where}: mmap_assert_locked: ${this.sem.name} is not held by the caller`,
      );
    }
  }

  /** `mmap_assert_write_locked`. */
  assertWriteLocked(where: string): void {
    if (!this.writeHeldByCurrent()) {
      this.#world.bug(
        "BUG",
        `BUG: ${where}: mmap_assert_write_locked: ${this.sem.name} is not held for write`,
      );
    }
  }
}

/** A page-table lock (`pte_lockptr`). */
export function newPtl(world: Kernel, name: string): SpinLock {
  return new SpinLock(world, name);
}

/** `i_mmap_rwsem`. */
export function newIMmapRwsem(world: Kernel, name: string): RwSemaphore {
  return new RwSemaphore(world, name);
}
