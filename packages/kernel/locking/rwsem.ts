/**
 * DOC: read-write semaphores
 *
 * `struct rw_semaphore` (kernel/locking/rwsem.c), simplified to its
 * observable rules:
 * - any number of readers or one writer;
 * - waiters queue FIFO, and a new reader does not pass a queued writer (the
 *   fast path fails once `RWSEM_FLAG_WAITERS` is set), so writers are not
 *   starved;
 * - a release wakes the head of the queue: a writer gets the lock handed
 *   over when the semaphore is free; a reader at the head wakes every queued
 *   reader (`rwsem_mark_wake`), readers behind a writer included;
 * - `downgrade_write` turns the writer into a reader and wakes queued readers
 *   when the head is a reader;
 * - trylocks fail when anyone waits;
 * - every `down_*` is a preemption point (object = this rwsem, access "read"
 *   or "write") and may sleep (`might_sleep`).
 *
 * Lockdep sees `down_read` as a non-recursive read (read=1), so a task taking
 * the same rwsem class for read twice is reported (readers can deadlock
 * behind a queued writer), as lib/locking-selftest.c `rsem_AA1` expects.
 * Releasing what the task does not hold is a lockdep "bad unlock balance"
 * and a `DEBUG_RWSEMS_WARN_ON`.
 *
 * Not modelled: optimistic spinning and reader lock stealing, the handoff
 * timeout (writers are handed the lock directly instead).
 *
 * @module
 */
import { Errno } from "../errno.ts";
import type { Task, WaitTarget } from "../sched/task.ts";
import type { Kernel } from "../world.ts";
import { LdWait, type LockClassKey, type LockdepMap } from "./lockdep.ts";

/** Options for a new {@linkcode RwSemaphore}. */
export interface RwSemaphoreOptions {
  /** Lock class key (default: one key per name). */
  key?: LockClassKey;
}

interface RwsemWaiter {
  readonly task: Task;
  readonly write: boolean;
  granted: boolean;
}

/**
 * A read-write semaphore.
 *
 * @example
 * ```ts
 * import { Kernel, RwSemaphore } from "@dmalab/kernel";
 * const w = new Kernel();
 * const sem = new RwSemaphore(w, "mm->mmap_lock");
 * await w.runTask("reader", async () => {
 *   await sem.downRead();
 *   sem.upRead();
 * });
 * ```
 */
export class RwSemaphore implements WaitTarget {
  /** Name (lockdep class name by default). */
  readonly name: string;
  /** World-unique id. */
  readonly id: number;
  /** The lockdep map. */
  readonly depMap: LockdepMap;
  readonly #world: Kernel;
  #writer: Task | null = null;
  readonly #readers: Task[] = [];
  readonly #waiters: RwsemWaiter[] = [];

  /** `init_rwsem`. */
  constructor(world: Kernel, name = "rw_semaphore", options: RwSemaphoreOptions = {}) {
    this.#world = world;
    this.name = name;
    this.id = world.nextId();
    this.depMap = world.lockdep.newMap(
      name,
      options.key === undefined
        ? { waitInner: LdWait.SLEEP }
        : { key: options.key, waitInner: LdWait.SLEEP },
    );
  }

  /** The writer, or null. */
  get writer(): Task | null {
    return this.#writer;
  }

  /** Current readers (a task appears once per read hold). */
  get readers(): readonly Task[] {
    return this.#readers;
  }

  /** Queued waiters. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /** Holders, for deadlock reports. */
  owners(): readonly Task[] {
    return this.#writer ? [this.#writer] : [...new Set(this.#readers)];
  }

  /** `rwsem_is_locked`. */
  isLocked(): boolean {
    return this.#writer !== null || this.#readers.length > 0;
  }

  /** `down_read`. */
  async downRead(subclass = 0): Promise<void> {
    await this.#down(false, false, subclass, "down_read");
  }

  /** `down_read_nested`. */
  downReadNested(subclass: number): Promise<void> {
    return this.downRead(subclass);
  }

  /** `down_read_interruptible`: 0 or -EINTR. */
  downReadInterruptible(): Promise<number> {
    return this.#down(false, true, 0, "down_read_interruptible");
  }

  /** `down_read_trylock`: true when taken. */
  downReadTrylock(): boolean {
    if (this.#writer !== null || this.#waiters.length > 0) return false;
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    if (lockdep.active) {
      lockdep.acquire(this.depMap, {
        read: 1,
        trylock: true,
        site: `down_read_trylock(${this.name})`,
      });
    }
    this.#readers.push(curr);
    return true;
  }

  /** `down_write`. */
  async downWrite(subclass = 0): Promise<void> {
    await this.#down(true, false, subclass, "down_write");
  }

  /** `down_write_nested`. */
  downWriteNested(subclass: number): Promise<void> {
    return this.downWrite(subclass);
  }

  /** `down_write_killable` (any signal here): 0 or -EINTR. */
  downWriteKillable(): Promise<number> {
    return this.#down(true, true, 0, "down_write_killable");
  }

  /** `down_write_trylock`: true when taken. */
  downWriteTrylock(): boolean {
    if (this.isLocked() || this.#waiters.length > 0) return false;
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    if (lockdep.active) {
      lockdep.acquire(this.depMap, { trylock: true, site: `down_write_trylock(${this.name})` });
    }
    this.#writer = curr;
    return true;
  }

  /** `up_read`. */
  upRead(): void {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    if (lockdep.active) lockdep.release(this.depMap, "up_read");
    const i = this.#readers.lastIndexOf(curr);
    if (i < 0) {
      lockdep.debugLocksWarnOn(
        true,
        this.#readers.length
          ? "up_read by a task that is not a reader"
          : "up_read of an unlocked rwsem",
        `up_read(${this.name})`,
      );
      if (this.#readers.length === 0) return;
      this.#readers.pop();
    } else {
      this.#readers.splice(i, 1);
    }
    if (this.#readers.length === 0) this.#wake();
  }

  /** `up_write`. */
  upWrite(): void {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    if (lockdep.active) lockdep.release(this.depMap, "up_write");
    if (this.#writer !== curr) {
      lockdep.debugLocksWarnOn(true, "rwsem_owner(sem) != current", `up_write(${this.name})`);
      if (this.#writer === null) return;
    }
    this.#writer = null;
    this.#wake();
  }

  /** `downgrade_write`: the writer keeps the lock as a reader; queued readers may join. */
  downgradeWrite(): void {
    const lockdep = this.#world.lockdep;
    const curr = lockdep.current();
    if (this.#writer !== curr) {
      lockdep.debugLocksWarnOn(
        true,
        "rwsem_owner(sem) != current",
        `downgrade_write(${this.name})`,
      );
      return;
    }
    if (lockdep.active) lockdep.downgrade(this.depMap);
    this.#writer = null;
    this.#readers.push(curr);
    this.#wake();
  }

  /** `lockdep_assert_held(&sem)` (read or write). */
  assertHeld(): void {
    this.depMap.assertHeld();
  }

  /** `lockdep_assert_held_write(&sem)`. */
  assertHeldWrite(): void {
    this.depMap.assertHeldWrite();
  }

  /** `lockdep_assert_held_read(&sem)`. */
  assertHeldRead(): void {
    this.depMap.assertHeldRead();
  }

  /** `rwsem_mark_wake`: hand the lock to the head writer, or to every queued reader. */
  #wake(): void {
    const head = this.#waiters[0];
    if (!head || this.#writer !== null) return;
    const sched = this.#world.sched;
    if (head.write) {
      if (this.#readers.length > 0) return;
      this.#waiters.shift();
      head.granted = true;
      this.#writer = head.task;
      sched.wake(head.task);
      return;
    }
    for (let i = 0; i < this.#waiters.length;) {
      const w = this.#waiters[i]!;
      if (w.write) {
        i++;
        continue;
      }
      this.#waiters.splice(i, 1);
      w.granted = true;
      this.#readers.push(w.task);
      sched.wake(w.task);
    }
  }

  async #down(
    write: boolean,
    interruptible: boolean,
    subclass: number,
    label: string,
  ): Promise<number> {
    const world = this.#world;
    const sched = world.sched;
    await sched.preempt(`${label}:${this.name}`, this.id, write ? "write" : "read");
    const lockdep = world.lockdep;
    const curr = sched.current!;
    const track = lockdep.active;
    if (track) {
      lockdep.acquire(this.depMap, {
        read: write ? 0 : 1,
        subclass,
        site: `${label}(${this.name})`,
      });
    }
    const free = write ? !this.isLocked() : this.#writer === null;
    if (free && this.#waiters.length === 0) {
      if (write) this.#writer = curr;
      else this.#readers.push(curr);
      return 0;
    }
    const waiter: RwsemWaiter = { task: curr, write, granted: false };
    this.#waiters.push(waiter);
    while (!waiter.granted) {
      if (interruptible && curr.signalPending) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        // A departing head may unblock readers queued behind it.
        this.#wake();
        if (track && lockdep.active) lockdep.release(this.depMap, `${label}(${this.name})`);
        return -Errno.EINTR;
      }
      await sched.block(this, { interruptible, label: `${label}:${this.name}` });
    }
    return 0;
  }

  /** The name. */
  toString(): string {
    return `rwsem ${this.name}`;
  }
}
