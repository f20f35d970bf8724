/**
 * @dmalab/kernel: the core every dmalab package stands on. A world
 * ({@linkcode Kernel}) with a deterministic scheduler and virtual time, errno
 * and the two failure kinds, dmesg, trace events, locks with lockdep,
 * physical memory and mm, and the driver model.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * const world = new Kernel({ seed: 7 });
 * await world.runTask("hello", async () => {
 *   await world.sched.msleep(1);
 * });
 * ```
 *
 * @module
 */
export * from "./errno.ts";
export * from "./errors.ts";
export * from "./dmesg.ts";
export * from "./trace.ts";
export * from "./world.ts";
export * from "./device.ts";
export * from "./sched/policy.ts";
export * from "./sched/task.ts";
export * from "./sched/scheduler.ts";
export * from "./sched/wait_queue.ts";
export * from "./sched/completion.ts";
export * from "./locking/lockdep.ts";
export {
  Mutex,
  type MutexLockOptions,
  type MutexOptions,
  type MutexWaiter,
  type NestLock,
  type WwWaiterCtx,
} from "./locking/mutex.ts";
export * from "./locking/spinlock.ts";
export * from "./locking/rwsem.ts";
export * from "./locking/ww_mutex.ts";
export * from "./refcount.ts";
export * from "./memory/sparse_store.ts";
export * from "./memory/e820.ts";
export * from "./memory/buddy.ts";
export * from "./memory/page.ts";
export * from "./memory/phys_mem.ts";
export * from "./fs/mod.ts";
export * from "./mm/vma.ts";
export * from "./mm/page_table.ts";
export * from "./mm/locks.ts";
export * from "./mm/address_space.ts";
export * from "./mm/mmu_notifier.ts";
export * from "./mm/mm_struct.ts";
export * from "./mm/memory.ts";
export * from "./mm/gup.ts";
