/**
 * DOC: mutexes
 *
 * `struct mutex` (kernel/locking/mutex.c) on the deterministic scheduler.
 *
 * Locking rules, as the kernel enforces them with CONFIG_DEBUG_MUTEXES and
 * lockdep:
 * - only the owner may unlock; an unlock by another task or of an unlocked
 *   mutex is a `DEBUG_LOCKS_WARN_ON` (and a lockdep "bad unlock balance");
 * - `mutex_lock*` may sleep: it is a scheduler preemption point (so the
 *   explorer can interleave, keyed on the mutex id as a write access), it
 *   splats in atomic context (`might_sleep`), and lockdep checks the
 *   acquisition *before* the task waits, so an inversion is reported even when
 *   it would deadlock;
 * - waiters queue FIFO; the woken first waiter that loses the race to a
 *   running task sets the HANDOFF flag, and the next unlock gives the lock
 *   straight to it (`__mutex_handoff`), so a waiter is never starved.
 *
 * `mutex_lock_interruptible` returns 0 or -EINTR (the kernel's value; a
 * signal is left pending). `mutex_trylock` returns true/false and never
 * sleeps. Returning errno numbers rather than throwing follows the kernel's
 * int-returning API, as {@linkcode WwMutex} does for -EDEADLK/-EALREADY.
 *
 * The core here also serves {@linkcode WwMutex}: `__mutex_lock_common` with a
 * `ww_ctx` adds stamp-ordered queueing and the wait-die/wound-wait checks of
 * kernel/locking/ww_mutex.h.
 *
 * @module
 */
import { Errno } from "../errno.ts";
import type { Task, WaitTarget } from "../sched/task.ts";
import type { Kernel } from "../world.ts";
import { LdWait, type LockClassKey, type LockdepMap } from "./lockdep.ts";

/** Something that can serve as a `nest_lock`: a map or a lock with one. */
export type NestLock = LockdepMap | { readonly depMap: LockdepMap };

/** Options for a new {@linkcode Mutex}. */
export interface MutexOptions {
  /** Lock class key (default: one key per name, like one `mutex_init` site). */
  key?: LockClassKey;
}

/** Options for {@linkcode Mutex.lock}. */
export interface MutexLockOptions {
  /** `mutex_lock_nested` subclass. */
  subclass?: number;
  /** `mutex_lock_nest_lock`. */
  nestLock?: NestLock;
  /** Site label for lockdep splats. */
  site?: string;
}

/** @internal The ww side of a waiter (see ww_mutex.ts). */
export interface WwWaiterCtx {
  readonly stamp: number;
  readonly isWaitDie: boolean;
  acquired: number;
  wounded: boolean;
}

/** @internal A queued waiter (`struct mutex_waiter`). */
export interface MutexWaiter {
  readonly task: Task;
  readonly wwCtx: WwWaiterCtx | null;
}

/** @internal Hooks a ww_mutex plugs into the common lock path. */
export interface WwHooks {
  readonly ctx: WwWaiterCtx;
  /** Queue position and early kill (`__ww_mutex_add_waiter`); returns 0 or -EDEADLK. */
  addWaiter(waiter: MutexWaiter): number;
  /** `__ww_mutex_check_kill`. */
  checkKill(waiter: MutexWaiter): number;
  /** `__ww_mutex_check_waiters` after acquiring via the wait list. */
  acquiredSlow(waiter: MutexWaiter, wasFirst: boolean): void;
  /** `ww_mutex_set_context_fastpath` after an uncontended acquire. */
  acquiredFast(): void;
}

export function nestMap(n: NestLock | undefined | null): LockdepMap | null {
  if (!n) return null;
  return "depMap" in n ? n.depMap : n;
}

/**
 * A sleeping mutex.
 *
 * @example
 * ```ts
 * import { Kernel, Mutex } from "@dmalab/kernel";
 * const w = new Kernel();
 * const m = new Mutex(w, "dev->lock");
 * let inside = 0;
 * for (const name of ["a", "b"]) {
 *   w.spawn(name, async () => {
 *     await m.lock();
 *     inside++;
 *     await w.sched.msleep(1);
 *     inside--;
 *     m.unlock();
 *   });
 * }
 * await w.run();
 * inside; // 0
 * ```
 */
export class Mutex implements WaitTarget {
  /** Name (lockdep class name by default). */
  readonly name: string;
  /** World-unique id: the object key for the explorer's partial-order reduction. */
  readonly id: number;
  /** The lockdep map of this lock. */
  readonly depMap: LockdepMap;
  /** @internal */
  readonly world: Kernel;
  #owner: Task | null = null;
  #pickup = false;
  #handoff = false;
  readonly #labels = new Map<string, readonly [string, string]>();
  /** @internal FIFO / stamp-ordered wait list. */
  readonly waiters: MutexWaiter[] = [];

  /** `mutex_init`. */
  constructor(world: Kernel, name = "mutex", options: MutexOptions = {}) {
    this.world = world;
    this.name = name;
    this.id = world.nextId();
    this.depMap = world.lockdep.newMap(
      name,
      options.key === undefined
        ? { waitInner: LdWait.SLEEP }
        : { key: options.key, waitInner: LdWait.SLEEP },
    );
  }

  /** The owning task (`__mutex_owner`), or null. */
  get owner(): Task | null {
    return this.#owner;
  }

  /** Owners for deadlock reports. */
  owners(): readonly Task[] {
    return this.#owner ? [this.#owner] : [];
  }

  /** `mutex_is_locked`. */
  isLocked(): boolean {
    return this.#owner !== null;
  }

  /** @internal `__mutex_trylock_common`: takes a free lock or picks up a handoff. */
  tryAcquire(curr: Task, handoff: boolean): boolean {
    if (this.#owner === null) {
      this.#owner = curr;
      this.#handoff = false;
      return true;
    }
    if (this.#owner === curr && this.#pickup) {
      this.#pickup = false;
      return true;
    }
    if (handoff) this.#handoff = true;
    return false;
  }

  /** `mutex_lock` (and `mutex_lock_nested` / `mutex_lock_nest_lock` through options). */
  async lock(options: MutexLockOptions = {}): Promise<void> {
    await lockCommon(this, false, options, null, "mutex_lock");
  }

  /** `mutex_lock_nested(lock, subclass)`. */
  lockNested(subclass: number): Promise<void> {
    return this.lock({ subclass });
  }

  /** `mutex_lock_interruptible`: 0, or -EINTR when a signal is pending or arrives. */
  lockInterruptible(options: MutexLockOptions = {}): Promise<number> {
    return lockCommon(this, true, options, null, "mutex_lock_interruptible");
  }

  /** `mutex_lock_killable`: 0, or -EINTR on a (here: any) signal. */
  lockKillable(options: MutexLockOptions = {}): Promise<number> {
    return lockCommon(this, true, options, null, "mutex_lock_killable");
  }

  /** `mutex_trylock`: true when acquired; never sleeps. */
  trylock(): boolean {
    const lockdep = this.world.lockdep;
    const curr = lockdep.current();
    if (!this.tryAcquire(curr, false)) return false;
    if (lockdep.active) lockdep.acquire(this.depMap, { trylock: true, site: "mutex_trylock" });
    return true;
  }

  /** `mutex_unlock`: must be called by the owner. */
  unlock(): void {
    const lockdep = this.world.lockdep;
    const curr = lockdep.current();
    // mutex_release() runs first, so a strict-mode splat leaves the lock as it was.
    if (lockdep.active) lockdep.release(this.depMap, "mutex_unlock");
    if (this.#owner !== curr) {
      lockdep.debugLocksWarnOn(
        true,
        this.#owner === null
          ? "mutex_unlock of an unlocked mutex"
          : "__owner_task(owner) != current",
        `__mutex_unlock_slowpath(${this.name})`,
      );
      if (this.#owner === null) return;
    }
    this.release();
  }

  /** @internal `[sched label, lockdep site]` for operation `op` (cached: hot path). */
  labels(op: string): readonly [string, string] {
    let l = this.#labels.get(op);
    if (!l) {
      l = [`${op}:${this.name}`, `${op}(${this.name})`];
      this.#labels.set(op, l);
    }
    return l;
  }

  /** @internal `__mutex_remove_waiter`: the last waiter leaving clears HANDOFF. */
  removeWaiter(waiter: MutexWaiter): void {
    const i = this.waiters.indexOf(waiter);
    if (i >= 0) this.waiters.splice(i, 1);
    if (this.waiters.length === 0) this.#handoff = false;
  }

  /** @internal The ownership part of `__mutex_unlock_slowpath`. */
  release(): void {
    const first = this.waiters[0];
    if (first && this.#handoff) {
      this.#owner = first.task;
      this.#pickup = true;
      this.#handoff = false;
    } else {
      this.#owner = null;
      this.#pickup = false;
      this.#handoff = false;
    }
    if (first) this.world.sched.wake(first.task);
  }

  /** `mutex_destroy`: the mutex must not be locked (DEBUG_MUTEXES). */
  destroy(): void {
    this.world.lockdep.debugLocksWarnOn(
      this.isLocked(),
      "mutex_is_locked(lock)",
      `mutex_destroy(${this.name})`,
    );
  }

  /** `lockdep_assert_held(&lock)`. */
  assertHeld(): void {
    this.depMap.assertHeld();
  }

  /** `lockdep_assert_not_held(&lock)`. */
  assertNotHeld(): void {
    this.depMap.assertNotHeld();
  }

  /** The name. */
  toString(): string {
    return `mutex ${this.name}`;
  }
}

/**
 * @internal `__mutex_lock_common`: returns 0, -EINTR (interruptible) or
 * -EDEADLK (ww). Every call is a preemption point.
 */
export async function lockCommon(
  m: Mutex,
  interruptible: boolean,
  options: MutexLockOptions,
  ww: WwHooks | null,
  label: string,
): Promise<number> {
  const world = m.world;
  const sched = world.sched;
  const [schedLabel, site] = m.labels(label);
  await sched.preempt(schedLabel, m.id, "write");
  const lockdep = world.lockdep;
  const curr = sched.current!;
  const track = lockdep.active;
  if (track) {
    lockdep.acquire(m.depMap, {
      subclass: options.subclass ?? 0,
      nestLock: nestMap(options.nestLock),
      site: options.site ?? site,
    });
  }
  const waiter: MutexWaiter = { task: curr, wwCtx: ww ? ww.ctx : null };
  let acquired = false;
  try {
    if (m.tryAcquire(curr, false)) {
      acquired = true;
      ww?.acquiredFast();
      return 0;
    }
    let ret = ww ? ww.addWaiter(waiter) : (m.waiters.push(waiter), 0);
    if (ret === 0) {
      for (;;) {
        if (m.tryAcquire(curr, false)) {
          acquired = true;
          break;
        }
        if (interruptible && curr.signalPending) {
          ret = -Errno.EINTR;
          break;
        }
        if (ww) {
          ret = ww.checkKill(waiter);
          if (ret) break;
        }
        await sched.block(m, { interruptible, label: schedLabel });
        if (m.tryAcquire(curr, m.waiters[0] === waiter)) {
          acquired = true;
          break;
        }
      }
      const first = m.waiters[0] === waiter;
      m.removeWaiter(waiter);
      if (acquired && ww) ww.acquiredSlow(waiter, first);
    }
    if (ret !== 0 && track && lockdep.active) lockdep.release(m.depMap, site);
    return ret;
  } catch (e) {
    // A strict-mode splat: leave the lock and the wait list as they were.
    m.removeWaiter(waiter);
    if (acquired && m.owner === curr) m.release();
    if (track && lockdep.active && m.depMap.isHeld()) lockdep.release(m.depMap);
    throw e;
  }
}
