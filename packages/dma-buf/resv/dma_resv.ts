/**
 * DOC: dma_resv
 *
 * `struct dma_resv` (drivers/dma-buf/dma-resv.c, include/linux/dma-resv.h):
 * the fences attached to a shared resource, each tagged with a usage, behind
 * a ww_mutex of `reservation_ww_class` (Wait-Die).
 *
 * Locking rules (checked):
 * - `reserveFences`, `addFence`, `replaceFences`, `copyFences` (on the
 *   destination), the locked iterator and `describe` require the lock held
 *   by the calling task (`dma_resv_assert_held`).
 * - `addFence` needs a slot reserved since the lock was taken: with
 *   CONFIG_DEBUG_MUTEXES (the default here; world variant
 *   `CONFIG_DEBUG_MUTEXES=n` turns it off) `unlock` first shrinks the
 *   reservation to the fences present (`dma_resv_reset_max_fences`), and an
 *   add without a free slot is the kernel's BUG_ON.
 * - Queries (`getFences`, `getSingleton`, `testSignaled`, `waitTimeout`,
 *   `setDeadline`) and the unlocked iterator need no lock; the unlocked walk
 *   restarts from the beginning when the fence list is replaced under it.
 * - Waiting for fences while holding the lock is allowed; taking the lock in
 *   a fence signalling section is not (lockdep is primed with
 *   `dma_resv_lockdep`'s order on the first reservation object of a world).
 *
 * The list follows the kernel: `{num_fences, max_fences, table}` replaced as
 * a whole by `reserveFences` (which also drops signalled fences) and
 * `copyFences`, and updated in place by `addFence`/`replaceFences`. Its
 * capacity is the kmalloc bucket the kernel would use (`ksize`).
 *
 * @module
 */
import { type Kernel, type WwAcquireCtx, WwMutex } from "@dmalab/kernel";
import { type DmaFence, dmaFenceContextAlloc, dmaFenceIsLaterOrSame } from "../fence/dma_fence.ts";
import { DmaFenceArray } from "../fence/dma_fence_array.ts";
import { primeDmaResvLockdep } from "./resv_lockdep.ts";
import { reservationWwClass } from "./ww_class.ts";

/**
 * `enum dma_resv_usage`, ordered: a query for usage U returns every fence
 * whose usage is <= U.
 */
export const DmaResvUsage = {
  /** `DMA_RESV_USAGE_KERNEL`: memory management (moves, clears). */
  KERNEL: 0,
  /** `DMA_RESV_USAGE_WRITE`: implicit-sync writers. */
  WRITE: 1,
  /** `DMA_RESV_USAGE_READ`: implicit-sync readers. */
  READ: 2,
  /** `DMA_RESV_USAGE_BOOKKEEP`: no implicit sync. */
  BOOKKEEP: 3,
} as const;

/** One of {@linkcode DmaResvUsage}. */
export type DmaResvUsage = typeof DmaResvUsage[keyof typeof DmaResvUsage];

const USAGE_NAMES = ["kernel", "write", "read", "bookkeep"] as const;

/** The name `dma_resv_describe` prints for a usage. */
export function dmaResvUsageName(usage: DmaResvUsage): string {
  return USAGE_NAMES[usage];
}

/**
 * `dma_resv_usage_rw(write)`: the usage a new access must wait for — READ
 * for a writer (wait for readers and writers), WRITE for a reader.
 */
export function dmaResvUsageRw(write: boolean): DmaResvUsage {
  return write ? DmaResvUsage.READ : DmaResvUsage.WRITE;
}

/** kmalloc size classes (bytes) below the page allocator, as SLUB sets them up. */
const KMALLOC_SIZES = [8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192];
const PAGE_SIZE = 4096;
/** `offsetof(struct dma_resv_list, table)`: rcu_head (16) + two u32. */
const LIST_HEADER = 24;
/** One table entry: a tagged pointer. */
const ENTRY = 8;

/** `ksize(kmalloc(bytes))`. */
export function kmallocSize(bytes: number): number {
  for (const s of KMALLOC_SIZES) if (bytes <= s) return s;
  let pages = 1;
  while (pages * PAGE_SIZE < bytes) pages *= 2;
  return pages * PAGE_SIZE;
}

/** One slot of a fence list: the fence and its usage (the kernel packs both in a tagged pointer). */
export interface DmaResvEntry {
  /** The fence (the list holds a reference). */
  fence: DmaFence;
  /** Its usage. */
  usage: DmaResvUsage;
}

/** `struct dma_resv_list`. */
export class DmaResvList {
  /** `num_fences`. */
  numFences = 0;
  /** `max_fences` (what the allocation holds, from `ksize`). */
  maxFences: number;
  /** `table[]`. */
  readonly table: DmaResvEntry[] = [];

  /** `dma_resv_list_alloc(max_fences)`. */
  constructor(maxFences: number) {
    this.maxFences = Math.floor(
      (kmallocSize(LIST_HEADER + ENTRY * maxFences) - LIST_HEADER) / ENTRY,
    );
  }

  /** `dma_resv_list_free`: drops the references of the entries in use. */
  free(): void {
    for (let i = 0; i < this.numFences; i++) this.table[i]!.fence.put();
  }
}

/**
 * The reservation objects of `world` not yet finalised; the world checker
 * `dma-resv` checks each (slots within capacity, no released fence listed).
 */
export function liveResvs(world: Kernel): Set<DmaResv> {
  return world.ext("dma-buf:resv", () => {
    const set = new Set<DmaResv>();
    world.addChecker("dma-resv", () => [...set].flatMap((r) => r.check()));
    return set;
  });
}

/** `roundup_pow_of_two`. */
function roundupPowOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * `struct dma_resv_iter`: the cursor of a locked or unlocked walk.
 * Fields mirror the kernel's; tests may corrupt `fences` to force a restart
 * as the KUnit test does.
 */
export class DmaResvIter {
  /** `obj`. */
  readonly obj: DmaResv;
  /** `usage`: the maximum usage returned. */
  readonly usage: DmaResvUsage;
  /** `fence`: the current fence (the unlocked walk holds a reference). */
  fence: DmaFence | null = null;
  /** `fence_usage`. */
  fenceUsage: DmaResvUsage = DmaResvUsage.KERNEL;
  /** `index`. */
  index = 0;
  /** `fences`: the list being walked. */
  fences: DmaResvList | null | object = null;
  /** `num_fences`. */
  numFences = 0;
  /** `is_restarted`. */
  isRestarted = false;

  /** `dma_resv_iter_begin(cursor, obj, usage)`. */
  constructor(obj: DmaResv, usage: DmaResvUsage) {
    this.obj = obj;
    this.usage = usage;
  }

  #restartUnlocked(): void {
    this.index = 0;
    this.numFences = 0;
    const list = this.obj.fencesList;
    this.fences = list;
    if (list) this.numFences = list.numFences;
    this.isRestarted = true;
  }

  #walkUnlocked(): void {
    if (!this.fences) return;
    for (;;) {
      this.fence?.put();
      if (this.index >= this.numFences || !(this.fences instanceof DmaResvList)) {
        this.fence = null;
        break;
      }
      const e = this.fences.table[this.index++]!;
      this.fenceUsage = e.usage;
      this.fence = e.fence.getRcu();
      if (!this.fence) {
        this.#restartUnlocked();
        continue;
      }
      if (!this.fence.isSignaled() && this.usage >= this.fenceUsage) break;
    }
  }

  /** `dma_resv_iter_first_unlocked`: first unsignalled fence (referenced). */
  firstUnlocked(): DmaFence | null {
    do {
      this.#restartUnlocked();
      this.#walkUnlocked();
    } while (this.obj.fencesList !== this.fences);
    return this.fence;
  }

  /** `dma_resv_iter_next_unlocked`: next one, restarting if the list was replaced. */
  nextUnlocked(): DmaFence | null {
    this.isRestarted = false;
    let restart = this.obj.fencesList !== this.fences;
    do {
      if (restart) this.#restartUnlocked();
      this.#walkUnlocked();
      restart = true;
    } while (this.obj.fencesList !== this.fences);
    return this.fence;
  }

  /** `dma_resv_iter_first`: the locked walk; signalled fences included, no references. */
  first(): DmaFence | null {
    this.obj.assertHeld("dma_resv_iter_first");
    this.index = 0;
    this.fences = this.obj.fencesList;
    const f = this.next();
    this.isRestarted = true;
    return f;
  }

  /** `dma_resv_iter_next`. */
  next(): DmaFence | null {
    this.obj.assertHeld("dma_resv_iter_next");
    this.isRestarted = false;
    const list = this.fences instanceof DmaResvList ? this.fences : null;
    for (;;) {
      if (!list || this.index >= list.numFences) return null;
      const e = list.table[this.index++]!;
      this.fenceUsage = e.usage;
      if (this.fenceUsage <= this.usage) return e.fence;
    }
  }

  /** `dma_resv_iter_end`: drops the reference the unlocked walk holds. */
  end(): void {
    this.fence?.put();
    this.fence = null;
  }
}

/**
 * A reservation object.
 *
 * @example
 * ```ts
 * import { Kernel } from "@dmalab/kernel";
 * import { DmaFence, DmaResv, DmaResvUsage, dmaFenceContextAlloc } from "@dmalab/dma-buf";
 * const world = new Kernel();
 * const ops = { getDriverName: () => "gpu", getTimelineName: () => "gfx" };
 * await world.runTask("submit", async () => {
 *   const resv = new DmaResv(world);
 *   await resv.lock(null);
 *   resv.reserveFences(1);
 *   const job = new DmaFence(world, ops, dmaFenceContextAlloc(world, 1), 1);
 *   resv.addFence(job, DmaResvUsage.WRITE);
 *   resv.unlock();
 *   resv.testSignaled(DmaResvUsage.READ); // false
 *   job.signal();
 *   resv.testSignaled(DmaResvUsage.READ); // true
 *   job.put();
 *   resv.fini();
 * });
 * ```
 */
export class DmaResv {
  /** The world. */
  readonly world: Kernel;
  /** `obj->lock`: the ww_mutex of `reservation_ww_class`. */
  readonly lockObj: WwMutex;
  #fences: DmaResvList | null = null;

  /** `dma_resv_init(obj)`; `name` labels the lock in reports. */
  constructor(world: Kernel, name = "reservation_ww_class_mutex") {
    this.world = world;
    primeDmaResvLockdep(world);
    this.lockObj = new WwMutex(world, reservationWwClass, name);
    liveResvs(world).add(this);
  }

  /** Invariant violations of this object (see the world checker `dma-resv`). */
  check(): string[] {
    const out: string[] = [];
    const list = this.#fences;
    if (!list) return out;
    if (list.numFences > list.maxFences) {
      out.push(`${this.lockObj.name}: ${list.numFences} fences in ${list.maxFences} slots`);
    }
    for (let i = 0; i < list.numFences; i++) {
      const e = list.table[i]!;
      if (e.fence.freed || e.fence.refcount <= 0) {
        out.push(
          `${this.lockObj.name}: slot ${i} holds released fence ${e.fence.context}:${e.fence.seqno}`,
        );
      }
      if (e.usage < 0 || e.usage > 3) {
        out.push(`${this.lockObj.name}: slot ${i} has usage ${e.usage}`);
      }
    }
    return out;
  }

  /** The published fence list (`dma_resv_fences_list`), or null. */
  get fencesList(): DmaResvList | null {
    return this.#fences;
  }

  // ---- locking -----------------------------------------------------------

  /**
   * `dma_resv_lock(obj, ctx)`: 0, -EALREADY (ctx already holds it) or
   * -EDEADLK (back off, then {@linkcode DmaResv.lockSlow}). With a null ctx
   * it locks this one object and returns 0.
   */
  lock(ctx: WwAcquireCtx | null): Promise<number> {
    return this.lockObj.lock(ctx);
  }

  /** `dma_resv_lock_interruptible`: as `lock`, plus -EINTR on a signal. */
  lockInterruptible(ctx: WwAcquireCtx | null): Promise<number> {
    return this.lockObj.lockInterruptible(ctx);
  }

  /** `dma_resv_lock_slow`: the contended object after -EDEADLK. */
  lockSlow(ctx: WwAcquireCtx): Promise<void> {
    return this.lockObj.lockSlow(ctx);
  }

  /** `dma_resv_lock_slow_interruptible`: 0 or -EINTR. */
  lockSlowInterruptible(ctx: WwAcquireCtx): Promise<number> {
    return this.lockObj.lockSlowInterruptible(ctx);
  }

  /** `dma_resv_trylock`: no context, no deadlock detection. */
  trylock(): boolean {
    return this.lockObj.trylock(null);
  }

  /** `dma_resv_is_locked`. */
  isLocked(): boolean {
    return this.lockObj.isLocked();
  }

  /** `dma_resv_locking_ctx`: the context holding the lock, or null. */
  lockingCtx(): WwAcquireCtx | null {
    return this.lockObj.ctx;
  }

  /** `dma_resv_held`: the current task holds the lock. */
  held(): boolean {
    const cur = this.world.sched.current;
    return cur !== null && this.lockObj.owner === cur;
  }

  /** `dma_resv_assert_held`: lockdep's report when the caller does not hold the lock. */
  assertHeld(where = "dma_resv_assert_held"): void {
    if (this.held()) return;
    const cur = this.world.sched.current;
    this.world.bug(
      "lockdep",
      `WARNING: ${where}: dma_resv lock not held`,
      `WARNING: ${where}: lockdep_assert_held(&obj->lock.base) failed\n` +
        `task ${
          cur ? `${cur.name}/${cur.pid}` : "<none>"
        } must hold ${this.lockObj.name} (dma_resv_lock)`,
    );
  }

  /**
   * `dma_resv_unlock`: with CONFIG_DEBUG_MUTEXES first drops unused
   * reservations (`dma_resv_reset_max_fences`), then unlocks.
   */
  unlock(): void {
    if (this.world.variant("CONFIG_DEBUG_MUTEXES", "y") === "y") this.resetMaxFences();
    this.lockObj.unlock();
  }

  /** `dma_resv_reset_max_fences`: `max_fences = num_fences` (lock held). */
  resetMaxFences(): void {
    this.assertHeld("dma_resv_reset_max_fences");
    const list = this.#fences;
    if (list) list.maxFences = list.numFences;
  }

  /** `dma_resv_fini`: drops every fence reference, destroys the mutex. */
  fini(): void {
    this.#fences?.free();
    this.#fences = null;
    this.lockObj.destroy();
    liveResvs(this.world).delete(this);
  }

  // ---- mutators (lock held) ---------------------------------------------

  /**
   * `dma_resv_reserve_fences(obj, num)`: makes room for `num` more fences.
   * A new list gets `max(num_fences + num, 2 * max_fences)` slots (or
   * `max(4, roundup_pow_of_two(num))` for the first), rounded up to the
   * kmalloc bucket; signalled fences are dropped while copying.
   */
  reserveFences(num: number): number {
    this.assertHeld("dma_resv_reserve_fences");
    const old = this.#fences;
    let max: number;
    if (old && old.maxFences) {
      if (old.numFences + num <= old.maxFences) return 0;
      max = Math.max(old.numFences + num, old.maxFences * 2);
    } else {
      max = Math.max(4, roundupPowOfTwo(num));
    }
    const fresh = new DmaResvList(max);
    const signaled: DmaFence[] = [];
    if (old) {
      for (let i = 0; i < old.numFences; i++) {
        const e = old.table[i]!;
        if (e.fence.isSignaled()) signaled.push(e.fence);
        else fresh.table[fresh.numFences++] = { fence: e.fence, usage: e.usage };
      }
    }
    this.#fences = fresh;
    for (const f of signaled) f.put();
    return 0;
  }

  /**
   * `dma_resv_add_fence(obj, fence, usage)`: takes a reference and replaces
   * the first entry that is signalled, or of the same context with a usage
   * >= `usage` and not later than `fence`; otherwise appends into a reserved
   * slot (BUG without one). Containers are a WARN: add their leaves.
   */
  addFence(fence: DmaFence, usage: DmaResvUsage): void {
    this.assertHeld("dma_resv_add_fence");
    this.world.warnOn(
      fence.isContainer,
      `dma_resv_add_fence: ${fence.kind} fence added (add each contained fence instead)`,
    );
    const list = this.#fences;
    const count = list ? list.numFences : 0;
    for (let i = 0; i < count; i++) {
      const old = list!.table[i]!;
      if (
        (old.fence.context === fence.context && old.usage >= usage &&
          dmaFenceIsLaterOrSame(fence, old.fence)) ||
        old.fence.isSignaled()
      ) {
        fence.get();
        list!.table[i] = { fence, usage };
        old.fence.put();
        return;
      }
    }
    if (!list || list.numFences >= list.maxFences) {
      this.world.bug(
        "BUG",
        "kernel BUG at drivers/dma-buf/dma-resv.c: dma_resv_add_fence: no reserved fence slot",
        "kernel BUG at drivers/dma-buf/dma-resv.c: dma_resv_add_fence\n" +
          `BUG_ON(fobj->num_fences >= fobj->max_fences): ${list ? list.numFences : 0} fences, ${
            list ? list.maxFences : 0
          } slots\ncall dma_resv_reserve_fences() after taking the lock (reservations are dropped at unlock)`,
      );
      return;
    }
    fence.get();
    list.table[count] = { fence, usage };
    list.numFences = count + 1;
  }

  /**
   * `dma_resv_replace_fences(obj, context, replacement, usage)`: every entry
   * of `context` becomes `replacement` (one reference per entry) with `usage`.
   */
  replaceFences(context: number, replacement: DmaFence, usage: DmaResvUsage): void {
    this.assertHeld("dma_resv_replace_fences");
    const list = this.#fences;
    for (let i = 0; list && i < list.numFences; i++) {
      const old = list.table[i]!;
      if (old.fence.context !== context) continue;
      list.table[i] = { fence: replacement.get(), usage };
      old.fence.put();
    }
  }

  /**
   * `dma_resv_copy_fences(dst, src)`: `this` (locked) gets a snapshot of
   * `src`'s unsignalled fences with their usages, replacing its list.
   */
  copyFences(src: DmaResv): number {
    this.assertHeld("dma_resv_copy_fences");
    let list: DmaResvList | null = null;
    const cursor = new DmaResvIter(src, DmaResvUsage.BOOKKEEP);
    for (let f = cursor.firstUnlocked(); f; f = cursor.nextUnlocked()) {
      if (cursor.isRestarted) {
        list?.free();
        list = new DmaResvList(cursor.numFences);
        list.numFences = 0;
      }
      f.get();
      list!.table[list!.numFences++] = { fence: f, usage: cursor.fenceUsage };
    }
    cursor.end();
    const old = this.#fences;
    this.#fences = list;
    old?.free();
    return 0;
  }

  // ---- iteration ---------------------------------------------------------

  /**
   * `dma_resv_for_each_fence(cursor, obj, usage, fence)`: the locked walk.
   * Yields every entry with usage <= `usage`, signalled ones included, with
   * no reference taken (valid while locked); `cursor.fenceUsage` is the
   * entry's usage.
   */
  *forEachFence(usage: DmaResvUsage, cursor: DmaResvIter = new DmaResvIter(this, usage)): Generator<
    DmaFence,
    void,
    void
  > {
    for (let f = cursor.first(); f; f = cursor.next()) yield f;
  }

  /**
   * `dma_resv_for_each_fence_unlocked(cursor, fence)` between
   * `dma_resv_iter_begin`/`end`: unsignalled fences with usage <= `usage`,
   * each referenced by the cursor until the next step. Check
   * `cursor.isRestarted` and reset what you accumulated when it is true.
   */
  *forEachFenceUnlocked(cursor: DmaResvIter): Generator<DmaFence, void, void> {
    try {
      for (let f = cursor.firstUnlocked(); f; f = cursor.nextUnlocked()) yield f;
    } finally {
      cursor.end();
    }
  }

  // ---- queries -----------------------------------------------------------

  /**
   * `dma_resv_get_fences(obj, usage, &num, &fences)`: referenced snapshot of
   * the unsignalled fences with usage <= `usage`.
   */
  getFences(usage: DmaResvUsage): DmaFence[] {
    const out: DmaFence[] = [];
    const cursor = new DmaResvIter(this, usage);
    for (const f of this.forEachFenceUnlocked(cursor)) {
      if (cursor.isRestarted) {
        while (out.length) out.pop()!.put();
      }
      out.push(f.get());
    }
    return out;
  }

  /**
   * `dma_resv_get_singleton(obj, usage, &fence)`: null for none, the fence
   * for one, else a new signal-on-all array on a fresh context, seqno 1. Do
   * not add the result back to this object.
   */
  getSingleton(usage: DmaResvUsage): DmaFence | null {
    const fences = this.getFences(usage);
    if (fences.length === 0) return null;
    if (fences.length === 1) return fences[0]!;
    return DmaFenceArray.create(this.world, fences, dmaFenceContextAlloc(this.world, 1), 1, false);
  }

  /**
   * `dma_resv_wait_timeout(obj, usage, intr, timeout)`: -ERESTARTSYS if
   * interrupted, 0 on timeout, else > 0 (jiffies left, or 1 with timeout 0
   * and everything signalled).
   */
  async waitTimeout(usage: DmaResvUsage, intr: boolean, timeout: number): Promise<number> {
    let ret = timeout ? timeout : 1;
    const cursor = new DmaResvIter(this, usage);
    try {
      for (let f = cursor.firstUnlocked(); f; f = cursor.nextUnlocked()) {
        ret = await f.waitTimeout(intr, timeout);
        if (ret <= 0) return ret;
        if (timeout) timeout = ret;
      }
      return ret;
    } finally {
      cursor.end();
    }
  }

  /** `dma_resv_test_signaled(obj, usage)`: no unsignalled fence with usage <= `usage`. */
  testSignaled(usage: DmaResvUsage): boolean {
    const cursor = new DmaResvIter(this, usage);
    const f = cursor.firstUnlocked();
    cursor.end();
    return f === null;
  }

  /** `dma_resv_set_deadline(obj, usage, deadline)`: forwards to each unsignalled fence. */
  setDeadline(usage: DmaResvUsage, deadline: number): void {
    const cursor = new DmaResvIter(this, usage);
    for (const f of this.forEachFenceUnlocked(cursor)) f.setDeadline(deadline);
  }

  /** `dma_resv_describe(obj, seq)`: one line per fence up to READ (lock held). */
  describe(): string {
    let out = "";
    const cursor = new DmaResvIter(this, DmaResvUsage.READ);
    for (const f of this.forEachFence(DmaResvUsage.READ, cursor)) {
      out += `\t${dmaResvUsageName(cursor.fenceUsage)} fence:${f.describe()}`;
    }
    return out;
  }

  /** Number of entries in the list (including signalled ones), for tests. */
  get numFences(): number {
    return this.#fences?.numFences ?? 0;
  }

  /** `max_fences` of the list (0 without one), for tests. */
  get maxFences(): number {
    return this.#fences?.maxFences ?? 0;
  }
}
