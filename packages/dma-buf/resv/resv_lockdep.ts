/**
 * DOC: dma_resv lockdep priming
 *
 * `dma_resv_lockdep()` (drivers/dma-buf/dma-resv.c, a subsys_initcall with
 * CONFIG_LOCKDEP) teaches lockdep the cross-driver lock order once at boot:
 *
 *   mmap_lock (read) -> reservation_ww_class_acquire ->
 *   reservation_ww_class_mutex -> fs_reclaim -> i_mmap_rwsem ->
 *   mmu_notifier_invalidate_range_start -> dma_fence_map (write)
 *
 * so that, from the first buffer on, lockdep reports a driver that takes a
 * reservation lock under mmap_lock's inverse, allocates with GFP_KERNEL or
 * takes a reservation lock inside a fence signalling section, or waits for
 * a fence where the order forbids it. Here it runs once per world, when the
 * world's first reservation object is initialised, in a boot-like context:
 * locks the current task holds are set aside so they add no dependency.
 *
 * Class names are the ones @dmalab/kernel's mm uses for the same locks
 * (`&mm->mmap_lock`, `&mapping->i_mmap_rwsem`,
 * `__mmu_notifier_invalidate_range_start_map`), plus `fs_reclaim`,
 * `dma_fence_map` and the two reservation_ww_class keys, so the
 * dependencies meet the real locks.
 *
 * Locking rules: none held; runs synchronously.
 *
 * @module
 */
import { type Kernel, LdWait, WwAcquireCtx, WwMutex } from "@dmalab/kernel";
import { reservationWwClass } from "./ww_class.ts";
import { dmaFenceMightWait } from "../fence/signalling.ts";

/** Lockdep class of `mm->mmap_lock`. */
export const MMAP_LOCK_CLASS = "&mm->mmap_lock";
/** Lockdep map of `fs_reclaim_acquire`. */
export const FS_RECLAIM_MAP = "fs_reclaim";
/** Lockdep class of `mapping->i_mmap_rwsem`. */
export const I_MMAP_RWSEM_CLASS = "&mapping->i_mmap_rwsem";
/**
 * Lockdep map of `__mmu_notifier_invalidate_range_start_map` (the name
 * @dmalab/kernel's mm gives it, so the dependencies meet).
 */
export const MMU_NOTIFIER_MAP = "__mmu_notifier_invalidate_range_start_map";

/**
 * `dma_resv_lockdep()`: primes the order above in `world` (once; later calls
 * do nothing). Called by the first `DmaResv` of a world.
 */
export function primeDmaResvLockdep(world: Kernel): void {
  const slot = world.ext("dma-buf:resv-lockdep", () => ({ primed: false }));
  if (slot.primed) return;
  slot.primed = true;
  const lockdep = world.lockdep;
  if (!lockdep.active) return;
  const task = lockdep.current();
  const held = task.heldLocks as unknown[];
  const aside = held.splice(0, held.length);
  try {
    const mmap = lockdep.newMap(MMAP_LOCK_CLASS, { waitInner: LdWait.SLEEP });
    const iMmap = lockdep.newMap(I_MMAP_RWSEM_CLASS, { waitInner: LdWait.SLEEP });
    const fsReclaim = lockdep.map(FS_RECLAIM_MAP);
    const mmuNotifier = lockdep.map(MMU_NOTIFIER_MAP);
    const obj = new WwMutex(world, reservationWwClass, "dma_resv_lockdep.obj");
    mmap.acquireRead({ site: "mmap_read_lock" });
    const ctx = new WwAcquireCtx(world, reservationWwClass);
    lockdep.acquire(obj.depMap, { nestLock: ctx.depMap, site: "dma_resv_lock" });
    fsReclaim.acquire({ site: "fs_reclaim_acquire" });
    iMmap.acquire({ site: "i_mmap_lock_write" });
    iMmap.release("i_mmap_unlock_write");
    mmuNotifier.acquire({ site: "lock_map_acquire" });
    dmaFenceMightWait(world);
    mmuNotifier.release("lock_map_release");
    fsReclaim.release("fs_reclaim_release");
    lockdep.release(obj.depMap, "ww_mutex_unlock");
    ctx.fini();
    mmap.release("mmap_read_unlock");
  } finally {
    held.push(...aside);
  }
}
