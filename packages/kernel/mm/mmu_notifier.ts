/**
 * DOC: mmu notifiers
 *
 * mm/mmu_notifier.c: secondary MMUs (KVM stage-2, IOMMU SVA, RDMA ODP, HMM
 * users) learn that CPU page-table entries of an mm are about to change.
 *
 * {@linkcode MmuNotifier} is the classic subscription: `invalidate_range_start`
 * / `invalidate_range_end` around every zap, `release` when the mm is torn
 * down (or the subscription is unregistered first). Subscriptions are kept
 * newest first (`hlist_add_head_rcu`), and called in that order.
 *
 * {@linkcode MmuIntervalNotifier} covers one range and uses the sequence
 * protocol exactly as the kernel does:
 * - the mm's `invalidate_seq` starts at 2 and is odd while any invalidation
 *   that hits an interval notifier is in progress;
 * - at `invalidate_range_start` the overlapping subscriptions' `invalidate`
 *   callbacks get the current (odd) seq; each takes the user's lock and calls
 *   {@linkcode MmuIntervalNotifier.setSeq} with it;
 * - {@linkcode MmuIntervalNotifier.readBegin} returns the subscription's seq,
 *   first sleeping while that seq equals the mm's odd seq (its invalidation is
 *   still running);
 * - {@linkcode MmuIntervalNotifier.readRetry} (under the user's lock) and
 *   {@linkcode MmuIntervalNotifier.checkRetry} (lockless hint) are true when
 *   an invalidation started since `readBegin`, so the user must retry;
 * - inserting or removing during an invalidation is deferred to its end.
 *
 * A range is blockable (`mmu_notifier_range_blockable`) unless flags say
 * otherwise (the OOM reaper, mm teardown's interval release); callbacks on a
 * non-blockable range run with preemption counted off, so sleeping there is
 * reported as the kernel's `non_block_start` would. A callback failing a
 * blockable range is a WARN; failing a non-blockable one with -EAGAIN makes
 * the invalidation fail, after the subscriptions that started get their end.
 *
 * Locking: `mmu_notifier_register` takes mmap_lock for write; the callbacks
 * run under whatever the zapping path holds (i_mmap_rwsem for
 * `unmap_mapping_range`, mmap_lock for munmap) and inside the lockdep
 * pseudo-lock `__mmu_notifier_invalidate_range_start_map`, which
 * `mmu_interval_read_begin` also takes, so a reader that waits for an
 * invalidation while holding a lock the callback needs is reported.
 *
 * @module
 */
import { KernelError } from "../errors.ts";
import { Errno } from "../errno.ts";
import { WaitQueueHead } from "../sched/wait_queue.ts";
import type { Kernel } from "../world.ts";
import type { MmStruct } from "./mm_struct.ts";

/** `enum mmu_notifier_event`. */
export type MmuNotifyEvent =
  | "unmap"
  | "clear"
  | "protection_vma"
  | "protection_page"
  | "soft_dirty"
  | "release"
  | "migrate"
  | "exclusive";

/** `MMU_NOTIFIER_RANGE_BLOCKABLE`. */
export const MMU_NOTIFIER_RANGE_BLOCKABLE = 1;

/** `struct mmu_notifier_range`. */
export interface MmuNotifierRange {
  /** The mm. */
  readonly mm: MmStruct;
  /** First byte. */
  readonly start: number;
  /** One past the last byte. */
  readonly end: number;
  /** Why. */
  readonly event: MmuNotifyEvent;
  /** `MMU_NOTIFIER_RANGE_BLOCKABLE` or 0. */
  readonly flags: number;
  /** `owner` (for device-private migration). */
  readonly owner: unknown;
}

/** `mmu_notifier_range_blockable`. */
export function mmuNotifierRangeBlockable(range: MmuNotifierRange): boolean {
  return (range.flags & MMU_NOTIFIER_RANGE_BLOCKABLE) !== 0;
}

/** `struct mmu_notifier_ops` (the members the model runs). */
export interface MmuNotifierOps {
  /** The mm is going away (or the subscription is unregistered first). */
  release?(sub: MmuNotifier, mm: MmStruct): void | Promise<void>;
  /** Before PTEs in `range` change: 0, or -EAGAIN on a non-blockable range. */
  invalidateRangeStart?(
    sub: MmuNotifier,
    range: MmuNotifierRange,
  ): number | void | Promise<number | void>;
  /** After they changed. */
  invalidateRangeEnd?(sub: MmuNotifier, range: MmuNotifierRange): void | Promise<void>;
  /** For `mmu_notifier_get`: allocates the subscription for `mm`. */
  allocNotifier?(mm: MmStruct): MmuNotifier;
  /** For `mmu_notifier_put`: frees it once the last user is gone. */
  freeNotifier?(sub: MmuNotifier): void;
}

/** `struct mmu_interval_notifier_ops`. */
export interface MmuIntervalNotifierOps {
  /**
   * Called at invalidate_range_start for an overlapping range with the new
   * odd `curSeq`; takes the user lock, calls `sub.setSeq(curSeq)`, stops
   * using the pages. False only on a non-blockable range when it cannot.
   */
  invalidate(
    sub: MmuIntervalNotifier,
    range: MmuNotifierRange,
    curSeq: number,
  ): boolean | Promise<boolean>;
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown })?.then === "function";
}

/** @internal Per-mm notifier state (`struct mmu_notifier_subscriptions`). */
export class MmuNotifierSubscriptions {
  /** Classic subscriptions, newest first. */
  readonly list: MmuNotifier[] = [];
  /** Interval subscriptions in the tree, by start. */
  itree: MmuIntervalNotifier[] = [];
  /** `invalidate_seq`: odd while an interval invalidation runs. */
  invalidateSeq = 2;
  /** `active_invalidate_ranges`. */
  activeInvalidateRanges = 0;
  /** `deferred_list`: inserts/removes held back until the invalidation ends. */
  readonly deferred: MmuIntervalNotifier[] = [];
  /** `has_itree`: an interval notifier was ever inserted. */
  hasItree = false;
  /** `wq`. */
  readonly wq: WaitQueueHead;
  /** Ranges whose start counted in `activeInvalidateRanges` (their end must uncount). */
  readonly #counted = new WeakSet<MmuNotifierRange>();
  readonly #world: Kernel;

  constructor(world: Kernel) {
    this.#world = world;
    this.wq = new WaitQueueHead(world.sched, "mmu_notifier_subscriptions->wq");
  }

  get world(): Kernel {
    return this.#world;
  }

  /** `mn_itree_is_invalidating`. */
  get invalidating(): boolean {
    return (this.invalidateSeq & 1) === 1;
  }

  /** The pseudo-lock `__mmu_notifier_invalidate_range_start_map`. */
  lockMap(): { acquire(): void; release(): void } {
    return this.#world.lockdep.map("__mmu_notifier_invalidate_range_start_map");
  }

  insertTree(sub: MmuIntervalNotifier): void {
    this.itree.push(sub);
    this.itree.sort((a, b) => a.start - b.start || a.id - b.id);
    sub.inTree = true;
  }

  removeTree(sub: MmuIntervalNotifier): void {
    this.itree = this.itree.filter((s) => s !== sub);
    sub.inTree = false;
  }

  /** Runs `fn` as the kernel's non_block_start/end section when `!blockable`. */
  async call<T>(blockable: boolean, fn: () => T | Promise<T>): Promise<T> {
    const t = this.#world.sched.current;
    if (blockable || !t) return await fn();
    t.preemptCount++;
    try {
      const r = fn();
      return isPromise(r) ? await r : r;
    } finally {
      t.preemptCount--;
    }
  }

  /** `mn_itree_inv_start_range`: the overlapping subscriptions and the seq. */
  #invStartRange(range: MmuNotifierRange): { subs: MmuIntervalNotifier[]; seq: number } {
    this.activeInvalidateRanges++;
    const subs = this.itree.filter((s) => s.start < range.end && range.start < s.end);
    if (subs.length > 0) this.invalidateSeq |= 1;
    return { subs, seq: this.invalidateSeq };
  }

  /** `mn_itree_inv_end`. */
  invEnd(): void {
    if (--this.activeInvalidateRanges > 0 || !this.invalidating) return;
    this.invalidateSeq++;
    for (const sub of this.deferred.splice(0)) {
      if (!sub.inTree) this.insertTree(sub);
      else this.removeTree(sub);
    }
    this.wq.wakeUpAll();
  }

  /** `mn_itree_invalidate`: 0 or -EAGAIN. */
  async #itreeInvalidate(range: MmuNotifierRange): Promise<number> {
    const blockable = mmuNotifierRangeBlockable(range);
    const { subs, seq } = this.#invStartRange(range);
    for (const sub of subs) {
      const ok = await this.call(blockable, () => sub.ops.invalidate(sub, range, seq));
      if (!ok) {
        if (blockable) {
          this.#world.warnOn(true, "mn_itree_invalidate: invalidate() failed on a blockable range");
          continue;
        }
        this.invEnd();
        return -Errno.EAGAIN;
      }
    }
    return 0;
  }

  /** `__mmu_notifier_invalidate_range_start`: 0 or a negative errno (non-blockable only). */
  async invalidateRangeStart(range: MmuNotifierRange): Promise<number> {
    const blockable = mmuNotifierRangeBlockable(range);
    const map = this.lockMap();
    if (blockable) map.acquire();
    try {
      if (this.hasItree) {
        this.#counted.add(range);
        const r = await this.#itreeInvalidate(range);
        if (r) {
          this.#counted.delete(range);
          return r;
        }
      }
      if (this.list.length === 0) return 0;
      let ret = 0;
      for (const sub of [...this.list]) {
        const fn = sub.ops.invalidateRangeStart;
        if (!fn) continue;
        const r = (await this.call(blockable, () => fn.call(sub.ops, sub, range))) ?? 0;
        if (r) {
          this.#world.dmesg.printk(
            "info",
            `mmu_notifier invalidate_range_start callback failed with ${r} in ${
              blockable ? "" : "non-"
            }blockable context.`,
          );
          this.#world.warnOn(
            blockable || r !== -Errno.EAGAIN,
            "mn_hlist_invalidate_range_start: bad return",
          );
          this.#world.warnOn(
            sub.ops.invalidateRangeEnd !== undefined,
            "mn_hlist_invalidate_range_start: a failing start must not have an end",
          );
          ret = r;
        }
      }
      if (ret) {
        for (const sub of [...this.list]) {
          const end = sub.ops.invalidateRangeEnd;
          if (end) await this.call(blockable, () => end.call(sub.ops, sub, range));
        }
      }
      return ret;
    } finally {
      if (blockable) map.release();
    }
  }

  /** `__mmu_notifier_invalidate_range_end`. */
  async invalidateRangeEnd(range: MmuNotifierRange): Promise<void> {
    const blockable = mmuNotifierRangeBlockable(range);
    const map = this.lockMap();
    map.acquire();
    try {
      if (this.#counted.has(range)) {
        this.#counted.delete(range);
        this.invEnd();
      }
      for (const sub of [...this.list]) {
        const end = sub.ops.invalidateRangeEnd;
        if (end) await this.call(blockable, () => end.call(sub.ops, sub, range));
      }
    } finally {
      map.release();
    }
  }

  /** `__mmu_notifier_release`: interval subscriptions see a RELEASE range, classic ones `release`. */
  async release(mm: MmStruct): Promise<void> {
    if (this.itree.length > 0) {
      const range: MmuNotifierRange = {
        mm,
        start: 0,
        end: Number.MAX_SAFE_INTEGER,
        event: "release",
        flags: 0,
        owner: null,
      };
      const { subs, seq } = this.#invStartRange(range);
      for (const sub of subs) {
        const ok = await this.call(false, () => sub.ops.invalidate(sub, range, seq));
        this.#world.warnOn(!ok, "mn_itree_release: invalidate() failed");
      }
      this.invEnd();
    }
    for (const sub of [...this.list]) {
      const rel = sub.ops.release;
      if (rel) await rel.call(sub.ops, sub, mm);
    }
    for (const sub of this.list.splice(0)) sub.unhashed = true;
  }
}

/**
 * `struct mmu_notifier`: a classic subscription.
 *
 * @example
 * ```ts
 * import { Kernel, MmStruct, MmuNotifier } from "@dmalab/kernel";
 * const world = new Kernel();
 * const mm = new MmStruct(world);
 * const seen: string[] = [];
 * const sub = new MmuNotifier({
 *   invalidateRangeStart: (_s, r) => { seen.push(`${r.event} ${r.start.toString(16)}`); },
 * });
 * await world.runTask("kvm", async () => {
 *   await sub.register(mm);
 *   const addr = await mm.mmap({ length: 4096 });
 *   await mm.munmap(addr, 4096);
 *   await sub.unregister();
 * });
 * seen.length; // 1: the munmap
 * ```
 */
export class MmuNotifier {
  /** `ops`. */
  readonly ops: MmuNotifierOps;
  /** The mm once registered. */
  mm: MmStruct | null = null;
  /** @internal True once released by mm teardown (`hlist_unhashed`). */
  unhashed = false;
  /** `users`: references taken through `mmu_notifier_get`. */
  users = 0;
  #world: Kernel | null = null;

  /** A subscription with `ops`. */
  constructor(ops: MmuNotifierOps) {
    this.ops = ops;
  }

  /** `mmu_notifier_register`: takes mmap_lock for write. */
  async register(mm: MmStruct): Promise<void> {
    await mm.mmapLock.writeLock();
    try {
      this.registerLocked(mm);
    } finally {
      mm.mmapLock.writeUnlock();
    }
  }

  /**
   * `__mmu_notifier_register`: caller holds mmap_lock for write. -EBUSY when
   * already registered; a BUG on a dead mm (`mm_users` 0).
   */
  registerLocked(mm: MmStruct): void {
    mm.mmapLock.assertWriteLocked("__mmu_notifier_register");
    if (this.mm) {
      throw new KernelError("EBUSY", "mmu_notifier_register: subscription already registered");
    }
    if (mm.users <= 0) {
      mm.world.bug("BUG", "BUG_ON(atomic_read(&mm->mm_users) <= 0) in __mmu_notifier_register");
      throw new KernelError("EINVAL", "mmu_notifier_register: mm is dead");
    }
    this.mm = mm;
    this.#world = mm.world;
    this.unhashed = false;
    mm.grab();
    mm.notifierSubscriptions().list.unshift(this);
  }

  /**
   * `mmu_notifier_get(ops, mm)`: the existing subscription of `mm` with
   * these ops (one more user), or a new one from `ops.allocNotifier`,
   * registered. Takes mmap_lock for write. -EINVAL without `allocNotifier`.
   */
  static async get(ops: MmuNotifierOps, mm: MmStruct): Promise<MmuNotifier> {
    if (!ops.allocNotifier) {
      throw new KernelError("EINVAL", "mmu_notifier_get: ops has no alloc_notifier");
    }
    await mm.mmapLock.writeLock();
    try {
      if (mm.hasNotifiers) {
        const found = mm.notifierSubscriptions().list.find((s) => s.ops === ops && !s.unhashed);
        if (found) {
          found.users++;
          return found;
        }
      }
      const sub = ops.allocNotifier(mm);
      sub.registerLocked(mm);
      sub.users = 1;
      return sub;
    } finally {
      mm.mmapLock.writeUnlock();
    }
  }

  /**
   * `mmu_notifier_put`: drops a `get` reference; the last one unhooks the
   * subscription (without calling `release`) and hands it to
   * `ops.freeNotifier`. Putting more than was got is a WARN.
   */
  put(): void {
    const mm = this.mm;
    if (this.users <= 0 || !mm) {
      this.#world?.warnOn(true, "mmu_notifier_put: no reference to put");
      return;
    }
    if (--this.users > 0) return;
    const subs = mm.notifierSubscriptions();
    const i = subs.list.indexOf(this);
    if (i >= 0) subs.list.splice(i, 1);
    this.unhashed = true;
    this.mm = null;
    this.ops.freeNotifier?.(this);
    mm.drop();
  }

  /**
   * `mmu_notifier_unregister`: calls `release` unless teardown already did,
   * then drops the subscription. -EINVAL when not registered.
   */
  async unregister(): Promise<void> {
    const mm = this.mm;
    if (!mm) {
      throw new KernelError("EINVAL", "mmu_notifier_unregister: subscription not registered");
    }
    const subs = mm.notifierSubscriptions();
    if (!this.unhashed) {
      if (this.ops.release) await this.ops.release(this, mm);
      const i = subs.list.indexOf(this);
      if (i >= 0) subs.list.splice(i, 1);
    }
    this.mm = null;
    this.unhashed = true;
    mm.drop();
  }
}

/**
 * `struct mmu_interval_notifier`.
 *
 * @example
 * ```ts
 * import { Kernel, MmStruct, MmuIntervalNotifier } from "@dmalab/kernel";
 * const world = new Kernel();
 * const mm = new MmStruct(world);
 * await world.runTask("user", async () => {
 *   const addr = await mm.mmap({ length: 8192 });
 *   const sub = await MmuIntervalNotifier.insert(mm, addr, 8192, {
 *     invalidate: (s, _range, seq) => { s.setSeq(seq); return true; },
 *   });
 *   const seq = await sub.readBegin();
 *   await mm.munmap(addr, 8192);
 *   sub.readRetry(seq); // true: an invalidation ran since read_begin
 *   await sub.remove();
 * });
 * ```
 */
export class MmuIntervalNotifier {
  /** First byte covered. */
  readonly start: number;
  /** One past the last byte. */
  readonly end: number;
  /** The ops. */
  readonly ops: MmuIntervalNotifierOps;
  /** The mm. */
  readonly mm: MmStruct;
  /** World id. */
  readonly id: number;
  /** `invalidate_seq` of this subscription. */
  invalidateSeq = 0;
  /** @internal In the interval tree (not merely deferred). */
  inTree = false;
  #removed = false;

  private constructor(mm: MmStruct, start: number, end: number, ops: MmuIntervalNotifierOps) {
    this.mm = mm;
    this.start = start;
    this.end = end;
    this.ops = ops;
    this.id = mm.world.nextId();
  }

  /**
   * `mmu_interval_notifier_insert`: -EINVAL for an empty or overflowing
   * range. The first notifier of an mm allocates its subscriptions under
   * mmap_lock for write (`mmu_notifier_register(NULL, mm)`), so this may
   * sleep. During an invalidation the insert is deferred to its end and the
   * new subscription starts "invalidating" (its first `readBegin` waits).
   */
  static async insert(
    mm: MmStruct,
    start: number,
    length: number,
    ops: MmuIntervalNotifierOps,
  ): Promise<MmuIntervalNotifier> {
    MmuIntervalNotifier.#checkRange(start, length);
    if (!mm.hasNotifiers) {
      await mm.mmapLock.writeLock();
      try {
        mm.notifierSubscriptions();
      } finally {
        mm.mmapLock.writeUnlock();
      }
    }
    return MmuIntervalNotifier.#insert(mm, start, length, ops);
  }

  /** `mmu_interval_notifier_insert_locked`: the caller holds mmap_lock for write. */
  static insertLocked(
    mm: MmStruct,
    start: number,
    length: number,
    ops: MmuIntervalNotifierOps,
  ): MmuIntervalNotifier {
    mm.mmapLock.assertWriteLocked("mmu_interval_notifier_insert_locked");
    MmuIntervalNotifier.#checkRange(start, length);
    return MmuIntervalNotifier.#insert(mm, start, length, ops);
  }

  static #checkRange(start: number, length: number): void {
    if (length <= 0 || start < 0 || start + length > Number.MAX_SAFE_INTEGER) {
      throw new KernelError(
        "EINVAL",
        `mmu_interval_notifier_insert: bad range 0x${start.toString(16)}+0x${length.toString(16)}`,
      );
    }
  }

  /** `__mmu_interval_notifier_insert`. */
  static #insert(
    mm: MmStruct,
    start: number,
    length: number,
    ops: MmuIntervalNotifierOps,
  ): MmuIntervalNotifier {
    const sub = new MmuIntervalNotifier(mm, start, start + length, ops);
    const subs = mm.notifierSubscriptions();
    mm.grab();
    subs.hasItree = true;
    if (subs.activeInvalidateRanges > 0) {
      if (subs.invalidating) {
        subs.deferred.push(sub);
      } else {
        subs.invalidateSeq |= 1;
        subs.insertTree(sub);
      }
      sub.invalidateSeq = subs.invalidateSeq;
    } else {
      mm.world.warnOn(
        subs.invalidating,
        "mmu_interval_notifier_insert: invalidating with no active range",
      );
      sub.invalidateSeq = subs.invalidateSeq - 1;
      subs.insertTree(sub);
    }
    return sub;
  }

  /**
   * `mmu_interval_notifier_remove`: may sleep until a running invalidation
   * that still sees this subscription ends. After it returns no callback
   * runs. Removing twice is -EINVAL.
   */
  async remove(): Promise<void> {
    if (this.#removed) {
      throw new KernelError("EINVAL", "mmu_interval_notifier_remove: already removed");
    }
    this.#removed = true;
    const subs = this.mm.notifierSubscriptions();
    let seq = 0;
    if (subs.invalidating) {
      if (!this.inTree) {
        const i = subs.deferred.indexOf(this);
        if (i >= 0) subs.deferred.splice(i, 1);
      } else {
        subs.deferred.push(this);
        seq = subs.invalidateSeq;
      }
    } else {
      subs.removeTree(this);
    }
    const map = subs.lockMap();
    map.acquire();
    map.release();
    if (seq) await subs.wq.waitEvent(() => subs.invalidateSeq !== seq);
    this.mm.drop();
  }

  /**
   * `mmu_interval_read_begin`: the seq to pass to `readRetry`; sleeps while
   * an invalidation of this subscription is in progress.
   */
  async readBegin(): Promise<number> {
    const subs = this.mm.notifierSubscriptions();
    const seq = this.invalidateSeq;
    const isInvalidating = seq === subs.invalidateSeq;
    const map = subs.lockMap();
    map.acquire();
    map.release();
    if (isInvalidating) await subs.wq.waitEvent(() => subs.invalidateSeq !== seq);
    return seq;
  }

  /** `mmu_interval_set_seq`: from `invalidate`, under the user lock. */
  setSeq(curSeq: number): void {
    this.invalidateSeq = curSeq;
  }

  /** `mmu_interval_read_retry`: under the user lock; true means retry. */
  readRetry(seq: number): boolean {
    return this.invalidateSeq !== seq;
  }

  /** `mmu_interval_check_retry`: lockless early check; true means retry. */
  checkRetry(seq: number): boolean {
    return this.invalidateSeq !== seq;
  }
}
