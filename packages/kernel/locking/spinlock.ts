/**
 * DOC: spinlocks
 *
 * `spinlock_t` (include/linux/spinlock.h, kernel/locking/spinlock_debug.c).
 * Every operation is synchronous: taking a spinlock disables preemption
 * (`task.preemptCount++`), so any sleep while it is held (a mutex, msleep,
 * a wait queue, a preemption point) is reported by the scheduler as
 * "BUG: sleeping function called from invalid context". The `_irqsave`
 * forms also record that interrupts are off, which lockdep's usage bits
 * (`{-.-.}` vs `{+.+.}`) and the irq-context checks read.
 *
 * Only one task runs at a time here, so a spinlock can never be legitimately
 * contended: if it is held when `spin_lock` is called, either this task holds
 * it ("BUG: spinlock recursion", after lockdep's "possible recursive locking")
 * or the holder slept with it held (already reported by `might_sleep`; here
 * "BUG: spinlock lockup suspected"). In permissive mode the caller then takes
 * the lock over so the run can go on. Unlocking a free lock or another task's
 * lock is "BUG: spinlock already unlocked" / "wrong owner"
 * (`debug_spin_unlock`).
 *
 * @module
 */
import type { Task } from "../sched/task.ts";
import type { Kernel } from "../world.ts";
import { LdWait, type LockClassKey, type LockdepMap } from "./lockdep.ts";
import { type NestLock, nestMap } from "./mutex.ts";

/** Options for a new {@linkcode SpinLock}. */
export interface SpinLockOptions {
  /** Lock class key (default: one key per name). */
  key?: LockClassKey;
  /** `raw_spinlock_t` (wait type SPIN) instead of `spinlock_t` (CONFIG). */
  raw?: boolean;
}

/** Options for {@linkcode SpinLock.lock}. */
export interface SpinLockLockOptions {
  /** `spin_lock_nested` subclass. */
  subclass?: number;
  /** `spin_lock_nest_lock`. */
  nestLock?: NestLock;
}

/**
 * A spinlock.
 *
 * @example
 * ```ts
 * import { Kernel, SpinLock } from "@dmalab/kernel";
 * const w = new Kernel();
 * const lock = new SpinLock(w, "fence->lock");
 * await w.runTask("t", async () => {
 *   const flags = lock.lockIrqsave();
 *   // atomic context here: no sleeping
 *   lock.unlockIrqrestore(flags);
 * });
 * ```
 */
export class SpinLock {
  /** Name (lockdep class name by default). */
  readonly name: string;
  /** World-unique id. */
  readonly id: number;
  /** The lockdep map. */
  readonly depMap: LockdepMap;
  readonly #world: Kernel;
  #owner: Task | null = null;
  readonly #site: string;

  /** `spin_lock_init`. */
  constructor(world: Kernel, name = "spinlock", options: SpinLockOptions = {}) {
    this.#world = world;
    this.name = name;
    this.id = world.nextId();
    this.#site = `spin_lock(${name})`;
    const waitInner = options.raw ? LdWait.SPIN : LdWait.CONFIG;
    this.depMap = world.lockdep.newMap(
      name,
      options.key === undefined ? { waitInner } : { key: options.key, waitInner },
    );
  }

  /** The holder, or null. */
  get owner(): Task | null {
    return this.#owner;
  }

  /** `spin_is_locked`. */
  isLocked(): boolean {
    return this.#owner !== null;
  }

  /** `spin_lock` (and `spin_lock_nested` / `spin_lock_nest_lock` through options). */
  lock(options: SpinLockLockOptions = {}): void {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    if (lockdep.active) {
      lockdep.acquire(this.depMap, {
        subclass: options.subclass ?? 0,
        nestLock: nestMap(options.nestLock),
        site: this.#site,
      });
    }
    if (this.#owner !== null) {
      const recursion = this.#owner === curr;
      if (lockdep.debugLocksOff()) {
        const msg = recursion ? "recursion" : "lockup suspected";
        const owner = this.#owner;
        try {
          this.#world.bug(
            "BUG",
            `BUG: spinlock ${msg} on CPU#0, ${curr.name}/${curr.pid}`,
            [
              `BUG: spinlock ${msg} on CPU#0, ${curr.name}/${curr.pid}`,
              ` lock: ${this.name}, .magic: dead4ead, .owner: ${owner.name}/${owner.pid}, .owner_cpu: 0`,
            ].join("\n"),
          );
        } catch (e) {
          if (lockdep.enabled && this.depMap.isHeld()) lockdep.release(this.depMap);
          throw e;
        }
      }
    }
    curr.preemptCount++;
    this.#owner = curr;
  }

  /** `spin_lock_nested(lock, subclass)`. */
  lockNested(subclass: number): void {
    this.lock({ subclass });
  }

  /** `spin_trylock`: true when taken. */
  trylock(): boolean {
    if (this.#owner !== null) return false;
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    if (lockdep.active) {
      lockdep.acquire(this.depMap, { trylock: true, site: "spin_trylock" });
    }
    curr.preemptCount++;
    this.#owner = curr;
    return true;
  }

  /** `spin_unlock`. */
  unlock(): void {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    if (lockdep.active) lockdep.release(this.depMap, "spin_unlock");
    if (this.#owner !== curr) {
      const msg = this.#owner === null ? "already unlocked" : "wrong owner";
      if (lockdep.debugLocksOff()) {
        this.#world.bug(
          "BUG",
          `BUG: spinlock ${msg} on CPU#0, ${curr.name}/${curr.pid}`,
          [
            `BUG: spinlock ${msg} on CPU#0, ${curr.name}/${curr.pid}`,
            ` lock: ${this.name}, .magic: dead4ead, .owner: ${
              this.#owner ? `${this.#owner.name}/${this.#owner.pid}` : "<none>/-1"
            }, .owner_cpu: ${this.#owner ? 0 : -1}`,
          ].join("\n"),
        );
      }
      if (this.#owner === null) return;
    }
    this.#owner = null;
    if (curr.preemptCount > 0) curr.preemptCount--;
  }

  /** `spin_lock_irq`: disables interrupts, then locks. */
  lockIrq(): void {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    lockdep.setIrqsOff(curr, 1);
    try {
      this.lock();
    } catch (e) {
      lockdep.setIrqsOff(curr, -1);
      throw e;
    }
  }

  /** `spin_unlock_irq`. */
  unlockIrq(): void {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    this.unlock();
    if (lockdep.irqsOff(curr) > 0) lockdep.setIrqsOff(curr, -1);
  }

  /**
   * `spin_lock_irqsave`: returns the flags to restore (1 when interrupts were
   * already off).
   */
  lockIrqsave(options: SpinLockLockOptions = {}): number {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    const flags = lockdep.irqsOff(curr) > 0 || curr.kind === "irq" ? 1 : 0;
    lockdep.setIrqsOff(curr, 1);
    try {
      this.lock(options);
    } catch (e) {
      lockdep.setIrqsOff(curr, -1);
      throw e;
    }
    return flags;
  }

  /** `spin_unlock_irqrestore(lock, flags)`. */
  unlockIrqrestore(_flags: number): void {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    this.unlock();
    if (lockdep.irqsOff(curr) > 0) lockdep.setIrqsOff(curr, -1);
  }

  /** `lockdep_assert_held(&lock)`. */
  assertHeld(): void {
    this.depMap.assertHeld();
  }

  /** `assert_spin_locked`: the lock is held (by anyone). */
  assertLocked(): void {
    if (this.#owner === null) {
      this.#world.bug("BUG", `BUG: assert_spin_locked(${this.name}) failed: lock is not held`);
    }
  }

  /** The name. */
  toString(): string {
    return `spinlock ${this.name}`;
  }
}
