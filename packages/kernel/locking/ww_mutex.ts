/**
 * DOC: wound/wait mutexes
 *
 * `struct ww_mutex`, `struct ww_acquire_ctx` and `struct ww_class` as
 * include/linux/ww_mutex.h, kernel/locking/ww_mutex.h and
 * Documentation/locking/ww-mutex-design.rst define them. A ww_class is either
 * Wait-Die (`DEFINE_WD_CLASS`, e.g. `reservation_ww_class`) or Wound-Wait
 * (`DEFINE_WW_CLASS`). Each acquire context takes a ticket (`stamp`) from its
 * class at `ww_acquire_init`; a smaller stamp is older and wins.
 *
 * Rules:
 * - `ww_mutex_lock(lock, ctx)` returns 0, -EALREADY when `ctx` already holds
 *   `lock`, or -EDEADLK when the context must back off: it unlocks everything
 *   it holds, then `ww_mutex_lock_slow(contended)` and retries. A context that
 *   holds nothing never backs off (it just waits).
 * - Wait-Die: a younger context that meets an older holder (or an older
 *   waiter ahead of it) dies with -EDEADLK at once; an older one waits, and
 *   wakes younger waiters that hold locks so they can die.
 * - Wound-Wait: an older context wounds a younger holder (which gets -EDEADLK
 *   at its next contended lock while holding locks) and waits; a younger one
 *   waits for an older holder.
 * - Waiters with a context queue in stamp order; context-less waiters stay
 *   FIFO among them.
 * - Debug checks (DEBUG_WW_MUTEXES, `DEBUG_LOCKS_WARN_ON`): locking after
 *   `ww_acquire_done`, locking another mutex after -EDEADLK, locking the
 *   contended one without unlocking the rest, `ww_mutex_lock_slow` without a
 *   prior -EDEADLK, a second -EDEADLK before backing off, a mutex of another
 *   class, a stale `ww->ctx`, unlock with `acquired == 0`, `ww_acquire_done`
 *   twice, `ww_acquire_fini` with locks held. Lockdep adds: two contexts of
 *   one class in a task (recursive locking on the `_acquire` class), a second
 *   ww_mutex taken without the context (recursive locking on the `_mutex`
 *   class), `ww_acquire_fini` twice (bad unlock balance).
 *
 * `ww_mutex_lock` returns the kernel's int (0/-EALREADY/-EDEADLK/-EINTR)
 * rather than throwing, so callers write the kernel's backoff loops as is.
 * Not modelled: CONFIG_DEBUG_WW_MUTEX_SLOWPATH random -EDEADLK injection,
 * the RT (rt_mutex based) variant.
 *
 * @module
 */
import { Errno } from "../errno.ts";
import type { Task } from "../sched/task.ts";
import type { Kernel } from "../world.ts";
import { LdWait, LockClassKey, type LockdepMap } from "./lockdep.ts";
import { lockCommon, Mutex, type MutexWaiter, type WwHooks, type WwWaiterCtx } from "./mutex.ts";

/** Options for a {@linkcode WwClass}. */
export interface WwClassOptions {
  /** Wait-Die (`DEFINE_WD_CLASS`) when true; Wound-Wait (`DEFINE_WW_CLASS`) by default. */
  waitDie?: boolean;
}

/**
 * A `struct ww_class`: the algorithm, the ticket counter (per world) and the
 * two lockdep keys `<name>_acquire` and `<name>_mutex`.
 *
 * @example
 * ```ts
 * import { WwClass } from "@dmalab/kernel";
 * const reservation = new WwClass("reservation_ww_class", { waitDie: true });
 * reservation.isWaitDie; // true
 * ```
 */
export class WwClass {
  /** Class name (`reservation_ww_class`). */
  readonly name: string;
  /** Wait-Die (true) or Wound-Wait (false). */
  readonly isWaitDie: boolean;
  /** Lockdep key of acquire contexts. */
  readonly acquireKey: LockClassKey;
  /** Lockdep key of the mutexes. */
  readonly mutexKey: LockClassKey;
  readonly #stamps = new WeakMap<Kernel, number>();

  /** `DEFINE_WW_CLASS(name)` / `DEFINE_WD_CLASS(name)`. */
  constructor(name: string, options: WwClassOptions = {}) {
    this.name = name;
    this.isWaitDie = options.waitDie ?? false;
    this.acquireKey = new LockClassKey(`${name}_acquire`);
    this.mutexKey = new LockClassKey(`${name}_mutex`);
  }

  /** `atomic_long_inc_return(&ww_class->stamp)` in `world`. */
  nextStamp(world: Kernel): number {
    const s = (this.#stamps.get(world) ?? 0) + 1;
    this.#stamps.set(world, s);
    return s;
  }
}

/** Stamp comparison `__ww_ctx_less(a, b)`: true when `a` is younger than `b`. */
function ctxLess(a: WwWaiterCtx, b: WwWaiterCtx): boolean {
  return a.stamp - b.stamp > 0;
}

/**
 * A `struct ww_acquire_ctx`. The fields mirror the kernel struct and are
 * public so tests can corrupt them as lib/locking-selftest.c does; model code
 * only reads them.
 *
 * @example Lock two buffers in any order with backoff
 * ```ts
 * import { Errno, Kernel, WwAcquireCtx, WwClass, WwMutex } from "@dmalab/kernel";
 * const w = new Kernel();
 * const cls = new WwClass("demo_ww_class", { waitDie: true });
 * const objs = [new WwMutex(w, cls, "a"), new WwMutex(w, cls, "b")];
 * await w.runTask("t", async () => {
 *   const ctx = new WwAcquireCtx(w, cls);
 *   let contended: WwMutex | null = null;
 *   for (;;) {
 *     if (contended) await contended.lockSlow(ctx);
 *     let ret = 0;
 *     const taken: WwMutex[] = contended ? [contended] : [];
 *     for (const o of objs) {
 *       if (o === contended) continue;
 *       ret = await o.lock(ctx);
 *       if (ret === -Errno.EDEADLK) { contended = o; break; }
 *       taken.push(o);
 *     }
 *     if (ret === 0) break;
 *     for (const o of taken) o.unlock();
 *   }
 *   ctx.done();
 *   for (const o of objs) o.unlock();
 *   ctx.fini();
 * });
 * ```
 */
export class WwAcquireCtx implements WwWaiterCtx {
  /** The world. */
  readonly world: Kernel;
  /** `ctx->task`. */
  readonly task: Task;
  /** `ctx->ww_class` (debug). */
  wwClass: WwClass;
  /** `ctx->stamp`: smaller is older. */
  stamp: number;
  /** `ctx->acquired`: ww_mutexes held with this context. */
  acquired = 0;
  /** `ctx->wounded` (Wound-Wait). */
  wounded = false;
  /** `ctx->is_wait_die`. */
  readonly isWaitDie: boolean;
  /** `ctx->done_acquire` (debug). */
  doneAcquire = false;
  /** `ctx->contending_lock` (debug): the mutex that returned -EDEADLK. */
  contendingLock: WwMutex | null = null;
  /** `ctx->dep_map` (class `<name>_acquire`). */
  readonly depMap: LockdepMap;
  /** `ctx->first_lock_dep_map` (class `<name>_mutex`, nested in the ctx). */
  readonly firstLockDepMap: LockdepMap;

  /** `ww_acquire_init(ctx, ww_class)`. */
  constructor(world: Kernel, wwClass: WwClass) {
    this.world = world;
    const lockdep = world.lockdep;
    this.task = lockdep.current();
    this.wwClass = wwClass;
    this.isWaitDie = wwClass.isWaitDie;
    this.stamp = wwClass.nextStamp(world);
    this.depMap = lockdep.newMap(wwClass.acquireKey.name, { key: wwClass.acquireKey });
    this.firstLockDepMap = lockdep.newMap(wwClass.mutexKey.name, {
      key: wwClass.mutexKey,
      waitInner: LdWait.SLEEP,
    });
    if (lockdep.active) {
      lockdep.acquire(this.depMap, { site: "ww_acquire_init" });
      lockdep.acquire(this.firstLockDepMap, { nestLock: this.depMap, site: "ww_acquire_init" });
    }
  }

  /** `ww_acquire_done`: the acquire phase is over; locking with this ctx is then a bug. */
  done(): void {
    const lockdep = this.world.lockdep;
    this.depMap.assertHeld();
    lockdep.debugLocksWarnOn(this.doneAcquire, "ctx->done_acquire", "ww_acquire_done");
    this.doneAcquire = true;
  }

  /** `ww_acquire_fini`: every ww_mutex must be unlocked first. */
  fini(): void {
    const lockdep = this.world.lockdep;
    lockdep.debugLocksWarnOn(this.acquired !== 0, "ctx->acquired", "ww_acquire_fini");
    if (lockdep.active) {
      lockdep.release(this.firstLockDepMap, "ww_acquire_fini");
      lockdep.release(this.depMap, "ww_acquire_fini");
    }
    if (!lockdep.enabled) {
      // Without lockdep, make a second fini fail anyway (as the kernel does).
      this.doneAcquire = true;
      this.acquired = 0xffffffff;
    }
  }
}

/**
 * A `struct ww_mutex`.
 *
 * @example
 * ```ts
 * import { Errno, Kernel, WwAcquireCtx, WwClass, WwMutex } from "@dmalab/kernel";
 * const w = new Kernel();
 * const cls = new WwClass("demo", { waitDie: true });
 * const m = new WwMutex(w, cls, "obj");
 * await w.runTask("t", async () => {
 *   const ctx = new WwAcquireCtx(w, cls);
 *   await m.lock(ctx);                           // 0
 *   (await m.lock(ctx)) === -Errno.EALREADY;      // true
 *   m.unlock();
 *   ctx.fini();
 * });
 * ```
 */
export class WwMutex {
  /** The underlying mutex (`lock->base`). */
  readonly base: Mutex;
  /** `lock->ww_class`. */
  readonly wwClass: WwClass;
  /** `lock->ctx`: the context holding it, or null (held without context, or free). */
  ctx: WwAcquireCtx | null = null;
  readonly #world: Kernel;

  /** `ww_mutex_init(lock, ww_class)`. */
  constructor(world: Kernel, wwClass: WwClass, name = wwClass.mutexKey.name) {
    this.#world = world;
    this.wwClass = wwClass;
    this.base = new Mutex(world, name, { key: wwClass.mutexKey });
  }

  /** Name of the underlying mutex. */
  get name(): string {
    return this.base.name;
  }

  /** World-unique id (the base mutex's). */
  get id(): number {
    return this.base.id;
  }

  /** The lockdep map (`lock->base.dep_map`). */
  get depMap(): LockdepMap {
    return this.base.depMap;
  }

  /** `ww_mutex_is_locked`. */
  isLocked(): boolean {
    return this.base.isLocked();
  }

  /** The owning task, or null. */
  get owner(): Task | null {
    return this.base.owner;
  }

  /**
   * `ww_mutex_lock(lock, ctx)`: 0, -EALREADY or -EDEADLK. With a null ctx it
   * is a plain `mutex_lock` (always 0).
   */
  lock(ctx: WwAcquireCtx | null): Promise<number> {
    return this.#lock(ctx, false, "ww_mutex_lock");
  }

  /** `ww_mutex_lock_interruptible`: as {@linkcode WwMutex.lock}, plus -EINTR on a signal. */
  lockInterruptible(ctx: WwAcquireCtx | null): Promise<number> {
    return this.#lock(ctx, true, "ww_mutex_lock_interruptible");
  }

  /**
   * `ww_mutex_lock_slow`: after -EDEADLK and unlocking everything, sleep
   * until the contended lock is ours (never -EDEADLK: the ctx holds nothing).
   */
  async lockSlow(ctx: WwAcquireCtx): Promise<void> {
    this.#world.lockdep.debugLocksWarnOn(
      ctx.contendingLock === null,
      "!ctx->contending_lock",
      "ww_mutex_lock_slow",
    );
    await this.#lock(ctx, false, "ww_mutex_lock_slow");
  }

  /** `ww_mutex_lock_slow_interruptible`: 0 or -EINTR. */
  lockSlowInterruptible(ctx: WwAcquireCtx): Promise<number> {
    this.#world.lockdep.debugLocksWarnOn(
      ctx.contendingLock === null,
      "!ctx->contending_lock",
      "ww_mutex_lock_slow_interruptible",
    );
    return this.#lock(ctx, true, "ww_mutex_lock_slow_interruptible");
  }

  /**
   * `ww_mutex_trylock(lock, ctx)`: true when acquired; no deadlock detection,
   * and false (not -EALREADY) when `ctx` already holds it.
   */
  trylock(ctx: WwAcquireCtx | null = null): boolean {
    if (!ctx) return this.base.trylock();
    const lockdep = this.#world.lockdep;
    if (ctx.acquired === 0) ctx.wounded = false;
    if (!this.base.tryAcquire(lockdep.current(), false)) return false;
    try {
      this.#setContextFastpath(ctx);
    } catch (e) {
      this.base.release();
      throw e;
    }
    if (lockdep.active) {
      lockdep.acquire(this.base.depMap, {
        trylock: true,
        nestLock: ctx.depMap,
        site: `ww_mutex_trylock(${this.name})`,
      });
    }
    return true;
  }

  /** `ww_mutex_unlock`. */
  unlock(): void {
    const ctx = this.ctx;
    if (ctx) {
      this.#world.lockdep.debugLocksWarnOn(
        ctx.acquired === 0,
        "!lock->ctx->acquired",
        "ww_mutex_unlock",
      );
      if (ctx.acquired > 0) ctx.acquired--;
      this.ctx = null;
    }
    this.base.unlock();
  }

  /** `ww_mutex_destroy`: must not be locked. */
  destroy(): void {
    this.#world.lockdep.debugLocksWarnOn(this.isLocked(), "mutex_is_locked(lock)", "mutex_destroy");
  }

  /** `lockdep_assert_held(&lock->base)`. */
  assertHeld(): void {
    this.base.assertHeld();
  }

  async #lock(ctx: WwAcquireCtx | null, interruptible: boolean, label: string): Promise<number> {
    if (!ctx) {
      return lockCommon(this.base, interruptible, { site: `${label}(${this.name})` }, null, label);
    }
    this.#world.sched.mightSleep(label);
    if (ctx === this.ctx) return -Errno.EALREADY;
    if (ctx.acquired === 0) ctx.wounded = false;
    return lockCommon(
      this.base,
      interruptible,
      { nestLock: ctx.depMap, site: `${label}(${this.name})` },
      this.#hooks(ctx),
      label,
    );
  }

  #hooks(ctx: WwAcquireCtx): WwHooks {
    return {
      ctx,
      addWaiter: (w) => this.#addWaiter(w, ctx),
      checkKill: (w) => this.#checkKill(w, ctx),
      acquiredSlow: (_w, first) => {
        if (!ctx.isWaitDie && !first) this.#checkWaiters(ctx);
        this.#lockAcquired(ctx);
      },
      acquiredFast: () => this.#setContextFastpath(ctx),
    };
  }

  /** `ww_mutex_set_context_fastpath`. */
  #setContextFastpath(ctx: WwAcquireCtx): void {
    this.#lockAcquired(ctx);
    if (this.base.waiters.length) this.#checkWaiters(ctx);
  }

  /** `ww_mutex_lock_acquired`: debug checks, then bind the lock to `ctx`. */
  #lockAcquired(ctx: WwAcquireCtx): void {
    const lockdep = this.#world.lockdep;
    const where = `ww_mutex_lock_acquired(${this.name})`;
    lockdep.debugLocksWarnOn(this.ctx !== null, "ww->ctx", where);
    lockdep.debugLocksWarnOn(ctx.doneAcquire, "ww_ctx->done_acquire", where);
    if (ctx.contendingLock) {
      lockdep.debugLocksWarnOn(ctx.contendingLock !== this, "ww_ctx->contending_lock != ww", where);
      lockdep.debugLocksWarnOn(ctx.acquired > 0, "ww_ctx->acquired > 0", where);
      ctx.contendingLock = null;
    }
    lockdep.debugLocksWarnOn(
      ctx.wwClass !== this.wwClass,
      "ww_ctx->ww_class != ww->ww_class",
      where,
    );
    ctx.acquired++;
    this.ctx = ctx;
  }

  /** `__ww_mutex_kill`: -EDEADLK when the context holds locks, else 0. */
  #kill(ctx: WwAcquireCtx): number {
    if (ctx.acquired > 0) {
      this.#world.lockdep.debugLocksWarnOn(
        ctx.contendingLock !== null,
        "ww_ctx->contending_lock",
        `__ww_mutex_kill(${this.name})`,
      );
      ctx.contendingLock = this;
      return -Errno.EDEADLK;
    }
    return 0;
  }

  /** `__ww_mutex_die`: Wait-Die wakes a younger waiter holding locks so it can die. */
  #die(waiter: MutexWaiter, ctx: WwWaiterCtx): boolean {
    if (!ctx.isWaitDie) return false;
    const wctx = waiter.wwCtx!;
    if (wctx.acquired > 0 && ctxLess(wctx, ctx)) this.#world.sched.wake(waiter.task);
    return true;
  }

  /** `__ww_mutex_wound`: Wound-Wait marks a younger holder wounded and wakes it. */
  #wound(wwCtx: WwWaiterCtx, holdCtx: WwWaiterCtx | null): boolean {
    if (!holdCtx) return false;
    const owner = this.base.owner;
    if (!owner) return false;
    if (wwCtx.acquired > 0 && ctxLess(holdCtx, wwCtx)) {
      holdCtx.wounded = true;
      const curr = this.#world.sched.current;
      // wake_up_process(owner): only a lock wait re-checks the wound at once;
      // other sleeps see it at their next contended ww_mutex_lock.
      if (owner !== curr && owner.waitingOn instanceof Mutex) this.#world.sched.wake(owner);
      return true;
    }
    return false;
  }

  /** `__ww_mutex_check_waiters`: after we acquired, let waiters die or wound us. */
  #checkWaiters(ctx: WwAcquireCtx): void {
    for (const cur of this.base.waiters) {
      if (!cur.wwCtx) continue;
      if (this.#die(cur, ctx) || this.#wound(cur.wwCtx, ctx)) break;
    }
  }

  /** `__ww_mutex_check_kill`. */
  #checkKill(waiter: MutexWaiter, ctx: WwAcquireCtx): number {
    if (ctx.acquired === 0) return 0;
    if (!ctx.isWaitDie) return ctx.wounded ? this.#kill(ctx) : 0;
    const hold = this.ctx;
    if (hold && ctxLess(ctx, hold)) return this.#kill(ctx);
    const list = this.base.waiters;
    for (let i = list.indexOf(waiter) - 1; i >= 0; i--) {
      if (list[i]!.wwCtx) return this.#kill(ctx);
    }
    return 0;
  }

  /** `__ww_mutex_add_waiter`: stamp-ordered insert; Wait-Die may die here, Wound-Wait wounds. */
  #addWaiter(waiter: MutexWaiter, ctx: WwAcquireCtx): number {
    const list = this.base.waiters;
    let pos = -1;
    for (let i = list.length - 1; i >= 0; i--) {
      const cur = list[i]!;
      if (!cur.wwCtx) continue;
      if (ctxLess(ctx, cur.wwCtx)) {
        if (ctx.isWaitDie) {
          const ret = this.#kill(ctx);
          if (ret) return ret;
        }
        break;
      }
      pos = i;
      this.#die(cur, ctx);
    }
    if (pos >= 0) list.splice(pos, 0, waiter);
    else list.push(waiter);
    if (!ctx.isWaitDie) this.#wound(ctx, this.ctx);
    return 0;
  }
}
